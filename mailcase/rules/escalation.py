"""The escalation path of SPEC.md §1 (support desk → team manager → VP → executive): who owns a case at each level.

Pure values in, an address out; no configuration loading, database or I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

TOP_LEVEL = 4
LEVEL_NAMES = {1: "support desk", 2: "support manager", 3: "VP of customer support", 4: "executive"}


@dataclass(frozen=True, slots=True)
class EscalationPath:
    """The people of `[escalation]`: the desk, each team's manager, the VP, the executive, on-call."""

    support_desk: str = "desk@support.example.com"
    vp: str = "vp-support@support.example.com"
    executive: str = "executive@support.example.com"
    on_call: str = "oncall@support.example.com"
    managers: Mapping[str, str] = field(default_factory=dict)  # team → its manager's address

    def owner(self, level: int, team: str | None) -> str:
        """Who owns a case of `team` at `level`. Rules, in order:
        1. level 1 (or below): the support desk;
        2. level 2: the team's manager, else the support desk;
        3. level 3: the VP of customer support;
        4. level 4 (or above): the executive."""
        if level <= 1:
            return self.support_desk
        if level == 2:
            return self.managers.get(team or "") or self.support_desk
        if level == 3:
            return self.vp
        return self.executive
