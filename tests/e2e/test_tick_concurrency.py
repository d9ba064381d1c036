"""Two `mailcase tick` processes started at the same moment against one PostgreSQL database: every due notice is
queued once and delivered once, none twice (SPEC.md §3 "Exactly once", "Scales by the database")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from mailcase.app import App
from mailcase.domain import Priority
from mailcase.store.cases import create_case
from mailcase.store.engine import make_engine, transaction, upgrade_schema
from mailcase.store.models import Organisation, Outbox
from support.broadcasts import example_app
from support.cli import REPO, SAMPLE_CONFIG
from support.relay import CaptureRelay
from support.scheduler import ANA, ON_CALL, PAT, SUPPORT_MANAGER, VP, mt

CASES = 300
MONDAY = mt(2026, 12, 7, 9)
TICK_AT = mt(2026, 12, 8, 6)  # Tuesday 06:00 MT


@pytest.fixture
def engine(fresh_pg_url: str) -> Iterator[Engine]:
    engine = make_engine(fresh_pg_url)
    upgrade_schema(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def _stamp(instant: object) -> str:
    return instant.strftime("%Y%m%dT%H%M%SZ")  # type: ignore[attr-defined]


def _open_due_cases(app: App) -> dict[str, tuple[str, ...]]:
    """Half P4 cases assigned to Ana, opened Monday 09:00 (at TICK_AT their reminder is due), half unassigned P2
    cases opened at 05:00 (alert, level 2 and level 3 due; the reminder is overtaken by the escalation).
    Returns the idempotency key and recipients of every notice due at TICK_AT."""
    expected: dict[str, tuple[str, ...]] = {}
    p2_opened = TICK_AT - timedelta(hours=1)
    with transaction(app.engine) as session:
        acme = session.exec(select(Organisation.id).where(Organisation.key == "acme")).one()
        for index in range(CASES):
            p4 = index % 2 == 0
            opened = MONDAY if p4 else p2_opened
            case = create_case(
                session=session, now=opened, subject=f"Load case {index}", organisation_id=acme, requester=PAT,
                priority=Priority.P4 if p4 else Priority.P2, assignee=ANA if p4 else None, team="support",
            )
            app.planner.replan(session, case, opened)
            if p4:
                due = _stamp(mt(2026, 12, 8, 9))
                expected[f"sla_reminder:{case.number}:initial_response:{due}"] = (ANA,)
            else:
                due = _stamp(p2_opened + timedelta(minutes=30))
                expected[f"unassigned_alert:{case.number}:initial_response:{due}"] = (ON_CALL,)
                expected[f"sla_escalation_l2:{case.number}:initial_response:{due}"] = (SUPPORT_MANAGER,)
                expected[f"sla_escalation_l3:{case.number}:initial_response:{due}"] = (VP,)
    return expected


def _tick_process(database_url: str, relay: CaptureRelay) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCASE_")}
    env |= {
        "MAILCASE_DATABASE__URL": database_url,
        "MAILCASE_OUTBOUND__HOST": relay.host,
        "MAILCASE_OUTBOUND__PORT": str(relay.port),
        "MAILCASE_OUTBOUND__BATCH_SIZE": "2000",
        "MAILCASE_OUTBOUND__TIMEOUT_SECONDS": "10",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "mailcase", "--config", str(SAMPLE_CONFIG), "--now", TICK_AT.isoformat(), "tick", "--json"],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_two_tick_processes_at_once_queue_and_deliver_every_due_notice_exactly_once(
    engine: Engine, fresh_pg_url: str
) -> None:
    app = example_app(engine, TICK_AT)
    expected = _open_due_cases(app)

    with CaptureRelay() as relay:
        processes = [_tick_process(fresh_pg_url, relay), _tick_process(fresh_pg_url, relay)]
        outputs = [process.communicate(timeout=180) for process in processes]
        for process, (_stdout, stderr) in zip(processes, outputs, strict=True):
            assert process.returncode == 0, stderr
        reports = [json.loads(stdout) for stdout, _ in outputs]
        # Whatever one process left queued (it started its delivery before the other's sweep committed), a
        # third tick delivers; it finds nothing left to queue.
        last = _tick_process(fresh_pg_url, relay)
        stdout, stderr = last.communicate(timeout=180)
        assert last.returncode == 0, stderr
        assert json.loads(stdout)["notices_queued"] == 0

    assert sum(report["notices_queued"] for report in reports) == len(expected)
    with transaction(engine) as session:
        rows = list(session.exec(select(Outbox).order_by(col(Outbox.id))))
    assert {row.idempotency_key: tuple(row.recipients) for row in rows} == expected
    assert len(rows) == len(expected)
    assert {row.state for row in rows} == {"sent"}

    delivered = Counter(captured.message["Message-ID"] for captured in relay.messages)
    assert len(relay.messages) == len(expected)
    assert set(delivered.values()) == {1}
    assert set(delivered) == {row.message_id for row in rows}
