"""Who may open cases, what is never answered, and what is stored once — through `mailcase ingest` and the other CLI commands.

SPEC.md §1 ("Who may open cases") and §3 (nothing lost, exactly once, no loops, no backscatter),
on SQLite and PostgreSQL. Time is the global `--now` option: no test waits for the clock.
"""

from __future__ import annotations

import email.policy
from collections.abc import Iterator
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from support.cli import REPO, CliResult, MailcaseCli
from support.relay import CaptureRelay

PAT = "pat@acme.example"  # primary MPOC, en
JOAO = "joao@brisa.example.com.br"  # primary MPOC, pt
LEE = "lee@acme.example"  # an Acme employee, not an MPOC
EVE = "eve@outsider.example"  # in no organisation
SUPPORT = "support@support.example.com"
T0 = datetime.fromisoformat("2026-11-25T16:00:00-07:00")  # a Wednesday afternoon at the desk


def at(**delta: float) -> str:
    return (T0 + timedelta(**delta)).isoformat()


def mail(
    subject: str = "Teams calls drop after 30 seconds",
    *,
    sender: str = PAT,
    body: str = "Every call drops after 30 s since this morning.\n",
    message_id: str | None = "auto",
    headers: dict[str, str] | None = None,
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = SUPPORT
    message["Subject"] = subject
    if message_id:
        message["Message-ID"] = make_msgid(domain="acme.example") if message_id == "auto" else message_id
    message["Date"] = "Wed, 25 Nov 2026 16:00:00 -0700"
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(body)
    return message


def delivery_report(original_id: str, failed: str, *, status: str = "5.1.1") -> bytes:
    """A Postfix-style RFC 3464 bounce of one of our messages."""
    return (
        "Return-Path: <>\r\n"
        "From: MAILER-DAEMON@mx.acme.example (Mail Delivery System)\r\n"
        f"To: {SUPPORT}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <{make_msgid(domain='mx.acme.example')[1:-1]}>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B0UND"\r\n'
        "\r\n"
        "--B0UND\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        f"I'm sorry to have to inform you that your message could not be delivered to {failed}.\r\n"
        "\r\n"
        "--B0UND\r\n"
        "Content-Type: message/delivery-status\r\n"
        "\r\n"
        "Reporting-MTA: dns; mx.acme.example\r\n"
        "\r\n"
        f"Final-Recipient: rfc822; {failed}\r\n"
        "Action: failed\r\n"
        f"Status: {status}\r\n"
        f"Diagnostic-Code: smtp; 550 {status} <{failed}>: Recipient address rejected: User unknown\r\n"
        "\r\n"
        "--B0UND\r\n"
        "Content-Type: text/rfc822-headers\r\n"
        "\r\n"
        f"From: Support <{SUPPORT}>\r\n"
        f"To: {failed}\r\n"
        f"Message-ID: {original_id}\r\n"
        "Subject: [Case #00000001] Received: Teams calls drop after 30 seconds\r\n"
        "\r\n"
        "--B0UND--\r\n"
    ).encode("ascii")


class Desk:
    """The CLI bound to one test database, plus a few queries a user could make by hand."""

    def __init__(self, database_url: str, engine: Engine, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.cli = MailcaseCli(database_url, env=env)
        self.engine = engine
        self.workdir = workdir
        self._files = 0
        result = self.cli("directory", "import", str(REPO / "examples" / "directory.toml"))
        assert result.status == 0, result.stderr

    def run(self, *argv: str, now: str = at()) -> CliResult:
        return self.cli(*argv, now=now)

    def ingest_result(self, message: EmailMessage | bytes, *, now: str = at(), json: bool = True) -> CliResult:
        self._files += 1
        path = self.workdir / f"message-{self._files}.eml"
        path.write_bytes(message if isinstance(message, bytes) else message.as_bytes(policy=email.policy.SMTP))
        result = self.run("ingest", str(path), *(["--json"] if json else []), now=now)
        assert result.status == 0, result.stderr
        return result

    def ingest(self, message: EmailMessage | bytes, *, now: str = at()) -> dict[str, Any]:
        [outcome] = self.ingest_result(message, now=now).json()
        return outcome

    def outbox(self) -> list[dict[str, Any]]:
        return self.run("outbox", "list", "--json").json()

    def outbox_to(self, address: str, kind: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.outbox() if address in r["recipients"] and (kind is None or r["kind"] == kind)]

    def held(self, *extra: str) -> list[dict[str, Any]]:
        return self.run("held", "list", "--json", *extra).json()

    def cases(self) -> list[dict[str, Any]]:
        return self.run("cases", "list", "--json").json()

    def count(self, table: str) -> int:
        with self.engine.connect() as connection:
            return int(connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())

    def counts(self) -> dict[str, int]:
        tables = ("raw_message", "message", "support_case", "case_event", "outbox", "held_message", "auto_reply_log")
        return {table: self.count(table) for table in tables}


@pytest.fixture
def desk(database_url: str, engine: Engine, tmp_path: Path) -> Desk:
    return Desk(database_url, engine, tmp_path)


# ---------------------------------------------------------------------------------------------
# Who may open cases


def test_non_mpoc_message_is_held_and_the_sender_gets_one_polite_notice(desk: Desk) -> None:
    outcome = desk.ingest(mail("Please reset my voicemail PIN", sender=LEE))

    assert outcome["decision"] == "hold_message" and outcome["case"] is None
    assert desk.cases() == []
    notices = desk.outbox_to(LEE)
    assert [n["kind"] for n in notices] == ["customer.non_mpoc"]
    assert desk.outbox_to(PAT) == []  # nobody else hears about it


def test_a_non_mpoc_gets_at_most_one_notice_per_24_hours(desk: Desk) -> None:
    desk.ingest(mail("First question", sender=LEE), now=at())
    desk.ingest(mail("Second question", sender=LEE), now=at(hours=23))
    assert len(desk.outbox_to(LEE, "customer.non_mpoc")) == 1

    desk.ingest(mail("Third question", sender=LEE), now=at(hours=25))

    assert len(desk.outbox_to(LEE, "customer.non_mpoc")) == 2
    assert len(desk.held()) == 3


def test_automatic_mail_from_a_non_mpoc_gets_no_notice(desk: Desk) -> None:
    shapes = [{"Auto-Submitted": "auto-replied"}, {"Precedence": "bulk"}, {"X-Autoreply": "yes"}]
    for headers in shapes:
        outcome = desk.ingest(mail("Out of office", sender=EVE, headers=headers))
        assert outcome["case"] is None, headers

    assert desk.outbox_to(EVE) == []


def test_held_list_json_gives_id_from_subject_reason_and_received_at(desk: Desk) -> None:
    outcome = desk.ingest(mail("Ramal sem áudio", sender=EVE), now=at())

    [held] = desk.held()

    assert held["id"] == outcome["held_id"]
    assert held["from"] == EVE
    assert held["subject"] == "Ramal sem áudio"
    assert EVE in held["reason"]
    assert datetime.fromisoformat(held["received_at"]) == T0


def test_releasing_a_held_message_opens_the_case_and_acknowledges_the_sender(desk: Desk) -> None:
    outcome = desk.ingest(mail("Voicemail PIN rejected", sender=LEE), now=at())

    released = desk.run("held", "release", str(outcome["held_id"]), now=at(minutes=30))

    assert released.status == 0, released.stderr
    assert "open_case case 00000001" in released.stdout
    case = desk.run("cases", "show", "00000001", "--json").json()
    assert case["requester"] == LEE and case["subject"] == "Voicemail PIN rejected"
    assert [m["from"] for m in case["messages"]] == [LEE]
    assert len(desk.outbox_to(LEE, "customer.ack")) == 1
    assert desk.held() == []
    assert [h["state"] for h in desk.held("--all")] == ["released"]


def test_discarding_a_held_message_drops_it_from_the_list_and_opens_nothing(desk: Desk) -> None:
    outcome = desk.ingest(mail("Buy our SEO services", sender=EVE))

    discarded = desk.run("held", "discard", str(outcome["held_id"]))

    assert discarded.status == 0 and f"discarded #{outcome['held_id']}" in discarded.stdout
    assert desk.held() == []
    assert [h["state"] for h in desk.held("--all")] == ["discarded"]
    assert desk.cases() == []
    again = desk.run("held", "release", str(outcome["held_id"]))
    assert again.status == 1 and "already discarded" in again.stderr


# ---------------------------------------------------------------------------------------------
# No loops, no backscatter


AUTOMATIC = {
    "auto-replied": {"headers": {"Auto-Submitted": "auto-replied"}},
    "auto-generated": {"headers": {"Auto-Submitted": "auto-generated"}},
    "precedence-bulk": {"headers": {"Precedence": "bulk"}},
    "precedence-junk": {"headers": {"Precedence": "junk"}},
    "precedence-list": {"headers": {"Precedence": "list"}},
    "precedence-auto-reply": {"headers": {"Precedence": "auto_reply"}},
    "list-id": {"headers": {"List-Id": "Ops <ops.lists.acme.example>"}},
    "list-unsubscribe": {"headers": {"List-Unsubscribe": "<mailto:leave@news.acme.example>"}},
    "x-autoreply": {"headers": {"X-Autoreply": "yes"}},
    "x-autorespond": {"headers": {"X-Autorespond": "vacation"}},
    "exchange-out-of-office": {
        "headers": {"X-MS-Exchange-Inbox-Rules-Loop": PAT, "X-Auto-Response-Suppress": "All"}
    },
    "null-envelope-sender": {"headers": {"Return-Path": "<>"}},
    "mailer-daemon": {"sender": "MAILER-DAEMON@mx.acme.example"},
    "postmaster": {"sender": "postmaster@acme.example"},
}


def test_automatic_mail_is_never_acknowledged(desk: Desk) -> None:
    decisions = {}
    for shape, variant in AUTOMATIC.items():
        message = mail("Automatic reply: Teams calls drop", sender=variant.get("sender", PAT),
                       headers=variant.get("headers"))
        decisions[shape] = desk.ingest(message)["decision"]

    assert {shape: d for shape, d in decisions.items() if d not in ("ignore_message", "record_bounce")} == {}
    assert desk.outbox() == []
    assert desk.cases() == []


def test_delivery_status_notification_is_never_acknowledged(desk: Desk) -> None:
    outcome = desk.ingest(delivery_report("<mc.unknown@mailcase.localhost>", PAT))

    assert outcome["decision"] == "record_bounce"
    assert desk.outbox() == [] and desk.cases() == []


def test_auto_reply_on_an_existing_case_is_recorded_on_it_and_acknowledged_to_nobody(desk: Desk) -> None:
    first = desk.ingest(mail("Fax line dead"), now=at())
    [ack] = desk.outbox_to(PAT, "customer.ack")
    before = desk.counts()["outbox"]
    ooo = mail(
        "Automatic reply: [Case #00000001] Received: Fax line dead",
        headers={"Auto-Submitted": "auto-replied", "In-Reply-To": ack["message_id"]},
        body="I am out of the office until Monday.\n",
    )

    outcome = desk.ingest(ooo, now=at(minutes=1))

    assert outcome["decision"] == "record_auto_reply" and outcome["case"] == first["case"]
    case = desk.run("cases", "show", first["case"], "--json").json()
    assert ooo["Message-ID"] in [m["message_id"] for m in case["messages"]]
    assert "auto_reply" in [e["kind"] for e in case["events"]]
    assert desk.counts()["outbox"] == before


def test_bounce_of_our_acknowledgement_is_recorded_against_that_outbox_row_and_marks_the_recipient_failing(
    desk: Desk,
) -> None:
    desk.ingest(mail("Fax line dead"), now=at())
    [ack] = desk.outbox_to(PAT, "customer.ack")
    before = desk.counts()["outbox"]

    outcome = desk.ingest(delivery_report(ack["message_id"], PAT), now=at(minutes=5))

    assert outcome["decision"] == "record_bounce" and outcome["case"] == "00000001"
    [bounced] = [row for row in desk.outbox() if row["id"] == ack["id"]]
    assert datetime.fromisoformat(bounced["bounced_at"]) == T0 + timedelta(minutes=5)
    assert "5.1.1" in bounced["bounce_reason"]
    with desk.engine.connect() as connection:
        health = connection.execute(
            sa.text("SELECT failing, bounces FROM recipient_health WHERE address = :a"), {"a": PAT}
        ).one()
    assert tuple(health) == (True, 1)
    assert desk.counts()["outbox"] == before  # nothing sent back to the mailer daemon
    other = [row for row in desk.outbox() if row["id"] != ack["id"]]
    assert all(row["bounced_at"] is None for row in other)


def test_an_mpoc_opening_seven_cases_in_an_outage_hour_gets_seven_acknowledgements(desk: Desk) -> None:
    for minute in range(7):
        outcome = desk.ingest(mail(f"Site {minute} has no dial tone"), now=at(minutes=minute))
        assert outcome["decision"] == "open_case"
        assert "withheld" not in outcome["reason"]

    assert len(desk.cases()) == 7
    assert len(desk.outbox_to(PAT, "customer.ack")) == 7


def test_more_than_the_daily_ceiling_of_acknowledgements_to_one_address_are_withheld(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    desk = Desk(database_url, engine, tmp_path, env={"MAILCASE_AUTOREPLY__MAX_PER_DAY": "4"})
    for n in range(5):  # one an hour: never over the hourly ceiling
        desk.ingest(mail(f"Problem number {n}"), now=at(hours=n))

    assert len(desk.cases()) == 5
    assert len(desk.outbox_to(PAT, "customer.ack")) == 4


# ---------------------------------------------------------------------------------------------
# Exactly once


def test_the_same_message_twice_is_reported_duplicate_and_changes_nothing(desk: Desk) -> None:
    message = mail("Paging system silent")
    desk.ingest(message, now=at())
    before = desk.counts()

    second = desk.ingest_result(message, now=at(minutes=3), json=False)

    assert ": duplicate case 00000001: already received" in second.stdout
    assert desk.counts() == before


def test_same_message_id_with_different_content_opens_two_cases(desk: Desk) -> None:
    reused = "<template-0001@printer.acme.example>"
    first = desk.ingest(mail("Toner low on printer 3", message_id=reused, body="Toner at 5 %.\n"))
    second = desk.ingest(mail("Paper jam on printer 3", message_id=reused, body="Tray 2 jammed.\n"))

    assert (first["decision"], second["decision"]) == ("open_case", "open_case")
    assert first["case"] != second["case"]
    assert [r["case"] for r in desk.run("trace", reused, "--json").json()] == [first["case"], second["case"]]


def test_without_a_message_id_the_same_content_dedupes_on_its_digest(desk: Desk) -> None:
    message = mail("No dial tone on 4411", message_id=None)
    first = desk.ingest(message, now=at())
    before = desk.counts()

    again = desk.ingest(message, now=at(minutes=1))
    other = desk.ingest(mail("No dial tone on 4412", message_id=None), now=at(minutes=2))

    assert first["decision"] == "open_case"
    assert again["decision"] == "duplicate" and again["case"] == first["case"]
    assert other["decision"] == "open_case" and other["case"] != first["case"]
    assert desk.counts()["support_case"] == before["support_case"] + 1


# ---------------------------------------------------------------------------------------------
# What an operator sees: outbox, trace, attachments


def test_outbox_list_json_shows_the_acknowledgement_and_the_technicians_notice(desk: Desk) -> None:
    desk.ingest(mail("SIP trunk down"), now=at())

    rows = desk.outbox()

    by_kind = {row["kind"]: row for row in rows}
    assert set(by_kind) == {"customer.ack", "staff.new_case"}
    ack = by_kind["customer.ack"]
    assert ack["recipients"] == [PAT] and ack["state"] == "queued" and ack["case"] == "00000001"
    assert ack["message_id"].startswith("<mc.") and ack["locale"] == "en"
    assert datetime.fromisoformat(ack["due_at"]) == T0
    assert set(by_kind["staff.new_case"]["recipients"]) <= {"ana@support.example.com", "bruno@support.example.com"}
    expected_fields = {"id", "kind", "state", "recipients", "cc", "template", "locale", "case", "message_id",
                       "attempts", "created_at", "due_at", "next_attempt_at", "sent_at", "last_error",
                       "bounced_at", "bounce_reason"}
    assert expected_fields <= set(ack)


def test_trace_shows_channel_decision_reason_case_and_the_notices_caused(desk: Desk) -> None:
    message = mail("Five9 agents cannot log in")
    desk.ingest(message, now=at())

    [record] = desk.run("trace", message["Message-ID"], "--json").json()
    text = desk.run("trace", message["Message-ID"]).stdout

    assert record["channel"] == "pipe"
    assert record["decision"] == "open_case" and PAT in record["reason"]
    assert record["case"] == "00000001"
    notices = {n["kind"]: n["recipients"] for n in record["notices"]}
    assert notices.keys() == {"customer.ack", "staff.new_case"}
    assert notices["customer.ack"] == [PAT]
    assert "via pipe" in text and "decision: open_case" in text and "case:     00000001" in text
    assert f"notice:   customer.ack to {PAT}" in text
    unknown = desk.run("trace", "<never-seen@acme.example>")
    assert unknown.status == 1 and "no inbound message" in unknown.stderr


def test_the_same_attachment_in_two_messages_is_stored_once(desk: Desk) -> None:
    log = b"2026-11-25 15:59:58 trunk-2 DOWN\n" * 200
    for subject in ("Trunk 2 down", "Trunk 2 still down"):
        message = mail(subject)
        message.add_attachment(log, maintype="text", subtype="plain", filename="trunk.log")
        desk.ingest(message)

    assert desk.count("attachment") == 1
    assert desk.count("message_attachment") == 2
    with desk.engine.connect() as connection:
        stored = connection.execute(sa.text("SELECT data FROM attachment")).scalar_one()
    assert bytes(stored) == log


# ---------------------------------------------------------------------------------------------
# The acknowledgement itself


@pytest.fixture
def relay() -> Iterator[CaptureRelay]:
    with CaptureRelay() as running:
        yield running


def test_acknowledgement_carries_the_case_tag_threading_and_loop_headers_in_the_customers_language(
    database_url: str, engine: Engine, tmp_path: Path, relay: CaptureRelay
) -> None:
    desk = Desk(database_url, engine, tmp_path,
                env={"MAILCASE_OUTBOUND__HOST": relay.host, "MAILCASE_OUTBOUND__PORT": str(relay.port)})
    message = mail("Headset pairing fails", headers={"References": "<older@acme.example>"})
    desk.ingest(message, now=at())
    desk.ingest(mail("Ligações caindo no Five9", sender=JOAO), now=at(minutes=1))

    assert desk.run("tick", now=at(minutes=2)).status == 0

    [ack] = [m.message for m in relay.messages if PAT in m.rcpt_tos]
    [stored] = desk.outbox_to(PAT, "customer.ack")
    assert ack["Subject"] == "[Case #00000001] Received: Headset pairing fails"
    assert ack["Message-ID"] == stored["message_id"]
    assert ack["In-Reply-To"] == message["Message-ID"]
    assert ack["References"].split() == ["<older@acme.example>", message["Message-ID"]]
    assert ack["Reply-To"].startswith("support+c1-") and ack["Reply-To"].endswith("@support.example.com")
    assert ack["Auto-Submitted"] == "auto-replied"
    assert ack["X-Auto-Response-Suppress"] == "All"
    text = ack.get_body(("plain",)).get_content()
    assert "00000001" in text and "P4" in text
    assert ack.get_body(("html",)) is not None
    [portuguese] = [m.message for m in relay.messages if JOAO in m.rcpt_tos]
    assert portuguese["Subject"] == "[Case #00000002] Recebido: Ligações caindo no Five9"
    assert portuguese["Content-Language"] == "pt"


# ---------------------------------------------------------------------------------------------
# A very large text body


def test_a_huge_pasted_log_is_shown_in_part_kept_whole_and_still_told_apart_from_a_near_copy(desk: Desk) -> None:
    line = "2026-11-25 15:59:58 trunk-2 state DOWN cause=LOS\n"
    head = line * 60_000  # ~3 MB: more text than a case shows
    reused = "<huge-log@acme.example>"
    first = mail("Trunk log", message_id=reused, body=head + "last line: A\n")
    near_copy = mail("Trunk log", message_id=reused, body=head + "last line: B\n")

    one = desk.ingest(first)
    two = desk.ingest(near_copy)

    assert one["decision"] == two["decision"] == "open_case" and one["case"] != two["case"]
    [message] = desk.run("cases", "show", one["case"], "--json").json()["messages"]
    assert message["text"].startswith(line)
    assert len(message["text"]) < 2_100_000
    assert "more bytes of this text/plain part are not shown here" in message["text"]
    with desk.engine.connect() as connection:
        sizes = connection.execute(sa.text("SELECT size FROM raw_message ORDER BY id")).scalars().all()
    assert sizes == [len(first.as_bytes(policy=email.policy.SMTP)), len(near_copy.as_bytes(policy=email.policy.SMTP))]
