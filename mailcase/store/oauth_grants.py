"""OAuth2 grants kept in the database (`[oauth] store = "database"`, PostgreSQL): rows of the installation table, locked FOR UPDATE while a grant is refreshed; `session=` in, never commits, never decrypts.

Each grant is one `installation` row, key `oauth_grant:<name>`, whose value the caller has
already encrypted (mailcase.oauth.tokens.DatabaseTokenStore). Locking the rows makes a refresh by
one daemon wait for another's, so several hosts refresh a grant once, as flock does for the file.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlmodel import Session, col, select

from mailcase.store.common import insert_or_ignore, table_of
from mailcase.store.models import Installation

PREFIX = "oauth_grant:"


def lock_grants(*, session: Session, names: Iterable[str]) -> dict[str, str]:
    """The stored (encrypted) value of each named grant, "" for none yet, each row locked FOR UPDATE
    until the session's transaction ends (a no-op on SQLite, which serialises writers anyway)."""
    keys = sorted(PREFIX + name for name in names)  # one order for every process: no deadlock
    for key in keys:
        insert_or_ignore(session, table_of(Installation), {"key": key, "value": ""}, conflict=["key"])
    rows = session.exec(
        select(Installation.key, Installation.value).where(col(Installation.key).in_(keys)).with_for_update()
    ).all()
    return {key.removeprefix(PREFIX): value for key, value in rows}


def save_grant(*, session: Session, name: str, value: str) -> None:
    row = session.get(Installation, PREFIX + name)
    if row is None:
        session.add(Installation(key=PREFIX + name, value=value))
    else:
        row.value = value
