"""`mailcase serve` end to end: a real SMTP client (smtplib) against the running daemon, a CaptureRelay as its relay.

Every reply code the edge can give a sender is exercised through the real daemon process; 451
(database unavailable) is in test_crash_safety.py, with the other failure scenarios.
"""

from __future__ import annotations

import email.policy
import re
import smtplib
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import getaddresses, make_msgid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mailcase.rules.tokens import case_from_address
from mailcase.store.engine import make_engine
from support.daemon import MailcaseDaemon, wait_until
from support.relay import CapturedMessage, CaptureRelay

SUPPORT = "support@support.example.com"
MACD = "macd@support.example.com"
POSTMASTER = "postmaster@support.example.com"
PAT = "pat@acme.example"
LEE = "lee@acme.example"  # a contact of Acme, not an MPOC
MAX_MESSAGE_SIZE = 256 * 1024
MAX_RECIPIENTS = 2
DELIVERY_WAIT = 20.0  # seconds: bound for the daemon's 1-second outbox job; never a fixed sleep
QUEUED_AS = re.compile(r"2\.0\.0 Ok: queued as (\S+)")


def customer_mail(
    subject: str = "Teams calls drop after 30 seconds",
    *,
    sender: str = PAT,
    body: str = "Every call drops after 30 s since this morning.\n",
    message_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = f"Customer <{sender}>"
    mail["To"] = SUPPORT
    mail["Subject"] = subject
    mail["Message-ID"] = message_id or make_msgid(domain="acme.example")
    mail["Date"] = "Wed, 25 Nov 2026 16:00:00 -0700"
    for name, value in (headers or {}).items():
        mail[name] = value
    mail.set_content(body)
    return mail


def wire(mail: EmailMessage) -> bytes:
    """The message as it travels over SMTP: CRLF line ends (RFC 5321 §2.3.8); smtplib sends bytes as given."""
    return mail.as_bytes(policy=email.policy.SMTP)


def send(
    daemon: MailcaseDaemon, mail: EmailMessage, *, sender: str = PAT, recipients: tuple[str, ...] = (SUPPORT,)
) -> tuple[int, str]:
    """One whole SMTP transaction; returns the final DATA reply."""
    with daemon.smtp() as client:
        client.ehlo("client.acme.example")
        code, reply = client.mail(sender)
        assert code == 250, reply
        for recipient in recipients:
            code, reply = client.rcpt(recipient)
            assert code == 250, reply
        code, reply = client.data(wire(mail))
        return code, reply.decode()


def queued_as(reply: str) -> str:
    found = QUEUED_AS.search(reply)
    assert found, f"not a 250 queued reply: {reply!r}"
    return found.group(1)


def acknowledgements_to(relay: CaptureRelay, address: str, in_reply_to: str) -> list[CapturedMessage]:
    return [
        m for m in relay.messages
        if address in m.rcpt_tos and m.message.get("In-Reply-To") == in_reply_to
    ]


@pytest.fixture(scope="module")
def relay() -> Iterator[CaptureRelay]:
    with CaptureRelay() as running:
        yield running


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, relay: CaptureRelay) -> Iterator[MailcaseDaemon]:
    """One daemon on SQLite for the module: outbox job every second, small size and recipient caps."""
    with MailcaseDaemon(
        tmp_path_factory.mktemp("serve"),
        relay=relay,
        outbox_interval_seconds=1,
        env={
            "MAILCASE_SMTP__MAX_MESSAGE_SIZE": str(MAX_MESSAGE_SIZE),
            "MAILCASE_SMTP__MAX_RECIPIENTS": str(MAX_RECIPIENTS),
        },
    ) as running:
        running.prepare()
        running.start()
        yield running


def show_case(daemon: MailcaseDaemon, number: str) -> dict[str, Any]:
    result = daemon.cli("cases", "show", number, "--json")
    assert result.status == 0, result.stderr
    return result.json()


def reply_token_secret(database_url: str) -> bytes:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            value = connection.execute(
                sa.text("SELECT value FROM installation WHERE key = 'reply_token_secret'")
            ).scalar_one()
    finally:
        engine.dispose()
    return str(value).encode()


# ---------------------------------------------------------------------------------------------
# A new case, its acknowledgement, a reply


