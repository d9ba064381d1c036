"""The support plan as pure functions: plain values and `now` in, decisions, deadlines and notification intents out; no I/O, no logging, no database, no clock reads.

Layer: the bottom of the house with `store` (which never imports it) and above only `domain`,
`errors`; everything else may call it. Enforced by import-linter (pyproject.toml): rules import
no store, config, logs, clock, files, sockets, databases or mail libraries. Tested with plain
values in milliseconds (tests/unit).
"""
