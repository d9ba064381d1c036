"""One pipeline for every channel (`ingest_one`): store the raw bytes, parse, decide, apply, queue notices — in one transaction.

SMTP answers 250 and IMAP moves a message only after `ingest_one` returned, i.e. after the commit
(SPEC.md §3, "Nothing lost"). A transient database failure raises TransientError and changes
nothing. This module never sends mail: notices become outbox rows that `notify` delivers later.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, assert_never

from sqlalchemy.engine import Engine
from sqlmodel import Session

from mailcase import telemetry
from mailcase.config import Settings
from mailcase.desk import cases, masters, subscriptions
from mailcase.desk import notices as desk_notices
from mailcase.desk.context import Desk
from mailcase.domain import (
    NO_VERDICT,
    AutoKind,
    CaseKind,
    CaseStatus,
    CaseView,
    Channel,
    EventKind,
    HeldState,
    InboundMessage,
    MethodResult,
    NoticeIntent,
    RawMessage,
    SenderPolicy,
    SenderVerdict,
    SenderView,
    format_case_number,
)
from mailcase.errors import TransientError
from mailcase.ingest import authentication as evidence
from mailcase.ingest.parse import UnparseableMessage, parse_message
from mailcase.ingest.quotes import strip_known_quotes
from mailcase.logs import ingest_fields
from mailcase.rules import admission, classify, tokens
from mailcase.rules.authentication import Authentication, PublicSuffixes
from mailcase.rules.businesstime import BusinessCalendar
from mailcase.rules.decide import (
    AppendUpdate,
    Decision,
    Facts,
    HoldMessage,
    IgnoreMessage,
    OpenCase,
    OpenRelatedCase,
    RecordAutoReply,
    RecordBounce,
    ReopenCase,
    SubscriptionCommand,
    TechnicianReply,
    Unsubscribe,
    decide,
    decision_name,
    subject_key,
)
from mailcase.rules.lifecycle import Actor
from mailcase.rules.matching import Match, Matched, MatchRule, Unmatched, match_case, thread_ids
from mailcase.rules.sla import start_on_arrival
from mailcase.store import facts as store_facts
from mailcase.store.cases import (
    add_event,
    add_events,
    add_participants,
    assign_next,
    case_by_id,
    case_by_number,
    case_view,
    event_values,
    insert_case,
)
from mailcase.store.directory import (
    ContactOrganisation,
    organisation_for_address,
    sender_view,
    sender_view_and_name,
)
from mailcase.store.engine import sqlite_writer_turn, transaction
from mailcase.store.held import hold_message, raw_of, resolve_held
from mailcase.store.messages import (
    NewRawRecord,
    first_received,
    insert_inbound_message,
    insert_raw,
    save_decision,
)
from mailcase.store.models import Case, HeldMessage, Organisation, RawMessageRecord
from mailcase.store.outbox import notice_case_id, record_bounce

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    """What happened to one inbound message (the SMTP reply, the `ingest` output and the log line say this)."""

    decision: str
    reason: str
    message_id: str
    case_number: str | None = None
    raw_id: int | None = None
    duplicate: bool = False
    held_id: int | None = None


_NOT_YET: Exception = TransientError("not stored: its group's transaction did not finish")
"""A group member's place-holder until its savepoint is released (never left in a returned result)."""


def dedupe_key(message: InboundMessage | None, raw: bytes) -> str:
    """SPEC.md §3: the Message-ID *together with* a digest of sender, subject and body; the digest
    alone without a Message-ID; the raw bytes' digest for a message that could not be parsed."""
    if message is None:
        return "raw:" + hashlib.sha256(raw).hexdigest()
    if not message.message_id:
        return "digest:" + message.content_digest
    return "mid:" + hashlib.sha256(f"{message.message_id}\n{message.content_digest}".encode()).hexdigest()


