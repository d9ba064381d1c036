"""Outbound headers: threading, reply token, loop protection, and the MIME structure."""

from __future__ import annotations

import email
import email.policy
import unicodedata
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

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
    return _parse(message)


def _parse(data: bytes) -> EmailMessage:
    """Parse the DATA bytes as the customer's mail store does: CRLF on the wire (RFC 5322 §2.1),
    stored with local line ends."""
    assert b"\n" not in data.replace(b"\r\n", b""), "every line ends in CRLF"
    parsed = email.message_from_bytes(data.replace(b"\r\n", b"\n"), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert [part.defects for part in parsed.walk()] == [[] for _ in parsed.walk()], "well-formed MIME"
    return parsed


def _raw_headers(data: bytes) -> str:
    """The header section as sent, folds kept."""
    return data.split(b"\r\n\r\n", 1)[0].decode("ascii")


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
    parsed = _parse(message)
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


def _compose_bytes(mail: OutgoingMail, rendered: Rendered = RENDERED, **kwargs: object) -> bytes:
    values: dict[str, object] = {
        "from_address": SUPPORT,
        "from_name": "Acme Telecom Support",
        "support_address": SUPPORT,
        "secret": SECRET,
    }
    values.update(kwargs)
    return compose(mail, rendered, **values)  # type: ignore[arg-type]


MAILTO = "<mailto:support+unsub-m-dxb3fdrnszxfggrf@support.example.com?subject=unsubscribe>"


def test_list_unsubscribe_is_written_verbatim_not_as_encoded_words() -> None:
    data = _compose_bytes(_mail(list_unsubscribe=MAILTO))
    # Clients look for the <mailto:…> literally (RFC 2369 §2); encoded words would hide it.
    assert f"\r\nList-Unsubscribe: {MAILTO}\r\n" in _raw_headers(data) + "\r\n"
    message = _parse(data)
    assert message["List-Unsubscribe"] == MAILTO
    assert message["List-Unsubscribe-Post"] is None  # one-click needs an https URL (RFC 8058)


def test_one_click_unsubscribe_has_its_post_header() -> None:
    value = f"<https://status.example.com/unsubscribe?t=abc>, {MAILTO}"
    message = _parse(_compose_bytes(_mail(list_unsubscribe=value)))
    assert message["List-Unsubscribe"] == value
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_a_non_ascii_sender_name_is_encoded_and_reads_back() -> None:
    message = _parse(_compose_bytes(_mail(), from_name="Suporte Técnico Ação"))
    assert message["From"].addresses[0].display_name == "Suporte Técnico Ação"
    assert message["From"].addresses[0].addr_spec == SUPPORT


def test_a_sender_name_with_specials_is_quoted() -> None:
    message = _parse(_compose_bytes(_mail(), from_name='Acme, "Support" Desk'))
    assert message["From"].addresses[0].display_name == 'Acme, "Support" Desk'


def test_long_subjects_are_folded_to_78_columns_and_read_back_exactly() -> None:
    subject = (
        "Manutenção programada, sábado, 19 de dezembro de 2026, 02:00 UTC-03:00 "
        "(Cisco, Five9, Microsoft Teams) — aviso número três, às 22:00"
    )
    data = _compose_bytes(_mail(), Rendered(subject=subject, text="x\n", html="<p>x</p>"))
    assert all(len(line) <= 78 for line in _raw_headers(data).split("\r\n"))
    assert _parse(data)["Subject"] == subject


def test_only_the_words_that_need_it_are_encoded() -> None:
    data = _compose_bytes(_mail(), Rendered(subject="Manutenção programada (Cisco)", text="x\n", html="x"))
    assert "programada (Cisco)" in _raw_headers(data)


def test_text_that_looks_like_an_encoded_word_stays_literal() -> None:
    subject = "Re: =?utf-8?q?not_encoded?= and a_b?=c"
    data = _compose_bytes(_mail(), Rendered(subject=subject, text="x\n", html="x"))
    assert _parse(data)["Subject"] == subject


@given(st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=200))
@example("é  é")
@example("a  é  b é")
@example("Olá,  José   ")
@example("é" * 80)
@example("=?utf-8?q?x?= é")
def test_any_single_line_subject_reads_back_exactly(text: str) -> None:
    subject = f"S {text}"  # whitespace at the very start of a header value is not part of it
    data = _compose_bytes(_mail(), Rendered(subject=subject, text="x\n", html="x"))
    assert all(len(line) <= 998 for line in _raw_headers(data).split("\r\n"))
    assert _parse(data)["Subject"] == subject


