"""Who vouches for a message's author: DMARC records and alignment (RFC 7489) and the sender policy's checks, as pure functions; no DNS and no I/O.

The shell gathers the evidence (a trusted Authentication-Results header, or our own DKIM check
with the DNS answers it needed) into a `SenderVerdict`; `decide` asks the functions below.

Alignment is a small function here rather than a library: `checkdmarc` does its own DNS
lookups (no injectable resolver, so no offline tests and no shared timeout/cache), and dkimpy
verifies signatures but does not evaluate DMARC. The organisational domain follows RFC 7489
§3.2 over the Public Suffix List that the shell loads (Debian's `publicsuffix` package).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from mailcase.domain import MethodResult, SenderPolicy, SenderVerdict


@dataclass(frozen=True, slots=True)
class PublicSuffixes:
    """The Public Suffix List's rules (https://publicsuffix.org/list/), as plain sets."""

    rules: frozenset[str] = frozenset()
    wildcards: frozenset[str] = frozenset()  # "*.ck" kept as "ck"
    exceptions: frozenset[str] = frozenset()  # "!www.ck" kept as "www.ck"

    @classmethod
    def from_text(cls, text: str) -> PublicSuffixes:
        rules: set[str] = set()
        wildcards: set[str] = set()
        exceptions: set[str] = set()
        for line in text.splitlines():
            rule = line.strip().split(" ", 1)[0].lower()
            if not rule or rule.startswith("//"):
                continue
            if rule.startswith("!"):
                exceptions.add(rule[1:])
            elif rule.startswith("*."):
                wildcards.add(rule[2:])
            else:
                rules.add(rule)
        return cls(frozenset(rules), frozenset(wildcards), frozenset(exceptions))


def organisational_domain(domain: str, suffixes: PublicSuffixes) -> str:
    """RFC 7489 §3.2: the public suffix of `domain` plus one label (`mail.acme.co.uk` -> `acme.co.uk`).

    Rules, in order: the longest matching exception rule makes its parent the suffix; else the
    longest matching rule or wildcard; else (an empty list or an unlisted TLD) the last label.
    """
    labels = domain.strip().strip(".").lower().split(".")
    if len(labels) < 2:
        return ".".join(labels)
    suffix_length = 1
    for length in range(len(labels), 0, -1):
        candidate = ".".join(labels[-length:])
        if candidate in suffixes.exceptions:
            suffix_length = length - 1
            break
        if candidate in suffixes.rules:
            suffix_length = max(suffix_length, length)
        if length > 1 and ".".join(labels[-(length - 1):]) in suffixes.wildcards:
            suffix_length = max(suffix_length, length)
    keep = min(len(labels), suffix_length + 1)
    return ".".join(labels[-keep:])


def aligned(domain: str, from_domain: str, *, strict: bool, suffixes: PublicSuffixes) -> bool:
    """RFC 7489 §3.1: identical domains (strict), or the same organisational domain (relaxed)."""
    a, b = domain.strip(".").lower(), from_domain.strip(".").lower()
    if not a or not b:
        return False
    if strict:
        return a == b
    return organisational_domain(a, suffixes) == organisational_domain(b, suffixes)


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    policy: str  # none, quarantine, reject
    subdomain_policy: str
    strict_dkim: bool = False
    strict_spf: bool = False


