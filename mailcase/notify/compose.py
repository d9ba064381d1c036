"""Build the outgoing RFC 5322 message from plain values and rendered parts; the only place outbound headers are set. It sends nothing and reads no database.

Header choices, and where they come from:
* `Message-ID` is the one stored when the notice was queued, so a reply can thread to it even
  before it is sent (RFC 5322 §3.6.4).
* `In-Reply-To` / `References` point at the customer's message this answers (RFC 5322 §3.6.4).
* `Reply-To` is the per-case reply-token address (rules/tokens.py), so a reply finds its case even
  when the client drops the headers and the subject.
* `Auto-Submitted` (RFC 3834 §5): `auto-replied` for acknowledgements, `auto-generated` for
  notices, absent for a technician's own reply. Automatic mail also carries
  `X-Auto-Response-Suppress: All`, which stops Exchange/Outlook out-of-office replies to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import format_datetime

from mailcase.notify.render import Rendered
from mailcase.rules.tokens import reply_address

AUTO_REPLIED = "auto-replied"
AUTO_GENERATED = "auto-generated"
HUMAN = "no"
MAX_REFERENCES = 20
"""Keep References short: RFC 5322 §3.6.4 allows trimming, and long chains break some servers."""


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
    locale: str = "en"
    list_unsubscribe: str = ""  # RFC 2369 header value for broadcasts, "" for case mail


def compose(
    mail: OutgoingMail,
    rendered: Rendered,
    *,
    from_address: str,
    from_name: str,
    support_address: str,
    secret: bytes,
    attachments: Sequence[MailAttachment] = (),
) -> EmailMessage:
    """A multipart/alternative (text, then HTML) message, wrapped in multipart/mixed when there
    are attachments, with every header listed in the module docstring."""
    if not mail.recipients:
        raise ValueError("an outgoing message needs at least one recipient")
    if mail.date.tzinfo is None:
        raise ValueError("the Date header needs an aware instant")
    message = EmailMessage(policy=default_policy)
    message["From"] = Address(display_name=from_name, addr_spec=from_address)
    message["To"] = ", ".join(mail.recipients)
    if mail.cc:
        message["Cc"] = ", ".join(mail.cc)
    message["Subject"] = rendered.subject
    message["Date"] = format_datetime(mail.date)
    message["Message-ID"] = mail.message_id
    references = _references(mail.references, mail.in_reply_to)
    if mail.in_reply_to:
        message["In-Reply-To"] = mail.in_reply_to
    if references:
        message["References"] = " ".join(references)
    if mail.reply_token_case is not None:
        message["Reply-To"] = reply_address(support_address, mail.reply_token_case, secret)
    automatic = mail.auto_submitted not in ("", HUMAN)
    if automatic:
        message["Auto-Submitted"] = mail.auto_submitted
        message["X-Auto-Response-Suppress"] = "All"
    if mail.list_unsubscribe:
        message["List-Unsubscribe"] = mail.list_unsubscribe
        if "<http" in mail.list_unsubscribe:
            message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"  # RFC 8058
    message.set_content(rendered.text, subtype="plain", charset="utf-8")
    message.add_alternative(rendered.html, subtype="html", charset="utf-8")
    for attachment in attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        message.add_attachment(
            attachment.data,
            maintype=maintype,
            subtype=subtype or "octet-stream",
            filename=attachment.filename,
            params=dict(attachment.params),
        )
    if mail.locale:
        # Set last: making the message multipart moves Content-* headers into the first part.
        message["Content-Language"] = mail.locale  # RFC 3282
    return message


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
