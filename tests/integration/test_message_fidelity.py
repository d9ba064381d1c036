"""Every message whole in front of the agent, and no silent outcome (issue 12), through `mailcase ingest`,
`mailcase tick` and a capture relay, on SQLite and PostgreSQL.

What is asserted is what people see: `cases show` (text and JSON), `mailcase attachments get`,
`trace`, and the mail the customer and the technicians receive at the relay.
"""

from __future__ import annotations

import email.policy
import hashlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from support.cli import REPO, CliResult, MailcaseCli
from support.relay import CapturedMessage, CaptureRelay

MAIL = REPO / "tests" / "fixtures" / "mail"
PAT = "pat@acme.example"
JOAO = "joao@brisa.example.com.br"
SUPPORT = "support@support.example.com"
TECHNICIANS = {"ana@support.example.com", "bruno@support.example.com"}  # team "support" (intake)
T0 = datetime.fromisoformat("2026-11-25T16:00:00-07:00")  # a Wednesday afternoon at the desk
CARRIER_LINE = "does not match the account of record"
RECUSA_LINE = "não confere com o cadastro"


def at(**delta: float) -> str:
    return (T0 + timedelta(**delta)).isoformat()


class Desk:
    """The CLI on one test database with the example directory, delivering to a capture relay."""

    def __init__(self, database_url: str, workdir: Path, relay: CaptureRelay, env: dict[str, str] | None = None) -> None:
        self.relay = relay
        self.workdir = workdir
        self.cli = MailcaseCli(
            database_url,
            env={"MAILCASE_OUTBOUND__HOST": relay.host, "MAILCASE_OUTBOUND__PORT": str(relay.port), **(env or {})},
        )
        self._files = 0
        assert self.run("directory", "import", str(REPO / "examples" / "directory.toml")).status == 0

    def run(self, *argv: str, now: str = at()) -> CliResult:
        return self.cli(*argv, now=now)

    def ingest(self, message: EmailMessage | bytes | Path, *, now: str = at()) -> dict[str, Any]:
        if isinstance(message, Path):
            path = message
        else:
            self._files += 1
            path = self.workdir / f"message-{self._files}.eml"
            path.write_bytes(message if isinstance(message, bytes) else message.as_bytes(policy=email.policy.SMTP))
        result = self.run("ingest", str(path), "--json", now=now)
        assert result.status == 0, result.stderr
        [outcome] = result.json()
        return outcome

    def deliver(self, *, now: str = at(minutes=1)) -> None:
        result = self.run("tick", now=now)
        assert result.status == 0, result.stderr

    def show(self, case: str) -> dict[str, Any]:
        return self.run("cases", "show", case, "--json").json()

    def show_text(self, case: str) -> str:
        result = self.run("cases", "show", case)
        assert result.status == 0, result.stderr
        return result.stdout

    def received_by(self, address: str) -> list[CapturedMessage]:
        return [m for m in self.relay.messages if address in m.rcpt_tos]

    def staff_notices(self, subject_part: str = "", reader: str = "ana@support.example.com") -> list[CapturedMessage]:
        """What one technician received: each technician gets their own copy of a staff notice
        (its Reply-To carries that technician's own token, issue 10)."""
        assert reader in TECHNICIANS
        return [
            m for m in self.relay.messages
            if reader in m.rcpt_tos and subject_part in str(m.message["Subject"])
        ]


def body_text(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def mail(subject: str, body: str, *, sender: str = PAT, headers: dict[str, str] | None = None) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = SUPPORT
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain="acme.example")
    message["Date"] = "Wed, 25 Nov 2026 16:00:00 -0700"
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(body)
    return message


@pytest.fixture
def relay() -> Iterator[CaptureRelay]:
    with CaptureRelay() as running:
        yield running


@pytest.fixture
def desk(database_url: str, engine: Engine, tmp_path: Path, relay: CaptureRelay) -> Desk:
    return Desk(database_url, tmp_path, relay)


# ---------------------------------------------------------------------------------------------
# 1. Forwards are content


