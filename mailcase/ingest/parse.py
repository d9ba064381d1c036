"""Raw RFC 5322 bytes in, one decoded `InboundMessage` out; it decides nothing and stores nothing.

The MIME tree is the stdlib `email` package's (compat32), fed in pieces (the tree
`email.message_from_bytes` builds, without its whole-message copies); if that parser raises (a
nesting bomb raises RecursionError), the header block alone is read. Over that one tree a single
pass extracts what the rules need, with our own decoding policy, because mail-parser's body
extraction falls short where support mail lives: it decodes an undeclared 8-bit body as UTF-8
with replacement characters (no Windows-1252 guess), takes a mislabelled "iso-8859-1" UTF-8
body at its word, mixes a forwarded message's or a bounce's returned text into the body, and
hands attachments back as base64 text. mail-parser still reads the tree when our pass finds no
text at all (it takes a named inline text part, which we file as an attachment, for the body),
and only then: run on every message, its second pass over the tree was about a third of
`parse_message`'s CPU for text that was almost never used (issue 16, bench/ingest).

Decoding policy:
* Headers: RFC 2047 encoded words (adjacent words of one charset joined before decoding, so
  a character split across words survives), raw 8-bit header bytes (RFC 6532 UTF-8, or a
  legacy charset), folding removed.
* Bodies: the declared charset; labels "us-ascii"/"iso-8859-1" read as Windows-1252 as
  browsers do (WHATWG Encoding); valid UTF-8 under a single-byte label is UTF-8; otherwise
  UTF-8, then Windows-1252, then Latin-1, every guess recorded in `defects`
  ("charset-guess:cp1252 for text/plain").
* Attachment names: RFC 2231 parameters (charset, continuations) and the RFC 2047 words
  some clients put there.

Nothing here raises for hostile input except `UnparseableMessage`, and only when nothing
usable is there (empty input, no header block, binary data); the pipeline then holds the
raw bytes whole (SPEC.md §3 "Nothing lost").
"""

from __future__ import annotations

import base64
import binascii
import codecs
import email
import email.errors
import email.parser
import email.policy
import email.utils
import hashlib
import html
import logging
import mimetypes
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from typing import Any, Protocol

import charset_normalizer
import inscriptis
import mailparser
from inscriptis.css_profiles import CSS_PROFILES
from inscriptis.model.config import ParserConfig
from tnefparse.tnef import TNEF

from mailcase.domain import AttachmentPart, AutoKind, BounceReport, InboundMessage
from mailcase.errors import MailcaseError
from mailcase.ingest.mimebounds import mime_shape
from mailcase.ingest.quotes import strip_quoted
from mailcase.rules.classify import classify_auto

log = logging.getLogger(__name__)

MAX_REFERENCES = 50
"""References kept per message, newest last; long threads carry hundreds and the newest decide."""
DEFAULT_MAX_MIME_DEPTH = 50
DEFAULT_MAX_MIME_PARTS = 1000
MAX_HEADERS = 1000
"""Header fields kept; a message with more is hostile and the rest are dropped (recorded)."""
MAX_DEPTH = 64
"""MIME nesting followed; deeper parts are skipped (recorded). Real mail nests a handful."""
MAX_TEXT_PART_BYTES = 2_000_000
"""Bytes of one text part decoded into the message's text; the rest is only in the raw message,
which is kept whole. Reading a 25 MB pasted log as text cost about 8x its size at once (every
normalising pass copies it), which no support case needs (bench/ingest, peak RSS)."""
MAX_HTML_FOR_CONVERSION = 1_000_000
"""Characters of HTML given to inscriptis; larger HTML gets a plain tag strip."""

