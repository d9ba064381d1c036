"""Build the outgoing RFC 5322 message, as the bytes SMTP DATA carries, from plain values and rendered parts; the only place outbound headers are set. It sends nothing and reads no database.

Header choices, and where they come from:
* `Message-ID` is the one stored when the notice was queued, so a reply can thread to it even
  before it is sent (RFC 5322 §3.6.4).
* `In-Reply-To` / `References` point at the customer's message this answers (RFC 5322 §3.6.4).
* `Reply-To` is the per-case reply-token address (rules/tokens.py), so a reply finds its case even
  when the client drops the headers and the subject.
* `Auto-Submitted` (RFC 3834 §5): `auto-replied` for acknowledgements, `auto-generated` for
  notices, absent for a technician's own reply. Automatic mail also carries
  `X-Auto-Response-Suppress: All`, which stops Exchange/Outlook out-of-office replies to it.
* `List-Unsubscribe` (RFC 2369) is written verbatim, never as encoded words (clients look for the
  `<mailto:…>` literally), and `List-Unsubscribe-Post` (RFC 8058) when it has an https URL.
* `Content-Language` (RFC 3282) on the whole message.

Why bytes and not an `email.message.EmailMessage`: a broadcast sends tens of thousands of these,
and the stdlib's header objects, parsing and re-folding cost about 1-2 ms a message, more than the
SMTP round trips. The MIME structure here is fixed and small (multipart/alternative of text and
HTML, inside multipart/mixed when there are attachments), so it is written directly:
* header fields are folded at whitespace to 78 characters where possible and never beyond 998
  (RFC 5322 §2.1.1, §2.2.3); non-ASCII text (a Subject, a display name) becomes RFC 2047
  encoded words, and only where the text needs it;
* bodies are UTF-8: `7bit` when ASCII with short lines, else quoted-printable (RFC 2045 §6.7);
  attachments are base64 (RFC 2045 §6.8); boundaries start with `=_`, which neither encoding can
  produce, and are checked against the parts anyway (RFC 2046 §5.1.1);
* every line ends in CRLF (RFC 5322 §2.1); dot-stuffing is the SMTP client's job (RFC 5321 §4.5.2).
"""

from __future__ import annotations

import base64
import binascii
import functools
import secrets
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime, formataddr
from urllib.parse import quote

from mailcase.notify.render import Rendered
from mailcase.rules.tokens import reply_address, staff_reply_address

AUTO_REPLIED = "auto-replied"
AUTO_GENERATED = "auto-generated"
HUMAN = "no"
MAX_REFERENCES = 20
"""Keep References short: RFC 5322 §3.6.4 allows trimming, and long chains break some servers."""

FOLD_AT = 78
"""RFC 5322 §2.1.1: lines SHOULD be at most 78 characters (without CRLF)."""
MAX_LINE = 998
"""RFC 5322 §2.1.1: lines MUST be at most 998 characters (without CRLF)."""
CRLF = "\r\n"

_ENCODED_WORD_MAX = 75
"""RFC 2047 §2: an encoded word is at most 75 characters."""
_TEXT_WORD_MAX = 66
"""In unstructured text, 66 lets an encoded word follow `Subject: ` within 78 columns."""
_EW_PREFIX = "=?utf-8?q?"
_EW_SUFFIX = "?="
# RFC 2047 §5(3): the characters a "Q" encoded word may carry literally inside a phrase (a display
# name); the same conservative set is used for unstructured text such as Subject.
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_Q_LITERAL = frozenset((_ALNUM + "!*+-/").encode("ascii"))
_Q_BYTE = tuple(
    chr(byte) if byte in _Q_LITERAL else "_" if byte == 0x20 else f"={byte:02X}"
    for byte in range(256)
)
# RFC 2045 §5.1: a parameter name is a token, without tspecials, space or controls.
_PARAM_NAME_FORBIDDEN = frozenset('()<>@,;:\\"/[]?= \t')
_ATEXT = frozenset(_ALNUM + "!#$%&'*+-/=?^_`{|}~")
"""RFC 5322 §3.2.3: the characters of an atom."""


