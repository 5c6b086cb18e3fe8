"""The embedded execution mode: a queue in the store's ``jobs`` table and a pool of worker threads.

Nothing to install: it runs on SQLite (or PostgreSQL with ``ROSTERSYNC_QUEUE=embedded``) inside
``rostersync scheduler``. A claim is atomic — on SQLite inside the ``BEGIN IMMEDIATE`` every write
transaction of the store takes, on PostgreSQL with ``FOR UPDATE SKIP LOCKED`` — and picks the
oldest queued job of a source that has no running job; a partial unique index on running jobs is
the backstop. Each running job gets a heartbeat from a side thread; the sweep marks a job whose
heartbeat is older than the timeout, and its run, as abandoned.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from rostersync.jobs import tasks
from rostersync.store.schema import jobs

logger = logging.getLogger(__name__)

#: Seconds after its last heartbeat when a running job counts as abandoned. On SQLite a heartbeat
#: waits while another run holds the write lock for its apply, so this must exceed the longest
#: apply; jobs of the sweeping process itself are never abandoned.
ABANDON_AFTER = 120.0


def _now() -> datetime:
    return datetime.now(UTC)


def add_job(conn: sa.Connection, source_id: int, run_id: int) -> None:
    """Queue the job of a run, in the caller's transaction."""
    conn.execute(
        jobs.insert().values(source_id=source_id, run_id=run_id, status="queued", queued_at=_now())
    )


@dataclass(frozen=True)
class Claim:
    job_id: int
    run_id: int
    source_id: int


def claim(engine: sa.Engine, worker: str) -> Claim | None:
    """Take the oldest queued job of a source with no running job, or None."""
    running = sa.select(jobs.c.source_id).where(jobs.c.status == "running")
    query = (
        sa.select(jobs.c.id, jobs.c.run_id, jobs.c.source_id)
        .where(jobs.c.status == "queued", jobs.c.source_id.not_in(running))
        .order_by(jobs.c.id)
        .limit(1)
    )
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            row = conn.execute(query).first()
            if row is None:
                return None
            now = _now()
            conn.execute(
                jobs.update()
                .where(jobs.c.id == row.id)
                .values(status="running", started_at=now, heartbeat_at=now, worker=worker)
            )
            return Claim(job_id=int(row.id), run_id=int(row.run_id), source_id=int(row.source_id))
    except sa.exc.IntegrityError:
        # Another worker started a job of the same source meanwhile; try again later.
        return None


def finish(engine: sa.Engine, job_id: int, status: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            jobs.update()
            .where(jobs.c.id == job_id, jobs.c.status == "running")
            .values(status=status, finished_at=_now())
        )


def run_one(engine: sa.Engine, worker: str = "inline", **options: float) -> int | None:
    """Claim and execute one job in this thread; return its run id, or None if none waits."""
    taken = claim(engine, worker)
    if taken is None:
        return None
    _execute(engine, taken, **options)
    return taken.run_id


def _execute(
    engine: sa.Engine,
    taken: Claim,
    heartbeat: float = tasks.HEARTBEAT_SECONDS,
    failing_after: float = tasks.FAILING_AFTER,
) -> None:
    status = "failed"
    try:
        result = tasks.execute_run(
            engine,
            taken.run_id,
            job_id=taken.job_id,
            heartbeat=heartbeat,
            failing_after=int(failing_after),
        )
        status = "done" if result.status != "failed" else "failed"
    except Exception:
        logger.exception("Job %s (run %s) failed outside its run.", taken.job_id, taken.run_id)
        with engine.begin() as conn:
            tasks.abandon(conn, taken.run_id)
    finally:
        finish(engine, taken.job_id, status)


def sweep(
    engine: sa.Engine, abandon_after: float = ABANDON_AFTER, *, spare: str | None = None
) -> list[int]:
    """Mark running jobs whose heartbeat is older than ``abandon_after`` seconds — and their
    runs — as failed; jobs whose worker name starts with ``spare`` (this process) are left.
    Returns the ids of the abandoned runs."""
    limit = _now() - timedelta(seconds=abandon_after)
    abandoned: list[int] = []
    with engine.begin() as conn:
        query = sa.select(jobs.c.id, jobs.c.run_id, jobs.c.source_id).where(
            jobs.c.status == "running", jobs.c.heartbeat_at < limit
        )
        if spare:
            query = query.where(sa.not_(jobs.c.worker.startswith(spare, autoescape=True)))
        stale = conn.execute(query).all()
        for row in stale:
            conn.execute(
                jobs.update().where(jobs.c.id == row.id).values(status="failed", finished_at=_now())
            )
            if tasks.abandon(conn, row.run_id):
                abandoned.append(int(row.run_id))
                logger.warning(
                    "Run %s of source %s abandoned: no heartbeat for %s s.",
                    row.run_id,
                    row.source_id,
                    abandon_after,
                )
    for row in stale:
        tasks.record_outcome(engine, int(row.source_id))
    return abandoned


def process_name() -> str:
    """A name for this process's workers: host, pid and a random tag (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class WorkerPool:
    """Worker threads that claim and execute queued jobs until stopped.

    Runs of different sources go in parallel, one thread each; runs of one source never do.
    """

    def __init__(
        self,
        engine: sa.Engine,
        workers: int = 2,
        *,
        poll: float = 2.0,
        heartbeat: float = tasks.HEARTBEAT_SECONDS,
        abandon_after: float = ABANDON_AFTER,
        failing_after: int = tasks.FAILING_AFTER,
    ) -> None:
        self.engine = engine
        self.name = process_name()
        self.poll = poll
        self.heartbeat = heartbeat
        self.abandon_after = abandon_after
        self.failing_after = failing_after
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(n,), name=f"worker-{n}", daemon=True)
            for n in range(workers)
        ]

    def start(self) -> WorkerPool:
        logger.info("Starting %s worker thread(s) as %s.", len(self._threads), self.name)
        for thread in self._threads:
            thread.start()
        return self

    def wake(self) -> None:
        """Look for work now rather than at the next poll."""
        self._wake.set()

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking jobs and wait for the running ones to end."""
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)

    def sweep(self) -> list[int]:
        return sweep(self.engine, self.abandon_after, spare=self.name)

    def _loop(self, number: int) -> None:
        worker = f"{self.name}/{number}"
        while not self._stop.is_set():
            try:
                taken = claim(self.engine, worker)
            except sa.exc.OperationalError:
                logger.warning("Worker %s could not reach the store; retrying.", worker)
                taken = None
            if taken is None:
                self._wake.wait(self.poll)
                self._wake.clear()
                continue
            # Another thread may find the next job of a different source.
            self._wake.set()
            _execute(self.engine, taken, heartbeat=self.heartbeat, failing_after=self.failing_after)
