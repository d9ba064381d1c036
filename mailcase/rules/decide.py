"""What an inbound message does to the desk: one pure function from looked-up facts to a Decision.

No I/O and no clock reads; the pipeline gathers the facts, calls `decide`, and applies the result
in the same transaction as the raw bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from mailcase.domain import (
    Audience,
    AutoKind,
    CaseKind,
    CaseStatus,
    CaseView,
    InboundMessage,
    NoticeIntent,
    SenderPolicy,
    SenderView,
    format_case_number,
)
from mailcase.rules import classify
from mailcase.rules.authentication import (
    Authentication,
    authenticated,
    spoofed_organisation,
    technician_proof,
    unauthenticated_reason,
)
from mailcase.rules.matching import Match, Matched, MatchRule, Unmatched, sender_allowed
from mailcase.rules.tokens import MAINTENANCE_SCOPE, UnsubscribeRequest


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything `decide` needs, looked up by the shell before deciding."""

    message: InboundMessage
    sender: SenderView
    match: Match
    now: datetime  # when the message was received
    case: CaseView | None = None
    primary: CaseView | None = None  # the end of the duplicate chain when `case` is a duplicate
    linked_case: CaseView | None = None  # the sender's own case linked to `case` when `case` is a master
    addressed_to_macd: bool = False
    addressed_to_postmaster: bool = False
    desk_timezone: str = "America/Denver"
    reopen_window_days: int = 7
    released: bool = False  # an agent released this held message: treat the sender as allowed
    auto_replies_last_hour: int = 0
    auto_replies_last_day: int = 0
    max_auto_replies_per_hour: int = 30
    max_auto_replies_per_day: int = 200
    non_mpoc_notice_recently: bool = False
    authentication: Authentication = Authentication()
    # The non-MPOC notice goes only to a known organisation's people (their domain is in the
    # directory), and only so many an hour in all: a forged stranger's address gets nothing.
    sender_organisation_known: bool = False
    non_mpoc_notices_last_hour: int = 0
    max_non_mpoc_notices_per_hour: int = 20
    # Automatic replies this sender got in the last hour for this message's `subject_key`.
    same_subject_answers_last_hour: int = 0
    max_same_subject_per_hour: int = 2
    max_reply_attachment_bytes: int = 10_000_000  # [attachments] reply_max_bytes
    from_our_address: bool = False  # From is the support, MACD or outbound address (or a +token form)
    # Mail to one of our one-click unsubscribe addresses (rules.tokens.unsubscribe_request), whether
    # its MAC is the one issued to this sender, and the case its scope `c<number>` names.
    unsubscribe: UnsubscribeRequest | None = None
    unsubscribe_genuine: bool = False
    unsubscribe_case: CaseView | None = None


Notices = tuple[NoticeIntent, ...]


def _acknowledges(notices: Notices) -> bool:
    return any(n.audience is Audience.REQUESTER for n in notices)


@dataclass(frozen=True, slots=True)
class OpenCase:
    reason: str
    kind: CaseKind
    notices: Notices = ()  # the acknowledgement (unless withheld) and the team's new-case notice
    withheld: str = ""  # why the acknowledgement is not sent (empty when it is): a case event records it
    master: CaseView | None = None  # link the new case to this master case (a subscriber's reply)

    @property
    def acknowledge(self) -> bool:
        return _acknowledges(self.notices)


@dataclass(frozen=True, slots=True)
class OpenRelatedCase:
    reason: str
    original: CaseView
    notices: Notices = ()
    withheld: str = ""

    @property
    def acknowledge(self) -> bool:
        return _acknowledges(self.notices)


@dataclass(frozen=True, slots=True)
class AppendUpdate:
    reason: str
    case: CaseView
    escalate: bool = False
    notices: Notices = ()  # the assignee's (or team's) notice that the customer wrote


@dataclass(frozen=True, slots=True)
class ReopenCase:
    reason: str
    case: CaseView
    notices: Notices = ()  # the reopen notice (unless withheld) and the assignee's notice
    withheld: str = ""

    @property
    def acknowledge(self) -> bool:
        return _acknowledges(self.notices)


