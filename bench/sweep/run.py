"""Benchmark (not a test): scheduler ticks over a database of 1,000,000 cases of which 50,000 are open.

For each engine (SQLite in a temporary file; PostgreSQL in a throwaway database on 127.0.0.1:5432, user
postgres, created and dropped here) it bulk-loads the cases (COPY on PostgreSQL, executemany of a prepared
INSERT on SQLite), with realistic columns: open cases carry the deadlines and `next_due_at` that `rules.sla`
computes for them, closed ones have none. It then prints:

1. idle tick: `daemon.tick` (every sweep, then the outbox pass) when nothing is due, median of 20 runs, in a
   running process as `serve` runs it (target: at most 20 ms);
2. due tick: a tick that finds 10,000 due reminders: the sweep that decides and queues them, then a render
   of those 10,000 notices with the Renderer (the sweep only queues; rendering happens at delivery, so the
   two are timed separately and summed) (target: at most 10 s);
3. both again after growing from 100,000 to 950,000 closed cases (they must not grow);
4. the query plan of the due query, and the wall time of `mailcase tick` as its own process (Python start-up
   and imports included) for reference.

    .venv/bin/python bench/sweep/run.py [--engines sqlite,postgresql] [--cases 1000000] [--open 50000]
                                         [--due 10000] [--first-closed 100000] [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DENVER = ZoneInfo("America/Denver")
ORGANISATIONS = 500
TEAMS = {"support": 12, "microsoft": 6}
SUBJECTS = (
    "Phones not ringing at the {} office", "Calls dropping after 30 seconds", "Voicemail to email stopped",
    "Hunt group {} skips agents", "Teams calls one-way audio", "Fax line busy", "Five9 agent cannot log in",
    "MACD: add {} users", "SIP trunk registration failing", "Caller ID shows the wrong number",
)
PLATFORMS = ("Microsoft Teams", "Cisco", "Five9")
CASE_COLUMNS = (
    "id", "number", "kind", "organisation_id", "requester", "subject", "priority", "status", "assignee", "team",
    "platform", "related_to_id", "duplicate_of_id", "master_id", "etr", "hold_until", "needs_attention",
    "escalation_level", "awaiting_customer_since", "update_clock_resumed_at", "created_at", "updated_at",
    "sla_start_at", "first_response_at", "last_customer_activity_at", "last_agent_update_at", "resolved_at",
    "closed_at", "response_due_at", "update_due_at", "resolution_due_at", "customer_due_at", "next_due_at",
)
INSTANT_COLUMNS = frozenset(c for c in CASE_COLUMNS if c.endswith("_at") or c in ("etr", "hold_until"))


def mt(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=DENVER).astimezone(UTC)


# The desk's clock during the benchmark: Tuesday 2026-12-08. At 07:30 MT nothing is due; at 10:00 MT the
# reminders of the `due` cases are (their response is due 12:00-13:59, so no escalation yet).
IDLE_AT = mt(2026, 12, 8, 7, 30)
DUE_AT = mt(2026, 12, 8, 10)
MONDAY = mt(2026, 12, 7)  # 00:00 MT; the generator adds local hours (no DST change that week)
TUESDAY = mt(2026, 12, 8)


# ---------------------------------------------------------------------------------------------
# Generating cases


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f", {int(line.split()[1]) / 1024 / 1024:.0f} GiB RAM"
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}){memory}, Python {platform.python_version()}, {platform.system()} {platform.release()}"


def directory_toml() -> str:
    lines = [f'[[products]]\nname = "{p}"\n' for p in PLATFORMS]
    for team, size in TEAMS.items():
        for i in range(size):
            lines.append(f'[[technicians]]\nname = "Tech {team} {i}"\nemail = "{team}{i}@support.example.com"\nteam = "{team}"\n')
    for i in range(ORGANISATIONS):
        pt = i % 5 == 0
        lines.append(
            f'[[organisations]]\nid = "org{i}"\nname = "Organisation {i}"\nlocale = "{"pt" if pt else "en"}"\n'
            f'timezone = "{"America/Sao_Paulo" if pt else "America/Chicago"}"\ndomains = ["org{i}.example"]\n'
            f'products = ["{PLATFORMS[i % 3]}"]\n'
            f'[[organisations.contacts]]\nemail = "noc@org{i}.example"\nname = "NOC {i}"\nroles = ["primary"]\n'
            f'[[organisations.contacts]]\nemail = "it@org{i}.example"\nname = "IT {i}"\nroles = ["secondary", "maintenance"]\n'
        )
    return "\n".join(lines)


@dataclass
class Generator:
    """Builds case rows (dicts keyed by CASE_COLUMNS) with the deadlines rules.sla gives them."""

    organisation_ids: list[int]
    policy: Any
    calendar: Any
    rng: random.Random

    def technician(self, team: str = "support") -> str:
        return f"{team}{self.rng.randrange(TEAMS[team])}@support.example.com"

    def base(self, number: int, created: datetime) -> dict[str, Any]:
        org = self.rng.randrange(len(self.organisation_ids))
        row = dict.fromkeys(CASE_COLUMNS)
        subject = self.rng.choice(SUBJECTS)
        row |= {
            "id": number, "number": number, "kind": "support", "organisation_id": self.organisation_ids[org],
            "requester": f"{'noc' if number % 3 else 'it'}@org{org}.example",
            "subject": subject.format(self.rng.randrange(2, 400)) if "{}" in subject else subject,
            "priority": "P4", "status": "new", "team": "support", "needs_attention": False, "escalation_level": 1,
            "created_at": created, "updated_at": created, "sla_start_at": created, "last_customer_activity_at": created,
        }
        if row["subject"].startswith("MACD:"):
            row["kind"] = "macd_standard"
            row["sla_start_at"] = self.calendar.next_extended_opening(created)
        return row

    def closed(self, number: int) -> dict[str, Any]:
        """A case closed at some time in the last four years: no deadline, no `next_due_at`."""
        created = datetime(2023, 1, 1, tzinfo=UTC) + timedelta(minutes=self.rng.randrange(4 * 365 * 24 * 60 - 60 * 24 * 40))
        row = self.base(number, created)
        answered = created + timedelta(minutes=self.rng.randrange(5, 600))
        closed = answered + timedelta(hours=self.rng.randrange(1, 24 * 20))
        roll = self.rng.random()
        status = "closed" if roll < 0.8 else "closed_no_response" if roll < 0.92 else "duplicate"
        row |= {
            "priority": self.rng.choices(("P1", "P2", "P3", "P4"), (1, 4, 25, 70))[0],
            "status": status, "assignee": self.technician(), "first_response_at": answered,
            "last_agent_update_at": closed, "updated_at": closed, "closed_at": closed,
            "resolved_at": closed - timedelta(days=2) if status == "closed_no_response" else None,
            "duplicate_of_id": max(1, number - self.rng.randrange(1, 50)) if status == "duplicate" and number > 50 else None,
        }
        if status == "duplicate" and row["duplicate_of_id"] is None:
            row["status"] = "closed"
        return row

    def open(self, number: int, index: int, due: int) -> dict[str, Any]:
        """An open case; the first `due` of them have their reminder due at DUE_AT and not at IDLE_AT."""
        if index < due:  # P4, new: response due Tuesday 12:00-13:59, reminder 4 h before
            row = self.base(number, MONDAY + timedelta(hours=12, minutes=index % 120))
            row["assignee"] = self.technician()
            if row["kind"] != "support":
                row["kind"], row["sla_start_at"] = "support", row["created_at"]
            return self.planned(row)
        profile = index % 6
        minute = index % 240
        if profile == 0:  # new P4 from Monday afternoon: reminder Tuesday 10:30 or later
            row = self.base(number, MONDAY + timedelta(hours=14, minutes=30 + minute))
            row["assignee"] = self.technician()
            if row["kind"] != "support":
                row["kind"], row["sla_start_at"] = "support", row["created_at"]
        elif profile == 1:  # P3 in progress, answered Tuesday early: update due Wednesday
            row = self.base(number, MONDAY + timedelta(hours=16, minutes=minute))
            answered = TUESDAY + timedelta(hours=6, minutes=minute % 60)
            row |= {"priority": "P3", "status": "in_progress", "assignee": self.technician(),
                    "first_response_at": answered, "last_agent_update_at": answered, "kind": "support"}
        elif profile == 2:  # P2 in progress, last update after 09:45: update due after 11:45
            row = self.base(number, TUESDAY + timedelta(hours=5, minutes=minute % 60))
            updated = TUESDAY + timedelta(hours=9, minutes=45 + minute % 15)
            row |= {"priority": "P2", "status": "in_progress", "assignee": self.technician("microsoft"),
                    "team": "microsoft", "first_response_at": row["created_at"] + timedelta(minutes=20),
                    "last_agent_update_at": updated, "kind": "support"}
        elif profile == 3:  # on hold until Thursday
            row = self.base(number, mt(2026, 12, 1, 10) + timedelta(minutes=minute))
            row |= {"status": "on_hold", "assignee": self.technician(), "hold_until": mt(2026, 12, 10, 9) + timedelta(minutes=minute),
                    "first_response_at": row["created_at"] + timedelta(hours=2), "kind": "support"}
            row["last_agent_update_at"] = row["first_response_at"]
        elif profile == 4:  # resolved, waiting on the customer since Monday afternoon: nudge Tuesday afternoon
            row = self.base(number, mt(2026, 12, 2, 9) + timedelta(minutes=minute))
            since = MONDAY + timedelta(hours=15, minutes=minute)
            row |= {"status": "resolved_follow_up", "assignee": self.technician(), "first_response_at": row["created_at"] + timedelta(hours=1),
                    "last_agent_update_at": since, "resolved_at": since, "awaiting_customer_since": since}
        else:  # shipping hardware: the update clock is paused, nothing is ever due
            row = self.base(number, mt(2026, 11, 30, 9) + timedelta(minutes=minute))
            row |= {"status": "shipping", "assignee": self.technician(), "first_response_at": row["created_at"] + timedelta(hours=1),
                    "kind": "support", "sla_start_at": row["created_at"]}
            row["last_agent_update_at"] = row["first_response_at"]
        return self.planned(row)

    def planned(self, row: dict[str, Any]) -> dict[str, Any]:
        """The deadline columns and `next_due_at`, exactly as `deadlines.DeadlinePlanner.replan` stores them."""
        from mailcase.domain import CaseKind, CaseStatus, CaseView, Priority
        from mailcase.rules.sla import DeadlineName, case_deadlines, next_check_at, notices_due

        now = row["updated_at"] if row["last_agent_update_at"] is None else max(row["updated_at"], row["last_agent_update_at"])
        view = CaseView(
            id=row["id"], number=row["number"], organisation_id=row["organisation_id"], status=CaseStatus(row["status"]),
            priority=Priority(row["priority"]), kind=CaseKind(row["kind"]), requester=row["requester"],
            assignee=row["assignee"], team=row["team"], created_at=row["created_at"],
            first_response_at=row["first_response_at"], last_customer_activity_at=row["last_customer_activity_at"],
            last_agent_update_at=row["last_agent_update_at"], awaiting_customer_since=row["awaiting_customer_since"],
            hold_until=row["hold_until"], sla_start_at=row["sla_start_at"],
        )
        deadlines = case_deadlines(view, self.policy, self.calendar, now)
        pending = {d.name: d.due_at for d in deadlines if d.pending}
        row["response_due_at"] = pending.get(DeadlineName.INITIAL_RESPONSE)
        row["update_due_at"] = pending.get(DeadlineName.NEXT_UPDATE)
        row["resolution_due_at"] = pending.get(DeadlineName.RESOLUTION)
        row["customer_due_at"] = pending.get(DeadlineName.CLOSE_NO_RESPONSE) or pending.get(DeadlineName.HOLD_EXPIRY)
        due_now = notices_due(view, deadlines, self.policy, now)
        row["next_due_at"] = min((n.due_at for n in due_now), default=None) or next_check_at(view, deadlines, self.policy, now)
        return row


# ---------------------------------------------------------------------------------------------
# Loading


class Database:
    """One engine's throwaway database: SQLite in a temporary directory, or a PostgreSQL database."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        self.name = f"mailcase_bench_{uuid.uuid4().hex[:10]}"
        self.url = f"sqlite:///{workdir / 'bench.db'}" if kind == "sqlite" else PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{self.name}"

    def __enter__(self) -> Database:
        if self.kind == "postgresql":
            self._admin(f'CREATE DATABASE "{self.name}"')
        return self

    def __exit__(self, *exc: object) -> None:
        if self.kind == "postgresql":
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def _admin(self, sql: str) -> None:
        import sqlalchemy as sa

        admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(sa.text(sql))
        admin.dispose()


