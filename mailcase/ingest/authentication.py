"""The evidence about a message's author: our MTA's Authentication-Results (RFC 8601), or our own DKIM check (RFC 6376) and DMARC evaluation with DNS through an injected resolver; it decides nothing.

`rules.authentication` and `rules.decide` judge the `SenderVerdict` built here. A DNS failure is
never a silent pass or fail: the verdict says `temperror` and `temporary=True`, and the
pipeline defers the message in `enforce` (SMTP 451, the IMAP poller retries).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

import authres
import dkim

from mailcase.domain import MethodResult, SenderVerdict
from mailcase.rules.authentication import (
    DmarcRecord,
    PublicSuffixes,
    dmarc_verdict,
    organisational_domain,
    parse_dmarc_record,
)

log = logging.getLogger(__name__)


class AuthresProperty(Protocol):
    """One `ptype.property=value` of an Authentication-Results result, as authres parses it."""

    @property
    def type(self) -> object: ...
    @property
    def name(self) -> object: ...
    @property
    def value(self) -> object: ...


class AuthresResult(Protocol):
    """One method's result in an Authentication-Results header (authres ships no types)."""

    @property
    def method(self) -> object: ...
    @property
    def result(self) -> object: ...
    @property
    def properties(self) -> Sequence[AuthresProperty]: ...

PUBLIC_SUFFIX_LIST = Path("/usr/share/publicsuffix/public_suffix_list.dat")  # Debian's `publicsuffix`

_METHODS = ("dmarc", "dkim", "spf", "arc", "auth")
_DMARC_POLICY_COMMENT = re.compile(r"\bdmarc\s*=\s*[a-z]+\s*\(([^)]*)\)", re.IGNORECASE)
_RECEIVED_BY = re.compile(r"\bby\s+([^\s;()]+)", re.IGNORECASE)


class DnsTemporaryError(Exception):
    """A lookup timed out or no server answered: the answer may differ later."""


class TxtResolver(Protocol):
    """TXT lookups for DKIM keys and DMARC records; tests pass a stub."""

    def txt(self, name: str) -> list[str] | None:
        """The TXT strings at `name` (each record's strings joined), None when the name has none
        (NXDOMAIN, no TXT); raises DnsTemporaryError when that cannot be known now."""
        ...


class DnsResolver:
    """dnspython behind a small cache (answers and missing records, `cache_seconds`)."""

    def __init__(self, *, servers: Sequence[str] = (), timeout: float = 5.0, cache_seconds: int = 300,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        import dns.resolver

        self._resolver = dns.resolver.Resolver(configure=not servers)
        if servers:
            # "192.0.2.53", or with a port: "127.0.0.1:5353", "[::1]:5353".
            addresses, ports = [], {}
            for server in servers:
                host, port = _host_port(server)
                addresses.append(host)
                if port:
                    ports[host] = port
            self._resolver.nameservers = addresses
            self._resolver.nameserver_ports = ports
        self._resolver.lifetime = timeout
        self._resolver.timeout = timeout
        self._cache_seconds = cache_seconds
        self._monotonic = monotonic
        self._cache: dict[str, tuple[float, list[str] | None]] = {}
        self._lock = threading.Lock()

    def txt(self, name: str) -> list[str] | None:
        import dns.exception
        import dns.resolver

        key = name.lower().rstrip(".")
        now = self._monotonic()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            answer = self._resolver.resolve(key + ".", "TXT", raise_on_no_answer=False)
            records = [b"".join(r.strings).decode("utf-8", "replace") for r in answer] if answer.rrset else None
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            records = None
        except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.NoResolverConfiguration) as error:
            raise DnsTemporaryError(f"{type(error).__name__} for {key}") from error
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (now + self._cache_seconds, records)
        return records


def _host_port(server: str) -> tuple[str, int | None]:
    text = server.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, None


def load_public_suffixes(path: Path = PUBLIC_SUFFIX_LIST) -> PublicSuffixes:
    """The Public Suffix List, or an empty one (organisational domain = the last two labels)."""
    try:
        return PublicSuffixes.from_text(path.read_text(encoding="utf-8"))
    except OSError:
        log.warning("no Public Suffix List at %s; organisational domains are the last two labels", path)
        return PublicSuffixes()


# ---------------------------------------------------------------------------------------------
# Authentication-Results from our own MTAs