@dataclass(frozen=True, slots=True)
class RecordAutoReply:
    """An out-of-office or other automatic answer on a case: kept on the case, acknowledged to nobody."""

    reason: str
    case: CaseView


@dataclass(frozen=True, slots=True)
class RecordBounce:
    reason: str


@dataclass(frozen=True, slots=True)
class TechnicianReply:
    """A technician answered a case notification by email: relayed to the customer, or a `#note`;
    `reopen`: the case is closed and the first line said `#reopen`, so it is reopened first."""

    reason: str
    case: CaseView
    internal_note: bool
    reopen: bool = False


@dataclass(frozen=True, slots=True)
class SubscriptionCommand:
    reason: str
    command: classify.Subscribe | classify.Unsubscribe


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Mail to a one-click List-Unsubscribe address (RFC 2369 §3.2, RFC 8058 §3.1): a request, never
    a case. `address` stops getting maintenance notices, or the master case's updates (its
    subscriptions and its platform's go, and an opt-out stops linked-case mail); "" changes nothing."""

    reason: str
    address: str = ""
    maintenance: bool = False
    case: CaseView | None = None
    confirm: bool = False  # confirmed by mail (never to an automatic message)


@dataclass(frozen=True, slots=True)
class HoldMessage:
    """Kept for an operator. Its notices: the non-MPOC notice to the sender; the person the From:
    claims told (at the address on file, never a reply address of the message) that a message in
    their name was held (a spoofed MPOC, an unproven technician); a technician told why their mail
    did not reach the customer."""

    reason: str
    notices: Notices = ()
    # Held because the sender is not authenticated (what `monitor` records instead of holding).
    unauthenticated: bool = False

    @property
    def notify_sender(self) -> bool:
        return any(n.template == NON_MPOC for n in self.notices)

    @property
    def notify_claimed(self) -> bool:
        return any(n.audience is Audience.CLAIMED for n in self.notices)

    @property
    def tell_technician(self) -> bool:
        return any(n.template == REPLY_NOT_SENT for n in self.notices)


@dataclass(frozen=True, slots=True)
class IgnoreMessage:
    reason: str


Decision = (
    OpenCase
    | OpenRelatedCase
    | AppendUpdate
    | ReopenCase
    | RecordAutoReply
    | RecordBounce
    | TechnicianReply
    | SubscriptionCommand
    | Unsubscribe
    | HoldMessage
    | IgnoreMessage
)


def decision_name(decision: Decision) -> str:
    """The snake-case name shown by `trace` and in the log (`open_case`, `hold_message`, …)."""
    name = type(decision).__name__
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def reopen_deadline(closed_at: datetime, *, days: int, timezone: str) -> datetime:
    """The end of the reopen window: the same local wall-clock time `days` calendar days after closing,
    in the desk's time zone. A reply strictly before this instant reopens the case.

    Wall-clock arithmetic keeps the boundary at the same local time across a DST change (a case
    closed at 10:00 the day before the clocks move still has until 10:00 local a week later).
    """
    zone = ZoneInfo(timezone)
    local = closed_at.astimezone(zone)
    return (local.replace(tzinfo=None) + timedelta(days=days)).replace(tzinfo=zone).astimezone(UTC)


def subject_key(subject: str) -> str:
    """What makes two subjects "near-identical" for the loop guard: reply prefixes and case tags
    gone, case folded, white space collapsed. Digits count: "Site 12 down" and "Site 14 down" are
    an MPOC's two cases in an outage, not a loop."""
    return " ".join(classify.clean_subject(subject).casefold().split())[:200]