def _chunks(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def bulk_insert(engine: Any, rows: Iterator[dict[str, Any]]) -> int:
    """COPY on PostgreSQL; one prepared multi-row-free INSERT executed many times on SQLite (the fastest path
    through sqlite3). Instants are stored the way models.UtcDateTime stores them."""
    count = 0
    raw = engine.raw_connection()
    try:
        if engine.dialect.name == "postgresql":
            driver = raw.driver_connection
            with driver.cursor() as cursor, cursor.copy(
                f"COPY support_case ({', '.join(CASE_COLUMNS)}) FROM STDIN"
            ) as copy:
                for row in rows:
                    copy.write_row(tuple(row[c] for c in CASE_COLUMNS))
                    count += 1
            driver.commit()
        else:
            statement = f"INSERT INTO support_case ({', '.join(CASE_COLUMNS)}) VALUES ({', '.join('?' * len(CASE_COLUMNS))})"
            cursor = raw.cursor()
            for chunk in _chunks(rows, 20000):
                cursor.execute("BEGIN")
                cursor.executemany(statement, [tuple(_sqlite_value(c, row[c]) for c in CASE_COLUMNS) for row in chunk])
                cursor.execute("COMMIT")
                count += len(chunk)
            cursor.close()
    finally:
        raw.close()
    return count


def _sqlite_value(column: str, value: Any) -> Any:
    if value is None:
        return None
    if column in INSTANT_COLUMNS:
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, bool):
        return int(value)
    return value