def test_new_case_from_an_mpoc_is_answered_250_with_its_case_number(daemon: MailcaseDaemon) -> None:
    mail = customer_mail("SIP trunk down at the Denver site")

    code, reply = send(daemon, mail)

    assert code == 250
    number = queued_as(reply)
    case = show_case(daemon, number)
    assert case["number"] == number
    assert case["priority"] == "P4" and case["status"] == "new"
    assert case["requester"] == PAT
    assert case["subject"] == "SIP trunk down at the Denver site"
    assert [m["message_id"] for m in case["messages"]] == [mail["Message-ID"]]


def test_acknowledgement_reaches_the_relay_with_the_headers_the_spec_demands(
    daemon: MailcaseDaemon, relay: CaptureRelay
) -> None:
    mail = customer_mail("Voicemail greeting reset", headers={"References": "<earlier@acme.example>"})
    customer_id = mail["Message-ID"]
    number = queued_as(send(daemon, mail)[1])

    acks = wait_until(
        lambda: acknowledgements_to(relay, PAT, customer_id), timeout=DELIVERY_WAIT, what="the acknowledgement"
    )

    assert len(acks) == 1
    ack = acks[0].message
    assert f"[Case #{number}]" in ack["Subject"]
    outbox = daemon.cli("outbox", "list", "--json").json()
    stored = [row for row in outbox if row["kind"] == "customer.ack" and row["case"] == number]
    assert len(stored) == 1 and stored[0]["state"] == "sent"
    assert ack["Message-ID"] == stored[0]["message_id"]
    assert ack["In-Reply-To"] == customer_id
    assert ack["References"].split() == ["<earlier@acme.example>", customer_id]
    reply_to = [address for _name, address in getaddresses([ack["Reply-To"]])]
    assert len(reply_to) == 1 and reply_to[0] != SUPPORT
    assert case_from_address(reply_to[0], SUPPORT, reply_token_secret(daemon.database_url)) == int(number)
    assert ack["Auto-Submitted"] == "auto-replied"
    assert ack["X-Auto-Response-Suppress"] == "All"
    assert "P4" in ack.get_body(("plain",)).get_content()


def test_reply_to_the_token_address_updates_the_same_case(daemon: MailcaseDaemon, relay: CaptureRelay) -> None:
    first = customer_mail("Fax line has no dial tone")
    number = queued_as(send(daemon, first)[1])
    ack = wait_until(
        lambda: acknowledgements_to(relay, PAT, first["Message-ID"]), timeout=DELIVERY_WAIT, what="the acknowledgement"
    )[0].message
    token_address = getaddresses([ack["Reply-To"]])[0][1]
    # A client that drops In-Reply-To, References and the subject tag: only the token address threads it.
    reply = customer_mail("still broken", body="Still no dial tone after the reboot.\n")

    code, text = send(daemon, reply, recipients=(token_address,))

    assert code == 250 and queued_as(text) == number
    case = show_case(daemon, number)
    assert [m["message_id"] for m in case["messages"] if m["direction"] == "inbound"] == [
        first["Message-ID"], reply["Message-ID"],
    ]


def test_the_same_message_delivered_twice_is_answered_250_and_opens_one_case(daemon: MailcaseDaemon) -> None:
    mail = customer_mail("Paging system silent on floor 2")

    first = queued_as(send(daemon, mail)[1])
    code, again = send(daemon, mail)

    assert code == 250 and queued_as(again) == first
    cases = daemon.cli("cases", "list", "--json").json()
    assert [c["number"] for c in cases if c["subject"] == "Paging system silent on floor 2"] == [first]


def test_mail_from_a_non_mpoc_is_accepted_and_held(daemon: MailcaseDaemon) -> None:
    mail = customer_mail("Can you reset my voicemail PIN?", sender=LEE)

    code, reply = send(daemon, mail, sender=LEE)

    assert code == 250 and queued_as(reply) == mail["Message-ID"]
    held = daemon.cli("held", "list", "--json").json()
    assert [h["from"] for h in held if h["subject"] == "Can you reset my voicemail PIN?"] == [LEE]


