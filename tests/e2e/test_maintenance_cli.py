"""The broadcast commands as an operator types them: `maintenance …`, `cases master …`, `subscriptions …`,
`status build`, with `--now` as the clock and `tick --no-deliver` as the scheduler."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from support.broadcasts import (
    ACME_MAINTENANCE,
    BRISA_MAINTENANCE,
    DIRECTORY,
    ics_event,
    outbox,
    recipient,
)
from support.cli import MailcaseCli

ATOM = "{http://www.w3.org/2005/Atom}"
PLAN_DAY = "2026-12-01T09:00:00-07:00"


@pytest.fixture
def cli(engine: Engine, database_url: str) -> MailcaseCli:
    cli = MailcaseCli(database_url)
    assert cli("directory", "import", str(DIRECTORY)).status == 0
    return cli


def test_plan_is_idempotent_and_lists_the_spec_json_fields(cli: MailcaseCli) -> None:
    first = cli("maintenance", "plan", "--months", "2", "--json", now=PLAN_DAY)
    assert first.status == 0, first.stderr
    assert len(first.json()["created"]) == 5
    again = cli("maintenance", "plan", "--months", "2", "--json", now=PLAN_DAY)
    assert again.json() == {"created": [], "already_planned": 5}

    listed = cli("maintenance", "list", "--json").json()
    assert {"id", "kind", "start", "end", "products", "description", "justification", "status"} <= set(listed[0])
    scheduled = [(w["start"], w["end"]) for w in listed if w["kind"] == "scheduled"]
    assert scheduled == [
        ("2026-12-19T05:00:00+00:00", "2026-12-19T11:00:00+00:00"),  # 22:00-04:00 MST
        ("2027-01-16T05:00:00+00:00", "2027-01-16T11:00:00+00:00"),
    ]
    assert all(w["products"] == ["Cisco", "Five9", "Microsoft Teams"] for w in listed)
    assert all(w["status"] == "planned" for w in listed)


def test_tick_sends_the_week_ahead_notice_once_and_reschedule_and_cancel_tell_those_told(
    cli: MailcaseCli, engine: Engine
) -> None:
    added = cli(
        "maintenance", "add", "--start", "2026-12-18T22:00:00-07:00", "--end", "2026-12-19T04:00:00-07:00",
        "--products", "Microsoft Teams", "--description", "Gateway firmware upgrade",
        "--justification", "Vendor security advisory", "--json", now=PLAN_DAY,
    )
    assert added.status == 0, added.stderr
    window = added.json()
    assert window["notices_queued"] == 0 and window["kind"] == "scheduled"

    for _ in range(2):
        ticked = cli("tick", "--no-deliver", now="2026-12-11T22:00:00-07:00")
        assert ticked.status == 0, ticked.stderr
    rows = outbox(engine, maintenance_id=window["id"])
    assert sorted(recipient(r) for r in rows) == sorted(ACME_MAINTENANCE | BRISA_MAINTENANCE)

    moved = cli(
        "maintenance", "reschedule", str(window["id"]), "--start", "2026-12-19T22:00:00-07:00",
        "--end", "2026-12-20T02:00:00-07:00", "--json", now="2026-12-12T10:00:00-07:00",
    )
    assert moved.status == 0, moved.stderr
    assert moved.json()["notices_queued"] == 3 and moved.json()["sequence"] == 1

    cancelled = cli("maintenance", "cancel", str(window["id"]), now="2026-12-13T10:00:00-07:00")
    assert cancelled.status == 0, cancelled.stderr
    assert "3 notices queued" in cancelled.stdout
    last = [r for r in outbox(engine, maintenance_id=window["id"]) if r.context["stage"] == "cancelled"]
    method, _event = ics_event(last[0])
    assert method == "CANCEL"
    assert cli("maintenance", "list", "--json").json()[0]["status"] == "cancelled"
    assert cli("maintenance", "cancel", str(window["id"])).status == 1


def test_unscheduled_window_is_announced_by_the_add_command_itself(cli: MailcaseCli, engine: Engine) -> None:
    added = cli(
        "maintenance", "add", "--kind", "unscheduled", "--start", "2026-12-01T11:00:00-07:00",
        "--end", "2026-12-01T12:00:00-07:00", "--products", "cisco", "--description", "Replace a failed line card",
        "--justification", "Hardware fault", now=PLAN_DAY,
    )
    assert added.status == 0, added.stderr
    assert "2 notices queued" in added.stdout
    assert {recipient(r) for r in outbox(engine, template="customer.maintenance")} == ACME_MAINTENANCE


def test_unknown_product_is_refused_naming_it(cli: MailcaseCli) -> None:
    result = cli(
        "maintenance", "add", "--start", "2026-12-18T22:00:00-07:00", "--end", "2026-12-19T04:00:00-07:00",
        "--products", "Teams,Zoom", "--description", "x", "--justification", "y", now=PLAN_DAY,
    )
    assert result.status == 1
    assert "'Teams'" in result.stderr


def test_master_case_commands_from_create_to_close(cli: MailcaseCli, engine: Engine, tmp_path: Path) -> None:
    now = "2026-11-26T09:00:00-07:00"
    created = cli(
        "cases", "master", "create", "--platform", "Microsoft Teams", "--subject", "Teams calls dropping",
        "--assignee", "chris@support.example.com", "--json", now=now,
    )
    assert created.status == 0, created.stderr
    master = created.json()
    assert master["priority"] == "P1G" and master["kind"] == "master"

    assert cli("subscriptions", "add", "sam@acme.example", "--case", master["number"], now=now).status == 0
    assert cli("subscriptions", "add", "joao@brisa.example.com.br", "--platform", "microsoft teams", now=now).status == 0
    listed = cli("subscriptions", "list", "--json").json()
    assert {(s["address"], s["kind"]) for s in listed} == {
        ("sam@acme.example", "case"),
        ("joao@brisa.example.com.br", "platform"),
    }

    replied = cli("cases", "reply", master["number"], "--body", "Carrier investigating.", now="2026-11-26T09:10:00-07:00")
    assert replied.status == 0, replied.stderr
    assert {recipient(r) for r in outbox(engine, template="customer.master_update")} == {
        "sam@acme.example", "joao@brisa.example.com.br",
    }

    assert cli("subscriptions", "remove", "joao@brisa.example.com.br", "--platform", "Microsoft Teams").status == 0
    assert [s["address"] for s in cli("subscriptions", "list", "--json").json()] == ["sam@acme.example"]

    site = tmp_path / "site"
    built = cli("status", "build", "--out", str(site), now="2026-11-26T09:20:00-07:00")
    assert built.status == 0, built.stderr
    feed = ET.parse(site / "feed.atom").getroot()
    titles = [e.findtext(f"{ATOM}title") or "" for e in feed.iter(f"{ATOM}entry")]
    assert any("Teams calls dropping" in t for t in titles)
    assert "Carrier investigating." in (site / "index.html").read_text(encoding="utf-8")

    closed = cli("cases", "update", master["number"], "--status", "closed", now="2026-11-26T12:00:00-07:00")
    assert closed.status == 0, closed.stderr
    assert "follower notices queued" in closed.stdout
    assert [recipient(r) for r in outbox(engine, template="customer.master_closed")] == ["sam@acme.example"]
