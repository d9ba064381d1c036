"""Who really sent it, end to end: the real `mailcase serve` over SMTP, a CaptureRelay as its relay, one daemon per `[security] sender_policy`.

The trusted verdict is the `Authentication-Results` our MTA (`mx.support.example.com`) would add
above its own `Received:`; the enforce daemon also checks DKIM itself against a DNS server that
never answers (a bound, silent UDP socket), so its timeout is exercised for real.
"""

from __future__ import annotations

import email.policy
import smtplib
import socket
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import pytest

from mailcase.rules.tokens import staff_reply_address
from support.daemon import MailcaseDaemon, wait_until
from support.relay import CapturedMessage, CaptureRelay

SUPPORT = "support@support.example.com"
PAT = "pat@acme.example"  # Acme's primary MPOC
SAM = "sam@acme.example"  # Acme's secondary MPOC, subscribed to the master case
ANA = "ana@support.example.com"  # a technician
ATTACKER = "attacker@evil.example"
SECRET = "e2e-sender-authentication-secret"
OUR_MTA = "mx.support.example.com"
WAIT = 20.0  # seconds: bound for the daemon's 1-second outbox job; never a fixed sleep
PHISH = "Please re-enter your password at http://evil.example/login"


def stamped(mail: EmailMessage, dmarc: str | None, domain: str = "acme.example") -> bytes:
    """The message as our MTA hands it over: its Authentication-Results (when `dmarc` is given)
    above its own Received:, CRLF line ends."""
    head = ""
    if dmarc is not None:
        head += (
            f"Authentication-Results: {OUR_MTA}; spf={dmarc} smtp.mailfrom={domain};\r\n"
            f" dmarc={dmarc} (p=reject dis=none) header.from={domain}\r\n"
        )
    head += f"Received: from client.example (client.example [192.0.2.7])\r\n by {OUR_MTA} (Postfix) with ESMTPS id 4Ab;\r\n Tue, 01 Dec 2026 17:00:00 +0000\r\n"
    return head.encode() + mail.as_bytes(policy=email.policy.SMTP)


def mail(sender: str, subject: str, body: str, *, name: str = "", to: str = SUPPORT, **headers: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"{name} <{sender}>" if name else sender
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "x.example")
    message["Date"] = "Tue, 01 Dec 2026 10:00:00 -0700"
    for key, value in headers.items():
        message[key.replace("_", "-")] = value
    message.set_content(body)
    return message


def send(daemon: MailcaseDaemon, data: bytes, *, recipients: tuple[str, ...] = (SUPPORT,)) -> tuple[int, str]:
    with daemon.smtp() as client:
        client.ehlo("mx.support.example.com")
        client.mail("bounce@relay.example")
        for recipient in recipients:
            code, reply = client.rcpt(recipient)
            assert code == 250, reply
        try:
            code, reply = client.data(data)
        except smtplib.SMTPDataError as error:
            return error.smtp_code, error.smtp_error.decode()
        return code, reply.decode()


def cli_json(daemon: MailcaseDaemon, *argv: str) -> Any:
    result = daemon.cli(*argv, "--json")
    assert result.status == 0, result.stderr
    return result.json()


def trace(daemon: MailcaseDaemon, message_id: str) -> tuple[dict[str, Any], str]:
    (record,) = cli_json(daemon, "trace", message_id)
    text = daemon.cli("trace", message_id)
    assert text.status == 0, text.stderr
    return record, text.stdout


def drained(daemon: MailcaseDaemon) -> bool:
    """Nothing left to deliver: every outbox row was sent (or failed)."""
    return all(row["state"] not in ("queued", "sending") for row in cli_json(daemon, "outbox", "list"))


def delivered_to(relay: CaptureRelay, address: str) -> list[CapturedMessage]:
    return [m for m in relay.messages if address in m.rcpt_tos]


