"""`mailcase serve` runs the scheduler (APScheduler inside the daemon): its sweep job queues a due reminder, its
outbox job delivers it to the relay, and the daemon stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from sqlmodel import select

from mailcase.domain import Priority
from mailcase.store.cases import create_case
from mailcase.store.engine import make_engine, transaction, upgrade_schema
from mailcase.store.models import Organisation, Outbox
from support.broadcasts import example_app
from support.cli import REPO, SAMPLE_CONFIG
from support.relay import CaptureRelay
from support.scheduler import ANA, PAT, mt

OPENED = mt(2026, 12, 7, 9)
NOW = OPENED + timedelta(minutes=11)  # the P1 reminder (10 min) is due; the escalation (15 min) is not
WAIT_SECONDS = 60.0  # an upper bound on the daemon's start-up and first sweep, never a timing assertion


def test_serve_sweep_job_queues_a_due_reminder_and_the_outbox_job_delivers_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mailcase.db'}"
    engine = make_engine(url)
    upgrade_schema(engine)
    app = example_app(engine, OPENED)
    with transaction(engine) as session:
        acme = session.exec(select(Organisation.id).where(Organisation.key == "acme")).one()
        case = create_case(
            session=session, now=OPENED, subject="Whole site down", organisation_id=acme, requester=PAT,
            priority=Priority.P1, assignee=ANA, team="support",
        )
        app.planner.replan(session, case, OPENED)
        number = case.number

    with CaptureRelay() as relay:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCASE_")} | {
            "MAILCASE_DATABASE__URL": url,
            "MAILCASE_SMTP__ENABLED": "false",
            "MAILCASE_OUTBOUND__HOST": relay.host,
            "MAILCASE_OUTBOUND__PORT": str(relay.port),
            "MAILCASE_SCHEDULER__SWEEP_INTERVAL_SECONDS": "1",
            "MAILCASE_SCHEDULER__OUTBOX_INTERVAL_SECONDS": "1",
        }
        daemon = subprocess.Popen(
            [sys.executable, "-m", "mailcase", "--config", str(SAMPLE_CONFIG), "--now", NOW.isoformat(), "serve"],
            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            deadline = time.monotonic() + WAIT_SECONDS
            while not relay.messages and daemon.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert relay.messages, "serve delivered nothing"
        finally:
            daemon.send_signal(signal.SIGTERM)
            _, stderr = daemon.communicate(timeout=60)
        assert daemon.returncode == 0, stderr

    (message,) = relay.messages
    assert message.rcpt_tos == (ANA,)
    assert message.message["Subject"].startswith(f"[Case #{number:08d}] P1 response due")
    with transaction(engine) as session:
        (row,) = session.exec(select(Outbox).where(Outbox.template == "staff.sla_reminder")).all()
    assert row.state == "sent" and row.message_id == message.message["Message-ID"]
    engine.dispose()
