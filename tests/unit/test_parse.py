"""Parsing inbound mail: the fixture corpus, decoding, addresses, ids, bodies, attachments, bounces, hostile input."""

from __future__ import annotations

import base64
import email.errors
import email.policy
import hashlib
import os
import string
import tomllib
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mailcase.domain import AutoKind
from mailcase.errors import MailcaseError
from mailcase.ingest.parse import MAX_REFERENCES, UnparseableMessage, content_digest, parse_message

MAIL = Path(__file__).resolve().parent.parent / "fixtures" / "mail"
EXPECTATIONS: dict[str, dict[str, Any]] = tomllib.loads((MAIL / "expectations.toml").read_text("utf-8"))
FIXTURES = sorted(path.name for path in MAIL.glob("*.eml"))
OUTCOMES = {"case", "update", "bounce", "held", "ignored", "command"}


def _parse(name: str, **kwargs: Any) -> Any:
    return parse_message((MAIL / name).read_bytes(), **kwargs)


def _message(headers: str, body: str | bytes = "Body text.\n") -> bytes:
    head = headers.strip("\n").replace("\n", "\r\n").encode("utf-8") + b"\r\n\r\n"
    return head + (body.encode("utf-8") if isinstance(body, str) else body)


BASIC = """From: Pat Doe <pat@acme.example>
To: support@support.example.com
Subject: Trunk down
Date: Tue, 03 Jun 2025 10:00:00 -0600
Message-ID: <basic@acme.example>"""


# ---------------------------------------------------------------------------- the corpus


def test_corpus_has_every_fixture_described_and_enough_of_them() -> None:
    assert len(FIXTURES) >= 40
    assert set(FIXTURES) == set(EXPECTATIONS)
    for name, expected in EXPECTATIONS.items():
        assert expected["outcome"] in OUTCOMES, name
        assert expected.get("scenario"), name
        if expected.get("unparseable"):
            assert expected["outcome"] == "held", name
            assert "auto_kind" not in expected, name
        else:
            AutoKind(expected["auto_kind"])


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_parses_as_its_expectation_says(name: str) -> None:
    expected = EXPECTATIONS[name]
    if expected.get("unparseable"):
        with pytest.raises(UnparseableMessage) as caught:
            _parse(name)
        assert caught.value.reason
        return
    message = _parse(name)
    assert message.auto_kind is AutoKind(expected["auto_kind"]), message.auto_reason
    assert message.auto_reason
    assert message.raw_sha256 == hashlib.sha256((MAIL / name).read_bytes()).hexdigest()
    assert len(message.content_digest) == 64
    if "from" in expected:
        assert message.from_address == expected["from"]
    if "subject" in expected:
        assert message.subject == expected["subject"]
    if "message_id" in expected:
        assert message.message_id == expected["message_id"]
    for fragment in expected.get("text_contains", []):
        assert fragment in message.text
    if "new_text" in expected:
        assert message.new_text == expected["new_text"]
    for fragment in expected.get("new_text_contains", []):
        assert fragment in message.new_text
    for fragment in expected.get("text_lacks", []):
        assert fragment not in message.text
    if "attachments" in expected:
        assert [attachment.filename for attachment in message.attachments] == expected["attachments"]
    for fragment in expected.get("defects_contain", []):
        assert any(fragment in defect for defect in message.defects), message.defects
    if message.auto_kind is AutoKind.BOUNCE:
        assert message.bounce is not None
        if "bounce_original" in expected:
            assert message.bounce.original_message_ids[0] == expected["bounce_original"]
        if "bounce_failed" in expected:
            assert list(message.bounce.failed_recipients) == expected["bounce_failed"]
        if "bounce_status" in expected:
            assert message.bounce.status == expected["bounce_status"]
    else:
        assert message.bounce is None


# ---------------------------------------------------------------------------- unparseable input


@pytest.mark.parametrize(
    "data",
    [b"", b"   \r\n\r\n", b"\x00\x01\x02binary\xff\xfe", b"just some words\nand more\n", b"key: value\n\nbody\n"],
    ids=["empty", "blank", "binary", "no-header-block", "no-known-header"],
)
def test_input_without_a_message_raises_unparseable(data: bytes) -> None:
    with pytest.raises(UnparseableMessage) as caught:
        parse_message(data)
    assert isinstance(caught.value, MailcaseError)
    assert caught.value.reason