_KNOWN_HEADERS = frozenset(
    {"from", "sender", "to", "cc", "subject", "date", "message-id", "received", "return-path",
     "mime-version", "content-type", "reply-to", "in-reply-to", "references", "delivered-to"}
)
_FIELD_LINE = re.compile(rb"^[!-9;-~]+[ \t]*:")
_MSG_ID = re.compile(r"<([^<>\s]+)>")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_LINE_BREAKS = re.compile(r"[\r\n]+")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_Q_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
_META_CHARSET = re.compile(
    rb"""<meta[^>]{0,200}?charset\s*=\s*["']?([A-Za-z0-9_:.\-]{1,40})""", re.IGNORECASE
)
_QUOTED_MESSAGE_ID = re.compile(
    r"^[ \t>]*Message-ID:[ \t]*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE
)
_STATUS_CODE = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
_ANGLE_RECIPIENT = re.compile(r"^[ \t]*<([^<>\s@]+@[^<>\s]+)>:", re.MULTILINE)
_EXIM_FAILED = re.compile(
    r"following address(?:\(es\)|es)? failed:\s*\n((?:[ \t]*\S+@\S+[^\n]*\n?)+)", re.IGNORECASE
)
_BARE_ADDRESS = re.compile(r"[^\s<>():;,\"']+@[^\s<>():;,\"']+")
_SURROGATES = re.compile(r"[\udc80-\udcff]")
# Spelled with a literal prefix, which the regex engine looks for with a fast scan; "\n{3,}"
# is tried at every character (~26 us over a 2 KB body instead of ~1.3).
_BLANK_RUNS = re.compile(r"\n\n\n+")
# A "--boundary" line followed by a header line: how a lost boundary is found again.
_BOUNDARY_LINE = re.compile(
    rb"^--([^\r\n]{1,200}?)[ \t]*\r?\n(?=[A-Za-z][A-Za-z0-9-]*:)", re.MULTILINE
)
_HTML_STYLE = re.compile(r"<(style|script|head)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_HTML_BREAK = re.compile(r"<\s*(?:br|/p|/div|/tr|/li|/h[1-6])\b[^>]*>", re.IGNORECASE)
_HTML_TAG = re.compile(r"<[^>]*>")

# Labels whose bytes browsers read as Windows-1252 (WHATWG Encoding §4.2); UTF-8 wearing one
# of them is recognised first.
_SINGLE_BYTE_LABELS = frozenset(
    {"us-ascii", "ascii", "iso-8859-1", "iso8859-1", "latin-1", "latin1", "l1", "cp819",
     "iso_8859-1", "windows-1252", "cp1252", "x-cp1252", "ansi_x3.4-1968"}
)
# Superset codecs for labels mail clients use loosely.
_CHARSET_SUPERSETS = {"gb2312": "gb18030", "gbk": "gb18030", "ks_c_5601-1987": "cp949",
                      "euc-kr": "cp949", "shift_jis": "cp932", "sjis": "cp932", "tis-620": "cp874"}


class UnparseableMessage(MailcaseError):
    """Nothing usable could be read from the bytes; the caller keeps them whole and holds them."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_message(
    data: bytes,
    *,
    envelope_from: str | None = None,
    max_depth: int = DEFAULT_MAX_MIME_DEPTH,
    max_parts: int = DEFAULT_MAX_MIME_PARTS,
) -> InboundMessage:
    """Decode a raw message once into everything the rules look at.

    `envelope_from` is the SMTP MAIL FROM when the channel knows it ("" for the null sender
    `<>`); it only feeds the auto-reply classification (a null sender marks machine mail).
    Raises `UnparseableMessage` when there is no usable message in `data`, or when its MIME
    tree is deeper than `max_depth` or has more than `max_parts` parts (checked in one linear
    scan before any tree is built: the parsers' cost grows with the square of the depth).
    """
    raw_sha256 = hashlib.sha256(data).hexdigest()
    defects: list[str] = []
    message_bytes = _usable_bytes(data, defects)
    beyond = mime_shape(message_bytes, max_depth=max_depth, max_parts=max_parts).beyond(
        max_depth=max_depth, max_parts=max_parts
    )
    if beyond:
        raise UnparseableMessage(beyond)
    tree, whole = _build_tree(message_bytes, defects)

    header_pairs = _decoded_headers(tree, defects)
    if not any(name.lower() in _KNOWN_HEADERS for name, _ in header_pairs):
        raise UnparseableMessage("no recognisable header field (From, To, Subject, Date, …)")
    first = _first_values(tree)

    authors = _authors(tree, defects)
    if len(authors) == 1:
        from_name, from_address = authors[0]
    else:
        # None or several: the rules hold the message for that reason. The lenient reading
        # (Sender:, a bare "MAILER-DAEMON") still feeds the bounce and auto-reply classification.
        from_name, from_address = authors[0] if authors else _sender(first, defects)
    if not from_address:
        defects.append("no-from-address")
    subject = " ".join(_decode_header_text(first.get("subject", ""), "Subject", defects).split())
    content_type = _unfold(first.get("content-type", "")) or "text/plain"

    extraction = _Extraction(defects)
    text = extraction.readable_text(tree, depth=0, collect=True)
    if not text.strip() and whole:
        text = _mail_parser_text(tree, defects)
        if text:
            defects.append("body-from-mail-parser")

    message_id = _first_message_id(first.get("message-id", ""))
    if not message_id:
        defects.append("no-message-id")
    auto_kind, auto_reason = classify_auto(header_pairs, from_address, envelope_from, content_type)
    bounce = extraction.bounce_report(text, first) if auto_kind is AutoKind.BOUNCE else None
    attachments = tuple(extraction.attachments)

    return InboundMessage(
        message_id=message_id,
        in_reply_to=_first_message_id(first.get("in-reply-to", "")),
        references=_message_ids(first.get("references", ""))[-MAX_REFERENCES:],
        from_address=from_address,
        from_name=from_name,
        to=_address_list(first.get("to"), defects, "To"),
        cc=_address_list(first.get("cc"), defects, "Cc"),
        reply_to=_address_list(first.get("reply-to"), defects, "Reply-To"),
        subject=subject,
        text=text,
        new_text=strip_quoted(text),
        date=_date(first.get("date"), defects),
        auto_kind=auto_kind,
        auto_reason=auto_reason,
        content_digest=content_digest(from_address, subject, text, attachments),
        raw_sha256=raw_sha256,
        headers=header_pairs,
        attachments=attachments,
        defects=tuple(dict.fromkeys(defects)),
        bounce=bounce,
        from_addresses=tuple(dict.fromkeys(address for _, address in authors)),
    )


def content_digest(
    from_address: str, subject: str, text: str, attachments: Sequence[AttachmentPart] = ()
) -> str:
    """SHA-256 of the normalised sender, subject, body text and attachment digests (SPEC.md §3).

    Normalised so the same message through SMTP and IMAP digests the same: line endings,
    trailing spaces and surrounding blank lines do not count. Attachments count because
    templates that reuse a Message-ID also reuse their text ("Scanned document").
    """
    body = "\n".join(line.rstrip() for line in text.splitlines()).strip("\n")
    parts = [from_address.strip().lower(), " ".join(subject.split()), body]
    parts.extend(sorted(attachment.sha256 for attachment in attachments))
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


# --------------------------------------------------------------------------------------------
# Getting a tree
# --------------------------------------------------------------------------------------------


def _usable_bytes(data: bytes, defects: list[str]) -> bytes:
    """The bytes from the header block on, or `UnparseableMessage` when there is none.

    A stray NUL in the header block (a broken gateway, a fuzzer) is removed and recorded as the
    defect `nul-in-header`: holding the whole message for it would leave an MPOC's case unopened.
    A header block that is mostly NULs is binary data, not mail, and is refused as before.
    """
    if not data.strip():
        raise UnparseableMessage("empty message")
    start = len(data) - len(data.lstrip(b"\r\n"))
    if data.startswith(b"From ", start):
        # An mbox separator line (RFC 4155) before the header block.
        newline = data.find(b"\n", start)
        start = len(data) if newline < 0 else newline + 1
    head_end = data.find(b"\n\n", start)
    crlf_end = data.find(b"\r\n\r\n", start)
    if crlf_end >= 0 and (head_end < 0 or crlf_end < head_end):
        head_end = crlf_end
    head = data[start : head_end if head_end >= 0 else min(len(data), start + 65536)]
    nuls = head.count(b"\x00")
    if nuls and nuls * _BINARY_NUL_SHARE >= len(head):
        raise UnparseableMessage("binary data where the header block should be")
    if not _FIELD_LINE.match(head.replace(b"\x00", b"")):
        raise UnparseableMessage("no header block: the first line is not a header field")
    if nuls:
        defects.append(f"nul-in-header:{nuls}")
        return head.replace(b"\x00", b"") + data[start + len(head) :]
    return data[start:] if start else data


_BINARY_NUL_SHARE = 8
"""A header block with at least one NUL in this many bytes is binary data, not a damaged header."""


_FEED_PIECE = 8192
"""Bytes per `feed`: the piece size `email.parser.Parser` reads a file with, so that the tree
built is exactly the one `email.message_from_bytes` builds."""


def _fed_tree(data: bytes) -> Message:
    """`email.message_from_bytes(data)` (compat32) at a fraction of its peak memory."""
    parser = email.parser.BytesFeedParser()
    view = memoryview(data)
    for start in range(0, len(data), _FEED_PIECE):
        parser.feed(bytes(view[start : start + _FEED_PIECE]))
    return parser.close()


def _build_tree(data: bytes, defects: list[str]) -> tuple[Message, bool]:
    """(root part, whether it is the whole MIME tree) with the fallbacks of the module docstring.

    There is no second stdlib attempt (`email.message_from_bytes`) after the fed parse fails:
    it is the same parser over the same pieces, with more stack frames and more memory, so it
    can only fail the same way.
    """
    try:
        return _fed_tree(data), True
    except Exception as exc:
        defects.append(f"parser-fallback:headers-only ({type(exc).__name__})")
        log.info("the MIME parser gave up (%s); reading the header block alone", type(exc).__name__)
    try:
        message = email.parser.BytesHeaderParser().parsebytes(data)
    except Exception as exc:
        raise UnparseableMessage(f"the header block cannot be read ({type(exc).__name__})") from exc
    # The body stays one unparsed string; the walk reads it as text, so its words are kept.
    return message, False


class MailParserResult(Protocol):
    """What is read of a `mailparser.MailParser` (mail-parser ships no types): the bodies it
    decoded."""

    @property
    def text_plain(self) -> list[str]: ...
    @property
    def text_html(self) -> list[str]: ...


def _mail_parser_text(tree: Message, defects: list[str]) -> str:
    """mail-parser's text of `tree`, for a message our own pass found no text in; "" when it
    finds none or raises (recorded as `parser-fallback:stdlib`: the stdlib reading stands)."""
    try:
        parsed: MailParserResult = mailparser.MailParser(tree)
    except Exception as exc:
        defects.append(f"parser-fallback:stdlib ({type(exc).__name__})")
        log.info("mail-parser gave up (%s); keeping the stdlib reading", type(exc).__name__)
        return ""
    plain = [t for t in getattr(parsed, "text_plain", []) or [] if isinstance(t, str) and t.strip()]
    if plain:
        return _tidy("\n\n".join(plain))
    markup = [t for t in getattr(parsed, "text_html", []) or [] if isinstance(t, str) and t.strip()]
    return _html_to_text("\n".join(markup)) if markup else ""


# --------------------------------------------------------------------------------------------
# Headers
# --------------------------------------------------------------------------------------------


def _raw_items(part: Message) -> Iterable[tuple[str, str]]:
    for name, value in part.raw_items():
        yield str(name), value if isinstance(value, str) else str(value)


def _decoded_headers(tree: Message, defects: list[str]) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for index, (name, value) in enumerate(_raw_items(tree)):
        if index >= MAX_HEADERS:
            defects.append(f"headers-truncated:{MAX_HEADERS}")
            break
        pairs.append((name, _decode_header_text(value, name, defects)))
    return tuple(pairs)


def _first_values(tree: Message) -> dict[str, str]:
    first: dict[str, str] = {}
    for name, value in _raw_items(tree):
        first.setdefault(name.strip().lower(), value)
    return first


def _unfold(value: str) -> str:
    """RFC 5322 §2.2.3 unfolding (CRLF before white space removed) and stray line breaks."""
    if "\n" not in value and "\r" not in value:
        return value.strip()  # one line already (most fields)
    return _LINE_BREAKS.sub(" ", _FOLD.sub("", value)).strip()


def _has_surrogates(value: str) -> bool:
    """Whether `value` carries raw 8-bit bytes (the stdlib's surrogate escapes)."""
    return not value.isascii() and _SURROGATES.search(value) is not None


def _decode_header_text(raw: str, name: str, defects: list[str]) -> str:
    value = _unfold(raw)
    if _has_surrogates(value):
        # Raw 8-bit bytes in a header: UTF-8 per RFC 6532, else a legacy charset (a guess).
        raw_bytes = value.encode("ascii", "surrogateescape")
        value = _decode_bytes(raw_bytes, "utf-8", f"header {name}", defects)
    if "=?" in value:
        value = _decode_encoded_words(value, name, defects)
    return value.strip()


def _decode_encoded_words(value: str, name: str, defects: list[str]) -> str:
    """RFC 2047 §6: decode encoded words; white space between two adjacent words is dropped."""
    pieces: list[tuple[str | bytes, str | None]] = []
    position = 0
    previous_end = -1
    for match in _ENCODED_WORD.finditer(value):
        between = value[position : match.start()]
        adjacent = previous_end == match.start() or (previous_end >= 0 and not between.strip())
        if between and not adjacent:
            pieces.append((between, None))
        charset = match.group(1).split("*", 1)[0].lower()  # RFC 2231 §5 language suffix
        payload = match.group(3)
        data = _b_decode(payload) if match.group(2) in "bB" else _q_decode(payload)
        if data is None:
            pieces.append((match.group(0), None))
        elif adjacent and pieces and isinstance(pieces[-1][0], bytes) and pieces[-1][1] == charset:
            # Clients split a multi-byte character across two words; join before decoding.
            pieces[-1] = (pieces[-1][0] + data, charset)
        else:
            pieces.append((data, charset))
        position = previous_end = match.end()
    if position < len(value):
        pieces.append((value[position:], None))
    decoded = []
    for chunk, charset in pieces:
        if isinstance(chunk, bytes):
            decoded.append(_decode_bytes(chunk, charset, f"header {name}", defects))
        else:
            decoded.append(chunk)
    return "".join(decoded)


def _b_decode(payload: str) -> bytes | None:
    cleaned = re.sub(r"[^A-Za-z0-9+/]", "", payload)
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError):
        return None


def _q_decode(payload: str) -> bytes:
    raw = payload.replace("_", " ").encode("utf-8", "surrogateescape")
    return _Q_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), raw)


