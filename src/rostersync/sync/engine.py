"""The engine: runs a source's sync through its stages and owns the run's life cycle.

Every run is recorded before its work starts, in its own short transaction. The work itself —
stage, diff, resolve, check and apply — happens in one write transaction: a run that fails for
any reason rolls back, so the store stays exactly as the last good run left it, and the run is
then marked failed with its error in a transaction of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from rostersync import secrets
from rostersync.domain.feed import ENTITIES, Entity, Feed
from rostersync.errors import InputError, NotFound, Problem, RosterError, SafetyHold
from rostersync.sources.base import FetchContext
from rostersync.store.schema import (
    districts,
    enrollments,
    run_payloads,
    runs,
    sections,
    snapshot_digests,
    sources,
)
from rostersync.sync import apply as apply_stage
from rostersync.sync import check as check_stage
from rostersync.sync import diff as diff_stage
from rostersync.sync import fetch as fetch_stage
from rostersync.sync import resolve as resolve_stage
from rostersync.sync import stage as stage_stage

logger = logging.getLogger(__name__)

Progress = Callable[[str, dict[str, int]], None]
"""Called as a run moves on: ``(stage, counts so far)``."""


def no_progress(stage: str, counts: dict[str, int]) -> None:
    return None


@dataclass
class RunResult:
    run_id: int
    status: str
    changes: dict[str, dict[str, int]] = field(default_factory=dict)
    fetched: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    held_reasons: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in ("succeeded", "dry-run")

    def as_dict(self) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "status": self.status,
            "changes": self.changes,
            "fetched": self.fetched,
            "error": self.error,
            "problems": [p.as_dict() for p in self.problems],
            "warnings": [w.as_dict() for w in self.warnings],
            "held_reasons": self.held_reasons,
        }


@dataclass
class _Source:
    id: int
    name: str
    kind: str
    config: dict[str, Any]
    cursor: str | None
    district_id: int
    authoritative: bool
    share: float
    floor: int


def _now() -> datetime:
    return datetime.now(UTC)


def _load_source(engine: sa.Engine, name: str) -> _Source:
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(
                sources.c.id,
                sources.c.name,
                sources.c.kind,
                sources.c.config,
                sources.c.cursor,
                sources.c.district_id,
                districts.c.authoritative,
                districts.c.safety_share,
                districts.c.safety_floor,
            )
            .join(districts, districts.c.id == sources.c.district_id)
            .where(sources.c.name == name)
        ).first()
    if row is None:
        raise NotFound(f"There is no source named {name!r}. `rostersync source list` shows them.")
    return _Source(
        id=row.id,
        name=row.name,
        kind=row.kind,
        config=dict(row.config or {}),
        cursor=row.cursor,
        district_id=row.district_id,
        authoritative=bool(row.authoritative),
        share=float(row.safety_share),
        floor=int(row.safety_floor),
    )


def _source_by_id(engine: sa.Engine, source_id: int) -> _Source:
    with engine.connect() as conn:
        name = conn.execute(sa.select(sources.c.name).where(sources.c.id == source_id)).scalar_one()
    return _load_source(engine, name)


def start_run(engine: sa.Engine, source_id: int, trigger: str, requested_by: str | None) -> int:
    with engine.begin() as conn:
        result = conn.execute(
            runs.insert().values(
                source_id=source_id,
                trigger=trigger,
                requested_by=requested_by,
                status="running",
                stage="fetch",
                started_at=_now(),
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])


def _finish(engine: sa.Engine, run_id: int, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(runs.update().where(runs.c.id == run_id).values(finished_at=_now(), **values))


def _set_stage(
    engine: sa.Engine, run_id: int, stage: str, progress: Progress, counts: dict[str, int]
) -> None:
    progress(stage, counts)
    with engine.begin() as conn:
        conn.execute(runs.update().where(runs.c.id == run_id).values(stage=stage, counts=counts))


def sync(
    engine: sa.Engine,
    source_name: str,
    *,
    dry_run: bool = False,
    trigger: str = "cli",
    requested_by: str | None = None,
    progress: Progress = no_progress,
    checkpoint: apply_stage.Checkpoint = apply_stage.no_checkpoint,
) -> RunResult:
    """Run one sync of a source: fetch its feed, then process it (see module docstring)."""
    source = _load_source(engine, source_name)
    run_id = start_run(engine, source.id, trigger, requested_by)
    logger.info("Run %s of source %s started (%s).", run_id, source.id, trigger)
    return execute(engine, run_id, dry_run=dry_run, progress=progress, checkpoint=checkpoint)


def _reveal(engine: sa.Engine, config: dict[str, Any]) -> dict[str, Any]:
    """The settings in clear for building the connector: secret ones are stored encrypted."""
    if not secrets.has_secrets(config):
        return config
    return secrets.keyring(engine.url).decrypt(config)


def execute(
    engine: sa.Engine,
    run_id: int,
    *,
    dry_run: bool = False,
    progress: Progress = no_progress,
    fetch_progress: Callable[[str, int], None] | None = None,
    checkpoint: apply_stage.Checkpoint = apply_stage.no_checkpoint,
) -> RunResult:
    """Fetch and process a run already recorded — by :func:`sync`, or queued by the job runner
    and marked running by the worker that took it. Errors end up on the run, never raised."""
    with engine.connect() as conn:
        source_id = conn.execute(sa.select(runs.c.source_id).where(runs.c.id == run_id)).scalar()
    if source_id is None:
        raise NotFound(f"There is no run {run_id}.")
    try:
        source = _source_by_id(engine, int(source_id))
        progress("fetch", {})
        feed = fetch_stage.fetch(
            source.kind,
            _reveal(engine, source.config),
            FetchContext(
                cursor=source.cursor,
                progress=fetch_progress or (lambda what, n: progress("fetch", {what: n})),
            ),
        )
        feed = fetch_stage.limit_scope(feed, source.config)
    except RosterError as exc:
        return _failed(engine, run_id, exc)
    except Exception as exc:
        logger.exception("Run %s failed while fetching.", run_id)
        return _failed(engine, run_id, exc)
    return process(
        engine, source, run_id, feed, dry_run=dry_run, progress=progress, checkpoint=checkpoint
    )


# TODO(perf): every entity's plan is built before anything is written, so that the safety check
# sees the whole run; on a 6-million-enrollment import that keeps the staged feed and the plans
# in memory together (about 2.2 GB peak for a first import and 2.9 GB for a 1 % churn re-sync,
# above the 2 GiB milestone). Planning enrollments in slices by section, after the check has
# counted them, would bound it.
def process(
    engine: sa.Engine,
    source: _Source,
    run_id: int,
    feed: Feed,
    *,
    dry_run: bool = False,
    approved_by: str | None = None,
    progress: Progress = no_progress,
    checkpoint: apply_stage.Checkpoint = apply_stage.no_checkpoint,
) -> RunResult:
    fetched = feed.counts()
    now = _now()
    result = RunResult(run_id=run_id, status="running", fetched=fetched)
    try:
        _set_stage(engine, run_id, "stage", progress, fetched)
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # One run at a time per district: identity resolution reads what others write.
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock(7461, {source.district_id})")
            staged = stage_stage.stage(feed)
            result.warnings = staged.warnings
            if staged.problems:
                raise InputError(staged.problems)
            # The staged frames replace the fetched ones: the originals are not needed again
            # (a held run's payload packs the staged frames, which stage the same way).
            for entity in ENTITIES:
                feed.frames[entity] = staged.frames[entity]
            digests = _digests(staged, feed)
            if not approved_by and not feed.truncated and _unchanged(conn, source, digests):
                # The feed is exactly what the last applied run saw: nothing to diff.
                conn.execute(
                    runs.update()
                    .where(runs.c.id == run_id)
                    .values(
                        status="dry-run" if dry_run else "succeeded",
                        stage="done",
                        finished_at=_now(),
                        summary={},
                        counts=fetched,
                        warnings=[w.as_dict() for w in result.warnings],
                    )
                )
                result.status = "dry-run" if dry_run else "succeeded"
                logger.info("Run %s: the feed is unchanged since the last run.", run_id)
                return result
            progress("diff", fetched)
            ctx = resolve_stage.Context(
                district_id=source.district_id,
                source_id=source.id,
                authoritative=source.authoritative,
                now=now,
                file={e: feed.files.get(e) for e in ENTITIES},
            )
            plans = []
            problems: list[Problem] = []
            mappings: dict[Entity, Any] = {}
            for entity in ENTITIES:
                snapshot = diff_stage.load_snapshot(conn, source.id, entity)
                d = diff_stage.diff(
                    entity,
                    staged.frames[entity],
                    snapshot,
                    feed.modes.get(entity, feed.mode),
                    feed.deleted.get(entity, []),
                )
                plan, entity_problems = resolve_stage.plan_entity(conn, ctx, d, mappings)
                mappings[entity] = plan.mapping
                problems += entity_problems
                result.warnings += plan.warnings
                plans.append(plan)
                progress("resolve", {entity: sum(plan.counts().values())})
            if problems:
                raise InputError(problems)
            counted = {p.entity: p.counts() for p in plans}
            result.changes = {entity: n for entity, n in counted.items() if n}

            reasons = (
                [] if approved_by else check_stage.check(staged, plans, source.share, source.floor)
            )
            if reasons or dry_run:
                conn.rollback()
            else:
                # Planned and let through, the feed is not needed any more: free it before the
                # writes, which build rows of their own (on a large first import this is what
                # keeps the peak down).
                staged.frames.clear()
                feed.frames.clear()
                mappings.clear()
                progress("apply", {k: sum(v.values()) for k, v in result.changes.items()})
                apply_stage.apply(
                    conn,
                    plans,
                    district_id=source.district_id,
                    source_id=source.id,
                    run_id=run_id,
                    now=now,
                    digests=digests,
                    checkpoint=checkpoint,
                )
                conn.execute(
                    runs.update()
                    .where(runs.c.id == run_id)
                    .values(
                        status="succeeded",
                        stage="done",
                        finished_at=_now(),
                        summary=result.changes,
                        counts=fetched,
                        warnings=[w.as_dict() for w in result.warnings],
                        decided_by=approved_by,
                    )
                )
                conn.execute(run_payloads.delete().where(run_payloads.c.run_id == run_id))
                result.status = "succeeded"
                logger.info("Run %s succeeded.", run_id)
                return result

        # Held or dry run: keep the plan's changes for review (ids of new records are
        # provisional), and for a held run the feed itself so approval applies what was seen.
        status = "held" if reasons and not dry_run else "dry-run"
        result.status = status
        result.held_reasons = reasons
        with engine.begin() as conn:
            apply_stage.write_changes(conn, run_id, plans)
            if status == "held":
                conn.execute(run_payloads.delete().where(run_payloads.c.run_id == run_id))
                conn.execute(
                    run_payloads.insert().values(run_id=run_id, payload=fetch_stage.pack(feed))
                )
            conn.execute(
                runs.update()
                .where(runs.c.id == run_id)
                .values(
                    status=status,
                    stage="done",
                    finished_at=_now(),
                    summary=result.changes,
                    counts=fetched,
                    held_reasons=reasons,
                    warnings=[w.as_dict() for w in result.warnings],
                )
            )
        logger.info("Run %s ended as %s.", run_id, status)
        return result
    except RosterError as exc:
        return _failed(engine, run_id, exc, result)
    except Exception as exc:
        logger.exception("Run %s failed.", run_id)
        return _failed(engine, run_id, exc, result)


def _digests(staged: stage_stage.Staged, feed: Feed) -> dict[Entity, tuple[int, int] | None]:
    """Per entity, the digest and size the snapshot will have after this feed is applied —
    known only for entities the feed lists in full."""
    out: dict[Entity, tuple[int, int] | None] = {}
    for entity in ENTITIES:
        if feed.modes.get(entity, feed.mode) == "full":
            frame = staged.frames[entity]
            out[entity] = (stage_stage.digest(frame), frame.height)
        else:
            out[entity] = None
    return out


def _unchanged(
    conn: sa.Connection, source: _Source, digests: dict[Entity, tuple[int, int] | None]
) -> bool:
    """True when every entity's digest equals the last applied run's, and no hand-made
    enrollment in the source's sections waits to be ended."""
    if any(value is None for value in digests.values()):
        return False
    stored = {
        row.entity: (int(row.digest), int(row.records))
        for row in conn.execute(
            sa.select(snapshot_digests).where(snapshot_digests.c.source_id == source.id)
        )
    }
    if any(stored.get(entity) != value for entity, value in digests.items()):
        return False
    if not source.authoritative:
        return True
    manual = conn.execute(
        sa.select(sa.func.count())
        .select_from(enrollments.join(sections, sections.c.id == enrollments.c.section_id))
        .where(
            sections.c.source_id == source.id,
            enrollments.c.end_at.is_(None),
            enrollments.c.source_id.is_(None),
        )
    ).scalar_one()
    return int(manual) == 0