@dataclass(frozen=True, slots=True)
class MailAttachment:
    """A file to attach, e.g. an iCalendar invitation: `content_type="text/calendar"`,
    `params={"method": "REQUEST"}` (RFC 5545, RFC 6047)."""

    filename: str
    content_type: str
    data: bytes
    params: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class OutgoingMail:
    """What compose needs from an outbox row, as plain values (no ORM row, no database)."""

    message_id: str
    recipients: tuple[str, ...]
    date: datetime
    cc: tuple[str, ...] = ()
    in_reply_to: str = ""
    references: tuple[str, ...] = ()
    auto_submitted: str = AUTO_GENERATED
    reply_token_case: int | None = None
    reply_token_staff: str = ""  # a staff notice's recipient: Reply-To is then their own token
    locale: str = "en"
    list_unsubscribe: str = ""  # RFC 2369 header value for broadcasts, "" for case mail
    reply_to: str = ""
    """The Reply-To when the caller has it already (from `reply_to_address`, to store it); empty:
    computed here from the reply-token fields."""


def reply_to_address(support_address: str, case_number: int | None, staff: str, secret: bytes) -> str:
    """The Reply-To of a notice: its case's reply-token address, bound to the technician too for a
    staff notice (rules/tokens.py); "" for a notice without a case token."""
    if case_number is None:
        return ""
    if staff:
        return staff_reply_address(support_address, case_number, staff, secret)
    return reply_address(support_address, case_number, secret)


def compose(
    mail: OutgoingMail,
    rendered: Rendered,
    *,
    from_address: str,
    from_name: str,
    support_address: str,
    secret: bytes,
    attachments: Sequence[MailAttachment] = (),
) -> bytes:
    """The message as SMTP DATA bytes (CRLF lines, 7-bit clean): a multipart/alternative (text, then
    HTML), wrapped in multipart/mixed when there are attachments, with every header listed in the
    module docstring. Raises ValueError for a value that cannot go into a header (a line break,
    which would inject headers; a non-ASCII address, which needs SMTPUTF8, RFC 6531)."""
    if not mail.recipients:
        raise ValueError("an outgoing message needs at least one recipient")
    if mail.date.tzinfo is None:
        raise ValueError("the Date header needs an aware instant")
    headers = [
        _field("From", _mailbox(from_name, from_address)),
        _field("To", _address_list(mail.recipients)),
    ]
    if mail.cc:
        headers.append(_field("Cc", _address_list(mail.cc)))
    headers += [
        _field("Subject", _unstructured(rendered.subject)),
        _field("Date", format_datetime(mail.date)),
        _field("Message-ID", _structured(mail.message_id)),
    ]
    references = _references(mail.references, mail.in_reply_to)
    if mail.in_reply_to:
        headers.append(_field("In-Reply-To", _structured(mail.in_reply_to)))
    if references:
        headers.append(_field("References", _structured(" ".join(references))))
    token_address = mail.reply_to or reply_to_address(
        support_address, mail.reply_token_case, mail.reply_token_staff, secret
    )
    if token_address:
        headers.append(_field("Reply-To", _structured(token_address)))
    if mail.auto_submitted not in ("", HUMAN):
        headers.append(_field("Auto-Submitted", _structured(mail.auto_submitted)))
        headers.append("X-Auto-Response-Suppress: All")
    if mail.list_unsubscribe:
        headers.append(_field("List-Unsubscribe", _structured(mail.list_unsubscribe)))
        if "<http" in mail.list_unsubscribe:
            headers.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")  # RFC 8058
    headers.append("MIME-Version: 1.0")

    text = _text_part("plain", rendered.text)
    html = _text_part("html", rendered.html)
    content_type, body = _multipart("alternative", (text, html))
    if attachments:
        alternative = (_field("Content-Type", content_type) + CRLF + CRLF).encode("ascii") + body
        files = [_attachment_part(attachment) for attachment in attachments]
        content_type, body = _multipart("mixed", (alternative, *files))
    headers.append(_field("Content-Type", content_type))
    if mail.locale:
        headers.append(_field("Content-Language", _structured(mail.locale)))  # RFC 3282
    head = CRLF.join(headers) + CRLF + CRLF
    return head.encode("ascii") + body


def _references(references: Sequence[str], in_reply_to: str) -> list[str]:
    """The parent's References, then the parent's Message-ID (RFC 5322 §3.6.4), without repeats."""
    chain: list[str] = []
    for message_id in (*references, in_reply_to):
        if message_id and message_id not in chain:
            chain.append(message_id)
    if len(chain) > MAX_REFERENCES:
        # Keep the thread root and the most recent ids, as RFC 5322 §3.6.4 suggests.
        chain = [chain[0], *chain[-(MAX_REFERENCES - 1) :]]
    return chain