# RFC 5322 atext without "=" and "?", so that no atom can hold an encoded word.
_ATOM = r"[A-Za-z0-9!#$%&'*+/^_`{|}~-]+"
_DOT_ATOM = rf"{_ATOM}(?:\.{_ATOM})*"
_SIMPLE_MAILBOX = re.compile(
    rf"[ \t]*(?:(?:(?P<name>{_ATOM}(?:[ \t]+{_ATOM})*)[ \t]*)?<(?P<angle>{_DOT_ATOM}@{_DOT_ATOM})>"
    rf"|(?P<bare>{_DOT_ATOM}@{_DOT_ATOM}))[ \t]*"
)


def _simple_mailboxes(value: str) -> list[tuple[str, str]] | None:
    """(display name, address) of each mailbox of an address field in the shape nearly all
    have, "Name <local@domain>" or a bare address, comma-separated, the name plain ASCII words;
    None for any other shape. Both stdlib address parsers read these fields exactly so (no
    quotes, comments, dots, groups or encoded words to interpret), at a small fraction of
    their cost: the RFC 5322 parser took ~120 us of a ~600 us parse for one From field."""
    mailboxes = []
    for piece in value.split(","):
        found = _SIMPLE_MAILBOX.fullmatch(piece)
        if found is None:
            return None
        mailboxes.append((found["name"] or "", found["angle"] or found["bare"]))
    return mailboxes


