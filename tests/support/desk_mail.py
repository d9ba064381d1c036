"""Mail for operations tests: build a message, ingest it through `mailcase ingest` at a given instant,
and read every stored text of a database; no tests here."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formataddr
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlmodel import SQLModel

import mailcase.store.models  # noqa: F401  (registers every table on SQLModel.metadata)
from support.cli import MailcaseCli


def message(
    sender: tuple[str, str], subject: str, body: str, *, message_id: str, cc: tuple[str, ...] = (),
    in_reply_to: str = "", attachment: tuple[str, bytes] | None = None,
) -> bytes:
    mail = EmailMessage()
    mail["From"] = formataddr(sender)
    mail["To"] = "support@support.example.com"
    if cc:
        mail["Cc"] = ", ".join(cc)
    mail["Subject"] = subject
    mail["Message-ID"] = f"<{message_id}>"
    if in_reply_to:
        mail["In-Reply-To"] = mail["References"] = f"<{in_reply_to}>"
    mail.set_content(body)
    if attachment is not None:
        name, data = attachment
        mail.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return bytes(mail)


def ingest(cli: MailcaseCli, tmp: Path, data: bytes, *, now: str) -> dict[str, Any]:
    """`mailcase ingest FILE --json` at `now`; the one result row (decision, case, held_id)."""
    path = tmp / f"mail-{abs(hash(data))}.eml"
    path.write_bytes(data)
    result = cli("ingest", str(path), "--json", now=now)
    assert result.status == 0, result.stderr
    (row,) = result.json()
    return dict(row)


def every_text(url: str, *, skip: frozenset[tuple[str, str]] = frozenset()) -> str:
    """Every text, JSON and byte column of every table as one string (bytes decoded leniently),
    except the (table, column) pairs in `skip`: for "this value is nowhere any more"."""
    engine = sa.create_engine(url)
    parts: list[str] = []
    try:
        with engine.connect() as connection:
            for table in SQLModel.metadata.sorted_tables:
                for row in connection.execute(sa.select(table)).mappings():
                    for column, value in row.items():
                        if (table.name, column) in skip or value is None:
                            continue
                        parts.append(value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value))
    finally:
        engine.dispose()
    return "\n".join(parts)