def auto_reply_withheld(facts: Facts) -> str:
    """Why an automatic answer (acknowledgement, reopen notice) to this message is withheld, or "".

    The loop guard targets loops (SPEC.md §3), not busy people. Rules, in order:
    1. never answer a machine (auto-submitted, bulk, list, bounce: RFC 3834), nor our own address;
    2. a sender who got `max_same_subject_per_hour` answers in the last hour for a near-identical
       subject (`subject_key`) is looping: a ticket system answering our acknowledgements;
    3. a high ceiling per address: `max_auto_replies_per_hour` and `max_auto_replies_per_day`.
    Distinct human messages opening distinct cases are each answered below the ceiling.
    """
    if facts.message.is_automatic:
        return f"automatic message ({facts.message.auto_reason}): never answered"
    if facts.from_our_address:
        return f"{facts.message.from_address} is one of our own addresses: never answered (no mail loops)"
    key = subject_key(facts.message.subject)
    repeats = facts.same_subject_answers_last_hour
    if key and repeats >= facts.max_same_subject_per_hour:
        return (
            f"loop guard: {facts.sender.address or 'the sender'} was already answered {repeats} times "
            f"in the last hour for the same subject"
        )
    if facts.auto_replies_last_hour >= facts.max_auto_replies_per_hour:
        return (
            f"rate limit: {facts.auto_replies_last_hour} automatic replies to {facts.sender.address} "
            f"in the last hour (autoreply.max_per_hour = {facts.max_auto_replies_per_hour})"
        )
    if facts.auto_replies_last_day >= facts.max_auto_replies_per_day:
        return (
            f"rate limit: {facts.auto_replies_last_day} automatic replies to {facts.sender.address} "
            f"in the last day (autoreply.max_per_day = {facts.max_auto_replies_per_day})"
        )
    return ""


def may_auto_reply(facts: Facts) -> bool:
    """Whether an automatic answer may go to this message's sender (see `auto_reply_withheld`)."""
    return not auto_reply_withheld(facts)


def _with_withheld(reason: str, withheld: str) -> str:
    return f"{reason}; acknowledgement withheld: {withheld}" if withheld else reason


# The notices decisions cause (templates: `<audience>.<event>`, docs/templates.md). Keys: see
# `NoticeIntent`; each names the notice, the case or held message, and for answers per event the
# instant, so applying one decision twice queues nothing twice.
NON_MPOC = "customer.non_mpoc"
REPLY_NOT_SENT = "staff.reply_not_sent"


def _customer_notice(facts: Facts, template: str, event: str, **context: object) -> tuple[NoticeIntent, ...]:
    """The automatic answer to the requester (copied participants in Cc), threaded on this message."""
    if not facts.message.from_address:
        return ()
    return (NoticeIntent(
        template, Audience.REQUESTER, f"{template}:{{case}}:{event}:{{now}}", facts.now, auto_submitted="auto-replied",
        context={k: v for k, v in context.items() if v is not None}, loop_guarded=True,
    ),)


def _not_told(facts: Facts, notice: str, withheld: str) -> dict[str, object]:
    """What the staff notice says when the customer's notice was withheld (issue 12)."""
    if not withheld or not facts.message.from_address:
        return {}
    return {"customer_not_told": f"the customer was not sent the {notice}: {withheld}"}


def _opening_notices(facts: Facts, kind: CaseKind, withheld: str, related: CaseView | None = None) -> Notices:
    """A new case: the acknowledgement to the requester (unless withheld), then the new-case notice
    to each active technician of the team it was assigned to."""
    related_number = related.number if related is not None else None
    macd = {CaseKind.MACD_STANDARD: "standard", CaseKind.MACD_EXPEDITED: "expedited"}.get(kind)
    ack = () if withheld else _customer_notice(facts, "customer.ack", "ack", related_number=related_number, macd=macd)
    context: dict[str, object] = {} if related_number is None else {"related_number": related_number}
    staff = NoticeIntent(
        "staff.new_case", Audience.TEAM, "staff.new_case:{case}", facts.now,
        context=context | _not_told(facts, "acknowledgement", withheld),
        context_keys=("excerpt", "response_due_at", "attachments"),
    )
    return (*ack, staff)


def _update_notice(facts: Facts, **context: object) -> NoticeIntent:
    """The assignee (or, with nobody assigned, the team) hears that the customer wrote."""
    return NoticeIntent(
        "staff.customer_update", Audience.ASSIGNEE, "staff.customer_update:{case}:{now}", facts.now,
        context=context, context_keys=("from_address", "excerpt", "attachments"),
    )


