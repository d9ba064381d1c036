"""The outbox end to end on SQLite and PostgreSQL: queue once, deliver to a capture relay, retry, fail, never twice."""

from __future__ import annotations

import dataclasses
import random
import re
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from mailcase.clock import FixedClock
from mailcase.config import Settings
from mailcase.domain import Direction, NotificationIntent, OutboxState
from mailcase.notify.outbox import DeliveryReport, deliver_due, retry_delay
from mailcase.notify.render import Renderer
from mailcase.notify.transport import Envelope, ResultCallback, SendResult, SmtpTransport
from mailcase.present import case_detail_json, case_text
from mailcase.rules.tokens import case_from_address
from mailcase.store.engine import make_engine, transaction
from mailcase.store.models import Case, Message, Outbox, RecipientHealth
from mailcase.store.outbox import enqueue, failing_recipients, outbox_rows, record_bounce
from support.relay import CaptureRelay

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
SECRET = b"outbox-test-secret"
HOSTNAME = "mailcase.localhost"
MESSAGE_ID = re.compile(r"^<mc\.[0-9a-f]{32}@mailcase\.localhost>$")


class HalfJitter(random.Random):
    """Jitter pinned to the middle, so backoff is predictable in assertions."""

    def random(self) -> float:
        return 0.5


@pytest.fixture
def relay() -> Iterator[CaptureRelay]:
    with CaptureRelay() as running:
        yield running


@pytest.fixture
def relay_settings(settings: Settings, relay: CaptureRelay) -> Settings:
    return dataclasses.replace(settings, outbound=relay.outbound_settings(settings.outbound))


@pytest.fixture
def renderer() -> Renderer:
    return Renderer(TEMPLATES)


def _case(engine: Engine, now: datetime, number: int = 1042) -> int:
    with transaction(engine) as session:
        case = Case(number=number, subject="Phones down", requester="pat@acme.example", created_at=now, updated_at=now)
        session.add(case)
        session.flush()
        assert case.id is not None
        return case.id


def _ack(now: datetime, case_id: int | None, *, key: str = "ack:1042", number: int = 1042) -> NotificationIntent:
    return NotificationIntent(
        kind="ack",
        template="customer.ack",
        recipients=("pat@acme.example",),
        cc=("lee@acme.example",),
        idempotency_key=key,
        due_at=now,
        context={"case_number": number, "case_subject": "Phones down"},
        locale="en",
        case_id=case_id,
        in_reply_to="<customer-1@acme.example>",
        references=("<customer-1@acme.example>",),
        auto_submitted="auto-replied",
        reply_token_case=number,
    )


def _enqueue(engine: Engine, intent: NotificationIntent, now: datetime) -> int | None:
    with transaction(engine) as session:
        return enqueue(intent, session=session, now=now, hostname=HOSTNAME)


def _row(engine: Engine, outbox_id: int) -> Outbox:
    with Session(engine) as session:
        row = session.get(Outbox, outbox_id)
        assert row is not None
        return row


def _deliver(
    engine: Engine,
    settings: Settings,
    renderer: Renderer,
    now: datetime,
    *,
    transport: Any = None,
    limit: int | None = None,
) -> DeliveryReport:
    return deliver_due(
        engine,
        now=now,
        transport=transport or SmtpTransport(settings.outbound),
        renderer=renderer,
        settings=settings,
        secret=SECRET,
        limit=limit,
        rng=HalfJitter(),
    )


# ---------------------------------------------------------------------------------------------
# Queueing


def test_enqueuing_the_same_notice_twice_queues_one_row(engine: Engine, clock: FixedClock) -> None:
    now = clock.now()
    case_id = _case(engine, now)
    first = _enqueue(engine, _ack(now, case_id), now)
    second = _enqueue(engine, _ack(now, case_id), now)
    assert first is not None
    assert second is None
    with Session(engine) as session:
        rows = session.exec(select(Outbox)).all()
    assert len(rows) == 1
    row = rows[0]
    assert MESSAGE_ID.match(row.message_id)
    assert row.state == OutboxState.QUEUED
    assert row.recipients == ["pat@acme.example"]
    assert row.due_at == now and row.next_attempt_at == now


