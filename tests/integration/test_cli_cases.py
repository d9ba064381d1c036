"""`mailcase cases list/show/update/note` as an agent uses them: JSON shapes, filters, history, and clear refusals."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, select

from mailcase.clock import parse_instant
from mailcase.domain import Priority
from mailcase.store.cases import create_case
from mailcase.store.engine import make_engine, transaction, upgrade_schema
from mailcase.store.models import Case, CaseEvent, Organisation, Outbox
from support.cli import REPO, CliResult, MailcaseCli, run_mailcase_process

DIRECTORY = REPO / "examples" / "directory.toml"
OPENED = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)  # Wednesday 16:00 in Denver
NOW = "2026-11-26T09:30:00-07:00"  # the next morning, as an agent would type it
NOW_UTC = "2026-11-26T16:30:00+00:00"
HOLD_UNTIL = "2026-11-30T09:00:00-07:00"

# SPEC.md §2 "JSON output": the fields every case carries, and the extra ones of `cases show`.
CASE_FIELDS = {
    "number",
    "subject",
    "status",
    "priority",
    "organisation",
    "requester",
    "assignee",
    "related_to",
    "duplicate_of",
    "master",
    "created_at",
}
SHOW_FIELDS = CASE_FIELDS | {"messages", "events"}


@dataclass(frozen=True)
class Desk:
    """A migrated database with examples/directory.toml imported, and the CLI pointed at it."""

    engine: Engine
    cli: MailcaseCli

    def open(
        self,
        subject: str = "Phones down at the Chicago office",
        *,
        org: str | None = "acme",
        requester: str | None = "pat@acme.example",
        related_to: int | None = None,
        priority: Priority = Priority.P4,
    ) -> int:
        """Create a case straight through the store, as ingest would; returns its number."""
        with transaction(self.engine) as session:
            organisation_id = (
                session.exec(select(Organisation.id).where(Organisation.key == org)).one() if org else None
            )
            related_id = (
                session.exec(select(Case.id).where(Case.number == related_to)).one() if related_to else None
            )
            return create_case(
                session=session,
                now=OPENED,
                subject=subject,
                organisation_id=organisation_id,
                requester=requester,
                related_to_id=related_id,
                priority=priority,
            ).number

    def show(self, number: int) -> dict[str, Any]:
        result = self.cli("cases", "show", str(number), "--json")
        assert result.status == 0, result.stderr
        data: dict[str, Any] = result.json()
        return data

    def outbox_count(self) -> int:
        with Session(self.engine) as session:
            return int(session.execute(sa.select(sa.func.count()).select_from(Outbox)).scalar_one())


@pytest.fixture(scope="module")
def shared_pg_url(pg_admin_url: str) -> Iterator[str]:
    """One migrated PostgreSQL database for this module, emptied before each test.

    Creating and migrating a database per test costs ~0.7 s; emptying one costs a few milliseconds.
    """
    name = f"mailcase_cli_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = pg_admin_url.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url)
    upgrade_schema(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def desk_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty, migrated database on each engine (case numbers start again at 1)."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'mailcase.db'}")
        upgrade_schema(engine)
    else:
        engine = make_engine(request.getfixturevalue("shared_pg_url"))
        # DELETE, children first: on a few rows it is far cheaper than TRUNCATE. Emptying the
        # counter table restarts case numbers at 1.
        with engine.begin() as connection:
            for table in reversed(SQLModel.metadata.sorted_tables):
                connection.execute(table.delete())
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def desk(desk_engine: Engine) -> Desk:
    cli = MailcaseCli(desk_engine.url.render_as_string(hide_password=False))
    imported = cli("directory", "import", str(DIRECTORY))
    assert imported.status == 0, imported.stderr
    return Desk(engine=desk_engine, cli=cli)


def refused_with_one_line(result: CliResult, status: int = 1) -> str:
    assert result.status == status, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert len(result.stderr_lines) == 1, result.stderr
    line = result.stderr_lines[0]
    assert line.startswith("mailcase: ")
    return line


def instant(text: str | None) -> datetime:
    assert text is not None
    value = datetime.fromisoformat(text)
    assert value.utcoffset() is not None, f"{text} has no offset"
    return value


# ---------------------------------------------------------------------------------------------
# cases list


def test_cases_list_json_on_a_new_desk_prints_an_empty_array_and_nothing_else(desk: Desk) -> None:
    result = desk.cli("cases", "list", "--json")

    assert result.status == 0, result.stderr
    assert result.stdout == "[]\n"


def test_cases_list_without_json_says_there_are_no_cases(desk: Desk) -> None:
    result = desk.cli("cases", "list")

    assert (result.status, result.stdout) == (0, "no cases\n")


def test_cases_list_json_shows_every_case_newest_first(desk: Desk) -> None:
    desk.open("first")
    desk.open("second", org="brisa", requester="joao@brisa.example.com.br")
    desk.open("third", org=None, requester=None)

    rows = desk.cli("cases", "list", "--json").json()

    assert [row["number"] for row in rows] == ["00000003", "00000002", "00000001"]
    assert [row["subject"] for row in rows] == ["third", "second", "first"]
    assert [row["organisation"] for row in rows] == [None, "brisa", "acme"]
    for row in rows:
        assert set(row) >= CASE_FIELDS
        assert (row["status"], row["priority"]) == ("new", "P4")
        assert instant(row["created_at"]) == OPENED


def test_cases_list_filters_by_status(desk: Desk) -> None:
    first, second = desk.open("first"), desk.open("second")
    assert desk.cli("cases", "update", str(second), "--status", "in_progress").status == 0

    in_progress = desk.cli("cases", "list", "--status", "in_progress", "--json").json()
    new = desk.cli("cases", "list", "--status", "new", "--json").json()
    closed = desk.cli("cases", "list", "--status", "closed", "--json").json()

    assert [row["number"] for row in in_progress] == [f"{second:08d}"]
    assert [row["number"] for row in new] == [f"{first:08d}"]
    assert closed == []


def test_cases_list_filters_by_organisation(desk: Desk) -> None:
    acme = desk.open("acme's case")
    brisa = desk.open("caso da brisa", org="brisa", requester="joao@brisa.example.com.br")

    assert [r["number"] for r in desk.cli("cases", "list", "--org", "acme", "--json").json()] == [f"{acme:08d}"]
    assert [r["number"] for r in desk.cli("cases", "list", "--org", "brisa", "--json").json()] == [f"{brisa:08d}"]
    assert desk.cli("cases", "list", "--org", "nobody", "--json").json() == []


def test_cases_list_combines_status_and_organisation_filters(desk: Desk) -> None:
    desk.open("acme new")
    brisa = desk.open("brisa new", org="brisa", requester="joao@brisa.example.com.br")

    rows = desk.cli("cases", "list", "--org", "brisa", "--status", "new", "--json").json()

    assert [row["number"] for row in rows] == [f"{brisa:08d}"]


def test_an_unknown_status_filter_is_a_usage_error(desk: Desk) -> None:
    result = desk.cli("cases", "list", "--status", "open")

    assert result.status == 2
    assert "'open' is not one of" in result.stderr_lines[-1]


# ---------------------------------------------------------------------------------------------
# cases show


def test_cases_show_json_has_the_documented_fields(desk: Desk) -> None:
    original = desk.open("Phones down")
    number = desk.open("Phones down again", related_to=original)

    data = desk.show(number)

    assert set(data) >= SHOW_FIELDS
    assert data["number"] == f"{number:08d}"
    assert data["subject"] == "Phones down again"
    assert (data["status"], data["priority"]) == ("new", "P4")
    assert data["organisation"] == "acme"
    assert data["requester"] == "pat@acme.example"
    assert data["assignee"] is None
    assert data["related_to"] == f"{original:08d}"
    assert (data["duplicate_of"], data["master"]) == (None, None)
    assert data["created_at"] == "2026-11-25T23:00:00+00:00"
    assert data["messages"] == []
    assert [e["kind"] for e in data["events"]] == ["created"]
    assert set(data["events"][0]) >= {"kind", "at", "author", "summary"}
    assert instant(data["events"][0]["at"]) == OPENED
    assert desk.show(original)["related_cases"] == [f"{number:08d}"]


@pytest.mark.parametrize("spelling", ["1", "00000001", "#00000001"])
def test_cases_show_accepts_the_number_padded_or_not(desk: Desk, spelling: str) -> None:
    desk.open()

    result = desk.cli("cases", "show", spelling, "--json")

    assert result.status == 0, result.stderr
    assert result.json()["number"] == "00000001"


def test_cases_show_as_text_names_the_case_and_its_history(desk: Desk) -> None:
    number = desk.open("Phones down")

    result = desk.cli("cases", "show", str(number))

    assert result.status == 0, result.stderr
    assert result.stdout.startswith(f"Case #{number:08d}: Phones down\n")
    assert "History:" in result.stdout
    # Times are shown in the desk's time zone (America/Denver): 23:00 UTC is 16:00 MST.
    assert "2026-11-25 16:00 MST" in result.stdout


def test_an_unknown_case_is_refused_with_one_line(desk: Desk) -> None:
    for argv in (
        ("cases", "show", "42", "--json"),
        ("cases", "update", "42", "--status", "in_progress"),
        ("cases", "note", "42", "--body", "hello"),
    ):
        line = refused_with_one_line(desk.cli(*argv))
        assert line == "mailcase: no case 00000042", argv


def test_a_malformed_case_number_is_a_usage_error(desk: Desk) -> None:
    result = desk.cli("cases", "show", "abc")

    assert result.status == 2
    assert "not a case number" in result.stderr_lines[-1]


# ---------------------------------------------------------------------------------------------
# cases update


def test_putting_a_case_on_hold_records_who_and_when(desk: Desk) -> None:
    number = desk.open()

    result = desk.cli(
        "cases", "update", str(number), "--status", "on_hold", "--hold-until", HOLD_UNTIL,
        "--by", "ana@support.example.com", "--json", now=NOW,
    )

    assert result.status == 0, result.stderr
    data = result.json()
    assert data["status"] == "on_hold"
    assert instant(data["hold_until"]) == parse_instant(HOLD_UNTIL)
    event = data["events"][-1]
    assert event["kind"] == "status_changed"
    assert event["author"] == "ana@support.example.com"
    assert event["at"] == NOW_UTC
    assert event["data"]["from"] == "new" and event["data"]["to"] == "on_hold"
    assert desk.show(number)["events"][-1] == event


def test_hold_until_alone_puts_the_case_on_hold(desk: Desk) -> None:
    number = desk.open()

    result = desk.cli("cases", "update", str(number), "--hold-until", HOLD_UNTIL, "--json", now=NOW)

    assert result.status == 0, result.stderr
    assert result.json()["status"] == "on_hold"


def test_the_now_option_is_the_time_of_every_change(desk: Desk) -> None:
    number = desk.open()

    desk.cli("cases", "update", str(number), "--priority", "P2", now=NOW)
    desk.cli("cases", "update", str(number), "--status", "in_progress", now="2026-11-26T17:00:00Z")
    desk.cli("cases", "note", str(number), "--body", "called the customer", now="2026-11-26T18:15:00+00:00")

    events = desk.show(number)["events"]
    assert [(e["kind"], e["at"]) for e in events[1:]] == [
        ("priority_changed", NOW_UTC),
        ("status_changed", "2026-11-26T17:00:00+00:00"),
        ("note", "2026-11-26T18:15:00+00:00"),
    ]
    data = desk.show(number)
    assert data["updated_at"] == "2026-11-26T18:15:00+00:00"


def test_an_update_without_by_is_recorded_as_the_os_user_running_it(desk: Desk) -> None:
    import os
    import pwd

    number = desk.open()

    desk.cli("cases", "update", str(number), "--status", "in_progress", now=NOW)

    os_user = os.environ.get("SUDO_USER") or pwd.getpwuid(os.geteuid()).pw_name
    assert desk.show(number)["events"][-1]["author"] == os_user


def test_closing_a_case_records_when_it_closed_and_reopening_clears_it(desk: Desk) -> None:
    number = desk.open()

    closed = desk.cli("cases", "update", str(number), "--status", "closed", "--json", now=NOW).json()
    reopened = desk.cli(
        "cases", "update", str(number), "--status", "in_progress", "--json", now="2026-11-27T09:00:00-07:00"
    ).json()

    assert closed["closed_at"] == NOW_UTC
    assert reopened["closed_at"] is None
    assert reopened["status"] == "in_progress"


def test_an_illegal_transition_exits_1_with_one_clear_line_and_changes_nothing(desk: Desk) -> None:
    number = desk.open()
    before = desk.show(number)

    line = refused_with_one_line(desk.cli("cases", "update", str(number), "--status", "customer_reopened", now=NOW))

    assert line == f"mailcase: case {number:08d}: cannot change status from new to customer_reopened"
    assert desk.show(number) == before


def test_on_hold_without_a_hold_until_is_refused(desk: Desk) -> None:
    number = desk.open()

    line = refused_with_one_line(desk.cli("cases", "update", str(number), "--status", "on_hold", now=NOW))

    assert "hold-until" in line


def test_a_hold_until_in_the_past_is_refused(desk: Desk) -> None:
    number = desk.open()

    line = refused_with_one_line(
        desk.cli("cases", "update", str(number), "--hold-until", "2026-11-01T00:00:00Z", now=NOW)
    )

    assert "must be in the future" in line


def test_a_refused_change_rolls_back_the_changes_made_with_it(desk: Desk) -> None:
    """Priority and status in one command are one transaction: a refused status keeps the old priority."""
    number = desk.open()

    result = desk.cli("cases", "update", str(number), "--priority", "P1", "--status", "on_hold", now=NOW)

    refused_with_one_line(result)
    data = desk.show(number)
    assert data["priority"] == "P4"
    assert [e["kind"] for e in data["events"]] == ["created"]


def test_a_bad_priority_is_a_usage_error_naming_the_allowed_values(desk: Desk) -> None:
    number = desk.open()

    result = desk.cli("cases", "update", str(number), "--priority", "P9")

    assert result.status == 2
    assert result.stdout == ""
    assert result.stderr_lines[-1].endswith("argument --priority: 'P9' is not one of: P1, P2, P3, P4, P1G")


def test_priority_is_accepted_in_lower_case_and_recorded(desk: Desk) -> None:
    number = desk.open()

    data = desk.cli("cases", "update", str(number), "--priority", "p2", "--by", "bruno@support.example.com",
                    "--json", now=NOW).json()

    assert data["priority"] == "P2"
    event = data["events"][-1]
    assert (event["kind"], event["author"], event["at"]) == ("priority_changed", "bruno@support.example.com", NOW_UTC)
    assert event["data"] == {"from": "P4", "to": "P2"}


def test_p1g_is_refused_for_an_ordinary_case(desk: Desk) -> None:
    number = desk.open()

    line = refused_with_one_line(desk.cli("cases", "update", str(number), "--priority", "P1G", now=NOW))

    assert "master" in line


def test_assigning_a_technician_records_the_change_and_the_team(desk: Desk) -> None:
    number = desk.open()

    data = desk.cli("cases", "update", str(number), "--assignee", "Chris@Support.Example.com", "--json", now=NOW).json()

    assert data["assignee"] == "chris@support.example.com"
    assert data["team"] == "microsoft"
    event = data["events"][-1]
    assert event["kind"] == "assignee_changed"
    assert event["data"] == {"from": None, "to": "chris@support.example.com"}


@pytest.mark.parametrize("address", ["pat@acme.example", "stranger@example.org"])
def test_assigning_someone_who_is_not_a_technician_is_refused(desk: Desk, address: str) -> None:
    number = desk.open()

    line = refused_with_one_line(desk.cli("cases", "update", str(number), "--assignee", address, now=NOW))

    assert line == f"mailcase: {address} is not a technician in the directory"
    assert desk.show(number)["assignee"] is None


def test_marking_a_duplicate_points_at_the_primary_both_ways(desk: Desk) -> None:
    primary = desk.open("Phones down")
    copy = desk.open("Phones down (sent twice)")

    data = desk.cli("cases", "update", str(copy), "--duplicate-of", str(primary), "--json", now=NOW).json()

    assert data["status"] == "duplicate"
    assert data["duplicate_of"] == f"{primary:08d}"
    assert data["closed_at"] == NOW_UTC
    assert desk.show(primary)["duplicates"] == [f"{copy:08d}"]


def test_a_case_cannot_be_a_duplicate_of_itself(desk: Desk) -> None:
    number = desk.open()

    line = refused_with_one_line(desk.cli("cases", "update", str(number), "--duplicate-of", str(number), now=NOW))

    assert "itself" in line


def test_a_duplicate_of_an_unknown_case_is_refused(desk: Desk) -> None:
    number = desk.open()

    line = refused_with_one_line(desk.cli("cases", "update", str(number), "--duplicate-of", "77", now=NOW))

    assert line == "mailcase: no case 00000077"


def test_linking_to_a_case_that_is_not_a_master_is_refused(desk: Desk) -> None:
    first, second = desk.open("one"), desk.open("two")

    line = refused_with_one_line(desk.cli("cases", "update", str(second), "--master", str(first), now=NOW))

    assert line == f"mailcase: case {first:08d} is not a master case"


def test_an_update_with_nothing_to_change_is_refused(desk: Desk) -> None:
    number = desk.open()

    line = refused_with_one_line(desk.cli("cases", "update", str(number)))

    assert "nothing to change" in line


def test_an_update_without_json_prints_one_summary_line(desk: Desk) -> None:
    number = desk.open()

    result = desk.cli("cases", "update", str(number), "--status", "in_progress", now=NOW)

    assert result.status == 0, result.stderr
    assert result.stdout == f"case {number:08d}: in_progress P4 assignee -\n"


def test_a_now_without_an_offset_is_a_usage_error(desk: Desk) -> None:
    result = desk.cli("cases", "list", now="2026-11-26T09:30:00")

    assert result.status == 2
    assert result.stdout == ""
    assert "--now" in result.stderr and "offset" in result.stderr


# ---------------------------------------------------------------------------------------------
# cases note


def test_a_note_is_an_internal_event_and_sends_nothing(desk: Desk) -> None:
    number = desk.open()
    queued_before = desk.outbox_count()

    result = desk.cli("cases", "note", str(number), "--body", "  Customer's PBX is end of life.  ",
                      "--by", "ana@support.example.com", now=NOW)

    assert result.status == 0, result.stderr
    assert result.stdout == f"note added to case {number:08d}\n"
    event = desk.show(number)["events"][-1]
    assert (event["kind"], event["author"], event["at"]) == ("note", "ana@support.example.com", NOW_UTC)
    assert event["summary"] == "Customer's PBX is end of life."
    assert desk.outbox_count() == queued_before


def test_a_note_leaves_the_status_and_the_clocks_alone(desk: Desk) -> None:
    number = desk.open()
    before = desk.show(number)

    desk.cli("cases", "note", str(number), "--body", "internal", now=NOW)

    after = desk.show(number)
    for field in ("status", "priority", "assignee", "last_agent_update_at", "first_response_at"):
        assert after[field] == before[field], field


def test_an_empty_note_is_refused(desk: Desk) -> None:
    number = desk.open()

    line = refused_with_one_line(desk.cli("cases", "note", str(number), "--body", "   "))

    assert "needs a body" in line
    with Session(desk.engine) as session:
        kinds = list(session.exec(select(CaseEvent.kind)))
    assert kinds == ["created"]


# ---------------------------------------------------------------------------------------------
# The README's first steps, as a new user runs them


def test_init_import_and_list_work_as_written_in_a_fresh_directory(tmp_path: Path) -> None:
    for argv in (["init"], ["directory", "import", str(DIRECTORY)]):
        result = run_mailcase_process(argv, cwd=tmp_path)
        assert result.status == 0, result.stderr

    listed = run_mailcase_process(["cases", "list", "--json"], cwd=tmp_path)

    assert listed.status == 0, listed.stderr
    assert listed.stdout == "[]\n"
