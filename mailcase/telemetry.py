"""The daemon's Prometheus metrics that ingest, notify and the jobs count as they work; it imports only
prometheus_client, does no I/O beyond defining the metrics, and never reads the database or a message.

What is counted where happens (a message ingested, a notice delivered, a mailbox polled) lives here
as counters, histograms and gauges; what is a state of the database (held messages, the queue, open
cases) is read at scrape time by `mailcase.observe.metrics`. With `[smtp] workers > 1` the daemon
sets PROMETHEUS_MULTIPROC_DIR before this module is first imported, so every worker process writes
its values to files there and the endpoint adds them up (prometheus-client's multiprocess mode).
Label values are bounded sets (channels, decisions, notice kinds, mailbox names, priorities), never
addresses, subjects or message ids.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

INBOUND_MESSAGES = Counter(
    "mailcase_inbound_messages",
    "Inbound messages committed, by channel (smtp, lmtp, imap, pipe) and decision (open_case, hold, ...).",
    ["channel", "decision"],
)
INGEST_DURATION = Histogram(
    "mailcase_ingest_duration_seconds",
    "From the end of DATA to the commit of the message (SMTP and LMTP listeners), in seconds.",
    ["channel"],
    buckets=_LATENCY_BUCKETS,
)
OUTBOX_SENT = Counter("mailcase_outbox_sent", "Notices the relay accepted, by kind.", ["kind"])
OUTBOX_FAILED = Counter("mailcase_outbox_failed", "Notices given up (a 5xx or too many attempts), by kind.", ["kind"])
DELIVERY_ATTEMPTS = Counter(
    "mailcase_delivery_attempts",
    "Messages handed to the relay, by result (sent, temporary, permanent, unreachable) and reply class"
    " (2xx, 4xx, 5xx, none).",
    ["result", "reply_class"],
)
IMAP_POLL_DURATION = Histogram(
    "mailcase_imap_poll_duration_seconds",
    "One pass over a mailbox (search, fetch, store, move), in seconds.",
    ["mailbox"],
    buckets=_LATENCY_BUCKETS,
)
IMAP_IDLE_LATENCY = Histogram(
    "mailcase_imap_idle_latency_seconds",
    "How long the server took to accept IDLE (RFC 2177), in seconds.",
    ["mailbox"],
    buckets=_LATENCY_BUCKETS,
)
IMAP_LAST_SUCCESS = Gauge(
    "mailcase_imap_last_success_timestamp_seconds",
    "When a mailbox last answered: a completed poll or an IDLE response (Unix time).",
    ["mailbox"],
    multiprocess_mode="mostrecent",
)
IMAP_AUTH_FAILURES = Counter(
    "mailcase_imap_auth_failures", "Sign-ins a mailbox's server refused.", ["mailbox"]
)
SLA_NOTICES = Counter(
    "mailcase_sla_notices",
    "Staff notices the scheduler queued (sla_reminder, sla_escalation_l2, sla_escalation_l3, ...), by case priority.",
    ["kind", "priority"],
)
SLA_BREACHES = Counter(
    "mailcase_sla_breaches", "SLA deadlines missed (a first escalation queued), by case priority.", ["priority"]
)
SWEEP_DURATION = Histogram(
    "mailcase_sweep_duration_seconds",
    "One scheduler sweep (SLA, nudges, maintenance, master updates), in seconds.",
    buckets=_LATENCY_BUCKETS,
)

BREACH_KIND = "sla_escalation_l2"
"""The notice that says a deadline was missed: every breach escalates to level 2 first."""


def count_inbound(channel: str, decision: str) -> None:
    INBOUND_MESSAGES.labels(channel, decision).inc()


def observe_ingest(channel: str, seconds: float) -> None:
    INGEST_DURATION.labels(channel).observe(seconds)


def count_delivery(kind: str, result: str, code: int | None, final: str) -> None:
    """One relay answer about a notice: `result` as the relay said it, `final` what the outbox made of it
    (a temporary failure on the last allowed attempt is final "permanent")."""
    reply_class = f"{code // 100}xx" if code else "none"
    DELIVERY_ATTEMPTS.labels(result, reply_class).inc()
    if final == "sent":
        OUTBOX_SENT.labels(kind).inc()
    elif final == "permanent":
        OUTBOX_FAILED.labels(kind).inc()


def observe_imap_poll(mailbox: str, seconds: float, at: float) -> None:
    IMAP_POLL_DURATION.labels(mailbox).observe(seconds)
    IMAP_LAST_SUCCESS.labels(mailbox).set(at)


def observe_imap_idle(mailbox: str, seconds: float) -> None:
    IMAP_IDLE_LATENCY.labels(mailbox).observe(seconds)


def mark_imap_heard(mailbox: str, at: float) -> None:
    IMAP_LAST_SUCCESS.labels(mailbox).set(at)


def count_imap_auth_failure(mailbox: str) -> None:
    IMAP_AUTH_FAILURES.labels(mailbox).inc()


def count_sla_notices(queued: Iterable[tuple[str, str]]) -> None:
    """(notice kind, case priority) of each newly queued staff notice, once per case and kind."""
    for kind, priority in queued:
        SLA_NOTICES.labels(kind, priority).inc()
        if kind == BREACH_KIND:
            SLA_BREACHES.labels(priority).inc()


def observe_sweep(seconds: float) -> None:
    SWEEP_DURATION.observe(seconds)
