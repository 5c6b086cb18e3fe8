"""Store set-up: URLs, migrations, and the revision the code expects."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from rostersync.errors import ConfigError
from rostersync.store import db


def test_head_revision_constant_matches_the_migrations() -> None:
    engine = sa.create_engine("sqlite://")
    scripts = ScriptDirectory.from_config(db.alembic_config(engine))
    assert scripts.get_current_head() == db.HEAD_REVISION


def test_migrate_is_idempotent_and_creates_every_table(store: sa.Engine) -> None:
    db.migrate(store)
    assert db.current_revision(store) == db.HEAD_REVISION
    with store.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
        assert {
            "people",
            "sections",
            "enrollments",
            "id_map",
            "snapshots",
            "runs",
            "changes",
            "sightings",
            "groups",
            "group_members",
        } <= tables
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM section_teachers").scalar() == 0


def test_url_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROSTERSYNC_DATABASE_URL", raising=False)
    assert db.resolve_url() == db.DEFAULT_URL
    monkeypatch.setenv("ROSTERSYNC_DATABASE_URL", "postgresql://u@h/d")
    assert db.resolve_url() == "postgresql+psycopg://u@h/d"
    assert db.resolve_url("sqlite:///x.db") == "sqlite:///x.db"


def test_unsupported_or_malformed_urls_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="Unsupported database"):
        db.make_engine("mysql://root@localhost/x")
    with pytest.raises(ConfigError, match="not valid"):
        db.make_engine("not a url")


def test_sqlite_readers_do_not_wait_for_a_writer(tmp_path: object) -> None:
    """A long write transaction must not block reads through engine.connect()."""
    import time

    engine = db.make_engine(f"sqlite:///{tmp_path}/lock.sqlite")
    db.migrate(engine)
    with engine.begin() as writer:
        writer.exec_driver_sql(
            "INSERT INTO districts (name, created_at) VALUES ('d', '2026-01-01 00:00:00')"
        )
        started = time.monotonic()
        with engine.connect() as reader:
            count = reader.exec_driver_sql("SELECT COUNT(*) FROM districts").scalar()
        assert count == 0  # the writer has not committed
        assert time.monotonic() - started < 5
    with engine.connect() as reader:
        assert reader.exec_driver_sql("SELECT COUNT(*) FROM districts").scalar() == 1
