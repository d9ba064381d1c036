"""Who did what, on SQLite and PostgreSQL: every agent command records the acting identity (`--by`, else
the OS user, never "agent") in the case history and in `mailcase audit`."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from support.cli import REPO, MailcaseCli
from support.desk_mail import ingest, message

DIRECTORY = REPO / "examples" / "directory.toml"
T0 = "2026-11-25T09:00:00-07:00"
T1 = "2026-11-25T10:00:00-07:00"
T2 = "2026-11-25T11:00:00-07:00"
ANA = "ana@support.example.com"
BRUNO = "bruno@support.example.com"


@pytest.fixture
def cli(database_url: str) -> MailcaseCli:
    cli = MailcaseCli(database_url, env={"MAILCASE_OUTBOUND__ENABLED": "false"})
    assert cli("init").status == 0
    assert cli("directory", "import", str(DIRECTORY)).status == 0
    return cli


def os_user() -> str:
    return os.environ.get("SUDO_USER") or pwd.getpwuid(os.geteuid()).pw_name


def ok(cli: MailcaseCli, *argv: str, now: str) -> None:
    result = cli(*argv, now=now)
    assert result.status == 0, result.stderr


def test_every_agent_action_names_who_did_it_in_the_history_and_the_audit(cli: MailcaseCli, tmp_path: Path) -> None:
    case = ingest(cli, tmp_path, message(("Pat Doe", "pat@acme.example"), "Phones down", "All down.",
                                         message_id="p1@acme.example"), now=T0)["case"]
    held = ingest(cli, tmp_path, message(("Eve", "eve@outsider.example"), "Hi", "Port it.",
                                         message_id="e1@outsider.example"), now=T0)["held_id"]
    ok(cli, "cases", "update", case, "--status", "in_progress", "--priority", "P2", "--by", ANA, now=T1)
    ok(cli, "cases", "reply", case, "--body", "Looking at it.", "--from", BRUNO, now=T1)  # the deprecated name
    ok(cli, "cases", "note", case, "--body", "carrier ticket 123", now=T1)  # no --by: the OS user
    ok(cli, "held", "discard", str(held), "--by", ANA, now=T2)
    ok(cli, "maintenance", "add", "--start", "2026-12-18T22:00:00-07:00", "--end", "2026-12-19T02:00:00-07:00",
       "--products", "Cisco", "--description", "Core upgrade", "--justification", "Security fix", now=T2)

    events = cli("cases", "show", case, "--json").json()["events"]
    authors = {(e["kind"], e["author"]) for e in events}
    assert ("status_changed", ANA) in authors and ("priority_changed", ANA) in authors
    assert ("outbound_message", BRUNO) in authors and ("note", os_user()) in authors
    assert all(e["author"] != "agent" for e in events)
    text = cli("cases", "show", case).stdout
    assert "note" in text and os_user() in text and ANA in text  # who, in the agent's view too

    everything = cli("audit", "--json").json()
    assert [(a["by"], a["action"], a["case"]) for a in everything] == [
        (ANA, "cases update", case),
        (BRUNO, "cases reply", case),
        (os_user(), "cases note", case),
        (ANA, "held discard", None),
        (os_user(), "maintenance add", None),
    ]
    assert everything[0]["summary"] == "status=in_progress priority=P2"
    assert everything[0]["at"] == "2026-11-25T17:00:00+00:00"
    assert [a["action"] for a in cli("audit", "--json", "--by", ANA.upper()).json()] == ["cases update", "held discard"]
    assert [a["action"] for a in cli("audit", "--json", "--since", T2).json()] == ["held discard", "maintenance add"]
    lines = cli("audit", "--since", T2).stdout.splitlines()
    assert len(lines) == 2 and ANA in lines[0] and "held discard" in lines[0] and "held " in lines[0]
