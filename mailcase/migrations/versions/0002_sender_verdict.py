"""raw_message.sender_verdict: the sender-authentication verdict stored with each inbound message (issue 10)

Revision ID: 0002_sender_verdict
Revises: 0001
Create Date: 2026-12-01 21:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_sender_verdict"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Messages received before the upgrade had no check: an empty verdict ("none" when shown).
    with op.batch_alter_table("raw_message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sender_verdict", sa.JSON(), nullable=False, server_default=sa.text("'{}'")))


def downgrade() -> None:
    with op.batch_alter_table("raw_message", schema=None) as batch_op:
        batch_op.drop_column("sender_verdict")