def test_each_notice_gets_its_own_message_id(engine: Engine, clock: FixedClock) -> None:
    now = clock.now()
    first = _enqueue(engine, _ack(now, None, key="a"), now)
    second = _enqueue(engine, _ack(now, None, key="b"), now)
    assert first is not None and second is not None
    assert _row(engine, first).message_id != _row(engine, second).message_id


def test_outbox_rows_lists_newest_first_and_filters_by_state(engine: Engine, clock: FixedClock) -> None:
    now = clock.now()
    ids = [_enqueue(engine, _ack(now, None, key=f"k{i}"), now) for i in range(3)]
    with transaction(engine) as session:
        session.execute(sa.update(Outbox).where(Outbox.id == ids[0]).values(state="failed"))
    with Session(engine) as session:
        assert [row.id for row in outbox_rows(session=session)] == list(reversed(ids))
        assert [row.id for row in outbox_rows(session=session, state="failed")] == [ids[0]]
        assert [row.id for row in outbox_rows(session=session, state=OutboxState.QUEUED, limit=1)] == [ids[2]]


# ---------------------------------------------------------------------------------------------
# Delivery


def test_due_notice_is_delivered_with_its_stored_message_id(
    engine: Engine, clock: FixedClock, relay: CaptureRelay, relay_settings: Settings, renderer: Renderer
) -> None:
    now = clock.now()
    case_id = _case(engine, now)
    outbox_id = _enqueue(engine, _ack(now, case_id), now)
    assert outbox_id is not None
    stored_id = _row(engine, outbox_id).message_id

    report = _deliver(engine, relay_settings, renderer, now)

    assert report == DeliveryReport(sent=1)
    (captured,) = relay.messages
    message = captured.message
    assert message["Message-ID"] == stored_id
    assert message["Subject"] == "[Case #00001042] Received: Phones down"
    assert message["In-Reply-To"] == "<customer-1@acme.example>"
    assert message["Auto-Submitted"] == "auto-replied"
    assert case_from_address(message["Reply-To"], relay_settings.smtp.support_address, SECRET) == 1042
    assert captured.mail_from == relay_settings.outbound.from_address
    assert set(captured.rcpt_tos) == {"pat@acme.example", "lee@acme.example"}
    row = _row(engine, outbox_id)
    assert row.state == OutboxState.SENT
    assert row.sent_at == now
    assert row.attempts == 1
    assert row.reply_to == message["Reply-To"]


def test_sent_case_message_is_recorded_on_the_case(
    engine: Engine, clock: FixedClock, relay_settings: Settings, renderer: Renderer
) -> None:
    now = clock.now()
    case_id = _case(engine, now)
    outbox_id = _enqueue(engine, _ack(now, case_id), now)
    _deliver(engine, relay_settings, renderer, now)
    with Session(engine) as session:
        (recorded,) = session.exec(select(Message).where(Message.case_id == case_id)).all()
    assert recorded.direction == Direction.OUTBOUND
    assert recorded.message_id == _row(engine, outbox_id or 0).message_id
    assert recorded.outbox_id == outbox_id
    assert recorded.subject == "[Case #00001042] Received: Phones down"
    assert "P4" in recorded.text
    assert recorded.to_addresses == ["pat@acme.example"]
    assert recorded.received_at == now
    # `cases show` names whom it went to (the requester, and who was copied), not our own address.
    with Session(engine) as session:
        case = session.get(Case, case_id)
        assert case is not None
        shown = case_text(case_detail_json(session, case), "UTC")
    assert "-> pat@acme.example, lee@acme.example: [Case #00001042] Received: Phones down" in shown


