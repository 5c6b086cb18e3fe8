"""Jobs: schedules, handled windows, the embedded queue, and Procrastinate's schema on PostgreSQL.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("source_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("spec", sa.String(length=120), nullable=False),
        sa.Column("paused", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("blackouts", sa.JSON(), nullable=False),
        sa.Column("last_window_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["source_id"], ["sources.id"], name=op.f("fk_schedules_source_id_sources")
        ),
        sa.PrimaryKeyConstraint("source_id", name=op.f("pk_schedules")),
    )
    op.create_table(
        "schedule_windows",
        sa.Column("source_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("window_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source_id", "window_at", name=op.f("pk_schedule_windows")),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_jobs_run_id_runs")),
        sa.ForeignKeyConstraint(
            ["source_id"], ["sources.id"], name=op.f("fk_jobs_source_id_sources")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("run_id", name=op.f("uq_jobs_run_id")),
    )
    op.create_index("ix_jobs_status", "jobs", ["status", "id"], unique=False)
    running = sa.text("status = 'running'")
    op.create_index(
        "uq_jobs_running_source",
        "jobs",
        ["source_id"],
        unique=True,
        sqlite_where=running,
        postgresql_where=running,
    )
    queued = sa.text("status = 'queued'")
    op.create_index(
        "uq_runs_queued_source",
        "runs",
        ["source_id"],
        unique=True,
        sqlite_where=queued,
        postgresql_where=queued,
    )

    bind = op.get_bind()
    if bind.dialect.name == "postgresql" and not sa.inspect(bind).has_table("procrastinate_jobs"):
        # Procrastinate's own schema, created unqualified so it lands in the connection's
        # search_path like our tables. Upgrading procrastinate past 3.10 needs a migration that
        # applies its sql/migrations files for the versions in between.
        from procrastinate.schema import SchemaManager

        bind.connection.driver_connection.execute(SchemaManager.get_schema())  # type: ignore[union-attr]


def downgrade() -> None:
    op.drop_index("uq_runs_queued_source", table_name="runs")
    op.drop_index("uq_jobs_running_source", table_name="jobs")
    op.drop_index("ix_jobs_status", table_name="jobs")
    op.drop_table("jobs")
    op.drop_table("schedule_windows")
    op.drop_table("schedules")
    # Procrastinate's tables, types and functions are left in place: they hold no roster data
    # and a later upgrade finds them there.
