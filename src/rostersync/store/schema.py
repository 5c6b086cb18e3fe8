"""Tables of the canonical store (SQLAlchemy Core). ``docs/data-model.md`` explains each one.

Canonical ids are integers allocated by the store. History is never deleted: enrollments get an
end time, and schools, terms, people and sections get the status ``archived``.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

TS = sa.DateTime(timezone=True)

districts = sa.Table(
    "districts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("timezone", sa.String(64), nullable=False, server_default="UTC"),
    sa.Column("authoritative", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("allow_groups", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("safety_share", sa.Float, nullable=False, server_default="0.1"),
    sa.Column("safety_floor", sa.Integer, nullable=False, server_default="10"),
    sa.Column("created_at", TS, nullable=False),
)

sources = sa.Table(
    "sources",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("district_id", sa.ForeignKey("districts.id"), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="active"),
    sa.Column("cursor", sa.Text),
    sa.Column("created_at", TS, nullable=False),
)

schools = sa.Table(
    "schools",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("district_id", sa.ForeignKey("districts.id"), nullable=False, index=True),
    sa.Column("name", sa.String(300)),
    sa.Column("sis_id", sa.String(200)),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
)

terms = sa.Table(
    "terms",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("district_id", sa.ForeignKey("districts.id"), nullable=False, index=True),
    sa.Column("name", sa.String(300)),
    sa.Column("start_date", sa.String(10)),
    sa.Column("end_date", sa.String(10)),
    sa.Column("school_year", sa.String(20)),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
)

people = sa.Table(
    "people",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("district_id", sa.ForeignKey("districts.id"), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("email", sa.String(320)),
    sa.Column("given_name", sa.String(200)),
    sa.Column("family_name", sa.String(200)),
    sa.Column("grade", sa.String(20)),
    sa.Column("sis_id", sa.String(200)),
    sa.Column("state_id", sa.String(200)),
    sa.Column("google_id", sa.String(200)),
    sa.Column("school_id", sa.Integer),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.Index("ix_people_district_email", "district_id", "email"),
    sa.Index("ix_people_district_status", "district_id", "status"),
)

sections = sa.Table(
    "sections",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("district_id", sa.ForeignKey("districts.id"), nullable=False, index=True),
    sa.Column("school_id", sa.Integer),
    sa.Column("term_id", sa.Integer),
    sa.Column("name", sa.String(300)),
    sa.Column("course", sa.String(300)),
    sa.Column("period", sa.String(100)),
    sa.Column("room", sa.String(100)),
    sa.Column("status", sa.String(16), nullable=False),
    # The source the section came from; null for a section made locally.
    sa.Column("source_id", sa.Integer),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
)

enrollments = sa.Table(
    "enrollments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("section_id", sa.Integer, nullable=False),
    sa.Column("person_id", sa.Integer, nullable=False),
    # student, owner (the section's main teacher) or co-teacher.
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("start_at", TS, nullable=False),
    sa.Column("end_at", TS),
    # The source that enrolled the person; null for an enrollment made by hand.
    sa.Column("source_id", sa.Integer),
    sa.Index("ix_enrollments_section", "section_id", "end_at"),
    sa.Index("ix_enrollments_person", "person_id"),
    # The current hand-made enrollments: few, and looked up on every sync.
    sa.Index(
        "ix_enrollments_manual",
        "section_id",
        sqlite_where=sa.text("source_id IS NULL AND end_at IS NULL"),
        postgresql_where=sa.text("source_id IS NULL AND end_at IS NULL"),
    ),
)

groups = sa.Table(
    "groups",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("district_id", sa.ForeignKey("districts.id"), nullable=False),
    sa.Column("owner_id", sa.ForeignKey("people.id"), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("archived_at", TS),
)

group_members = sa.Table(
    "group_members",
    metadata,
    sa.Column("group_id", sa.ForeignKey("groups.id"), primary_key=True),
    sa.Column("person_id", sa.ForeignKey("people.id"), primary_key=True),
    sa.Column("added_at", TS, nullable=False),
)

id_map = sa.Table(
    "id_map",
    metadata,
    sa.Column("district_id", sa.Integer, primary_key=True),
    sa.Column("entity", sa.String(16), primary_key=True),
    # "source:<id>" for a source's own ids, or sis, state, google, email.
    sa.Column("namespace", sa.String(40), primary_key=True),
    sa.Column("external_id", sa.String(320), primary_key=True),
    sa.Column("canonical_id", sa.Integer, nullable=False),
    sa.Index("ix_id_map_canonical", "entity", "canonical_id"),
    sqlite_with_rowid=False,
)

snapshots = sa.Table(
    "snapshots",
    metadata,
    sa.Column("source_id", sa.Integer, primary_key=True),
    sa.Column("entity", sa.String(16), primary_key=True),
    sa.Column("external_id", sa.String(400), primary_key=True),
    sa.Column("content_hash", sa.BigInteger, nullable=False),
    sa.Column("canonical_id", sa.Integer, nullable=False),
    sqlite_with_rowid=False,
)

# One digest per source and entity of the whole snapshot (an order-free combination of every
# record's id and content hash): when a feed's digest equals it, that entity did not change.
snapshot_digests = sa.Table(
    "snapshot_digests",
    metadata,
    sa.Column("source_id", sa.Integer, primary_key=True),
    sa.Column("entity", sa.String(16), primary_key=True),
    sa.Column("digest", sa.BigInteger, nullable=False),
    sa.Column("records", sa.Integer, nullable=False),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("source_id", sa.ForeignKey("sources.id"), nullable=False, index=True),
    # cli, schedule, sync-now, approve, ...
    sa.Column("trigger", sa.String(32), nullable=False),
    sa.Column("requested_by", sa.String(320)),
    # running, succeeded, failed, held, dry-run, discarded
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("stage", sa.String(16)),
    sa.Column("started_at", TS, nullable=False),
    sa.Column("finished_at", TS),
    sa.Column("counts", sa.JSON),
    sa.Column("summary", sa.JSON),
    sa.Column("error", sa.Text),
    sa.Column("problems", sa.JSON),
    sa.Column("warnings", sa.JSON),
    sa.Column("held_reasons", sa.JSON),
    sa.Column("decided_by", sa.String(320)),
)

run_payloads = sa.Table(
    "run_payloads",
    metadata,
    sa.Column("run_id", sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("payload", sa.LargeBinary, nullable=False),
)

changes = sa.Table(
    "changes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("run_id", sa.Integer, nullable=False),
    sa.Column("entity", sa.String(16), nullable=False),
    sa.Column("canonical_id", sa.Integer, nullable=False),
    # create, update, archive, restore, attach, end
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("before", sa.Text),
    sa.Column("after", sa.Text),
    sa.Index("ix_changes_run", "run_id", "entity"),
)

sightings = sa.Table(
    "sightings",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("district_id", sa.ForeignKey("districts.id"), nullable=False),
    sa.Column("person_id", sa.Integer, nullable=False, index=True),
    sa.Column("email", sa.String(320)),
    sa.Column("google_id", sa.String(200)),
    sa.Column("name", sa.String(300)),
    sa.Column("device", sa.String(200)),
    sa.Column("seen_at", TS, nullable=False),
)

#: The canonical table of each entity.
ENTITY_TABLES: dict[str, sa.Table] = {
    "school": schools,
    "term": terms,
    "person": people,
    "section": sections,
    "enrollment": enrollments,
}

# Jobs: schedules, their windows, and the embedded queue (docs/architecture.md, "Jobs") -------

schedules = sa.Table(
    "schedules",
    metadata,
    sa.Column("source_id", sa.ForeignKey("sources.id"), primary_key=True, autoincrement=False),
    # nightly@HH:MM, every Nh, or a five-field cron expression; local to the district.
    sa.Column("spec", sa.String(120), nullable=False),
    sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
    # [{"start": "2027-06-20", "end": "2027-08-20"}, ...], local dates, both ends included.
    sa.Column("blackouts", sa.JSON, nullable=False),
    # The latest window the scheduler handled (queued or skipped).
    sa.Column("last_window_at", TS),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
)

# One row per handled window: inserted-or-skipped in the transaction that queues its run, so a
# window is queued once however many schedulers run.
schedule_windows = sa.Table(
    "schedule_windows",
    metadata,
    sa.Column("source_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("window_at", TS, primary_key=True),
    sa.Column("run_id", sa.Integer),
    # queued or skipped
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("recorded_at", TS, nullable=False),
)

# Pub/Sub push deliveries already handled, by message id, so a redelivery does nothing new.
# Rows older than Pub/Sub's longest retention (7 days) are pruned as new ones arrive.
push_messages = sa.Table(
    "push_messages",
    metadata,
    sa.Column("source_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("message_id", sa.String(200), primary_key=True),
    sa.Column("run_id", sa.Integer),
    sa.Column("received_at", TS, nullable=False, index=True),
)

# The embedded queue: one row per queued run. On PostgreSQL with Procrastinate its own
# procrastinate_jobs table plays this part.
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("source_id", sa.ForeignKey("sources.id"), nullable=False),
    sa.Column("run_id", sa.ForeignKey("runs.id"), nullable=False, unique=True),
    # queued, running, done, failed
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("queued_at", TS, nullable=False),
    sa.Column("started_at", TS),
    sa.Column("heartbeat_at", TS),
    sa.Column("finished_at", TS),
    sa.Column("worker", sa.String(200)),
    sa.Index("ix_jobs_status", "status", "id"),
    # Never two running jobs of one source.
    sa.Index(
        "uq_jobs_running_source",
        "source_id",
        unique=True,
        sqlite_where=sa.text("status = 'running'"),
        postgresql_where=sa.text("status = 'running'"),
    ),
)

# At most one waiting (queued) run per source, whichever queue holds its job.
sa.Index(
    "uq_runs_queued_source",
    runs.c.source_id,
    unique=True,
    sqlite_where=sa.text("status = 'queued'"),
    postgresql_where=sa.text("status = 'queued'"),
)

# The web app: accounts, sign-in, keys, class sessions and the audit log (docs/web.md) ---------

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("district_id", sa.ForeignKey("districts.id"), nullable=False, index=True),
    # Trimmed and lower-cased; a teacher's account is linked to the synced teacher by it.
    sa.Column("email", sa.String(320), nullable=False, unique=True),
    # district-admin, school-admin or teacher
    sa.Column("role", sa.String(16), nullable=False),
    # argon2id; null for an account that signs in only by link or single sign-on.
    sa.Column("password_hash", sa.String(200)),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("disabled_at", TS),
)

user_schools = sa.Table(
    "user_schools",
    metadata,
    sa.Column("user_id", sa.ForeignKey("users.id"), primary_key=True),
    sa.Column("school_id", sa.Integer, primary_key=True),
)

web_sessions = sa.Table(
    "web_sessions",
    metadata,
    # SHA-256 of the cookie value, hex.
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("last_seen_at", TS, nullable=False),
    sa.Column("expires_at", TS, nullable=False),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.ForeignKey("users.id"), nullable=False, index=True),
    sa.Column("name", sa.String(200)),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("last_used_at", TS),
    sa.Column("revoked_at", TS),
)

sign_in_links = sa.Table(
    "sign_in_links",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.ForeignKey("users.id"), nullable=False),
    sa.Column("created_by", sa.Integer),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("expires_at", TS, nullable=False),
    sa.Column("used_at", TS),
)

sign_in_failures = sa.Table(
    "sign_in_failures",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("address", sa.String(64), nullable=False),
    sa.Column("failed_at", TS, nullable=False),
    sa.Index("ix_sign_in_failures_email", "email", "failed_at"),
    sa.Index("ix_sign_in_failures_address", "address", "failed_at"),
)

extension_keys = sa.Table(
    "extension_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("district_id", sa.ForeignKey("districts.id"), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("created_by", sa.String(320)),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("last_used_at", TS),
    sa.Column("revoked_at", TS),
)

# A Start Class: the section (or group) and the roster as it was when the class started.
class_sessions = sa.Table(
    "class_sessions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("district_id", sa.ForeignKey("districts.id"), nullable=False),
    sa.Column("section_id", sa.Integer),
    sa.Column("group_id", sa.Integer),
    sa.Column("teacher_id", sa.Integer),
    sa.Column("started_by", sa.ForeignKey("users.id"), nullable=False),
    sa.Column("started_at", TS, nullable=False),
    sa.Column("ended_at", TS),
    sa.Index("ix_class_sessions_section", "section_id", "ended_at"),
    sa.Index("ix_class_sessions_group", "group_id", "ended_at"),
)

class_session_members = sa.Table(
    "class_session_members",
    metadata,
    sa.Column("class_session_id", sa.ForeignKey("class_sessions.id"), primary_key=True),
    sa.Column("person_id", sa.Integer, primary_key=True),
    sa.Index("ix_class_session_members_person", "person_id"),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("district_id", sa.Integer, nullable=False),
    sa.Column("user_id", sa.Integer),
    sa.Column("actor", sa.String(320)),
    sa.Column("action", sa.String(40), nullable=False),
    sa.Column("target", sa.String(200)),
    sa.Column("details", sa.JSON),
    sa.Column("at", TS, nullable=False),
    sa.Index("ix_audit_log_district", "district_id", "id"),
)
