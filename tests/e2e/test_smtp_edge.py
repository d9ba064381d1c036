"""The SMTP edge over a real socket: a real aiosmtpd listener on 127.0.0.1 and smtplib as the sender.

Until the shared pipeline exists, the `ingest` fixture is a recording fake that follows the
`Ingest` protocol; swap the fixture for the real pipeline to run the same conversations end to
end. Tests that steer the fake (`fail_next`, `gate`, `outcome`) keep needing it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import smtplib
import socket
import ssl
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mailcase.clock import FixedClock
from mailcase.config import Settings, SmtpSettings
from mailcase.domain import Channel, RawMessage
from mailcase.errors import TransientError
from mailcase.ingest.smtp import (
    DECISION_REJECTED,
    Ingest,
    SupportHandler,
    start_smtp_server,
    stop_smtp_server,
)

T = TypeVar("T")

SENDER = "pat@acme.example"
SUPPORT = "support@support.example.com"
MAX_MESSAGE_SIZE = 64 * 1024
MAX_RECIPIENTS = 3
WAIT = 10.0  # seconds: an upper bound for things that should take milliseconds, never a sleep


# ---------------------------------------------------------------------------------------------
# A fake pipeline


@dataclass(frozen=True, slots=True)
class Outcome:
    decision: str = "open_case"
    reason: str = "new case from an MPOC"
    case_number: str | None = "00001042"
    message_id: str = "<m1@acme.example>"


class RecordingIngest(Ingest):
    """Records every message it "commits"; can be told to fail once or to wait for a gate."""

    def __init__(self) -> None:
        self.received: list[RawMessage] = []
        self.events: list[str] = []
        self.outcome: Outcome = Outcome()
        self.started = threading.Event()
        self.gate: threading.Event | None = None
        self._failures: deque[Exception] = deque()
        self._lock = threading.Lock()

    def fail_next(self, error: Exception) -> None:
        self._failures.append(error)

    def __call__(self, raw: RawMessage, /) -> Outcome:
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(WAIT), "the test never opened the gate"
        with self._lock:
            if self._failures:
                raise self._failures.popleft()
            self.received.append(raw)
            self.events.append("ingest returned")
        return self.outcome


# ---------------------------------------------------------------------------------------------
# A listener in its own event-loop thread


@dataclass
class RunningServer:
    host: str
    port: int
    handler: SupportHandler
    server: asyncio.Server
    loop: asyncio.AbstractEventLoop

    def call(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def stop(self, grace_seconds: float = WAIT) -> Future[bool]:
        return self.call(stop_smtp_server(self.server, self.handler, grace_seconds=grace_seconds))

    def client(self) -> smtplib.SMTP:
        return smtplib.SMTP(self.host, self.port, local_hostname="client.acme.example", timeout=WAIT)


@contextmanager
def running_server(
    settings: SmtpSettings, ingest: Ingest, clock: FixedClock
) -> Iterator[RunningServer]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="smtp-test-loop", daemon=True)
    thread.start()
    executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="smtp-test-ingest")
    handler = SupportHandler(settings, ingest, clock, executor)
    server = asyncio.run_coroutine_threadsafe(start_smtp_server(settings, handler), loop).result(WAIT)
    host, port = server.sockets[0].getsockname()[:2]
    running = RunningServer(host, port, handler, server, loop)
    try:
        yield running
    finally:
        if isinstance(ingest, RecordingIngest) and ingest.gate is not None:
            ingest.gate.set()
        if server.is_serving():
            running.stop(grace_seconds=1.0).result(WAIT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(WAIT)
        loop.close()
        executor.shutdown(wait=True)


@pytest.fixture
def ingest() -> RecordingIngest:
    return RecordingIngest()


@pytest.fixture
def smtp_settings(settings: Settings) -> SmtpSettings:
    return dataclasses.replace(
        settings.smtp,
        host="127.0.0.1",
        port=0,
        max_message_size=MAX_MESSAGE_SIZE,
        max_recipients=MAX_RECIPIENTS,
    )


@pytest.fixture
def smtp_server(
    smtp_settings: SmtpSettings, ingest: Ingest, clock: FixedClock
) -> Iterator[RunningServer]:
    with running_server(smtp_settings, ingest, clock) as running:
        yield running


def message(subject: str = "Teams calls drop", body: str = "Calls drop after 30 s.\n") -> bytes:
    mail = EmailMessage()
    mail["From"] = f"Pat Doe <{SENDER}>"
    mail["To"] = SUPPORT
    mail["Subject"] = subject
    mail["Message-ID"] = "<m1@acme.example>"
    mail.set_content(body)
    return mail.as_bytes().replace(b"\n", b"\r\n")


def send(
    running: RunningServer, data: bytes, *, sender: str = SENDER, recipients: tuple[str, ...] = (SUPPORT,)
) -> tuple[int, bytes]:
    """One whole transaction; returns the final DATA reply (what decides the sender's next move)."""
    client = running.client()
    try:
        client.ehlo()
        code, reply = client.mail(sender)
        assert code == 250, reply
        for recipient in recipients:
            code, reply = client.rcpt(recipient)
            assert code == 250, reply
        return client.data(data)
    finally:
        try:
            client.quit()  # a stopping server may answer 421 instead of 221: the message is in
        except smtplib.SMTPServerDisconnected:
            client.close()


def in_thread(function: Callable[[], T]) -> tuple[threading.Thread, list[T | BaseException]]:
    result: list[T | BaseException] = []

    def run() -> None:
        try:
            result.append(function())
        except BaseException as exc:  # the test inspects it
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


# ---------------------------------------------------------------------------------------------
# Greeting and capabilities


def test_greeting_names_the_configured_host(smtp_server: RunningServer) -> None:
    with smtp_server.client() as client:
        code, features = client.ehlo()
    assert code == 250
    assert features.splitlines()[0] == b"mailcase.localhost"


def test_size_is_advertised_and_auth_is_not(smtp_server: RunningServer) -> None:
    with smtp_server.client() as client:
        client.ehlo()
        assert client.esmtp_features["size"] == str(MAX_MESSAGE_SIZE)
        assert "auth" not in client.esmtp_features
        assert "starttls" not in client.esmtp_features


# ---------------------------------------------------------------------------------------------
# 250: only after the pipeline returned


def test_message_is_answered_250_only_after_ingest_returned(
    smtp_server: RunningServer, ingest: RecordingIngest, clock: FixedClock
) -> None:
    # Only the outcome the pipeline returns knows this number, so a reply naming it was
    # necessarily written after the pipeline returned (i.e. after the commit).
    ingest.outcome = Outcome(case_number="00004711")
    ingest.gate = threading.Event()
    data = message()

    def deliver() -> tuple[int, bytes]:
        reply = send(smtp_server, data)
        ingest.events.append("client got reply")
        return reply

    thread, result = in_thread(deliver)
    assert ingest.started.wait(WAIT)
    assert result == []  # the pipeline is still "committing": the client is still waiting
    ingest.gate.set()
    thread.join(WAIT)

    assert result == [(250, b"2.0.0 Ok: queued as 00004711")]
    assert ingest.events == ["ingest returned", "client got reply"]
    [raw] = ingest.received
    assert raw.data == data
    assert raw.channel is Channel.SMTP
    assert raw.received_at == clock.now()
    assert raw.envelope_from == SENDER
    assert raw.envelope_to == (SUPPORT,)


def test_held_message_is_queued_under_its_message_id(
    smtp_server: RunningServer, ingest: RecordingIngest
) -> None:
    ingest.outcome = Outcome(decision="hold", reason="sender is not an MPOC", case_number=None)

    assert send(smtp_server, message()) == (250, b"2.0.0 Ok: queued as <m1@acme.example>")


def test_outcome_rejected_permanently_is_answered_554(
    smtp_server: RunningServer, ingest: RecordingIngest
) -> None:
    ingest.outcome = Outcome(decision=DECISION_REJECTED, reason="virus found", case_number=None)

    code, reply = send(smtp_server, message())

    assert (code, reply) == (554, b"5.6.0 Message rejected: virus found")


def test_null_sender_is_accepted_so_bounces_reach_us(
    smtp_server: RunningServer, ingest: RecordingIngest
) -> None:
    code, _reply = send(smtp_server, message(subject="Undelivered Mail Returned to Sender"), sender="")

    assert code == 250
    assert ingest.received[0].envelope_from == ""


def test_long_lines_from_broken_gateways_are_kept_whole(
    smtp_server: RunningServer, ingest: RecordingIngest
) -> None:
    data = message().rstrip(b"\r\n") + b"\r\n" + b"x" * 5000 + b"\r\n"

    code, _reply = send(smtp_server, data)

    assert code == 250
    assert ingest.received[0].data == data


# ---------------------------------------------------------------------------------------------
# Recipients


@pytest.mark.parametrize(
    "recipient",
    [
        "support@support.example.com",
        "SUPPORT@Support.Example.COM",
        "support+c1042-abcdefgh23456789@support.example.com",
        "Support+anything@SUPPORT.example.com",
        "macd@support.example.com",
        "macd+expedite@support.example.com",
        "postmaster@support.example.com",
        "PostMaster@support.example.com",
        "Postmaster",
    ],
)
def test_our_addresses_are_accepted(smtp_server: RunningServer, recipient: str) -> None:
    with smtp_server.client() as client:
        client.ehlo()
        client.mail(SENDER)
        assert client.rcpt(recipient) == (250, b"2.1.5 Ok")


@pytest.mark.parametrize(
    "recipient",
    [
        "sales@support.example.com",
        "supportx@support.example.com",
        "postmaster+x@support.example.com",
        "support@elsewhere.example",
        "support@example.com",
        "someone",
    ],
)
def test_other_recipients_are_refused_550_5_1_1(smtp_server: RunningServer, recipient: str) -> None:
    with smtp_server.client() as client:
        client.ehlo()
        client.mail(SENDER)
        code, reply = client.rcpt(recipient)

    assert code == 550
    assert reply == f"5.1.1 <{recipient}>: recipient not accepted here".encode()


def test_reply_tokens_on_the_support_address_own_domain_are_accepted(
    smtp_settings: SmtpSettings, ingest: RecordingIngest, clock: FixedClock
) -> None:
    settings = dataclasses.replace(smtp_settings, support_address="help@desk.example.net")

    with running_server(settings, ingest, clock) as running, running.client() as client:
        client.ehlo()
        client.mail(SENDER)
        assert client.rcpt("help+c42-abcdefgh23456789@desk.example.net")[0] == 250
        assert client.rcpt("help@support.example.com")[0] == 250
        assert client.rcpt("macd@desk.example.net")[0] == 550
        assert client.rcpt("support@support.example.com")[0] == 550


def test_reply_token_recipient_reaches_the_pipeline_as_written(
    smtp_server: RunningServer, ingest: RecordingIngest
) -> None:
    token_address = "support+c1042-abcdefgh23456789@support.example.com"

    code, _reply = send(smtp_server, message(), recipients=(token_address, "macd@support.example.com"))

    assert code == 250
    assert ingest.received[0].envelope_to == (token_address, "macd@support.example.com")


def test_too_many_recipients_get_452_and_the_rest_are_delivered(
    smtp_server: RunningServer, ingest: RecordingIngest
) -> None:
    accepted = ["support@support.example.com", "macd@support.example.com", "postmaster@support.example.com"]
    with smtp_server.client() as client:
        client.ehlo()
        client.mail(SENDER)
        for recipient in accepted:
            assert client.rcpt(recipient)[0] == 250
        assert client.rcpt("support+c7-abc@support.example.com") == (452, b"4.5.3 Too many recipients")
        code, _reply = client.data(message())

    assert code == 250
    assert ingest.received[0].envelope_to == tuple(accepted)


# ---------------------------------------------------------------------------------------------
# Size


def test_oversized_message_is_refused_552_5_3_4_and_never_ingested(
    smtp_server: RunningServer, ingest: RecordingIngest
) -> None:
    data = message(body="a line of a large attachment\n" * (MAX_MESSAGE_SIZE // 25))

    code, reply = send(smtp_server, data)

    assert code == 552
    assert reply.startswith(b"5.3.4 ")
    assert ingest.received == []


def test_declared_size_above_the_limit_is_refused_at_mail_from(smtp_server: RunningServer) -> None:
    with smtp_server.client() as client:
        client.ehlo()
        code, reply = client.mail(SENDER, options=[f"SIZE={MAX_MESSAGE_SIZE + 1}"])
        assert (code, reply) == (552, b"5.3.4 Message size exceeds fixed maximum message size")
        assert client.mail(SENDER, options=[f"SIZE={MAX_MESSAGE_SIZE}"])[0] == 250


# ---------------------------------------------------------------------------------------------
# Failures: 451 keeps the message at the sender


def test_transient_failure_is_answered_451_and_the_retry_is_queued(
    smtp_server: RunningServer, ingest: RecordingIngest
) -> None:
    ingest.fail_next(TransientError("database is locked"))
    data = message()

    assert send(smtp_server, data) == (451, b"4.3.0 Temporary failure, please retry")
    assert ingest.received == []

    assert send(smtp_server, data) == (250, b"2.0.0 Ok: queued as 00001042")
    assert [raw.data for raw in ingest.received] == [data]


def test_unexpected_error_is_answered_451_and_logged_with_traceback(
    smtp_server: RunningServer, ingest: RecordingIngest, caplog: pytest.LogCaptureFixture
) -> None:
    ingest.fail_next(RuntimeError("bug in the pipeline"))

    with caplog.at_level(logging.INFO, logger="mailcase.ingest.smtp"):
        reply = send(smtp_server, message())

    assert reply == (451, b"4.3.0 Temporary failure, please retry")
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert error.exc_info is not None and isinstance(error.exc_info[1], RuntimeError)


def test_each_message_logs_one_decision_line(
    smtp_server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):  # as verbose as an operator could make it
        send(smtp_server, message(), recipients=("support+c1042-secrettoken@support.example.com",))

    [line] = [r.getMessage() for r in caplog.records if "decision=" in r.getMessage()]
    assert "message_id=<m1@acme.example>" in line
    assert "channel=smtp" in line and "decision=open_case" in line and "case=00001042" in line
    assert "secrettoken" not in caplog.text  # reply tokens never reach the logs


# ---------------------------------------------------------------------------------------------
# STARTTLS


def test_starttls_is_offered_when_a_certificate_is_configured(
    smtp_settings: SmtpSettings, ingest: RecordingIngest, clock: FixedClock, tmp_path: Path
) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=mailcase.localhost"],
        check=True, capture_output=True, timeout=WAIT,
    )
    settings = dataclasses.replace(smtp_settings, tls_cert_file=str(cert), tls_key_file=str(key))
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False  # the throwaway certificate names mailcase.localhost

    with running_server(settings, ingest, clock) as running, running.client() as client:
        client.ehlo()
        assert "starttls" in client.esmtp_features
        assert client.starttls(context=context)[0] == 220
        client.ehlo()
        assert "starttls" not in client.esmtp_features
        assert "auth" not in client.esmtp_features
        client.mail(SENDER)
        client.rcpt(SUPPORT)
        code, _reply = client.data(message())

    assert code == 250
    assert len(ingest.received) == 1


# ---------------------------------------------------------------------------------------------
# Graceful stop


def test_stop_waits_for_the_message_being_committed_then_refuses_connections(
    smtp_server: RunningServer, ingest: RecordingIngest
) -> None:
    ingest.gate = threading.Event()
    thread, result = in_thread(lambda: send(smtp_server, message()))
    assert ingest.started.wait(WAIT)

    stopping = smtp_server.stop()
    # Runs after the stop's first step (the loop runs them in order): the port is closed by now.
    serving = smtp_server.call(_is_serving(smtp_server.server)).result(WAIT)
    assert serving is False
    assert not stopping.done()  # still waiting for the message in flight

    ingest.gate.set()
    assert stopping.result(WAIT) is True
    thread.join(WAIT)
    assert result == [(250, b"2.0.0 Ok: queued as 00001042")]
    assert len(ingest.received) == 1
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((smtp_server.host, smtp_server.port), timeout=WAIT).close()


def test_message_is_kept_and_logged_when_the_client_hangs_up_during_the_commit(
    smtp_server: RunningServer, ingest: RecordingIngest, caplog: pytest.LogCaptureFixture
) -> None:
    ingest.gate = threading.Event()
    client = smtp_server.client()
    client.ehlo()
    client.mail(SENDER)
    client.rcpt(SUPPORT)
    assert client.docmd("DATA")[0] == 354
    client.send(message() + b".\r\n")
    assert ingest.started.wait(WAIT)
    client.close()
    smtp_server.call(_until(lambda: smtp_server.handler.open_connections == 0)).result(WAIT)

    with caplog.at_level(logging.DEBUG, logger="mailcase.ingest.smtp"):
        stopping = smtp_server.stop()
        assert smtp_server.call(_is_serving(smtp_server.server)).result(WAIT) is False
        assert not stopping.done()  # the commit nobody waits for any more is still waited for
        ingest.gate.set()
        assert stopping.result(WAIT) is True

    assert len(ingest.received) == 1
    assert any("decision=open_case" in r.getMessage() for r in caplog.records)


def test_stop_tells_idle_clients_421(smtp_server: RunningServer) -> None:
    with smtp_server.client() as client:
        client.ehlo()
        assert smtp_server.stop().result(WAIT) is True
        assert client.getreply() == (421, b"4.3.2 Service shutting down, please retry later")


async def _is_serving(server: asyncio.Server) -> bool:
    return server.is_serving()


async def _until(condition: Callable[[], bool]) -> None:
    """Wait, inside the server's loop, for a condition the loop itself makes true."""
    while not condition():
        await asyncio.sleep(0.001)


# ---------------------------------------------------------------------------------------------
# Group commit


class GroupRecordingIngest(RecordingIngest):
    """A pipeline that commits groups (`ingest_group`): records each group's size; a message whose
    subject says BREAK fails alone, as one rolled back to its savepoint does."""

    def __init__(self) -> None:
        super().__init__()
        self.groups: list[int] = []

    def ingest_group(self, raws: list[RawMessage], /) -> list[Outcome | Exception]:
        self.groups.append(len(raws))
        results: list[Outcome | Exception] = []
        for raw in raws:
            if b"BREAK" in raw.data:
                results.append(RuntimeError("this message failed inside its savepoint"))
            else:
                results.append(self(raw))
        return results


def test_messages_waiting_for_the_pipeline_share_one_commit_and_each_gets_its_own_reply(
    smtp_settings: SmtpSettings, clock: FixedClock
) -> None:
    ingest = GroupRecordingIngest()
    ingest.gate = threading.Event()
    with running_server(smtp_settings, ingest, clock) as running:
        # Both pipeline threads are busy with one message each (held at the gate) ...
        busy = [in_thread(lambda n=n: send(running, message(f"Trunk {n} is down"))) for n in (1, 2)]
        running.call(_until(lambda: len(ingest.groups) == 2)).result(WAIT)
        # ... so the next three wait, and go to the next free thread together.
        waiting = [
            in_thread(lambda subject=subject: send(running, message(subject)))
            for subject in ("Trunk 3 is down", "BREAK: trunk 4", "Trunk 5 is down")
        ]
        running.call(_until(lambda: running.handler.waiting_for_pipeline == 3)).result(WAIT)
        ingest.gate.set()
        replies = []
        for thread, result in [*busy, *waiting]:
            thread.join(WAIT)
            (reply,) = result
            assert not isinstance(reply, BaseException), reply
            replies.append(reply[0])

    assert sorted(ingest.groups) == [1, 1, 3]
    # The failing message gets 451 (its sender retries); its neighbours in the group get their 250.
    assert replies == [250, 250, 250, 451, 250]
    assert [raw.data.count(b"Trunk") for raw in ingest.received] == [1, 1, 1, 1]
