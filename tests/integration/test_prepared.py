"""`store.common.Prepared`, the ingest hot path's way to the driver, on SQLite and PostgreSQL: what it
writes and reads is what `Session.execute` would, inside the session's transaction and savepoints,
and the database's refusals arrive as SQLAlchemy's exceptions (the SMTP edge maps those to 451)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from mailcase.domain import AutoKind, Direction
from mailcase.store.common import ROWS_PER_STATEMENT, insert_ignoring, prepared, table_of
from mailcase.store.models import Message, RawMessageRecord

AT = datetime(2026, 11, 25, 23, 0, 0, 123456, tzinfo=UTC)


@prepared
def insert_message(dialect: str) -> Any:
    table = table_of(Message)
    return sa.insert(table).returning(table.c.id)


@prepared
def insert_raw(dialect: str) -> Any:
    return sa.insert(table_of(RawMessageRecord))


@prepared
def read_message(dialect: str) -> Any:
    table = table_of(Message)
    return sa.select(table.c.direction, table.c.references, table.c.received_at, table.c.details).where(
        table.c.id == sa.bindparam("message_id")
    )


@prepared
def insert_messages(dialect: str) -> Any:
    return sa.insert(table_of(Message))


@prepared
def insert_raw_once(dialect: str) -> Any:
    return insert_ignoring(dialect, table_of(RawMessageRecord), ["dedupe_key"])


@prepared
def insert_raw_once_returning_key(dialect: str) -> Any:
    table = table_of(RawMessageRecord)
    return insert_ignoring(dialect, table, ["dedupe_key"]).returning(table.c.dedupe_key)


def message_values(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "case_id": None, "direction": Direction.INBOUND, "message_id": "<a@example.com>", "in_reply_to": "",
        "references": ["<r1@example.com>", "<r2@example.com>"], "from_address": "pat@acme.example",
        "from_name": "Pat Ângelo", "to_addresses": ["support@support.example.com"], "cc_addresses": [],
        "subject": "Trunk down", "text": "it is down", "new_text": "it is down", "auto_kind": AutoKind.HUMAN,
        "raw_id": None, "outbox_id": None, "received_at": AT, "details": {"defects": ["x"]},
    }
    return values | changes


def test_a_prepared_row_reads_back_through_the_orm_as_written(engine: Engine) -> None:
    with Session(engine) as session:
        row_id = insert_message.run(session, message_values()).scalar_one()
        session.commit()
    with Session(engine) as session:
        row = session.exec(select(Message).where(Message.id == row_id)).one()
        assert row.direction == Direction.INBOUND
        assert row.references == ["<r1@example.com>", "<r2@example.com>"]
        assert row.from_name == "Pat Ângelo"
        assert row.received_at == AT
        assert row.details == {"defects": ["x"]}
        # And a prepared SELECT converts the columns as the ORM does (enum, JSON, aware datetime).
        direction, references, received_at, details = read_message.run(session, {"message_id": row_id}).one()
        assert (direction, references, received_at, details) == (row.direction, row.references, AT, row.details)


def test_columns_left_out_take_their_python_side_defaults(engine: Engine) -> None:
    values = {
        "channel": "smtp", "received_at": AT, "envelope_from": "pat@acme.example", "envelope_to": ["support@x"],
        "source": "test", "size": 3, "sha256": "0" * 64, "data": b"abc", "message_id_header": "<a@b>",
        "dedupe_key": "k1", "sender_verdict": {},
    }
    with Session(engine) as session:
        insert_raw.run(session, values)
        session.commit()
        stored = session.exec(select(RawMessageRecord).where(RawMessageRecord.dedupe_key == "k1")).one()
        assert (stored.decision, stored.reason, bytes(stored.data)) == ("", "", b"abc")


def test_a_rolled_back_savepoint_takes_its_prepared_writes_with_it(engine: Engine) -> None:
    with Session(engine) as session:
        kept = insert_message.run(session, message_values(message_id="<kept@x>")).scalar_one()
        with pytest.raises(RuntimeError), session.begin_nested():
            insert_message.run(session, message_values(message_id="<gone@x>"))
            raise RuntimeError("the message failed half-way")
        insert_message.run(session, message_values(message_id="<after@x>"))
        session.commit()
    with Session(engine) as session:
        ids = set(session.exec(select(Message.message_id)))
    assert ids == {"<kept@x>", "<after@x>"}
    assert kept


def test_the_database_refusing_arrives_as_sqlalchemys_exception_and_the_transaction_rolls_back(engine: Engine) -> None:
    with Session(engine) as session:
        insert_message.run(session, message_values(message_id="<first@x>"))
        with pytest.raises(sa.exc.IntegrityError) as refused:
            insert_message.run(session, message_values(case_id=987654))  # no such case: a foreign key
        session.rollback()
    # What a log line of the error would show names the statement, never the customer's mail.
    assert "INSERT INTO message" in str(refused.value) and "it is down" not in str(refused.value)
    with Session(engine) as session:
        assert list(session.exec(select(Message.message_id))) == []


def test_many_rows_go_in_as_written_and_in_list_order(engine: Engine) -> None:
    """`run_many` writes several statements' worth of rows (more than one INSERT holds), each column
    converted as a single row's is, and the ids follow the list (a case's history reads in order)."""
    count = ROWS_PER_STATEMENT * 2 + 3
    rows = [
        message_values(message_id=f"<m{n}@x>", references=[f"<r{n}@x>"], details={"n": n}, direction=
                       Direction.OUTBOUND if n % 2 else Direction.INBOUND)
        for n in range(count)
    ]
    with Session(engine) as session:
        insert_messages.run_many(session, rows)
        session.commit()
    with Session(engine) as session:
        stored = list(session.exec(select(Message).order_by(Message.id)))  # type: ignore[arg-type]
    assert [m.message_id for m in stored] == [f"<m{n}@x>" for n in range(count)]
    assert [m.details for m in stored] == [{"n": n} for n in range(count)]
    assert [m.references for m in stored] == [[f"<r{n}@x>"] for n in range(count)]
    assert {m.direction for m in stored[1::2]} == {Direction.OUTBOUND}
    assert {m.received_at for m in stored} == {AT}


def raw_row(key: str, source: str) -> dict[str, Any]:
    return {
        "channel": "smtp", "received_at": AT, "envelope_from": "pat@acme.example", "envelope_to": [],
        "source": source, "size": 3, "sha256": "0" * 64, "data": b"abc", "message_id_header": "",
        "dedupe_key": key, "decision": "", "reason": "", "case_id": None, "sender_verdict": {}, "purged_at": None,
    }


def test_many_rows_skip_those_already_stored_and_their_own_repeats(engine: Engine) -> None:
    """ON CONFLICT DO NOTHING holds for every row of the one statement: a row already in the table
    and a row repeated later in the same list are both left out, the rest go in."""
    with Session(engine) as session:
        insert_raw_once.run_many(session, [raw_row("k1", "first")])
        insert_raw_once.run_many(
            session, [raw_row("k1", "again"), raw_row("k2", "new"), raw_row("k2", "repeat"), raw_row("k3", "new")]
        )
        session.commit()
        stored = {r.dedupe_key: r.source for r in session.exec(select(RawMessageRecord))}
    assert stored == {"k1": "first", "k2": "new", "k3": "new"}


def test_many_rows_give_back_what_they_inserted_across_statements(engine: Engine) -> None:
    """RETURNING over several statements' worth of rows (a sweep queueing a batch of notices): the
    keys of the rows inserted, none of those already there."""
    keys = [f"k{n}" for n in range(ROWS_PER_STATEMENT * 2 + 7)]
    with Session(engine) as session:
        insert_raw_once.run_many(session, [raw_row(key, "earlier") for key in keys[::3]])
        returned = insert_raw_once_returning_key.run_many(session, [raw_row(key, "now") for key in keys])
        session.commit()
    assert sorted(key for (key,) in returned) == sorted(set(keys) - set(keys[::3]))
    assert returned.rowcount == len(keys) - len(keys[::3])


def test_many_rows_must_give_each_column_that_has_a_default(engine: Engine) -> None:
    """A column's default cannot be filled in per row of one multi-row statement: refused before the
    database is asked, not stored with a wrong value."""
    with Session(engine) as session, pytest.raises(ValueError, match="default"):
        insert_raw.run_many(session, [{"channel": "smtp", "received_at": AT, "sha256": "0" * 64, "data": b"a"}])
