"""The outbound shell: outbox rows rendered, composed and handed to the relay; it never imports ingest, and decides nothing.

Layer: below the composition root (`app`) and the daemon, beside `ingest` and `jobs`, above the
desk, store and rules. What to tell whom was decided when the outbox row was written; here
`render` fills the templates, `compose` sets every outbound header, `ics` builds calendar
attachments, `transport` speaks SMTP to the relay and `outbox` claims due rows and records each
outcome. `statuspage` renders the public status page from plain values.
"""
