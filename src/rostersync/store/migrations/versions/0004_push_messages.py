"""Pub/Sub push deliveries already handled (Google Classroom notifications).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "push_messages",
        sa.Column("source_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("message_id", sa.String(length=200), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source_id", "message_id", name=op.f("pk_push_messages")),
    )
    op.create_index(
        op.f("ix_push_messages_received_at"), "push_messages", ["received_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_push_messages_received_at"), table_name="push_messages")
    op.drop_table("push_messages")