FORWARDS = {
    "forward_gmail_inline_carrier_rejection.eml": CARRIER_LINE,
    "forward_outlook_desktop_inline.eml": CARRIER_LINE,
    "forward_outlook_original_message.eml": CARRIER_LINE,
    "forward_outlook_web_html_only.eml": CARRIER_LINE,
    "forward_apple_mail_begin_forwarded.eml": CARRIER_LINE,
    "forward_thunderbird_inline.eml": CARRIER_LINE,
    "forward_gmail_pt_mensagem_encaminhada.eml": RECUSA_LINE,
    "forward_outlook_pt_mensagem_original.eml": RECUSA_LINE,
    "forward_outlook_as_attachment.eml": CARRIER_LINE,
    "forward_thunderbird_as_attachment.eml": CARRIER_LINE,
    "reply_with_forward_inside.eml": CARRIER_LINE,
}


@pytest.mark.parametrize("name", sorted(FORWARDS))
def test_a_forward_reaches_the_case_text_and_the_technicians_new_case_notice(desk: Desk, name: str) -> None:
    outcome = desk.ingest(MAIL / name)
    assert outcome["decision"] == "open_case"

    shown = desk.show_text(outcome["case"])
    assert FORWARDS[name] in shown
    assert "noc@" in shown  # the original sender is named
    desk.deliver()
    [notice] = desk.staff_notices("New P4 case")
    assert FORWARDS[name] in body_text(notice.message)


def test_a_reply_quoting_our_acknowledgement_is_cut_but_a_quote_the_case_never_saw_is_kept(desk: Desk) -> None:
    opened = desk.ingest(mail("Phones down at the Chicago office", "All phones on the second floor are dead.\n"))
    desk.deliver()
    [ack] = desk.received_by(PAT)
    ack_text = body_text(ack.message)
    quoted_ack = "\n".join(f"> {line}" for line in ack_text.splitlines())
    reply = mail(
        f"Re: {ack.message['Subject']}",
        f"The second floor is back.\n\nOn Wed, Nov 25, 2026 at 4:01 PM Support <{SUPPORT}> wrote:\n{quoted_ack}\n",
        headers={"In-Reply-To": ack.message["Message-ID"]},
    )
    forward_as_reply = mail(
        f"RE: {ack.message['Subject']}",
        "The carrier answered this, see below.\n\n-----Original Message-----\n"
        "From: Carrier NOC <noc@carrier.example>\nSent: Wednesday, November 25, 2026 4:20 PM\n"
        "To: Pat Doe <pat@acme.example>\nSubject: Port request rejected\n\n"
        "Your port request PON-7781 was rejected: the account number does not match the account of record.\n",
        headers={"In-Reply-To": ack.message["Message-ID"]},
    )

    assert desk.ingest(reply, now=at(minutes=10))["decision"] == "append_update"
    assert desk.ingest(forward_as_reply, now=at(minutes=20))["decision"] == "append_update"

    inbound = [m for m in desk.show(opened["case"])["messages"] if m["direction"] == "inbound"]
    assert inbound[1]["new_text"] == "The second floor is back."
    assert CARRIER_LINE in inbound[2]["new_text"]
    assert "Sent: Wednesday, November 25, 2026 4:20 PM" in inbound[2]["new_text"]
    desk.deliver(now=at(minutes=21))
    updates = [body_text(m.message) for m in desk.staff_notices("Customer replied") if "carrier" in body_text(m.message)]
    assert len(updates) == 1 and CARRIER_LINE in updates[0]


# ---------------------------------------------------------------------------------------------
# 2. Attachments


