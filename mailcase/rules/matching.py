"""Which case an inbound message belongs to, in the order SPEC.md §3 fixes; pure, over facts the shell looked up.

Called `matching`, not `threading`. It never trusts a subject alone: a case number in a subject
only counts when the sender is allowed on that case.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from mailcase.domain import CaseView, InboundMessage, SenderView

MAX_REFERENCES = 50
"""How many thread ids we look at (newest first); long threads carry hundreds and the newest decide."""


class MatchRule(StrEnum):
    MESSAGE_ID = "message-id"
    REPLY_TOKEN = "reply-token"
    SUBJECT_TAG = "subject-tag"
    CUSTOMER_THREAD = "customer-thread"
    AGENT = "agent"  # an agent released a held message onto this case (`held release --to-case`)


@dataclass(frozen=True, slots=True)
class Matched:
    case_id: int
    rule: MatchRule
    detail: str


@dataclass(frozen=True, slots=True)
class Unmatched:
    """No case: the message opens a new one (or is held, per the MPOC policy). `notes` say what was ignored."""

    notes: tuple[str, ...] = ()


Match = Matched | Unmatched


def thread_ids(message: InboundMessage) -> tuple[str, ...]:
    """Every id the message says it answers, newest first, without repeats, capped."""
    ids: list[str] = []
    if message.in_reply_to:
        ids.extend(message.in_reply_to.split())
    ids.extend(reversed(message.references))
    unique = tuple(dict.fromkeys(i for i in ids if i and i != message.message_id))
    return unique[:MAX_REFERENCES]


def sender_allowed(case: CaseView, sender: SenderView) -> bool:
    """May this sender write on this case? The requester, a participant, an MPOC of the case's
    organisation, or a technician (SPEC.md §1, "Who may open cases")."""
    if sender.is_technician:
        return True
    if sender.address == (case.requester or "") or sender.address in case.participants:
        return True
    return sender.is_mpoc and sender.organisation_id is not None and sender.organisation_id == case.organisation_id


def match_case(
    message: InboundMessage,
    sender: SenderView,
    *,
    our_ids: Mapping[str, int],
    customer_ids: Mapping[str, int],
    token_case_id: int | None,
    tagged_cases: Sequence[CaseView],
    cases: Mapping[int, CaseView],
    released: bool = False,
) -> Match:
    """Find the case. Rules, in order:

    1. One of *our own* Message-IDs (acknowledgements, notices, replies we sent) in In-Reply-To or
       References, newest first: that case. `our_ids` maps those ids to case ids.
    2. A valid reply token in a recipient address (`token_case_id`, already verified with
       hmac.compare_digest by `rules.tokens`): that case. Forged or stale tokens never get here.
    3. A `[Case #N]` tag in the subject, only when the sender is allowed on case N (requester,
       participant, an MPOC of its organisation, or a technician); otherwise the tag is ignored
       and noted — an outsider quoting a real case number never lands on it.
    4. A customer's earlier message on a case in In-Reply-To/References (`customer_ids`: a
       colleague replying to the customer's original mail that was copied to support), only when
       the sender is allowed on that case.
    5. Otherwise: no case (a new case, or held, as `decide` says).
    An agent's release (`released`) vouches for the sender: rules 3 and 4 then accept them.
    """

    def allowed(case: CaseView) -> bool:
        return released or sender_allowed(case, sender)

    for message_id in thread_ids(message):
        case_id = our_ids.get(message_id)
        if case_id is not None:
            return Matched(case_id, MatchRule.MESSAGE_ID, f"answers our message {message_id}")
    if token_case_id is not None:
        return Matched(token_case_id, MatchRule.REPLY_TOKEN, "sent to the case's reply-token address")
    notes: list[str] = []
    for case in tagged_cases:
        if allowed(case):
            return Matched(case.id, MatchRule.SUBJECT_TAG, f"subject tag [Case #{case.number:08d}]")
        notes.append(f"subject tag [Case #{case.number:08d}] ignored: {sender.address} is not allowed on that case")
    for message_id in thread_ids(message):
        case_id = customer_ids.get(message_id)
        if case_id is not None and case_id in cases and allowed(cases[case_id]):
            return Matched(case_id, MatchRule.CUSTOMER_THREAD, f"answers the customer's message {message_id}")
    return Unmatched(tuple(notes))
