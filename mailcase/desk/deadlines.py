"""Keeps each case's deadline columns and indexed `next_due_at` in step with `rules.sla`, whenever the case changes.

It reads and writes case rows in the caller's transaction and never commits or sends mail.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime

from sqlmodel import Session

from mailcase.config import Settings
from mailcase.rules.businesstime import BusinessCalendar
from mailcase.rules.sla import (
    Deadline,
    DeadlineName,
    SlaPolicy,
    Target,
    case_deadlines,
    next_check_at,
    notices_due,
)
from mailcase.store.cases import case_view, save_deadlines
from mailcase.store.directory import sla_overrides_of
from mailcase.store.models import Case

Overrides = Mapping[str, Mapping[str, int]]
_OVERRIDES = "mailcase.sla_overrides"  # session.info key: overrides read in this transaction


def sla_policy(settings: Settings) -> SlaPolicy:
    return SlaPolicy(
        targets={key: Target(**dataclasses.asdict(value)) for key, value in settings.sla.items()},
        nudge_business_days=settings.lifecycle.nudge_business_days,
        close_no_response_business_days=settings.lifecycle.close_no_response_business_days,
    )


class DeadlinePlanner:
    """Computes a case's deadlines and stores them (shown by `cases sla`, swept by `next_due_at`)."""

    def __init__(self, policy: SlaPolicy, calendar: BusinessCalendar) -> None:
        self.policy = policy
        self.calendar = calendar

    def overrides_for(self, session: Session, organisation_id: int | None) -> Overrides:
        """The organisation's SLA overrides as this transaction sees them. Remembered for the
        transaction only (a sweep's batch asks once per organisation), never for the process: a
        daemon must plan with the override `directory import` wrote a minute ago."""
        if organisation_id is None:
            return {}
        known: dict[int, Overrides] = session.info.setdefault(_OVERRIDES, {})
        if organisation_id not in known:
            known[organisation_id] = sla_overrides_of(organisation_id, session=session)
        return known[organisation_id]

    def overrides_read(self, session: Session, organisation_id: int, overrides: Overrides) -> None:
        """The organisation's SLA overrides as a query of this transaction already read them (the
        sender's directory lookup brings their organisation's), so `overrides_for` need not ask again."""
        session.info.setdefault(_OVERRIDES, {}).setdefault(organisation_id, overrides)

    def deadlines(self, session: Session, case: Case, now: datetime) -> tuple[Deadline, ...]:
        view = case_view(case)
        return case_deadlines(view, self.policy, self.calendar, now, self.overrides_for(session, case.organisation_id))

    def replan(
        self, session: Session, case: Case, now: datetime, *, known: tuple[Deadline, ...] | None = None,
        batched: bool = False,
    ) -> tuple[Deadline, ...]:
        """Recompute and store the deadlines; `next_due_at` is the next instant a sweep must look.

        `known`: the deadlines the caller just computed with `deadlines(…, now)` for the case as it
        still is (a sweep that only queued notices), so they are not computed twice. `batched`: the
        case's attributes are only set, for the caller's one flush of its whole batch (a sweep, under
        `no_autoflush`); otherwise they are written at once by one prepared UPDATE."""
        view = case_view(case)
        deadlines = known if known is not None else case_deadlines(
            view, self.policy, self.calendar, now, self.overrides_for(session, case.organisation_id)
        )
        by_name = {d.name: d for d in deadlines}

        def due(name: DeadlineName) -> datetime | None:
            deadline = by_name.get(name)
            return deadline.due_at if deadline is not None and deadline.pending else None

        pending_now = notices_due(view, deadlines, self.policy, now)
        values = {
            "response_due_at": due(DeadlineName.INITIAL_RESPONSE),
            "update_due_at": due(DeadlineName.NEXT_UPDATE),
            "resolution_due_at": due(DeadlineName.RESOLUTION),
            "customer_due_at": due(DeadlineName.CLOSE_NO_RESPONSE) or due(DeadlineName.HOLD_EXPIRY),
            "next_due_at": (
                min(n.due_at for n in pending_now) if pending_now else next_check_at(view, deadlines, self.policy, now)
            ),
        }
        if batched:
            for name, value in values.items():
                setattr(case, name, value)
            session.add(case)
        else:
            save_deadlines(session=session, case=case, **values)
        return deadlines

    def __call__(self, session: Session, case: Case, now: datetime) -> None:
        self.replan(session, case, now)
