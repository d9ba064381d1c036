"""Regenerate migrations/versions/0001 from the models (only until the first release; after it, add revisions)."""

import os
import tempfile
from pathlib import Path

from alembic import command

from mailcase.store.engine import _alembic_config, make_engine

versions = Path(__file__).resolve().parent.parent / "mailcase" / "migrations" / "versions"
for old in versions.glob("0001_*.py"):
    old.unlink()
with tempfile.TemporaryDirectory() as tmp:
    engine = make_engine(f"sqlite:///{os.path.join(tmp, 'gen.db')}")
    command.revision(_alembic_config(engine), message="initial schema", autogenerate=True, rev_id="0001")
