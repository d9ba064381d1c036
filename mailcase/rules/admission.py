"""Who a customer's message admits to its case as a participant (copied on every notice): the people they
copied, per `[lifecycle] participant_policy`.

Pure values in, addresses out; the shell looks up which candidates are technicians or members of
the case's organisation. No I/O, no database, no configuration loading.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from enum import StrEnum


class ParticipantPolicy(StrEnum):
    ORGANISATION = "organisation"  # only people of the case's organisation
    ANY = "any"  # anyone the customer copied


def copied_candidates(copied: Iterable[str], *, sender: str, our_domains: Collection[str]) -> list[str]:
    """The addresses a message copied (To, then Cc), each once, minus the sender and any address
    in our own domains (the support address, reply tokens)."""
    ours = {d.lower() for d in our_domains}
    return [a for a in dict.fromkeys(copied) if a and a.rsplit("@", 1)[-1] not in ours and a != sender]


def membership_matters(policy: ParticipantPolicy, organisation_id: int | None) -> bool:
    """Whether `admit_participants` needs to know which candidates belong to the organisation."""
    return policy is ParticipantPolicy.ORGANISATION and organisation_id is not None


def admit_participants(
    candidates: Iterable[str],
    *,
    policy: ParticipantPolicy,
    organisation_id: int | None,
    technicians: Collection[str],
    members: Collection[str] = (),
) -> list[str]:
    """The candidates (from `copied_candidates`) who become participants. Rules, in order:
    1. a technician never does: they hear about the case as staff, with their own reply token;
    2. policy `any`: everyone else;
    3. policy `organisation`: nobody when the case has no organisation;
    4. otherwise only `members`, the candidates who are contacts of the case's organisation or
       whose address is in one of its domains."""
    people = [a for a in candidates if a not in technicians]
    if policy is ParticipantPolicy.ANY:
        return people
    if organisation_id is None:
        return []
    return [a for a in people if a in members]