def _refuse_case_messages(engine: Engine) -> None:
    """A database that refuses every new row of `message` (a trigger), as a broken constraint would."""
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            connection.exec_driver_sql(
                "CREATE TRIGGER refuse_message BEFORE INSERT ON message BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        else:
            connection.exec_driver_sql(
                "CREATE FUNCTION refuse_message() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'refused'; END $$"
            )
            connection.exec_driver_sql(
                "CREATE TRIGGER refuse_message BEFORE INSERT ON message FOR EACH ROW EXECUTE FUNCTION refuse_message()"
            )


def test_a_case_copy_the_database_refuses_never_undoes_the_sent_record(
    engine: Engine, clock: FixedClock, relay: CaptureRelay, relay_settings: Settings, renderer: Renderer
) -> None:
    # The 250 and the case's copy share one commit; when the copy is refused, the 250 is committed
    # alone, so the relay's acceptance is recorded and the notice is never sent again.
    now = clock.now()
    case_id = _case(engine, now)
    outbox_id = _enqueue(engine, _ack(now, case_id), now)
    _refuse_case_messages(engine)

    assert _deliver(engine, relay_settings, renderer, now).sent == 1
    assert _deliver(engine, relay_settings, renderer, now + timedelta(hours=1)).sent == 0

    assert _row(engine, outbox_id or 0).state == OutboxState.SENT
    assert len(relay.messages) == 1
    with Session(engine) as session:
        assert session.exec(select(Message).where(Message.case_id == case_id)).all() == []


def test_notice_without_a_case_records_no_case_message(
    engine: Engine, clock: FixedClock, relay: CaptureRelay, relay_settings: Settings, renderer: Renderer
) -> None:
    now = clock.now()
    intent = dataclasses.replace(_ack(now, None), reply_token_case=None)
    _enqueue(engine, intent, now)
    assert _deliver(engine, relay_settings, renderer, now).sent == 1
    assert relay.messages[0].message["Reply-To"] is None
    with Session(engine) as session:
        assert session.exec(select(Message)).all() == []


def test_notice_due_later_waits_until_due(
    engine: Engine, clock: FixedClock, relay: CaptureRelay, relay_settings: Settings, renderer: Renderer
) -> None:
    now = clock.now()
    intent = dataclasses.replace(_ack(now, None), due_at=now + timedelta(days=7))
    _enqueue(engine, intent, now)
    assert _deliver(engine, relay_settings, renderer, now) == DeliveryReport()
    assert relay.messages == []
    assert _deliver(engine, relay_settings, renderer, now + timedelta(days=7)).sent == 1


def test_sent_notice_is_not_sent_again(
    engine: Engine, clock: FixedClock, relay: CaptureRelay, relay_settings: Settings, renderer: Renderer
) -> None:
    now = clock.now()
    _enqueue(engine, _ack(now, None), now)
    _deliver(engine, relay_settings, renderer, now)
    assert _deliver(engine, relay_settings, renderer, now + timedelta(hours=1)) == DeliveryReport()
    assert len(relay.messages) == 1


def test_a_4xx_reply_is_retried_later_with_backoff(
    engine: Engine, clock: FixedClock, relay: CaptureRelay, relay_settings: Settings, renderer: Renderer
) -> None:
    now = clock.now()
    outbox_id = _enqueue(engine, _ack(now, None), now)
    assert outbox_id is not None
    relay.fail_next(2, "451 4.3.0 Try again later")
    base = relay_settings.outbound.retry_base_seconds

    assert _deliver(engine, relay_settings, renderer, now) == DeliveryReport(retried=1)
    row = _row(engine, outbox_id)
    assert row.state == OutboxState.QUEUED
    assert row.attempts == 1
    assert row.last_error == "451 4.3.0 Try again later"
    first_retry = row.next_attempt_at
    assert first_retry == now + retry_delay(1, base_seconds=base, max_seconds=3600, jitter=0.5)

    # Not before its time.
    assert _deliver(engine, relay_settings, renderer, now + timedelta(seconds=1)) == DeliveryReport()

    assert first_retry is not None
    assert _deliver(engine, relay_settings, renderer, first_retry).retried == 1
    second = _row(engine, outbox_id)
    assert second.attempts == 2
    assert second.next_attempt_at is not None
    assert second.next_attempt_at - first_retry > first_retry - now  # the wait grows

    assert _deliver(engine, relay_settings, renderer, second.next_attempt_at).sent == 1
    assert _row(engine, outbox_id).state == OutboxState.SENT
    assert len(relay.messages) == 1


def test_a_5xx_reply_fails_the_notice_with_the_reply_recorded(
    engine: Engine, clock: FixedClock, relay: CaptureRelay, relay_settings: Settings, renderer: Renderer
) -> None:
    now = clock.now()
    outbox_id = _enqueue(engine, _ack(now, None), now)
    assert outbox_id is not None
    relay.fail_next(1, "554 5.7.1 Rejected by policy")
    assert _deliver(engine, relay_settings, renderer, now) == DeliveryReport(failed=1)
    row = _row(engine, outbox_id)
    assert row.state == OutboxState.FAILED
    assert row.last_error == "554 5.7.1 Rejected by policy"
    assert _deliver(engine, relay_settings, renderer, now + timedelta(days=1)) == DeliveryReport()


def test_temporary_failures_give_up_after_max_attempts(
    engine: Engine, clock: FixedClock, relay: CaptureRelay, relay_settings: Settings, renderer: Renderer
) -> None:
    settings = dataclasses.replace(
        relay_settings, outbound=dataclasses.replace(relay_settings.outbound, max_attempts=2)
    )
    now = clock.now()
    outbox_id = _enqueue(engine, _ack(now, None), now)
    assert outbox_id is not None
    relay.fail_next(5)
    assert _deliver(engine, settings, renderer, now).retried == 1
    later = _row(engine, outbox_id).next_attempt_at
    assert later is not None
    assert _deliver(engine, settings, renderer, later) == DeliveryReport(failed=1)
    row = _row(engine, outbox_id)
    assert row.state == OutboxState.FAILED
    assert row.last_error.startswith("gave up after 2 attempts: 451")


def test_backoff_is_capped() -> None:
    assert retry_delay(30, base_seconds=60, max_seconds=3600, jitter=0.999) <= timedelta(seconds=3600)
    assert retry_delay(30, base_seconds=60, max_seconds=3600, jitter=0.0) == timedelta(seconds=1800)
    assert retry_delay(1, base_seconds=60, max_seconds=3600, jitter=0.0) == timedelta(seconds=30)
    assert retry_delay(2, base_seconds=60, max_seconds=3600, jitter=0.0) == timedelta(seconds=60)


def test_a_notice_whose_template_cannot_render_fails_without_blocking_others(
    engine: Engine, clock: FixedClock, relay: CaptureRelay, relay_settings: Settings, renderer: Renderer
) -> None:
    now = clock.now()
    broken = dataclasses.replace(_ack(now, None, key="broken"), context={"case_number": 1})
    broken_id = _enqueue(engine, broken, now)
    assert broken_id is not None
    _enqueue(engine, _ack(now, None, key="fine"), now)
    assert _deliver(engine, relay_settings, renderer, now) == DeliveryReport(sent=1, failed=1)
    row = _row(engine, broken_id)
    assert row.state == OutboxState.FAILED
    assert "case_subject" in row.last_error
    assert len(relay.messages) == 1


def test_rows_left_sending_by_a_dead_daemon_are_delivered_again(
    engine: Engine, clock: FixedClock, relay: CaptureRelay, relay_settings: Settings, renderer: Renderer
) -> None:
    now = clock.now()
    outbox_id = _enqueue(engine, _ack(now, None), now)
    # Held by a daemon on another host, whose liveness cannot be checked from here: its lease decides.
    lease_until = now + timedelta(seconds=relay_settings.outbound.lease_seconds)
    with transaction(engine) as session:
        session.execute(
            sa.update(Outbox).where(Outbox.id == outbox_id).values(
                state="sending", next_attempt_at=now, claimed_by="elsewhere:4242:1", lease_until=lease_until
            )
        )
    assert _deliver(engine, relay_settings, renderer, lease_until - timedelta(seconds=1)) == DeliveryReport()
    report = _deliver(engine, relay_settings, renderer, lease_until + timedelta(seconds=1))
    assert report == DeliveryReport(sent=1, requeued=1)
    assert len(relay.messages) == 1


class ExplodingTransport:
    """A transport that delivers the first message and then dies (a bug, a killed thread)."""

    def __init__(self, inner: SmtpTransport) -> None:
        self.inner = inner

    def send(self, messages: Sequence[Envelope], *, on_result: ResultCallback | None = None) -> list[SendResult]:
        results = self.inner.send(messages[:1], on_result=on_result)
        raise RuntimeError(f"transport died after {len(results)} message")


def test_messages_not_reported_by_a_failing_transport_go_back_to_the_queue(
    engine: Engine, clock: FixedClock, relay: CaptureRelay, relay_settings: Settings, renderer: Renderer
) -> None:
    now = clock.now()
    first = _enqueue(engine, _ack(now, None, key="one"), now)
    second = _enqueue(engine, _ack(now, None, key="two"), now)
    assert first is not None and second is not None
    transport = ExplodingTransport(SmtpTransport(relay_settings.outbound))
    with pytest.raises(RuntimeError):
        _deliver(engine, relay_settings, renderer, now, transport=transport)
    assert _row(engine, first).state == OutboxState.SENT
    assert _row(engine, second).state == OutboxState.QUEUED
    assert _row(engine, second).last_error == "delivery interrupted"


class WatchingTransport:
    """Sends one message at a time through the real transport and, just before each, reads the
    committed outbox states and outbound case messages on a connection of its own: what another
    daemon, or this one restarted after a crash, would find."""

    def __init__(self, inner: SmtpTransport, engine: Engine) -> None:
        self.inner = inner
        self.engine = engine
        self.seen: list[tuple[list[OutboxState], int]] = []

    def send(self, messages: Sequence[Envelope], *, on_result: ResultCallback | None = None) -> list[SendResult]:
        results = []
        for index, envelope in enumerate(messages):
            with Session(self.engine) as session:
                states = list(session.exec(select(Outbox.state).order_by(Outbox.id)).all())
                recorded = len(session.exec(select(Message.id)).all())
            self.seen.append((states, recorded))
            (result,) = self.inner.send([envelope])
            results.append(result)
            if on_result is not None:
                on_result(index, result)
        return results


def test_each_outcome_is_committed_before_the_next_message_is_sent(
    engine: Engine, clock: FixedClock, relay: CaptureRelay, relay_settings: Settings, renderer: Renderer
) -> None:
    # So a crash between the relay's 250 and our commit can re-send at most that one message.
    now = clock.now()
    case_id = _case(engine, now)
    for key in ("one", "two", "three"):
        _enqueue(engine, _ack(now, case_id, key=key), now)
    transport = WatchingTransport(SmtpTransport(relay_settings.outbound), engine)
    assert _deliver(engine, relay_settings, renderer, now, transport=transport) == DeliveryReport(sent=3)
    sending, sent = OutboxState.SENDING, OutboxState.SENT
    assert transport.seen == [
        ([sending, sending, sending], 0),
        ([sent, sending, sending], 1),
        ([sent, sent, sending], 2),
    ]


def test_a_relay_that_is_down_leaves_notices_queued(
    engine: Engine, clock: FixedClock, relay: CaptureRelay, relay_settings: Settings, renderer: Renderer
) -> None:
    now = clock.now()
    outbox_id = _enqueue(engine, _ack(now, None), now)
    assert outbox_id is not None
    down = dataclasses.replace(relay_settings, outbound=dataclasses.replace(relay_settings.outbound, port=1))
    assert _deliver(engine, down, renderer, now) == DeliveryReport(retried=1, paused=True)
    row = _row(engine, outbox_id)
    assert row.state == OutboxState.QUEUED
    assert row.last_error.startswith("cannot connect")
    assert row.attempts == 0  # the relay said nothing about this notice: nothing is charged


# ---------------------------------------------------------------------------------------------
# Several daemons


def _many(engine: Engine, now: datetime, count: int) -> list[int]:
    with transaction(engine) as session:
        ids = [
            enqueue(_ack(now, None, key=f"n{i}", number=i + 1), session=session, now=now, hostname=HOSTNAME)
            for i in range(count)
        ]
    return [i for i in ids if i is not None]


def test_two_daemons_delivering_at_once_never_send_a_notice_twice(
    engine: Engine, clock: FixedClock, relay: CaptureRelay, relay_settings: Settings, renderer: Renderer
) -> None:
    now = clock.now()
    ids = _many(engine, now, 30)
    start = threading.Barrier(2)
    reports: list[DeliveryReport] = []
    errors: list[BaseException] = []

    def daemon() -> None:
        try:
            start.wait()
            while True:
                report = _deliver(engine, relay_settings, renderer, now, limit=5)
                reports.append(report)
                if report.sent == 0:
                    return
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=daemon) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    sent_ids = [m.message["Message-ID"] for m in relay.messages]
    assert len(sent_ids) == len(ids) == len(set(sent_ids))
    assert sum(report.sent for report in reports) == len(ids)
    with Session(engine) as session:
        states = session.exec(select(Outbox.state)).all()
    assert set(states) == {OutboxState.SENT}


