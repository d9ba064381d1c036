"""Classify inbound mail (human, auto-reply, bulk, list, bounce; commands; MACD) and clean subjects; no I/O.

Everything here looks at plain values the parser already decoded (header pairs, addresses,
the subject, the first line of the new text) and must not read the clock, the database or
configuration. The loop protection rules follow RFC 3834 ("Recommendations for Automatic
Responses to Electronic Mail") and RFC 3464 (delivery status notifications), plus the
vendor markers real auto-responders add instead of, or besides, the standard ones.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from mailcase.domain import STATUS_DISPLAY, AutoKind, CaseKind

# --------------------------------------------------------------------------------------------
# Auto-submitted, bulk, list and bounce mail
# --------------------------------------------------------------------------------------------

_BOUNCE_LOCAL_PARTS = frozenset({"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon"})
# Subjects MTAs give non-RFC 3464 bounces (Exim, qmail, old Exchange, Postfix without DSN).
_BOUNCE_SUBJECT = re.compile(
    r"^\s*(?:undeliver(?:able|ed)\b|undelivered mail returned to sender|"
    r"mail delivery (?:failed|failure|system)|delivery status notification|"
    r"delivery (?:failure|has failed)|returned mail\b|failure notice\b|"
    r"non.?remis|n[aã]o (?:foi )?entregue|mensagem n[aã]o entregue)",
    re.IGNORECASE,
)
# Subjects that out-of-office responders use when they set no header at all (Outlook 2003
# era clients, some webmail). Matched at the very start only: "Re: automatic reply settings"
# written by a person does not start this way.
_AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*(?:automatic reply|auto(?:matic)?[- ]?(?:reply|response)|autoreply|"
    r"out of (?:the )?office(?: reply| autoreply)?|"
    r"resposta autom[aá]tica|respuesta autom[aá]tica|r[eé]ponse automatique|"
    r"aus(?:ê|e)ncia tempor[aá]ria|fora do escrit[oó]rio|abwesenheitsnotiz)\s*[:\-]",
    re.IGNORECASE,
)
# Vendor auto-reply markers: Gmail and cPanel vacation (X-Autoreply), older vacation(1)
# programs and ticket systems (X-Autorespond, X-Auto-Reply), Yahoo/Zoho (X-Autoreply-From).
_AUTO_REPLY_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Auto-Reply", "X-Autoreply-From")
# Exchange marks what an inbox rule or the out-of-office assistant generated with these; a
# person's message forwarded by a rule carries them too, so they decide only together with
# `X-Auto-Response-Suppress: All`, which Exchange puts on its automatic replies.
_EXCHANGE_GENERATED_HEADERS = (
    "X-MS-Exchange-Generated-Message-Source",
    "X-MS-Exchange-Inbox-Rules-Loop",
)
_REPORT_TYPE = re.compile(r"""report-type\s*=\s*"?([A-Za-z0-9._-]+)""", re.IGNORECASE)


def _index(headers: Sequence[tuple[str, str]]) -> Mapping[str, list[str]]:
    index: dict[str, list[str]] = {}
    for name, value in headers:
        index.setdefault(name.strip().lower(), []).append(value.strip())
    return index


def _first(index: Mapping[str, list[str]], name: str) -> str | None:
    values = index.get(name)
    return values[0] if values else None


def _local_part(address: str) -> str:
    return address.strip().strip("<>").rsplit("@", 1)[0].lower()