def after_load(engine: Any, last_number: int) -> None:
    import sqlalchemy as sa

    with engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM counter WHERE name = 'case_number'"))
        connection.execute(sa.text("INSERT INTO counter (name, value) VALUES ('case_number', :v)"), {"v": last_number})
        if engine.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT setval(pg_get_serial_sequence('support_case', 'id'), :v)"), {"v": last_number})
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(sa.text("VACUUM ANALYZE support_case"))
            # Write the load's dirty pages now, not in a background checkpoint during the measurements.
            connection.execute(sa.text("CHECKPOINT"))
    else:
        raw = engine.raw_connection()  # outside any transaction, which a checkpoint needs
        try:
            raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            raw.close()


# ---------------------------------------------------------------------------------------------
# Measuring


def due_count(engine: Any, now: datetime) -> int:
    from sqlmodel import Session, col, func, select

    from mailcase.store.models import Case

    with Session(engine) as session:
        return int(session.exec(select(func.count()).select_from(Case).where(col(Case.next_due_at) <= now)).one())


def explain_due_query(engine: Any, now: datetime) -> list[str]:
    """The plan of the sweep's query (jobs.sweep_case_deadlines), as each engine runs it."""
    from sqlmodel import col, select

    from mailcase.store.models import Case

    statement = select(Case).where(col(Case.next_due_at) <= now).order_by(col(Case.next_due_at)).limit(500)
    postgres = engine.dialect.name == "postgresql"
    if postgres:
        statement = statement.with_for_update(skip_locked=True)
    compiled = statement.compile(dialect=engine.dialect)
    params = {key: (value.astimezone(UTC).replace(tzinfo=None) if not postgres and isinstance(value, datetime) else value)
              for key, value in compiled.params.items()}
    prefix = "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " if postgres else "EXPLAIN QUERY PLAN "
    with engine.begin() as connection:
        if postgres:
            rows = connection.exec_driver_sql(prefix + str(compiled), params).all()
            return [row[0] for row in rows]
        params = {key: (value.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(value, datetime) else value) for key, value in params.items()}
        positional = tuple(params[key] for key in compiled.positiontup or ())
        rows = connection.exec_driver_sql(prefix + str(compiled), positional).all()
        return [str(row[-1]) for row in rows]