@pytest.mark.postgres
def test_a_row_claimed_by_another_daemon_is_skipped_not_waited_for(
    migrated_pg_url: str, clock: FixedClock, relay: CaptureRelay, relay_settings: Settings, renderer: Renderer
) -> None:
    # Row locks are PostgreSQL's (SQLite serialises writers instead), so this runs there only.
    engine = make_engine(migrated_pg_url)
    now = clock.now()
    locked_id, free_id = _many(engine, now, 2)
    outcome: list[DeliveryReport] = []
    with engine.connect() as other_daemon:
        other_daemon.begin()
        other_daemon.execute(sa.text("SELECT id FROM outbox WHERE id = :id FOR UPDATE"), {"id": locked_id})
        worker = threading.Thread(target=lambda: outcome.append(_deliver(engine, relay_settings, renderer, now)))
        worker.start()
        worker.join(timeout=60)  # a generous safety net: SKIP LOCKED returns at once
        blocked = worker.is_alive()
        other_daemon.rollback()
    worker.join()
    try:
        assert not blocked
        assert outcome == [DeliveryReport(sent=1)]
        assert _row(engine, free_id).state == OutboxState.SENT
        assert _row(engine, locked_id).state == OutboxState.QUEUED
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------------------------
# Bounces


def test_a_bounce_marks_the_notice_and_the_failing_recipient(
    engine: Engine, clock: FixedClock, relay_settings: Settings, renderer: Renderer
) -> None:
    now = clock.now()
    outbox_id = _enqueue(engine, _ack(now, None), now)
    assert outbox_id is not None
    _deliver(engine, relay_settings, renderer, now)
    message_id = _row(engine, outbox_id).message_id
    later = now + timedelta(minutes=5)
    for _ in range(2):
        with transaction(engine) as session:
            assert record_bounce(
                session=session,
                message_id=message_id.strip("<>"),
                recipients=["Lee@acme.example"],
                reason="5.1.1 user unknown",
                now=later,
            )
    row = _row(engine, outbox_id)
    assert row.bounced_at == later
    assert row.bounce_reason == "5.1.1 user unknown"
    with Session(engine) as session:
        health = session.get(RecipientHealth, "lee@acme.example")
    assert health is not None
    assert health.failing and health.bounces == 2 and health.last_bounce_at == later
    with Session(engine) as session:
        addresses = ["LEE@acme.example", "pat@acme.example"]
        assert failing_recipients(session=session, addresses=addresses) == {"lee@acme.example"}