def classify_auto(
    headers: Sequence[tuple[str, str]],
    from_address: str,
    envelope_from: str | None,
    content_type: str,
) -> tuple[AutoKind, str]:
    """Whether a message was machine-generated, and the header that decided it.

    `content_type` is the top-level Content-Type value with its parameters; `envelope_from`
    is the SMTP MAIL FROM (None when unknown, e.g. a file given to `mailcase ingest`; then a
    `Return-Path` header written by the delivering MTA stands in for it).

    Rules, in order (the first that matches decides):
    1. `multipart/report; report-type=delivery-status` is a bounce (RFC 3464 §2); any other
       report (read receipts, RFC 8098; feedback reports) is auto-generated.
    2. A From of MAILER-DAEMON or postmaster, or an `X-Failed-Recipients` header (Exim,
       Gmail), is a bounce: that is how MTAs send bounces that are not RFC 3464 reports.
    3. `Auto-Submitted` other than `no` (RFC 3834 §5): `auto-replied…` is an auto-reply,
       anything else (`auto-generated`, `auto-notified`, vendor words) auto-generated.
    4. `X-Autoreply`, `X-Autorespond`, `X-Auto-Reply`, `X-Autoreply-From`, or
       `Precedence: auto_reply`: auto-reply (Gmail, cPanel, vacation programs).
    5. Exchange: `X-MS-Exchange-Generated-Message-Source` or `X-MS-Exchange-Inbox-Rules-Loop`
       together with `X-Auto-Response-Suppress: All` is an automatic reply. Neither alone
       decides: people's Outlook mail can carry `X-Auto-Response-Suppress`, and a person's
       mail redirected by an inbox rule carries the Exchange headers.
    6. A null envelope sender (`<>`, RFC 5321 §4.5.5) with a bounce-like subject is a bounce;
       otherwise auto-generated (RFC 3834 §3.3 asks responders to use the null sender).
    7. `Precedence: bulk` or `junk` is bulk; `Precedence: list` is list.
    8. `List-Id` (RFC 2919) or `List-Post` is list mail; `List-Unsubscribe` without them is a
       bulk sender (newsletters, RFC 8058).
    9. A subject that starts like an out-of-office notice ("Automatic reply:", "Resposta
       automática:") is an auto-reply.
    10. Otherwise human.
    """
    index = _index(headers)
    lowered_type = content_type.strip().lower()
    subject = _first(index, "subject") or ""

    if lowered_type.startswith("multipart/report"):
        match = _REPORT_TYPE.search(content_type)
        report_type = match.group(1).lower() if match else ""
        if report_type == "delivery-status":
            return AutoKind.BOUNCE, (
                "Content-Type: multipart/report; report-type=delivery-status (RFC 3464)"
            )
        return AutoKind.AUTO_GENERATED, (
            f"Content-Type: multipart/report; report-type={report_type or 'unknown'}"
        )

    sender_local = _local_part(from_address) if from_address else ""
    if sender_local in _BOUNCE_LOCAL_PARTS:
        return AutoKind.BOUNCE, f"From: {from_address} (mail system sender)"
    failed = _first(index, "x-failed-recipients")
    if failed:
        return AutoKind.BOUNCE, f"X-Failed-Recipients: {failed} (Exim/Gmail bounce)"

    auto_submitted = _first(index, "auto-submitted")
    if auto_submitted is not None:
        keyword = auto_submitted.split(";", 1)[0].split("(", 1)[0].strip().lower()
        if keyword and keyword != "no":
            replied = keyword.startswith("auto-replied")
            kind = AutoKind.AUTO_REPLY if replied else AutoKind.AUTO_GENERATED
            return kind, f"Auto-Submitted: {auto_submitted} (RFC 3834)"

    for name in _AUTO_REPLY_HEADERS:
        value = _first(index, name.lower())
        if value is not None and value.strip().lower() not in {"no", "false", "0"}:
            return AutoKind.AUTO_REPLY, f"{name}: {value}"

    precedence = (_first(index, "precedence") or _first(index, "x-precedence") or "").lower()
    if precedence in {"auto_reply", "auto-reply"}:
        return AutoKind.AUTO_REPLY, f"Precedence: {precedence}"

    suppress = _first(index, "x-auto-response-suppress") or ""
    if "all" in suppress.lower():
        for name in _EXCHANGE_GENERATED_HEADERS:
            value = _first(index, name.lower())
            if value:
                return AutoKind.AUTO_REPLY, (
                    f"{name}: {value} with X-Auto-Response-Suppress: {suppress} (Exchange)"
                )

    if _is_null_sender(envelope_from, index):
        if _BOUNCE_SUBJECT.search(subject):
            return AutoKind.BOUNCE, (
                f"null envelope sender (RFC 5321 §4.5.5) and subject {subject!r}"
            )
        return AutoKind.AUTO_GENERATED, "null envelope sender <> (RFC 5321 §4.5.5, RFC 3834 §3.3)"

    if precedence in {"bulk", "junk"}:
        return AutoKind.BULK, f"Precedence: {precedence}"
    if precedence == "list":
        return AutoKind.LIST, "Precedence: list"

    list_id = _first(index, "list-id")
    if list_id:
        return AutoKind.LIST, f"List-Id: {list_id} (RFC 2919)"
    list_post = _first(index, "list-post")
    if list_post:
        return AutoKind.LIST, f"List-Post: {list_post} (RFC 2369)"
    if _first(index, "list-unsubscribe"):
        return AutoKind.BULK, "List-Unsubscribe without List-Id (bulk sender, RFC 8058)"

    if _AUTO_REPLY_SUBJECT.search(subject):
        return AutoKind.AUTO_REPLY, f"Subject: {subject} (out-of-office wording)"

    return AutoKind.HUMAN, "no auto-submitted, bulk, list or bounce marker"


