"""Maintenance windows as customers live them: planned on the right nights, each notice at its instant to
exactly the maintenance contacts of affected organisations, once, with a calendar entry that stays in sync."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.engine import Engine

from mailcase.app import App
from mailcase.desk import maintenance as desk_maintenance
from mailcase.domain import Channel, MaintenanceKind, MaintenanceStatus, RawMessage
from mailcase.ingest.pipeline import IngestOutcome
from mailcase.notify.render import Renderer
from mailcase.status import status_snapshot
from mailcase.store.engine import transaction
from mailcase.store.maintenance import list_windows, window_products
from mailcase.store.models import MaintenanceWindow
from support.broadcasts import (
    ACME_MAINTENANCE,
    BRISA_MAINTENANCE,
    REPO,
    add_contact,
    example_app,
    ics_event,
    outbox,
    recipient,
)

DENVER = ZoneInfo("America/Denver")
PLANNED_ON = datetime(2026, 12, 1, 9, 0, tzinfo=DENVER)  # Tuesday morning, Mountain Time
TEMPLATE = "customer.maintenance"


@pytest.fixture
def app(engine: Engine) -> App:
    return example_app(engine, PLANNED_ON.astimezone(UTC))


def _add(app: App, products: list[str], *, start: datetime, hours: int = 6, kind: MaintenanceKind = MaintenanceKind.SCHEDULED) -> int:
    with transaction(app.engine) as session:
        window = desk_maintenance.add_window(
            session, app.desk(), kind=kind, start=start.astimezone(UTC), end=(start + timedelta(hours=hours)).astimezone(UTC),
            products=products, description="Core router software upgrade.", justification="Fixes a security flaw.",
            now=app.clock.now(),
        )
        assert window.id is not None
        return window.id


def _sweep(app: App, at: datetime) -> int:
    """One scheduler pass as of `at`, run twice: the second must queue nothing."""
    first = desk_maintenance.sweep_maintenance(app.engine, app.desk(), at.astimezone(UTC))
    assert desk_maintenance.sweep_maintenance(app.engine, app.desk(), at.astimezone(UTC)) == 0
    return first


def _stages(app: App, window_id: int) -> list[tuple[str, str]]:
    return [(r.context["stage"], recipient(r)) for r in outbox(app.engine, maintenance_id=window_id)]


def test_plan_two_months_from_december_creates_third_friday_windows_in_mountain_time(app: App) -> None:
    with transaction(app.engine) as session:
        report = desk_maintenance.plan_windows(session, app.desk(), months=2, now=app.clock.now())
    with transaction(app.engine) as session:
        windows = list_windows(session=session)
    scheduled = [w for w in windows if w.kind == MaintenanceKind.SCHEDULED]
    assert [(w.start.astimezone(DENVER), w.end.astimezone(DENVER)) for w in scheduled] == [
        (datetime(2026, 12, 18, 22, 0, tzinfo=DENVER), datetime(2026, 12, 19, 4, 0, tzinfo=DENVER)),
        (datetime(2027, 1, 15, 22, 0, tzinfo=DENVER), datetime(2027, 1, 16, 4, 0, tzinfo=DENVER)),
    ]
    connect = [w.start.astimezone(DENVER) for w in windows if w.kind == MaintenanceKind.CONNECT]
    # Every third Tuesday from the configured anchor (2026-12-01), 21:00 MT, over the same two months.
    assert connect == [
        datetime(2026, 12, 1, 21, 0, tzinfo=DENVER),
        datetime(2026, 12, 22, 21, 0, tzinfo=DENVER),
        datetime(2027, 1, 12, 21, 0, tzinfo=DENVER),
    ]
    assert len(report.created) == 5

    with transaction(app.engine) as session:
        again = desk_maintenance.plan_windows(session, app.desk(), months=2, now=app.clock.now())
    assert again.created == [] and again.existing == 5
    with transaction(app.engine) as session:
        assert len(list_windows(session=session)) == 5


def test_scheduled_window_notices_go_a_week_ahead_at_start_and_at_end_to_each_maintenance_contact_once(app: App) -> None:
    start = datetime(2026, 12, 18, 22, 0, tzinfo=DENVER)
    window_id = _add(app, ["Cisco"], start=start)  # only Acme uses Cisco

    assert _sweep(app, start - timedelta(days=7, minutes=1)) == 0
    assert _sweep(app, start - timedelta(days=7)) == 2
    assert _sweep(app, start - timedelta(days=1)) == 0
    assert _sweep(app, start) == 2
    assert _sweep(app, start + timedelta(hours=6)) == 2
    assert _sweep(app, start + timedelta(days=30)) == 0

    rows = outbox(app.engine, maintenance_id=window_id)
    assert sorted(_stages(app, window_id)) == sorted(
        (stage, who) for stage in ("ahead", "start", "end") for who in ACME_MAINTENANCE
    )
    # Nobody else in the directory hears of it: not the MPOC, not finance, not the Brazilian organisation.
    assert {recipient(r) for r in rows} == ACME_MAINTENANCE
    for row in rows:
        assert row.template == TEMPLATE and row.locale == "en"
        assert row.context["tz"] == "America/Chicago"
        assert row.context["products"] == ["Cisco"]
        assert row.context["description"] == "Core router software upgrade."
        assert row.context["justification"] == "Fixes a security flaw."
        assert row.context["desk_range"].startswith("2026-12-18 22:00")  # Mountain Time
        assert row.context["org_range"].startswith("2026-12-18 23:00")  # Chicago
        method, event = ics_event(row)
        assert method == "REQUEST"
        assert event.decoded("dtstart") == start.astimezone(UTC)
        assert event.decoded("dtend") == (start + timedelta(hours=6)).astimezone(UTC)
        assert int(event["sequence"]) == 0
        assert str(event["attendee"]).lower() == f"mailto:{recipient(row)}"
        assert row.context["_list_unsubscribe"]["mailto"].startswith("support+unsub-m-")
    assert len({str(ics_event(r)[1]["uid"]) for r in rows}) == 1


def test_notices_reach_every_organisation_using_any_affected_product_and_each_address_once(app: App) -> None:
    start = datetime(2026, 12, 18, 22, 0, tzinfo=DENVER)
    window_id = _add(app, ["Microsoft Teams", "Cisco", "Five9"], start=start)
    assert _sweep(app, start - timedelta(days=7)) == 3
    assert sorted(recipient(r) for r in outbox(app.engine, maintenance_id=window_id)) == sorted(
        ACME_MAINTENANCE | BRISA_MAINTENANCE
    )


def test_portuguese_organisation_gets_portuguese_notices_in_its_own_time_zone(app: App) -> None:
    start = datetime(2026, 12, 18, 22, 0, tzinfo=DENVER)
    window_id = _add(app, ["Five9"], start=start)  # only Brisa uses Five9
    _sweep(app, start - timedelta(days=7))
    (row,) = outbox(app.engine, maintenance_id=window_id)
    assert recipient(row) in BRISA_MAINTENANCE
    assert row.locale == "pt"
    assert row.context["tz"] == "America/Sao_Paulo"
    assert row.context["org_range"].startswith("2026-12-19 02:00")  # São Paulo is 4 h ahead of Denver
    rendered = Renderer(REPO / "templates").render(row.template, row.locale, row.context)
    assert "Manutenção programada" in rendered.subject
    assert "horário das Montanhas" in rendered.text


def test_reschedule_sends_a_sequence_plus_one_update_to_those_already_told_and_nobody_else(app: App) -> None:
    start = datetime(2026, 12, 18, 22, 0, tzinfo=DENVER)
    window_id = _add(app, ["Microsoft Teams"], start=start)
    told_at = start - timedelta(days=7)
    _sweep(app, told_at)
    add_contact(app.engine, "acme", "newcomer@acme.example", ["maintenance"])

    new_start = start + timedelta(days=1)
    moved_at = told_at + timedelta(hours=12)
    with transaction(app.engine) as session:
        queued = desk_maintenance.reschedule_window(
            session, app.desk(), window_id, start=new_start.astimezone(UTC), end=(new_start + timedelta(hours=4)).astimezone(UTC),
            now=moved_at.astimezone(UTC),
        )
    assert queued == 3
    updates = [r for r in outbox(app.engine, maintenance_id=window_id) if r.context["stage"] == "update"]
    assert {recipient(r) for r in updates} == ACME_MAINTENANCE | BRISA_MAINTENANCE
    for row in updates:
        method, event = ics_event(row)
        assert method == "REQUEST"
        assert int(event["sequence"]) == 1
        assert event.decoded("dtstart") == new_start.astimezone(UTC)
        assert event.decoded("dtend") == (new_start + timedelta(hours=4)).astimezone(UTC)
        assert row.context["previous_start"] == start.astimezone(UTC).isoformat()

    # The newcomer first hears of it a week before the new start; those told do not hear it twice.
    assert _sweep(app, moved_at) == 0
    assert _sweep(app, new_start - timedelta(days=7)) == 1
    ahead = [r for r in outbox(app.engine, maintenance_id=window_id) if r.context["stage"] == "ahead"]
    assert [recipient(r) for r in ahead if r.context["sequence"] == 1] == ["newcomer@acme.example"]
    # Everyone gets the start notice at the new start, with the same UID.
    assert _sweep(app, new_start) == 4
    uids = {str(ics_event(r)[1]["uid"]) for r in outbox(app.engine, maintenance_id=window_id)}
    assert len(uids) == 1


def test_cancellation_sends_method_cancel_only_to_those_already_told(app: App) -> None:
    start = datetime(2026, 12, 18, 22, 0, tzinfo=DENVER)
    window_id = _add(app, ["Cisco"], start=start)
    _sweep(app, start - timedelta(days=7))
    add_contact(app.engine, "acme", "newcomer@acme.example", ["maintenance"])
    with transaction(app.engine) as session:
        queued = desk_maintenance.cancel_window(session, app.desk(), window_id, now=(start - timedelta(days=2)).astimezone(UTC))
    assert queued == 2
    cancelled = [r for r in outbox(app.engine, maintenance_id=window_id) if r.context["stage"] == "cancelled"]
    assert {recipient(r) for r in cancelled} == ACME_MAINTENANCE
    for row in cancelled:
        method, event = ics_event(row)
        assert method == "CANCEL"
        assert str(event["status"]) == "CANCELLED"
        assert int(event["sequence"]) == 1
    # A cancelled window sends nothing more.
    assert _sweep(app, start) == 0
    assert _sweep(app, start + timedelta(hours=6)) == 0
    with transaction(app.engine) as session:
        window = session.get(MaintenanceWindow, window_id)
        assert window is not None and window.status == MaintenanceStatus.CANCELLED and window.next_due_at is None


def test_cancelling_a_window_nobody_heard_of_sends_nothing(app: App) -> None:
    start = datetime(2027, 2, 19, 22, 0, tzinfo=DENVER)
    window_id = _add(app, ["Cisco"], start=start)
    with transaction(app.engine) as session:
        assert desk_maintenance.cancel_window(session, app.desk(), window_id, now=app.clock.now()) == 0
    assert outbox(app.engine, maintenance_id=window_id) == []


def test_unscheduled_window_is_announced_at_once_then_at_start_and_end(app: App) -> None:
    start = PLANNED_ON + timedelta(hours=2)
    window_id = _add(app, ["Cisco"], start=start, hours=1, kind=MaintenanceKind.UNSCHEDULED)
    assert desk_maintenance.sweep_window(app.engine, app.desk(), window_id, app.clock.now()) == 2
    assert _sweep(app, PLANNED_ON) == 0
    assert _sweep(app, start) == 2
    assert _sweep(app, start + timedelta(hours=1)) == 2
    notices = [r.context["notice"] for r in outbox(app.engine, maintenance_id=window_id)]
    assert notices == ["announce"] * 2 + ["start"] * 2 + ["end"] * 2


def test_connect_update_is_announced_24_hours_ahead_and_nothing_else(app: App) -> None:
    start = datetime(2026, 12, 22, 21, 0, tzinfo=DENVER)
    window_id = _add(app, ["Five9"], start=start, hours=2, kind=MaintenanceKind.CONNECT)
    assert _sweep(app, start - timedelta(hours=24, minutes=1)) == 0
    assert _sweep(app, start - timedelta(hours=24)) == 1
    assert _sweep(app, start) == 0
    assert _sweep(app, start + timedelta(hours=2)) == 0
    (row,) = outbox(app.engine, maintenance_id=window_id)
    assert row.context["kind"] == "connect" and row.context["stage"] == "ahead"


def test_one_click_unsubscribe_stops_maintenance_notices_for_that_address_only(app: App) -> None:
    start = datetime(2026, 12, 18, 22, 0, tzinfo=DENVER)
    window_id = _add(app, ["Cisco"], start=start)
    _sweep(app, start - timedelta(days=7))
    ahead = {recipient(r): r for r in outbox(app.engine, maintenance_id=window_id)}
    unsubscribe_to = ahead["sam@acme.example"].context["_list_unsubscribe"]["mailto"]

    def mail(sender: str, to: str = unsubscribe_to) -> IngestOutcome:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = sender, to, "unsubscribe"
        message["Message-ID"] = f"<unsub-{sender}-{to}>"
        message.set_content("")
        raw = RawMessage(data=message.as_bytes(), channel=Channel.PIPE, received_at=app.clock.now(), envelope_to=(to,))
        return app.pipeline().ingest_one(raw)

    # Someone else using Sam's address token changes nothing (the MAC binds it to Sam).
    forged = mail("ops@acme.example")
    assert forged.decision == "unsubscribe" and "nothing changed" in forged.reason
    reason = mail("sam@acme.example")
    assert reason.decision == "unsubscribe" and "unsubscribed from maintenance" in reason.reason
    assert mail("sam@acme.example", to="support@support.example.com").decision != "unsubscribe"
    assert _sweep(app, start) == 1
    starts = [recipient(r) for r in outbox(app.engine, maintenance_id=window_id) if r.context["stage"] == "start"]
    assert starts == ["ops@acme.example"]


def test_status_snapshot_lists_windows_with_their_products(app: App) -> None:
    start = datetime(2026, 12, 18, 22, 0, tzinfo=DENVER)
    window_id = _add(app, ["Cisco", "Microsoft Teams"], start=start)
    with transaction(app.engine) as session:
        windows, masters, products = status_snapshot(session, app.clock.now())
        names = window_products(session=session, window_ids=[window_id])
    assert [w.id for w in windows] == [window_id]
    assert windows[0].products == ("Cisco", "Microsoft Teams") == tuple(names[window_id])
    assert masters == []
    assert products == ["Cisco", "Five9", "Microsoft Teams"]


def test_a_notice_fanned_out_in_small_chunks_reaches_everyone_once(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(desk_maintenance, "FANOUT_CHUNK", 1)  # one transaction per recipient
    start = datetime(2026, 12, 18, 22, 0, tzinfo=DENVER)
    window_id = _add(app, ["Microsoft Teams", "Five9"], start=start)
    assert _sweep(app, start - timedelta(days=7)) == 3
    assert sorted(recipient(r) for r in outbox(app.engine, maintenance_id=window_id)) == sorted(
        ACME_MAINTENANCE | BRISA_MAINTENANCE
    )
    with transaction(app.engine) as session:
        window = session.get(MaintenanceWindow, window_id)
        assert window is not None and window.next_due_at == start.astimezone(UTC)  # on to the start notice
