"""Subscriptions and opt-outs in the database: add (insert-or-ignore), remove, list, and who follows what;
functions take `session=` and never commit or send mail.

A row's `target` says what it is about:
* `case:<id>` follows one master case; `platform:<name, case-folded>` every master case of a platform;
* `optout:maintenance` and `optout:case:<id>` record a one-click unsubscribe (RFC 8058) from
  maintenance notices or from one master case's updates, so broadcasts leave that address out.
(address, target) is unique, so adding twice keeps one row.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from mailcase.store.common import insert_or_ignore, rows_affected, table_of
from mailcase.store.models import Subscription

OPTOUT_MAINTENANCE = "optout:maintenance"


def case_target(case_id: int) -> str:
    return f"case:{case_id}"


def platform_target(platform: str) -> str:
    return f"platform:{' '.join(platform.split()).casefold()}"


def case_optout_target(case_id: int) -> str:
    return f"optout:case:{case_id}"


def add_subscription(
    *,
    session: Session,
    address: str,
    target: str,
    now: datetime,
    case_id: int | None = None,
    platform: str | None = None,
) -> bool:
    """Add one row; True when it is new, False when the address already had it."""
    values = {
        "address": address.strip().lower(),
        "target": target,
        "case_id": case_id,
        "platform": platform,
        "created_at": now,
    }
    return insert_or_ignore(session, table_of(Subscription), values, conflict=["address", "target"]) is not None


def remove_subscriptions(*, session: Session, address: str, targets: Iterable[str]) -> int:
    """Delete the address's rows for these targets; returns how many there were."""
    wanted = list(set(targets))
    if not wanted:
        return 0
    table = table_of(Subscription)
    result = session.execute(
        sa.delete(table).where(table.c.address == address.strip().lower(), table.c.target.in_(wanted))
    )
    return rows_affected(result)


def list_subscriptions(
    *, session: Session, address: str | None = None, targets: Iterable[str] | None = None
) -> list[Subscription]:
    statement = select(Subscription)
    if address is not None:
        statement = statement.where(Subscription.address == address.strip().lower())
    if targets is not None:
        statement = statement.where(col(Subscription.target).in_(list(targets)))
    return list(session.exec(statement.order_by(col(Subscription.target), col(Subscription.address))))


def addresses_for(*, session: Session, targets: Iterable[str]) -> list[str]:
    """Every address with a row for any of these targets, each once, sorted."""
    wanted = list(set(targets))
    if not wanted:
        return []
    rows = session.exec(select(Subscription.address).where(col(Subscription.target).in_(wanted)).distinct())
    return sorted(set(rows))
