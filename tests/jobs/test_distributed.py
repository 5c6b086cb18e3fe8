"""Procrastinate on PostgreSQL: real ``rostersync worker`` and ``rostersync scheduler`` processes.

Each test gets a schema of its own; Procrastinate's tables are created in it by our migrations.
The source kind ``slow`` (tests/jobs/slow_source.py) reaches the workers via ROSTERSYNC_PLUGINS.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from rostersync import cli, service
from rostersync.jobs import queue, schedules
from rostersync.store.schema import schedule_windows
from rostersync.store.schema import schedules as schedules_table
from rostersync.sync import engine as sync_engine
from tests.conftest import _postgres_store
from tests.jobs.conftest import DISTRICT, run_rows
from tests.jobs.slow_source import KIND
from tests.jobs.test_embedded import dump, intervals

ROOT = Path(__file__).resolve().parents[2]

Spawn = Callable[..., list[subprocess.Popen[bytes]]]


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from _postgres_store()


@pytest.fixture
def pg(pg_url: str) -> Iterator[sa.Engine]:
    engine = service.open_store(pg_url)
    service.add_district(engine, DISTRICT, "America/New_York")
    yield engine
    engine.dispose()


@pytest.fixture
def spawn(pg_url: str, tmp_path: Path) -> Iterator[Spawn]:
    """Start ``rostersync`` processes on the test's store; all are stopped at the end."""
    started: list[subprocess.Popen[bytes]] = []
    env = {
        **os.environ,
        "ROSTERSYNC_DATABASE_URL": pg_url,
        "ROSTERSYNC_PLUGINS": "tests.jobs.slow_source",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("ROSTERSYNC_QUEUE", None)

    def start(
        count: int, *args: str, extra_env: dict[str, str] | None = None
    ) -> list[subprocess.Popen[bytes]]:
        batch = []
        for _ in range(count):
            log = (tmp_path / f"{args[0]}-{len(started)}.log").open("wb")
            process = subprocess.Popen(
                [sys.executable, "-m", "rostersync.cli", "-v", *args],
                cwd=ROOT,
                env={**env, **(extra_env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            started.append(process)
            batch.append(process)
        return batch

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in started:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def workers(spawn: Spawn, engine: sa.Engine, count: int = 2) -> list[subprocess.Popen[bytes]]:
    """``count`` workers, each running one sync at a time, once all are registered."""
    processes = spawn(
        count, "worker", "--concurrency", "1", "--heartbeat", "0.5", "--abandon-after", "3"
    )
    eventually(lambda: registered(engine) >= count, timeout=30, what="workers to register")
    return processes


def registered(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM procrastinate_workers").scalar_one())


def eventually(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out waiting for {what}.")
        time.sleep(0.05)


def add_source(engine: sa.Engine, name: str, **settings: object) -> int:
    config = {key: str(value) for key, value in settings.items()}
    return service.add_source(engine, name, DISTRICT, KIND, config)


def wait_done(engine: sa.Engine, run_ids: set[int], timeout: float = 30) -> None:
    for run_id in sorted(run_ids):
        queue.wait_for(engine, run_id, poll=0.05, timeout=timeout)


def test_procrastinate_lives_in_the_store_schema(pg: sa.Engine) -> None:
    with pg.connect() as conn:
        schema = conn.exec_driver_sql("SELECT current_schema()").scalar()
        found = (
            conn.exec_driver_sql(
                "SELECT table_schema FROM information_schema.tables "
                "WHERE table_name = 'procrastinate_jobs'"
            )
            .scalars()
            .all()
        )
    assert schema in found and "public" not in found
    assert queue.mode_of(pg) == "procrastinate"


def test_a_burst_of_sync_now_runs_one_at_a_time_with_one_waiting(
    pg: sa.Engine, spawn: Spawn
) -> None:
    ident = add_source(pg, "sis", seconds=1.0)
    workers(spawn, pg)

    first = queue.request_run(pg, "sis", requested_by="admin@lincoln.example")
    ids = {first.run_id}
    ids |= {queue.request_run(pg, "sis", requested_by="rivera").run_id for _ in range(15)}
    result = CliRunner().invoke(
        cli.main,
        ["--database-url", pg.url.render_as_string(False), "sync", "sis", "--queue", "--json"],
    )
    assert result.exit_code == 0, result.output
    assert '"status": "queued"' in result.output
    assert len(ids) <= 2

    # While it runs, its stage is visible.
    eventually(lambda: run_rows(pg, ident)[0]["status"] == "running", timeout=10, what="start")
    assert run_rows(pg, ident)[0]["stage"] == "fetch"
    ids |= {row["id"] for row in run_rows(pg, ident)}  # type: ignore[misc]
    wait_done(pg, ids)

    rows = run_rows(pg, ident)
    assert len(rows) == len(ids) <= 3
    assert [r["status"] for r in rows] == ["succeeded"] * len(rows)
    assert rows[0]["requested_by"] == "admin@lincoln.example"
    spans = intervals(pg, ident)
    assert all(earlier[1] <= later[0] for earlier, later in itertools.pairwise(spans))


def test_two_sources_run_in_parallel_on_two_workers(pg: sa.Engine, spawn: Spawn) -> None:
    sis = add_source(pg, "sis", seconds=1.5)
    clubs = add_source(pg, "clubs", seconds=1.5)
    workers(spawn, pg)

    started = time.monotonic()
    ids = {queue.request_run(pg, "sis").run_id, queue.request_run(pg, "clubs").run_id}
    wait_done(pg, ids)
    elapsed = time.monotonic() - started

    [(a_start, a_end)], [(b_start, b_end)] = intervals(pg, sis), intervals(pg, clubs)
    assert a_start < b_end and b_start < a_end
    assert elapsed < 2 * 1.5 + 0.5


def test_two_schedulers_queue_a_window_once(pg: sa.Engine, spawn: Spawn) -> None:
    names = [f"school-{n}" for n in range(6)]
    for name in names:
        add_source(pg, name)
        schedules.set_schedule(pg, name, "every 1h")
    # Make the last full hour's window due right away, for both schedulers at once.
    with pg.begin() as conn:
        conn.execute(
            schedules_table.update().values(last_window_at=datetime.now(UTC) - timedelta(hours=2))
        )
    spawn(2, "scheduler", "--interval", "0.2")
    workers(spawn, pg)

    eventually(lambda: len(run_rows(pg)) >= len(names), timeout=20, what="scheduled runs")
    time.sleep(1.0)  # both schedulers tick several more times
    wait_done(pg, {r["id"] for r in run_rows(pg)})  # type: ignore[misc]

    rows = run_rows(pg)
    assert len(rows) == len(names)
    assert {(r["trigger"], r["status"]) for r in rows} == {("schedule", "succeeded")}
    with pg.connect() as conn:
        windows = conn.execute(sa.select(schedule_windows)).all()
    assert len(windows) == len(names)
    assert len({w.window_at for w in windows}) == 1


def test_a_worker_killed_mid_run_leaves_the_store_unchanged_and_the_next_run_completes(
    pg: sa.Engine, spawn: Spawn, tmp_path: Path
) -> None:
    ident = add_source(pg, "sis")
    workers(spawn, pg)
    wait_done(pg, {queue.request_run(pg, "sis").run_id})
    before = dump(pg)

    markers = tmp_path / "markers"
    markers.mkdir()
    service.update_source(pg, "sis", {"students": "20", "seconds": "30", "marker": str(markers)})
    doomed = queue.request_run(pg, "sis").run_id
    eventually(lambda: any(markers.iterdir()), timeout=10, what="the slow fetch to start")
    pid = int(next(markers.iterdir()).name)
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()

    row = queue.wait_for(pg, doomed, poll=0.1, timeout=20)
    assert row["status"] == "failed"
    assert str(row["error"]).startswith("abandoned: the worker stopped")
    assert time.monotonic() - killed_at < 10
    assert dump(pg) == before

    service.update_source(pg, "sis", {"seconds": "0", "marker": ""})
    after = queue.request_run(pg, "sis").run_id
    assert queue.wait_for(pg, after, poll=0.1, timeout=20)["status"] == "succeeded"
    assert dump(pg) != before
    assert schedules.describe(pg)[ident]["health"] == "ok"


def test_a_worker_killed_mid_apply_leaves_the_store_unchanged(
    pg: sa.Engine, spawn: Spawn, tmp_path: Path
) -> None:
    """SIGKILL half-way through the apply transaction: nothing of the run is in the store."""
    add_source(pg, "sis")
    assert sync_engine.sync(pg, "sis").status == "succeeded"
    service.update_source(pg, "sis", {"students": "30"})
    before = dump(pg)

    markers = tmp_path / "applying"
    markers.mkdir()
    slow = spawn(
        1,
        "worker",
        "--concurrency",
        "1",
        "--heartbeat",
        "0.5",
        "--abandon-after",
        "3",
        extra_env={
            "ROSTERSYNC_TEST_APPLY_PAUSE": "60",
            "ROSTERSYNC_TEST_APPLY_MARKER": str(markers),
        },
    )[0]
    doomed = queue.request_run(pg, "sis").run_id
    eventually(lambda: any(markers.iterdir()), timeout=30, what="the apply to start")
    slow.kill()
    slow.wait(timeout=10)

    workers(spawn, pg)  # their sweep finds the run abandoned
    row = queue.wait_for(pg, doomed, poll=0.1, timeout=30)
    assert row["status"] == "failed"
    assert str(row["error"]).startswith("abandoned: the worker stopped")
    assert dump(pg) == before

    after = queue.request_run(pg, "sis").run_id
    assert queue.wait_for(pg, after, poll=0.1, timeout=30)["status"] == "succeeded"
    assert dump(pg) != before