@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=200))
@example("\x1b$B$3$s\x1b(B")  # ISO-2022-JP escapes a client left undecoded
@example("a\x00b\x7fc\x85d\te")
def test_no_control_character_ever_reaches_an_outgoing_header(text: str) -> None:
    data = _compose_bytes(_mail(), Rendered(subject=f"S {text}", text="x\n", html="x"), from_name=f"N {text}")
    headers = _raw_headers(data)
    assert not any((ord(c) < 32 and c not in "\r\n") or ord(c) == 127 for c in headers)
    parsed = _parse(data)
    for name in ("Subject", "From"):
        assert not any(unicodedata.category(c) == "Cc" for c in str(parsed[name])), name


def test_every_line_is_within_rfc_5322_limits() -> None:
    long_line = "<p style=\"margin:0; padding:16px; font-family:Arial\">" + "word " * 60 + "</p>"
    rendered = Rendered(subject=RENDERED.subject, text="Olá " * 100 + "\n", html=long_line)
    ics = b"BEGIN:VCALENDAR\r\n" + b"DESCRIPTION:" + b"x" * 300 + b"\r\nEND:VCALENDAR\r\n"
    data = _compose_bytes(
        _mail(references=tuple(f"<m{i}@acme.example>" for i in range(30))),
        rendered,
        attachments=[MailAttachment("maintenance.ics", "text/calendar", ics, (("method", "REQUEST"),))],
    )
    lines = data.split(b"\r\n")
    assert max(len(line) for line in lines) <= 78
    assert data.isascii()
    message = _parse(data)
    assert message.get_body(("plain",)).get_content() == rendered.text  # type: ignore[union-attr]
    assert message.get_body(("html",)).get_content().rstrip("\n") == long_line  # type: ignore[union-attr]


def test_a_line_break_in_a_header_value_is_refused() -> None:
    # A CR or LF would end the header and start one of the sender's choosing (header injection).
    with pytest.raises(ValueError):
        _compose_bytes(_mail(), Rendered(subject="Hi\r\nBcc: eve@outsider.example", text="x", html="x"))
    with pytest.raises(ValueError):
        _compose_bytes(_mail(message_id="<a@b>\nBcc: eve@outsider.example"))
    with pytest.raises(ValueError):
        _compose_bytes(_mail(), from_name="Support\nBcc: eve@outsider.example")


def test_a_non_ascii_address_is_refused_rather_than_garbled() -> None:
    # A UTF-8 local part needs SMTPUTF8 (RFC 6531); encoded words are not allowed in an address.
    with pytest.raises(ValueError):
        _compose_bytes(_mail(recipients=("josé@acme.example",)))


def test_a_non_ascii_attachment_name_uses_rfc_2231() -> None:
    attachment = MailAttachment("manutenção.ics", "text/calendar", b"BEGIN:VCALENDAR\r\n")
    message = _parse(_compose_bytes(_mail(), attachments=[attachment]))
    (calendar,) = list(message.iter_attachments())
    assert calendar.get_filename() == "manutenção.ics"


def test_a_body_that_contains_a_boundary_like_line_stays_one_part() -> None:
    text = "--=_mc\n--\n=_\n.\n..\nFrom here\n"
    message = _parse(_compose_bytes(_mail(), Rendered(subject="s", text=text, html="<p>x</p>")))
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]
    assert message.get_body(("plain",)).get_content() == text  # type: ignore[union-attr]