def _reopening_notices(facts: Facts, withheld: str) -> Notices:
    reopened = () if withheld else _customer_notice(facts, "customer.reopened", "reopened")
    return (*reopened, _update_notice(facts, **_not_told(facts, "reopen notice", withheld)))


def _hold(
    facts: Facts, reason: str, *, notify_sender: bool = False, notify_claimed: bool = False,
    tell_technician: bool = False, unauthenticated: bool = False,
) -> HoldMessage:
    """A held message and who is told about it (never a machine, never an empty address)."""
    message, notices = facts.message, list[NoticeIntent]()
    if notify_sender and message.from_address:
        notices.append(NoticeIntent(
            NON_MPOC, Audience.SENDER, f"{NON_MPOC}:{{address}}:{{held}}", facts.now, auto_submitted="auto-replied",
            loop_guarded=True,
        ))
    if notify_claimed and not message.is_automatic:
        # Once per `autoreply.non_mpoc_notice_hours` per address on file: the desk checks the log.
        notices.append(NoticeIntent(
            "{role}.sender_unverified", Audience.CLAIMED, "{role}.sender_unverified:{address}:{held}", facts.now,
            context={"reason": reason}, loop_guarded=True,
        ))
    if tell_technician and message.from_address:
        notices.append(NoticeIntent(
            REPLY_NOT_SENT, Audience.SENDER, f"{REPLY_NOT_SENT}:{{held}}", facts.now, auto_submitted="auto-replied",
            context={"reason": reason},
        ))
    return HoldMessage(reason, tuple(notices), unauthenticated=unauthenticated)


