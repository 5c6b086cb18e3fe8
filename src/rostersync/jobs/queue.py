"""Queue a run of a source — Sync Now or a scheduled window — on the store's execution mode.

A queued run is a row of ``runs`` with status ``queued``, its trigger and who asked, committed
together with its job. A source has at most one queued run (a partial unique index on ``runs``),
so asking again while one waits returns the waiting run instead of queueing another.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa

from rostersync.errors import ConfigError, NotFound, RosterError
from rostersync.store.schema import runs, sources

logger = logging.getLogger(__name__)

Mode = Literal["embedded", "procrastinate"]


def mode_of(engine: sa.Engine) -> Mode:
    """Procrastinate on PostgreSQL, the embedded queue otherwise; ``ROSTERSYNC_QUEUE`` overrides."""
    chosen = os.environ.get("ROSTERSYNC_QUEUE", "").strip().lower()
    if chosen == "embedded":
        return "embedded"
    if chosen and chosen != "procrastinate":
        raise ConfigError(
            f"ROSTERSYNC_QUEUE={chosen!r} is not a queue: use 'embedded' or 'procrastinate'."
        )
    if engine.dialect.name == "postgresql":
        return "procrastinate"
    if chosen == "procrastinate":
        raise ConfigError("Procrastinate needs PostgreSQL; point ROSTERSYNC_DATABASE_URL at it.")
    return "embedded"


@dataclass(frozen=True)
class Queued:
    run_id: int
    #: False when the source already had a run waiting and that one is returned.
    created: bool

    def as_dict(self) -> dict[str, object]:
        return {"run": self.run_id, "queued": self.created, "status": "queued"}


def source_id(conn: sa.Connection, name: str) -> int:
    found = conn.execute(sa.select(sources.c.id).where(sources.c.name == name)).scalar()
    if found is None:
        raise NotFound(f"There is no source named {name!r}. `rostersync source list` shows them.")
    return int(found)


def request_run(
    engine: sa.Engine,
    source: str,
    *,
    trigger: str = "sync-now",
    requested_by: str | None = None,
    mode: Mode | None = None,
) -> Queued:
    """Queue a run of the source named ``source`` now, or return the one already waiting."""
    mode = mode or mode_of(engine)
    with engine.begin() as conn:
        return enqueue(conn, source_id(conn, source), trigger, requested_by, mode)


def waiting_run(conn: sa.Connection, source_id: int) -> int | None:
    found = conn.execute(
        sa.select(runs.c.id).where(runs.c.source_id == source_id, runs.c.status == "queued")
    ).scalar()
    return None if found is None else int(found)


def enqueue(
    conn: sa.Connection, source_id: int, trigger: str, requested_by: str | None, mode: Mode
) -> Queued:
    """Queue a run in the caller's transaction (see :func:`request_run`)."""
    for _ in range(5):
        waiting = waiting_run(conn, source_id)
        if waiting is not None:
            return Queued(waiting, created=False)
        try:
            with conn.begin_nested():
                run_id = _insert_run(conn, source_id, trigger, requested_by)
                if mode == "procrastinate":
                    from rostersync.jobs import distributed

                    distributed.defer(conn, source_id, run_id)
                else:
                    from rostersync.jobs import embedded

                    embedded.add_job(conn, source_id, run_id)
        except sa.exc.IntegrityError:
            continue  # a run of the source was queued meanwhile: return that one
        except Exception as exc:
            if mode == "procrastinate" and _already_enqueued(exc):
                continue  # Procrastinate's queueing lock: a job of the source is waiting
            raise
        logger.info("Run %s of source %s queued (%s).", run_id, source_id, trigger)
        return Queued(run_id, created=True)
    raise RosterError(
        f"Could not queue a run of source {source_id}: it kept changing. Try again in a moment."
    )


def _already_enqueued(exc: Exception) -> bool:
    from procrastinate.exceptions import AlreadyEnqueued

    return isinstance(exc, AlreadyEnqueued)


def _insert_run(conn: sa.Connection, source_id: int, trigger: str, requested_by: str | None) -> int:
    # started_at holds the time it was queued until a worker starts it.
    result = conn.execute(
        runs.insert().values(
            source_id=source_id,
            trigger=trigger,
            requested_by=requested_by,
            status="queued",
            started_at=datetime.now(UTC),
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


TERMINAL = ("succeeded", "failed", "held", "dry-run", "discarded", "skipped")


def wait_for(
    engine: sa.Engine,
    run_id: int,
    *,
    progress: Callable[[str, str | None, dict[str, int]], None] = lambda *_: None,
    poll: float = 0.5,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Follow a queued run until it ends; ``progress(status, stage, counts)`` on each change.
    Returns the run's row; raises TimeoutError after ``timeout`` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    seen: tuple[str, str | None, str] | None = None
    while True:
        with engine.connect() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
        if row is None:
            raise NotFound(f"There is no run {run_id}.")
        state = (str(row.status), row.stage, repr(row.counts))
        if state != seen:
            seen = state
            progress(str(row.status), row.stage, dict(row.counts or {}))
        if row.status in TERMINAL:
            return dict(row._mapping)
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"Run {run_id} is still {row.status} after {timeout} s.")
        time.sleep(poll)