def test_attachments_are_named_in_cases_show_written_out_by_attachments_get_and_carried_to_technicians(
    desk: Desk, tmp_path: Path
) -> None:
    outcome = desk.ingest(MAIL / "attachments_pdf_and_log.eml")
    case = outcome["case"]

    [message] = desk.show(case)["messages"][:1]
    names = {a["filename"]: a for a in message["attachments"]}
    assert set(names) == {"invoice-2026-11.pdf", "trunk.log"}
    log = names["trunk.log"]
    assert log["content_type"] == "text/plain" and log["inline"] is False and log["size"] > 1000
    shown = desk.show_text(case)
    assert "[attachment: invoice-2026-11.pdf (application/pdf" in shown
    assert "[attachment: trunk.log (text/plain" in shown

    target = tmp_path / "out.log"
    result = desk.run("attachments", "get", case, "trunk.log", "-o", str(target))
    assert result.status == 0, result.stderr
    assert hashlib.sha256(target.read_bytes()).hexdigest() == log["sha256"]
    by_digest = tmp_path / "by-digest.pdf"
    assert desk.run("attachments", "get", case, names["invoice-2026-11.pdf"]["sha256"][:12], "-o", str(by_digest)).status == 0
    assert by_digest.read_bytes().startswith(b"%PDF-1.4")
    missing = desk.run("attachments", "get", case, "nothing.zip")
    assert missing.status == 1 and "no attachment 'nothing.zip'" in missing.stderr

    desk.deliver()
    [notice] = desk.staff_notices("New P4 case")
    files = {part.get_filename(): part.get_content() for part in notice.message.iter_attachments()}
    assert set(files) == {"invoice-2026-11.pdf", "trunk.log"}
    assert hashlib.sha256(files["trunk.log"].encode()).hexdigest() == log["sha256"]
    assert "trunk.log (text/plain" in body_text(notice.message)


def test_attachments_over_the_notice_limit_are_listed_with_the_command_that_fetches_them(
    database_url: str, engine: Engine, tmp_path: Path, relay: CaptureRelay
) -> None:
    desk = Desk(database_url, tmp_path, relay, env={"MAILCASE_ATTACHMENTS__NOTICE_MAX_BYTES": "100"})
    outcome = desk.ingest(MAIL / "attachments_pdf_and_log.eml")
    desk.deliver()

    [notice] = desk.staff_notices("New P4 case")
    assert [part.get_filename() for part in notice.message.iter_attachments()] == ["invoice-2026-11.pdf"]
    text = body_text(notice.message)
    assert "trunk.log" in text and "not attached" in text
    assert f"mailcase attachments get {outcome['case']} " in text


def test_a_winmail_dat_is_unpacked_into_its_real_files(desk: Desk) -> None:
    outcome = desk.ingest(MAIL / "tnef_winmail_with_trace_and_config.eml")

    [message] = desk.show(outcome["case"])["messages"][:1]
    assert [a["filename"] for a in message["attachments"]] == ["sip-trace.pcap", "router-config.txt"]
    result = desk.run("attachments", "get", outcome["case"], "router-config.txt", "-o", "-")
    assert result.status == 0 and "hostname core-1" in result.stdout


# ---------------------------------------------------------------------------------------------
# 3. Charsets


@pytest.mark.parametrize(
    ("name", "subject"),
    [("charset_iso_2022_jp.eml", "電話がつながりません"), ("charset_koi8_r.eml", "Телефоны не работают"),
     ("charset_utf_7.eml", "Téléphones coupés à Montréal"), ("charset_big5.eml", "電話無法接通")],
)
def test_a_charset_reaches_the_case_and_the_acknowledgement_without_escape_bytes(desk: Desk, name: str, subject: str) -> None:
    outcome = desk.ingest(MAIL / name)
    assert desk.show(outcome["case"])["subject"] == subject

    desk.deliver()
    [ack] = desk.received_by(PAT)
    assert ack.message["Subject"] == f"[Case #{outcome['case']}] Received: {subject}"
    header_block = ack.data.split(b"\r\n\r\n", 1)[0]
    assert not any((byte < 32 and byte not in (9, 10, 13)) or byte == 127 for byte in header_block)


# ---------------------------------------------------------------------------------------------
# 4. No acknowledgement withheld without a trace


