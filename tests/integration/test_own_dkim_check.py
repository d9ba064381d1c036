"""Our own DKIM/DMARC check inside the pipeline (a stub resolver, test keys), on SQLite and PostgreSQL: what is stored, deferred, held and released."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import dkim
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from mailcase.domain import CaseKind
from mailcase.errors import TransientError
from mailcase.ingest.authentication import DnsTemporaryError
from mailcase.ingest.pipeline import Pipeline
from mailcase.rules.authentication import PublicSuffixes
from mailcase.store.engine import transaction
from mailcase.store.models import Case, HeldMessage
from mailcase.trace import trace_message
from support.threads import ThreadDesk, fresh_message_id, sample_settings

KEYS = Path(__file__).resolve().parent.parent / "fixtures" / "dkim"
NOW = datetime(2026, 12, 1, 17, 0, tzinfo=UTC)  # a Tuesday, 10:00 at the desk
SUFFIXES = PublicSuffixes.from_text("example\n")


class StubResolver:
    def __init__(self, *, timeout: bool = False) -> None:
        self.timeout = timeout
        self.records = {
            "sel._domainkey.acme.example": [f"v=DKIM1; k=rsa; p={(KEYS / 'acme.pub').read_text().strip()}"],
            "_dmarc.acme.example": ["v=DMARC1; p=reject"],
        }

    def txt(self, name: str) -> list[str] | None:
        if self.timeout:
            raise DnsTemporaryError(f"timeout for {name}")
        return self.records.get(name)


def macd(*, key: str = "acme.key", message_id: str | None = None) -> tuple[bytes, str]:
    message_id = message_id or fresh_message_id("acme.example")
    body = (
        "From: Pat Doe <pat@acme.example>\r\nTo: support@support.example.com\r\n"
        f"Subject: MACD: add 40 Teams licences\r\nMessage-ID: {message_id}\r\n"
        "Date: Tue, 01 Dec 2026 10:00:00 -0700\r\n\r\nPlease add 40 licences to our tenant.\r\n"
    ).encode()
    signature = dkim.sign(body, b"sel", b"acme.example", (KEYS / key).read_bytes(),
                          include_headers=[b"from", b"to", b"subject", b"message-id"])
    return signature + body, message_id


def desk_with(engine: Engine, policy: str, resolver: StubResolver) -> ThreadDesk:
    base = sample_settings()
    settings = dataclasses.replace(
        base, security=dataclasses.replace(base.security, sender_policy=policy, verify="dkim")
    )
    desk = ThreadDesk.start(engine, NOW, settings=settings)
    app = desk.app
    desk.pipeline = Pipeline(
        engine=app.engine, settings=app.settings, desk=app.desk(), secret=app.secret, calendar=app.calendar,
        resolver=resolver, suffixes=SUFFIXES,
    )
    return desk


def traced(desk: ThreadDesk, message_id: str) -> list[dict[str, object]]:
    with transaction(desk.engine) as session:
        return trace_message(session, message_id)


def test_a_signed_macd_request_passes_and_opens_in_enforce_with_the_verdict_stored(engine: Engine) -> None:
    desk = desk_with(engine, "enforce", StubResolver())
    data, message_id = macd()

    outcome = desk.ingest_bytes(data)

    assert outcome.decision == "open_case", outcome
    assert desk.case(int(outcome.case_number or 0)).kind is CaseKind.MACD_STANDARD
    (record,) = traced(desk, message_id)
    verdict = record["sender_verdict"]
    assert isinstance(verdict, dict) and (verdict["source"], verdict["dmarc"], verdict["dmarc_policy"]) == ("dkim", "pass", "reject")


def test_a_signature_by_another_key_is_held_in_enforce_and_released_by_an_agent(engine: Engine) -> None:
    desk = desk_with(engine, "enforce", StubResolver())
    data, _message_id = macd(key="other.key")

    outcome = desk.ingest_bytes(data)

    assert outcome.decision == "hold_message"
    assert outcome.reason.startswith("sender not authenticated (dmarc=fail, p=reject, d=acme.example)")
    with transaction(desk.engine) as session:
        assert session.exec(select(Case)).all() == []
        held = session.get(HeldMessage, outcome.held_id)
        assert held is not None
        released = desk.pipeline.release_held(session, held, now=NOW, by="agent")
    assert released.decision == "open_case"  # the agent vouches for the sender


def test_a_dns_timeout_in_enforce_defers_the_message_and_stores_nothing(engine: Engine) -> None:
    desk = desk_with(engine, "enforce", StubResolver(timeout=True))
    data, message_id = macd()

    with pytest.raises(TransientError, match="sender authentication needs DNS"):
        desk.ingest_bytes(data)

    assert traced(desk, message_id) == []  # the sender (or the IMAP poller) tries again later


def test_a_dns_timeout_in_monitor_goes_ahead_and_the_case_records_the_temporary_verdict(engine: Engine) -> None:
    desk = desk_with(engine, "monitor", StubResolver(timeout=True))
    data, message_id = macd()

    outcome = desk.ingest_bytes(data)

    assert outcome.decision == "open_case"
    (record,) = traced(desk, message_id)
    verdict = record["sender_verdict"]
    assert isinstance(verdict, dict) and (verdict["dmarc"], verdict["temporary"]) == ("temperror", True)
    detail = desk.show(int(outcome.case_number or 0))
    (check,) = [e for e in detail["events"] if e["kind"] == "sender_check"]
    assert "MACD request needs an authenticated sender" in check["summary"]


def test_a_trusted_pass_for_another_from_domain_than_the_author_we_read_is_a_fail(engine: Engine) -> None:
    # Our MTA read From: as evil.example (a lenient parser); RFC 5322 gives pat@acme.example.
    base = sample_settings()
    settings = dataclasses.replace(
        base, security=dataclasses.replace(base.security, sender_policy="enforce",
                                           trusted_authserv_ids=("mx.support.example.com",)),
    )
    desk = ThreadDesk.start(engine, NOW, settings=settings)
    message_id = fresh_message_id("acme.example")
    data = (
        "Authentication-Results: mx.support.example.com; dmarc=pass header.from=evil.example\r\n"
        "Received: from evil.example by mx.support.example.com with ESMTP id 1; Tue, 01 Dec 2026 17:00:00 +0000\r\n"
        "From: Pat Doe <pat@acme.example>\r\nTo: support@support.example.com\r\nSubject: MACD: add 40 licences\r\n"
        f"Message-ID: {message_id}\r\nDate: Tue, 01 Dec 2026 10:00:00 -0700\r\n\r\nBill us.\r\n"
    ).encode()

    outcome = desk.ingest_bytes(data)

    assert outcome.decision == "hold_message"
    assert outcome.reason.startswith("sender not authenticated (dmarc=fail, d=acme.example)")


def test_an_authenticated_submission_proves_the_technician_only_for_their_own_login(engine: Engine) -> None:
    base = sample_settings()
    settings = dataclasses.replace(
        base, security=dataclasses.replace(base.security, sender_policy="off", trusted_authserv_ids=("mx.support.example.com",)),
    )
    desk = ThreadDesk.start(engine, NOW, settings=settings)
    case = desk.open_case()

    def reply(login: str) -> str:
        data = (
            f"Authentication-Results: mx.support.example.com; auth=pass smtp.auth={login}\r\n"
            "Received: from [192.0.2.8] by mx.support.example.com with ESMTPSA id 2; Tue, 01 Dec 2026 17:05:00 +0000\r\n"
            "From: Ana Lima <ana@support.example.com>\r\nTo: support@support.example.com\r\n"
            f"Subject: Re: {case.tag} Phones down\r\nMessage-ID: {fresh_message_id('support.example.com')}\r\n"
            "Date: Tue, 01 Dec 2026 10:05:00 -0700\r\n\r\nPlease power-cycle the switch.\r\n"
        ).encode()
        return desk.ingest_bytes(data).decision

    assert reply("bruno@support.example.com") == "hold_message"  # Bruno's login, Ana's From:
    assert reply("ana") == "technician_reply"
