"""auto_reply_log.subject_key: the loop guard compares the subjects a sender was answered for

Revision ID: 0003_auto_reply_subject
Revises: 0004
Create Date: 2026-12-01 21:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_auto_reply_subject"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("auto_reply_log") as batch_op:
        batch_op.add_column(sa.Column("subject_key", sa.String(length=200), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("auto_reply_log") as batch_op:
        batch_op.drop_column("subject_key")