def test_past_the_hourly_ceiling_the_acknowledgement_is_withheld_with_an_event_a_trace_and_the_assignee_told(
    database_url: str, engine: Engine, tmp_path: Path, relay: CaptureRelay
) -> None:
    desk = Desk(database_url, tmp_path, relay, env={"MAILCASE_AUTOREPLY__MAX_PER_HOUR": "3"})
    messages = [mail(f"Site {n} has no dial tone", f"Site {n} is down.\n") for n in range(4)]
    outcomes = [desk.ingest(m, now=at(minutes=n)) for n, m in enumerate(messages)]
    desk.deliver(now=at(minutes=5))

    assert len(desk.received_by(PAT)) == 3
    last = outcomes[-1]
    assert "acknowledgement withheld: rate limit" in last["reason"]
    events = [e for e in desk.show(last["case"])["events"] if e["kind"] == "notice_withheld"]
    assert len(events) == 1 and "autoreply.max_per_hour = 3" in events[0]["summary"]
    trace = desk.run("trace", messages[-1]["Message-ID"])
    assert f"withheld: acknowledgement to {PAT}: rate limit" in trace.stdout
    [notice] = [m for m in desk.staff_notices("New P4 case") if last["case"] in str(m.message["Subject"])]
    assert "the customer was not sent the acknowledgement" in body_text(notice.message)


def test_the_loop_guard_stops_a_sender_repeating_one_subject_but_not_distinct_cases(desk: Desk) -> None:
    looping = [mail("Ticket received", "Your ticket was received.\n") for _ in range(3)]
    outcomes = [desk.ingest(m, now=at(minutes=n)) for n, m in enumerate(looping)]
    distinct = desk.ingest(mail("Voicemail broken", "No voicemail since noon.\n"), now=at(minutes=4))
    desk.deliver(now=at(minutes=5))

    assert [o["decision"] for o in outcomes] == ["open_case"] * 3
    assert "loop guard" in outcomes[2]["reason"] and "withheld" not in outcomes[1]["reason"]
    assert "withheld" not in distinct["reason"]
    assert len(desk.received_by(PAT)) == 3
    [event] = [e for e in desk.show(outcomes[2]["case"])["events"] if e["kind"] == "notice_withheld"]
    assert "loop guard" in event["summary"]


# ---------------------------------------------------------------------------------------------
# 7. The held queue is a workflow

LEE = "lee@acme.example"  # an Acme employee, not an MPOC
EVE = "eve@outsider.example"  # in no organisation


def test_held_show_says_why_and_shows_headers_text_and_attachments(desk: Desk) -> None:
    message = mail("Please reset my voicemail PIN", "My PIN stopped working this morning.\n", sender=LEE)
    message.add_attachment(b"screenshot bytes", maintype="image", subtype="png", filename="pin-error.png")
    held_id = desk.ingest(message)["held_id"]

    shown = desk.run("held", "show", str(held_id))
    assert shown.status == 0, shown.stderr
    assert "not a designated MPOC" in shown.stdout
    assert "subject:    Please reset my voicemail PIN" in shown.stdout
    assert "My PIN stopped working this morning." in shown.stdout
    assert "attachment: pin-error.png (image/png" in shown.stdout
    data = desk.run("held", "show", str(held_id), "--json").json()
    assert data["headers"]["from"] == LEE and data["attachments"][0]["filename"] == "pin-error.png"
    assert desk.run("held", "show", "999").status == 1


def test_a_plain_release_threads_a_held_reply_onto_the_case_it_answers(desk: Desk) -> None:
    original = mail("Phones down at the Chicago office", "All phones on the second floor are dead.\n")
    opened = desk.ingest(original)
    # A colleague who is not on the case answers the customer's original mail.
    reply = mail("Re: Phones down at the Chicago office", "Third floor too.\n", sender=LEE,
                 headers={"In-Reply-To": original["Message-ID"]})
    held = desk.ingest(reply, now=at(minutes=5))
    assert held["decision"] == "hold_message"

    released = desk.run("held", "release", str(held["held_id"]), now=at(minutes=10))

    assert released.status == 0, released.stderr
    assert f"append_update case {opened['case']}" in released.stdout
    inbound = [m for m in desk.show(opened["case"])["messages"] if m["direction"] == "inbound"]
    assert [m["from"] for m in inbound] == [PAT, LEE]
    assert desk.show(opened["case"])["organisation"] == "acme"