def test_a_bounce_for_mail_we_never_sent_records_nothing(engine: Engine, clock: FixedClock) -> None:
    with transaction(engine) as session:
        assert not record_bounce(
            session=session,
            message_id="<forged@example.com>",
            recipients=["victim@acme.example"],
            reason="5.1.1",
            now=clock.now(),
        )
    with Session(engine) as session:
        assert session.exec(select(RecipientHealth)).all() == []


class ReturnOnlyTransport:
    """A transport that reports results only by returning them (no callback)."""

    def __init__(self, inner: SmtpTransport) -> None:
        self.inner = inner

    def send(self, messages: Sequence[Envelope], *, on_result: ResultCallback | None = None) -> list[SendResult]:
        return self.inner.send(messages)


def test_results_returned_without_callbacks_are_recorded(
    engine: Engine, clock: FixedClock, relay: CaptureRelay, relay_settings: Settings, renderer: Renderer
) -> None:
    now = clock.now()
    outbox_id = _enqueue(engine, _ack(now, None), now)
    assert outbox_id is not None
    transport = ReturnOnlyTransport(SmtpTransport(relay_settings.outbound))
    assert _deliver(engine, relay_settings, renderer, now, transport=transport) == DeliveryReport(sent=1)
    assert _row(engine, outbox_id).state == OutboxState.SENT