def _addresses(
    raw: str | None, defects: list[str], name: str, *, keep_bare_names: bool = False
) -> list[tuple[str, str]]:
    """(display name, lower-cased bare address) pairs; names decoded after splitting."""
    if not raw:
        return []
    value = _unfold(raw)
    if _has_surrogates(value):
        raw_bytes = value.encode("ascii", "surrogateescape")
        value = _decode_bytes(raw_bytes, "utf-8", f"header {name}", defects)
    result: list[tuple[str, str]] = []
    parsed = _simple_mailboxes(value)
    if parsed is None:
        try:
            parsed = email.utils.getaddresses([value])
        except Exception:
            defects.append(f"bad-address-header:{name}")
            return []
    for display, address in parsed:
        address = address.strip().strip("<>").strip().lower()
        if not address or ("@" not in address and not keep_bare_names):
            continue
        if "=?" in display:
            display = _decode_encoded_words(display, name, defects)
        result.append((" ".join(display.split()), address))
    return result


_ANGLE_ADDR = re.compile(r"<([^<>\s]+@[^<>\s]+)>\s*$")


def _authors(tree: Message, defects: list[str]) -> list[tuple[str, str]]:
    """(display name, lower-cased address) of every mailbox in every From field, read once by
    RFC 5322 (`email.headerregistry`): encoded words are decoded only inside the display name,
    after the structure is known, so `=?utf-8?q?x:pat@acme.example,?= <attacker@evil.example>`
    is the attacker's address with an odd name, and a display name never supplies an address.

    A field that is not a valid address list (`pat@acme.example <attacker@evil.example>`: an
    `@` is not allowed in a display name) is read by its structure as a name-addr: the address
    is the one in the trailing angle brackets, as DMARC implementations read it; anything else
    invalid yields no address (held: "no From address").
    """
    found: list[tuple[str, str]] = []
    for name, value in _raw_items(tree):
        if name.strip().lower() != "from":
            continue
        text = _unfold(value)
        if _has_surrogates(text):
            text = _decode_bytes(text.encode("ascii", "surrogateescape"), "utf-8", "header From", defects)
        simple = _simple_mailboxes(text)
        if simple is not None:
            mailboxes, invalid = simple, False
        else:
            try:
                header: Any = email.policy.default.header_factory("From", text)
                mailboxes = [(a.display_name, a.addr_spec) for a in header.addresses]
                invalid = any(
                    isinstance(d, email.errors.InvalidHeaderDefect) for d in header.defects
                )
            except Exception:
                mailboxes, invalid = [], True
        if invalid:
            defects.append("from-not-rfc5322")
            angle = _ANGLE_ADDR.search(text)
            mailboxes = [("", angle.group(1))] if angle and text.count("<") == 1 else []
        for display, address in mailboxes:
            address = address.strip().lower()
            local, _, domain = address.rpartition("@")
            if not local or not domain or " " in address:
                continue
            found.append((" ".join(str(display).split()), address))
    return found


def _sender(first: dict[str, str], defects: list[str]) -> tuple[str, str]:
    """(name, address) of the author: the first From mailbox with a domain, else Sender's.

    A bare word is kept only when nothing better exists ("From: MAILER-DAEMON").
    """
    candidates = _addresses(first.get("from"), defects, "From", keep_bare_names=True)
    candidates += _addresses(first.get("sender"), defects, "Sender", keep_bare_names=True)
    for name, address in candidates:
        if "@" in address:
            return name, address
    for name, address in candidates:
        if " " not in address:
            return name, address
    return "", ""


def _address_list(raw: str | None, defects: list[str], name: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(address for _, address in _addresses(raw, defects, name)))


def _message_ids(raw: str) -> tuple[str, ...]:
    value = _unfold(raw)
    found = [f"<{token}>" for token in _MSG_ID.findall(value)]
    if not found:
        # Some clients drop the angle brackets; a token with "@" is still an id.
        found = [f"<{token.strip('<>')}>" for token in value.split() if "@" in token]
    return tuple(dict.fromkeys(found))


def _first_message_id(raw: str) -> str:
    ids = _message_ids(raw)
    return ids[0] if ids else ""


def _date(raw: str | None, defects: list[str]) -> datetime | None:
    if not raw:
        return None
    try:
        value = email.utils.parsedate_to_datetime(_unfold(raw))
    except (TypeError, ValueError, IndexError, OverflowError):
        defects.append("bad-date")
        return None
    if value is None:
        defects.append("bad-date")
        return None
    if value.tzinfo is None:
        # RFC 5322 §3.3: "-0000" means the time is UTC with no information about the zone.
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


# --------------------------------------------------------------------------------------------
# Charsets
# --------------------------------------------------------------------------------------------


