"""`mailcase purge` and `mailcase directory erase` end to end on SQLite and PostgreSQL: what an agent
still reads afterwards, what is gone, and what the history and the audit ledger say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from support.cli import REPO, MailcaseCli
from support.desk_mail import every_text, ingest, message

DIRECTORY = REPO / "examples" / "directory.toml"
ARRIVED = "2025-01-10T09:00:00-07:00"
LATER = "2025-11-06T09:00:00-07:00"  # 300 days on: inside the raw window at the purge below
PURGE_AT = "2026-01-12T09:00:00-07:00"  # 367 days after ARRIVED
PAT = ("Pat Doe", "pat@acme.example")
EVE = ("Eve Example", "eve@outsider.example")
NO_RELAY = {"MAILCASE_OUTBOUND__ENABLED": "false"}


@pytest.fixture
def cli(database_url: str) -> MailcaseCli:
    return prepared(MailcaseCli(database_url, env=NO_RELAY))


def prepared(cli: MailcaseCli) -> MailcaseCli:
    """The schema (SQLite starts empty) and the example directory."""
    assert cli("init").status == 0
    assert cli("directory", "import", str(DIRECTORY)).status == 0
    return cli


def raw_sizes(url: str) -> dict[str, int]:
    """Message-ID header -> stored raw bytes."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT message_id_header, data FROM raw_message"))
            return {header: len(data) for header, data in rows}
    finally:
        engine.dispose()


def test_purge_deletes_old_raw_bytes_attachments_and_held_mail_but_keeps_the_case(
    cli: MailcaseCli, database_url: str, tmp_path: Path
) -> None:
    opened = ingest(cli, tmp_path, message(PAT, "Trunk down", "The SIP trunk is down since 8am.",
                                           message_id="old@acme.example", attachment=("trunk.log", b"OPTIONS timeout\n" * 50)),
                    now=ARRIVED)
    held = ingest(cli, tmp_path, message(EVE, "Port my number", "Please port it.", message_id="eve@outsider.example"),
                  now=ARRIVED)
    assert opened["decision"] == "open_case" and held["decision"] == "hold_message"
    ingest(cli, tmp_path, message(PAT, "Re: Trunk down", "Still down.", message_id="new@acme.example",
                                  in_reply_to="old@acme.example"), now=LATER)

    dry = cli("purge", "--dry-run", "--json", now=PURGE_AT)
    assert dry.status == 0, dry.stderr
    assert dry.json() | {"raw_bytes": 0, "attachment_bytes": 0} == {
        "dry_run": True, "held": 1, "raw_messages": 2, "attachments": 1, "raw_bytes": 0, "attachment_bytes": 0,
    }
    assert all(size > 0 for size in raw_sizes(database_url).values())  # a dry run changes nothing

    done = cli("purge", "--by", "ops@support.example.com", "--json", now=PURGE_AT)
    assert done.status == 0, done.stderr
    assert (done.json()["held"], done.json()["raw_messages"], done.json()["attachments"]) == (1, 2, 1)
    sizes = raw_sizes(database_url)
    assert sizes["<old@acme.example>"] == 0 and sizes["<eve@outsider.example>"] == 0
    assert sizes["<new@acme.example>"] > 0  # inside the window

    # The agent still reads the case: both messages' text, the attachment's name, the history.
    case = cli("cases", "show", opened["case"], "--json").json()
    texts = [m["text"] for m in case["messages"]]
    assert any("SIP trunk is down" in t for t in texts) and any("Still down" in t for t in texts)
    assert [a["filename"] for m in case["messages"] for a in m.get("attachments", ())] == ["trunk.log"]
    assert case["events"][0]["kind"] == "created"
    # The held message is no longer waiting for review, and says who purged it.
    held_rows = cli("held", "list", "--all", "--json").json()
    assert [(h["id"], h["state"]) for h in held_rows] == [(held["held_id"], "discarded")]
    # A second purge finds nothing more.
    again = cli("purge", "--json", now=PURGE_AT).json()
    assert (again["held"], again["raw_messages"], again["attachments"]) == (0, 0, 0)
    # The purged file says so; the same file arriving again is kept whole again.
    gone = cli("attachments", "get", opened["case"], "trunk.log", "-o", str(tmp_path / "out.log"))
    assert gone.status == 1 and "purged" in gone.stderr
    ingest(cli, tmp_path, message(PAT, "Re: Trunk down", "Again, log attached.", message_id="again@acme.example",
                                  in_reply_to="old@acme.example", attachment=("trunk.log", b"OPTIONS timeout\n" * 50)),
           now=PURGE_AT)
    back = cli("attachments", "get", opened["case"], "trunk.log", "-o", str(tmp_path / "back.log"))
    assert back.status == 0, back.stderr
    assert (tmp_path / "back.log").read_bytes() == b"OPTIONS timeout\n" * 50

    audit = cli("audit", "--json", "--by", "ops@support.example.com").json()
    assert [(a["action"], a["at"]) for a in audit] == [("purge", "2026-01-12T16:00:00+00:00")]
    assert "1 held message(s) purged" in audit[0]["summary"]