def decide(facts: Facts) -> Decision:
    """Decide. Rules, in order:

    1. Mail to one of our one-click unsubscribe addresses is a request, never a case (see
       `_unsubscribe`): a MAC not issued to this sender changes nothing; otherwise the sender stops
       getting maintenance notices, or the master case's updates (confirmed unless automatic).
    2. A delivery status notification (bounce) is recorded against the notification it bounced; it
       never opens, updates or reopens anything.
    3. A message whose From: does not give exactly one address (RFC 5322 reading) is held.
    4. In `enforce` (unless an agent released it): a From domain that is an organisation's and
       fails DMARC (or has no aligned pass under `p=reject|quarantine`) is held, and the person
       claimed is told once at the address on file; nothing is opened, updated or subscribed.
    5. A subscribe/unsubscribe command (SPEC.md §1: `subscribe <case>`, `subscribe platform
       <name>`, `unsubscribe …`; rules.classify) is ignored from a machine; from a directory
       contact it is carried out and confirmed; a technician's needs their proof
       (rules.authentication.technician_proof), and in `enforce` any needs an authenticated
       sender; anybody else's is held.
    6. A message that matched a case (see `rules.matching`):
       a. a technician's mail, in every mode, needs proof of its author (their own reply token
          for the case, a DMARC pass for our domain, an authenticated submission); otherwise it
          is held and the technician is told. A proven one is relayed to the customer, or kept
          internal when it starts `#note` (on a duplicate: on its primary); a public reply on a
          closed case is held until reopened; a technician's automatic reply (out-of-office) is
          only recorded on the case;
       b. an automatic message (out-of-office, auto-reply, bulk) from an allowed sender is recorded
          on the case and acknowledged to nobody; from anybody else it is ignored;
       c. a sender who is not allowed on the case is held (unless an agent released the message);
          so is a reply token used with a failing DMARC from another organisation's domain
          (a token proves the mail answers ours, not who wrote it), unless the policy is `off`;
       d. a reply on a duplicate goes to its primary case; a reply that reached a master case from
          a participant of a linked case, or an MPOC of its organisation, goes to that linked case;
          from another MPOC it opens a new case linked to the master; anyone else is held and told;
       e. an open case gets the update (needs attention, assignee told; `#escalate` moves it up,
          in `enforce` only from an authenticated sender);
       f. a Closed case within the reopen window is reopened (`customer_reopened`), after it a new
          P4 case related to it is opened; a Closed No Response case always gets a new related case.
    7. An automatic message that matched nothing is ignored (no backscatter, no loops).
    8. Mail to postmaster is held for an operator.
    9. A technician's mail that names no case is held, and they are told how to reply (the case
       notice's Reply-To, or `[Case #N]` in the subject).
    10. An MPOC (or a released message) opens a new P4 case — a MACD case when the subject starts
       `MACD:` or it was sent to the MACD address (in `enforce`, only from an authenticated sender).
    11. Anybody else is held, and told once per 24 h (never a machine) that only the organisation's
       designated contacts can open cases.

    Each decision carries the notices it causes (`NoticeIntent`: audience, template, key pattern,
    context, due instant): a new case (10, 6d, 6f) acknowledges the requester unless the loop guard
    withholds it (`auto_reply_withheld`; then the team's notice says so) and tells the team's
    technicians; an update (6e) tells the assignee; a reopen (6f) tells the requester (unless
    withheld) and the assignee; a hold tells the sender (11: non-MPOC notice; 9, 6a: why a
    technician's mail was held) or the person claimed (4, 6a); the rest tell nobody here (a
    technician's reply and the subscription routes are desk actions that write their own mail).
    The audience is a role the desk resolves: the new case's number, requester row, copied
    participants and round-robin technician exist only inside the transaction that applies this.
    """
    message, sender = facts.message, facts.sender
    if facts.unsubscribe is not None:
        return _unsubscribe(facts, facts.unsubscribe)
    if message.auto_kind is AutoKind.BOUNCE:
        return RecordBounce(f"delivery status notification: {message.auto_reason}")

    authors = message.authors
    if len(authors) != 1 and not facts.released:
        if not authors:
            return _hold(facts, "From: has no valid RFC 5322 address; nobody can be identified as the sender")
        return _hold(facts, f"From: has {len(authors)} addresses ({', '.join(authors[:5])}); one author is required")
    auth = facts.authentication
    enforce = auth.policy is SenderPolicy.ENFORCE and not facts.released
    if enforce and not sender.is_technician and spoofed_organisation(auth):
        return _hold(facts,
            f"{unauthenticated_reason(auth)}: a message claiming to be from {sender.address} was held",
            notify_claimed=sender.contact_id is not None and not message.is_automatic,
            unauthenticated=True,
        )

    command = classify.detect_command(message.subject, _first_line(message.new_text or message.text))
    if isinstance(command, classify.Subscribe | classify.Unsubscribe):
        if message.is_automatic:
            return IgnoreMessage(f"automatic message ({message.auto_reason}) carrying a subscription command")
        if sender.contact_id is None and not sender.is_technician and not facts.released:
            return _hold(facts, f"subscription command from {sender.address}, who is not in the directory")
        if sender.is_technician and not facts.released and technician_proof(auth, None) is None:
            return _hold(facts,
                f"subscription command from technician {sender.address} without proof of its author", notify_claimed=True,
            )
        if enforce and not authenticated(auth):
            return _hold(facts, f"subscription command needs an authenticated sender: {unauthenticated_reason(auth)}", unauthenticated=True)
        return SubscriptionCommand(f"{type(command).__name__.lower()} command", command)

    if isinstance(facts.match, Matched) and facts.case is not None:
        return _decide_on_case(facts, facts.match, facts.case, command)

    if message.is_automatic:
        return IgnoreMessage(f"automatic message matched no case: {message.auto_reason}")
    if facts.addressed_to_postmaster:
        return _hold(facts, "mail to postmaster is kept for an operator")
    if sender.is_technician and not facts.released:
        return _hold(facts,
            f"technician {sender.address} wrote without a case reference: reply to the case's notice "
            "(its Reply-To address) or put [Case #N] in the subject",
            tell_technician=True,
        )
    if sender.is_mpoc or facts.released:
        kind = classify.macd_request(message.subject, facts.addressed_to_macd) or CaseKind.SUPPORT
        if enforce and kind is not CaseKind.SUPPORT and not authenticated(auth):
            return _hold(facts, f"MACD request needs an authenticated sender: {unauthenticated_reason(auth)}", unauthenticated=True)
        who = "released by an agent" if facts.released and not sender.is_mpoc else f"{sender.address} is an MPOC"
        withheld = auto_reply_withheld(facts)
        return OpenCase(
            _with_withheld(_noted(f"new case: {who}", facts.match), withheld), kind,
            _opening_notices(facts, kind, withheld), withheld=withheld,
        )
    if sender.contact_id is not None:
        why = f"{sender.address} is a contact of the organisation but not a designated MPOC"
    else:
        why = f"{sender.address} is not a designated contact of any organisation"
    notify = (
        facts.sender_organisation_known
        and facts.non_mpoc_notices_last_hour < facts.max_non_mpoc_notices_per_hour
        and may_auto_reply(facts)
        and not facts.non_mpoc_notice_recently
    )
    return _hold(facts, _noted(why, facts.match), notify_sender=notify)