def measure_idle(app: Any, runs: int) -> tuple[float, float, float]:
    """Median, min and max of `daemon.tick(app)` in ms, nothing due (one warm-up run first)."""
    from mailcase import daemon

    app.clock.set(IDLE_AT)
    report = daemon.tick(app)
    assert report.sla.examined == 0, f"idle tick found {report.sla.examined} due cases"
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        daemon.tick(app)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), min(times), max(times)


def measure_due(app: Any, expected: int) -> tuple[float, float, int]:
    """Seconds for the sweep that queues the due reminders, and for rendering them; the count queued."""
    from sqlmodel import Session, select

    from mailcase import daemon
    from mailcase.notify.render import Renderer
    from mailcase.store.models import Outbox

    app.clock.set(DUE_AT)
    started = time.perf_counter()
    sla = daemon.run_due_sweeps(app, DUE_AT).sla
    sweep = time.perf_counter() - started
    if sla.queued != expected:
        print(f"    warning: queued {sla.queued}, expected {expected} ({sla.by_kind})")
    started = time.perf_counter()
    renderer = Renderer(REPO / "templates")
    with Session(app.engine) as session:
        rows = session.exec(select(Outbox.template, Outbox.locale, Outbox.context).where(Outbox.kind == "staff.sla_reminder")).all()
    for template, locale, context in rows:
        renderer.render(template, locale, {k: v for k, v in context.items() if not k.startswith("_")})
    render = time.perf_counter() - started
    return sweep, render, len(rows)


