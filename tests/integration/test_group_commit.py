"""Group commit (`Pipeline.ingest_group`, issue 16) through the real pipeline on SQLite and PostgreSQL: several
messages in one transaction, each its own case, and one message's failure rolled back alone."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from mailcase.domain import Channel, InboundMessage, RawMessage, SenderVerdict
from mailcase.ingest.pipeline import IngestOutcome, Pipeline
from support.threads import PAT, SUPPORT, ThreadDesk, eml, fresh_message_id

OPENED = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)  # Wednesday 16:00 in Denver
BREAK = b"X-Test-Break: yes"


class BreakingPipeline(Pipeline):
    """The real pipeline, except that a message carrying BREAK fails half-way through its transaction
    (after its raw row was written), as a bug or a constraint would."""

    def _store(
        self, session: Session, raw: RawMessage, message: InboundMessage | None, parse_error: str,
        verdict: SenderVerdict,
    ) -> IngestOutcome:
        outcome = super()._store(session, raw, message, parse_error, verdict)
        if BREAK in raw.data:
            session.flush()
            raise RuntimeError("this message breaks after its case was written")
        return outcome


@pytest.fixture
def desk(engine: Engine) -> ThreadDesk:
    return ThreadDesk.start(engine, OPENED)


def raw(desk: ThreadDesk, subject: str, *, broken: bool = False) -> RawMessage:
    data = eml("new_case_outlook.eml", message_id=fresh_message_id(), date="Wed, 25 Nov 2026 16:00:00 -0700",
               from_header=PAT, subject=subject)
    if broken:
        data = BREAK + b"\r\n" + data
    return RawMessage(data=data, channel=Channel.SMTP, received_at=desk.clock.now(), envelope_from="pat@acme.example",
                      envelope_to=(SUPPORT,), source="test")


def breaking(desk: ThreadDesk) -> BreakingPipeline:
    app = desk.app
    return BreakingPipeline(engine=app.engine, settings=app.settings, desk=app.desk(), secret=app.secret,
                            calendar=app.calendar)


def test_messages_committed_together_each_open_their_own_case_and_notices(desk: ThreadDesk) -> None:
    first, second = desk.pipeline.ingest_group([raw(desk, "Trunk 1 is down"), raw(desk, "Trunk 2 is down")])

    assert isinstance(first, IngestOutcome) and isinstance(second, IngestOutcome)
    assert (first.decision, second.decision) == ("open_case", "open_case")
    assert first.case_number != second.case_number
    assert desk.case_count() == 2
    for outcome in (first, second):
        assert outcome.case_number is not None
        number = int(outcome.case_number)
        assert len(desk.outbox(kind="customer.ack", case=number)) == 1


def test_a_message_failing_in_a_group_is_rolled_back_alone_and_its_neighbours_are_committed(desk: ThreadDesk) -> None:
    pipeline = breaking(desk)
    broken = raw(desk, "Trunk 2 is down", broken=True)

    first, failed, third = pipeline.ingest_group([raw(desk, "Trunk 1 is down"), broken, raw(desk, "Trunk 3 is down")])

    assert isinstance(first, IngestOutcome) and isinstance(third, IngestOutcome)
    assert isinstance(failed, RuntimeError)
    assert desk.case_count() == 2
    # Nothing of the failed message stayed behind: sent again (the sender's retry after 451), it is new mail.
    again = desk.pipeline.ingest_one(
        RawMessage(data=broken.data.replace(BREAK + b"\r\n", b""), channel=Channel.SMTP, received_at=desk.clock.now(),
                   envelope_from="pat@acme.example", envelope_to=(SUPPORT,), source="test")
    )
    assert again.decision == "open_case"
    assert desk.case_count() == 3


def test_a_duplicate_inside_one_group_is_one_case(desk: ThreadDesk) -> None:
    message = raw(desk, "Trunk 1 is down")

    first, second = desk.pipeline.ingest_group([message, message])

    assert isinstance(first, IngestOutcome) and isinstance(second, IngestOutcome)
    assert first.decision == "open_case" and second.decision == "duplicate"
    assert second.case_number == first.case_number
    assert desk.case_count() == 1
