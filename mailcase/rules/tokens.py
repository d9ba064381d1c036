"""Token addresses (reply `support+c1042-<mac>@`, staff reply `support+s1042-<mac>@`, one-click unsubscribe
`support+unsub-<scope>-<mac>@`): one HMAC codec that makes them and reads them back; no I/O, no key storage.

A reply token lets a customer's reply find its case even when the mail client drops
`In-Reply-To`/`References` and rewrites the subject (SPEC.md §2, "Email"). The token is an
HMAC-SHA256 of the case number under the installation's secret, so it cannot be guessed or
moved to another case. Staff tokens also bind the technician they were sent to; unsubscribe tokens
bind a scope (`m` maintenance notices, `c<master number>` a master case) to one recipient
(RFC 2369 §3.2, one-click in the sense of RFC 8058 §3.1, by mail). Every MAC is written in lower case because some mail servers fold the local
part's case (RFC 5321 §2.4 allows it to matter, but real servers do not honour that).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

TOKEN_LENGTH = 16
"""Characters of base32 MAC kept: 16 x 5 bits = 80 bits, far beyond guessing by mail."""

_TOKEN_LOCAL = re.compile(r"^(?P<base>.+)\+c(?P<number>[1-9][0-9]{0,17})-(?P<mac>[a-z2-7]+)$")
_STAFF_LOCAL = re.compile(r"^(?P<base>.+)\+s(?P<number>[1-9][0-9]{0,17})-(?P<mac>[a-z2-7]+)$")
_UNSUBSCRIBE_LOCAL = re.compile(r"^(?P<base>.+)\+unsub-(?P<scope>[a-z0-9]+)-(?P<mac>[a-z2-7]+)$")
_SCOPE = re.compile(r"^(?:m|c[1-9][0-9]{0,17})$")

MAINTENANCE_SCOPE = "m"

Compare = Callable[[str, str], bool]


def case_token(case_number: int, secret: bytes) -> str:
    """The lower-case MAC for one case number under `secret`."""
    if not secret:
        raise ValueError("the reply-token secret is empty")
    if case_number <= 0:
        raise ValueError(f"not a case number: {case_number!r}")
    return _mac(secret, f"case:{case_number}")


def reply_address(support_address: str, case_number: int, secret: bytes) -> str:
    """`support+c<number>-<mac>@domain` for `support@domain`; plus-addressing per RFC 5233."""
    local, domain = _split(support_address)
    return f"{local}+c{case_number}-{case_token(case_number, secret)}@{domain}"


def case_from_address(
    address: str,
    support_address: str,
    secret: bytes,
    *,
    compare: Compare = hmac.compare_digest,
) -> int | None:
    """The case number a reply-token address names, or None.

    Rules, in order:
    1. The address (bare, optionally in angle brackets) is read case-insensitively.
    2. Its domain and the part before `+` must be the support address's; otherwise None.
    3. The detail must be `c<number>-<mac>`; otherwise None (malformed).
    4. The MAC must equal the one we would issue for that number, compared in constant time
       (`compare`, hmac.compare_digest unless a test passes a spy); otherwise None (forged,
       made for another case, or made under an older secret).
    """
    if not secret:
        raise ValueError("the reply-token secret is empty")
    candidate = address.strip().strip("<>").strip().lower()
    if candidate.count("@") != 1:
        return None
    local, domain = candidate.rsplit("@", 1)
    support_local, support_domain = _split(support_address)
    if domain != support_domain:
        return None
    match = _TOKEN_LOCAL.match(local)
    if match is None or match["base"] != support_local:
        return None
    number = int(match["number"])
    if not compare(match["mac"], case_token(number, secret)):
        return None
    return number


def staff_token(case_number: int, technician: str, secret: bytes) -> str:
    """The MAC of a staff notice's Reply-To: bound to the case *and* the technician it was sent to,
    so it proves who answers (only that technician's mailbox received it), unlike `case_token`."""
    if not secret:
        raise ValueError("the reply-token secret is empty")
    if case_number <= 0:
        raise ValueError(f"not a case number: {case_number!r}")
    person = technician.strip().lower()
    if person.count("@") != 1:
        raise ValueError(f"not an email address: {technician!r}")
    return _mac(secret, f"staff:{case_number}:{person}")


def staff_reply_address(support_address: str, case_number: int, technician: str, secret: bytes) -> str:
    """`support+s<number>-<mac>@domain`: the Reply-To of a staff notice to `technician`."""
    local, domain = _split(support_address)
    return f"{local}+s{case_number}-{staff_token(case_number, technician, secret)}@{domain}"


def staff_case_from_address(
    address: str,
    support_address: str,
    secret: bytes,
    *,
    author: str,
    compare: Compare = hmac.compare_digest,
) -> int | None:
    """The case number a staff reply-token address names when it was issued to `author`, or None.

    Rules, in order: as `case_from_address` (case-insensitive, the support address's local part
    and domain, a well-formed `s<number>-<mac>` detail), and the MAC must be the one issued for
    that number *and* the message's author; a token issued to another technician proves nothing.
    """
    if not secret:
        raise ValueError("the reply-token secret is empty")
    candidate = address.strip().strip("<>").strip().lower()
    if candidate.count("@") != 1 or author.strip().count("@") != 1:
        return None
    local, domain = candidate.rsplit("@", 1)
    support_local, support_domain = _split(support_address)
    if domain != support_domain:
        return None
    match = _STAFF_LOCAL.match(local)
    if match is None or match["base"] != support_local:
        return None
    number = int(match["number"])
    if not compare(match["mac"], staff_token(number, author, secret)):
        return None
    return number


def master_scope(master_number: int) -> str:
    """The unsubscribe scope of one master case."""
    return f"c{master_number}"


def unsubscribe_token(scope: str, address: str, secret: bytes) -> str:
    """The lower-case MAC binding one scope to one recipient address."""
    if not secret:
        raise ValueError("the installation secret is empty")
    return _mac(secret, f"unsubscribe:{scope}:{address.strip().lower()}")


def unsubscribe_address(support_address: str, scope: str, address: str, secret: bytes) -> str:
    """`support+unsub-<scope>-<mac>@domain` (plus-addressing, RFC 5233; lower case)."""
    if not _SCOPE.match(scope):
        raise ValueError(f"not an unsubscribe scope: {scope!r}")
    local, domain = _split(support_address)
    return f"{local}+unsub-{scope}-{unsubscribe_token(scope, address, secret)}@{domain}"


def list_unsubscribe(support_address: str, scope: str, address: str, secret: bytes) -> dict[str, str]:
    """The outbox context convention `_list_unsubscribe` that compose turns into the RFC 2369 /
    RFC 8058 headers: a bare mailto address, and no https URL (we run no web endpoint)."""
    return {"mailto": unsubscribe_address(support_address, scope, address, secret), "url": ""}


@dataclass(frozen=True, slots=True)
class UnsubscribeRequest:
    """Mail addressed to an unsubscribe address: which scope and MAC it carried."""

    recipient: str
    scope: str
    mac: str


def unsubscribe_request(recipients: Iterable[str], support_address: str) -> UnsubscribeRequest | None:
    """The first recipient that has the shape of one of our unsubscribe addresses, or None."""
    support_local, support_domain = _split(support_address)
    for recipient in recipients:
        candidate = recipient.strip().strip("<>").lower()
        if candidate.count("@") != 1:
            continue
        local, domain = candidate.split("@")
        if domain != support_domain:
            continue
        match = _UNSUBSCRIBE_LOCAL.match(local)
        if match and match["base"] == support_local:
            return UnsubscribeRequest(recipient=candidate, scope=match["scope"], mac=match["mac"])
    return None


def request_is_genuine(request: UnsubscribeRequest, sender: str, secret: bytes, *, compare: Compare = hmac.compare_digest) -> bool:
    """The MAC is the one we issued for this scope and this sender (constant-time compare)."""
    if not sender or not _SCOPE.match(request.scope):
        return False
    return compare(request.mac, unsubscribe_token(request.scope, sender, secret))


def _mac(secret: bytes, message: str) -> str:
    """The codec every token shares: HMAC-SHA256 of `message` under `secret`, base32, lower case,
    TOKEN_LENGTH characters. Changing it would orphan every address already sent."""
    digest = hmac.new(secret, message.encode(), hashlib.sha256).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:TOKEN_LENGTH]


def _split(address: str) -> tuple[str, str]:
    cleaned = address.strip().lower()
    if cleaned.count("@") != 1:
        raise ValueError(f"not an email address: {address!r}")
    local, domain = cleaned.split("@")
    if not local or not domain:
        raise ValueError(f"not an email address: {address!r}")
    return local, domain
