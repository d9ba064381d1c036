"""Case numbers: sequential, zero-padded, never reused, and unique under concurrent writers (SQLite and PostgreSQL).

On PostgreSQL the number (and the team's round-robin turn) is taken in a transaction of its own, so
concurrent case-opening transactions do not queue behind each other's commit (issue 16); a number
taken by a transaction that then rolls back is left unused: a gap, never a reuse. SQLite has one
writer at a time, so there a rolled-back number is given back."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from datetime import datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from mailcase.clock import FixedClock
from mailcase.present import cases_json
from mailcase.store import common
from mailcase.store.cases import CASE_NUMBER_COUNTER, allocate_case_number, assign_next, create_case
from mailcase.store.engine import make_engine, transaction, upgrade_schema
from mailcase.store.models import Case, CaseEvent, CaseParticipant, Counter, Technician


class Rollback(Exception):
    """Raised inside a transaction to abandon it."""


def open_case(engine: Engine, now: datetime, subject: str = "Phones down") -> int:
    with transaction(engine) as session:
        return create_case(
            session=session, now=now, subject=subject, organisation_id=None, requester="pat@acme.example"
        ).number


def abandoned_allocation(engine: Engine) -> int:
    """Allocate a number in a transaction that then rolls back; returns the number it saw."""
    seen: list[int] = []
    with pytest.raises(Rollback), transaction(engine) as session:
        seen.append(allocate_case_number(session=session))
        raise Rollback
    return seen[0]


def committed_numbers(engine: Engine) -> list[int]:
    with Session(engine) as session:
        return sorted(session.exec(select(Case.number)))


def test_case_numbers_start_at_1_and_count_up(engine: Engine, clock: FixedClock) -> None:
    numbers = [open_case(engine, clock.now(), f"case {i}") for i in range(5)]

    assert numbers == [1, 2, 3, 4, 5]


def test_allocations_in_one_transaction_are_consecutive(engine: Engine) -> None:
    with transaction(engine) as session:
        numbers = [allocate_case_number(session=session) for _ in range(3)]

    assert numbers == [1, 2, 3]


def test_case_numbers_are_zero_padded_in_json(engine: Engine, clock: FixedClock) -> None:
    open_case(engine, clock.now())
    open_case(engine, clock.now())

    with Session(engine) as session:
        rows = cases_json(session, list(session.exec(select(Case).order_by(Case.number))))

    assert [row["number"] for row in rows] == ["00000001", "00000002"]


def test_a_rolled_back_allocation_is_never_handed_out_to_a_second_case(engine: Engine, clock: FixedClock) -> None:
    assert open_case(engine, clock.now()) == 1
    assert abandoned_allocation(engine) == 2

    # SQLite's writer lock gives the number back; PostgreSQL's committed counter leaves it unused.
    following = 2 if engine.dialect.name == "sqlite" else 3
    assert open_case(engine, clock.now()) == following
    assert committed_numbers(engine) == [1, following]


def test_a_deleted_case_number_is_never_handed_out_again(engine: Engine, clock: FixedClock) -> None:
    for _ in range(3):
        open_case(engine, clock.now())
    with transaction(engine) as session:
        case = session.exec(select(Case).where(Case.number == 3)).one()
        for table in (CaseEvent, CaseParticipant):
            session.execute(sa.delete(table).where(table.case_id == case.id))
        session.delete(case)

    assert open_case(engine, clock.now()) == 4


def test_a_writer_racing_a_rolled_back_allocation_gets_a_number_nobody_else_gets(
    engine: Engine, clock: FixedClock
) -> None:
    """Two writers race; the first rolls back. Whatever the interleaving, every committed number is
    used once, the counter never goes backwards, and the next case continues the sequence. On SQLite
    the rival waits for the writer lock and gets the number given back; on PostgreSQL it does not
    wait, and gets the next one."""
    assert open_case(engine, clock.now()) == 1
    second: list[int] = []
    errors: list[BaseException] = []
    started = threading.Event()

    def rival() -> None:
        try:
            started.set()
            second.append(open_case(engine, clock.now(), "rival"))
        except BaseException as error:  # reported to the test thread below
            errors.append(error)

    with pytest.raises(Rollback), transaction(engine) as session:
        assert allocate_case_number(session=session) == 2
        thread = threading.Thread(target=rival)
        thread.start()
        started.wait(timeout=30)
        raise Rollback
    thread.join(timeout=60)

    assert not errors, errors
    rival_number = 2 if engine.dialect.name == "sqlite" else 3
    assert second == [rival_number]
    assert open_case(engine, clock.now()) == rival_number + 1
    assert committed_numbers(engine) == [1, rival_number, rival_number + 1]


def test_the_counter_row_holds_the_last_number_handed_out(engine: Engine, clock: FixedClock) -> None:
    for _ in range(4):
        open_case(engine, clock.now())

    with Session(engine) as session:
        assert session.get(Counter, CASE_NUMBER_COUNTER).value == 4  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------
# Concurrent writers on PostgreSQL: two processes, 500 committed cases each, one transaction each

WORKER = textwrap.dedent(
    """
    import json, sys
    from datetime import UTC, datetime
    from mailcase.store.engine import make_engine, transaction
    from mailcase.store.cases import allocate_case_number, create_case

    url, count, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    now = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)
    engine = make_engine(url)
    with engine.connect():
        pass
    print("ready", flush=True)
    sys.stdin.readline()  # start together
    numbers, abandoned = [], []
    for i in range(count):
        if i % 25 == 0:
            # Every 25th turn also takes a number and rolls back, as a failed ingest would.
            try:
                with transaction(engine) as session:
                    abandoned.append(allocate_case_number(session=session))
                    raise RuntimeError("abandon")
            except RuntimeError:
                pass
        with transaction(engine) as session:
            case = create_case(
                session=session, now=now, subject=f"{name} {i}", organisation_id=None, requester=None
            )
            numbers.append(case.number)
    engine.dispose()
    print(json.dumps({"numbers": numbers, "abandoned": abandoned}), flush=True)
    """
)


@pytest.mark.postgres
def test_two_processes_allocating_500_case_numbers_each_get_1000_distinct_numbers_never_reused(
    fresh_pg_url: str,
) -> None:
    engine = make_engine(fresh_pg_url)
    upgrade_schema(engine)
    engine.dispose()
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, fresh_pg_url, "500", name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready", worker.stderr.read() if worker.stderr else ""
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        outputs = [worker.communicate(timeout=240) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    for worker, (_out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
    results = [json.loads(out.strip().splitlines()[-1]) for out, _err in outputs]
    a, b = (r["numbers"] for r in results)

    assert len(a) == len(b) == 500
    assert a == sorted(a) and b == sorted(b), "each writer sees its numbers grow"
    assert not set(a) & set(b), "no number was handed to both writers"
    abandoned = [number for r in results for number in r["abandoned"]]
    assert len(abandoned) == 40
    # Every number handed out went to exactly one committed case or one rolled-back transaction:
    # the only gaps are the 40 rolled-back ones, and none of those was handed out again.
    assert not set(abandoned) & set(a + b)
    assert sorted(a + b + abandoned) == list(range(1, 1041))
    # Both writers really ran at the same time: their numbers interleave.
    assert min(b) < max(a) and min(a) < max(b)
    check = make_engine(fresh_pg_url)
    try:
        assert committed_numbers(check) == sorted(a + b)
        with Session(check) as session:
            assert session.get(Counter, CASE_NUMBER_COUNTER).value == 1040  # type: ignore[union-attr]
    finally:
        check.dispose()


@pytest.mark.postgres
def test_opening_a_case_does_not_wait_for_another_case_opening_transaction_to_commit(
    fresh_pg_url: str, clock: FixedClock
) -> None:
    """Two SMTP processes' messages open cases at once: the second transaction takes its number and
    its technician and commits while the first is still open, and they differ (round-robin)."""
    engine = make_engine(fresh_pg_url)
    upgrade_schema(engine)
    try:
        with transaction(engine) as session:
            session.add(Technician(email="ana@support.example.com", team="support"))
            session.add(Technician(email="ben@support.example.com", team="support"))
        second: list[tuple[int, str | None]] = []
        errors: list[BaseException] = []
        committed = threading.Event()

        def rival() -> None:
            try:
                with transaction(engine) as session:
                    assignee, _team = assign_next(session=session, team="support")
                    case = create_case(
                        session=session, now=clock.now(), subject="rival", organisation_id=None,
                        requester="kim@acme.example", assignee=assignee, team="support",
                    )
                    second.append((case.number, assignee))
                committed.set()
            except BaseException as error:  # reported to the test thread below
                errors.append(error)
                committed.set()

        with transaction(engine) as session:
            assignee, _team = assign_next(session=session, team="support")
            first = create_case(
                session=session, now=clock.now(), subject="first", organisation_id=None,
                requester="pat@acme.example", assignee=assignee, team="support",
            )
            thread = threading.Thread(target=rival)
            thread.start()
            # Before this change the rival waited here for this transaction's row locks: a deadlock
            # with this wait, so the event never came.
            assert committed.wait(timeout=30), "the second case-opening transaction waited for the first"
            first_turn = (first.number, assignee)
        thread.join(timeout=30)

        assert not errors, errors
        assert first_turn == (1, "ana@support.example.com")
        assert second == [(2, "ben@support.example.com")]
        assert committed_numbers(engine) == [1, 2]
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_cases_open_after_the_database_dropped_every_connection(
    fresh_pg_url: str, pg_admin_url: str, clock: FixedClock
) -> None:
    """A database restart ends every pooled connection, the case number's own one too: the next
    message still opens its case (the sender is not told 451 because a pooled connection was stale)."""
    engine = make_engine(fresh_pg_url)
    upgrade_schema(engine)
    admin = make_engine(pg_admin_url)
    try:
        assert open_case(engine, clock.now()) == 1
        # Two of the counter's connections in its pool, as after two concurrent cases: the retry after
        # the first stale one must not take the second.
        side = common._autonomous(engine)
        held = [side.connect(), side.connect()]
        for connection in held:
            connection.close()
        with admin.connect() as connection:
            ended = connection.execute(
                sa.text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = :name"),
                {"name": engine.url.database},
            ).scalar_one()
        assert ended >= 2  # the session's connection and the counter's

        assert open_case(engine, clock.now()) == 2
        assert committed_numbers(engine) == [1, 2]
    finally:
        admin.dispose()
        engine.dispose()


@pytest.mark.postgres
def test_cases_open_in_the_schema_the_database_url_chooses(fresh_pg_url: str, clock: FixedClock) -> None:
    """A desk whose tables live in their own schema, chosen by libpq options in the URL: the case
    number is taken there too (its own connection keeps the URL's options)."""
    plain = make_engine(fresh_pg_url)
    with plain.begin() as connection:
        connection.execute(sa.text("CREATE SCHEMA desk"))
    plain.dispose()
    engine = make_engine(fresh_pg_url + "?options=-csearch_path%3Ddesk")
    upgrade_schema(engine)
    try:
        assert open_case(engine, clock.now()) == 1
        assert open_case(engine, clock.now()) == 2
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT value FROM desk.counter")).scalar_one() == 2
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_technician_added_while_a_transaction_is_open_gets_the_next_case_without_a_hang(
    fresh_pg_url: str, clock: FixedClock
) -> None:
    """A message found the intake team empty (no assignee), an admin then added a technician, and a
    later message of the same group transaction assigns them: nothing waits on the first one's work."""
    engine = make_engine(fresh_pg_url)
    upgrade_schema(engine)
    assigned: list[str | None] = []
    errors: list[BaseException] = []
    try:
        def group() -> None:
            try:
                with transaction(engine) as session:
                    assigned.append(assign_next(session=session, team="support")[0])
                    with transaction(engine) as admin:
                        admin.add(Technician(email="ana@support.example.com", team="support"))
                    assigned.append(assign_next(session=session, team="support")[0])
            except BaseException as error:  # reported to the test thread below
                errors.append(error)

        thread = threading.Thread(target=group, daemon=True)
        thread.start()
        thread.join(timeout=30)

        assert not thread.is_alive(), "the second assignment waited on the first one's transaction"
        assert not errors, errors
        assert assigned == [None, "ana@support.example.com"]
    finally:
        engine.dispose()
