"""Database connections: URL resolution, engine set-up per dialect, and migrations."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from rostersync.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///rostersync.sqlite"
MIGRATIONS = Path(__file__).parent / "migrations"
#: The newest migration; a store at this revision needs no migration run (and no Alembic import).
HEAD_REVISION = "0004"


def resolve_url(url: str | None = None) -> str:
    """The database URL: the argument, else ROSTERSYNC_DATABASE_URL, else a local SQLite file."""
    url = url or os.environ.get("ROSTERSYNC_DATABASE_URL") or DEFAULT_URL
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str | None = None) -> sa.Engine:
    url = resolve_url(url)
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"The database URL {url!r} is not valid: {exc}.") from None
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    if parsed.get_backend_name() == "postgresql":
        # The web app serves requests from a thread pool of up to 40 threads: a pool that
        # small would close and reopen connections under load.
        return sa.create_engine(url, pool_pre_ping=True, pool_size=20, max_overflow=20)
    raise ConfigError(
        f"Unsupported database {parsed.get_backend_name()!r}: use SQLite or PostgreSQL."
    )


_DEFERRED = "rostersync.deferred"


class _SQLiteConnection(sa.Connection):
    """A connection whose implicit transactions (a read through ``engine.connect()``) begin
    deferred, while explicit ones (``engine.begin()``, ``conn.begin()``) take the write lock at
    once. Readers then never wait behind a sync that holds the lock for minutes, and a writer
    never fails half-way because another process wrote between its read and its write."""

    def _autobegin(self) -> None:
        self.info[_DEFERRED] = True
        try:
            super()._autobegin()
        finally:
            self.info.pop(_DEFERRED, None)


def _sqlite_engine(url: str) -> sa.Engine:
    database = sa.make_url(url).database
    sizes = {} if database in (None, "", ":memory:") else {"pool_size": 20, "max_overflow": 20}
    engine = sa.create_engine(url, connect_args={"timeout": 60}, **sizes)
    engine._connection_cls = _SQLiteConnection

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when a transaction begins (see
        # _SQLiteConnection for which transactions take the write lock at once).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA temp_store=MEMORY")
        cursor.execute("PRAGMA cache_size=-262144")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        deferred = connection.info.get(_DEFERRED, False)
        connection.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")

    return engine


def alembic_config(engine: sa.Engine) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def migrate(engine: sa.Engine) -> None:
    """Bring the database schema up to date (idempotent)."""
    if current_revision(engine) == HEAD_REVISION:
        return
    from alembic import command

    command.upgrade(alembic_config(engine), "head")


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def is_migrated(engine: sa.Engine) -> bool:
    with engine.connect() as conn:
        return sa.inspect(conn).has_table("runs")
