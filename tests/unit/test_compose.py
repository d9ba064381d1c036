"""Outbound headers: threading, reply token, loop protection, and the MIME structure."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest

from mailcase.notify.compose import (
    AUTO_GENERATED,
    AUTO_REPLIED,
    HUMAN,
    MAX_REFERENCES,
    MailAttachment,
    OutgoingMail,
    compose,
)
from mailcase.notify.render import Rendered
from mailcase.rules.tokens import case_from_address

SUPPORT = "support@support.example.com"
SECRET = b"compose-test-secret"
NOW = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)
RENDERED = Rendered(
    subject="[Case #00001042] Received: Phones down",
    text="Hello,\n\nWe opened case 00001042.\n",
    html="<!DOCTYPE html><html><body><p>We opened case <strong>00001042</strong>.</p></body></html>",
)


def _mail(**overrides: object) -> OutgoingMail:
    values: dict[str, object] = {
        "message_id": "<mc.0123456789abcdef@mailcase.localhost>",
        "recipients": ("pat@acme.example",),
        "date": NOW,
        "cc": ("lee@acme.example",),
        "in_reply_to": "<customer-1@acme.example>",
        "references": ("<root@acme.example>",),
        "auto_submitted": AUTO_REPLIED,
        "reply_token_case": 1042,
    }
    values.update(overrides)
    return OutgoingMail(**values)  # type: ignore[arg-type]


def _compose(mail: OutgoingMail, **kwargs: object) -> EmailMessage:
    message = compose(
        mail,
        RENDERED,
        from_address=SUPPORT,
        from_name="Acme Telecom Support",
        support_address=SUPPORT,
        secret=SECRET,
        **kwargs,  # type: ignore[arg-type]
    )
    # Round-trip through bytes: what the relay and the customer's client will see.
    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_addresses_subject_and_date() -> None:
    message = _compose(_mail())
    assert message["From"] == "Acme Telecom Support <support@support.example.com>"
    assert message["To"] == "pat@acme.example"
    assert message["Cc"] == "lee@acme.example"
    assert message["Subject"] == "[Case #00001042] Received: Phones down"
    assert message["Date"].datetime == NOW


def test_message_id_is_the_stored_one() -> None:
    message = _compose(_mail())
    assert message["Message-ID"] == "<mc.0123456789abcdef@mailcase.localhost>"


def test_threads_to_the_customers_message() -> None:
    message = _compose(_mail())
    assert message["In-Reply-To"] == "<customer-1@acme.example>"
    assert message["References"] == "<root@acme.example> <customer-1@acme.example>"


def test_no_threading_headers_for_a_notice_that_answers_nothing() -> None:
    message = _compose(_mail(in_reply_to="", references=()))
    assert message["In-Reply-To"] is None
    assert message["References"] is None


def test_long_reference_chains_keep_the_root_and_the_newest() -> None:
    chain = tuple(f"<m{i}@acme.example>" for i in range(40))
    message = _compose(_mail(references=chain, in_reply_to="<m40@acme.example>"))
    kept = message["References"].split()
    assert len(kept) == MAX_REFERENCES
    assert kept[0] == "<m0@acme.example>"
    assert kept[-1] == "<m40@acme.example>"


def test_reply_to_is_the_case_reply_token_address() -> None:
    message = _compose(_mail())
    reply_to = message["Reply-To"]
    assert reply_to.startswith("support+c1042-")
    assert case_from_address(reply_to, SUPPORT, SECRET) == 1042


def test_mail_without_a_case_has_no_reply_to() -> None:
    assert _compose(_mail(reply_token_case=None))["Reply-To"] is None


def test_acknowledgement_is_auto_replied_and_suppresses_auto_responses() -> None:
    message = _compose(_mail(auto_submitted=AUTO_REPLIED))
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["X-Auto-Response-Suppress"] == "All"


def test_notice_is_auto_generated_and_suppresses_auto_responses() -> None:
    message = _compose(_mail(auto_submitted=AUTO_GENERATED))
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["X-Auto-Response-Suppress"] == "All"


def test_technicians_reply_is_not_marked_automatic() -> None:
    message = _compose(_mail(auto_submitted=HUMAN))
    assert message["Auto-Submitted"] is None
    assert message["X-Auto-Response-Suppress"] is None


def test_body_is_text_then_html_alternatives() -> None:
    message = _compose(_mail())
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    assert parts[0].get_content() == RENDERED.text
    assert "<strong>00001042</strong>" in parts[1].get_content()
    assert message["Content-Language"] == "en"


def test_non_ascii_text_survives() -> None:
    rendered = Rendered(subject="[Case #00001042] Manutenção às 22:00", text="Olá, José.\n", html="<p>Olá</p>")
    message = compose(
        _mail(locale="pt"),
        rendered,
        from_address=SUPPORT,
        from_name="Suporte",
        support_address=SUPPORT,
        secret=SECRET,
    )
    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert parsed["Subject"] == "[Case #00001042] Manutenção às 22:00"
    assert parsed.get_body(("plain",)).get_content() == "Olá, José.\n"  # type: ignore[union-attr]


def test_calendar_invitation_is_attached_with_its_method() -> None:
    ics = b"BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nEND:VCALENDAR\r\n"
    attachment = MailAttachment(
        filename="maintenance.ics", content_type="text/calendar", data=ics, params=(("method", "REQUEST"),)
    )
    message = _compose(_mail(), attachments=[attachment])
    assert message.get_content_type() == "multipart/mixed"
    body = message.get_body(("plain",))
    assert body is not None and body.get_content() == RENDERED.text
    (calendar,) = list(message.iter_attachments())
    assert calendar.get_content_type() == "text/calendar"
    assert calendar.get_param("method") == "REQUEST"
    assert calendar.get_filename() == "maintenance.ics"
    assert calendar.get_payload(decode=True) == ics


def test_a_message_without_recipients_is_refused() -> None:
    with pytest.raises(ValueError):
        _compose(_mail(recipients=()))