def test_release_to_a_named_case_or_as_a_new_case(desk: Desk) -> None:
    opened = desk.ingest(mail("Phones down at the Chicago office", "All phones are dead.\n"))
    first = desk.ingest(mail("Also the fax line", "The fax line is dead too.\n", sender=LEE), now=at(minutes=1))
    second = desk.ingest(mail("Unrelated: invoice", "Our invoice is wrong.\n", sender=EVE), now=at(minutes=2))

    onto = desk.run("held", "release", str(first["held_id"]), "--to-case", opened["case"], now=at(minutes=3))
    new = desk.run("held", "release", str(second["held_id"]), "--new-case", now=at(minutes=4))

    assert onto.status == 0 and f"append_update case {opened['case']}" in onto.stdout
    assert new.status == 0 and "open_case case 00000002" in new.stdout
    assert "released onto this case by an agent" in onto.stdout
    assert desk.show("00000002")["requester"] == EVE
    assert desk.run("held", "release", str(first["held_id"])).status == 1  # already released


def test_inbound_list_shows_ignored_messages_with_their_reason(desk: Desk) -> None:
    desk.ingest(mail("Weekly newsletter", "News.\n", sender="news@vendor.example", headers={"Precedence": "bulk"}))
    desk.ingest(mail("Phones down", "Dead.\n"), now=at(minutes=30))

    ignored = desk.run("inbound", "list", "--decision", "ignore_message", "--json").json()
    assert [(r["from"], r["subject"]) for r in ignored] == [("news@vendor.example", "Weekly newsletter")]
    assert "automatic message matched no case" in ignored[0]["reason"]
    recent = desk.run("inbound", "list", "--since", at(minutes=10), "--json").json()
    assert [r["decision"] for r in recent] == ["open_case"] and recent[0]["case"] == "00000001"
    assert "Weekly newsletter" in desk.run("inbound", "list").stdout


def test_new_held_messages_are_announced_at_most_once_an_hour_as_a_digest(
    database_url: str, engine: Engine, tmp_path: Path, relay: CaptureRelay
) -> None:
    lead = "desk-lead@support.example.com"
    desk = Desk(database_url, tmp_path, relay, env={"MAILCASE_HELD__DIGEST_ADDRESS": lead})
    desk.ingest(mail("Question one", "One.\n", sender=EVE), now=at())
    desk.ingest(mail("Question two", "Two.\n", sender=LEE), now=at(minutes=1))
    desk.deliver(now=at(minutes=2))
    desk.ingest(mail("Question three", "Three.\n", sender=EVE), now=at(minutes=3))
    desk.deliver(now=at(minutes=30))
    assert len(desk.received_by(lead)) == 1
    desk.deliver(now=at(minutes=70))

    first, second = (body_text(m.message) for m in desk.received_by(lead))
    assert "Question one" in first and "Question two" in first and "Question three" not in first
    assert "Question three" in second and "Question one" not in second
    assert "mailcase held show" in first


# ---------------------------------------------------------------------------------------------
# 5. A technician is told when their reply does not reach the customer; attachments go out

ANA = "ana@support.example.com"


def _technician_reply(desk: Desk, notice: CapturedMessage, first_line: str, *, attach: bytes | None = None) -> EmailMessage:
    reply = mail(f"Re: {notice.message['Subject']}", f"{first_line}\nWe replaced the SBC card; please test again.\n",
                 sender=f"Ana Lima <{ANA}>", headers={"In-Reply-To": notice.message["Message-ID"]})
    reply.replace_header("To", str(notice.message["Reply-To"]))
    if attach is not None:
        reply.add_attachment(attach, maintype="application", subtype="pdf", filename="rma-report.pdf")
    return reply


