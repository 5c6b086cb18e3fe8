"""The embedded queue and worker pool: Sync Now, parallelism, failures and abandoned runs."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from rostersync import service
from rostersync.jobs import embedded, queue, schedules, tasks
from rostersync.store.schema import jobs, runs, sources
from tests.jobs.conftest import AddSource, run_rows
from tests.sync.helpers import ROSTER_TABLES

pytestmark = pytest.mark.usefixtures("embedded")


def dump(engine: sa.Engine) -> dict[str, list[tuple[object, ...]]]:
    """Every roster row (the jobs' own tables aside), for before/after equality."""
    skip = {"jobs", "schedules", "schedule_windows", "sources"}
    with engine.connect() as conn:
        return {
            t.name: sorted((tuple(r) for r in conn.execute(sa.select(t))), key=repr)
            for t in ROSTER_TABLES
            if t.name not in skip
        }


def wait_until_done(engine: sa.Engine, run_ids: list[int], timeout: float = 20) -> None:
    for run_id in run_ids:
        queue.wait_for(engine, run_id, poll=0.05, timeout=timeout)


def intervals(engine: sa.Engine, source_id: int) -> list[tuple[datetime, datetime]]:
    return [(r["started_at"], r["finished_at"]) for r in run_rows(engine, source_id)]  # type: ignore[misc]


def test_sync_now_queues_one_run_and_returns_the_waiting_one(
    district: sa.Engine, add_source: AddSource
) -> None:
    ident = add_source("sis")
    first = queue.request_run(district, "sis", requested_by="admin@lincoln.example")
    again = queue.request_run(district, "sis", requested_by="teacher@lincoln.example")
    assert first.created and not again.created
    assert again.run_id == first.run_id
    [run] = run_rows(district, ident)
    assert (run["status"], run["trigger"], run["requested_by"]) == (
        "queued",
        "sync-now",
        "admin@lincoln.example",
    )

    assert embedded.run_one(district) == first.run_id
    assert embedded.run_one(district) is None
    assert run_rows(district, ident)[0]["status"] == "succeeded"
    later = queue.request_run(district, "sis")
    assert later.created and later.run_id != first.run_id


def test_the_pool_runs_sources_in_parallel_and_one_source_at_a_time(
    district: sa.Engine, add_source: AddSource
) -> None:
    sis = add_source("sis", seconds=0.8)
    clubs = add_source("clubs", seconds=0.8)
    pool = embedded.WorkerPool(district, 2, poll=0.05, heartbeat=0.2).start()
    try:
        started = time.monotonic()
        first = queue.request_run(district, "sis")
        other = queue.request_run(district, "clubs")
        pool.wake()
        time.sleep(0.3)
        burst = {queue.request_run(district, "sis").run_id for _ in range(10)}
        assert len(burst) == 1 and first.run_id not in burst
        wait_until_done(district, [first.run_id, other.run_id, *burst])
        elapsed = time.monotonic() - started
    finally:
        pool.stop()
    # Two 0.8 s runs of different sources overlapped; two of one source did not.
    (a_start, a_end), (b_start, _) = intervals(district, sis)
    assert a_end <= b_start
    ((c_start, c_end),) = intervals(district, clubs)
    assert c_start < a_end and a_start < c_end
    assert elapsed < 3 * 0.8 + 1.5
    assert all(r["status"] == "succeeded" for r in run_rows(district))


def test_three_failures_in_a_row_mark_the_source_failing_and_a_success_clears_it(
    district: sa.Engine, add_source: AddSource
) -> None:
    ident = add_source("sis", fail=1)

    def sync_now() -> dict[str, object]:
        run_id = queue.request_run(district, "sis").run_id
        embedded.run_one(district)
        return run_rows(district, ident)[-1] | {"id": run_id}

    for attempt in range(1, 4):
        run = sync_now()
        assert run["status"] == "failed"
        assert "Renew the token" in str(run["error"])
        health = schedules.describe(district)[ident]["health"]
        assert health == ("failing" if attempt == 3 else "failed")
    with district.connect() as conn:
        assert conn.execute(sa.select(sources.c.status).where(sources.c.id == ident)).scalar() == (
            "failing"
        )

    service.update_source(district, "sis", {"fail": "0"})
    assert sync_now()["status"] == "succeeded"
    assert schedules.describe(district)[ident]["health"] == "ok"
    assert [s["status"] for s in service.list_sources(district)] == ["active"]


def test_a_run_whose_worker_stopped_is_abandoned_and_the_next_one_completes(
    district: sa.Engine, add_source: AddSource
) -> None:
    ident = add_source("sis")
    queue.request_run(district, "sis")
    embedded.run_one(district)
    before = dump(district)

    service.update_source(district, "sis", {"students": "20"})
    stuck = queue.request_run(district, "sis").run_id
    # A worker of another process claims the run, starts it, and dies without a word.
    taken = embedded.claim(district, "elsewhere:4242:dead00/0")
    assert taken is not None and taken.run_id == stuck
    long_ago = datetime.now(UTC) - timedelta(minutes=10)
    with district.begin() as conn:
        conn.execute(runs.update().where(runs.c.id == stuck).values(status="running"))
        conn.execute(jobs.update().where(jobs.c.id == taken.job_id).values(heartbeat_at=long_ago))
    # While the run is abandoned, its source can be queued but not started.
    waiting = queue.request_run(district, "sis").run_id
    assert embedded.claim(district, "here") is None

    assert embedded.sweep(district, 60, spare="elsewhere:4242:") == []
    assert embedded.sweep(district, 60) == [stuck]
    run = next(r for r in run_rows(district, ident) if r["id"] == stuck)
    assert run["status"] == "failed"
    assert str(run["error"]).startswith("abandoned: the worker stopped")
    assert dump(district) == before

    assert embedded.run_one(district) == waiting
    assert run_rows(district, ident)[-1]["status"] == "succeeded"
    assert dump(district) != before


def test_a_running_job_keeps_its_heartbeat(district: sa.Engine, add_source: AddSource) -> None:
    add_source("sis", seconds=0.6)
    run_id = queue.request_run(district, "sis").run_id
    embedded.run_one(district, heartbeat=0.1)
    with district.connect() as conn:
        job = conn.execute(sa.select(jobs).where(jobs.c.run_id == run_id)).one()
    assert job.status == "done"
    assert job.heartbeat_at > job.started_at


def test_failing_after_is_configurable(district: sa.Engine, add_source: AddSource) -> None:
    ident = add_source("sis", fail=1)
    queue.request_run(district, "sis")
    embedded.run_one(district)
    assert tasks.record_outcome(district, ident, failing_after=1) == "failing"