class Pipeline:
    """The shared ingest pipeline; one per process, safe to call from several threads."""

    def __init__(
        self, *, engine: Engine, settings: Settings, desk: Desk, secret: bytes, calendar: BusinessCalendar,
        resolver: evidence.TxtResolver | None = None, suffixes: PublicSuffixes | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.desk = desk
        self.secret = secret
        self.calendar = calendar
        self.policy = SenderPolicy(settings.security.sender_policy)
        # Our own DKIM check runs only with `[security] verify = "dkim"` and a resolver to ask.
        self.resolver = resolver if settings.security.verify == "dkim" else None
        self._suffixes = suffixes

    # The callable the SMTP handler, the IMAP pollers and `mailcase ingest` share.
    def __call__(self, raw: RawMessage) -> IngestOutcome:
        return self.ingest_one(raw)

    def ingest_one(self, raw: RawMessage) -> IngestOutcome:
        prepared = self._prepare(raw)
        # On SQLite, processes take turns for the single write lock (see sqlite_writer_turn).
        with sqlite_writer_turn(self.engine), transaction(self.engine) as session:
            outcome = self._store(session, raw, *prepared)
        self._log(raw, outcome, prepared[2])
        return outcome

    def ingest_group(self, raws: Sequence[RawMessage]) -> list[IngestOutcome | Exception]:
        """Group commit: several messages (concurrent SMTP sessions') in one transaction, one commit.

        Each message is applied inside its own SAVEPOINT, so one that fails is rolled back alone
        and its place in the result is the exception (its sender gets 451), while its neighbours'
        outcomes stand. When the commit itself fails, each message is retried alone
        (`ingest_one`), so no message's fate depends on another's. The result is in `raws`' order,
        and every outcome it holds is committed when this returns.
        """
        if len(raws) == 1:
            try:
                return [self.ingest_one(raws[0])]
            except Exception as error:
                return [error]
        results: list[IngestOutcome | Exception] = []
        prepared: list[tuple[InboundMessage | None, str, SenderVerdict] | None] = []
        for raw in raws:
            try:
                prepared.append(self._prepare(raw))
                results.append(_NOT_YET)
            except Exception as error:
                prepared.append(None)
                results.append(error)
        try:
            with sqlite_writer_turn(self.engine), transaction(self.engine) as session:
                for index, (raw, ready) in enumerate(zip(raws, prepared, strict=True)):
                    if ready is None:
                        continue
                    try:
                        with session.begin_nested():
                            results[index] = self._store(session, raw, *ready)
                    except Exception as error:
                        log.error("ingest failed in a group, rolled back alone: %s", error, exc_info=True)
                        results[index] = error
                        # Rows loaded or written by the rolled-back message are read again by the
                        # next one (some were written on the driver's cursor, which the ORM does
                        # not track, so the rollback alone would not expire them).
                        session.expire_all()
        except Exception as error:
            log.warning("group commit of %d messages failed (%s); each is retried alone", len(raws), error)
            alone: list[IngestOutcome | Exception] = []
            for raw, earlier in zip(raws, results, strict=True):
                if isinstance(earlier, Exception) and earlier is not _NOT_YET:
                    alone.append(earlier)  # it failed on its own (parse, evidence, its savepoint)
                    continue
                try:
                    alone.append(self.ingest_one(raw))
                except Exception as failure:
                    alone.append(failure)
            return alone
        for raw, ready, result in zip(raws, prepared, results, strict=True):
            if ready is not None and isinstance(result, IngestOutcome):
                self._log(raw, result, ready[2])
        return results

    def _prepare(self, raw: RawMessage) -> tuple[InboundMessage | None, str, SenderVerdict]:
        """What needs no transaction: the parsed message (or why it could not be parsed) and the sender's evidence."""
        # Parse before the transaction: it is the costliest step and needs no lock.
        # SMTP's "" is the null sender <> (a bounce); for a file or IMAP, "" only means unknown.
        envelope_from = raw.envelope_from if raw.channel is Channel.SMTP else (raw.envelope_from or None)
        message, parse_error = _parsed(
            raw.data, envelope_from=envelope_from,
            max_depth=self.settings.mime.max_depth, max_parts=self.settings.mime.max_parts,
        )
        # The sender's evidence, before the transaction too: our own DKIM check may wait on DNS.
        verdict = self.verdict(raw.data, message, raw.envelope_to) if message is not None else NO_VERDICT
        if verdict.temporary and self.policy is SenderPolicy.ENFORCE:
            # Never a silent pass or fail: the sender retries (SMTP 451), IMAP leaves it for later.
            raise TransientError(f"sender authentication needs DNS, which failed for now ({verdict.summary()})")
        return message, parse_error, verdict

    def _log(self, raw: RawMessage, outcome: IngestOutcome, verdict: SenderVerdict) -> None:
        log.info(
            "ingest message-id=%s channel=%s decision=%s case=%s dmarc=%s reason=%s",
            outcome.message_id or "-",
            raw.channel.value,
            outcome.decision,
            outcome.case_number or "-",
            verdict.dmarc,  # the sender verdict, for log-based counts until metrics exist
            outcome.reason,
            # The same fields as separate keys for `[logging] format = "json"` (mailcase.logs).
            extra=ingest_fields(
                message_id=outcome.message_id, channel=raw.channel.value, decision=outcome.decision,
                reason=outcome.reason, case=outcome.case_number, dmarc=verdict.dmarc,
            ),
        )
        telemetry.count_inbound(raw.channel.value, outcome.decision)

    @property
    def suffixes(self) -> PublicSuffixes:
        if self._suffixes is None:
            self._suffixes = evidence.load_public_suffixes()
        return self._suffixes

    def verdict(self, data: bytes, message: InboundMessage, envelope_to: tuple[str, ...] = ()) -> SenderVerdict:
        """Rules, in order: a trusted Authentication-Results (our MTA's); none needed when the
        message answers through its author's own technician token (an HMAC: no DNS, so a DNS
        outage never defers a technician); our own DKIM check when configured; no verdict."""
        from_domain = message.from_address.rpartition("@")[2] if len(message.authors) == 1 else ""
        trusted = evidence.trusted_results(
            message.headers, self.settings.security.trusted_authserv_ids, from_domain=from_domain
        )
        if trusted is not None:
            if trusted.from_domain.lower() != from_domain.lower():
                # Our MTA judged another From domain than the author we read (it parsed From:
                # differently, or several From fields): its pass vouches for nobody we act on.
                return dataclasses.replace(trusted, from_domain=from_domain, dmarc="fail" if from_domain else "none")
            return trusted
        recipients = tuple(dict.fromkeys([*envelope_to, *message.to, *message.cc]))
        if self._staff_token_case(recipients, message.from_address) is not None:
            return dataclasses.replace(NO_VERDICT, from_domain=from_domain)
        if self.resolver is not None and from_domain:
            return evidence.verify_dkim(data, from_domain=from_domain, resolver=self.resolver, suffixes=self.suffixes)
        return dataclasses.replace(NO_VERDICT, from_domain=from_domain)

    def release_held(
        self, session: Session, held: HeldMessage, *, now: datetime, by: str, to_case: int | None = None,
        new_case: bool = False,
    ) -> IngestOutcome:
        """Re-run the decision for a held message as if its sender were allowed (the agent vouches):
        threading again (a held reply lands on the case it answers), or onto the case `to_case`
        (a case id), or as a new case with `new_case`."""
        record = raw_of(session=session, raw_id=held.raw_id)
        assert record is not None
        parsed, why = _parsed(record.data)
        message = parsed if parsed is not None else _salvage(record.data, why)
        verdict = _stored_verdict(record.sender_verdict)
        outcome = self._decide_and_apply(
            session, record, message, now=now, released=True, verdict=verdict,
            forced_case_id=to_case, force_new_case=new_case,
        )
        resolve_held(
            session=session, held=held, state=HeldState.RELEASED, now=now, by=by,
            case_id=record.case_id if outcome.case_number else None,
        )
        return outcome

    # -----------------------------------------------------------------------------------------

    def _store(
        self, session: Session, raw: RawMessage, message: InboundMessage | None, parse_error: str, verdict: SenderVerdict,
    ) -> IngestOutcome:
        key = dedupe_key(message, raw.data)
        raw_id = insert_raw(
            session=session,
            values={
                "channel": raw.channel.value,
                "received_at": raw.received_at,
                "envelope_from": raw.envelope_from[:998],
                "envelope_to": list(raw.envelope_to),
                "source": raw.source[:500],
                "size": len(raw.data),
                "sha256": message.raw_sha256 if message else hashlib.sha256(raw.data).hexdigest(),
                "data": raw.data,
                "message_id_header": (message.message_id if message else "")[:998],
                "dedupe_key": key,
                "sender_verdict": verdict.as_json() if message is not None else {},
            },
        )
        if raw_id is None:
            first, first_case = first_received(session=session, dedupe_key=key)
            number = format_case_number(first_case) if first_case is not None else None
            return IngestOutcome(
                decision="duplicate",
                reason=f"already received at {first.received_at.isoformat()} (raw #{first.id}); nothing changed",
                message_id=message.message_id if message else "",
                case_number=number,
                raw_id=first.id,
                duplicate=True,
            )
        # What the rest of the transaction needs of the row just written, without reading it back.
        record = NewRawRecord(id=raw_id, envelope_to=list(raw.envelope_to))
        if message is None:
            return self._hold_unparseable(session, record, parse_error, raw)
        return self._decide_and_apply(session, record, message, now=raw.received_at, released=False, verdict=verdict)

    def _hold_unparseable(self, session: Session, record: NewRawRecord, reason: str, raw: RawMessage) -> IngestOutcome:
        why = f"could not be parsed: {reason}"
        held_id = hold_message(
            session=session, raw_id=record.id, from_address=raw.envelope_from, subject="", reason=why,
            received_at=raw.received_at,
        )
        record.decision, record.reason = "hold_message", why
        save_decision(session=session, record=record)
        return IngestOutcome("hold_message", why, "", raw_id=record.id, held_id=held_id)

    def _decide_and_apply(
        self, session: Session, record: RawMessageRecord | NewRawRecord, message: InboundMessage, *, now: datetime, released: bool,
        verdict: SenderVerdict = NO_VERDICT,
        forced_case_id: int | None = None, force_new_case: bool = False,
    ) -> IngestOutcome:
        # The sender's directory entry, read once: the facts need the view, a new case's
        # acknowledgement the contact's name.
        looked_up = (
            sender_view_and_name(message.from_address, session=session)
            if message.from_address else (SenderView(address=""), None, None)
        )
        if looked_up[2] is not None and self.desk.planner is not None:
            # Their organisation's SLA overrides came with it: a new case's deadlines need no query.
            self.desk.planner.overrides_read(session, looked_up[2].id, looked_up[2].sla_overrides)
        facts = self._facts(
            session, record, message, now=now, released=released, sender=looked_up[0], verdict=verdict,
            sender_organisation=looked_up[2],
            forced_case_id=forced_case_id, force_new_case=force_new_case,
        )
        facts = self._unsubscribe_facts(session, facts, (*record.envelope_to, *message.to, *message.cc))
        decision = decide(facts)
        if not facts.sender.is_technician:
            message = _with_case_new_text(session, message, decision, self.settings.smtp.domains)
        applied = _Apply(
            self, session, record, message, now, sender=facts.sender, sender_name=looked_up[1], sender_organisation=looked_up[2],
        )
        case, held_id = applied.run(decision)
        if case is not None and facts.authentication.policy is SenderPolicy.MONITOR:
            # `monitor`: what `enforce` would have held goes ahead, and the case records why.
            shadow = decide(dataclasses.replace(
                facts, authentication=dataclasses.replace(facts.authentication, policy=SenderPolicy.ENFORCE)
            ))
            if isinstance(shadow, HoldMessage) and shadow.unauthenticated and not isinstance(decision, HoldMessage):
                add_event(
                    session=session, case=case, kind=EventKind.SENDER_CHECK, at=now, author=message.from_address,
                    summary=f"sender check (monitor): enforce would hold this message: {shadow.reason}"[:500],
                    data={"verdict": verdict.as_json(), "would_hold": shadow.reason},
                )
        record.decision = decision_name(decision)
        record.reason = decision.reason
        record.case_id = case.id if case is not None else None
        save_decision(session=session, record=record)
        return IngestOutcome(
            decision=record.decision,
            reason=decision.reason,
            message_id=message.message_id,
            case_number=format_case_number(case.number) if case is not None else None,
            raw_id=record.id,
            held_id=held_id,
        )

    def _unsubscribe_facts(self, session: Session, facts: Facts, recipients: tuple[str, ...]) -> Facts:
        """Whether the message went to one of our signed List-Unsubscribe addresses (RFC 2369/8058),
        its MAC is the one issued to its sender, and the case its scope names (decide's rule 1)."""
        request = tokens.unsubscribe_request(recipients, self.settings.smtp.support_address)
        if request is None:
            return facts
        sender = facts.message.from_address.strip().lower()
        genuine = tokens.request_is_genuine(request, sender, self.secret)
        case = None
        if genuine and request.scope != tokens.MAINTENANCE_SCOPE:
            row = case_by_number(session=session, number=int(request.scope[1:]))
            case = case_view(row) if row is not None else None
        return dataclasses.replace(facts, unsubscribe=request, unsubscribe_genuine=genuine, unsubscribe_case=case)

    # -----------------------------------------------------------------------------------------
    # Looking up the facts

    def _facts(
        self, session: Session, record: RawMessageRecord | NewRawRecord, message: InboundMessage, *, now: datetime, released: bool,
        sender: SenderView | None = None, verdict: SenderVerdict = NO_VERDICT, sender_organisation: Any = None,
        forced_case_id: int | None = None, force_new_case: bool = False,
    ) -> Facts:
        settings = self.settings
        if sender is None:
            sender = sender_view(message.from_address, session=session) if message.from_address else SenderView(address="")
        recipients = tuple(dict.fromkeys([*record.envelope_to, *message.to, *message.cc]))
        ids = thread_ids(message)
        our_ids, customer_ids = store_facts.known_ids(session=session, ids=ids)
        token_case_id = self._token_case(session, recipients)
        staff_case_number = self._staff_token_case(recipients, message.from_address) if sender.is_technician else None
        if token_case_id is None and staff_case_number is not None:
            token_case_id = store_facts.case_id_by_number(session=session, number=staff_case_number)
        tagged = store_facts.case_ids_by_numbers(session=session, numbers=classify.case_tags(message.subject))
        candidate_ids = {*our_ids.values(), *customer_ids.values(), *tagged}
        if token_case_id:
            candidate_ids.add(token_case_id)
        views = store_facts.case_views(session=session, ids=candidate_ids)
        match: Match = match_case(
            message,
            sender,
            our_ids=our_ids,
            customer_ids=customer_ids,
            token_case_id=token_case_id if token_case_id in views else None,
            tagged_cases=[views[case_id] for case_id in tagged if case_id in views],
            cases=views,
            released=released,
        )
        if forced_case_id is not None:
            # An agent named the case (`held release --to-case`): that case, whatever the headers say.
            views |= store_facts.case_views(session=session, ids={forced_case_id})
            match = Matched(forced_case_id, MatchRule.AGENT, "released onto this case by an agent")
        elif force_new_case:
            match = Unmatched(("an agent released it as a new case",))
        case = views.get(match.case_id) if isinstance(match, Matched) else None
        primary = store_facts.primary_of(session=session, case=case) if case is not None and case.status is CaseStatus.DUPLICATE else None
        linked = (
            store_facts.linked_case_of(session=session, master=case, sender=sender)
            if case is not None and case.kind is CaseKind.MASTER else None
        )
        hour, day, noticed, same_subject = store_facts.auto_reply_history(
            session=session, address=sender.address, now=now,
            notice_since=now - timedelta(hours=settings.autoreply.non_mpoc_notice_hours),
            subject_key=subject_key(message.subject),
        )
        addressed = {a.lower() for a in recipients}
        known, notices_last_hour = False, 0
        if message.from_address and not sender.is_mpoc and not sender.is_technician:
            known = sender.organisation_id is not None or organisation_for_address(message.from_address, session=session) is not None
            if known:
                notices_last_hour = store_facts.non_mpoc_notices_since(session=session, since=now - timedelta(hours=1))
        return Facts(
            message=message,
            sender=sender,
            match=match,
            now=now,
            case=case,
            primary=primary,
            linked_case=linked,
            addressed_to_macd=settings.smtp.macd_address.lower() in addressed,
            addressed_to_postmaster=bool(addressed) and all(a.split("@")[0] == "postmaster" for a in addressed),
            desk_timezone=settings.business.timezone,
            reopen_window_days=settings.lifecycle.reopen_window_days,
            released=released,
            auto_replies_last_hour=hour,
            auto_replies_last_day=day,
            max_auto_replies_per_hour=settings.autoreply.max_per_hour,
            max_auto_replies_per_day=settings.autoreply.max_per_day,
            non_mpoc_notice_recently=noticed,
            authentication=self._authentication(
                session, message, sender, verdict, staff_case_number, organisation=sender_organisation
            ),
            sender_organisation_known=known,
            non_mpoc_notices_last_hour=notices_last_hour,
            max_non_mpoc_notices_per_hour=settings.autoreply.non_mpoc_max_per_hour,
            same_subject_answers_last_hour=same_subject,
            max_same_subject_per_hour=settings.autoreply.max_same_subject_per_hour,
            max_reply_attachment_bytes=settings.attachments.reply_max_bytes,
            from_our_address=_is_our_address(message.from_address, settings),
        )

    def _authentication(
        self, session: Session, message: InboundMessage, sender: SenderView, verdict: SenderVerdict,
        staff_case_number: int | None, *, organisation: Any,
    ) -> Authentication:
        domain = message.from_address.rpartition("@")[2].lower()
        ours = {d.lower() for d in self.settings.smtp.domains}
        organisation_domain = False
        if self.policy is not SenderPolicy.OFF and domain and domain not in ours:
            organisation_domain = (
                sender.contact_id is not None
                or organisation is not None
                or organisation_for_address(message.from_address, session=session) is not None
            )
        return Authentication(
            policy=self.policy,
            verdict=verdict,
            from_domain=domain,
            organisation_domain=organisation_domain,
            our_domain=domain in ours,
            technician_token_case=staff_case_number,
            submitted_authenticated=_submitted_as(verdict, message.from_address),
        )

    def _staff_token_case(self, recipients: tuple[str, ...], author: str) -> int | None:
        """The case a per-technician reply token names, when it was issued to `author`."""
        support = self.settings.smtp.support_address
        for address in recipients:
            if "+s" not in address or not author:
                continue
            number = tokens.staff_case_from_address(address, support, self.secret, author=author)
            if number is not None:
                return number
        return None

    def _token_case(self, session: Session, recipients: tuple[str, ...]) -> int | None:
        support = self.settings.smtp.support_address
        for address in recipients:
            if "+" not in address:
                continue
            number = tokens.case_from_address(address, support, self.secret)
            if number is not None:
                case_id = store_facts.case_id_by_number(session=session, number=number)
                if case_id is not None:
                    return case_id
        return None


def _is_our_address(address: str, settings: Settings) -> bool:
    """The support, MACD or outbound From address, or a `+token` form of one of them."""
    if not address or "@" not in address:
        return False
    local, domain = address.lower().rsplit("@", 1)
    bare = f"{local.split('+', 1)[0]}@{domain}"
    ours = {settings.smtp.support_address, settings.smtp.macd_address, settings.outbound.from_address}
    return bare in {a.lower() for a in ours if a}


def _with_case_new_text(
    session: Session, message: InboundMessage, decision: Decision, own_domains: tuple[str, ...]
) -> InboundMessage:
    """The customer's message with quotes stripped only where the quoted text is on the case.

    A new case has nothing on it, so its message keeps its whole text; an update, a reopen or a
    related case keeps the cut only when `strip_known_quotes` finds the quote among the case's
    messages or the quote is of our own mail (issue 12: a forward is never cut, nor text the agent has not seen).
    """
    match decision:
        case AppendUpdate() | ReopenCase() | RecordAutoReply():
            case_ids = {decision.case.id}
        case OpenRelatedCase():
            case_ids = {decision.original.id}
        case _:
            case_ids = set()
    if message.new_text == message.text:
        return message  # nothing was cut: no case text to read
    known = store_facts.message_texts_of_cases(session=session, case_ids=case_ids)
    new_text = strip_known_quotes(message.text, known, own_domains)
    if new_text == message.new_text:
        return message
    return dataclasses.replace(message, new_text=new_text)


def _submitted_as(verdict: SenderVerdict, author: str) -> bool:
    """A trusted MTA stamped `auth=pass` for a login that is the author (`ana@…`, or `ana` when
    the MTA logs bare user names): another user's login proves nothing about this From:."""
    if not verdict.source.startswith("authentication-results:") or not author:
        return False
    for result in verdict.results:
        if result.method == "auth" and result.result == "pass":
            login = result.domain.strip().lower()
            return bool(login) and login in (author.lower(), author.lower().rpartition("@")[0])
    return False


def _stored_verdict(data: dict[str, Any] | None) -> SenderVerdict:
    """A verdict as `SenderVerdict.as_json` stored it (an empty one for messages from before)."""
    if not data:
        return NO_VERDICT
    results = tuple(MethodResult(**{k: str(r.get(k, "")) for k in ("method", "result", "domain", "policy")}) for r in data.get("results", ()))
    return SenderVerdict(
        source=str(data.get("source", "none")), from_domain=str(data.get("from_domain", "")), dmarc=str(data.get("dmarc", "none")),
        dmarc_policy=str(data.get("dmarc_policy", "")), results=results, temporary=bool(data.get("temporary", False)),
    )


def _parsed(data: bytes, **limits: Any) -> tuple[InboundMessage | None, str]:
    """The parsed message and "", or None and why it could not be parsed: `UnparseableMessage`'s
    reason, or the parser itself failing on hostile bytes (logged with its traceback; the message
    is then held with that reason, or released as what `_salvage` keeps). A MemoryError is raised:
    not certainly the message's fault, so the sender retries (451) and nothing is held."""
    try:
        return parse_message(data, **limits), ""
    except UnparseableMessage as exc:
        return None, exc.reason
    except MemoryError:
        raise
    except Exception as exc:
        log.exception("the parser failed on a message")
        return None, f"the parser failed ({type(exc).__name__}); see the daemon's log"


def _salvage(data: bytes, reason: str) -> InboundMessage:
    """A released unparseable message still becomes a case: its bytes as text, no headers trusted."""
    text = data.decode("utf-8", errors="replace")
    digest = hashlib.sha256(data).hexdigest()
    return InboundMessage(
        message_id="",
        in_reply_to="",
        references=(),
        from_address="",
        from_name="",
        to=(),
        cc=(),
        reply_to=(),
        subject="(unparseable message)",
        text=text,
        new_text=text,
        date=None,
        auto_kind=AutoKind.HUMAN,
        auto_reason="",
        content_digest=digest,
        raw_sha256=digest,
        defects=(f"unparseable: {reason}",),
    )


class _Apply:
    """Carries out one decision inside the pipeline's transaction."""

    def __init__(
        self, pipeline: Pipeline, session: Session, record: RawMessageRecord | NewRawRecord, message: InboundMessage, now: datetime,
        *, sender: SenderView | None = None, sender_name: str | None = None,
        sender_organisation: ContactOrganisation | None = None,
    ):
        self.p = pipeline
        self.session = session
        self.record = record
        self.message = message
        self.now = now
        self.desk = pipeline.desk
        self.sender = sender  # the facts' view of the sender, looked up once per message
        self.sender_name = sender_name  # their contact's name (None: not a contact, or not looked up)
        self.sender_organisation = sender_organisation  # their organisation's name, locale and zone

    def run(self, decision: Decision) -> tuple[Case | None, int | None]:
        match decision:
            case OpenCase():
                return self.open_case(
                    decision.kind, related=None, notices=decision.notices, withheld=decision.withheld,
                    master=decision.master,
                ), None
            case OpenRelatedCase():
                return self.open_case(
                    CaseKind.SUPPORT, related=decision.original, notices=decision.notices, withheld=decision.withheld,
                ), None
            case AppendUpdate():
                return self.append_update(decision), None
            case ReopenCase():
                return self.reopen(decision), None
            case RecordAutoReply():
                case = self._case(decision.case)
                message_id = self.store_message(case)
                add_event(
                    session=self.session, case=case, kind=EventKind.AUTO_REPLY, at=self.now,
                    author=self.message.from_address, summary=f"automatic reply recorded ({self.message.auto_reason})",
                    message_id=message_id,
                )
                return case, None
            case RecordBounce():
                return self.record_bounce(), None
            case TechnicianReply():
                return self.technician_reply(decision), None
            case SubscriptionCommand():
                return self.subscription(decision), None
            case Unsubscribe():
                self.unsubscribe(decision)
                return None, None
            case HoldMessage():
                return None, self.hold(decision)
            case IgnoreMessage():
                return None, None
            case _:
                assert_never(decision)

    # --- helpers -------------------------------------------------------------------------------

    def _case(self, view: CaseView) -> Case:
        case = case_by_id(session=self.session, case_id=view.id, lock=True)
        assert case is not None
        return case

    def store_message(self, case: Case | None) -> int:
        """Store the parsed message on `case` (or on no case); returns its id (one Core INSERT … RETURNING)."""
        return insert_inbound_message(
            session=self.session, message=self.message, case_id=case.id if case else None, raw_id=self.record.id,
            received_at=self.now,
        )

    def customer_participants(self, organisation_id: int | None) -> list[str]:
        """People the customer copied who join the case (rules.admission), with the facts it needs:
        which of them are technicians, and which belong to the case's organisation."""
        settings = self.p.settings
        candidates = admission.copied_candidates(
            [*self.message.to, *self.message.cc], sender=self.message.from_address, our_domains=settings.smtp.domains
        )
        if not candidates:
            return []
        policy = admission.ParticipantPolicy(settings.lifecycle.participant_policy)
        technicians = store_facts.technicians_among(session=self.session, addresses=candidates)
        members: set[str] = set()
        if organisation_id is not None and admission.membership_matters(policy, organisation_id):
            people = [a for a in candidates if a not in technicians]
            members = set(store_facts.contacts_of_organisation_among(
                session=self.session, addresses=people, organisation_id=organisation_id
            ))
            for address in people:
                if address in members:
                    continue
                organisation = organisation_for_address(address, session=self.session)
                if organisation is not None and organisation.id == organisation_id:
                    members.add(address)
        return admission.admit_participants(
            candidates, policy=policy, organisation_id=organisation_id, technicians=technicians, members=members
        )

    def attachment_facts(self, case: Case) -> dict[str, Any]:
        """The staff notice's list of this message's attachments, and the files it carries."""
        return desk_notices.attachment_context(
            self.message.attachments, limit=self.p.settings.attachments.notice_max_bytes, case_number=case.number
        )

    def queue(self, notices: Sequence[NoticeIntent], case: Case | None, known: desk_notices.Known) -> None:
        """The decision's notices as outbox rows, in this transaction (desk.notices.queue_notices)."""
        desk_notices.queue_notices(
            self.session, self.desk, notices, message=self.message, now=self.now, case=case, known=known,
        )

    def known(
        self, case: Case | None = None, *, context: dict[str, dict[str, Any]] | None = None, **values: Any,
    ) -> desk_notices.Known:
        """What the notices need from this message: the loop guard's subject key, its attachments
        (a notice's `attachments` context key), and whatever else the caller holds."""
        attachments = {"attachments": self.attachment_facts(case)} if case is not None else {}
        return desk_notices.Known(
            subject_key=subject_key(self.message.subject), context=attachments | (context or {}), **values
        )

    def record_withheld(self, case: Case, notice: str, withheld: str) -> None:
        """A withheld customer notice leaves a trace (issue 12): a case event with the reason (the
        rule put the words "the customer was not told" in the assignee's notice)."""
        if not withheld or not self.message.from_address:
            return
        add_event(
            session=self.session, case=case, kind=EventKind.NOTICE_WITHHELD, at=self.now, author="mailcase",
            summary=f"{notice} not sent to {self.message.from_address}: {withheld}"[:1000],
            data={"notice": notice, "recipient": self.message.from_address, "reason": withheld},
        )

    # --- decisions -----------------------------------------------------------------------------

    def open_case(
        self, kind: CaseKind, *, related: CaseView | None, notices: Sequence[NoticeIntent], withheld: str = "",
        master: CaseView | None = None,
    ) -> Case:
        m, settings = self.message, self.p.settings
        sender = self.sender
        if sender is None:
            sender = sender_view(m.from_address, session=self.session) if m.from_address else SenderView(address="")
        organisation_id = sender.organisation_id
        if organisation_id is None and m.from_address:
            organisation = organisation_for_address(m.from_address, session=self.session)
            organisation_id = organisation.id if organisation else None
        if related is not None and organisation_id is None:
            organisation_id = related.organisation_id
        # The notices below need the organisation's name, locale and zone: the sender's lookup
        # brought them for a contact's own organisation. Otherwise the row is loaded and held for
        # the rest of the transaction (the session's identity map keeps rows only while something
        # refers to them, and the notices look the organisation up three times).
        shown: Organisation | ContactOrganisation | None = self.sender_organisation
        if shown is None or shown.id != organisation_id:
            shown = self.session.get(Organisation, organisation_id) if organisation_id else None
        self.organisation = shown
        team = settings.assignment.intake_team
        assignee, technicians = assign_next(session=self.session, team=team)
        participants = self.customer_participants(organisation_id)
        case, created = insert_case(
            session=self.session,
            now=self.now,
            subject=classify.clean_subject(m.subject) or "(no subject)",
            organisation_id=organisation_id,
            requester=m.from_address or None,
            kind=kind,
            assignee=assignee,
            team=team,
            related_to_id=related.id if related else None,
            sla_start_at=start_on_arrival(kind, self.now, self.p.calendar),
            participants=participants,
        )
        # The case's participants as `participants_of` would list them (requester, then copies by
        # address), known without a query when at most one address was copied (beyond that the
        # database's collation orders them); the requester's name if the sender is a contact.
        requester = (m.from_address or "").lower()
        copied = [a for a in dict.fromkeys(p.lower() for p in participants if p) if a != requester]
        people = [requester, *copied] if requester and len(copied) <= 1 else None
        name = None
        if self.sender is not None and m.from_address and self.sender.address == m.from_address:
            name = self.sender_name or ""
        message_id = self.store_message(case)
        # "case opened" and "message received" in one statement, in that order.
        received = event_values(
            case=case, kind=EventKind.INBOUND_MESSAGE, at=self.now, author=m.from_address,
            summary=f"message received: {m.subject[:200]}", message_id=message_id,
        )
        add_events(session=self.session, events=[created, received])
        if master is not None:
            cases.link_master(self.session, self.desk, case, self._case(master), now=self.now, author=m.from_address)
        if related is not None:
            original = self._case(related)
            add_event(
                session=self.session, case=original, kind=EventKind.LINKED, at=self.now, author=m.from_address,
                summary=f"related case {format_case_number(case.number)} opened by a reply",
                data={"related_case": format_case_number(case.number)},
            )
        # The case's deadlines first: the team's notice shows when the first response is due.
        cases.replan(self.desk, self.session, case, self.now)
        self.record_withheld(case, "acknowledgement", withheld)
        due = {"response_due_at": case.response_due_at.isoformat()} if case.response_due_at is not None else {}
        self.queue(notices, case, self.known(
            case, context={"response_due_at": due}, participants=people, recipient_name=name, organisation=shown,
            technicians=technicians if case.team == team else None,
        ))
        return case

    def append_update(self, decision: AppendUpdate) -> Case:
        m = self.message
        case = self._case(decision.case)
        message_id = self.store_message(case)
        case.last_customer_activity_at = self.now
        case.needs_attention = True
        if case.awaiting_customer_since is not None:
            # Waiting on the customer paused the update clock (rules.sla rule 3); their reply restarts it.
            case.update_clock_resumed_at = self.now
        case.awaiting_customer_since = None  # any inbound reply stops the "closed without response" clock
        case.updated_at = self.now
        add_participants(session=self.session, case_id=case.id, addresses=self.customer_participants(case.organisation_id))  # type: ignore[arg-type]
        add_event(
            session=self.session, case=case, kind=EventKind.INBOUND_MESSAGE, at=self.now, author=m.from_address,
            summary=f"customer update: {(m.new_text or m.text).strip()[:200]}", message_id=message_id,
        )
        self.queue(decision.notices, case, self.known(case))
        if decision.escalate:
            cases.escalate(self.session, self.desk, case, now=self.now, author=m.from_address)
        self.session.add(case)
        cases.replan(self.desk, self.session, case, self.now)
        return case

    def reopen(self, decision: ReopenCase) -> Case:
        m = self.message
        case = self._case(decision.case)
        message_id = self.store_message(case)
        cases.set_status(
            self.session, self.desk, case, CaseStatus.CUSTOMER_REOPENED, now=self.now, author=m.from_address,
            actor=Actor.CUSTOMER, notify_customer=False,
        )
        case.last_customer_activity_at = self.now
        case.needs_attention = True
        add_event(
            session=self.session, case=case, kind=EventKind.REOPENED, at=self.now, author=m.from_address,
            summary="reopened by the customer's reply", message_id=message_id,
        )
        self.record_withheld(case, "reopen notice", decision.withheld)
        self.queue(decision.notices, case, self.known(case))
        cases.replan(self.desk, self.session, case, self.now)
        return case

    def record_bounce(self) -> Case | None:
        bounce = self.message.bounce
        ids = bounce.original_message_ids if bounce else ()
        recipients = bounce.failed_recipients if bounce else ()
        reason = (bounce.diagnostic or bounce.status) if bounce else self.message.auto_reason
        case_id = None
        for original in ids:
            if record_bounce(session=self.session, message_id=original, recipients=recipients, reason=reason, now=self.now):
                case_id = notice_case_id(session=self.session, message_id=original)
                break
        case = case_by_id(session=self.session, case_id=case_id) if case_id else None
        if case is not None:
            message_id = self.store_message(case)
            add_event(
                session=self.session, case=case, kind=EventKind.AUTO_REPLY, at=self.now, author=self.message.from_address,
                summary=f"delivery to {', '.join(recipients) or 'a recipient'} failed: {reason}"[:500], message_id=message_id,
            )
        return case

    def technician_reply(self, decision: TechnicianReply) -> Case:
        m = self.message
        case = self._case(decision.case)
        message_id = self.store_message(case)
        body = _without_command_line(m.new_text or m.text)
        if decision.reopen:
            cases.set_status(
                self.session, self.desk, case, CaseStatus.IN_PROGRESS, now=self.now, author=m.from_address,
                actor=Actor.AGENT, notify_customer=False,
            )
            add_event(
                session=self.session, case=case, kind=EventKind.REOPENED, at=self.now, author=m.from_address,
                summary="reopened by the technician's #reopen reply", message_id=message_id,
            )
        if decision.internal_note:
            cases.add_note(self.session, case, body or "(empty note)", now=self.now, author=m.from_address, message_id=message_id)
        elif case.kind == CaseKind.MASTER:
            # A technician's emailed update on a master case goes to every follower of it.
            masters.master_update(self.session, self.desk, case, body, now=self.now, author=m.from_address)
        else:
            # The technician's files travel with the reply (already stored with their message).
            cases.public_reply(
                self.session, self.desk, case, body, now=self.now, author=m.from_address, author_name=m.from_name,
                awaiting_customer=False, attachments=[
                    {"filename": a.filename, "content_type": a.content_type, "sha256": a.sha256}
                    for a in m.attachments if not a.inline
                ],
            )
        return case

    def subscription(self, decision: SubscriptionCommand) -> Case | None:
        return subscriptions.apply_email_command(
            self.session, self.desk, decision.command, address=self.message.from_address, now=self.now,
            message=self.message,
        )

    def unsubscribe(self, decision: Unsubscribe) -> None:
        if decision.maintenance:
            subscriptions.opt_out_of_maintenance(self.session, address=decision.address, now=self.now)
        elif decision.case is not None:
            case = case_by_id(session=self.session, case_id=decision.case.id)
            assert case is not None
            subscriptions.unsubscribe(
                self.session, self.desk, address=decision.address, case=case, now=self.now, notify=decision.confirm,
                answering=self.message,
            )

    def hold(self, decision: HoldMessage) -> int:
        m = self.message
        assert self.record.id is not None
        held_id = hold_message(
            session=self.session, raw_id=self.record.id, from_address=m.from_address, subject=m.subject[:2000],
            reason=decision.reason, received_at=self.now,
        )
        # A CLAIMED person is told at most once per `autoreply.non_mpoc_notice_hours` per address
        # on file, whatever a spoofer sends.
        since = self.now - timedelta(hours=self.p.settings.autoreply.non_mpoc_notice_hours)
        self.queue(decision.notices, None, self.known(held_id=held_id, claimed_notice_since=since))
        return held_id



def _without_command_line(text: str) -> str:
    lines = text.strip().splitlines()
    if lines and lines[0].strip().lower().startswith(("#note", "#escalate", "#reopen")):
        lines = lines[1:]
    return "\n".join(lines).strip()