def test_a_technicians_reply_on_a_closed_case_is_held_the_technician_told_and_reopen_sends_it(desk: Desk) -> None:
    opened = desk.ingest(mail("Phones down at the Chicago office", "All phones are dead.\n"))
    desk.deliver()
    [notice] = desk.staff_notices("New P4 case")
    assert desk.run("cases", "update", opened["case"], "--status", "closed", now=at(minutes=5)).status == 0

    held = desk.ingest(_technician_reply(desk, notice, "Hi Pat,"), now=at(minutes=10))
    desk.deliver(now=at(minutes=11))

    assert held["decision"] == "hold_message"
    [told] = desk.received_by(ANA)[-1:]
    assert "Not sent to the customer" in str(told.message["Subject"])
    text = body_text(told.message)
    assert "did NOT reach the customer" in text and "#reopen" in text and "closed" in text
    assert not [m for m in desk.received_by(PAT) if "SBC card" in body_text(m.message)]

    reopened = desk.ingest(_technician_reply(desk, notice, "#reopen", attach=b"%PDF-1.4 rma"), now=at(minutes=20))
    desk.deliver(now=at(minutes=21))

    assert reopened["decision"] == "technician_reply"
    assert desk.show(opened["case"])["status"] == "in_progress"
    [sent] = [m for m in desk.received_by(PAT) if "SBC card" in body_text(m.message)]
    assert "#reopen" not in body_text(sent.message)
    assert [p.get_filename() for p in sent.message.iter_attachments()] == ["rma-report.pdf"]
    assert sent.message["From"].endswith(f"<{SUPPORT}>")


def test_a_technician_writing_without_a_case_reference_is_told_why(desk: Desk) -> None:
    outcome = desk.ingest(mail("Quick question", "Is the Denver trunk fixed?\n", sender=ANA))
    desk.deliver()

    assert outcome["decision"] == "hold_message"
    [told] = desk.received_by(ANA)
    assert "without a case reference" in body_text(told.message)


def test_cases_reply_attach_sends_the_files_and_refuses_too_large_ones_with_the_reason(
    database_url: str, engine: Engine, tmp_path: Path, relay: CaptureRelay
) -> None:
    desk = Desk(database_url, tmp_path, relay, env={"MAILCASE_ATTACHMENTS__REPLY_MAX_BYTES": "1000"})
    opened = desk.ingest(mail("Phones down", "Dead.\n"))
    small, large = tmp_path / "config-fix.txt", tmp_path / "capture.pcap"
    small.write_text("interface Gi0/1\n shutdown\n no shutdown\n")
    large.write_bytes(b"\x00" * 2000)

    refused = desk.run("cases", "reply", opened["case"], "--body", "Capture attached.", "--attach", str(large))
    sent = desk.run("cases", "reply", opened["case"], "--body", "Apply this config.", "--attach", str(small))
    desk.deliver(now=at(minutes=2))

    assert refused.status == 1 and "reply_max_bytes" in refused.stderr and "nothing was sent" in refused.stderr
    assert sent.status == 0 and "with 1 attachment" in sent.stdout
    [reply] = [m for m in desk.received_by(PAT) if "Apply this config." in body_text(m.message)]
    [part] = list(reply.message.iter_attachments())
    assert part.get_filename() == "config-fix.txt" and "no shutdown" in part.get_content()
    assert not [m for m in desk.received_by(PAT) if "Capture attached." in body_text(m.message)]


# ---------------------------------------------------------------------------------------------
# 9. The agent's worklist