def parse_dmarc_record(text: str) -> DmarcRecord | None:
    """A `v=DMARC1; p=…` TXT record (RFC 7489 §6.3), or None when it is not one (ignored, §6.6.3)."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        if "=" in part:
            key, value = part.split("=", 1)
            tags[key.strip().lower()] = value.strip().lower()
    if tags.get("v") != "dmarc1" or tags.get("p") not in ("none", "quarantine", "reject"):
        return None
    policy = tags["p"]
    subdomain = tags.get("sp", policy)
    return DmarcRecord(
        policy=policy,
        subdomain_policy=subdomain if subdomain in ("none", "quarantine", "reject") else policy,
        strict_dkim=tags.get("adkim") == "s",
        strict_spf=tags.get("aspf") == "s",
    )


def dmarc_verdict(
    *,
    from_domain: str,
    dkim: Sequence[MethodResult],
    record: DmarcRecord | None,
    record_domain: str,
    suffixes: PublicSuffixes,
    source: str = "dkim",
    temporary: bool = False,
) -> SenderVerdict:
    """Our own DMARC evaluation from DKIM results (RFC 7489 §4.2). SPF is not checked in-process
    (we do not see the connecting IP behind an MTA), so only an aligned DKIM pass passes.

    Rules, in order: a temporary DNS failure is `temperror`; no record is `none`; an aligned
    DKIM pass is `pass`; otherwise `fail` with the published policy (`sp` for a subdomain).
    """
    if temporary:
        return SenderVerdict(source, from_domain, "temperror", "", tuple(dkim), temporary=True)
    if record is None:
        return SenderVerdict(source, from_domain, "none", "", tuple(dkim))
    subdomain = record_domain != from_domain
    policy = record.subdomain_policy if subdomain else record.policy
    for result in dkim:
        if result.result == "pass" and aligned(result.domain, from_domain, strict=record.strict_dkim, suffixes=suffixes):
            return SenderVerdict(source, from_domain, "pass", policy, tuple(dkim))
    return SenderVerdict(source, from_domain, "fail", policy, tuple(dkim))


# ---------------------------------------------------------------------------------------------
# What the sender policy asks of a message (used by rules.decide)


@dataclass(frozen=True, slots=True)
class Authentication:
    """What `decide` knows about who really sent a message, gathered by the shell."""

    policy: SenderPolicy = SenderPolicy.OFF
    verdict: SenderVerdict = field(default_factory=lambda: SenderVerdict(source="none"))
    from_domain: str = ""
    # The From domain is an organisation's domain in the directory (whose spoofing we hold).
    organisation_domain: bool = False
    # The From domain is one of ours (smtp.domains): a technician's or the desk's.
    our_domain: bool = False
    # The case number a per-technician reply token (addressed by the message) was issued for,
    # to the message's author; None without a valid one.
    technician_token_case: int | None = None
    # A trusted MTA stamped auth=pass: the message came through an authenticated submission.
    submitted_authenticated: bool = False


def unauthenticated_reason(auth: Authentication) -> str:
    """`sender not authenticated (dmarc=fail, d=acme.example)`: how holds name the verdict."""
    verdict = auth.verdict
    detail = f"dmarc={verdict.dmarc}"
    if verdict.dmarc_policy:
        detail += f", p={verdict.dmarc_policy}"
    detail += f", d={auth.from_domain or '?'}"
    if verdict.source == "none":
        detail += ", no trusted verdict"
    return f"sender not authenticated ({detail})"


def spoofed_organisation(auth: Authentication) -> bool:
    """An organisation's domain that fails DMARC, or has no aligned pass while it publishes
    `p=reject|quarantine` (temperror and permerror included: nothing vouches for the author)."""
    if not auth.organisation_domain:
        return False
    verdict = auth.verdict
    if verdict.dmarc == "fail":
        return True
    return verdict.dmarc != "pass" and verdict.dmarc_policy in ("reject", "quarantine")


def technician_proof(auth: Authentication, case_number: int | None) -> str | None:
    """How a technician's emailed action proves its author, or None when it does not.

    Rules, in order: their own reply token for this case; a DMARC pass for our own domain (from
    a trusted MTA or our own DKIM check); an authenticated submission stamped by a trusted MTA.
    Independent of `policy`: the token needs no DNS, so this holds in `off` too.
    """
    if case_number is not None and auth.technician_token_case == case_number:
        return "technician reply token"
    if auth.our_domain and auth.verdict.passed:
        return f"dmarc=pass for our domain via {auth.verdict.source}"
    if auth.submitted_authenticated:
        return "authenticated submission"
    return None


def authenticated(auth: Authentication) -> bool:
    """A DMARC pass (or an authenticated submission) for the author's domain."""
    return auth.verdict.passed or auth.submitted_authenticated


def summarise(results: Iterable[MethodResult]) -> str:
    return "; ".join(f"{r.method}={r.result}" + (f" d={r.domain}" if r.domain else "") for r in results)
