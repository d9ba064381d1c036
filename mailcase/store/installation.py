"""Per-installation values kept in the database (the generated reply-token secret); `session=` in, never commits."""

from __future__ import annotations

import secrets

from sqlmodel import Session, select

from mailcase.store.common import insert_or_ignore, table_of
from mailcase.store.models import Installation

REPLY_TOKEN_SECRET = "reply_token_secret"


def installation_secret(*, session: Session) -> str:
    """The installation's reply-token secret, generated once; concurrent first calls agree on one value."""
    insert_or_ignore(
        session,
        table_of(Installation),
        {"key": REPLY_TOKEN_SECRET, "value": secrets.token_hex(32)},
        conflict=["key"],
    )
    return session.exec(select(Installation.value).where(Installation.key == REPLY_TOKEN_SECRET)).one()
