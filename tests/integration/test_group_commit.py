"""Group commit (`Pipeline.ingest_group`, issue 16) through the real pipeline on SQLite and PostgreSQL: several
messages in one transaction, each its own case, and one message's failure rolled back alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from mailcase.domain import CaseStatus, Channel, InboundMessage, RawMessage, SenderVerdict
from mailcase.ingest.pipeline import IngestOutcome, Pipeline
from support.threads import PAT, SUPPORT, OpenedCase, ThreadDesk, eml, fresh_message_id

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


def reply(desk: ThreadDesk, case: OpenedCase, *, broken: bool = False) -> RawMessage:
    data = eml("reply_outlook_full_headers.eml", message_id=fresh_message_id(), date="Wed, 25 Nov 2026 18:00:00 -0700",
               from_header=PAT, in_reply_to=case.ack_id, references=f"{case.customer_message_id} {case.ack_id}",
               subject=f"RE: {case.tag} Phones down at the Chicago office")
    if broken:  # and says something else, so that anything it left behind shows
        data = BREAK + b"\r\n" + data.replace(b"The phones on the second floor are back", b"Now every floor is down")
    return RawMessage(data=data, channel=Channel.SMTP, received_at=desk.clock.now(), envelope_from="pat@acme.example",
                      envelope_to=(SUPPORT,), source="test")


@pytest.mark.parametrize("status", [CaseStatus.NEW, CaseStatus.RESOLVED_FOLLOW_UP])
def test_a_reply_failing_in_a_group_leaves_its_neighbour_on_the_same_case_as_if_it_came_alone(
    desk: ThreadDesk, status: CaseStatus
) -> None:
    """The failed reply wrote the case's deadlines and status before its savepoint rolled back; the
    next reply in the group must see the case as the database has it, not as the failed one left it
    in memory. Compared with the same reply ingested alone on a twin case."""
    grouped, alone = desk.open_case(), desk.open_case()
    if status is not CaseStatus.NEW:
        desk.at(OPENED + timedelta(hours=1))
        desk.set_status(grouped.number, status)
        desk.set_status(alone.number, status)
    desk.at(OPENED + timedelta(hours=2))

    failed, ok = breaking(desk).ingest_group([reply(desk, grouped, broken=True), reply(desk, grouped)])
    desk.pipeline.ingest_one(reply(desk, alone))

    assert isinstance(failed, RuntimeError) and isinstance(ok, IngestOutcome)
    assert ok.decision == "append_update"

    def seen(number: int) -> tuple[dict[str, Any], list[tuple[str, list[tuple[str, str]]]]]:
        """The case as the agent sees it and the notices this reply queued, less what differs between
        two cases (number, subject tag, round-robin assignee and their reply token)."""
        shown = {k: v for k, v in desk.show(number).items() if k not in ("number", "subject", "assignee")}
        shown["messages"] = [(m["direction"], m["new_text"]) for m in shown["messages"]]
        shown["events"] = [(e["kind"], e["at"]) for e in shown["events"]]
        notices = sorted(
            (o.kind, sorted((k, str(v)) for k, v in o.context.items()
                            if not any(word in k for word in ("case", "number", "subject", "assignee", "recipient", "token"))))
            for o in desk.outbox(case=number) if o.created_at >= desk.clock.now()
        )
        return shown, notices

    assert seen(grouped.number) == seen(alone.number)
    assert seen(grouped.number)[1], "the reply queued its notices"