def _decide_on_case(facts: Facts, match: Matched, case: CaseView, command: classify.Command | None) -> Decision:
    message, sender = facts.message, facts.sender
    how = f"matched case {case.number:08d} by {match.rule.value} ({match.detail})"
    auth = facts.authentication
    enforce = auth.policy is SenderPolicy.ENFORCE and not facts.released
    if sender.is_technician:
        target = facts.primary or case
        if message.is_automatic:
            # A technician's out-of-office answering a notification is never relayed to the customer.
            return RecordAutoReply(f"technician's automatic reply ({message.auto_reason}); {how}", target)
        proof = technician_proof(auth, case.number) or technician_proof(auth, target.number)
        if proof is None and not facts.released:
            # A forged From: of our own technician would reach the customer, every subscriber of a
            # master case and the status page: in every mode, only proof counts.
            return _hold(facts,
                f"technician {sender.address} not proven on case {target.number:08d} (no reply token of theirs "
                f"for this case, no dmarc=pass for our domain, no authenticated submission; {auth.verdict.summary()}); {how}",
                notify_claimed=True,
                unauthenticated=True,
            )
        how = f"{how}; {proof or 'released by an agent'}"
        note = isinstance(command, classify.Note)
        reopen = isinstance(command, classify.Reopen)
        attached = sum(len(part.data) for part in message.attachments)
        if not note and attached > facts.max_reply_attachment_bytes:
            return _hold(facts,
                f"technician reply on case {target.number:08d} carries {attached} bytes of attachments, over "
                f"the {facts.max_reply_attachment_bytes} allowed (attachments.reply_max_bytes): send smaller "
                f"files or a link; {how}",
                tell_technician=True,
            )
        if not note and target.status.is_closed:
            if reopen and target.status is not CaseStatus.DUPLICATE:
                return TechnicianReply(f"technician reply with #reopen; {how}", target, internal_note=False, reopen=True)
            # A public reply needs an open case; keep the mail for the technician to release once reopened.
            return _hold(facts,
                f"technician reply on case {target.number:08d}, which is {target.status.value}: "
                f"reopen it (#reopen on the first line of a new reply, or `mailcase cases update "
                f"{target.number:08d} --status in_progress`), then release this message; {how}",
                tell_technician=True,
            )
        return TechnicianReply(f"technician reply; {how}", target, internal_note=note)
    allowed = facts.released or sender_allowed(case, sender) or (
        facts.linked_case is not None and sender_allowed(facts.linked_case, sender)
    )
    if message.is_automatic:
        if allowed:
            return RecordAutoReply(f"automatic reply ({message.auto_reason}); {how}", facts.primary or case)
        return IgnoreMessage(f"automatic message ({message.auto_reason}) from a non-participant; {how}")
    if not allowed and case.kind is CaseKind.MASTER:
        # A reply to a master-case update (issue 12): never held silently.
        if sender.is_mpoc:
            withheld = auto_reply_withheld(facts)
            return OpenCase(
                _with_withheld(f"new case linked to master case {case.number:08d}: {sender.address} is an MPOC; {how}", withheld),
                CaseKind.SUPPORT, _opening_notices(facts, CaseKind.SUPPORT, withheld), withheld=withheld, master=case,
            )
        return _hold(facts,
            f"{sender.address} replied to master case {case.number:08d} but is not a designated contact; {how}",
            notify_sender=may_auto_reply(facts) and not facts.non_mpoc_notice_recently,
        )
    if not allowed:
        return _hold(facts, f"{sender.address} is not a participant of case {case.number:08d}; {how}")
    if (
        match.rule is MatchRule.REPLY_TOKEN
        and auth.policy is not SenderPolicy.OFF
        and not facts.released
        and auth.organisation_domain
        and auth.verdict.dmarc == "fail"
        and sender.organisation_id != case.organisation_id
    ):
        return _hold(facts,
            f"reply token for case {case.number:08d} used by {sender.address} of another organisation with "
            f"{unauthenticated_reason(auth)}; {how}",
            unauthenticated=True,
        )

    if case.status is CaseStatus.DUPLICATE and facts.primary is not None:
        case, how = facts.primary, f"{how}; duplicate of {facts.primary.number:08d}"
    if case.kind is CaseKind.MASTER and facts.linked_case is not None:
        case, how = facts.linked_case, f"{how}; routed to the sender's linked case {facts.linked_case.number:08d}"

    escalate = isinstance(command, classify.Escalate)
    if escalate and enforce and not authenticated(auth):
        return _hold(facts, f"#escalate needs an authenticated sender: {unauthenticated_reason(auth)}; {how}", unauthenticated=True)
    withheld = auto_reply_withheld(facts) if case.status.is_closed else ""
    if case.status is CaseStatus.CLOSED:
        assert case.closed_at is not None
        deadline = reopen_deadline(case.closed_at, days=facts.reopen_window_days, timezone=facts.desk_timezone)
        if facts.now < deadline:
            return ReopenCase(
                _with_withheld(f"reply within {facts.reopen_window_days} days of closing; {how}", withheld), case,
                _reopening_notices(facts, withheld), withheld=withheld,
            )
        return OpenRelatedCase(
            _with_withheld(f"reply more than {facts.reopen_window_days} days after closing; {how}", withheld), case,
            _opening_notices(facts, CaseKind.SUPPORT, withheld, related=case), withheld=withheld,
        )
    if case.status is CaseStatus.CLOSED_NO_RESPONSE:
        return OpenRelatedCase(
            _with_withheld(f"reply to a Closed No Response case; {how}", withheld), case,
            _opening_notices(facts, CaseKind.SUPPORT, withheld, related=case), withheld=withheld,
        )
    return AppendUpdate(f"update; {how}", case, escalate=escalate, notices=(_update_notice(facts),))


