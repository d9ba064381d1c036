"""Who owns a case at each level of the escalation path (rules.escalation), with plain values."""

from __future__ import annotations

from mailcase.rules.escalation import LEVEL_NAMES, TOP_LEVEL, EscalationPath

PATH = EscalationPath(
    support_desk="desk@support.example.com",
    vp="vp@support.example.com",
    executive="ceo@support.example.com",
    on_call="oncall@support.example.com",
    managers={"voice": "voice-lead@support.example.com"},
)


def test_each_level_names_its_owner_and_a_team_without_manager_stays_with_the_desk() -> None:
    assert PATH.owner(1, "voice") == "desk@support.example.com"
    assert PATH.owner(2, "voice") == "voice-lead@support.example.com"
    assert PATH.owner(2, "data") == "desk@support.example.com"
    assert PATH.owner(2, None) == "desk@support.example.com"
    assert PATH.owner(3, "voice") == "vp@support.example.com"
    assert PATH.owner(TOP_LEVEL, "voice") == "ceo@support.example.com"
    assert set(LEVEL_NAMES) == {1, 2, 3, TOP_LEVEL}