def test_cases_list_filters_make_a_worklist_and_show_attention_and_the_next_deadline(desk: Desk) -> None:
    first = desk.ingest(mail("Phones down", "Dead.\n"))["case"]
    second = desk.ingest(mail("Fax down", "Dead.\n"), now=at(minutes=1))["case"]
    third = desk.ingest(mail("Voicemail", "Broken.\n"), now=at(minutes=2))["case"]
    assert desk.run("cases", "update", first, "--status", "closed").status == 0
    assert desk.run("cases", "update", second, "--assignee", "none").status == 0
    assert desk.run("cases", "update", third, "--status", "in_progress").status == 0

    def numbers(*argv: str) -> list[str]:
        return [row["number"] for row in desk.run("cases", "list", *argv, "--json").json()]

    assert numbers("--open") == [third, second]
    assert numbers("--status", "closed", "--status", "in_progress") == [third, first]
    assert numbers("--assignee", "none") == [second]
    assert numbers("--limit", "0") == [third, second, first]
    assert numbers("--limit", "1") == [third]
    assert numbers("--needs-attention") == []
    assert numbers("--open", "--due-before", at(hours=1)) == []  # P4: one business day to answer
    assert numbers("--open", "--due-before", at(days=3)) == [third, second]
    [row] = [r for r in desk.run("cases", "list", "--json").json() if r["number"] == second]
    assert row["next_deadline"] == "response" and row["next_due_at"] == row["response_due_at"]
    line = next(ln for ln in desk.run("cases", "list").stdout.splitlines() if ln.startswith(second))
    assert "response due" in line


def test_cases_update_that_changes_nothing_exits_0_and_says_so(desk: Desk) -> None:
    case = desk.ingest(mail("Phones down", "Dead.\n"))["case"]
    assignee = desk.show(case)["assignee"]
    before = len(desk.show(case)["events"])

    same = desk.run("cases", "update", case, "--status", "new", "--assignee", assignee)

    assert same.status == 0, same.stderr
    assert "nothing changed" in same.stdout and "already new" in same.stdout
    assert len(desk.show(case)["events"]) == before


def test_directory_list_and_show_tell_who_is_an_mpoc_of_which_organisation(desk: Desk) -> None:
    listing = desk.run("directory", "list", "--json").json()
    acme = next(o for o in listing if o["id"] == "acme")
    pat = next(c for c in acme["contacts"] if c["email"] == PAT)
    lee = next(c for c in acme["contacts"] if c["email"] == LEE)
    assert pat["mpoc"] is True and "primary" in pat["roles"]
    assert lee["mpoc"] is False

    shown = desk.run("directory", "show", LEE)
    assert shown.status == 0 and "not an MPOC" in shown.stdout and "acme" in shown.stdout
    assert "MPOC: major_cases, primary" in desk.run("directory", "show", "acme").stdout
    assert desk.run("directory", "show", "nobody").status == 1


# ---------------------------------------------------------------------------------------------
# 6. Replies to master-case updates

SAM = "sam@acme.example"  # acme's secondary MPOC


def test_replies_to_a_master_update_land_on_the_linked_case_open_a_linked_case_or_are_held_and_told(desk: Desk) -> None:
    acme_case = desk.ingest(mail("Teams calls fail", "Calls fail.\n"))["case"]
    created = desk.run("cases", "master", "create", "--platform", "Microsoft Teams", "--subject", "Teams outage", "--json")
    assert created.status == 0, created.stderr
    master = created.json()["number"]
    assert desk.run("cases", "update", acme_case, "--master", master).status == 0
    for address in (SAM, JOAO, LEE):
        assert desk.run("subscriptions", "add", address, "--case", master, "--no-notice").status == 0
    assert desk.run("cases", "reply", master, "--body", "Microsoft is rolling back the change.").status == 0
    desk.deliver(now=at(minutes=5))
    update = {a: next(m for m in desk.received_by(a) if "rolling back" in body_text(m.message)) for a in (SAM, JOAO, LEE)}

    def answer(address: str, minutes: int) -> dict[str, Any]:
        reply = mail(f"Re: {update[address].message['Subject']}", "Still failing for us.\n", sender=address,
                     headers={"In-Reply-To": update[address].message["Message-ID"]})
        return desk.ingest(reply, now=at(minutes=minutes))

    sam, joao, lee = answer(SAM, 10), answer(JOAO, 11), answer(LEE, 12)
    desk.deliver(now=at(minutes=13))

    assert (sam["decision"], sam["case"]) == ("append_update", acme_case)
    assert joao["decision"] == "open_case" and "linked to master case" in joao["reason"]
    assert desk.show(joao["case"])["master"] == master
    assert any(joao["case"] in str(m.message["Subject"]) for m in desk.received_by(JOAO))  # acknowledged
    assert lee["decision"] == "hold_message" and "not a designated contact" in lee["reason"]
    notices = [m for m in desk.received_by(LEE) if "rolling back" not in body_text(m.message)]
    assert len(notices) == 1  # told once


