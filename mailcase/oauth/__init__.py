"""OAuth2 grants for IMAP and outbound SMTP: tokens kept in a locked 0600 file, fetched from Microsoft (msal), Google (google-auth) or a plain token endpoint; it never talks IMAP or SMTP and never logs a token.

`tokens` stores grants, `providers` talks to token endpoints, `grants.GrantManager` hands out
fresh access tokens and keeps every grant's health (`health.HealthBoard`) so nothing fails silently.

Layer: below ingest and notify (IMAP and the relay ask it for tokens) and the desk, above config
and store (it reads the grants' settings and keeps grants in PostgreSQL).
"""