def test_each_message_logs_one_line_with_its_decision(daemon: MailcaseDaemon) -> None:
    mail = customer_mail("Call recording missing")
    number = queued_as(send(daemon, mail)[1])

    lines = wait_until(
        lambda: [line for line in daemon.log().splitlines() if mail["Message-ID"] in line],
        timeout=5, what="the log line",
    )

    assert len(lines) == 1
    assert "channel=smtp" in lines[0] and "decision=open_case" in lines[0]
    assert f"case={number}" in lines[0] and "reason=" in lines[0]


# ---------------------------------------------------------------------------------------------
# Reply codes


@pytest.mark.parametrize("recipient", ["sales@support.example.com", "support@elsewhere.example"])
def test_mail_for_an_address_that_is_not_ours_is_refused_550_5_1_1(daemon: MailcaseDaemon, recipient: str) -> None:
    with daemon.smtp() as client:
        client.ehlo("client.acme.example")
        client.mail(PAT)
        code, reply = client.rcpt(recipient)

    assert code == 550 and reply.startswith(b"5.1.1")


def test_message_larger_than_the_limit_is_refused_552_5_3_4_and_stores_nothing(daemon: MailcaseDaemon) -> None:
    mail = customer_mail("Huge log attached", body="x" * 70 + "\n")
    mail.add_attachment(b"\0" * (MAX_MESSAGE_SIZE + 1024), maintype="application", subtype="octet-stream",
                        filename="trace.pcap")

    with daemon.smtp() as client:
        client.ehlo("client.acme.example")
        assert client.mail(PAT)[0] == 250  # no SIZE= declared: the edge must count the bytes itself
        assert client.rcpt(SUPPORT)[0] == 250
        code, reply = client.data(wire(mail))

    assert code == 552 and reply.startswith(b"5.3.4")
    assert daemon.cli("trace", mail["Message-ID"]).status == 1  # never reached the pipeline


def test_declared_size_above_the_limit_is_refused_552_5_3_4_at_mail_from(daemon: MailcaseDaemon) -> None:
    with daemon.smtp() as client:
        client.ehlo("client.acme.example")
        assert client.has_extn("size") and int(client.esmtp_features["size"]) == MAX_MESSAGE_SIZE
        code, reply = client.mail(PAT, [f"SIZE={MAX_MESSAGE_SIZE + 1}"])

    assert code == 552 and reply.startswith(b"5.3.4")


def test_recipients_beyond_the_cap_get_452_and_the_message_still_reaches_the_others(daemon: MailcaseDaemon) -> None:
    mail = customer_mail("MACD: add two extensions")
    with daemon.smtp() as client:
        client.ehlo("client.acme.example")
        client.mail(PAT)
        codes = [client.rcpt(address)[0] for address in (SUPPORT, MACD, POSTMASTER)]
        code, _reply = client.data(wire(mail))

    assert codes == [250, 250, 452]
    assert code == 250
    trace = daemon.cli("trace", mail["Message-ID"], "--json").json()
    assert trace[0]["envelope_to"] == [SUPPORT, MACD]


# ---------------------------------------------------------------------------------------------
# Delivery by `mailcase tick`, and a graceful stop


def test_tick_delivers_the_acknowledgement_and_sigterm_stops_the_daemon_with_exit_0(tmp_path: Path) -> None:
    with CaptureRelay() as relay, MailcaseDaemon(
        tmp_path, relay=relay, env={"MAILCASE_OUTBOUND__ENABLED": "false"}  # only `tick` delivers here
    ) as daemon:
        daemon.prepare()
        daemon.start()
        mail = customer_mail("Five9 agents cannot log in")
        number = queued_as(send(daemon, mail)[1])
        assert relay.messages == []

        tick = daemon.cli("tick", env={"MAILCASE_OUTBOUND__ENABLED": "true"})

        assert tick.status == 0, tick.stderr
        acks = acknowledgements_to(relay, PAT, mail["Message-ID"])
        assert len(acks) == 1 and f"[Case #{number}]" in acks[0].message["Subject"]
        assert acks[0].message["Auto-Submitted"] == "auto-replied"

        assert daemon.stop() == 0
        assert daemon.log().rstrip().endswith("stopped")
        with pytest.raises(OSError):
            smtplib.SMTP(daemon.host, daemon.port, timeout=2)
