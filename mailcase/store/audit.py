"""The audit ledger of agent and operator actions: recording one and listing them across cases;
`session=` in, never commits, and never stores the data an erasure removed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from mailcase.domain import format_case_number
from mailcase.store.models import AuditEntry, Case


@dataclass(frozen=True, slots=True)
class AuditLine:
    """One action as `mailcase audit` shows it."""

    at: datetime
    actor: str
    action: str
    case: str | None
    target: str
    summary: str


def record_action(
    *, session: Session, at: datetime, actor: str, action: str, case_id: int | None = None,
    target: str = "", summary: str = "",
) -> None:
    """Add one action to the ledger, in the caller's transaction (so it exists if and only if the action does)."""
    session.add(AuditEntry(at=at, actor=actor, action=action, case_id=case_id, target=target[:200], summary=summary))


def audit_lines(
    *, session: Session, since: datetime | None = None, actor: str | None = None, limit: int = 0
) -> list[AuditLine]:
    """Actions oldest first, optionally from an instant on and by one actor (case-insensitive)."""
    statement = (
        select(AuditEntry, Case.number)
        .join(Case, col(Case.id) == col(AuditEntry.case_id), isouter=True)
        .order_by(col(AuditEntry.at), col(AuditEntry.id))
    )
    if since is not None:
        statement = statement.where(col(AuditEntry.at) >= since)
    if actor:
        statement = statement.where(col(AuditEntry.actor) == actor.strip().lower())
    if limit:
        # The newest `limit`, still printed oldest first.
        statement = statement.order_by(None).order_by(col(AuditEntry.at).desc(), col(AuditEntry.id).desc()).limit(limit)
    rows = [
        AuditLine(
            at=entry.at, actor=entry.actor, action=entry.action,
            case=format_case_number(number) if number is not None else None,
            target=entry.target, summary=entry.summary,
        )
        for entry, number in session.exec(statement)
    ]
    return sorted(rows, key=lambda line: line.at) if limit else rows
