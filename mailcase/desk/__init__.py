"""The support plan's actions: open, update, reopen, relate, hold, release, reply, note, escalate, subscribe and
unsubscribe; maintenance windows; master cases. Each is a function over a session and the frozen `Desk` context
(`desk.context`, built by `app.py`), applied in the caller's transaction.

Modules: `context` (the Desk and the installation secret), `cases` (agent and customer actions on one
case), `notices` (who hears about a case and how it threads), `deadlines` (the case's SLA columns),
`subscriptions` (who follows master cases), `masters` (master cases), `maintenance` (maintenance
windows). Decisions come from `rules`; rows are read and written through `store`. Nothing here
commits (except the chunked maintenance fan-out, which owns its transactions), renders or sends
mail, or sees the `App`; `ingest`, `jobs`, the commands and the daemon call in, never the reverse.
"""