def test_held_message_is_purged_only_a_week_after_the_digest_warned(
    database_url: str, tmp_path: Path
) -> None:
    cli = prepared(MailcaseCli(database_url, env=NO_RELAY | {"MAILCASE_HELD__DIGEST_ADDRESS": "desk@support.example.com"}))
    held = ingest(cli, tmp_path, message(EVE, "Port my number", "Please port it.", message_id="eve@outsider.example"),
                  now="2025-01-01T12:00:00+00:00")
    # Past held_days (90) but never warned: kept.
    assert cli("purge", "--json", now="2025-04-05T12:00:00+00:00").json()["held"] == 0
    # The digest warns (it runs in `tick`, as in serve's sweeps), naming the message.
    assert cli("tick", now="2025-04-05T12:00:00+00:00").status == 0
    digests = cli("outbox", "list", "--json").json()
    expiring = [d for d in digests if d["kind"] == "staff.held_digest"]
    assert expiring, digests
    engine = sa.create_engine(database_url)
    with engine.connect() as connection:
        context = connection.execute(
            sa.text("SELECT context FROM outbox WHERE kind = 'staff.held_digest' ORDER BY id DESC")
        ).scalars().first()
    engine.dispose()
    context = json.loads(context) if isinstance(context, str) else context
    assert [h["id"] for h in context["expiring"]] == [held["held_id"]]
    # Six days after the warning: still kept; eight days after: purged.
    assert cli("purge", "--json", now="2025-04-11T12:00:00+00:00").json()["held"] == 0
    assert cli("purge", "--json", now="2025-04-13T12:00:00+00:00").json()["held"] == 1


def test_erase_replaces_a_person_everywhere_and_the_history_says_only_that_it_happened(
    cli: MailcaseCli, database_url: str, tmp_path: Path
) -> None:
    opened = ingest(
        cli, tmp_path,
        message(PAT, "Phones down", "All phones are down.\n\nPat Doe\nIT Director, pat@acme.example",
                message_id="pat-1@acme.example", cc=("sam@acme.example",)),
        now=ARRIVED,
    )
    reply = ingest(
        cli, tmp_path,
        message(("Sam Rivera", "sam@acme.example"), "Re: Phones down", "Same here, Pat Doe asked me to add logs.",
                message_id="sam-1@acme.example", in_reply_to="pat-1@acme.example"),
        now=LATER,
    )
    assert reply["case"] == opened["case"]
    assert cli("cases", "note", opened["case"], "--body", "called pat@acme.example back", "--by",
               "ana@support.example.com").status == 0

    dry = cli("directory", "erase", "PAT@acme.example", "--dry-run", "--json", now=PURGE_AT)
    assert dry.status == 0, dry.stderr
    assert dry.json()["cases"] == 1 and dry.json()["raw_messages_deleted"] == 1 and dry.json()["pseudonym"] is None
    assert "pat@acme.example" in json.dumps(cli("cases", "show", opened["case"], "--json").json())

    erased = cli("directory", "erase", "pat@acme.example", "--by", "dpo@support.example.com", "--json", now=PURGE_AT)
    assert erased.status == 0, erased.stderr
    pseudonym = erased.json()["pseudonym"]
    assert pseudonym.endswith("@erased.invalid")

    case = cli("cases", "show", opened["case"], "--json").json()
    shown = json.dumps(case, ensure_ascii=False)
    assert "pat@acme.example" not in shown.lower() and "Pat Doe" not in shown
    assert case["requester"] == pseudonym and pseudonym in case["participants"]
    assert "All phones are down." in shown  # the problem the case is about stays readable
    erasure = [e for e in case["events"] if e["kind"] == "erasure"]
    assert [(e["author"], e["summary"]) for e in erasure] == [
        ("dpo@support.example.com", "one person's personal data was erased on request (mailcase directory erase)")
    ]
    # Nowhere in the database any more, except inside raw messages others sent (kept: they are theirs).
    everywhere = every_text(database_url, skip=frozenset({("raw_message", "data")}))
    assert "pat@acme.example" not in everywhere.lower() and "Pat Doe" not in everywhere
    assert raw_sizes(database_url)["<pat-1@acme.example>"] == 0
    assert raw_sizes(database_url)["<sam-1@acme.example>"] > 0
    assert cli("directory", "show", "pat@acme.example").status == 1
    # The ledger says who erased and when, naming only the pseudonym.
    (entry,) = cli("audit", "--json", "--by", "dpo@support.example.com").json()
    assert (entry["action"], entry["target"], entry["at"]) == ("directory erase", pseudonym, "2026-01-12T16:00:00+00:00")