def _failed(
    engine: sa.Engine, run_id: int, exc: BaseException, result: RunResult | None = None
) -> RunResult:
    result = result or RunResult(run_id=run_id, status="failed")
    result.status = "failed"
    result.changes = {}
    if isinstance(exc, InputError):
        result.problems = exc.problems
        result.error = f"The input has {len(exc.problems)} problem(s); nothing was changed."
    elif isinstance(exc, RosterError):
        result.error = str(exc)
    else:
        result.error = (
            f"Internal error ({type(exc).__name__}: {exc}); nothing was changed. "
            "The next run will try again."
        )
    _finish(
        engine,
        run_id,
        status="failed",
        stage="done",
        error=result.error,
        problems=[p.as_dict() for p in result.problems],
        warnings=[w.as_dict() for w in result.warnings],
    )
    logger.warning("Run %s failed: %s", run_id, type(exc).__name__)
    return result


def _held_run(engine: sa.Engine, run_id: int) -> tuple[Any, bytes]:
    with engine.connect() as conn:
        row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
        if row is None:
            raise NotFound(f"There is no run {run_id}.")
        if row.status != "held":
            raise RosterError(
                f"Run {run_id} is {row.status}, not held; only a held run can be "
                "approved or discarded."
            )
        payload = conn.execute(
            sa.select(run_payloads.c.payload).where(run_payloads.c.run_id == run_id)
        ).scalar_one()
    return row, payload