def trusted_results(
    headers: Iterable[tuple[str, str]], trusted_ids: Iterable[str], *, from_domain: str
) -> SenderVerdict | None:
    """The verdict our own MTAs stamped, or None when no trusted header is present.

    Rules, in order (RFC 8601 §5: anything a sender could have written is ignored):
    1. Headers are read top-down to the first `Received:` that none of our MTAs added (its `by`
       host is not in `trusted_ids`): everything below it came from outside.
    2. Above it there must be a `Received:` by one of our MTAs; otherwise nothing is trusted
       (the message did not pass through them, so we cannot tell their header from a forgery).
       Milters such as OpenDKIM and OpenDMARC may put theirs just below our own `Received:`:
       that is still above the outside world's.
    3. Only `Authentication-Results` in that region with an authserv-id in `trusted_ids` count;
       one with another id, one below it, or an unparseable one is ignored.
       `ARC-Authentication-Results` is never read as ours.
    4. Several trusted instances: for each method the topmost (the last added) wins, so a
       forgery that slipped into the region cannot outvote our MTA's own result.
    """
    trusted = {i.strip().lower() for i in trusted_ids if i.strip()}
    if not trusted:
        return None
    items = list(headers)
    region_end, ours_seen = len(items), False
    for index, (name, value) in enumerate(items):
        if name.strip().lower() != "received":
            continue
        found = _RECEIVED_BY.search(value)
        if found is None or found.group(1).lower().rstrip(".") not in trusted:
            region_end = index
            break
        ours_seen = True
    if not ours_seen:
        return None
    by_method: dict[str, MethodResult] = {}
    sources: list[str] = []
    for name, value in items[:region_end]:
        if name.strip().lower() != "authentication-results":
            continue
        try:
            header = authres.AuthenticationResultsHeader.parse_value(value)
        except Exception:
            continue
        ident = str(header.authserv_id or "").lower()
        if ident not in trusted:
            continue
        sources.append(ident)
        comment_policy = _dmarc_comment_policy(value)
        for result in header.results:
            method = str(result.method).lower()
            if method not in _METHODS or method in by_method:
                continue
            by_method[method] = _method_result(method, result, comment_policy)
    if not sources:
        return None
    dmarc = by_method.get("dmarc")
    ordered = tuple(by_method[m] for m in _METHODS if m in by_method)
    return SenderVerdict(
        source=f"authentication-results:{sources[0]}",
        from_domain=(dmarc.domain if dmarc and dmarc.domain else from_domain),
        dmarc=dmarc.result if dmarc else "none",
        dmarc_policy=dmarc.policy if dmarc else "",
        results=ordered,
    )


def _method_result(method: str, result: AuthresResult, comment_policy: str) -> MethodResult:
    props = {(str(p.type).lower(), str(p.name).lower()): str(p.value) for p in result.properties}
    domain, policy = "", ""
    if method == "dkim":
        domain = props.get(("header", "d"), "") or props.get(("header", "i"), "").rpartition("@")[2]
    elif method == "spf":
        mailfrom = props.get(("smtp", "mailfrom"), "") or props.get(("smtp", "helo"), "")
        domain = mailfrom.rpartition("@")[2]
    elif method == "dmarc":
        domain = props.get(("header", "from"), "")
        policy = props.get(("policy", "published-domain-policy"), "") or props.get(("policy", "dmarc"), "") or comment_policy
    elif method == "auth":
        domain = props.get(("smtp", "auth"), "")
    return MethodResult(method, str(result.result).lower(), domain.lower(), policy.lower())


def _dmarc_comment_policy(value: str) -> str:
    """OpenDMARC and rspamd put the published policy in a comment: `dmarc=fail (p=reject dis=none)`."""
    found = _DMARC_POLICY_COMMENT.search(value)
    if found is None:
        return ""
    for word in found.group(1).split():
        if word.lower().startswith("p="):
            return word[2:].lower()
    return ""


# ---------------------------------------------------------------------------------------------
# Our own DKIM check


def verify_dkim(raw: bytes, *, from_domain: str, resolver: TxtResolver, suffixes: PublicSuffixes) -> SenderVerdict:
    """Verify every DKIM-Signature (dkimpy) and evaluate DMARC for `from_domain`.

    dkimpy swallows its own DNS timeout as a failed signature, so lookups go through a wrapper
    that remembers a temporary failure: the verdict is then `temperror`, never `fail`.
    """
    temporary: list[str] = []

    def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        try:
            records = resolver.txt(text.rstrip("."))
        except DnsTemporaryError as error:
            temporary.append(str(error))
            raise dkim.DnsTimeoutError(str(error)) from error
        return records[0].encode("utf-8") if records else None

    results: list[MethodResult] = []
    try:
        checker = dkim.DKIM(raw, logger=_QUIET)
        signatures = [value for name, value in checker.headers if name.lower() == b"dkim-signature"]
        for index in range(len(signatures)):
            domain = _signature_domain(signatures[index])
            try:
                ok = checker.verify(idx=index, dnsfunc=dnsfunc)
            except dkim.DKIMException:
                ok = False
            results.append(MethodResult("dkim", "pass" if ok else ("temperror" if temporary else "fail"), domain))
    except Exception as error:
        log.info("DKIM check failed on malformed input: %s", type(error).__name__)
    if not results:
        results.append(MethodResult("dkim", "none"))
    record, record_domain = None, from_domain
    if from_domain and not temporary:
        try:
            record, record_domain = _dmarc_record(from_domain, resolver, suffixes)
        except DnsTemporaryError as error:
            temporary.append(str(error))
    return dmarc_verdict(
        from_domain=from_domain, dkim=results, record=record, record_domain=record_domain,
        suffixes=suffixes, temporary=bool(temporary),
    )


def _dmarc_record(from_domain: str, resolver: TxtResolver, suffixes: PublicSuffixes) -> tuple[DmarcRecord | None, str]:
    """RFC 7489 §6.6.3: the record at `_dmarc.<From domain>`, else at the organisational domain."""
    candidates = [from_domain]
    organisation = organisational_domain(from_domain, suffixes)
    if organisation != from_domain:
        candidates.append(organisation)
    for domain in candidates:
        for text in resolver.txt(f"_dmarc.{domain}") or ():
            record = parse_dmarc_record(text)
            if record is not None:
                return record, domain
    return None, from_domain


def _signature_domain(value: bytes) -> str:
    found = re.search(rb"(?:^|;)\s*d\s*=\s*([^;\s]+)", value)
    return found.group(1).decode("ascii", "replace").lower() if found else ""


class _Quiet(logging.Logger):
    """dkimpy logs every failed signature at ERROR; a forged signature is the sender's fault."""

    def __init__(self) -> None:
        super().__init__("mailcase.ingest.authentication.dkim", logging.CRITICAL + 1)


_QUIET = _Quiet()
