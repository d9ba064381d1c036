"""Issue 13 points 7 and 8 against a real `mailcase serve`: long lines and a NUL in a header.

* A 65,600-byte line in DATA is accepted (250), as Postfix accepts it; before, aiosmtpd's
  reader answered the permanent `500 Line too long` and the customer's report bounced.
* One NUL in a header no longer holds the message as binary: the MPOC's case is opened, the
  acknowledgement reaches the relay, and the NUL is recorded as a parse defect.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.utils import make_msgid

import pytest
import sqlalchemy as sa

from mailcase.store.engine import make_engine
from support.daemon import MailcaseDaemon, wait_until
from support.relay import CaptureRelay

SUPPORT = "support@support.example.com"
PAT = "pat@acme.example"  # an MPOC of Acme in the example directory
QUEUED_AS = re.compile(r"2\.0\.0 Ok: queued as (\d+)")
DELIVERY_WAIT = 20.0


@pytest.fixture(scope="module")
def relay() -> Iterator[CaptureRelay]:
    with CaptureRelay() as running:
        yield running


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, relay: CaptureRelay) -> Iterator[MailcaseDaemon]:
    with MailcaseDaemon(tmp_path_factory.mktemp("edge"), relay=relay, outbox_interval_seconds=1) as running:
        running.prepare()
        running.start()
        yield running


def raw_mail(subject: bytes, body: bytes, message_id: str) -> bytes:
    return (
        b"From: Pat <" + PAT.encode() + b">\r\nTo: " + SUPPORT.encode() + b"\r\n"
        b"Subject: " + subject + b"\r\nMessage-ID: " + message_id.encode() + b"\r\n"
        b"Date: Wed, 25 Nov 2026 16:00:00 -0700\r\n\r\n" + body
    )


def send_raw(daemon: MailcaseDaemon, data: bytes) -> tuple[int, str]:
    client = daemon.smtp()
    try:
        client.ehlo("client.acme.example")
        assert client.mail(PAT) == (250, b"OK")
        assert client.rcpt(SUPPORT)[0] == 250
        code, reply = client.data(data)
        return code, reply.decode()
    finally:
        client.close()


def test_a_65600_byte_line_is_accepted_as_postfix_accepts_it(daemon: MailcaseDaemon) -> None:
    long_line = b"x" * 65_600
    message_id = make_msgid(domain="acme.example")
    code, reply = send_raw(daemon, raw_mail(b"Log dump attached inline", b"see below\r\n" + long_line + b"\r\nend\r\n", message_id))

    assert code == 250, reply
    number = QUEUED_AS.search(reply)
    assert number, reply
    case = daemon.cli("cases", "show", number.group(1), "--json").json()
    assert case["subject"] == "Log dump attached inline"


def test_a_long_command_line_is_still_refused_as_rfc_5321_allows(daemon: MailcaseDaemon) -> None:
    with daemon.smtp() as client:
        client.ehlo("client.acme.example")
        code, _reply = client.docmd("NOOP", "y" * 70_000)
        assert code == 500
        assert client.noop()[0] == 250  # the session goes on


def test_a_nul_in_a_header_opens_the_case_and_records_a_defect(daemon: MailcaseDaemon, relay: CaptureRelay) -> None:
    message_id = make_msgid(domain="acme.example")
    code, reply = send_raw(daemon, raw_mail(b"Router\x00 down in Denver", b"It rebooted twice.\r\n", message_id))

    assert code == 250, reply
    found = QUEUED_AS.search(reply)
    assert found, f"not opened as a case: {reply}"
    case = daemon.cli("cases", "show", found.group(1), "--json").json()
    assert case["subject"] == "Router down in Denver"
    wait_until(
        lambda: [m for m in relay.messages if PAT in m.rcpt_tos and m.message.get("In-Reply-To") == message_id],
        timeout=DELIVERY_WAIT, what="the acknowledgement",
    )
    engine = make_engine(daemon.database_url)
    try:
        with engine.connect() as connection:
            details = connection.execute(
                sa.text("SELECT details FROM message WHERE message_id = :id"), {"id": message_id}
            ).scalar_one()
    finally:
        engine.dispose()
    assert "nul-in-header:1" in str(details)


def test_forged_mail_from_a_stranger_gets_no_notice_and_an_employee_gets_one_without_the_subject(
    daemon: MailcaseDaemon, relay: CaptureRelay
) -> None:
    spam = b"BUY CHEAP PILLS AT http://spam.example"
    victim = "victim@third-party.example"
    forged = raw_mail(spam, b"Visit http://spam.example now\r\n", make_msgid(domain="third-party.example"))
    forged = forged.replace(PAT.encode(), victim.encode())
    employee = "lee@acme.example"  # Acme's domain, but not a designated contact
    asking = raw_mail(b"Please reset my PIN http://spam.example", b"Thanks\r\n", make_msgid(domain="acme.example"))
    asking = asking.replace(PAT.encode(), employee.encode())

    for data in (forged, asking):
        code, reply = send_raw(daemon, data)
        assert code == 250, reply

    notice = wait_until(
        lambda: [m for m in relay.messages if employee in m.rcpt_tos], timeout=DELIVERY_WAIT, what="the employee's notice"
    )[0]
    wait_until(lambda: daemon.cli("outbox", "list", "--json").json()[0]["state"] != "queued", timeout=DELIVERY_WAIT,
               what="the outbox drained")
    assert [m for m in relay.messages if victim in m.rcpt_tos] == []
    assert not any(row["kind"] == "customer.non_mpoc" and victim in row["recipients"]
                   for row in daemon.cli("outbox", "list", "--json").json())
    assert b"spam.example" not in notice.data and b"PIN" not in notice.data
    held = {h["from"] for h in daemon.cli("held", "list", "--json").json()}
    assert {victim, employee} <= held  # both kept for the agents


def test_the_non_mpoc_notice_has_a_global_hourly_cap(tmp_path_factory: pytest.TempPathFactory) -> None:
    with CaptureRelay() as relay, MailcaseDaemon(
        tmp_path_factory.mktemp("cap"), relay=relay, outbox_interval_seconds=1,
        env={"MAILCASE_AUTOREPLY__NON_MPOC_MAX_PER_HOUR": "3"},
    ) as daemon:
        daemon.prepare()
        daemon.start()
        for i in range(6):
            sender = f"employee{i}@acme.example"
            data = raw_mail(b"hello", b"hi\r\n", make_msgid(domain="acme.example")).replace(PAT.encode(), sender.encode())
            assert send_raw(daemon, data)[0] == 250
        rows = [r for r in daemon.cli("outbox", "list", "--json").json() if r["kind"] == "customer.non_mpoc"]
        assert len(rows) == 3
        assert len(daemon.cli("held", "list", "--json").json()) == 6


def nesting_bomb(depth: int = 1000) -> bytes:
    """About 70 KB: multipart/mixed nested `depth` deep (the stdlib parser is quadratic on it)."""
    nested = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(depth))
    head = raw_mail(b"nested", b"", make_msgid(domain="acme.example")).split(b"\r\n\r\n")[0]
    return head + b"\r\nMIME-Version: 1.0\r\n" + nested + b"Content-Type: text/plain\r\n\r\ndeep\r\n"


def test_nested_mime_from_four_clients_does_not_slow_a_legitimate_message(daemon: MailcaseDaemon) -> None:
    import statistics
    import threading
    import time

    bombs_done: list[tuple[int, str]] = []
    stop = threading.Event()

    def bomber() -> None:
        while not stop.is_set():
            data = nesting_bomb().replace(b"Message-ID: <", b"Message-ID: <%d." % time.monotonic_ns(), 1)
            bombs_done.append(send_raw(daemon, data))

    threads = [threading.Thread(target=bomber) for _ in range(4)]
    for thread in threads:
        thread.start()
    timings = []
    try:
        wait_until(lambda: len(bombs_done) >= 4, timeout=30, what="the bombs under way")
        for i in range(5):
            started = time.monotonic()
            code, reply = send_raw(daemon, raw_mail(b"Phones down %d" % i, b"All phones down.\r\n", make_msgid(domain="acme.example")))
            timings.append(time.monotonic() - started)
            assert code == 250, reply
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert bombs_done and all(code == 250 for code, _ in bombs_done)
    held = daemon.cli("held", "list", "--json").json()
    assert any("MIME nesting deeper than 50 levels" in h["reason"] for h in held)
    median = statistics.median(timings)
    print(f"\nlegitimate message time to 250 under 4 nesting-bomb clients: median {median:.3f} s, max {max(timings):.3f} s; {len(bombs_done)} bombs held")
    assert median < 1.0, timings
