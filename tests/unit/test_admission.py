"""Who a customer's message admits to its case as a participant (rules.admission), with plain values."""

from __future__ import annotations

from mailcase.rules.admission import (
    ParticipantPolicy,
    admit_participants,
    copied_candidates,
    membership_matters,
)

PAT = "pat@acme.example"


def test_candidates_are_the_copied_people_once_without_the_sender_or_our_own_addresses() -> None:
    copied = ["sam@acme.example", "support+c7-abc@support.example.com", PAT, "sam@acme.example", "joe@other.example"]
    assert copied_candidates(copied, sender=PAT, our_domains=["Support.example.com"]) == [
        "sam@acme.example", "joe@other.example",
    ]


def test_technicians_never_join_whatever_the_policy() -> None:
    for policy in ParticipantPolicy:
        admitted = admit_participants(
            ["chris@support.example.net", "sam@acme.example"], policy=policy, organisation_id=1,
            technicians={"chris@support.example.net"}, members={"sam@acme.example", "chris@support.example.net"},
        )
        assert admitted == ["sam@acme.example"]


def test_policy_any_admits_strangers_and_organisation_only_members() -> None:
    candidates = ["sam@acme.example", "joe@other.example"]
    assert admit_participants(
        candidates, policy=ParticipantPolicy.ANY, organisation_id=None, technicians=()
    ) == candidates
    assert admit_participants(
        candidates, policy=ParticipantPolicy.ORGANISATION, organisation_id=1, technicians=(), members={"sam@acme.example"}
    ) == ["sam@acme.example"]


def test_policy_organisation_admits_nobody_to_a_case_without_organisation() -> None:
    assert not membership_matters(ParticipantPolicy.ORGANISATION, None)
    assert membership_matters(ParticipantPolicy.ORGANISATION, 1)
    assert not membership_matters(ParticipantPolicy.ANY, 1)
    assert admit_participants(
        ["sam@acme.example"], policy=ParticipantPolicy.ORGANISATION, organisation_id=None, technicians=(),
        members={"sam@acme.example"},
    ) == []
