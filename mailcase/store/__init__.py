"""All persistence: the models (`models`), the engine and transactions (`engine`), and every SQL
statement mailcase runs, as functions over a session or connection the caller passes in.

What the rest of the house may rely on:
* Store functions take `session=` (or a Core connection) and never commit: the caller (ingest,
  notify, a sweep, a command) owns the one transaction per unit of work, opened with
  `engine.transaction` or `engine.committed`.
* `store` imports no `rules` (an import-linter contract): the values both share (`CaseView`,
  `SenderView`, the directory's entries, `PlannedWindow`) are in `domain`.
* Lookups for the rules (`facts`) return those read-only views, never ORM rows; listings for
  people (`reports`, `cases`, `held`) may return rows for the presentation code to format.
* Idempotency by unique keys and insert-or-ignore (`common.insert_or_ignore`), never
  check-then-insert; claims use `FOR UPDATE SKIP LOCKED` on PostgreSQL.
"""