def _codec(label: str | None) -> str | None:
    """The Python text codec for a charset label, or None when unknown or not a text codec."""
    if not label:
        return None
    cleaned = label.strip().strip("\"'").strip().lower()
    cleaned = _CHARSET_SUPERSETS.get(cleaned, cleaned)
    if not cleaned:
        return None
    try:
        info = codecs.lookup(cleaned)
    except (LookupError, ValueError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in {"undefined"}:
        return None
    return info.name


def _decode_bytes(data: bytes, declared: str | None, where: str, defects: list[str]) -> str:
    """Text of `data`: the declared charset, else a detected one (each guess recorded in `defects`)."""
    if not data:
        return ""
    label = (declared or "").strip().strip("\"'").strip().lower()
    codec = _codec(label)
    if data.isascii():
        # 7-bit encodings (ISO-2022-JP/KR/CN, UTF-7, HZ) look like ASCII but are not: decode them,
        # or their escape sequences end up in the case subject and in our replies.
        if codec in _SEVEN_BIT_CODECS:
            try:
                return data.decode(codec)
            except (UnicodeError, LookupError):
                pass
        elif b"\x1b" in data:
            for candidate in ("iso2022_jp_2", "iso2022_kr"):
                try:
                    text = data.decode(candidate)
                except UnicodeError:
                    continue
                defects.append(f"charset-guess:{candidate} for {where} (escape sequences, declared {label or 'nothing'})")
                return text
        return data.decode("ascii")
    if label and label in _SINGLE_BYTE_LABELS:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            defects.append(f"charset-guess:utf-8 for {where} (declared {label})")
            return text
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError:
            pass
        else:
            if _codec(label) == "ascii":
                # 8-bit bytes cannot be US-ASCII; Windows-1252 is what such mail turns out to be.
                defects.append(f"charset-guess:cp1252 for {where} (declared {label})")
            return text
        defects.append(f"charset-guess:latin-1 for {where} (declared {label})")
        return data.decode("latin-1")
    if codec is not None:
        try:
            return data.decode(codec)
        except (UnicodeError, LookupError):
            defects.append(f"charset-mislabelled:{label} for {where}")
    elif label:
        defects.append(f"unknown-charset:{label} for {where}")
    return _guess(data, where, defects)


_SEVEN_BIT_CODECS = frozenset(
    {"iso2022_jp", "iso2022_jp_1", "iso2022_jp_2", "iso2022_jp_2004", "iso2022_jp_3", "iso2022_jp_ext",
     "iso2022_kr", "utf-7", "utf_7", "hz"}
)
# Code pages for Latin-script text: when charset-normalizer picks one of these for bytes that are
# valid Windows-1252, the browser default wins (short Western text is where detectors disagree).
_LATIN_CODECS = frozenset(
    {"cp1250", "cp1252", "cp1254", "cp1257", "latin_1", "iso8859_2", "iso8859_3", "iso8859_4",
     "iso8859_9", "iso8859_10", "iso8859_13", "iso8859_14", "iso8859_15", "iso8859_16", "mac_roman",
     "mac_latin2", "mac_iceland", "mac_turkish", "cp437", "cp850", "cp858"}
)
_C1_CONTROLS = re.compile("[\x80-\x9f]")


def _guess(data: bytes, where: str, defects: list[str]) -> str:
    """Undeclared or mislabelled bytes: UTF-8 when valid, else what charset-normalizer detects
    (its language models beat hand-written rules for Cyrillic, CJK, Greek …), with Windows-1252
    kept for Latin-script text, and Latin-1 when nothing else reads the bytes."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        defects.append(f"charset-guess:utf-8 for {where}")
        return text
    lenient = data.decode("utf-8", "replace")
    replaced = lenient.count("\ufffd")
    non_ascii = len(lenient) - len(lenient.encode("ascii", "ignore"))
    if replaced * 10 <= non_ascii - replaced:
        # Mostly valid UTF-8 with a few broken bytes: better than mojibake everywhere.
        defects.append(f"charset-guess:utf-8 with replacement for {where}")
        return lenient
    try:
        western: str | None = data.decode("cp1252")
    except UnicodeDecodeError:
        western = None
    best = None
    try:
        best = charset_normalizer.from_bytes(data[:_DETECT_BYTES]).best()
    except Exception:
        best = None
    detected = _codec(best.encoding) if best is not None else None
    if detected and not (western is not None and detected in _LATIN_CODECS):
        try:
            text = data.decode(detected)
        except (UnicodeError, LookupError):
            pass
        else:
            defects.append(f"charset-guess:{detected} for {where}")
            return text
    if western is not None and not _C1_CONTROLS.search(western):
        defects.append(f"charset-guess:cp1252 for {where}")
        return western
    defects.append(f"charset-guess:latin-1 for {where}")
    return data.decode("latin-1")


_DETECT_BYTES = 64 * 1024
"""Bytes given to charset-normalizer; its verdict on the first 64 KB holds for the rest."""


# --------------------------------------------------------------------------------------------
# Bodies, attachments and delivery reports: one pass over the tree
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Extraction:
    """State of the single pass: attachments found, report blocks, returned message headers."""

    defects: list[str]
    attachments: list[AttachmentPart] = field(default_factory=list)
    status_blocks: list[Message] = field(default_factory=list)
    returned_ids: list[str] = field(default_factory=list)

    def readable_text(self, root: Message, *, depth: int, collect: bool) -> str:
        """The readable text of one message (not of the messages it forwards, which follow it)."""
        segments: list[tuple[str, str]] = []
        self._walk(root, depth, segments, body=True, collect=collect)
        plain = [text for kind, text in segments if kind == "plain" and text.strip()]
        if plain:
            main = "\n\n".join(plain)
        else:
            markup = [text for kind, text in segments if kind == "html" and text.strip()]
            main = "\n\n".join(_html_to_text(text) for text in markup)
        forwarded = [text for kind, text in segments if kind == "forward"]
        return _tidy("\n\n".join(piece for piece in (main, *forwarded) if piece.strip()))

    def _walk(
        self, part: Message, depth: int, out: list[tuple[str, str]], *, body: bool, collect: bool
    ) -> None:
        if depth > MAX_DEPTH:
            self.defects.append(f"nesting-too-deep:{MAX_DEPTH}")
            return
        self._note_defects(part)
        content_type = _content_type(part)
        disposition = _disposition(part)
        if content_type.startswith("multipart/"):
            children = _payload(part)
            if not isinstance(children, list):
                self._walk_broken_multipart(
                    part, content_type, depth, out, body=body, collect=collect
                )
            elif content_type == "multipart/alternative":
                self._walk_alternative(children, depth, out, body=body, collect=collect)
            elif content_type == "multipart/report":
                for index, child in enumerate(children):
                    if isinstance(child, Message):
                        self._walk(child, depth + 1, out, body=body and index == 0, collect=collect)
            else:
                for child in children:
                    if isinstance(child, Message):
                        self._walk(child, depth + 1, out, body=body, collect=collect)
            return
        if content_type in {"message/rfc822", "message/global"}:
            self._walk_forwarded(part, depth, out, body=body, collect=collect)
            return
        if content_type == "message/delivery-status":
            self._read_status(part)
            return
        if content_type == "text/rfc822-headers":
            self._read_returned_headers(
                _part_text(part, content_type, self.defects, _type_params(part))
            )
            return
        params = _type_params(part)
        named = bool(_filename(part, self.defects, params))
        readable = content_type in {"text/plain", "text/html"}
        if readable and disposition != "attachment" and not named:
            self._note_decoding_defects(part)
            if body:
                kind = "plain" if content_type == "text/plain" else "html"
                out.append((kind, _part_text(part, content_type, self.defects, params)))
            return
        if collect:
            self._attach(part, content_type, disposition, params)

    def _walk_alternative(
        self,
        children: list[Any],
        depth: int,
        out: list[tuple[str, str]],
        *,
        body: bool,
        collect: bool,
    ) -> None:
        # RFC 2046 §5.1.4: the same content in several forms. We prefer plain text; every
        # alternative is still walked once, for the inline images an HTML form carries.
        ranked = sorted(
            (child for child in children if isinstance(child, Message)),
            key=lambda child: _alternative_rank(child),
        )
        chosen = False
        for child in ranked:
            segments: list[tuple[str, str]] = []
            self._walk(child, depth + 1, segments, body=body and not chosen, collect=collect)
            if not chosen and any(text.strip() for kind, text in segments if kind != "forward"):
                out.extend(segments)
                chosen = True

    def _walk_broken_multipart(
        self,
        part: Message,
        content_type: str,
        depth: int,
        out: list[tuple[str, str]],
        *,
        body: bool,
        collect: bool,
    ) -> None:
        raw = _payload_bytes(part)
        match = _BOUNDARY_LINE.search(raw)
        if match is not None and depth < MAX_DEPTH:
            boundary = match.group(1).decode("ascii", "replace").replace('"', "")
            header = f'Content-Type: {content_type}; boundary="{boundary}"\r\n\r\n'
            rebuilt: Message | None
            try:
                rebuilt = email.message_from_bytes(header.encode("ascii", "replace") + raw)
            except Exception:
                rebuilt = None
            if rebuilt is not None and rebuilt.is_multipart():
                self.defects.append(f"boundary-recovered for {content_type}")
                self._walk(rebuilt, depth + 1, out, body=body, collect=collect)
                return
        self.defects.append(f"multipart-without-parts:{content_type}")
        if body:
            charset = _param(_type_params(part), "charset")
            text = _decode_bytes(raw, charset or None, content_type, self.defects)
            out.append(("plain", text))

    def _walk_forwarded(
        self, part: Message, depth: int, out: list[tuple[str, str]], *, body: bool, collect: bool
    ) -> None:
        inner = _inner_message(part)
        if inner is None:
            if collect:
                self._attach(part, _content_type(part), _disposition(part), _type_params(part))
            return
        self._read_returned_headers_from(inner)
        if collect:
            name = _filename(part, self.defects, _type_params(part))
            if not name:
                raw_subject = str(inner.get("Subject", "") or "")
                inner_subject = _decode_header_text(raw_subject, "Subject", self.defects)
                name = f"{_safe_name(inner_subject) or 'forwarded-message'}.eml"
            data = _flatten(inner)
            self.attachments.append(
                AttachmentPart(
                    filename=name,
                    content_type="message/rfc822",
                    data=data,
                    sha256=hashlib.sha256(data).hexdigest(),
                    inline=_disposition(part) == "inline",
                )
            )
        if body:
            # The forwarded message's own attachments live inside the .eml kept above.
            inner_text = self.readable_text(inner, depth=depth + 1, collect=False)
            out.append(("forward", _forward_block(inner, inner_text, self.defects)))

    def _attach(self, part: Message, content_type: str, disposition: str, params: _Params) -> None:
        data = _payload_bytes(part)
        content_id = _unfold(str(part.get("Content-ID", "") or "")).strip().strip("<>").strip()
        name = _filename(part, self.defects, params)
        if content_type in _TNEF_TYPES or name.lower() == "winmail.dat":
            unpacked = _tnef_files(data, self.defects)
            if unpacked:
                self.attachments.extend(unpacked)
                return
        name = name or _invented_name(content_type, content_id, len(self.attachments))
        self.attachments.append(
            AttachmentPart(
                filename=name,
                content_type=content_type,
                data=data,
                sha256=hashlib.sha256(data).hexdigest(),
                inline=disposition == "inline" or (not disposition and bool(content_id)),
                content_id=content_id,
            )
        )

    def _note_defects(self, part: Message) -> None:
        for defect in getattr(part, "defects", ()) or ():
            self.defects.append(f"mime:{type(defect).__name__}")

    def _note_decoding_defects(self, part: Message) -> None:
        """Damaged base64 in a text part (bad characters, bad padding): the stdlib finds it only
        while decoding, so the part is decoded its way once for the defects it adds (our own
        decoding, `_payload_bytes`, takes a faster route that reports nothing)."""
        if str(part.get("Content-Transfer-Encoding", "")).lower() != "base64":
            return  # the stdlib's own test: only then does it decode base64
        defects = getattr(part, "defects", None)
        if not isinstance(defects, list):
            return
        known = len(defects)
        try:
            part.get_payload(decode=True)
        except Exception:
            return
        for defect in defects[known:]:
            self.defects.append(f"mime:{type(defect).__name__}")

    # ---- RFC 3464 delivery status notifications

    def _read_status(self, part: Message) -> None:
        payload = _payload(part)
        if isinstance(payload, list):
            self.status_blocks.extend(block for block in payload if isinstance(block, Message))
            return
        text = _part_text(part, "message/delivery-status", self.defects, _type_params(part))
        for chunk in re.split(r"\r?\n[ \t]*\r?\n", text):
            if chunk.strip():
                block = email.parser.HeaderParser().parsestr(chunk.strip() + "\n")
                self.status_blocks.append(block)

    def _read_returned_headers(self, text: str) -> None:
        try:
            headers = email.parser.HeaderParser().parsestr(text.lstrip())
        except Exception:
            return
        self._read_returned_headers_from(headers)

    def _read_returned_headers_from(self, message: Message) -> None:
        message_id = _first_message_id(str(message.get("Message-ID", "") or ""))
        if message_id and message_id not in self.returned_ids:
            self.returned_ids.append(message_id)

    def bounce_report(self, text: str, first: dict[str, str]) -> BounceReport:
        """What the bounce says: RFC 3464 fields when present, else what the text shows."""
        reported: list[tuple[str, bool, str, str]] = []  # recipient, failed?, status, diagnostic
        ids = list(self.returned_ids)
        for block in self.status_blocks:
            # Gmail names the bounced message in its per-message block.
            original = _first_message_id(str(block.get("X-Original-Message-ID", "") or ""))
            if original and original not in ids:
                ids.append(original)
            recipient = _dsn_address(
                block.get("Final-Recipient") or block.get("Original-Recipient")
            )
            if not recipient:
                continue
            action = str(block.get("Action", "") or "").strip().lower()
            status = _unfold(str(block.get("Status", "") or "")).split(" ", 1)[0]
            diagnostic = " ".join(str(block.get("Diagnostic-Code", "") or "").split())
            if ";" in diagnostic:
                diagnostic = diagnostic.split(";", 1)[1].strip()
            # RFC 3464 §2.3.3: only "failed" is a bounce; "delayed" and "delivered" are news.
            reported.append((recipient, action in {"", "failed"}, status, diagnostic))
        # Failed recipients first, so status and diagnostic describe a failure when there is one.
        reported.sort(key=lambda entry: not entry[1])
        failed = [recipient for recipient, is_failure, _, _ in reported if is_failure]
        statuses = [status for _, _, status, _ in reported]
        diagnostics = [diagnostic for _, _, _, diagnostic in reported]
        for candidate in _QUOTED_MESSAGE_ID.findall(text):
            if candidate not in ids:
                ids.append(candidate)
        in_reply_to = _first_message_id(first.get("in-reply-to", ""))
        if in_reply_to and in_reply_to not in ids:
            ids.append(in_reply_to)
        own_id = _first_message_id(first.get("message-id", ""))
        ids = [i for i in ids if i != own_id]
        if not reported:
            # Not an RFC 3464 report (qmail, Exim, old Exchange): read what the text shows.
            failed = _failed_from_text(text, first)
        status = next((s for s in statuses if s), "")
        diagnostic = next((d for d in diagnostics if d), "")
        if not status:
            found = _STATUS_CODE.search(text)
            status = found.group(1) if found else ""
            if found and not diagnostic:
                line_start = text.rfind("\n", 0, found.start()) + 1
                line_end = text.find("\n", found.end())
                diagnostic = text[line_start : line_end if line_end >= 0 else len(text)].strip()
        return BounceReport(
            original_message_ids=tuple(ids),
            failed_recipients=tuple(dict.fromkeys(failed)),
            status=status,
            diagnostic=diagnostic[:1000],
        )


_TNEF_TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})


def _tnef_files(data: bytes, defects: list[str]) -> list[AttachmentPart]:
    """The real files inside an Outlook winmail.dat (MS-OXTNEF), read with tnefparse; empty
    when it holds none or cannot be read (the winmail.dat itself is then kept as it came)."""
    try:
        tnef = TNEF(data, do_checksum=False)
        files = []
        for index, item in enumerate(tnef.attachments):
            payload = bytes(item.data or b"")
            raw_name = item.long_filename() or item.name or ""
            if isinstance(raw_name, bytes):
                raw_name = _decode_bytes(raw_name.rstrip(b"\x00"), "cp1252", "tnef filename", defects)
            name = _safe_name(str(raw_name).rstrip("\x00")) or f"attachment-{index + 1}.bin"
            content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
            files.append(
                AttachmentPart(
                    filename=name, content_type=content_type, data=payload,
                    sha256=hashlib.sha256(payload).hexdigest(), inline=False,
                )
            )
    except Exception as exc:
        defects.append(f"tnef-unreadable ({type(exc).__name__})")
        return []
    if files:
        defects.append(f"tnef-unpacked:{len(files)}")
    return files


def _alternative_rank(part: Message) -> int:
    leaf = part
    for _ in range(MAX_DEPTH):
        payload = _payload(leaf)
        if not isinstance(payload, list) or not payload or not isinstance(payload[0], Message):
            break
        leaf = payload[0]
    content_type = _content_type(leaf)
    return {"text/plain": 0, "text/html": 1}.get(content_type, 2)


def _dsn_address(value: Any) -> str:
    """`rfc822; eve@outsider.example` (RFC 3464 §2.3.2) to the bare address."""
    text = _unfold(str(value or ""))
    if ";" in text:
        text = text.split(";", 1)[1]
    return text.strip().strip("<>").strip().lower()


def _failed_from_text(text: str, first: dict[str, str]) -> list[str]:
    header = _unfold(first.get("x-failed-recipients", ""))
    failed = [address.strip().lower() for address in header.split(",") if "@" in address]
    failed.extend(match.lower() for match in _ANGLE_RECIPIENT.findall(text))
    exim = _EXIM_FAILED.search(text)
    if exim:
        failed.extend(address.lower() for address in _BARE_ADDRESS.findall(exim.group(1)))
    return list(dict.fromkeys(failed))


# --------------------------------------------------------------------------------------------
# Part helpers
# --------------------------------------------------------------------------------------------


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:
        return "text/plain"


def _disposition(part: Message) -> str:
    try:
        return (part.get_content_disposition() or "").lower()
    except Exception:
        return ""


def _payload(part: Message) -> Any:
    """`part.get_payload()`: a list of parts, or the text still in its transfer encoding. The stdlib
    raises on some hostile parts (TypeError for 8-bit text under an RFC 2231 `charset*=` parameter,
    which it reads as a tuple) while turning 8-bit text into a string; the stored text is then
    returned as it is (its 8-bit bytes as surrogate escapes, as the stdlib keeps them), and the
    callers transfer-decode and decode it themselves, as they do any other part's."""
    try:
        return part.get_payload()
    except Exception:
        stored = getattr(part, "_payload", "")  # compat32's own attribute: what get_payload() returns
        return stored if isinstance(stored, str | list) else ""


def _payload_bytes(part: Message) -> bytes:
    raw_payload = _payload(part)
    encoding = str(part.get("Content-Transfer-Encoding", "") or "").strip().lower()
    if encoding == "base64" and isinstance(raw_payload, str) and raw_payload.isascii():
        # One pass over the encoded text, skipping line breaks (RFC 2045 §6.8): the stdlib
        # route splits a 25 MB attachment into lines first and peaks at four times its size.
        try:
            return base64.b64decode(raw_payload)
        except (binascii.Error, ValueError):
            pass  # bad padding: the lenient stdlib decoder below repairs it
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if isinstance(payload, bytes):
        return payload
    raw = _payload(part)
    if isinstance(raw, str):
        return raw.encode("ascii", "surrogateescape")
    if isinstance(raw, list):
        # message/* parts other than rfc822 hold header blocks (RFC 3464, RFC 8098).
        return b"\n".join(_flatten(block) for block in raw if isinstance(block, Message))
    return b""


def _part_text(part: Message, content_type: str, defects: list[str], params: _Params) -> str:
    data = _payload_bytes(part)
    omitted = ""
    if len(data) > MAX_TEXT_PART_BYTES:
        # Cut at a line end; the note carries the whole part's digest, so the dedupe digest
        # (content_digest) still tells two such messages apart by everything they contain.
        cut = data.rfind(b"\n", 0, MAX_TEXT_PART_BYTES) + 1 or MAX_TEXT_PART_BYTES
        digest = hashlib.sha256(data).hexdigest()
        rest = len(data) - cut
        data = data[:cut]
        defects.append(f"text-truncated:{content_type} ({rest} bytes not shown)")
        omitted = (
            f"\n\n[{rest} more bytes of this {content_type} part are not shown here; "
            f"the original message is kept whole (part sha256 {digest})]"
        )
    declared = _param(params, "charset")
    if not declared and content_type == "text/html":
        meta = _META_CHARSET.search(data[:4096])
        if meta:
            declared = meta.group(1).decode("ascii", "replace")
    text = _decode_bytes(data, declared or None, content_type, defects)
    if _param(params, "format").lower() == "flowed":
        text = _unflowed(text, delete_space=_param(params, "delsp").lower() == "yes")
    return text + omitted


_Params = list[tuple[str, Any]] | None
"""A part's Content-Type parameters as `Message.get_params` gives them (unquoted, RFC 2231
continuations joined); None when the part has no Content-Type or it cannot be read."""


def _type_params(part: Message) -> _Params:
    """The Content-Type parameters of `part`, parsed once for all the look-ups of one part
    (every `Message.get_param` parses the whole field again)."""
    try:
        params = part.get_params()
    except Exception:
        return None
    return params if isinstance(params, list) else None


def _raw_param(params: _Params, name: str, missing: Any = None) -> Any:
    """The parameter `name` (lower case) as `Message.get_param` finds it: the first so named."""
    for key, value in params or ():
        if key.lower() == name:
            return value
    return missing


def _param(params: _Params, name: str) -> str:
    value = _raw_param(params, name)
    if isinstance(value, tuple):  # an RFC 2231 encoded value
        value = email.utils.collapse_rfc2231_value(value)
    return value.strip() if isinstance(value, str) else ""


def _unflowed(text: str, *, delete_space: bool) -> str:
    """RFC 3676 §4: join soft-broken lines of a format=flowed body (quote depth respected)."""
    out: list[str] = []
    open_depth: int | None = None  # quote depth of a paragraph still being joined
    for line in text.replace("\r\n", "\n").split("\n"):
        stripped = line.lstrip(">")
        depth = len(line) - len(stripped)
        if stripped.startswith(" "):
            stripped = stripped[1:]  # space-stuffing, §4.4
        flowed = stripped.endswith(" ") and stripped != "-- "
        content = stripped[:-1] if flowed and delete_space else stripped
        if open_depth is not None and open_depth == depth and out:
            out[-1] += content
        else:
            out.append((">" * depth + " " if depth else "") + content)
        open_depth = depth if flowed else None
    return "\n".join(out)


def _filename(part: Message, defects: list[str], params: _Params) -> str:
    try:
        name = _raw_filename(part, params)
    except Exception:
        name = None
    if not name:
        return ""
    name = str(name)
    if _has_surrogates(name):
        name = _decode_bytes(name.encode("ascii", "surrogateescape"), "utf-8", "filename", defects)
    if "=?" in name:
        # Outlook and others put RFC 2047 words in filename parameters (RFC 2047 §5 forbids it).
        name = _decode_encoded_words(name, "filename", defects)
    return _safe_name(name)


def _raw_filename(part: Message, params: _Params) -> str | None:
    """`Message.get_filename()`, reading Content-Type's `name` from `params`: Content-Disposition's
    `filename`, else the `name` fallback; RFC 2231 charsets and continuations applied."""
    missing = object()
    name: Any = part.get_param("filename", missing, "content-disposition")
    if name is missing:
        name = _raw_param(params, "name", missing)
    if name is missing:
        return None
    return email.utils.collapse_rfc2231_value(name).strip()


def _safe_name(name: str) -> str:
    """A display file name: the last path component, no control characters, bounded."""
    base = re.split(r"[\\/]", name.strip())[-1]
    base = "".join(char for char in base if char.isprintable()).strip().strip(".")
    return base[:200]


def _invented_name(content_type: str, content_id: str, index: int) -> str:
    """A name for a nameless part: from its Content-ID ("image001.png@01DB…") or its type."""
    stem = _safe_name(content_id.split("@", 1)[0]) if content_id else ""
    if stem and "." in stem:
        return stem
    if content_type.startswith("message/"):
        extension = ".txt"
    else:
        extension = mimetypes.guess_extension(content_type) or ".bin"
    return f"{stem or f'attachment-{index + 1}'}{extension}"


def _inner_message(part: Message) -> Message | None:
    payload = _payload(part)
    if isinstance(payload, list):
        return payload[0] if payload and isinstance(payload[0], Message) else None
    data = _payload_bytes(part)
    if not data.strip():
        return None
    try:
        return email.message_from_bytes(data)
    except Exception:
        return None


def _flatten(message: Message) -> bytes:
    try:
        return message.as_bytes()
    except Exception:
        try:
            return message.as_string().encode("utf-8", "surrogateescape")
        except Exception:
            return b""


def _forward_block(inner: Message, inner_text: str, defects: list[str]) -> str:
    lines = ["---------- Forwarded message ----------"]
    for name in ("From", "Date", "Subject", "To"):
        value = inner.get(name)
        if value:
            lines.append(f"{name}: {_decode_header_text(str(value), name, defects)}")
    return "\n".join(lines) + "\n\n" + inner_text


def _html_to_text(markup: str) -> str:
    """Readable text of an HTML-only body (inscriptis: Apache-2.0, lays out lists, tables and
    block elements as a browser would); very large HTML, or HTML it cannot read, gets a plain
    tag strip instead."""
    if len(markup) <= MAX_HTML_FOR_CONVERSION and markup.strip():
        try:
            text = inscriptis.get_text(markup, _INSCRIPTIS_CONFIG)
        except Exception:
            log.info("inscriptis failed on a message body; stripping tags instead")
        else:
            return _tidy(text)
    stripped = _HTML_STYLE.sub(" ", markup)
    stripped = _HTML_BREAK.sub("\n", stripped)
    return _tidy(html.unescape(_HTML_TAG.sub("", stripped)))


# "strict": no indentation of block elements, so pasted text keeps its left margin.
_INSCRIPTIS_CONFIG = ParserConfig(css=CSS_PROFILES["strict"], display_links=False, display_images=False)


def _tidy(text: str) -> str:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip("\n")
