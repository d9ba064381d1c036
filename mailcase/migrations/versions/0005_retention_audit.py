"""retention, erasure and who did what: purge marks on raw messages, attachments and held messages; the audit ledger

Revision ID: 0005
Revises: 0003_auto_reply_subject
Create Date: 2026-12-06 07:20:00

`mailcase purge` empties raw bytes and attachment bodies past `[retention]` and records when
(`purged_at`), so `trace` can say the bytes were purged rather than lost; the held digest records
when it warned about a held message's purge (`purge_warned_at`). `audit_entry` is the ledger of
agent and operator actions behind `mailcase audit` (issue 15).
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

import mailcase.store.models

revision = '0005'
down_revision = '0003_auto_reply_subject'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('raw_message', schema=None) as batch_op:
        batch_op.add_column(sa.Column('purged_at', mailcase.store.models.UtcDateTime(timezone=True), nullable=True))
        # The purge looks for old raw messages by arrival.
        batch_op.create_index('ix_raw_message_received_at', ['received_at'], unique=False)
    with op.batch_alter_table('attachment', schema=None) as batch_op:
        batch_op.add_column(sa.Column('purged_at', mailcase.store.models.UtcDateTime(timezone=True), nullable=True))
    with op.batch_alter_table('held_message', schema=None) as batch_op:
        batch_op.add_column(sa.Column('purge_warned_at', mailcase.store.models.UtcDateTime(timezone=True), nullable=True))
    op.create_table(
        'audit_entry',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('at', mailcase.store.models.UtcDateTime(timezone=True), nullable=False),
        sa.Column('actor', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
        sa.Column('action', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('case_id', sa.Integer(), nullable=True),
        sa.Column('target', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column('summary', sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(['case_id'], ['support_case.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('audit_entry', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_entry_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_entry_actor'), ['actor'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_entry_case_id'), ['case_id'], unique=False)


def downgrade() -> None:
    op.drop_table('audit_entry')
    with op.batch_alter_table('held_message', schema=None) as batch_op:
        batch_op.drop_column('purge_warned_at')
    with op.batch_alter_table('attachment', schema=None) as batch_op:
        batch_op.drop_column('purged_at')
    with op.batch_alter_table('raw_message', schema=None) as batch_op:
        batch_op.drop_index('ix_raw_message_received_at')
        batch_op.drop_column('purged_at')
