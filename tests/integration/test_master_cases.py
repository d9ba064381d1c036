"""P1G master cases as customers live them: one update reaches every linked requester and subscriber once,
subscriptions by email are confirmed, one-click unsubscribe works, and closing the master closes what it should."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from mailcase.app import App
from mailcase.desk import cases as casework
from mailcase.desk import masters
from mailcase.desk.subscriptions import subscribe
from mailcase.domain import (
    CaseKind,
    CaseStatus,
    Channel,
    Priority,
    RawMessage,
    format_case_number,
)
from mailcase.ingest.pipeline import IngestOutcome
from mailcase.notify.render import Renderer, local_time
from mailcase.rules.tokens import (
    master_scope,
    request_is_genuine,
    staff_reply_address,
    unsubscribe_request,
)
from mailcase.store.cases import create_case
from mailcase.store.engine import transaction
from mailcase.store.models import Case, Organisation, Subscription
from support.broadcasts import REPO, example_app, outbox, recipient

NOW = datetime(2026, 11, 26, 16, 0, tzinfo=UTC)  # Thursday 09:00 in Denver
SUPPORT = "support@support.example.com"


@pytest.fixture
def app(engine: Engine) -> App:
    return example_app(engine, NOW)


def _open(app: App, org: str, requester: str, subject: str) -> int:
    with transaction(app.engine) as session:
        organisation = session.exec(select(Organisation).where(Organisation.key == org)).one()
        case = create_case(
            session=session, now=NOW - timedelta(hours=1), subject=subject, organisation_id=organisation.id,
            requester=requester,
        )
        return case.number


def _master(app: App) -> int:
    with transaction(app.engine) as session:
        master = masters.create_master(
            session, app.desk(), platform="microsoft teams", subject="Teams calls dropping", now=NOW,
            author="ana@support.example.com", assignee="chris@support.example.com",
        )
        return master.number


def _link(app: App, number: int, master_number: int) -> None:
    with transaction(app.engine) as session:
        case = casework.find_case(session, number, lock=True)
        master = casework.find_case(session, master_number, lock=True)
        casework.link_master(session, app.desk(), case, master, now=NOW, author="agent")


def _mail(app: App, sender: str, subject: str, *, to: str = SUPPORT, at: datetime = NOW) -> str:
    return _ingest(app, sender, subject, to=to, at=at).decision


def _ingest(app: App, sender: str, subject: str, *, to: str = SUPPORT, at: datetime = NOW) -> IngestOutcome:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(at)
    message["Message-ID"] = f"<{sender.split('@')[0]}.{at.timestamp():.0f}.{len(subject)}@{sender.split('@')[1]}>"
    message.set_content("Thanks.\n")
    raw = RawMessage(data=message.as_bytes(), channel=Channel.PIPE, received_at=at, envelope_to=(to,))
    return app.pipeline().ingest_one(raw)


def _update(app: App, master_number: int, body: str, at: datetime = NOW) -> int:
    with transaction(app.engine) as session:
        master = casework.find_case(session, master_number, lock=True)
        return masters.master_update(session, app.desk(), master, body, now=at, author="chris@support.example.com")


@pytest.fixture
def incident(app: App) -> dict[str, int]:
    """A Teams master case with three linked cases (Pat has two) and three subscribers."""
    cases = {
        "acme1": _open(app, "acme", "pat@acme.example", "Teams calls drop"),
        "acme2": _open(app, "acme", "pat@acme.example", "Teams calls drop again"),
        "brisa": _open(app, "brisa", "ana.souza@brisa.example.com.br", "Chamadas do Teams caindo"),
    }
    master = _master(app)
    for number in cases.values():
        _link(app, number, master)
    assert _mail(app, "joao@brisa.example.com.br", "subscribe platform Microsoft Teams") == "subscription_command"
    assert _mail(app, "sam@acme.example", f"subscribe {format_case_number(master)}") == "subscription_command"
    # Pat follows the master as well as having linked cases: still one message per update.
    assert _mail(app, "pat@acme.example", f"subscribe {master}") == "subscription_command"
    return cases | {"master": master}


def test_master_case_is_p1g_for_a_platform_with_its_assignee(app: App) -> None:
    number = _master(app)
    with transaction(app.engine) as session:
        master = casework.find_case(session, number)
        assert master.kind == CaseKind.MASTER and master.priority == Priority.P1G
        assert master.platform == "Microsoft Teams"  # the directory's spelling
        assert master.assignee == "chris@support.example.com"
        assert master.response_due_at == NOW + timedelta(minutes=15)


def test_email_subscriptions_are_confirmed_in_the_subscribers_language(app: App, incident: dict[str, int]) -> None:
    confirmations = {recipient(r): r for r in outbox(app.engine, template="customer.subscription")}
    assert set(confirmations) == {"joao@brisa.example.com.br", "sam@acme.example", "pat@acme.example"}
    joao = confirmations["joao@brisa.example.com.br"]
    assert joao.locale == "pt" and joao.context["action"] == "subscribed"
    assert joao.context["platform"] == "Microsoft Teams" and "master_number" not in joao.context
    assert confirmations["sam@acme.example"].context["master_number"] == incident["master"]
    assert confirmations["sam@acme.example"].in_reply_to  # answers the command it confirms
    renderer = Renderer(REPO / "templates")
    assert "unsubscribe platform Microsoft Teams" in renderer.render(joao.template, joao.locale, joao.context).text
    with transaction(app.engine) as session:
        targets = {(s.address, s.target) for s in session.exec(select(Subscription))}
    assert ("joao@brisa.example.com.br", "platform:microsoft teams") in targets


def test_master_update_reaches_linked_requesters_and_subscribers_once_each(app: App, incident: dict[str, int]) -> None:
    assert _update(app, incident["master"], "The carrier has found the faulty link.") == 4
    rows = outbox(app.engine, template="customer.master_update")
    assert sorted(recipient(r) for r in rows) == sorted(
        ["pat@acme.example", "ana.souza@brisa.example.com.br", "joao@brisa.example.com.br", "sam@acme.example"]
    )
    by = {recipient(r): r for r in rows}
    assert by["pat@acme.example"].context["case_number"] == incident["acme1"]  # their own linked case
    assert by["ana.souza@brisa.example.com.br"].context["case_number"] == incident["brisa"]
    assert by["ana.souza@brisa.example.com.br"].locale == "pt"
    assert by["sam@acme.example"].context["case_number"] == ""
    renderer = Renderer(REPO / "templates")
    for row in rows:
        assert row.case_id is not None and row.context["body"] == "The carrier has found the faulty link."
        mailto = row.context["_list_unsubscribe"]["mailto"]
        request = unsubscribe_request([mailto], SUPPORT)
        assert request is not None and request.scope == master_scope(incident["master"])
        assert request_is_genuine(request, recipient(row), app.secret)
        rendered = renderer.render(row.template, row.locale, row.context)
        assert format_case_number(incident["master"]) in rendered.subject

    with transaction(app.engine) as session:
        master = casework.find_case(session, incident["master"])
        assert master.first_response_at == NOW and master.last_agent_update_at == NOW
        assert master.status == CaseStatus.IN_PROGRESS
        assert master.update_due_at == NOW + timedelta(hours=1)
        linked = casework.find_case(session, incident["brisa"])
        assert linked.last_agent_update_at == NOW


def test_a_second_update_is_a_new_message_and_a_repeat_of_the_same_instant_is_not(app: App, incident: dict[str, int]) -> None:
    assert _update(app, incident["master"], "First.") == 4
    assert _update(app, incident["master"], "First.") == 0
    assert _update(app, incident["master"], "An hour later.", NOW + timedelta(hours=1)) == 4


def test_email_unsubscribe_is_confirmed_and_stops_updates(app: App, incident: dict[str, int]) -> None:
    later = NOW + timedelta(minutes=5)
    assert _mail(app, "joao@brisa.example.com.br", "unsubscribe platform microsoft teams", at=later) == "subscription_command"
    (confirmation,) = [
        r for r in outbox(app.engine, template="customer.subscription") if r.context["action"] == "unsubscribed"
    ]
    assert recipient(confirmation) == "joao@brisa.example.com.br" and confirmation.locale == "pt"
    assert _update(app, incident["master"], "Update.", later) == 3
    assert "joao@brisa.example.com.br" not in {recipient(r) for r in outbox(app.engine, template="customer.master_update")}


def test_one_click_unsubscribe_stops_updates_even_for_a_linked_requester(app: App, incident: dict[str, int]) -> None:
    _update(app, incident["master"], "First.")
    (row,) = [r for r in outbox(app.engine, template="customer.master_update") if recipient(r) == "pat@acme.example"]
    later = NOW + timedelta(minutes=10)
    outcome = _ingest(app, "pat@acme.example", "Unsubscribe", to=row.context["_list_unsubscribe"]["mailto"], at=later)
    reason = outcome.reason if outcome.decision == "unsubscribe" else None
    assert reason is not None and "unsubscribed from master case" in reason
    assert _update(app, incident["master"], "Second.", later + timedelta(minutes=1)) == 3
    second = [r for r in outbox(app.engine, template="customer.master_update") if r.context["body"] == "Second."]
    assert "pat@acme.example" not in {recipient(r) for r in second}


def test_closing_the_master_offers_the_open_linked_cases_and_tells_followers(app: App, incident: dict[str, int]) -> None:
    with transaction(app.engine) as session:
        master = casework.find_case(session, incident["master"], lock=True)
        casework.set_status(session, app.desk(), master, CaseStatus.CLOSED, now=NOW, author="agent")
        result = masters.master_closed(session, app.desk(), master, now=NOW, author="agent", close_linked=False)
    assert sorted(result.still_open) == sorted([incident["acme1"], incident["acme2"], incident["brisa"]])
    assert result.closed == () and result.notified == 4
    rows = outbox(app.engine, template="customer.master_closed")
    assert all(r.context["case_number"] == "" for r in rows)
    with transaction(app.engine) as session:
        assert casework.find_case(session, incident["brisa"]).status == CaseStatus.NEW

    # Taking up the offer later closes them, each requester told once about their own case.
    later = NOW + timedelta(minutes=30)
    with transaction(app.engine) as session:
        master = casework.find_case(session, incident["master"], lock=True)
        result = masters.close_linked_cases(session, app.desk(), master, now=later, author="agent")
    assert sorted(result.closed) == sorted([incident["acme1"], incident["acme2"], incident["brisa"]])
    told = [r for r in outbox(app.engine, template="customer.master_closed") if r.context["case_number"]]
    assert sorted(recipient(r) for r in told) == ["ana.souza@brisa.example.com.br", "pat@acme.example"]


def test_closing_the_master_with_close_linked_closes_them_with_one_notice_each(app: App, incident: dict[str, int]) -> None:
    with transaction(app.engine) as session:
        master = casework.find_case(session, incident["master"], lock=True)
        casework.set_status(session, app.desk(), master, CaseStatus.CLOSED, now=NOW, author="agent")
        result = masters.master_closed(session, app.desk(), master, now=NOW, author="agent", close_linked=True)
    assert sorted(result.closed) == sorted([incident["acme1"], incident["acme2"], incident["brisa"]])
    assert result.still_open == ()
    rows = outbox(app.engine, template="customer.master_closed")
    assert sorted(recipient(r) for r in rows) == sorted(
        ["pat@acme.example", "ana.souza@brisa.example.com.br", "joao@brisa.example.com.br", "sam@acme.example"]
    )
    by = {recipient(r): r for r in rows}
    assert by["pat@acme.example"].context["case_number"] == incident["acme1"]
    assert by["sam@acme.example"].context["case_number"] == ""
    # The closing notice is the customer's only mail about it: no separate "status changed" notice.
    assert outbox(app.engine, template="customer.status_changed") == []
    with transaction(app.engine) as session:
        statuses = {c.number: c.status for c in session.exec(select(Case).where(Case.master_id.is_not(None)))}  # type: ignore[union-attr]
    assert set(statuses.values()) == {CaseStatus.CLOSED}


def test_subscribing_to_a_case_that_is_not_a_master_changes_nothing(app: App) -> None:
    number = _open(app, "acme", "pat@acme.example", "Printer jam")
    assert _mail(app, "sam@acme.example", f"subscribe {number}") == "subscription_command"
    assert outbox(app.engine, template="customer.subscription") == []
    with transaction(app.engine) as session:
        assert list(session.exec(select(Subscription))) == []


def test_a_subscriber_without_organisation_reads_master_updates_in_the_desk_zone_by_email_and_by_cli(
    engine: Engine,
) -> None:
    """The configured `[business] timezone`, not Denver, whether the assignee writes the update by
    email (the pipeline) or with `cases reply` (the CLI)."""
    app = example_app(engine, NOW, {"MAILCASE_BUSINESS__TIMEZONE": "Europe/Lisbon"})
    master_number = _master(app)
    outsider = "eve@outsider.example"  # in no organisation of the directory
    with transaction(app.engine) as session:
        master = casework.find_case(session, master_number, lock=True)
        subscribe(session, app.desk(), address=outsider, case=master, now=NOW)
    chris = "chris@support.example.com"
    by_email = staff_reply_address(SUPPORT, master_number, chris, app.secret)
    assert _mail(app, chris, "Re: Teams calls dropping", to=by_email) == "technician_reply"
    _update(app, master_number, "Calls are back for most customers.", at=NOW + timedelta(minutes=30))

    rows = [r for r in outbox(app.engine, template="customer.master_update") if recipient(r) == outsider]
    assert len(rows) == 2
    renderer = Renderer(REPO / "templates")
    for row in rows:
        assert row.context["tz"] == "Europe/Lisbon"
        text = renderer.render(row.template, row.locale, row.context).text
        assert f"Next update by {local_time(row.context['next_update_at'], 'Europe/Lisbon')}." in text
        assert " WET." in text  # Western European Time, not MST