def open_case(daemon: MailcaseDaemon, relay: CaptureRelay, subject: str) -> str:
    """A case opened by Pat's genuine mail (our MTA says dmarc=pass), its acknowledgement delivered."""
    genuine = mail(PAT, subject, "Calls drop after 30 seconds.", name="Pat Doe")
    code, reply = send(daemon, stamped(genuine, "pass"))
    assert code == 250, reply
    record, _ = trace(daemon, genuine["Message-ID"])
    assert record["decision"] == "open_case", record
    wait_until(lambda: drained(daemon), timeout=WAIT, what="the acknowledgement")
    return str(record["case"])


def start_daemon(root: Path, relay: CaptureRelay, policy: str, **extra: str) -> MailcaseDaemon:
    env = {
        "MAILCASE_SECURITY__SECRET": SECRET,
        "MAILCASE_SECURITY__SENDER_POLICY": policy,
        "MAILCASE_SECURITY__TRUSTED_AUTHSERV_IDS": OUR_MTA,
        "MAILCASE_STATUS__OUT_DIR": str(root / "status"),
        **extra,
    }
    daemon = MailcaseDaemon(root, relay=relay, outbox_interval_seconds=1, env=env)
    daemon.prepare()
    daemon.start()
    return daemon


@pytest.fixture(scope="module")
def relay() -> Iterator[CaptureRelay]:
    with CaptureRelay() as running:
        yield running


