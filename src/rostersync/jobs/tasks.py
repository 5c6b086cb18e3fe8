"""The job function: execute a queued run through the sync engine, in either execution mode.

The embedded worker threads and the Procrastinate task both call :func:`execute_run`; neither
knows anything about syncing beyond it. After every run the source's failure streak is updated:
``FAILING_AFTER`` failed runs in a row mark the source ``failing``, and a success clears it.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from types import TracebackType

import sqlalchemy as sa

from rostersync.errors import NotFound
from rostersync.store.schema import jobs, runs, sources
from rostersync.sync import engine as sync_engine

logger = logging.getLogger(__name__)

#: Failed runs in a row after which a source is marked ``failing``.
FAILING_AFTER = 3
#: Seconds between two heartbeats of a running job.
HEARTBEAT_SECONDS = 5.0
#: The error of a run whose worker stopped without finishing it.
ABANDONED = (
    "abandoned: the worker stopped while running this sync (it was killed, or lost its "
    "database connection). Nothing was changed; the next run starts afresh."
)


def _now() -> datetime:
    return datetime.now(UTC)


class Heartbeat:
    """A side thread, with its own connections, that shows a running job is alive.

    Every ``interval`` seconds it stamps the embedded job row (when there is one) and writes the
    counts read so far to the run while the run is still fetching — the engine stores the
    counts of the later stages itself.
    """

    def __init__(self, engine: sa.Engine, run_id: int, job_id: int | None, interval: float):
        self.engine = engine
        self.run_id = run_id
        self.job_id = job_id
        self.interval = interval
        self._counts: dict[str, int] = {}
        self._written: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"heartbeat-run-{run_id}", daemon=True
        )

    def fetched(self, what: str, count: int) -> None:
        """A connector's progress callback: remember the count for the next beat."""
        self._counts[what] = count

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except sa.exc.SQLAlchemyError:
                logger.warning("Heartbeat of run %s could not be written; retrying.", self.run_id)

    def beat(self) -> None:
        counts = dict(self._counts)
        with self.engine.begin() as conn:
            if self.job_id is not None:
                conn.execute(
                    jobs.update()
                    .where(jobs.c.id == self.job_id, jobs.c.status == "running")
                    .values(heartbeat_at=_now())
                )
            if counts != self._written:
                conn.execute(
                    runs.update()
                    .where(runs.c.id == self.run_id, runs.c.stage == "fetch")
                    .values(counts=counts)
                )
                self._written = counts


def execute_run(
    engine: sa.Engine,
    run_id: int,
    *,
    job_id: int | None = None,
    heartbeat: float = HEARTBEAT_SECONDS,
    failing_after: int = FAILING_AFTER,
) -> sync_engine.RunResult:
    """Run a queued run: mark it running, fetch the source's feed and process it in the engine.

    A run that is no longer queued (abandoned by a sweep, say) is left as it is. Errors of the
    run are recorded on it by the engine and never raised.
    """
    with engine.begin() as conn:
        row = conn.execute(
            sa.select(runs.c.source_id, runs.c.status).where(runs.c.id == run_id)
        ).first()
        if row is None:
            raise NotFound(f"There is no run {run_id}.")
        if row.status != "queued":
            logger.warning("Run %s is %s, not queued; not running it.", run_id, row.status)
            return sync_engine.RunResult(run_id=run_id, status=str(row.status))
        conn.execute(
            runs.update()
            .where(runs.c.id == run_id)
            .values(status="running", stage="fetch", started_at=_now(), counts={})
        )
    logger.info("Run %s of source %s started.", run_id, row.source_id)
    started = time.monotonic()
    with Heartbeat(engine, run_id, job_id, heartbeat) as beat:
        result = sync_engine.execute(engine, run_id, fetch_progress=beat.fetched)
    logger.info(
        "Run %s of source %s ended as %s in %.1f s.",
        run_id,
        row.source_id,
        result.status,
        time.monotonic() - started,
    )
    record_outcome(engine, row.source_id, failing_after=failing_after)
    return result


def abandon(conn: sa.Connection, run_id: int) -> bool:
    """Mark a run whose worker stopped as failed; True if it was still queued or running."""
    result = conn.execute(
        runs.update()
        .where(runs.c.id == run_id, runs.c.status.in_(("queued", "running")))
        .values(status="failed", stage="done", finished_at=_now(), error=ABANDONED)
    )
    return bool(result.rowcount)


def record_outcome(engine: sa.Engine, source_id: int, *, failing_after: int = FAILING_AFTER) -> str:
    """Update the source's status from its latest finished runs and return it.

    Only runs that succeeded or failed count: a held run waits for an admin, and dry runs and
    skipped windows say nothing about the source's health.
    """
    with engine.begin() as conn:
        latest = [
            str(status)
            for status in conn.execute(
                sa.select(runs.c.status)
                .where(runs.c.source_id == source_id, runs.c.status.in_(("succeeded", "failed")))
                .order_by(runs.c.id.desc())
                .limit(failing_after)
            ).scalars()
        ]
        current = conn.execute(
            sa.select(sources.c.status).where(sources.c.id == source_id)
        ).scalar_one()
        status = current
        if len(latest) == failing_after and all(s == "failed" for s in latest):
            status = "failing"
        elif latest and latest[0] == "succeeded" and current == "failing":
            status = "active"
        if status != current:
            conn.execute(sources.update().where(sources.c.id == source_id).values(status=status))
            if status == "failing":
                logger.warning(
                    "Source %s failed %s runs in a row; marked failing.", source_id, failing_after
                )
            else:
                logger.info("Source %s succeeded again; no longer failing.", source_id)
        return str(status)
