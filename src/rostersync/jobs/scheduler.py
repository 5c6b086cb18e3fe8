"""The scheduler: queue each schedule's due window exactly once, with an injectable clock.

Every tick it looks at each unpaused schedule, finds the latest window that has passed since the
last one handled (windows missed while no scheduler ran collapse into that one), and in one
transaction inserts ``(source_id, window_at)`` into ``schedule_windows`` — insert-or-skip — and,
only if that insert went in, queues the run or records it as skipped in a blackout. Any number of
schedulers can run side by side; a window is handled by exactly one of them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from rostersync.jobs import spec as specs
from rostersync.jobs.queue import Mode, enqueue, mode_of
from rostersync.store.schema import districts, runs, schedule_windows, schedules, sources

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Decision:
    """What a tick did with one window."""

    source_id: int
    window_at: datetime
    #: queued, skipped (blackout), or taken (another scheduler handled it)
    outcome: str
    run_id: int | None = None
    reason: str | None = None


class Scheduler:
    def __init__(
        self,
        engine: sa.Engine,
        *,
        now: Clock = utc_now,
        mode: Mode | None = None,
        on_queued: Callable[[], None] = lambda: None,
        sweep: Callable[[], object] = lambda: None,
        renew: Callable[[], object] | None = None,
    ) -> None:
        self.engine = engine
        self.now = now
        self.mode = mode or mode_of(engine)
        self.on_queued = on_queued
        self.sweep = sweep
        #: Periodic upkeep besides windows: renewing Classroom push registrations by default.
        self.renew = renew if renew is not None else self._renew_push

    def tick(self) -> list[Decision]:
        """Handle every due window once; return what was done."""
        now = self.now()
        decisions: list[Decision] = []
        with self.engine.connect() as conn:
            due = conn.execute(
                sa.select(
                    schedules.c.source_id,
                    schedules.c.spec,
                    schedules.c.blackouts,
                    schedules.c.last_window_at,
                    schedules.c.created_at,
                    districts.c.timezone,
                )
                .select_from(schedules)
                .join(sources, sources.c.id == schedules.c.source_id)
                .join(districts, districts.c.id == sources.c.district_id)
                .where(schedules.c.paused == sa.false())
            ).all()
        for row in due:
            tz = specs.zone(row.timezone)
            since = _aware(row.last_window_at or row.created_at)
            windows = list(specs.parse(row.spec).windows(since, now, tz))
            if not windows:
                continue
            if len(windows) > 1:
                logger.info(
                    "Source %s: %s earlier window(s) passed while no scheduler ran; queueing "
                    "the latest only.",
                    row.source_id,
                    len(windows) - 1,
                )
            blackout = specs.blackout_of(windows[-1], tz, specs.load_blackouts(row.blackouts))
            decisions.append(self._handle(int(row.source_id), windows[-1], blackout, now))
        if any(d.outcome == "queued" for d in decisions):
            self.on_queued()
        return decisions

    def _handle(
        self, source_id: int, window: datetime, blackout: specs.Blackout | None, now: datetime
    ) -> Decision:
        with self.engine.begin() as conn:
            insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(
                schedule_windows
            )
            claimed = conn.execute(
                insert.values(
                    source_id=source_id,
                    window_at=window,
                    recorded_at=now,
                    outcome="skipped" if blackout else "queued",
                )
                .on_conflict_do_nothing()
                .returning(schedule_windows.c.source_id)
            ).first()
            conn.execute(
                schedules.update()
                .where(
                    schedules.c.source_id == source_id,
                    sa.or_(
                        schedules.c.last_window_at.is_(None), schedules.c.last_window_at < window
                    ),
                )
                .values(last_window_at=window)
            )
            if claimed is None:
                return Decision(source_id, window, "taken")
            if blackout is not None:
                reason = f"skipped: the window falls in the blackout {blackout}"
                run_id = _skipped_run(conn, source_id, window, reason)
                outcome = Decision(source_id, window, "skipped", run_id, reason)
            else:
                queued = enqueue(conn, source_id, "schedule", None, self.mode)
                run_id = queued.run_id
                outcome = Decision(source_id, window, "queued", run_id)
            conn.execute(
                schedule_windows.update()
                .where(
                    schedule_windows.c.source_id == source_id,
                    schedule_windows.c.window_at == window,
                )
                .values(run_id=run_id)
            )
        logger.info(
            "Source %s window %s: %s (run %s).",
            source_id,
            window.isoformat(),
            outcome.outcome,
            outcome.run_id,
        )
        return outcome

    def _renew_push(self) -> None:
        from rostersync.jobs import google_push

        google_push.renew_due(self.engine, now=self.now)

    def run(self, stop: threading.Event, interval: float = 10.0) -> None:
        """Tick (and sweep for abandoned runs, and renew push registrations that are about to
        expire) every ``interval`` seconds until ``stop`` is set."""
        logger.info("Scheduler started (%s mode).", self.mode)
        while not stop.is_set():
            try:
                self.sweep()
                self.tick()
                self.renew()
            except sa.exc.OperationalError:
                logger.warning("The scheduler could not reach the store; retrying.", exc_info=True)
            stop.wait(interval)


def _skipped_run(conn: sa.Connection, source_id: int, window: datetime, reason: str) -> int:
    result = conn.execute(
        runs.insert().values(
            source_id=source_id,
            trigger="schedule",
            status="skipped",
            stage="done",
            started_at=window,
            finished_at=window,
            error=reason,
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes for timezone-aware columns; they are stored in UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)
