"""Each source's schedule in the ``schedules`` table: set, pause, resume and blackouts, and what
``source list`` shows of it — the next window and the source's health."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from rostersync.errors import NotFound
from rostersync.jobs import spec as specs
from rostersync.jobs.queue import source_id
from rostersync.store.schema import districts, runs, schedules, sources


def _now() -> datetime:
    return datetime.now(UTC)


def set_schedule(engine: sa.Engine, source: str, text: str, *, now: datetime | None = None) -> None:
    """Give a source a schedule (replacing its old one). Windows count from now on: setting a
    schedule never queues a run for a window that has already passed."""
    parsed = specs.parse(text)
    now = now or _now()
    with engine.begin() as conn:
        ident = source_id(conn, source)
        updated = conn.execute(
            schedules.update()
            .where(schedules.c.source_id == ident)
            .values(spec=parsed.text, last_window_at=now, updated_at=now)
        )
        if not updated.rowcount:
            conn.execute(
                schedules.insert().values(
                    source_id=ident,
                    spec=parsed.text,
                    paused=False,
                    blackouts=[],
                    last_window_at=now,
                    created_at=now,
                    updated_at=now,
                )
            )


def _existing(conn: sa.Connection, source: str) -> int:
    ident = source_id(conn, source)
    if conn.execute(sa.select(schedules.c.source_id).where(schedules.c.source_id == ident)).first():
        return ident
    raise NotFound(
        f"Source {source!r} has no schedule. Give it one with "
        f"`rostersync source schedule {source} --set nightly@02:30`."
    )


def set_paused(
    engine: sa.Engine, source: str, paused: bool, *, now: datetime | None = None
) -> None:
    """Pause or resume. Resuming does not catch up: the next window after now is the next run."""
    now = now or _now()
    with engine.begin() as conn:
        ident = _existing(conn, source)
        values: dict[str, Any] = {"paused": paused, "updated_at": now}
        if not paused:
            values["last_window_at"] = now
        conn.execute(schedules.update().where(schedules.c.source_id == ident).values(**values))


def add_blackouts(
    engine: sa.Engine, source: str, ranges: list[str], *, clear: bool = False
) -> None:
    """Add blackout date ranges (``FIRST..LAST``, local dates), or replace them with ``clear``."""
    parsed = [specs.parse_blackout(text) for text in ranges]
    with engine.begin() as conn:
        ident = _existing(conn, source)
        stored = conn.execute(
            sa.select(schedules.c.blackouts).where(schedules.c.source_id == ident)
        ).scalar_one()
        kept = [] if clear else specs.load_blackouts(stored)
        merged = kept + [b for b in parsed if b not in kept]
        conn.execute(
            schedules.update()
            .where(schedules.c.source_id == ident)
            .values(blackouts=[b.as_dict() for b in merged], updated_at=_now())
        )


def next_run_at(
    spec: specs.Spec, tz: ZoneInfo, blackouts: list[specs.Blackout], after: datetime
) -> datetime | None:
    """The next window after ``after`` that falls outside every blackout."""
    for _ in range(1000):
        window = spec.next_window(after, tz)
        blackout = specs.blackout_of(window, tz, blackouts)
        if blackout is None:
            return window
        # Jump past the blackout: its last local day ends at the next midnight.
        after = specs.place(datetime.combine(blackout.end + timedelta(days=1), time()), tz)
        after -= timedelta(microseconds=1)
    return None


def describe(engine: sa.Engine, *, now: datetime | None = None) -> dict[int, dict[str, Any]]:
    """Per source id: its ``schedule`` (or None), ``next_run_at`` (UTC) and ``next_run_local``
    (ISO 8601 in the district's zone), ``paused``, ``blackouts``,
    ``health`` and ``last_run`` (id, status, finished_at)."""
    now = now or _now()
    out: dict[int, dict[str, Any]] = {}
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                sources.c.id,
                sources.c.status,
                districts.c.timezone,
                schedules.c.spec,
                schedules.c.paused,
                schedules.c.blackouts,
            )
            .join(districts, districts.c.id == sources.c.district_id)
            .outerjoin(schedules, schedules.c.source_id == sources.c.id)
        ).all()
        latest = (
            sa.select(sa.func.max(runs.c.id))
            .where(
                runs.c.status.not_in(("queued", "running", "skipped", "dry-run")),
            )
            .group_by(runs.c.source_id)
        )
        last = {
            row.source_id: row
            for row in conn.execute(
                sa.select(runs.c.source_id, runs.c.id, runs.c.status, runs.c.finished_at).where(
                    runs.c.id.in_(latest)
                )
            )
        }
    for row in rows:
        info: dict[str, Any] = {
            "schedule": row.spec,
            "paused": bool(row.paused) if row.spec else False,
            "blackouts": [],
            "next_run_at": None,
            "next_run_local": None,
        }
        if row.spec:
            tz = specs.zone(row.timezone)
            blackouts = specs.load_blackouts(row.blackouts)
            info["blackouts"] = [str(b) for b in blackouts]
            if not row.paused:
                following = next_run_at(specs.parse(row.spec), tz, blackouts, now)
                info["next_run_at"] = following
                info["next_run_local"] = following and following.astimezone(tz).isoformat()
        previous = last.get(row.id)
        info["last_run"] = (
            None
            if previous is None
            else {
                "run": previous.id,
                "status": previous.status,
                "finished_at": previous.finished_at,
            }
        )
        info["health"] = health(str(row.status), None if previous is None else previous.status)
        out[int(row.id)] = info
    return out


def health(source_status: str, last_status: str | None) -> str:
    """``failing`` (several failed runs in a row), ``failed`` (the last run), ``held`` (waits for
    an admin), ``ok``, or ``new`` (never synced)."""
    if source_status == "failing":
        return "failing"
    if last_status is None:
        return "new"
    if last_status in ("failed", "held"):
        return str(last_status)
    return "ok"