def approve(
    engine: sa.Engine,
    run_id: int,
    *,
    by: str | None = None,
    progress: Progress = no_progress,
    checkpoint: apply_stage.Checkpoint = apply_stage.no_checkpoint,
) -> RunResult:
    """Apply a held run's feed as it was fetched, diffed against the store as it is now."""
    row, payload = _held_run(engine, run_id)
    source = _source_by_id(engine, row.source_id)
    with engine.begin() as conn:
        from rostersync.store.schema import changes

        conn.execute(changes.delete().where(changes.c.run_id == run_id))
        conn.execute(runs.update().where(runs.c.id == run_id).values(status="running"))
    return process(
        engine,
        source,
        run_id,
        fetch_stage.unpack(payload),
        approved_by=by or "admin",
        progress=progress,
        checkpoint=checkpoint,
    )


def discard(engine: sa.Engine, run_id: int, *, by: str | None = None) -> RunResult:
    """Drop a held run: nothing of it is applied; its planned changes stay for the record."""
    row, _ = _held_run(engine, run_id)
    with engine.begin() as conn:
        conn.execute(run_payloads.delete().where(run_payloads.c.run_id == run_id))
        conn.execute(
            runs.update()
            .where(runs.c.id == run_id)
            .values(status="discarded", decided_by=by or "admin", finished_at=_now())
        )
    return RunResult(
        run_id=run_id,
        status="discarded",
        changes=dict(row.summary or {}),
        held_reasons=list(row.held_reasons or []),
    )


__all__ = ["RunResult", "SafetyHold", "approve", "discard", "execute", "process", "sync"]
