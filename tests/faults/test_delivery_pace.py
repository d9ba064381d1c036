"""Issue 13 point 2 (the batch size): a pass claims no more than it can send in half a lease at
the pace measured so far, so a crash strands at most that much, never a whole `batch_size`."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from mailcase.clock import FixedClock
from mailcase.config import Settings
from mailcase.domain import NotificationIntent
from mailcase.notify.outbox import batch_capacity, deliver_due, relay_pause
from mailcase.notify.render import Renderer
from mailcase.notify.transport import SmtpTransport
from mailcase.store.engine import transaction
from mailcase.store.outbox import enqueue
from support.relay import CaptureRelay

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def test_capacity_is_half_a_lease_at_the_measured_pace() -> None:
    assert batch_capacity(None, timedelta(seconds=120)) > 10_000  # nothing measured yet: batch_size rules
    assert batch_capacity(0.5, timedelta(seconds=120)) == 120
    assert batch_capacity(4.0, timedelta(seconds=120)) == 15  # the relay taking 4 s a message
    assert batch_capacity(600.0, timedelta(seconds=120)) == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_slow_relay_shrinks_the_next_batch(engine: Engine, clock: FixedClock, settings: Settings) -> None:
    now = clock.now()
    with transaction(engine) as session:
        for i in range(40):
            enqueue(
                NotificationIntent(
                    kind="ack", template="customer.ack", recipients=(f"p{i}@acme.example",), idempotency_key=f"k{i}",
                    due_at=now, context={"case_number": i, "case_subject": "Phones down"}, locale="en",
                ),
                session=session, now=now, hostname="mailcase.localhost",
            )
    with CaptureRelay(delay_seconds=0.05) as relay:
        outbound = relay.outbound_settings(settings.outbound, timeout_seconds=1, lease_seconds=2, batch_size=200)
        slow = dataclasses.replace(settings, outbound=outbound)

        def deliver(limit: int | None = None) -> int:
            report = deliver_due(
                engine, now=now, transport=SmtpTransport(outbound), renderer=Renderer(TEMPLATES), settings=slow,
                secret=b"s", limit=limit,
            )
            return report.sent

        assert deliver(limit=10) == 10  # measures the pace
        pace = relay_pause(engine).seconds_per_message
        assert pace is not None and pace >= 0.05
        expected = batch_capacity(pace, timedelta(seconds=2))
        assert expected < 30
        print(f"\npace {pace:.3f} s/message: next pass claims {expected}")
        assert deliver() == expected  # not the 30 still queued, though batch_size is 200
        assert len(relay.messages) == 10 + expected
