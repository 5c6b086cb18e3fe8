"""The distributed execution mode: Procrastinate on the store's PostgreSQL database.

``rostersync worker`` runs a Procrastinate worker on any number of machines; every run is one job
of the task :data:`TASK`, deferred on the caller's own connection so that the run row and its job
commit together. Each job carries ``lock = "source:<id>"`` (one run of a source at a time) and
``queueing_lock = "source:<id>"`` (at most one waiting). Procrastinate's tables live in the same
schema as ours, created by our migrations (``store/migrations/versions/0002_jobs.py``).

A worker that dies stops sending Procrastinate's worker heartbeat; :func:`sweep`, run by every
worker and scheduler, finds its job with Procrastinate's own stalled-job query, marks the run
abandoned and fails the job, which releases the source's lock.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import procrastinate
import sqlalchemy as sa
from procrastinate import exceptions as procrastinate_errors
from procrastinate import sql as procrastinate_sql

from rostersync.jobs import tasks

logger = logging.getLogger(__name__)

TASK = "rostersync.run"
#: Seconds after a worker's last heartbeat when its running job counts as abandoned.
ABANDON_AFTER = 60.0

# The store the tasks of this process work on; set by :func:`make_app`.
_engines: dict[str, sa.Engine] = {}
_options: dict[str, float] = {}


def run_task(run_id: int) -> None:
    """Execute one queued run (Procrastinate runs this synchronous task in a thread)."""
    engine = _engines["store"]
    try:
        tasks.execute_run(
            engine,
            run_id,
            heartbeat=_options.get("heartbeat", tasks.HEARTBEAT_SECONDS),
            failing_after=int(_options.get("failing_after", tasks.FAILING_AFTER)),
        )
    except Exception:
        logger.exception("Run %s failed outside its run.", run_id)
        with engine.begin() as conn:
            tasks.abandon(conn, run_id)
        raise


def conninfo(engine: sa.Engine) -> str:
    """A libpq URL for Procrastinate's own connections, from the store's SQLAlchemy URL (its
    ``options``, such as a search_path, included)."""
    url = engine.url.set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def make_app(engine: sa.Engine, **options: float) -> procrastinate.App:
    """A Procrastinate app on the store's database, with the rostersync task registered."""
    _engines["store"] = engine
    _options.update(options)
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=conninfo(engine)),
    )
    return _register(app)


def _register(app: procrastinate.App) -> procrastinate.App:
    app.task(name=TASK, pass_context=False)(run_task)
    return app


def _lock(source_id: int) -> str:
    return f"source:{source_id}"


def defer(conn: sa.Connection, source_id: int, run_id: int) -> None:
    """Defer the job of a run on the caller's connection and transaction.

    Raises ``procrastinate.exceptions.AlreadyEnqueued`` when a job of the source is waiting.
    """
    app = _deferring_app(conn.engine)
    driver = conn.connection.driver_connection
    app.configure_task(
        TASK, lock=_lock(source_id), queueing_lock=_lock(source_id), connection=driver
    ).defer(run_id=run_id)


_deferring: dict[str, procrastinate.App] = {}
_deferring_guard = threading.Lock()


def _deferring_app(engine: sa.Engine) -> procrastinate.App:
    """An app used only to defer on a given connection: it never opens a pool of its own."""
    key = str(engine.url)
    with _deferring_guard:
        if key not in _deferring:
            app = procrastinate.App(
                connector=procrastinate.PsycopgConnector(conninfo=conninfo(engine))
            )
            _deferring[key] = _register(app)
        return _deferring[key]


AlreadyEnqueued = procrastinate_errors.AlreadyEnqueued


def sweep(engine: sa.Engine, abandon_after: float = ABANDON_AFTER) -> list[int]:
    """Fail the jobs of workers whose heartbeat is older than ``abandon_after`` seconds and mark
    their runs abandoned; returns the ids of those runs. Safe to run from many processes."""
    query = procrastinate_sql.queries["select_stalled_jobs_by_heartbeat"]
    params: dict[str, Any] = {
        "queue": None,
        "task_name": TASK,
        "seconds_since_heartbeat": abandon_after,
    }
    with engine.connect() as conn:
        stalled = conn.exec_driver_sql(query, params).mappings().all()
    abandoned: list[int] = []
    for job in stalled:
        run_id = int(job["args"]["run_id"])
        with engine.begin() as conn:
            status = conn.exec_driver_sql(
                "SELECT status FROM procrastinate_jobs WHERE id = %(id)s FOR UPDATE",
                {"id": job["id"]},
            ).scalar()
            if status != "doing":
                continue  # another sweep got there first
            conn.exec_driver_sql(
                "SELECT procrastinate_finish_job_v1(%(id)s, 'failed', false)", {"id": job["id"]}
            )
            source_id = conn.exec_driver_sql(
                "SELECT source_id FROM runs WHERE id = %(id)s", {"id": run_id}
            ).scalar()
            if tasks.abandon(conn, run_id):
                abandoned.append(run_id)
                logger.warning(
                    "Run %s abandoned: its worker sent no heartbeat for %s s.",
                    run_id,
                    abandon_after,
                )
        if source_id is not None:
            tasks.record_outcome(engine, int(source_id))
    return abandoned


def run_worker(
    engine: sa.Engine,
    *,
    concurrency: int = 2,
    heartbeat: float = tasks.HEARTBEAT_SECONDS,
    abandon_after: float = ABANDON_AFTER,
    failing_after: int = tasks.FAILING_AFTER,
) -> None:
    """Run a Procrastinate worker until SIGINT or SIGTERM, sweeping abandoned runs meanwhile."""
    app = make_app(engine, heartbeat=heartbeat, failing_after=failing_after)
    stop = threading.Event()

    def sweeper() -> None:
        while not stop.wait(heartbeat):
            try:
                sweep(engine, abandon_after)
            except sa.exc.SQLAlchemyError:
                logger.warning("The sweep for abandoned runs failed; retrying.", exc_info=True)

    thread = threading.Thread(target=sweeper, name="sweeper", daemon=True)
    thread.start()
    try:
        app.run_worker(
            concurrency=concurrency,
            update_heartbeat_interval=heartbeat,
            stalled_worker_timeout=abandon_after,
            fetch_job_polling_interval=heartbeat,
        )
    finally:
        stop.set()
        thread.join(timeout=heartbeat + 5)