# ---------------------------------------------------------------------------------------------
# 8. Mail quality


def test_a_related_case_takes_the_customers_subject_without_our_template_words(desk: Desk) -> None:
    opened = desk.ingest(mail("Phones down at the Chicago office", "Dead.\n"))
    desk.deliver()
    [ack] = desk.received_by(PAT)
    assert desk.run("cases", "update", opened["case"], "--status", "closed", now=at(minutes=5)).status == 0
    reply = mail(f"RE: {ack.message['Subject']}", "It is down again.\n", headers={"In-Reply-To": ack.message["Message-ID"]})

    related = desk.ingest(reply, now=at(days=10))

    assert related["decision"] == "open_related_case"
    assert desk.show(related["case"])["subject"] == "Phones down at the Chicago office"


def test_mail_from_our_own_address_never_gets_a_notice(desk: Desk) -> None:
    outcome = desk.ingest(mail("Question", "Looping?\n", sender=SUPPORT))
    desk.deliver()

    assert outcome["decision"] == "hold_message"
    assert desk.received_by(SUPPORT) == []
    assert desk.run("outbox", "list", "--json").json() == []


def test_staff_notices_of_one_case_share_a_thread_root(desk: Desk) -> None:
    original = mail("Phones down", "Dead.\n")
    opened = desk.ingest(original)
    reply = mail("Re: Phones down", "Still dead.\n", headers={"In-Reply-To": original["Message-ID"]})
    assert desk.ingest(reply, now=at(minutes=5))["decision"] == "append_update"
    desk.deliver(now=at(minutes=6))

    notices = desk.staff_notices()
    assert len(notices) == 2
    roots = {str(m.message["References"]).split()[0] for m in notices}
    assert len(roots) == 1 and opened["case"] in roots.pop()
    assert all(m.message["In-Reply-To"] for m in notices)


def test_one_update_with_several_changes_sends_the_customer_one_mail_that_states_them_all(desk: Desk) -> None:
    case = desk.ingest(mail("Phones down", "Dead.\n"))["case"]
    desk.deliver()
    before = len(desk.received_by(PAT))

    result = desk.run(
        "cases", "update", case, "--etr", at(days=2), "--status", "shipping", now=at(minutes=10),
    )
    desk.deliver(now=at(minutes=11))

    assert result.status == 0, result.stderr
    mails = desk.received_by(PAT)[before:]
    assert len(mails) == 1
    text = body_text(mails[0].message)
    assert "Shipping" in text and "Estimated time to resolution" in text


def test_a_maintenance_notice_names_only_the_affected_products_the_organisation_uses(desk: Desk) -> None:
    added = desk.run(
        "maintenance", "add", "--kind", "unscheduled", "--start", at(hours=1), "--end", at(hours=3),
        "--products", "Cisco,Five9", "--description", "Core router swap", "--justification", "Failing line card",
    )
    assert added.status == 0, added.stderr
    desk.deliver(now=at(minutes=1))

    acme = [m for m in desk.relay.messages if any(r.endswith("@acme.example") for r in m.rcpt_tos)]
    brisa = [m for m in desk.relay.messages if any(r.endswith("@brisa.example.com.br") for r in m.rcpt_tos)]
    assert acme and brisa
    for captured in acme:
        assert "(Cisco)" in str(captured.message["Subject"]) and "Five9" not in body_text(captured.message)
    for captured in brisa:
        assert "(Five9)" in str(captured.message["Subject"]) and "Cisco" not in body_text(captured.message)
