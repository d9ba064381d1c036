"""delivery lease: who holds an outbox row in `sending`, and until when; non-MPOC notices by kind and time

Revision ID: 0004
Revises: 0002_sender_verdict
Create Date: 2026-12-01 21:10:00

A claimed row records its claimant (host, process id and start time) and a lease its holder
renews while it works (issue 13): another daemon takes the row over only when the lease ran out,
and a restarted daemon on the same host recovers its dead predecessor's rows at once. Rows left
in `sending` by a daemon of the old schema get the old fixed 10-minute window as their lease.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import mailcase.store.models

revision = '0004'
down_revision = "0002_sender_verdict"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claimed_by', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('lease_until', mailcase.store.models.UtcDateTime(timezone=True), nullable=True))
    outbox = sa.table(
        'outbox',
        sa.column('state', sa.String),
        sa.column('next_attempt_at', mailcase.store.models.UtcDateTime(timezone=True)),
        sa.column('lease_until', mailcase.store.models.UtcDateTime(timezone=True)),
    )
    connection = op.get_bind()
    rows: Sequence[datetime | None] = connection.execute(sa.select(outbox.c.next_attempt_at).where(outbox.c.state == 'sending').distinct()).scalars().all()
    for claimed_at in rows:
        connection.execute(
            outbox.update()
            .where(outbox.c.state == 'sending', outbox.c.next_attempt_at == claimed_at)
            .values(lease_until=(claimed_at + timedelta(minutes=10)) if claimed_at is not None else None)
        )


    # The global hourly cap on non-MPOC notices counts them by kind and time.
    with op.batch_alter_table('auto_reply_log', schema=None) as batch_op:
        batch_op.create_index('ix_auto_reply_kind_at', ['kind', 'at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('auto_reply_log', schema=None) as batch_op:
        batch_op.drop_index('ix_auto_reply_kind_at')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_column('lease_until')
        batch_op.drop_column('claimed_by')
