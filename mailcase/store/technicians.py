"""The active technicians of a team: the one definition of who they are, for assignment, staff notices and a
case's owners; reads in the caller's session (`session=`), never commits.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Session, col

from mailcase.store.common import prepared
from mailcase.store.models import Technician


def active_in_team(team: str | None) -> sa.ColumnElement[bool]:
    """The condition on `Technician` rows: active members of `team` (None: the empty team)."""
    return sa.and_(col(Technician.team) == (team or ""), col(Technician.active).is_(True))


def team_members(*, session: Session, team: str | None) -> list[tuple[int, str]]:
    """(id, address) of the team's active technicians, by id (the round-robin order)."""
    rows = _team_members.run(session, {"team": team or ""})
    return [(int(row[0]), str(row[1])) for row in rows]


def team_addresses(*, session: Session, team: str | None) -> list[str]:
    """The addresses of the team's active technicians, by id."""
    return [address for _id, address in team_members(session=session, team=team)]


@prepared
def _team_members(dialect: str) -> sa.Select[int | None, str]:
    # Built once: ingest asks for every new case.
    return (
        sa.select(col(Technician.id), col(Technician.email))
        .where(col(Technician.team) == sa.bindparam("team"), col(Technician.active).is_(True))
        .order_by(col(Technician.id))
    )
