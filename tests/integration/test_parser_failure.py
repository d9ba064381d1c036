"""A message that breaks a parsing library under us is kept and held with its reason, on SQLite and
PostgreSQL: not deferred (451) for ever, which would bounce the customer's mail days later with no
one at the desk having seen it (SPEC.md §3, nothing lost and no silent outcome)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from mailcase.ingest import pipeline as pipeline_module
from mailcase.store.engine import transaction
from mailcase.store.models import HeldMessage
from support.threads import PAT, ThreadDesk, eml, fresh_message_id

OPENED = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)


def test_a_message_the_parser_crashes_on_is_held_with_the_reason(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    desk = ThreadDesk.start(engine, OPENED)

    def crashing(data: bytes, **_: Any) -> Any:
        raise TypeError("decode() argument 'encoding' must be str, not tuple")

    monkeypatch.setattr(pipeline_module, "parse_message", crashing)
    data = eml("new_case_outlook.eml", message_id=fresh_message_id(), date="Wed, 25 Nov 2026 16:00:00 -0700",
               from_header=PAT, subject="Trunk 1 is down")

    outcome = desk.ingest_bytes(data, envelope_from="pat@acme.example")

    assert outcome.decision == "hold_message"
    assert "the parser failed (TypeError)" in outcome.reason
    [held] = desk.held()
    assert "the parser failed (TypeError)" in held.reason
    assert desk.case_count() == 0
    # An agent who vouches for it releases it (what can be salvaged of it), as any held message.
    with transaction(desk.engine) as session:
        row = session.get(HeldMessage, held.id)
        assert row is not None
        released = desk.pipeline.release_held(session, row, now=OPENED, by="agent")
    assert released.decision == "open_case" and released.case_number is not None
    assert desk.case_count() == 1