# ---------------------------------------------------------------------------------------------
# Header fields


def _field(name: str, value: str) -> str:
    """`Name: value`, folded before whitespace so lines stay within 78 characters where a
    whitespace allows it (RFC 5322 §2.2.3); unfolding (removing each CRLF) gives back `value`."""
    line = f"{name}: {value}"
    if len(line) <= FOLD_AT:
        return line
    words = value.split(" ")
    lines: list[str] = []
    current = f"{name}: {words[0]}"
    for word in words[1:]:
        if len(current) + 1 + len(word) > FOLD_AT and current.strip():
            lines.append(current)
            current = " " + word
        else:
            current += " " + word
    lines.append(current)
    if any(len(folded) > MAX_LINE for folded in lines):
        raise ValueError(f"the {name} header has a word longer than {MAX_LINE} characters")
    return CRLF.join(lines)


def _structured(value: str) -> str:
    """A value that must stay literal (ids, addresses, tokens): ASCII, no line breaks."""
    _single_line(value)
    if not value.isascii():
        raise ValueError(f"not an ASCII header value: {value!r}")
    return value


def _single_line(value: str) -> None:
    # A CR or LF in a value would end the header and start another one: header injection.
    if "\r" in value or "\n" in value:
        raise ValueError(f"a header value cannot contain a line break: {value!r}")


def _address_list(addresses: Iterable[str]) -> str:
    return ", ".join(_structured(address.strip()) for address in addresses)


def _mailbox(display_name: str, address: str) -> str:
    """`Name <address>`: quoted when the name has specials (RFC 5322 §3.4), encoded words when it
    is not ASCII (RFC 2047 §5(3))."""
    _structured(address)
    _single_line(display_name)
    display_name = _without_controls(display_name)
    if not display_name:
        return address
    if display_name.isascii():
        return formataddr((display_name, address))
    # Words that are not atoms (RFC 5322 §3.2.3) are encoded too: a quoted-string must not hold
    # encoded words (RFC 2047 §5(3)).
    # The longest words RFC 2047 allows: some decoders (Python's among them) wrongly keep the
    # space between two encoded words of a phrase, so a name is split only when it must be.
    phrase = _with_encoded_words(display_name, _is_atom, _ENCODED_WORD_MAX)
    return f"{phrase} <{address}>"


def _is_atom(word: str) -> bool:
    return bool(word) and all(char in _ATEXT for char in word) and "=?" not in word


def _is_plain_text(word: str) -> bool:
    return word.isascii() and word.isprintable() and "=?" not in word


def _without_controls(text: str) -> str:
    """`text` with every control character but CR and LF (C0, DEL, C1: an ISO-2022 escape a
    customer's client left in a subject, a NUL) replaced by a space and white space collapsed:
    they have no business in a header, encoded or not (RFC 5322 §3.2.5, RFC 2047 §5)."""
    if text.isprintable() and "\t" not in text:
        return text
    cleaned = "".join(
        char if char in "\r\n" or unicodedata.category(char) != "Cc" else " " for char in text
    )
    return " ".join(cleaned.split()) if cleaned != text else text


def _unstructured(text: str) -> str:
    """Unstructured text (RFC 5322 §3.2.5) in ASCII: the words that need it become RFC 2047
    encoded words; the rest stay readable."""
    _single_line(text)
    text = _without_controls(text)
    if _is_plain_text(text):
        return text
    return _with_encoded_words(text, _is_plain_text, _TEXT_WORD_MAX)


def _with_encoded_words(text: str, literal: Callable[[str], bool], longest: int) -> str:
    """`text` with every word that is not `literal` encoded. Runs of such words are encoded
    together, spaces included, because whitespace between two encoded words is dropped when they
    are decoded (RFC 2047 §6.2)."""
    out: list[str] = []
    run: list[str] = []
    for word in text.split(" "):
        if run and not word:
            run.append(word)  # a double space inside a run: kept inside the encoded words
        elif literal(word) or not word:
            if run:
                out += _encoded_words(" ".join(run), longest)
                run = []
            out.append(word)
        else:
            run.append(word)
    if run:
        out += _encoded_words(" ".join(run), longest)
    return " ".join(out)


