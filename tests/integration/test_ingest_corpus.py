"""The fixture corpus through `mailcase ingest`: every message under tests/fixtures/mail/ ends as expectations.toml says.

Each file is one test, on SQLite and on PostgreSQL. For speed the files of one engine share a
database loaded with examples/directory.toml (a fresh database per file would cost a schema
migration each); no fixture replies to another, and each test checks that its message opened a
case rather than joining one, so sharing cannot hide a wrong outcome.
"""

from __future__ import annotations

import tomllib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from mailcase.store.engine import make_engine
from support.cli import REPO, MailcaseCli

MAIL = REPO / "tests" / "fixtures" / "mail"
EXPECTATIONS: dict[str, dict[str, Any]] = tomllib.loads((MAIL / "expectations.toml").read_text())
NOW = "2026-11-25T16:00:00-07:00"  # a Wednesday afternoon at the desk
DECISIONS = {
    "case": {"open_case"},
    "update": {"append_update", "record_auto_reply", "reopen_case"},
    "bounce": {"record_bounce"},
    "held": {"hold_message"},
    "ignored": {"ignore_message"},
    "command": {"subscription_command"},
}
FILES = sorted(path.name for path in MAIL.glob("*.eml"))


def test_every_fixture_file_has_an_expectation_and_the_corpus_is_large_enough() -> None:
    assert sorted(EXPECTATIONS) == FILES
    assert len(FILES) >= 75
    assert {e["outcome"] for e in EXPECTATIONS.values()} <= set(DECISIONS)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def corpus_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One database per engine for the whole corpus, migrated and loaded with the example directory."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('corpus') / 'mailcase.db'}"
        admin = None
    else:
        admin_url = request.getfixturevalue("pg_admin_url")
        name = f"mailcase_corpus_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    cli = MailcaseCli(url)
    for argv in (("init",), ("directory", "import", str(REPO / "examples" / "directory.toml"))):
        result = cli(*argv)
        assert result.status == 0, result.stderr
    try:
        yield url
    finally:
        if admin is not None:
            with admin.connect() as connection:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def raw_bytes_of_held(url: str, held_id: int) -> bytes:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return bytes(
                connection.execute(
                    sa.text("SELECT r.data FROM raw_message r JOIN held_message h ON h.raw_id = r.id WHERE h.id = :i"),
                    {"i": held_id},
                ).scalar_one()
            )
    finally:
        engine.dispose()


@pytest.mark.parametrize("name", FILES)
def test_fixture_message_is_ingested_without_a_crash_and_ends_as_expected(corpus_db: str, name: str) -> None:
    expected = EXPECTATIONS[name]
    cli = MailcaseCli(corpus_db)

    result = cli("ingest", str(MAIL / name), "--json", now=NOW)

    assert result.status == 0, result.stderr
    assert "Traceback" not in result.stderr
    [outcome] = result.json()
    assert outcome["decision"] in DECISIONS[expected["outcome"]], (expected["scenario"], outcome)
    match expected["outcome"]:
        case "case":
            case = cli("cases", "show", outcome["case"], "--json").json()
            assert case["status"] == "new" and case["priority"] == "P4"
            inbound = [m for m in case["messages"] if m["direction"] == "inbound"]
            assert len(inbound) == 1, "the message joined an existing case instead of opening one"
            if "from" in expected:
                assert case["requester"] == expected["from"]
        case "held":
            assert outcome["case"] is None and outcome["held_id"] is not None
            held = {h["id"]: h for h in cli("held", "list", "--json").json()}
            assert outcome["held_id"] in held
            if expected.get("unparseable"):
                # Kept whole, byte for byte, for an agent to look at (SPEC.md §3, "Nothing lost").
                assert raw_bytes_of_held(corpus_db, outcome["held_id"]) == (MAIL / name).read_bytes()
        case "ignored" | "bounce":
            assert outcome["case"] is None and outcome["held_id"] is None
        case "command" | "update":
            assert outcome["held_id"] is None
    if outcome["message_id"] and expected["outcome"] in ("ignored", "bounce"):
        # Never answer a machine (SPEC.md §3, "No loops, no backscatter").
        [trace] = cli("trace", outcome["message_id"], "--json").json()
        assert trace["notices"] == []
