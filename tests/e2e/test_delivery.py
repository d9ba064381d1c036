"""SmtpTransport against a real SMTP relay (aiosmtpd on loopback): reuse, reconnects, reply classes, TLS, AUTH."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailcase.config import OutboundSettings
from mailcase.notify.compose import OutgoingMail, compose
from mailcase.notify.render import Rendered
from mailcase.notify.transport import SendOutcome, SendResult, SmtpTransport
from support.relay import CaptureRelay, free_port

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")

SENDER = "support@support.example.com"
NOW = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)


def _message(n: int, to: str = "pat@acme.example") -> bytes:
    return compose(
        OutgoingMail(message_id=f"<mc.test{n}@mailcase.localhost>", recipients=(to,), date=NOW),
        Rendered(subject=f"[Case #{n:08d}] Test", text=f"Message {n}\n", html=f"<p>Message {n}</p>"),
        from_address=SENDER,
        from_name="Support",
        support_address=SENDER,
        secret=b"secret",
    )


def _batch(count: int, to: str = "pat@acme.example") -> list[tuple[bytes, str, list[str]]]:
    return [(_message(n, to), SENDER, [to]) for n in range(1, count + 1)]


@pytest.fixture(params=[False, True], ids=["one command at a time", "pipelining"])
def relay(request: pytest.FixtureRequest) -> Iterator[CaptureRelay]:
    """The relay, once without and once with PIPELINING (RFC 2920), which production relays offer
    and the transport then uses: every behaviour below holds either way."""
    with CaptureRelay(pipelining=request.param) as running:
        yield running


def test_a_batch_goes_over_one_connection(relay: CaptureRelay) -> None:
    results = SmtpTransport(relay.outbound_settings(), local_hostname="mailcase.test").send(_batch(3))
    assert [r.outcome for r in results] == [SendOutcome.SENT] * 3
    assert [m.message["Message-ID"] for m in relay.messages] == [
        "<mc.test1@mailcase.localhost>",
        "<mc.test2@mailcase.localhost>",
        "<mc.test3@mailcase.localhost>",
    ]
    assert relay.messages[0].mail_from == SENDER
    assert relay.messages[0].rcpt_tos == ("pat@acme.example",)
    assert relay.connections == 1


def test_a_kept_open_connection_carries_the_next_batch_and_closes_on_request(relay: CaptureRelay) -> None:
    transport = SmtpTransport(relay.outbound_settings())
    transport.keep_open = True
    first = transport.send(_batch(2))
    assert transport.connected
    second = transport.send(_batch(2))
    transport.close()

    assert [r.outcome for r in first + second] == [SendOutcome.SENT] * 4
    assert len(relay.messages) == 4
    assert relay.connections == 1
    assert not transport.connected


def test_a_kept_open_connection_the_relay_dropped_is_replaced_without_losing_the_message(relay: CaptureRelay) -> None:
    transport = SmtpTransport(relay.outbound_settings())
    transport.keep_open = True
    relay.drop_after(1)  # the relay hangs up after this message, while our connection idles
    transport.send(_batch(1))
    (result,) = transport.send(_batch(1))
    transport.close()

    assert result.outcome is SendOutcome.SENT
    assert len(relay.messages) == 2
    assert relay.connections == 2


def test_each_result_is_reported_as_soon_as_known(relay: CaptureRelay) -> None:
    seen: list[tuple[int, SendOutcome, int]] = []

    def on_result(index: int, result: SendResult) -> None:
        seen.append((index, result.outcome, len(relay.messages)))

    SmtpTransport(relay.outbound_settings()).send(_batch(3), on_result=on_result)
    # When message i is reported, exactly i+1 messages have reached the relay: nothing later.
    assert seen == [(0, SendOutcome.SENT, 1), (1, SendOutcome.SENT, 2), (2, SendOutcome.SENT, 3)]


def test_relay_dropping_the_connection_mid_batch_is_reconnected(relay: CaptureRelay) -> None:
    relay.drop_after(1)
    results = SmtpTransport(relay.outbound_settings()).send(_batch(3))
    assert [r.outcome for r in results] == [SendOutcome.SENT] * 3
    ids = [m.message["Message-ID"] for m in relay.messages]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 3
    assert relay.connections == 2


def test_a_4xx_reply_is_temporary(relay: CaptureRelay) -> None:
    relay.fail_next(1, "451 4.3.0 Mailbox busy, try later")
    first, second = SmtpTransport(relay.outbound_settings()).send(_batch(2))
    assert first == SendResult(SendOutcome.TEMPORARY, 451, "4.3.0 Mailbox busy, try later")
    assert second.outcome is SendOutcome.SENT
    assert [m.message["Message-ID"] for m in relay.messages] == ["<mc.test2@mailcase.localhost>"]


def test_a_5xx_reply_is_permanent_with_the_servers_reply(relay: CaptureRelay) -> None:
    relay.fail_next(1, "554 5.7.1 Message rejected as spam")
    (result,) = SmtpTransport(relay.outbound_settings()).send(_batch(1))
    assert result.outcome is SendOutcome.PERMANENT
    assert result.code == 554
    assert result.describe() == "554 5.7.1 Message rejected as spam"
    assert relay.messages == []


def test_a_refused_only_recipient_fails_the_message_permanently(relay: CaptureRelay) -> None:
    relay.fail_recipient("gone@acme.example", "550 5.1.1 No such user")
    (result,) = SmtpTransport(relay.outbound_settings()).send(_batch(1, to="gone@acme.example"))
    assert result.outcome is SendOutcome.PERMANENT
    assert result.refused == (("gone@acme.example", 550, "5.1.1 No such user"),)
    assert "gone@acme.example: 550 5.1.1 No such user" in result.describe()


def test_a_refused_sender_fails_the_message_and_the_next_one_goes_over_the_same_connection(
    relay: CaptureRelay,
) -> None:
    relay.fail_sender(1, "553 5.7.1 Sender address rejected")
    first, second = SmtpTransport(relay.outbound_settings()).send(_batch(2))
    assert first == SendResult(SendOutcome.PERMANENT, 553, "5.7.1 Sender address rejected")
    assert second.outcome is SendOutcome.SENT
    assert [m.message["Message-ID"] for m in relay.messages] == ["<mc.test2@mailcase.localhost>"]
    assert relay.connections == 1


def test_after_a_refused_recipient_the_next_message_goes_over_the_same_connection(relay: CaptureRelay) -> None:
    relay.fail_recipient("gone@acme.example", "550 5.1.1 No such user")
    transport = SmtpTransport(relay.outbound_settings())
    first, second = transport.send([_batch(1, to="gone@acme.example")[0], _batch(2)[1]])
    assert first.outcome is SendOutcome.PERMANENT
    assert second.outcome is SendOutcome.SENT
    assert [m.rcpt_tos for m in relay.messages] == [("pat@acme.example",)]
    assert relay.connections == 1


def test_a_temporarily_refused_recipient_is_retried_later(relay: CaptureRelay) -> None:
    relay.fail_recipient("full@acme.example", "452 4.2.2 Mailbox full")
    (result,) = SmtpTransport(relay.outbound_settings()).send(_batch(1, to="full@acme.example"))
    assert result.outcome is SendOutcome.TEMPORARY


def test_one_refused_recipient_among_several_still_delivers_to_the_others(relay: CaptureRelay) -> None:
    relay.fail_recipient("gone@acme.example")
    message = _message(1)
    (result,) = SmtpTransport(relay.outbound_settings()).send(
        [(message, SENDER, ["pat@acme.example", "gone@acme.example"])]
    )
    assert result.outcome is SendOutcome.SENT
    assert result.refused == (("gone@acme.example", 550, "5.1.1 No such user"),)
    assert relay.messages[0].rcpt_tos == ("pat@acme.example",)


def test_an_unreachable_relay_makes_every_message_temporary() -> None:
    settings = OutboundSettings(host="127.0.0.1", port=free_port(), timeout_seconds=2)
    results = SmtpTransport(settings).send(_batch(3))
    assert [r.outcome for r in results] == [SendOutcome.TEMPORARY] * 3
    assert all(r.reply.startswith("cannot connect") for r in results)


def test_auth_is_used_when_configured() -> None:
    with CaptureRelay(auth=("mailcase", "s3cret")) as relay:
        (result,) = SmtpTransport(relay.outbound_settings()).send(_batch(1))
        assert result.outcome is SendOutcome.SENT
        assert relay.messages[0].authenticated_as == "mailcase"


def test_wrong_auth_keeps_mail_queued_rather_than_failing_it() -> None:
    with CaptureRelay(auth=("mailcase", "s3cret")) as relay:
        results = SmtpTransport(relay.outbound_settings(password="wrong")).send(_batch(2))
        assert [r.outcome for r in results] == [SendOutcome.TEMPORARY] * 2
        assert results[0].code == 535
        assert relay.messages == []


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def _contexts(certificate: tuple[Path, Path]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    cert, key = certificate
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


def test_starttls_then_auth(certificate: tuple[Path, Path]) -> None:
    server, client = _contexts(certificate)
    with CaptureRelay(auth=("mailcase", "s3cret"), tls_context=server) as relay:
        transport = SmtpTransport(relay.outbound_settings(starttls=True), ssl_context=client)
        (result,) = transport.send(_batch(1))
        assert result.outcome is SendOutcome.SENT
        assert relay.messages[0].authenticated_as == "mailcase"


def test_implicit_tls(certificate: tuple[Path, Path]) -> None:
    server, client = _contexts(certificate)
    with CaptureRelay(tls_context=server, implicit_tls=True) as relay:
        transport = SmtpTransport(relay.outbound_settings(tls=True), ssl_context=client)
        (result,) = transport.send(_batch(1))
        assert result.outcome is SendOutcome.SENT


def test_an_untrusted_certificate_is_refused_not_ignored(certificate: tuple[Path, Path]) -> None:
    server, _client = _contexts(certificate)
    with CaptureRelay(tls_context=server) as relay:
        (result,) = SmtpTransport(relay.outbound_settings(starttls=True)).send(_batch(1))
        assert result.outcome is SendOutcome.TEMPORARY
        assert relay.messages == []


class _Grants:
    """A token source that counts what it hands out (the real one is tested in test_imap_oauth)."""

    def __init__(self) -> None:
        self.issued: list[str] = []
        self.rejected: list[str] = []

    def access_token(self, name: str, *, rejected: str = "") -> str:
        assert name == "mail"
        if rejected:
            self.rejected.append(rejected)
        self.issued.append(f"token-{len(self.issued) + 1}")
        return self.issued[-1]


def test_oauth2_sends_xoauth2_after_starttls_and_retries_once_with_a_fresh_token(
    certificate: tuple[Path, Path],
) -> None:
    server, client = _contexts(certificate)
    accepted = {"token-2"}  # the first token was revoked behind our back
    with CaptureRelay(tls_context=server, bearer=lambda user, token: user == SENDER and token in accepted) as relay:
        grants = _Grants()
        settings = relay.outbound_settings(starttls=True, auth="oauth2", oauth="mail", user=SENDER)
        transport = SmtpTransport(settings, ssl_context=client, tokens=grants)

        (result,) = transport.send(_batch(1))

        assert result.outcome is SendOutcome.SENT
        assert relay.messages[0].authenticated_as == SENDER
        assert grants.rejected == ["token-1"]
        health = transport.health.get("outbound")
        assert health is not None and health.state == "green"


def test_oauth2_refused_twice_keeps_the_mail_queued_and_marks_outbound_red(
    certificate: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    server, client = _contexts(certificate)
    with CaptureRelay(tls_context=server, bearer=lambda user, token: False) as relay:
        settings = relay.outbound_settings(starttls=True, auth="oauth2", oauth="mail", user=SENDER)
        transport = SmtpTransport(settings, ssl_context=client, tokens=_Grants())

        results = transport.send(_batch(2))
        transport.send(_batch(1))

        assert [r.outcome for r in results] == [SendOutcome.TEMPORARY] * 2
        assert results[0].code == 535
        assert relay.messages == []
        health = transport.health.get("outbound")
        assert health is not None and health.state == "red"
        assert len([r for r in caplog.records if "cannot sign in" in r.getMessage()]) == 1
        assert all("token-" not in r.getMessage() for r in caplog.records)


def test_oauth2_never_sends_a_token_without_tls() -> None:
    with CaptureRelay(bearer=lambda user, token: True) as relay:
        grants = _Grants()
        settings = relay.outbound_settings(auth="oauth2", oauth="mail", user=SENDER)
        (result,) = SmtpTransport(settings, tokens=grants).send(_batch(1))
        assert result.outcome is SendOutcome.TEMPORARY
        assert grants.issued == []
        assert relay.messages == []
