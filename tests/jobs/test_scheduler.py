"""The scheduler with an injected clock, on the embedded queue (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from rostersync.jobs import embedded, schedules, spec
from rostersync.jobs.scheduler import Decision, Scheduler
from rostersync.store.schema import jobs, schedule_windows
from tests.jobs.conftest import AddSource, run_rows

pytestmark = pytest.mark.usefixtures("embedded")

NY = spec.zone("America/New_York")


@dataclass
class Clock:
    at: datetime

    def __call__(self) -> datetime:
        return self.at

    def advance(self, **delta: float) -> datetime:
        self.at += timedelta(**delta)
        return self.at


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def local(window: datetime) -> str:
    return window.astimezone(NY).strftime("%Y-%m-%d %H:%M %Z")


def handled(engine: sa.Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(schedule_windows.c.window_at, schedule_windows.c.outcome).order_by(
                schedule_windows.c.window_at
            )
        ).all()
    return [(local(w if w.tzinfo else w.replace(tzinfo=UTC)), o) for w, o in rows]


def drive(scheduler: Scheduler, clock: Clock, until: datetime, step_minutes: float) -> None:
    """Tick every ``step_minutes`` of fake time, running whatever got queued after each tick."""
    while clock.at < until:
        clock.advance(minutes=step_minutes)
        if any(d.outcome == "queued" for d in scheduler.tick()):
            while embedded.run_one(scheduler.engine) is not None:
                pass


def test_a_schedule_fires_once_per_window(district: sa.Engine, add_source: AddSource) -> None:
    ident = add_source("sis")
    clock = Clock(utc(2027, 3, 10, 12))
    schedules.set_schedule(district, "sis", "nightly@02:30", now=clock())
    scheduler = Scheduler(district, now=clock)

    assert scheduler.tick() == []
    clock.at = utc(2027, 3, 11, 7, 29)  # 02:29 EST
    assert scheduler.tick() == []
    clock.advance(minutes=2)
    [decision] = scheduler.tick()
    assert (decision.outcome, local(decision.window_at)) == ("queued", "2027-03-11 02:30 EST")
    assert scheduler.tick() == []

    [run] = run_rows(district, ident)
    assert (run["id"], run["status"], run["trigger"]) == (decision.run_id, "queued", "schedule")
    assert embedded.run_one(district) == decision.run_id
    assert run_rows(district, ident)[0]["status"] == "succeeded"
    assert schedules.describe(district, now=clock())[ident]["next_run_at"] == utc(
        2027, 3, 12, 7, 30
    )


def test_spring_forward_runs_once_at_the_first_valid_time(
    district: sa.Engine, add_source: AddSource
) -> None:
    add_source("sis")
    clock = Clock(utc(2027, 3, 13, 12))
    schedules.set_schedule(district, "sis", "nightly@02:30", now=clock())
    drive(Scheduler(district, now=clock), clock, utc(2027, 3, 15, 12), step_minutes=15)

    assert handled(district) == [
        ("2027-03-14 03:00 EDT", "queued"),
        ("2027-03-15 02:30 EDT", "queued"),
    ]
    assert [r["status"] for r in run_rows(district)] == ["succeeded", "succeeded"]


def test_fall_back_runs_once(district: sa.Engine, add_source: AddSource) -> None:
    add_source("sis")
    clock = Clock(utc(2027, 11, 6, 12))
    schedules.set_schedule(district, "sis", "nightly@01:30", now=clock())
    drive(Scheduler(district, now=clock), clock, utc(2027, 11, 8, 12), step_minutes=15)

    assert handled(district) == [
        ("2027-11-07 01:30 EDT", "queued"),
        ("2027-11-08 01:30 EST", "queued"),
    ]
    assert len(run_rows(district)) == 2


def test_a_window_in_a_blackout_is_skipped_and_recorded(
    district: sa.Engine, add_source: AddSource
) -> None:
    ident = add_source("sis")
    clock = Clock(utc(2027, 6, 18, 12))
    schedules.set_schedule(district, "sis", "nightly@02:30", now=clock())
    schedules.add_blackouts(district, "sis", ["2027-06-20..2027-08-20"])
    assert schedules.describe(district, now=clock())[ident]["next_run_at"] == utc(
        2027, 6, 19, 6, 30
    )
    assert schedules.describe(district, now=utc(2027, 6, 19, 12))[ident]["next_run_at"] == utc(
        2027, 8, 21, 6, 30
    )

    scheduler = Scheduler(district, now=clock)
    drive(scheduler, clock, utc(2027, 6, 20, 12), step_minutes=60)
    assert handled(district) == [
        ("2027-06-19 02:30 EDT", "queued"),
        ("2027-06-20 02:30 EDT", "skipped"),
    ]
    queued, skipped = run_rows(district, ident)
    assert queued["status"] == "succeeded"
    assert skipped["status"] == "skipped"
    assert skipped["error"] == "skipped: the window falls in the blackout 2027-06-20..2027-08-20"
    with district.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar() == 1
    # A skipped window says nothing about the source's health.
    assert schedules.describe(district, now=clock())[ident]["health"] == "ok"


def test_pause_stops_windows_and_resume_does_not_catch_up(
    district: sa.Engine, add_source: AddSource
) -> None:
    ident = add_source("sis")
    clock = Clock(utc(2027, 1, 10, 12))
    schedules.set_schedule(district, "sis", "every 4h", now=clock())
    schedules.set_paused(district, "sis", True, now=clock())
    assert schedules.describe(district, now=clock())[ident] | {"last_run": None} == {
        "schedule": "every 4h",
        "paused": True,
        "blackouts": [],
        "next_run_at": None,
        "next_run_local": None,
        "health": "new",
        "last_run": None,
    }
    scheduler = Scheduler(district, now=clock)
    clock.advance(days=2)
    assert scheduler.tick() == []

    schedules.set_paused(district, "sis", False, now=clock())  # 2027-01-12 07:00 EST
    assert scheduler.tick() == []
    clock.advance(hours=1, minutes=1)
    [decision] = scheduler.tick()
    assert local(decision.window_at) == "2027-01-12 08:00 EST"


def test_missed_windows_collapse_into_one_run(district: sa.Engine, add_source: AddSource) -> None:
    add_source("sis")
    clock = Clock(utc(2027, 1, 10, 12))
    schedules.set_schedule(district, "sis", "every 1h", now=clock())
    clock.advance(days=3)
    [decision] = Scheduler(district, now=clock).tick()
    assert decision.window_at == utc(2027, 1, 13, 12)
    assert len(run_rows(district)) == 1


def test_two_schedulers_queue_each_window_once(district: sa.Engine, add_source: AddSource) -> None:
    for name in ("sis", "clubs", "sheet"):
        add_source(name)
        schedules.set_schedule(district, name, "every 1h", now=utc(2027, 1, 10, 12))
    clock = Clock(utc(2027, 1, 10, 12))
    pair = [Scheduler(district, now=clock), Scheduler(district, now=clock)]
    for _ in range(3):
        clock.advance(hours=1)
        start = threading.Barrier(2)
        results: list[list[Decision]] = [[], []]

        def tick(
            n: int, start: threading.Barrier = start, results: list[list[Decision]] = results
        ) -> None:
            start.wait()
            results[n] = pair[n].tick()

        threads = [threading.Thread(target=tick, args=(n,)) for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        outcomes = sorted(d.outcome for result in results for d in result)
        assert outcomes.count("queued") == 3
        while embedded.run_one(district) is not None:
            pass
    assert len(handled(district)) == 9
    assert [r["status"] for r in run_rows(district)] == ["succeeded"] * 9