def _unsubscribe(facts: Facts, request: UnsubscribeRequest) -> Unsubscribe:
    """Rules, in order:
    1. a MAC that is not the one issued to this sender for this scope (a forwarded notice, a
       forgery, another address) changes nothing;
    2. scope `m`: the sender opts out of maintenance notices;
    3. scope `c<number>` of a case we do not have changes nothing;
    4. otherwise the sender stops following that master case, confirmed by mail unless the
       message is automatic."""
    sender = facts.message.from_address.strip().lower()
    if not facts.unsubscribe_genuine:
        who = sender or "an unknown sender"
        return Unsubscribe(f"unsubscribe request from {who} with a token not issued to it; nothing changed")
    if request.scope == MAINTENANCE_SCOPE:
        return Unsubscribe(
            f"{sender} unsubscribed from maintenance notices (List-Unsubscribe)", address=sender, maintenance=True
        )
    case = facts.unsubscribe_case
    if case is None:
        return Unsubscribe(f"unsubscribe request for unknown master case {request.scope[1:]}; nothing changed")
    return Unsubscribe(
        f"{sender} unsubscribed from master case {format_case_number(case.number)} (List-Unsubscribe)",
        address=sender, case=case, confirm=not facts.message.is_automatic,
    )


def _noted(reason: str, match: Match) -> str:
    """The reason plus what matching ignored (an outsider's `[Case #N]` tag), so `trace` and
    `held list` say why the message did not land on that case."""
    if isinstance(match, Unmatched) and match.notes:
        return f"{reason}; {'; '.join(match.notes)}"
    return reason


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""