def reset_due(engine: Any, due_rows: list[tuple[int, datetime]]) -> None:
    """Undo the due tick: forget the queued reminders and make the same cases due again."""
    import sqlalchemy as sa

    from mailcase.store.models import UtcDateTime

    with engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM outbox WHERE kind = 'staff.sla_reminder'"))
        connection.execute(
            sa.text("UPDATE support_case SET next_due_at = :due WHERE id = :id").bindparams(
                sa.bindparam("due", type_=UtcDateTime())
            ),
            [{"id": case_id, "due": due} for case_id, due in due_rows],
        )
    if engine.dialect.name == "postgresql":
        # Clear the dead rows of the tick just undone, as autovacuum would, or the next due tick would step over
        # their index entries (the same idempotency keys, inserted again) and measure this benchmark's own debris.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(sa.text("VACUUM ANALYZE outbox"))
            connection.execute(sa.text("VACUUM ANALYZE support_case"))
            connection.execute(sa.text("CHECKPOINT"))


def cli_tick_wall(url: str, runs: int = 3) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCASE_")} | {
        "MAILCASE_DATABASE__URL": url, "MAILCASE_LOGGING__LEVEL": "WARNING",
    }
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "mailcase", "--config", str(REPO / "config.toml"), "--now", IDLE_AT.isoformat(), "tick"],
            env=env, cwd=REPO, check=True, capture_output=True,
        )
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run_engine(kind: str, options: argparse.Namespace) -> None:
    from sqlmodel import select

    from mailcase.app import App
    from mailcase.clock import FixedClock
    from mailcase.config import load_config
    from mailcase.rules.directory_format import load_directory
    from mailcase.store.directory import import_directory
    from mailcase.store.engine import make_engine, transaction, upgrade_schema
    from mailcase.store.models import Organisation

    print(f"\n== {kind} (load average {os.getloadavg()[0]:.1f}: other processes on these {os.cpu_count()} cores skew figures)")
    with tempfile.TemporaryDirectory(prefix="mailcase-sweep-") as workdir, Database(kind, Path(workdir)) as database:
        engine = make_engine(database.url)
        upgrade_schema(engine)
        with transaction(engine) as session:
            import_directory(load_directory(directory_toml()), session=session)
            organisation_ids = [i for i in session.exec(select(Organisation.id).order_by(Organisation.id)) if i is not None]
        settings = load_config(REPO / "config.toml", {"MAILCASE_DATABASE__URL": database.url})
        app = App(settings=settings, engine=engine, clock=FixedClock(IDLE_AT))
        generator = Generator(organisation_ids, app.planner.policy, app.calendar, random.Random(42))
        closed_total = options.cases - options.open
        first_closed = min(options.first_closed, closed_total)

        started = time.perf_counter()
        open_rows = [generator.open(n, n - 1, options.due) for n in range(1, options.open + 1)]
        due_rows = [(row["id"], row["next_due_at"]) for row in open_rows[: options.due]]
        planned = time.perf_counter() - started
        started = time.perf_counter()
        loaded = bulk_insert(engine, iter(open_rows))
        loaded += bulk_insert(engine, (generator.closed(n) for n in range(options.open + 1, options.open + first_closed + 1)))
        after_load(engine, options.open + first_closed)
        print(f"load: {options.open:,} open cases planned with rules.sla in {planned:.1f} s; "
              f"{loaded:,} cases inserted in {time.perf_counter() - started:.1f} s")
        print(f"check: {due_count(engine, IDLE_AT)} due at {IDLE_AT:%H:%M}Z (idle), "
              f"{due_count(engine, DUE_AT):,} due at {DUE_AT:%H:%M}Z")

        figures = {}
        for stage, closed in (("small", first_closed), ("full", closed_total)):
            if stage == "full" and closed > first_closed:
                started = time.perf_counter()
                start = options.open + first_closed + 1
                loaded = bulk_insert(engine, (generator.closed(n) for n in range(start, options.cases + 1)))
                after_load(engine, options.cases)
                print(f"load: {loaded:,} more closed cases in {time.perf_counter() - started:.1f} s")
            median, low, high = measure_idle(app, options.runs)
            sweep, render, rendered = measure_due(app, options.due)
            figures[stage] = (median, sweep, render)
            total = options.open + closed
            print(f"{total:,} cases ({closed:,} closed, {options.open:,} open):")
            print(f"  idle tick: median {median:.1f} ms over {options.runs} runs (min {low:.1f}, max {high:.1f}); target <= 20 ms")
            print(f"  due tick: sweep queued {options.due:,} reminders in {sweep:.2f} s; render of {rendered:,} "
                  f"in {render:.2f} s; sweep + render {sweep + render:.2f} s; target <= 10 s")
            reset_due(engine, due_rows)
        small, full = figures["small"], figures["full"]
        print(f"growth {first_closed:,} -> {closed_total:,} closed: idle x{full[0] / small[0]:.2f}, "
              f"due sweep x{full[1] / small[1]:.2f}")
        print("due query plan:")
        for line in explain_due_query(engine, DUE_AT):
            print(f"  {line}")
        print(f"`mailcase tick` as its own process, idle (interpreter start-up and imports included): "
              f"{cli_tick_wall(database.url):.2f} s wall")
        app.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--open", type=int, default=50_000)
    parser.add_argument("--due", type=int, default=10_000, help="open cases whose reminder is due in the due tick")
    parser.add_argument("--first-closed", type=int, default=100_000, help="closed cases at the first measurement")
    parser.add_argument("--runs", type=int, default=20)
    options = parser.parse_args()
    print(f"machine: {machine()}; {datetime.now(UTC):%Y-%m-%d}")
    for kind in options.engines.split(","):
        run_engine(kind.strip(), options)
    print("load average (1, 5, 15 min) at the end: {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