def _encoded_words(text: str, longest: int) -> list[str]:
    """`text` as "Q" encoded words of at most 75 characters, never splitting a character's UTF-8
    bytes across two words (RFC 2047 §5)."""
    budget = longest - len(_EW_PREFIX) - len(_EW_SUFFIX)
    words: list[str] = []
    current = ""
    for char in text:
        encoded = "".join(_Q_BYTE[byte] for byte in char.encode("utf-8"))
        if len(current) + len(encoded) > budget:
            words.append(_EW_PREFIX + current + _EW_SUFFIX)
            current = ""
        current += encoded
    if current or not words:
        words.append(_EW_PREFIX + current + _EW_SUFFIX)
    return words


def _parameter(name: str, value: str) -> str:
    """`; name="value"` (RFC 2045 §5.1), or RFC 2231 `name*=utf-8''…` for a non-ASCII value."""
    if not name or not name.isascii() or any(char in _PARAM_NAME_FORBIDDEN for char in name):
        raise ValueError(f"not a MIME parameter name: {name!r}")
    _single_line(value)
    if value.isascii() and value.isprintable():
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'; {name}="{escaped}"'
    return f"; {name}*=utf-8''{quote(value, safe='')}"


# ---------------------------------------------------------------------------------------------
# Bodies


@functools.lru_cache(maxsize=8)
def _text_part(subtype: str, text: str) -> bytes:
    """A text/<subtype> part in UTF-8: 7bit when it is ASCII with short lines, else
    quoted-printable (lines of at most 76 characters, RFC 2045 §6.7). The last few are kept: the
    notices of one case to each technician of a team have the same text, encoded once."""
    data = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    if data.isascii() and b"\0" not in data and max(map(len, data.split(b"\n"))) <= FOLD_AT:
        encoding, body = "7bit", data
    else:
        encoding, body = "quoted-printable", binascii.b2a_qp(data, istext=True)
    if body and not body.endswith(b"\n"):
        body += b"\n"
    head = (
        f'Content-Type: text/{subtype}; charset="utf-8"{CRLF}'
        f"Content-Transfer-Encoding: {encoding}{CRLF}{CRLF}"
    )
    return head.encode("ascii") + body.replace(b"\n", b"\r\n")


def _attachment_part(attachment: MailAttachment) -> bytes:
    maintype, _, subtype = attachment.content_type.partition("/")
    maintype, subtype = maintype.strip().lower(), (subtype or "octet-stream").strip().lower()
    seven_bit = maintype == "message" and _is_seven_bit(attachment.data)
    if maintype == "message" and not seven_bit:
        # RFC 2046 §5.2.1: a message/* part may not be base64; an 8-bit forward travels as a file.
        maintype, subtype = "application", "octet-stream"
    content_type = _structured(f"{maintype}/{subtype}")
    content_type += "".join(_parameter(name, value) for name, value in attachment.params)
    disposition = "attachment" + _parameter("filename", attachment.filename)
    head = CRLF.join(
        (
            _field("Content-Type", content_type),
            _field("Content-Disposition", disposition),
            f"Content-Transfer-Encoding: {'7bit' if seven_bit else 'base64'}",
        )
    )
    if seven_bit:
        lines = attachment.data.replace(b"\r\n", b"\n").split(b"\n")
        return (head + CRLF + CRLF).encode("ascii") + b"\r\n".join(lines)
    body = base64.encodebytes(attachment.data).replace(b"\n", b"\r\n")  # lines of 76, RFC 2045 §6.8
    return (head + CRLF + CRLF).encode("ascii") + body


def _is_seven_bit(data: bytes) -> bool:
    """RFC 2045 §2.7: ASCII without NUL or bare CR, lines of at most 998 octets."""
    if not data.isascii() or b"\x00" in data:
        return False
    lines = data.replace(b"\r\n", b"\n").split(b"\n")
    return all(len(line) <= 998 and b"\r" not in line for line in lines)


def _multipart(subtype: str, parts: Sequence[bytes]) -> tuple[str, bytes]:
    """(Content-Type value, body) of a multipart/<subtype> holding `parts` (each with its headers).

    The CRLF before each delimiter belongs to the delimiter, not to the part before it (RFC 2046
    §5.1.1), so it is written after every part: a part's own final line break survives."""
    while True:
        boundary = f"=_mc{secrets.token_hex(12)}"
        marker = boundary.encode("ascii")
        if not any(marker in part for part in parts):
            break
    delimiter = b"--" + marker
    chunks: list[bytes] = []
    for part in parts:
        chunks += (delimiter, b"\r\n", part, b"\r\n")
    chunks += (delimiter, b"--\r\n")
    return f'multipart/{subtype}; boundary="{boundary}"', b"".join(chunks)
