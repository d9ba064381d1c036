"""Case numbers: sequential, zero-padded, never reused, and unique under concurrent writers (SQLite and PostgreSQL)."""

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
from mailcase.store.cases import CASE_NUMBER_COUNTER, allocate_case_number, create_case
from mailcase.store.engine import make_engine, transaction, upgrade_schema
from mailcase.store.models import Case, CaseEvent, CaseParticipant, Counter


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


def test_a_rolled_back_allocation_leaves_no_gap(engine: Engine, clock: FixedClock) -> None:
    assert open_case(engine, clock.now()) == 1
    assert abandoned_allocation(engine) == 2

    assert open_case(engine, clock.now()) == 2
    assert committed_numbers(engine) == [1, 2]


def test_a_deleted_case_number_is_never_handed_out_again(engine: Engine, clock: FixedClock) -> None:
    for _ in range(3):
        open_case(engine, clock.now())
    with transaction(engine) as session:
        case = session.exec(select(Case).where(Case.number == 3)).one()
        for table in (CaseEvent, CaseParticipant):
            session.execute(sa.delete(table).where(table.case_id == case.id))
        session.delete(case)

    assert open_case(engine, clock.now()) == 4


def test_a_writer_waiting_behind_a_rolled_back_allocation_gets_that_number_once(
    engine: Engine, clock: FixedClock
) -> None:
    """Two writers race; the first rolls back. Whatever the interleaving, every committed number is
    used once, the counter never goes backwards, and the next case continues the sequence."""
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
    assert second == [2]
    assert open_case(engine, clock.now()) == 3
    assert committed_numbers(engine) == [1, 2, 3]


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
    numbers, abandoned = [], 0
    for i in range(count):
        if i % 25 == 0:
            # Every 25th turn also takes a number and rolls back, as a failed ingest would.
            try:
                with transaction(engine) as session:
                    allocate_case_number(session=session)
                    raise RuntimeError("abandon")
            except RuntimeError:
                abandoned += 1
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
def test_two_processes_allocating_500_case_numbers_each_get_1000_distinct_gapless_numbers(
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
    # Rolled-back allocations are given back, so the committed numbers have no gaps at all.
    assert sorted(a + b) == list(range(1, 1001))
    assert all(r["abandoned"] == 20 for r in results)
    # Both writers really ran at the same time: their numbers interleave.
    assert min(b) < max(a) and min(a) < max(b)
    check = make_engine(fresh_pg_url)
    try:
        assert committed_numbers(check) == list(range(1, 1001))
        with Session(check) as session:
            assert session.get(Counter, CASE_NUMBER_COUNTER).value == 1000  # type: ignore[union-attr]
    finally:
        check.dispose()
