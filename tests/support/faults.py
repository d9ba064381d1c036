"""Helpers for the fault-injection suite (tests/faults): seed the outbox of a daemon's database, read it back; no tests here."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from mailcase.domain import NotificationIntent
from mailcase.store.engine import make_engine, transaction
from mailcase.store.outbox import enqueue


def seed_notices(database_url: str, count: int, *, prefix: str = "fault", now: datetime | None = None) -> list[int]:
    """Queue `count` acknowledgements (no case) due now; returns their outbox ids."""
    now = now or datetime.now(UTC)
    engine = make_engine(database_url)
    try:
        with transaction(engine) as session:
            ids = [
                enqueue(
                    NotificationIntent(
                        kind="ack",
                        template="customer.ack",
                        recipients=(f"pat+{prefix}{i}@acme.example",),
                        idempotency_key=f"{prefix}:{i}",
                        due_at=now,
                        context={"case_number": 5000 + i, "case_subject": f"Notice {i}"},
                        locale="en",
                        auto_submitted="auto-replied",
                    ),
                    session=session, now=now, hostname="mailcase.localhost",
                )
                for i in range(count)
            ]
    finally:
        engine.dispose()
    return [i for i in ids if i is not None]


def outbox_states(database_url: str) -> dict[str, int]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT state, count(*) FROM outbox GROUP BY state")).all()
    finally:
        engine.dispose()
    return {str(state): int(n) for state, n in rows}
