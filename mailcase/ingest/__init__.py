"""The inbound shell: mail in by SMTP, LMTP, IMAP or a pipe, turned into one transaction each; it never imports notify, and delivers nothing.

Layer: below the composition root (`app`) and the daemon, beside `jobs` and `notify`, above the
desk, store and rules. The edges (`smtp`, `lmtp`, `imap`) accept bytes and answer the client;
`parse` (with `quotes`, `mimebounds`, `authentication`) turns bytes into an `InboundMessage`;
`pipeline` looks up the facts, asks `rules.decide`, and applies the decision through the desk in
one transaction that also writes the outbox rows of the notices it causes.
"""