@pytest.fixture(scope="module")
def silent_dns() -> Iterator[str]:
    """A DNS server address that never answers: every lookup times out."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(scope="module")
def enforce(tmp_path_factory: pytest.TempPathFactory, relay: CaptureRelay, silent_dns: str) -> Iterator[MailcaseDaemon]:
    """Enforce, checking DKIM itself when our MTA stamped nothing, against a DNS that never answers."""
    extra = {
        "MAILCASE_SECURITY__VERIFY": "dkim",
        "MAILCASE_SECURITY__DNS_SERVERS": silent_dns,
        "MAILCASE_SECURITY__DNS_TIMEOUT_SECONDS": "0.3",
    }
    running = start_daemon(tmp_path_factory.mktemp("enforce"), relay, "enforce", **extra)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def monitor(tmp_path_factory: pytest.TempPathFactory, relay: CaptureRelay) -> Iterator[MailcaseDaemon]:
    running = start_daemon(tmp_path_factory.mktemp("monitor"), relay, "monitor")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def off(tmp_path_factory: pytest.TempPathFactory, relay: CaptureRelay) -> Iterator[MailcaseDaemon]:
    running = start_daemon(tmp_path_factory.mktemp("off"), relay, "off")
    try:
        yield running
    finally:
        running.stop()


# ---------------------------------------------------------------------------------------------
# A spoofed MPOC


def test_a_spoofed_mpoc_in_enforce_opens_nothing_and_the_real_mpoc_is_told_once(
    enforce: MailcaseDaemon, relay: CaptureRelay
) -> None:
    daemon = enforce
    before = len(cli_json(daemon, "cases", "list"))
    forged = [
        mail(PAT, f"MACD: add {n} licences", "Bill us.", name="Pat Doe", Reply_To=ATTACKER) for n in (40, 80)
    ]
    for message in forged:
        code, reply = send(daemon, stamped(message, "fail"))
        assert code == 250, reply

    assert len(cli_json(daemon, "cases", "list")) == before
    record, text = trace(daemon, forged[0]["Message-ID"])
    assert record["decision"] == "hold_message" and record["case"] is None
    assert "sender not authenticated (dmarc=fail, p=reject, d=acme.example)" in record["reason"]
    assert record["sender_verdict"]["source"] == f"authentication-results:{OUR_MTA}"
    assert "sender:   dmarc=fail (p=reject) header.from=acme.example" in text
    wait_until(lambda: drained(daemon), timeout=WAIT, what="the notice to Pat")
    told = [m for m in delivered_to(relay, PAT) if "in your name was held" in str(m.message["Subject"])]
    assert len(told) == 1  # once, whatever the forger sends
    assert list(told[0].rcpt_tos) == [PAT]
    assert delivered_to(relay, ATTACKER) == []  # never the unverified address


def test_a_dns_timeout_in_enforce_is_answered_451_and_nothing_is_stored(enforce: MailcaseDaemon) -> None:
    daemon = enforce
    message = mail(PAT, "Phones down", "Everything is down.", name="Pat Doe")

    code, reply = send(daemon, message.as_bytes(policy=email.policy.SMTP))  # no trusted verdict

    assert code == 451, reply
    assert daemon.cli("trace", message["Message-ID"]).status == 1  # nothing stored: the sender retries


def test_a_spoofed_mpoc_in_monitor_opens_the_case_and_records_the_verdict(monitor: MailcaseDaemon) -> None:
    daemon = monitor
    forged = mail(PAT, "Phones down in Denver", "Everything is down.", name="Pat Doe")

    code, reply = send(daemon, stamped(forged, "fail"))

    assert code == 250, reply
    record, _ = trace(daemon, forged["Message-ID"])
    assert record["decision"] == "open_case" and record["sender_verdict"]["dmarc"] == "fail"
    case = cli_json(daemon, "cases", "show", record["case"])
    (check,) = [e for e in case["events"] if e["kind"] == "sender_check"]
    assert "enforce would hold this message: sender not authenticated (dmarc=fail" in check["summary"]
    assert case["messages"][0]["sender_verdict"]["dmarc"] == "fail"
    shown = daemon.cli("cases", "show", record["case"])
    assert "[sender: dmarc=fail (p=reject) header.from=acme.example" in shown.stdout


# ---------------------------------------------------------------------------------------------
# A forged technician (every mode: the technician's token needs no DNS)


@pytest.mark.parametrize("mode", ["enforce", "monitor", "off"])
def test_a_forged_technician_reply_reaches_no_customer_and_the_technician_is_told(
    mode: str, request: pytest.FixtureRequest, relay: CaptureRelay
) -> None:
    daemon: MailcaseDaemon = request.getfixturevalue(mode)
    number = open_case(daemon, relay, "Teams calls drop")
    forged = mail(ANA, f"Re: [Case #{number}] Teams calls drop", PHISH, name="Ana Lima")

    # Our MTA saw no valid signature for our domain (sent from outside, From: forged).
    code, reply = send(daemon, stamped(forged, "fail", domain="support.example.com"))

    assert code == 250, reply
    record, text = trace(daemon, forged["Message-ID"])
    assert record["decision"] == "hold_message" and f"technician {ANA} not proven" in record["reason"]
    assert "decision: hold_message" in text
    wait_until(lambda: drained(daemon), timeout=WAIT, what="the notice to Ana")
    assert not any(PHISH.encode() in m.data for m in relay.messages if ANA not in m.rcpt_tos)
    assert any("a message in your name" in str(m.message["Subject"]) for m in delivered_to(relay, ANA))

    # The same reply through Ana's own token (the Reply-To of her new-case notice) is hers: it is relayed.
    # (The relay is shared by the three daemons, whose case numbers repeat: the latest is this one's.)
    notice = [m for m in delivered_to(relay, ANA) if f"[Case #{number}] New" in str(m.message["Subject"])][-1]
    assert list(notice.rcpt_tos) == [ANA]  # her own copy: the token in it is bound to her
    token = str(notice.message["Reply-To"])
    assert token == staff_reply_address(SUPPORT, int(number), ANA, SECRET.encode())
    genuine = mail(ANA, f"Re: [Case #{number}] Teams calls drop", "Please power-cycle the switch.", name="Ana Lima",
                   to=token)
    code, reply = send(daemon, genuine.as_bytes(policy=email.policy.SMTP), recipients=(str(genuine["To"]),))
    assert code == 250, reply
    assert trace(daemon, genuine["Message-ID"])[0]["decision"] == "technician_reply"
    wait_until(
        lambda: any(b"power-cycle the switch" in m.data for m in delivered_to(relay, PAT)), timeout=WAIT,
        what="the technician's reply at the customer",
    )


def test_a_forged_technician_update_on_a_master_case_reaches_no_subscriber_and_no_status_page(
    off: MailcaseDaemon, relay: CaptureRelay
) -> None:
    daemon = off  # one mode is enough here: the technician's proof does not depend on it
    master = cli_json(daemon, "cases", "master", "create", "--platform", "Microsoft Teams",
                      "--subject", "Teams calls failing", "--assignee", ANA)
    number = str(master["number"])
    added = daemon.cli("subscriptions", "add", SAM, "--case", number, "--no-notice")
    assert added.status == 0, added.stderr
    forged = mail(ANA, f"Re: [Case #{number}] Teams calls failing", PHISH, name="Ana Lima")

    code, reply = send(daemon, stamped(forged, "fail", domain="support.example.com"))

    assert code == 250, reply
    assert trace(daemon, forged["Message-ID"])[0]["decision"] == "hold_message"
    wait_until(lambda: drained(daemon), timeout=WAIT, what="the outbox")
    status = Path(daemon.workdir / "status")
    built = daemon.cli("status", "build", "--out", str(status))
    assert built.status == 0, built.stderr
    assert not any(PHISH in f.read_text(errors="replace") for f in status.iterdir() if f.is_file())
    assert not any(PHISH.encode() in m.data for m in delivered_to(relay, SAM))

    # The proven update (Ana's token) does reach the subscriber and the page: the checks above can fail.
    update = "Engineering found the faulty SBC; calls are recovering."
    genuine = mail(ANA, f"Re: [Case #{number}] Teams calls failing", update, name="Ana Lima",
                   to=staff_reply_address(SUPPORT, int(number), ANA, SECRET.encode()))
    code, reply = send(daemon, genuine.as_bytes(policy=email.policy.SMTP), recipients=(str(genuine["To"]),))
    assert code == 250, reply
    wait_until(lambda: any(update.encode() in m.data for m in delivered_to(relay, SAM)), timeout=WAIT,
               what="the master update at the subscriber")
    assert daemon.cli("status", "build", "--out", str(status)).status == 0
    assert any(update in f.read_text(errors="replace") for f in status.iterdir() if f.is_file())


# ---------------------------------------------------------------------------------------------
# One reading of From:


@pytest.mark.parametrize(
    "header",
    ["=?utf-8?q?x:pat@acme.example,?= <attacker@evil.example>", "pat@acme.example <attacker@evil.example>"],
)
def test_the_two_forged_from_forms_are_read_as_the_attackers_address(off: MailcaseDaemon, header: str) -> None:
    daemon = off  # the reading of From: does not depend on the mode
    before = len(cli_json(daemon, "cases", "list"))
    message_id = make_msgid(domain="evil.example")
    raw = (
        f"From: {header}\r\nTo: {SUPPORT}\r\nSubject: Open a case for me\r\nMessage-ID: {message_id}\r\n"
        "Date: Tue, 01 Dec 2026 10:00:00 -0700\r\n\r\nPlease open a case.\r\n"
    ).encode()

    code, reply = send(daemon, raw)

    assert code == 250, reply
    record, _ = trace(daemon, message_id)
    assert record["from"] == ATTACKER
    assert record["decision"] == "hold_message" and f"{ATTACKER} is not a designated contact" in record["reason"]
    assert len(cli_json(daemon, "cases", "list")) == before


def test_several_from_addresses_are_held_with_that_reason(off: MailcaseDaemon) -> None:
    daemon = off
    message_id = make_msgid(domain="acme.example")
    raw = (
        f"From: {PAT}, {SAM}\r\nTo: {SUPPORT}\r\nSubject: Open a case\r\nMessage-ID: {message_id}\r\n"
        "Date: Tue, 01 Dec 2026 10:00:00 -0700\r\n\r\nPlease open a case.\r\n"
    ).encode()

    code, reply = send(daemon, raw)

    assert code == 250, reply
    record, _ = trace(daemon, message_id)
    assert record["decision"] == "hold_message" and "From: has 2 addresses" in record["reason"]