def _is_null_sender(envelope_from: str | None, index: Mapping[str, list[str]]) -> bool:
    if envelope_from is None:
        return_path = _first(index, "return-path")
        if return_path is None:
            return False
        envelope_from = return_path
    return envelope_from.strip() in {"", "<>"}


# --------------------------------------------------------------------------------------------
# Subjects and case tags
# --------------------------------------------------------------------------------------------

# Reply and forward prefixes in the languages our customers' clients write: English (Re, Fw,
# Fwd), Portuguese Outlook (RES, ENC), German (AW, WG), Scandinavian (SV, VS, VB), French
# (TR), Spanish (RV), Dutch (Antw, Doorst), Italian (R, Rif, I is not safe and left out).
# An optional counter ("Re[2]:", "Re(3):") and full-width colons are tolerated.
_PREFIX = re.compile(
    r"^\s*(?:re|fwd?|aw|wg|sv|vs|vb|res|enc|tr|rv|antw|doorst|rif)"
    r"\s*(?:\[\d+\]|\(\d+\))?\s*[:：]\s*",
    re.IGNORECASE,
)
# Tags mail gateways prepend to mail from outside the organisation; they carry no meaning for
# the case and stop "RE: [EXTERNAL] RE: …" from looking like a new subject. Only these exact
# words are removed: a customer's own "[Site 12]" stays.
_GATEWAY_TAG = re.compile(
    r"^\s*[\[(]\s*(?:external|ext|external email|external sender|externo|e-?mail externo)"
    r"\s*[\])]\s*[:\-]?\s*",
    re.IGNORECASE,
)
_CASE_TAG = re.compile(r"\[\s*case\s*#?\s*0*([1-9][0-9]{0,17})\s*\]", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


# The words our own templates put before the case subject ("[Case #N] Received: …", the status
# names of status-change notices), in English and Portuguese (templates/*/customer.*.subject.txt
# and notify.render's status names): a reply to our mail keeps them, the customer's subject does not.
_OUR_SUBJECT_WORDS = (
    "MACD request received", "Received", "Closed without response", "Escalated", "Resolved", "Update",
    "Waiting for your reply", "Reopened", *(name for name in STATUS_DISPLAY.values()),
    "Solicitação MACD recebida", "Recebido", "Fechado sem resposta", "Escalado", "Resolvido", "Atualização",
    "Aguardando sua resposta", "Reaberto", "Novo", "Em andamento", "Duplicado", "Em espera", "Em transporte",
    "Resolvido, aguardando confirmação", "Reaberto pelo cliente", "Fechado",
)
_OUR_PREFIX = re.compile(
    r"^(?:" + "|".join(re.escape(word) for word in sorted(_OUR_SUBJECT_WORDS, key=len, reverse=True)) + r")\s*:\s*",
    re.IGNORECASE,
)


def clean_subject(subject: str) -> str:
    """The subject a person would recognise: reply/forward prefixes, gateway and case tags gone.

    Runs of prefixes in any order ("RE: FW: [EXTERNAL] Re[2]: …") are stripped from the start,
    `[Case #N]` tags are removed wherever they are, and whitespace is collapsed. When the subject
    carried our case tag (a reply to our mail), our own template words after it ("Received:",
    "Closed:", "Fechado sem resposta:") go too, so a related case gets the customer's subject.
    """
    ours = bool(_CASE_TAG.search(subject))
    text = _CASE_TAG.sub(" ", subject)
    text = _WHITESPACE.sub(" ", text).strip()
    while True:
        stripped = _GATEWAY_TAG.sub("", _PREFIX.sub("", text, count=1), count=1)
        if ours:
            stripped = _OUR_PREFIX.sub("", stripped, count=1)
        if stripped == text:
            break
        text = stripped
    return text.strip()


def case_tags(subject: str) -> tuple[int, ...]:
    """Case numbers named by `[Case #N]` tags in a subject, first seen first, without repeats.

    Tolerates `[Case#1042]`, `[case #00001042]` and spaces inside the brackets.
    """
    numbers: list[int] = []
    for match in _CASE_TAG.finditer(subject):
        number = int(match.group(1))
        if number not in numbers:
            numbers.append(number)
    return tuple(numbers)


# --------------------------------------------------------------------------------------------
# Commands in a message
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Escalate:
    """Move the case one level up its escalation path (SPEC.md §1, "Escalation")."""

    source: str  # "first line" or "subject": where the customer asked


@dataclass(frozen=True, slots=True)
class Note:
    """A technician's internal note (`#note` on the first line); never emailed to the customer."""


@dataclass(frozen=True, slots=True)
class Reopen:
    """A technician's `#reopen` on the first line: reopen the closed case, then send the reply."""


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Subscribe the sender to one master case, or to every master case of a platform.

    Both None: a bare `subscribe`, whose case comes from the thread it replies to.
    """

    case_number: int | None = None
    platform: str | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Undo a `Subscribe` (same fields, same meaning)."""

    case_number: int | None = None
    platform: str | None = None


Command: TypeAlias = Escalate | Note | Reopen | Subscribe | Unsubscribe

_SUBSCRIPTION = re.compile(
    r"^(?P<verb>subscribe|unsubscribe)"
    r"(?:\s+(?:platform\s+(?P<platform>\S.*?)|(?:case\s*)?#?\s*(?P<number>\d{1,18})))?\s*$",
    re.IGNORECASE,
)
_FIRST_LINE_COMMAND = re.compile(r"^\s*#(?P<word>escalate|note|reopen)\b", re.IGNORECASE)
_ESCALATE_WORD = re.compile(r"\bescalate\b", re.IGNORECASE)


def detect_command(subject: str, first_line_of_new_text: str) -> Command | None:
    """The command a message carries, if any.

    Rules, in order:
    1. A clean subject (prefixes and case tags removed) that is exactly `subscribe` or
       `unsubscribe`, optionally followed by a case number (`00001042`, `#1042`, `case 1042`) or
       `platform <name>`, is a subscription command (case-insensitive).
    2. A first line starting with `#note` is a note; `#reopen` asks to reopen a closed case
       (technicians); `#escalate` asks to escalate.
    3. The word ESCALATE anywhere in the subject (any case, whole word) asks to escalate.
    4. Otherwise no command.
    """
    cleaned = clean_subject(subject)
    match = _SUBSCRIPTION.match(cleaned)
    if match:
        number_text = match.group("number")
        number = int(number_text) if number_text and int(number_text) > 0 else None
        platform = match.group("platform")
        platform = _WHITESPACE.sub(" ", platform).strip() if platform else None
        if match.group("verb").lower() == "subscribe":
            return Subscribe(case_number=number, platform=platform)
        return Unsubscribe(case_number=number, platform=platform)

    first = _FIRST_LINE_COMMAND.match(first_line_of_new_text)
    if first:
        word = first.group("word").lower()
        if word == "note":
            return Note()
        if word == "reopen":
            return Reopen()
        return Escalate(source="first line")

    if _ESCALATE_WORD.search(cleaned):
        return Escalate(source="subject")
    return None


# --------------------------------------------------------------------------------------------
# MACD requests
# --------------------------------------------------------------------------------------------

_MACD_SUBJECT = re.compile(r"^\s*macd\s*:", re.IGNORECASE)
_EXPEDITE = re.compile(r"\bexpedit(?:e|ed|ing)\b", re.IGNORECASE)


def macd_request(subject: str, addressed_to_macd: bool) -> CaseKind | None:
    """The MACD case kind a message asks for, or None (SPEC.md §1, "MACD requests").

    Rules, in order:
    1. Not a MACD request unless the clean subject starts with `MACD:` (any case) or the
       message was addressed to the configured MACD address.
    2. `expedite`/`expedited` anywhere in the subject makes it expedited.
    3. Otherwise standard.
    """
    cleaned = clean_subject(subject)
    if not (addressed_to_macd or _MACD_SUBJECT.match(cleaned)):
        return None
    if _EXPEDITE.search(cleaned):
        return CaseKind.MACD_EXPEDITED
    return CaseKind.MACD_STANDARD
