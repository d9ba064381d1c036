"""Issue 13 point 3 (the age limit): a notice expires by age, not by a count of other people's
failures, and its case shows that the customer was not told."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

from sqlalchemy.engine import Engine

from mailcase.clock import FixedClock
from mailcase.config import Settings
from mailcase.domain import NotificationIntent
from mailcase.notify.outbox import deliver_due
from mailcase.notify.render import Renderer
from mailcase.notify.transport import SmtpTransport
from mailcase.store.engine import transaction
from mailcase.store.models import Case
from mailcase.store.outbox import enqueue
from support.cli import MailcaseCli
from support.relay import CaptureRelay

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def test_a_notice_older_than_max_age_fails_and_its_case_shows_it(
    engine: Engine, database_url: str, clock: FixedClock, settings: Settings
) -> None:
    now = clock.now()
    max_age = timedelta(hours=settings.outbound.max_age_hours)
    assert max_age == timedelta(days=5)  # the default, like Postfix's maximal_queue_lifetime
    with transaction(engine) as session:
        case = Case(number=4711, subject="Phones down", requester="pat@acme.example", created_at=now, updated_at=now,
                    assignee="ana@support.example.com")
        session.add(case)
        session.flush()
        case_id = case.id
        for key, due in (("old", now - max_age - timedelta(minutes=1)), ("recent", now - max_age + timedelta(hours=1))):
            enqueue(
                NotificationIntent(
                    kind="customer.update", template="customer.ack", recipients=("pat@acme.example",),
                    idempotency_key=key, due_at=due, context={"case_number": 4711, "case_subject": "Phones down"},
                    locale="en", case_id=case_id,
                ),
                session=session, now=due, hostname="mailcase.localhost",
            )
    with CaptureRelay() as relay:
        relay_settings = dataclasses.replace(settings, outbound=relay.outbound_settings(settings.outbound))
        report = deliver_due(
            engine, now=now, transport=SmtpTransport(relay_settings.outbound), renderer=Renderer(TEMPLATES),
            settings=relay_settings, secret=b"s",
        )
        assert (report.expired, report.sent) == (1, 1)  # the recent one still goes
        assert len(relay.messages) == 1

    shown = MailcaseCli(database_url)("cases", "show", "4711", "--json")
    assert shown.status == 0, shown.stderr
    failed = [e for e in shown.json()["events"] if e["kind"] == "notice_failed"]
    assert len(failed) == 1
    assert "pat@acme.example not delivered: expired: undelivered 120 h after it was due" in failed[0]["summary"]