def test_mbox_separator_line_before_the_headers_is_skipped() -> None:
    data = b"From pat@acme.example Tue Jun  3 10:00:00 2025\n" + _message(BASIC)
    message = parse_message(data)
    assert message.from_address == "pat@acme.example"
    assert message.raw_sha256 == hashlib.sha256(data).hexdigest()


def test_nesting_bomb_is_parsed_without_crashing() -> None:
    depth = 3000  # deeper than the stdlib parser's recursion allows
    nested = "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n' for i in range(depth))
    data = (BASIC.replace("\n", "\r\n") + "\r\nMIME-Version: 1.0\r\n" + nested).encode()
    data += b"Content-Type: text/plain\r\n\r\ndeep\r\n"
    # Within the configured bounds (here lifted far past them) the fallbacks still read it.
    message = parse_message(data, max_depth=10_000, max_parts=10_000)
    assert message.from_address == "pat@acme.example"
    assert message.subject == "Trunk down"
    assert any(defect.startswith("parser-fallback") for defect in message.defects)


def test_a_message_nested_past_the_bound_is_refused_before_any_parser_runs() -> None:
    nested = "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n' for i in range(1000))
    data = (BASIC.replace("\n", "\r\n") + "\r\nMIME-Version: 1.0\r\n" + nested).encode()
    with pytest.raises(UnparseableMessage, match="MIME nesting deeper than 50 levels"):
        parse_message(data)
    wide = "".join("--w\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(30)) + "--w--\r\n"
    flat = (BASIC.replace("\n", "\r\n") + '\r\nContent-Type: multipart/mixed; boundary="w"\r\n\r\n' + wide).encode()
    assert parse_message(flat, max_parts=30).subject == "Trunk down"
    with pytest.raises(UnparseableMessage, match="more than 29 MIME parts"):
        parse_message(flat, max_parts=29)


def test_parts_far_into_a_large_message_are_counted() -> None:
    log = "2025-06-03T10:00:00Z trunk-7 SIP/2.0 503 Service Unavailable\r\n" * 60  # ~4 KB a part
    wide = "".join(f"--w\r\nContent-Type: text/plain\r\n\r\n{log}" for _ in range(40)) + "--w--\r\n"
    data = (BASIC.replace("\n", "\r\n") + '\r\nContent-Type: multipart/mixed; boundary="w"\r\n\r\n' + wide).encode()
    assert len(data) > 150_000
    assert parse_message(data, max_parts=40).subject == "Trunk down"
    with pytest.raises(UnparseableMessage, match="more than 39 MIME parts"):
        parse_message(data, max_parts=39)


def test_hostile_headers_do_not_crash_and_are_capped() -> None:
    many = "\n".join(f"X-Junk-{i}: {'=?utf-8?B?' + '!' * 5 + '?='}" for i in range(1500))
    data = _message(BASIC + "\n" + many + "\nReferences: <<<>>> <a@b> <@> <x@y\nIn-Reply-To: garbage")
    message = parse_message(data)
    assert len(message.headers) == 1000
    assert any(defect.startswith("headers-truncated") for defect in message.defects)


# ---------------------------------------------------------------------------- headers and addresses


def test_addresses_are_lower_cased_bare_and_the_from_name_is_kept() -> None:
    data = _message(
        'From: "Doe, Pat" <Pat@ACME.example>\n'
        'To: Support <SUPPORT@support.example.com>, "Rivera, Sam" <Sam@Acme.Example>\n'
        "Cc: lee@acme.example, lee@acme.example\nReply-To: <noc@acme.example>\nSubject: x\nMessage-ID: <a@b>"
    )
    message = parse_message(data)
    assert (message.from_name, message.from_address) == ("Doe, Pat", "pat@acme.example")
    assert message.to == ("support@support.example.com", "sam@acme.example")
    assert message.cc == ("lee@acme.example",)
    assert message.reply_to == ("noc@acme.example",)


def test_plain_address_fields_read_every_mailbox() -> None:
    data = _message(
        "From: AT&T  NOC <Noc@ATT.example>\n"
        "To: Support Desk <SUPPORT@support.example.com>,lee@acme.example , <sam@acme.example>\n"
        "Cc: O'Brien\t<o.brien+noc@acme.example>\nSubject: x"
    )
    message = parse_message(data)
    assert (message.from_name, message.from_address) == ("AT&T NOC", "noc@att.example")
    assert message.to == ("support@support.example.com", "lee@acme.example", "sam@acme.example")
    assert message.cc == ("o.brien+noc@acme.example",)
    assert "from-not-rfc5322" not in message.defects


# Words of RFC 5322 atext, now and then with a character that changes how a field is read.
_FIELD_WORDS = st.text(string.ascii_letters + string.digits + "!#$%&'*+/^_`{|}~-" + '=?."(),;:@', min_size=1, max_size=6)


@st.composite
def _from_fields(draw: st.DrawFn) -> str:
    mailboxes = []
    for _ in range(draw(st.integers(1, 3))):
        local = ".".join(draw(st.lists(_FIELD_WORDS, min_size=1, max_size=2)))
        domain = ".".join(draw(st.lists(_FIELD_WORDS, min_size=1, max_size=3)))
        name = " ".join(draw(st.lists(_FIELD_WORDS, max_size=3)))
        address = f"{local}@{domain}"
        mailboxes.append(f"{name} <{address}>" if name else draw(st.sampled_from([address, f"<{address}>"])))
    return draw(st.sampled_from([", ", ","])).join(mailboxes)


@settings(max_examples=300, deadline=None)
@given(_from_fields())
def test_a_valid_from_field_reads_as_the_rfc_5322_parser_reads_it(field: str) -> None:
    try:
        reference: Any = email.policy.default.header_factory("From", field)
        mailboxes = reference.addresses
    except Exception:  # the stdlib parser trips over some invalid fields; those are held
        mailboxes = None
    assume(mailboxes is not None)
    assume(not any(isinstance(defect, email.errors.InvalidHeaderDefect) for defect in reference.defects))
    expected = []
    for mailbox in mailboxes:
        address = mailbox.addr_spec.strip().lower()
        local, _, domain = address.rpartition("@")
        if local and domain and " " not in address:
            expected.append((" ".join(mailbox.display_name.split()), address))
    message = parse_message(_message(f"From: {field}\nSubject: x"))
    assert message.from_addresses == tuple(dict.fromkeys(address for _, address in expected))
    if len(expected) == 1:
        assert (message.from_name, message.from_address) == expected[0]


def test_encoded_display_name_with_a_comma_does_not_split_the_address() -> None:
    data = _message("From: =?utf-8?Q?Silva=2C_Jo=C3=A3o?= <joao@brisa.example.com.br>\nSubject: x")
    message = parse_message(data)
    assert (message.from_name, message.from_address) == ("Silva, João", "joao@brisa.example.com.br")


def test_mailer_daemon_without_a_domain_is_still_the_sender() -> None:
    message = parse_message(_message("From: MAILER-DAEMON\nSubject: failure notice"))
    assert message.from_address == "mailer-daemon"
    assert message.auto_kind is AutoKind.BOUNCE


def test_message_ids_keep_angle_brackets_and_folding_is_cleaned() -> None:
    data = _message(
        "From: pat@acme.example\nSubject: x\nMessage-ID:\n <folded@acme.example>\n"
        "In-Reply-To: <parent@support.example.com> (Support's message of Tue)\n"
        "References: <a@x>\n <b@y>\t<c@z> <a@x>"
    )
    message = parse_message(data)
    assert message.message_id == "<folded@acme.example>"
    assert message.in_reply_to == "<parent@support.example.com>"
    assert message.references == ("<a@x>", "<b@y>", "<c@z>")


def test_message_id_without_brackets_gets_them() -> None:
    message = parse_message(_message("From: pat@acme.example\nSubject: x\nMessage-ID: naked@acme.example"))
    assert message.message_id == "<naked@acme.example>"


def test_references_keep_the_newest_fifty() -> None:
    references = " ".join(f"<r{i}@x>" for i in range(120))
    message = parse_message(_message(f"From: pat@acme.example\nSubject: x\nReferences: {references}"))
    assert len(message.references) == MAX_REFERENCES == 50
    assert message.references[0] == "<r70@x>"
    assert message.references[-1] == "<r119@x>"


def test_subject_folding_and_adjacent_encoded_words_are_joined() -> None:
    data = _message(
        "From: pat@acme.example\nSubject: =?utf-8?Q?Liga=C3?=\n =?utf-8?Q?=A7=C3=B5es?= caindo\n  na filial"
    )
    assert parse_message(data).subject == "Ligações caindo na filial"


def test_raw_cp1252_header_bytes_are_decoded_and_the_guess_recorded() -> None:
    head = "From: pat@acme.example\r\nSubject: Caf\xe9 line down\r\n\r\n".encode("latin-1")
    message = parse_message(head + b"x")
    assert message.subject == "Café line down"
    assert any("charset-guess:cp1252 for header Subject" in defect for defect in message.defects)


def test_headers_are_decoded_pairs_in_order() -> None:
    message = parse_message(_message(BASIC + "\nX-Note: =?utf-8?B?w6lsw6h2ZQ==?=\nX-Note: second"))
    assert message.headers[0] == ("From", "Pat Doe <pat@acme.example>")
    assert message.header("x-note") == "élève"
    assert [value for name, value in message.headers if name == "X-Note"] == ["élève", "second"]


def test_date_is_aware_utc_and_a_bad_date_is_none() -> None:
    assert parse_message(_message(BASIC)).date == datetime(2025, 6, 3, 16, 0, tzinfo=UTC)
    message = parse_message(_message("From: pat@acme.example\nSubject: x\nDate: the day before yesterday"))
    assert message.date is None
    assert "bad-date" in message.defects


# ---------------------------------------------------------------------------- bodies


def test_plain_text_is_preferred_over_html() -> None:
    message = _parse("outlook_web_alternative.eml")
    assert "<div" not in message.text
    assert message.text.startswith("Hi,\n\nSince this morning")


def test_html_only_mail_becomes_readable_text() -> None:
    message = _parse("html_only.eml")
    assert "<" not in message.text.replace("<pat@", "")
    assert "td {" not in message.text  # styles dropped
    assert "\\" not in message.text  # no Markdown escapes
    assert "alex@acme.example" in message.text


def test_empty_plain_alternative_falls_back_to_html() -> None:
    body = (
        "--b\r\nContent-Type: text/plain\r\n\r\n \r\n--b\r\nContent-Type: text/html\r\n\r\n"
        "<p>Only the HTML says it</p>\r\n--b--\r\n"
    )
    message = parse_message(_message(BASIC + '\nContent-Type: multipart/alternative; boundary="b"', body))
    assert message.text == "Only the HTML says it"


def test_a_named_inline_text_part_alone_is_still_the_text() -> None:
    # Our own pass files a named part as an attachment and finds no text; mail-parser, asked
    # only then, reads the inline part as the body.
    headers = BASIC + '\nContent-Type: text/plain; charset=utf-8\nContent-Disposition: inline; filename="note.txt"'
    message = parse_message(_message(headers, "The trunk is down again.\n"))
    assert message.text == "The trunk is down again."
    assert "body-from-mail-parser" in message.defects
    assert [attachment.filename for attachment in message.attachments] == ["note.txt"]


def test_when_mail_parser_trips_over_a_message_without_text_the_stdlib_reading_stands() -> None:
    # Mixed RFC 2231 continuations make the stdlib's parameter decoding raise inside mail-parser.
    body = '--b\r\nContent-Type: text/calendar; name*1="b.ics"; name*="a.ics"\r\n\r\nBEGIN:VCALENDAR\r\n--b--\r\n'
    message = parse_message(_message(BASIC + '\nContent-Type: multipart/mixed; boundary="b"', body))
    assert message.text == ""
    assert "parser-fallback:stdlib (TypeError)" in message.defects
    assert [attachment.data for attachment in message.attachments] == [b"BEGIN:VCALENDAR"]


def test_damaged_base64_in_a_text_part_is_recorded() -> None:
    encoded = base64.b64encode("Ligações caindo na filial".encode()).decode()
    body = (
        f"--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{encoded[:-2]}\r\n"
        f"--b\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n!{encoded}\r\n--b--\r\n"
    )
    message = parse_message(_message(BASIC + '\nContent-Type: multipart/alternative; boundary="b"', body))
    assert message.text.startswith("Ligações caindo")
    assert "mime:InvalidBase64PaddingDefect" in message.defects  # the plain part, read
    assert "mime:InvalidBase64CharactersDefect" in message.defects  # the HTML part, not read


def test_html_charset_from_meta_tag_when_the_header_has_none() -> None:
    body = '<html><head><meta charset="windows-1252"></head><body>Caf\xe9</body></html>'.encode("latin-1")
    message = parse_message(_message(BASIC + "\nContent-Type: text/html", body))
    assert message.text == "Café"
    assert not any("charset-guess" in defect for defect in message.defects)


def test_unknown_declared_charset_is_recorded_and_guessed() -> None:
    body = "Ligações".encode()
    message = parse_message(_message(BASIC + "\nContent-Type: text/plain; charset=x-klingon", body))
    assert message.text == "Ligações"
    assert "unknown-charset:x-klingon for text/plain" in message.defects


def test_non_text_codec_names_are_not_used_as_charsets() -> None:
    message = parse_message(_message(BASIC + "\nContent-Type: text/plain; charset=base64", b"aGVsbG8=\n"))
    assert message.text == "aGVsbG8="


def test_format_flowed_soft_breaks_are_joined_but_quotes_and_signature_kept() -> None:
    body = "First line \r\ncontinues here.\r\n\r\n> quoted \r\n> still quoted\r\n-- \r\nPat\r\n"
    message = parse_message(_message(BASIC + "\nContent-Type: text/plain; format=flowed", body))
    assert message.text == "First line continues here.\n\n> quoted still quoted\n-- \nPat".replace("-- \n", "--\n")
    assert message.new_text == "First line continues here."


def test_new_text_strips_the_quoted_reply() -> None:
    message = _parse("escalate_reply.eml")
    assert message.text.endswith("We are working on it.")
    assert message.new_text == "#escalate\nStill down after four hours, this is costing us orders."


# ---------------------------------------------------------------------------- attachments


def test_attachments_carry_bytes_and_their_sha256() -> None:
    message = _parse("outlook_desktop_winmail_dat.eml")
    (tnef,) = message.attachments
    assert tnef.content_type == "application/ms-tnef"
    assert tnef.data.startswith(b"\x78\x9f\x3e\x22")  # the TNEF signature
    assert tnef.sha256 == hashlib.sha256(tnef.data).hexdigest()
    assert not tnef.inline


def test_inline_images_keep_their_content_id_without_brackets() -> None:
    message = _parse("inline_images_cid.eml")
    assert [(a.inline, a.content_id) for a in message.attachments] == [
        (True, "image001.png@01DBD9A1.2C3D4E50"),
        (True, "image002.png@01DBD9A1.2C3D4E50"),
    ]
    assert all(a.data.startswith(b"\x89PNG") for a in message.attachments)


def test_forwarded_message_is_kept_whole_and_its_attachment_stays_inside() -> None:
    message = _parse("forwarded_message_rfc822.eml")
    (forwarded,) = message.attachments
    assert forwarded.content_type == "message/rfc822"
    inner = parse_message(forwarded.data)
    assert inner.message_id == "<alarm-20250611-0302@monitor.acme.example>"
    assert [a.filename for a in inner.attachments] == ["trunk-2.log"]


def test_large_attachment_is_decoded_without_needless_copies() -> None:
    payload = os.urandom(18 * 1024 * 1024)  # 18 MB of file is about 25 MB of message
    encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    data = _message(
        BASIC + '\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b"',
        b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\n"
        b'Content-Type: application/octet-stream; name="capture.pcap"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded + b"--b--\r\n",
    )
    assert len(data) > 24 * 1024 * 1024
    tracemalloc.start()
    try:
        message = parse_message(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    (attachment,) = message.attachments
    assert attachment.filename == "capture.pcap"
    assert attachment.sha256 == hashlib.sha256(payload).hexdigest()
    assert message.new_text == "see attached"
    # The stdlib MIME parser under mail-parser peaks near 7x the message; ours adds no more.
    assert peak < 10 * len(data)


# ---------------------------------------------------------------------------- bounces


def test_non_report_bounce_reads_recipients_from_exim_text() -> None:
    body = (
        "This message was created automatically by mail delivery software.\n\n"
        "A message that you sent could not be delivered to one or more of its\n"
        "recipients. This is a permanent error. The following address(es) failed:\n\n"
        "  gone@outsider.example\n    host mx.outsider.example [192.0.2.9]\n"
        "    SMTP error from remote mail server after RCPT TO:<gone@outsider.example>:\n"
        "    550 5.1.1 No such user\n\n------ This is a copy of the message, including all the headers. ------\n\n"
        "Message-ID: <mc.abc@mailcase.localhost>\nSubject: [Case #00000007] Update\n"
    )
    data = _message(
        "From: Mail Delivery System <Mailer-Daemon@mx.relay.example>\nTo: support@support.example.com\n"
        "Subject: Mail delivery failed: returning message to sender\nX-Failed-Recipients: gone@outsider.example",
        body,
    )
    message = parse_message(data, envelope_from="")
    assert message.auto_kind is AutoKind.BOUNCE
    assert message.bounce is not None
    assert message.bounce.original_message_ids == ("<mc.abc@mailcase.localhost>",)
    assert message.bounce.failed_recipients == ("gone@outsider.example",)
    assert message.bounce.status == "5.1.1"


def test_human_mail_has_no_bounce_report() -> None:
    assert _parse("gmail_alternative.eml").bounce is None


# ---------------------------------------------------------------------------- loops and envelope


def test_null_envelope_sender_marks_machine_mail() -> None:
    assert parse_message(_message(BASIC), envelope_from="").auto_kind is AutoKind.AUTO_GENERATED
    assert parse_message(_message(BASIC), envelope_from="pat@acme.example").auto_kind is AutoKind.HUMAN
    assert parse_message(_message(BASIC)).auto_kind is AutoKind.HUMAN


# ---------------------------------------------------------------------------- dedupe digest


def test_same_message_id_with_different_content_has_different_digests() -> None:
    first, second = _parse("duplicate_message_id_1.eml"), _parse("duplicate_message_id_2.eml")
    assert first.message_id == second.message_id
    assert first.content_digest != second.content_digest


def test_digest_ignores_line_endings_and_trailing_space_but_not_words() -> None:
    lf = _message(BASIC, "Line one  \nLine two\n").replace(b"\r\n", b"\n")
    crlf = _message(BASIC, "Line one\r\nLine two\r\n\r\n")
    other = _message(BASIC, "Line one\r\nLine three\r\n")
    assert parse_message(lf).content_digest == parse_message(crlf).content_digest
    assert parse_message(lf).raw_sha256 != parse_message(crlf).raw_sha256
    assert parse_message(other).content_digest != parse_message(crlf).content_digest


def test_digest_counts_sender_subject_and_attachments() -> None:
    base = content_digest("pat@acme.example", "Trunk down", "text")
    assert content_digest("PAT@acme.example ", "Trunk  down", "text\r\n") == base
    assert content_digest("sam@acme.example", "Trunk down", "text") != base
    assert content_digest("pat@acme.example", "Trunk up", "text") != base
    resent = parse_message(_message(BASIC + "\nContent-Type: text/plain"))
    attached = _parse("attachment_only.eml")
    assert resent.content_digest != attached.content_digest


HOSTILE_HEAD = b"From: a@b.example\r\nTo: support@x.example\r\nSubject: down\r\nMessage-ID: <1@b.example>\r\nMIME-Version: 1.0\r\n"


@pytest.mark.parametrize(
    "body",
    [
        b"Content-Type: text/plain; charset*=utf-8''%C3%A9\r\nContent-Transfer-Encoding: 8bit\r\n\r\nCaf\xc3\xa9 down\r\n",
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: text/plain; charset*=utf-8''%C3%A9\r\nContent-Transfer-Encoding: 8bit\r\n\r\nCaf\xc3\xa9 down\r\n"
        b"--b\r\nContent-Type: message/rfc822; charset*=utf-8''%C3%A9\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        b"From: x@y.example\r\nSubject: inner\r\n\r\nInn\xc3\xa9r\r\n--b--\r\n",
    ],
    ids=["single-part", "forwarded"],
)
def test_eight_bit_text_under_an_rfc2231_charset_parameter_is_read_not_a_crash(body: bytes) -> None:
    # The stdlib's get_payload() raises TypeError here (it reads `charset*=` as a tuple); the
    # pipeline only expects UnparseableMessage, so the sender got 451 for ever.
    message = parse_message(HOSTILE_HEAD + body)

    assert message.text.startswith("Café down")
    assert "charset-guess:utf-8 for text/plain" in message.defects


def test_base64_with_stray_eight_bit_bytes_under_an_rfc2231_charset_is_decoded_once() -> None:
    body = b"Content-Type: text/plain; charset*=utf-8''utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\nSGVs\xe9bG8gd29y\r\n"

    assert parse_message(HOSTILE_HEAD + body).text == "Hello wor"
