"""Initial schema: the canonical roster, the id map, snapshots, runs and changes.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("entity", sa.String(length=16), nullable=False),
        sa.Column("canonical_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("before", sa.Text(), nullable=True),
        sa.Column("after", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_changes")),
    )
    with op.batch_alter_table("changes", schema=None) as batch_op:
        batch_op.create_index("ix_changes_run", ["run_id", "entity"], unique=False)

    op.create_table(
        "districts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("timezone", sa.String(length=64), server_default="UTC", nullable=False),
        sa.Column("authoritative", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("allow_groups", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("safety_share", sa.Float(), server_default="0.1", nullable=False),
        sa.Column("safety_floor", sa.Integer(), server_default="10", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_districts")),
        sa.UniqueConstraint("name", name=op.f("uq_districts_name")),
    )
    op.create_table(
        "enrollments",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("section_id", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("source_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrollments")),
    )
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.create_index("ix_enrollments_person", ["person_id"], unique=False)
        batch_op.create_index("ix_enrollments_section", ["section_id", "end_at"], unique=False)
        batch_op.create_index(
            "ix_enrollments_manual",
            ["section_id"],
            unique=False,
            sqlite_where=sa.text("source_id IS NULL AND end_at IS NULL"),
            postgresql_where=sa.text("source_id IS NULL AND end_at IS NULL"),
        )

    op.create_table(
        "id_map",
        sa.Column("district_id", sa.Integer(), nullable=False),
        sa.Column("entity", sa.String(length=16), nullable=False),
        sa.Column("namespace", sa.String(length=40), nullable=False),
        sa.Column("external_id", sa.String(length=320), nullable=False),
        sa.Column("canonical_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "district_id", "entity", "namespace", "external_id", name=op.f("pk_id_map")
        ),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("id_map", schema=None) as batch_op:
        batch_op.create_index("ix_id_map_canonical", ["entity", "canonical_id"], unique=False)

    op.create_table(
        "snapshots",
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("entity", sa.String(length=16), nullable=False),
        sa.Column("external_id", sa.String(length=400), nullable=False),
        sa.Column("content_hash", sa.BigInteger(), nullable=False),
        sa.Column("canonical_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("source_id", "entity", "external_id", name=op.f("pk_snapshots")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "people",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("district_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("given_name", sa.String(length=200), nullable=True),
        sa.Column("family_name", sa.String(length=200), nullable=True),
        sa.Column("grade", sa.String(length=20), nullable=True),
        sa.Column("sis_id", sa.String(length=200), nullable=True),
        sa.Column("state_id", sa.String(length=200), nullable=True),
        sa.Column("google_id", sa.String(length=200), nullable=True),
        sa.Column("school_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["district_id"], ["districts.id"], name=op.f("fk_people_district_id_districts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_people")),
    )
    with op.batch_alter_table("people", schema=None) as batch_op:
        batch_op.create_index("ix_people_district_email", ["district_id", "email"], unique=False)
        batch_op.create_index("ix_people_district_status", ["district_id", "status"], unique=False)

    op.create_table(
        "schools",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("district_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=True),
        sa.Column("sis_id", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["district_id"], ["districts.id"], name=op.f("fk_schools_district_id_districts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schools")),
    )
    with op.batch_alter_table("schools", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_schools_district_id"), ["district_id"], unique=False)

    op.create_table(
        "sections",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("district_id", sa.Integer(), nullable=False),
        sa.Column("school_id", sa.Integer(), nullable=True),
        sa.Column("term_id", sa.Integer(), nullable=True),
        sa.Column("name", sa.String(length=300), nullable=True),
        sa.Column("course", sa.String(length=300), nullable=True),
        sa.Column("period", sa.String(length=100), nullable=True),
        sa.Column("room", sa.String(length=100), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["district_id"], ["districts.id"], name=op.f("fk_sections_district_id_districts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sections")),
    )
    with op.batch_alter_table("sections", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sections_district_id"), ["district_id"], unique=False)

    op.create_table(
        "sightings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("district_id", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("google_id", sa.String(length=200), nullable=True),
        sa.Column("name", sa.String(length=300), nullable=True),
        sa.Column("device", sa.String(length=200), nullable=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["district_id"], ["districts.id"], name=op.f("fk_sightings_district_id_districts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sightings")),
    )
    with op.batch_alter_table("sightings", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sightings_person_id"), ["person_id"], unique=False)

    op.create_table(
        "sources",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("district_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="active", nullable=False),
        sa.Column("cursor", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["district_id"], ["districts.id"], name=op.f("fk_sources_district_id_districts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sources")),
        sa.UniqueConstraint("name", name=op.f("uq_sources_name")),
    )
    with op.batch_alter_table("sources", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sources_district_id"), ["district_id"], unique=False)

    op.create_table(
        "terms",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("district_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=True),
        sa.Column("start_date", sa.String(length=10), nullable=True),
        sa.Column("end_date", sa.String(length=10), nullable=True),
        sa.Column("school_year", sa.String(length=20), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["district_id"], ["districts.id"], name=op.f("fk_terms_district_id_districts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_terms")),
    )
    with op.batch_alter_table("terms", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_terms_district_id"), ["district_id"], unique=False)

    op.create_table(
        "groups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("district_id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["district_id"], ["districts.id"], name=op.f("fk_groups_district_id_districts")
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["people.id"], name=op.f("fk_groups_owner_id_people")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_groups")),
    )
    with op.batch_alter_table("groups", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_groups_owner_id"), ["owner_id"], unique=False)

    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.String(length=32), nullable=False),
        sa.Column("requested_by", sa.String(length=320), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("counts", sa.JSON(), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("problems", sa.JSON(), nullable=True),
        sa.Column("warnings", sa.JSON(), nullable=True),
        sa.Column("held_reasons", sa.JSON(), nullable=True),
        sa.Column("decided_by", sa.String(length=320), nullable=True),
        sa.ForeignKeyConstraint(
            ["source_id"], ["sources.id"], name=op.f("fk_runs_source_id_sources")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_runs_source_id"), ["source_id"], unique=False)

    op.create_table(
        "group_members",
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"], ["groups.id"], name=op.f("fk_group_members_group_id_groups")
        ),
        sa.ForeignKeyConstraint(
            ["person_id"], ["people.id"], name=op.f("fk_group_members_person_id_people")
        ),
        sa.PrimaryKeyConstraint("group_id", "person_id", name=op.f("pk_group_members")),
    )
    op.create_table(
        "run_payloads",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_run_payloads_run_id_runs")),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_run_payloads")),
    )

    op.create_table(
        "snapshot_digests",
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("entity", sa.String(length=16), nullable=False),
        sa.Column("digest", sa.BigInteger(), nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("source_id", "entity", name=op.f("pk_snapshot_digests")),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Canonical ids are allocated in bulk by the sync engine (see store/bulk.py).
        for table in ("schools", "terms", "people", "sections", "enrollments"):
            op.execute(f"CREATE SEQUENCE {table}_ids")

    # Teachers of a section are enrollments with a teacher role; this view names them.
    op.execute(
        "CREATE VIEW section_teachers AS "
        "SELECT id, section_id, person_id, role, start_at, end_at, source_id "
        "FROM enrollments WHERE role IN ('owner', 'co-teacher')"
    )


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS section_teachers")
    op.drop_table("snapshot_digests")
    if op.get_bind().dialect.name == "postgresql":
        for table in ("schools", "terms", "people", "sections", "enrollments"):
            op.execute(f"DROP SEQUENCE IF EXISTS {table}_ids")

    op.drop_table("run_payloads")
    op.drop_table("group_members")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_runs_source_id"))

    op.drop_table("runs")
    with op.batch_alter_table("groups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_groups_owner_id"))

    op.drop_table("groups")
    with op.batch_alter_table("terms", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_terms_district_id"))

    op.drop_table("terms")
    with op.batch_alter_table("sources", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sources_district_id"))

    op.drop_table("sources")
    with op.batch_alter_table("sightings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sightings_person_id"))

    op.drop_table("sightings")
    with op.batch_alter_table("sections", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sections_district_id"))

    op.drop_table("sections")
    with op.batch_alter_table("schools", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_schools_district_id"))

    op.drop_table("schools")
    with op.batch_alter_table("people", schema=None) as batch_op:
        batch_op.drop_index("ix_people_district_status")
        batch_op.drop_index("ix_people_district_email")

    op.drop_table("people")
    op.drop_table("snapshots")
    with op.batch_alter_table("id_map", schema=None) as batch_op:
        batch_op.drop_index("ix_id_map_canonical")

    op.drop_table("id_map")
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.drop_index("ix_enrollments_manual")
        batch_op.drop_index("ix_enrollments_section")
        batch_op.drop_index("ix_enrollments_person")

    op.drop_table("enrollments")
    op.drop_table("districts")
    with op.batch_alter_table("changes", schema=None) as batch_op:
        batch_op.drop_index("ix_changes_run")

    op.drop_table("changes")
