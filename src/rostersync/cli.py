"""The ``rostersync`` command."""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any, NoReturn

import click
import sqlalchemy as sa

from rostersync import service
from rostersync.errors import RosterError
from rostersync.sync import engine as sync_engine

logger = logging.getLogger(__name__)


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return None
    return str(value)


def _print_json(document: Any) -> None:
    click.echo(json.dumps(document, default=_default, indent=2))


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


class Context:
    def __init__(self, url: str | None) -> None:
        self.url = url
        self._engine: sa.Engine | None = None

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = service.open_store(self.url)
        return self._engine


@contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except RosterError as exc:
        _fail(str(exc))


@click.group()
@click.option(
    "--database-url",
    envvar="ROSTERSYNC_DATABASE_URL",
    default=None,
    help="SQLAlchemy URL of the store (default: rostersync.sqlite here).",
)
@click.option("-v", "--verbose", count=True, help="Log more (-v info, -vv debug).")
@click.version_option(package_name="rostersync")
@click.pass_context
def main(ctx: click.Context, database_url: str | None, verbose: int) -> None:
    """Keep ClassPilot's rosters in step with a district's source of truth."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _load_plugins()
    ctx.obj = Context(database_url)


def _load_plugins() -> None:
    """Import the modules named in ROSTERSYNC_PLUGINS (comma-separated); each registers extra
    source kinds on import, in this process and in the workers it is passed to."""
    names = os.environ.get("ROSTERSYNC_PLUGINS", "").split(",")
    for name in filter(None, (n.strip() for n in names)):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            _fail(f"ROSTERSYNC_PLUGINS names {name!r}, which cannot be imported: {exc}.")


@main.command()
@click.pass_obj
def init(obj: Context) -> None:
    """Create or upgrade the store's tables."""
    with _user_errors():
        obj.engine  # noqa: B018 - opening the store migrates it
    click.echo("The store is ready.")


# Districts ------------------------------------------------------------------------------------


@main.group()
def district() -> None:
    """Add, list and configure districts."""


@district.command("add")
@click.argument("name")
@click.option("--timezone", default="UTC", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def district_add(obj: Context, name: str, timezone: str, as_json: bool) -> None:
    """Add a district."""
    with _user_errors():
        ident = service.add_district(obj.engine, name, timezone)
    if as_json:
        _print_json({"district": ident, "name": name})
    else:
        click.echo(f"District {name!r} added.")


@district.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def district_list(obj: Context, as_json: bool) -> None:
    """List districts and their settings."""
    with _user_errors():
        rows = service.list_districts(obj.engine)
    if as_json:
        _print_json(rows)
        return
    for row in rows:
        click.echo(
            f"{row['name']}  tz={row['timezone']}  authoritative={row['authoritative']}  "
            f"safety={row['safety_share']:.0%}/{row['safety_floor']}"
        )


@district.command("set")
@click.argument("name")
@click.option(
    "--authoritative/--not-authoritative",
    default=None,
    help="Whether sources may end enrollments they no longer list.",
)
@click.option("--allow-groups/--no-groups", default=None, help="Allow teacher groups.")
@click.option(
    "--safety-share",
    type=float,
    default=None,
    help="Hold a run that removes or changes more than this share (0-1).",
)
@click.option(
    "--safety-floor",
    type=int,
    default=None,
    help="…but always allow this many removals or changes.",
)
@click.option("--timezone", default=None)
@click.pass_obj
def district_set(obj: Context, /, name: str, **options: Any) -> None:
    """Change a district's settings."""
    settings = {k: v for k, v in options.items() if v is not None}
    with _user_errors():
        service.set_district(obj.engine, name, **settings)
    click.echo(f"District {name!r} updated.")


# Sources --------------------------------------------------------------------------------------


def _settings(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            _fail(f"--set takes KEY=VALUE, got {pair!r}.")
        out[key.strip()] = value
    return out


@main.group()
def source() -> None:
    """Add, list and configure sources."""


@source.command("add")
@click.argument("name")
@click.option("--district", "district_name", required=True)
@click.option("--kind", required=True, help="csv, oneroster-csv or google.")
@click.option(
    "--set",
    "pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="A setting of the source, e.g. path=/data/export.zip.",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def source_add(
    obj: Context, name: str, district_name: str, kind: str, pairs: tuple[str, ...], as_json: bool
) -> None:
    """Connect a source to a district."""
    with _user_errors():
        ident = service.add_source(obj.engine, name, district_name, kind, _settings(pairs))
    if as_json:
        _print_json({"source": ident, "name": name})
    else:
        click.echo(f"Source {name!r} ({kind}) added to {district_name!r}.")


@source.command("set")
@click.argument("name")
@click.option("--set", "pairs", multiple=True, metavar="KEY=VALUE", required=True)
@click.pass_obj
def source_set(obj: Context, name: str, pairs: tuple[str, ...]) -> None:
    """Change a source's settings."""
    with _user_errors():
        service.update_source(obj.engine, name, _settings(pairs))
    click.echo(f"Source {name!r} updated.")


@source.command("test")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def source_test(obj: Context, name: str, as_json: bool) -> None:
    """Test a source's connection without syncing. Exit 0 when every check passes, else 1."""
    with _user_errors():
        checks = service.check_source(obj.engine, name)
    passed = all(c["ok"] for c in checks)
    if as_json:
        _print_json({"source": name, "ok": passed, "checks": checks})
    else:
        for check in checks:
            click.echo(f"{'ok  ' if check['ok'] else 'FAIL'}  {check['check']}: {check['detail']}")
    if not passed:
        sys.exit(1)


@source.command("google-consent")
@click.argument("name")
@click.option("--code", default=None, help="The code from the consent page (else asked for).")
@click.option(
    "--redirect-uri",
    default="http://127.0.0.1",
    show_default=True,
    help="The redirect address registered for the OAuth client.",
)
@click.option(
    "--push", is_flag=True, help="Also allow Classroom push registrations (source google-watch)."
)
@click.pass_obj
def source_google_consent(
    obj: Context, name: str, code: str | None, redirect_uri: str, push: bool
) -> None:
    """Grant a Google source an administrator's read-only access (OAuth consent)."""
    with _user_errors():
        url = service.google_consent_url(obj.engine, name, redirect_uri, push=push)
        if code is None:
            click.echo("1. Open this address as a domain administrator and approve the access:")
            click.echo(f"\n   {url}\n")
            click.echo(
                "2. The browser then goes to an address starting with "
                f"{redirect_uri} that does not load; copy that whole address (or its code=…)."
            )
            code = click.prompt("3. Paste it here")
        service.complete_google_consent(obj.engine, name, code, redirect_uri)
    click.echo(
        f"Consent stored for source {name!r}. Check it with `rostersync source test {name}`."
    )


@source.command("google-watch")
@click.argument("name")
@click.option("--topic", required=True, help="The Pub/Sub topic: projects/PROJECT/topics/TOPIC.")
@click.option("--new-token", is_flag=True, help="Replace the source's push token.")
@click.pass_obj
def source_google_watch(obj: Context, name: str, topic: str, new_token: bool) -> None:
    """Have Classroom publish a Google source's roster changes to a Pub/Sub topic, so that each
    change queues a sync (renewed weekly by the scheduler)."""
    from rostersync.jobs import google_push

    with _user_errors():
        done = google_push.watch(obj.engine, name, topic, new_token=new_token)
    for registration in done.registrations:
        feed = f"course {registration.course_id}" if registration.course_id else "the domain"
        click.echo(f"Registered roster changes of {feed} until {registration.expires.isoformat()}.")
    if done.token is None:
        click.echo("The push subscription's address is unchanged (its token was kept).")
        return
    click.echo(
        "Create a push subscription of the topic with this address (after the roster service's "
        "public https address); the token is shown only now:"
    )
    click.echo(f"\n   /api/v1/google/notifications/{done.source_id}?token={done.token}\n")


@source.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def source_list(obj: Context, as_json: bool) -> None:
    """List sources."""
    from rostersync.jobs import schedules

    with _user_errors():
        rows = service.list_sources(obj.engine)
        described = schedules.describe(obj.engine)
    for row in rows:
        row.update(described.get(row["id"], {}))
    if as_json:
        _print_json(rows)
        return
    for row in rows:
        click.echo(
            f"{row['name']}  {row['kind']}  district={row['district']}  {row['status']}  "
            f"health={row.get('health')}  {_schedule_line(row)}"
        )


def _schedule_line(row: dict[str, Any]) -> str:
    if not row.get("schedule"):
        return "no schedule"
    if row.get("paused"):
        return f"schedule={row['schedule']} (paused)"
    following = row.get("next_run_local")
    shown = following[:16].replace("T", " ") + following[19:] if following else "none"
    return f"schedule={row['schedule']}  next={shown}"


@source.command("schedule")
@click.argument("name")
@click.option(
    "--set",
    "spec",
    default=None,
    metavar="SPEC",
    help="nightly@HH:MM, every Nh, or a cron expression; in the district's time zone.",
)
@click.option("--pause", is_flag=True, help="Stop scheduled runs (Sync Now still works).")
@click.option("--resume", is_flag=True, help="Start scheduled runs again from the next window.")
@click.option(
    "--blackout",
    "blackouts",
    multiple=True,
    metavar="FIRST..LAST",
    help="Skip scheduled runs on these local dates (repeatable).",
)
@click.option("--clear-blackouts", is_flag=True, help="Remove every blackout first.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def source_schedule(
    obj: Context,
    name: str,
    spec: str | None,
    pause: bool,
    resume: bool,
    blackouts: tuple[str, ...],
    clear_blackouts: bool,
    as_json: bool,
) -> None:
    """Show or change a source's schedule, with its next window."""
    from rostersync.jobs import queue, schedules

    if pause and resume:
        _fail("Use --pause or --resume, not both.")
    with _user_errors():
        if spec is not None:
            schedules.set_schedule(obj.engine, name, spec)
        if blackouts or clear_blackouts:
            schedules.add_blackouts(obj.engine, name, list(blackouts), clear=clear_blackouts)
        if pause or resume:
            schedules.set_paused(obj.engine, name, pause)
        with obj.engine.connect() as conn:
            ident = queue.source_id(conn, name)
        info = {"source": name, **schedules.describe(obj.engine)[ident]}
    if as_json:
        _print_json(info)
        return
    click.echo(f"{name}: {_schedule_line(info)}  health={info['health']}")
    for blackout in info["blackouts"]:
        click.echo(f"  blackout {blackout}")


# Sync -----------------------------------------------------------------------------------------


def _progress_bar() -> tuple[Callable[[str, dict[str, int]], None], Callable[[], None]]:
    """A live status line on a terminal; nothing when output is redirected."""
    if not sys.stderr.isatty():
        return sync_engine.no_progress, lambda: None
    from rich.console import Console
    from rich.status import Status

    status = Status("Starting…", console=Console(stderr=True))
    status.start()

    def update(stage: str, counts: dict[str, int]) -> None:
        shown = ", ".join(f"{k} {v:,}" for k, v in counts.items())
        status.update(f"{stage}… {shown}")

    return update, status.stop


def _summary(result: sync_engine.RunResult) -> None:
    click.echo(f"Run {result.run_id}: {result.status}")
    for entity, actions in result.changes.items():
        click.echo(f"  {entity}: " + ", ".join(f"{a} {n:,}" for a, n in sorted(actions.items())))
    if result.status == "succeeded" and not result.changes:
        click.echo("  no changes")
    for reason in result.held_reasons:
        click.echo(f"  held: {reason}")
    if result.held_reasons and result.status == "held":
        click.echo(
            f"  Review it, then `rostersync sync SOURCE --approve {result.run_id}` or "
            f"`--discard {result.run_id}`."
        )
    if result.error:
        click.echo(f"  error: {result.error}")
    for problem in result.problems[:50]:
        click.echo(f"  - {problem}")
    if len(result.problems) > 50:
        click.echo(f"  … and {len(result.problems) - 50} more")
    for warning in result.warnings[:20]:
        click.echo(f"  warning: {warning}")


@main.command()
@click.argument("source_name", metavar="SOURCE")
@click.option("--dry-run", is_flag=True, help="Compute and show the plan; change nothing.")
@click.option("--approve", "approve_run", type=int, metavar="RUN", help="Apply a held run.")
@click.option("--discard", "discard_run", type=int, metavar="RUN", help="Drop a held run.")
@click.option("--by", "by", default=None, help="Who asks, approves or discards (for the log).")
@click.option(
    "--queue",
    "queue_run",
    is_flag=True,
    help="Queue the run for the workers (Sync Now) and return its id at once.",
)
@click.option("--wait", is_flag=True, help="With --queue: follow the run until it ends.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def sync(
    obj: Context,
    source_name: str,
    dry_run: bool,
    approve_run: int | None,
    discard_run: int | None,
    by: str | None,
    queue_run: bool,
    wait: bool,
    as_json: bool,
) -> None:
    """Sync a source now. Exit 0 on success or dry run, 2 when held, 1 when failed."""
    if queue_run or wait:
        _queue_sync(obj, source_name, by, wait, as_json)
        return
    progress, stop = _progress_bar() if not as_json else (sync_engine.no_progress, lambda: None)
    try:
        with _user_errors():
            if approve_run is not None:
                result = sync_engine.approve(obj.engine, approve_run, by=by, progress=progress)
            elif discard_run is not None:
                result = sync_engine.discard(obj.engine, discard_run, by=by)
            else:
                result = sync_engine.sync(
                    obj.engine, source_name, dry_run=dry_run, progress=progress
                )
    finally:
        stop()
    if approve_run is None and discard_run is None and not dry_run:
        _record_outcome(obj.engine, result.run_id)
    if as_json:
        _print_json(result.as_dict())
    else:
        _summary(result)
    sys.exit({"succeeded": 0, "dry-run": 0, "discarded": 0, "held": 2}.get(result.status, 1))


def _record_outcome(engine: sa.Engine, run_id: int) -> None:
    from rostersync.jobs import tasks
    from rostersync.store.schema import runs as runs_table

    with engine.connect() as conn:
        ident = conn.execute(
            sa.select(runs_table.c.source_id).where(runs_table.c.id == run_id)
        ).scalar_one()
    tasks.record_outcome(engine, int(ident))


EXIT_CODES = {"succeeded": 0, "dry-run": 0, "discarded": 0, "held": 2}


def _queue_sync(obj: Context, source_name: str, by: str | None, wait: bool, as_json: bool) -> None:
    """Sync Now: queue a run and return its id, or follow it with ``wait``."""
    from rostersync.jobs import queue

    with _user_errors():
        queued = queue.request_run(obj.engine, source_name, requested_by=by)
    if not wait:
        if as_json:
            _print_json(queued.as_dict())
        elif queued.created:
            click.echo(f"Run {queued.run_id} queued.")
        else:
            click.echo(f"Run {queued.run_id} is already waiting; not queueing another.")
        return
    tty = sys.stderr.isatty() and not as_json

    def show(status: str, stage: str | None, counts: dict[str, int]) -> None:
        if as_json:
            return
        shown = ", ".join(f"{k} {v:,}" for k, v in counts.items())
        line = (
            f"Run {queued.run_id}: {status}"
            + (f", {stage}" if stage else "")
            + (f" ({shown})" if shown else "")
        )
        if tty:
            click.echo("\r\033[K" + line, nl=False, err=True)
        else:
            click.echo(line, err=True)

    with _user_errors():
        row = queue.wait_for(obj.engine, queued.run_id, progress=show)
    if tty:
        click.echo("", err=True)
    if as_json:
        _print_json(row)
    else:
        _run_line(row)
    sys.exit(EXIT_CODES.get(str(row["status"]), 1))


def _run_line(row: dict[str, Any]) -> None:
    summary = row["summary"] or {}
    click.echo(f"Run {row['id']}: {row['status']}")
    for entity, actions in summary.items():
        click.echo(f"  {entity}: " + ", ".join(f"{a} {n:,}" for a, n in sorted(actions.items())))
    if row["error"]:
        click.echo(f"  error: {row['error']}")


@main.command()
@click.argument("source_name", metavar="SOURCE")
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def runs(obj: Context, source_name: str, limit: int, as_json: bool) -> None:
    """List a source's runs, newest first."""
    with _user_errors():
        rows = service.list_runs(obj.engine, source_name, limit)
    if as_json:
        _print_json(rows)
        return
    for row in rows:
        summary = row["summary"] or {}
        total = sum(sum(v.values()) for v in summary.values())
        progress = ""
        if row["status"] in ("queued", "running"):
            counts = ", ".join(f"{k} {v:,}" for k, v in (row["counts"] or {}).items())
            progress = f"stage {row['stage'] or '-'}" + (f" ({counts})" if counts else "")
        click.echo(
            f"{row['id']:>6}  {row['started_at']:%Y-%m-%d %H:%M}  {row['trigger']:<10} "
            f"{row['status']:<10} {total:>8} change(s)  {row['error'] or progress}"
        )


@main.command()
@click.argument("run_id", type=int)
@click.option("--entity", default=None)
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def changes(obj: Context, run_id: int, entity: str | None, limit: int, as_json: bool) -> None:
    """Show the changes of a run (applied, or planned for a held or dry run)."""
    with _user_errors():
        rows = service.run_changes(obj.engine, run_id, entity, limit)
    if as_json:
        _print_json(rows)
        return
    for row in rows:
        click.echo(
            f"{row['entity']:<10} {row['canonical_id']:>8} {row['action']:<8} "
            f"{row['before'] or ''} → {row['after'] or ''}"
        )


@main.command()
@click.argument("district_name", metavar="DISTRICT")
@click.option("--email", default=None)
@click.option("--google-id", default=None)
@click.option("--name", default=None)
@click.option("--device", default=None)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def sighting(
    obj: Context,
    district_name: str,
    email: str | None,
    google_id: str | None,
    name: str | None,
    device: str | None,
    as_json: bool,
) -> None:
    """Record that the browser extension saw a student."""
    with _user_errors():
        result = service.record_sighting(
            obj.engine, district_name, email=email, google_id=google_id, name=name, device=device
        )
    if as_json:
        _print_json(result)
    else:
        click.echo(f"Person {result['person']}: {result['status']}")


@main.command()
@click.argument("district_name", metavar="DISTRICT")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def export(obj: Context, district_name: str, out: Path, as_json: bool) -> None:
    """Write the district's current roster as a OneRoster 1.1 CSV bulk export."""
    with _user_errors():
        counts = service.export_oneroster(obj.engine, district_name, out)
    if as_json:
        _print_json({"out": str(out), "files": counts})
    else:
        click.echo(f"Wrote {out}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))


# Jobs -----------------------------------------------------------------------------------------


def _until_signalled() -> threading.Event:
    """An event set by SIGINT or SIGTERM."""
    stop = threading.Event()

    def handle(signum: int, _frame: Any) -> None:
        logger.info("Signal %s: stopping.", signum)
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
    return stop


#: The options every process that runs syncs shares (scheduler, worker).
_heartbeat = click.option(
    "--heartbeat",
    default=5.0,
    show_default=True,
    help="Seconds between two heartbeats of a running sync (and sweeps for abandoned runs).",
)
_abandon_after = click.option(
    "--abandon-after",
    type=float,
    default=None,
    help="Seconds without a heartbeat after which a run counts as abandoned "
    "[default: 120 embedded, 60 with Procrastinate].",
)


@main.command()
@click.option(
    "--workers",
    default=2,
    show_default=True,
    help="Worker threads (embedded mode): syncs of different sources in parallel.",
)
@click.option("--interval", default=10.0, show_default=True, help="Seconds between two ticks.")
@_heartbeat
@_abandon_after
@click.pass_obj
def scheduler(
    obj: Context, workers: int, interval: float, heartbeat: float, abandon_after: float | None
) -> None:
    """Queue scheduled runs as their windows come, until stopped.

    On SQLite (the embedded mode) this process also runs the syncs, in --workers threads. On
    PostgreSQL it only queues them: run `rostersync worker` on one or more machines.
    """
    from rostersync.jobs import distributed, embedded, queue
    from rostersync.jobs.scheduler import Scheduler

    with _user_errors():
        engine = obj.engine
        mode = queue.mode_of(engine)
    stop = _until_signalled()
    if mode == "embedded":
        pool = embedded.WorkerPool(
            engine,
            workers,
            heartbeat=heartbeat,
            abandon_after=abandon_after or embedded.ABANDON_AFTER,
        ).start()
        ticker = Scheduler(engine, mode=mode, on_queued=pool.wake, sweep=pool.sweep)
        click.echo(f"Scheduler and {workers} worker(s) running (embedded); Ctrl-C stops.", err=True)
        try:
            ticker.run(stop, interval)
        finally:
            click.echo("Stopping: waiting for running syncs to end…", err=True)
            pool.stop()
        return
    timeout = abandon_after or distributed.ABANDON_AFTER
    ticker = Scheduler(engine, mode=mode, sweep=lambda: distributed.sweep(engine, timeout))
    click.echo("Scheduler running (Procrastinate); Ctrl-C stops.", err=True)
    ticker.run(stop, interval)


@main.command()
@click.option(
    "--concurrency",
    default=2,
    show_default=True,
    help="Syncs this worker runs at once (of different sources).",
)
@_heartbeat
@_abandon_after
@click.pass_obj
def worker(obj: Context, concurrency: int, heartbeat: float, abandon_after: float | None) -> None:
    """Run queued syncs until stopped (SIGTERM lets running syncs finish).

    With PostgreSQL this is a Procrastinate worker; run as many as needed, on any machines.
    """
    from rostersync.jobs import distributed, embedded, queue

    with _user_errors():
        engine = obj.engine
        mode = queue.mode_of(engine)
    if mode == "procrastinate":
        distributed.run_worker(
            engine,
            concurrency=concurrency,
            heartbeat=heartbeat,
            abandon_after=abandon_after or distributed.ABANDON_AFTER,
        )
        return
    stop = _until_signalled()
    pool = embedded.WorkerPool(
        engine,
        concurrency,
        heartbeat=heartbeat,
        abandon_after=abandon_after or embedded.ABANDON_AFTER,
    ).start()
    while not stop.wait(heartbeat):
        pool.sweep()
    pool.stop()


def _fresh_demo_store(ctx: click.Context, folder: Path) -> sa.Engine:
    """A new SQLite store in the demo folder (unless --database-url names another)."""
    folder.mkdir(parents=True, exist_ok=True)
    database = folder / "demo.sqlite"
    obj: Context = ctx.obj
    if obj.url is None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
        obj.url = f"sqlite:///{database}"
    return obj.engine


def _demo_district(
    engine: sa.Engine, folder: Path, step: Callable[[str], None], show: bool = True
) -> None:
    """The demo district: a OneRoster SIS export and a clubs sheet, a student the extension saw
    first, and day two's export with a withdrawal, a new student and a renamed section."""
    from rostersync import demo as demo_data

    def report(result: sync_engine.RunResult) -> None:
        if show:
            _summary(result)

    demo_data.write_oneroster(folder / "sis-day1")
    demo_data.write_oneroster(folder / "sis-day2", day=2)
    demo_data.write_clubs_csv(folder / "clubs.csv")
    service.add_district(engine, "Lincoln Unified", "America/Chicago")
    service.add_source(
        engine, "sis", "Lincoln Unified", "oneroster-csv", {"path": str(folder / "sis-day1")}
    )
    service.add_source(
        engine, "clubs", "Lincoln Unified", "csv", {"path": str(folder / "clubs.csv")}
    )
    step("The extension sees a student no roster names yet")
    seen = service.record_sighting(
        engine,
        "Lincoln Unified",
        email="visitor@lincoln.example.org",
        name="Vera Visitor",
        device="chromebook-17",
    )
    if show:
        click.echo(seen)
    step("First import of the SIS export (OneRoster 1.1 CSV)")
    report(sync_engine.sync(engine, "sis"))
    step("The same export again: nothing changes")
    report(sync_engine.sync(engine, "sis"))
    step("The clubs sheet (simple CSV): known students are matched, the visitor is attached")
    report(sync_engine.sync(engine, "clubs"))
    step("Day two: one student withdrawn, one new, one class renamed (dry run first)")
    service.update_source(engine, "sis", {"path": str(folder / "sis-day2")})
    report(sync_engine.sync(engine, "sis", dry_run=True))
    report(sync_engine.sync(engine, "sis"))


@main.command()
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo"),
    show_default=True,
    help="Where to write the demo files.",
)
@click.pass_context
def demo(ctx: click.Context, folder: Path) -> None:
    """Build a demo district on a fresh SQLite store and sync it, showing each step."""

    def step(title: str) -> None:
        click.secho(f"\n== {title}", bold=True)

    with _user_errors():
        engine = _fresh_demo_store(ctx, folder)
        _demo_district(engine, folder, step)
        step("Export of the canonical roster (OneRoster 1.1 CSV)")
        counts = service.export_oneroster(engine, "Lincoln Unified", folder / "export")
        click.echo(", ".join(f"{k} {v}" for k, v in counts.items()))
    click.echo(
        f"\nThe demo store is {folder / 'demo.sqlite'}; try `rostersync --database-url "
        f"sqlite:///{folder / 'demo.sqlite'} runs sis`, or `rostersync serve --demo`."
    )


# The web app ----------------------------------------------------------------------------------


def _demo_accounts(engine: sa.Engine) -> list[tuple[str, str, str]]:
    """Demo accounts with fresh random passwords: (role, email, password)."""
    import secrets as secrets_module

    from rostersync.jobs import schedules
    from rostersync.web import accounts

    schedules.set_schedule(engine, "sis", "nightly@02:30")
    service.record_sighting(
        engine,
        "Lincoln Unified",
        email="new.kid@lincoln.example.org",
        name="Nico Newkid",
        device="chromebook-42",
    )
    made = []
    for role, email, schools in (
        ("district-admin", "admin@lincoln.example.org", ()),
        ("school-admin", "principal@lincoln.example.org", ("Lincoln High School",)),
        ("teacher", "teacher1@lincoln.example.org", ()),
    ):
        password = secrets_module.token_urlsafe(9)
        accounts.add_user(
            engine, email, "Lincoln Unified", role, schools_named=schools, password=password
        )
        made.append((role, email, password))
    return made


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--demo", "with_demo", is_flag=True, help="Serve a fresh demo district.")
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo"),
    show_default=True,
    help="With --demo: where the demo store and files go.",
)
@click.option(
    "--jobs/--no-jobs",
    default=True,
    show_default=True,
    help="Run the scheduler and sync workers in this process.",
)
@click.option("--workers", default=2, show_default=True, help="Sync worker threads (embedded).")
@click.option(
    "--forwarded-allow-ips",
    default="127.0.0.1",
    show_default=True,
    help="Proxies trusted for X-Forwarded-Proto/For (https detection for Secure cookies).",
)
@click.pass_context
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    with_demo: bool,
    folder: Path,
    jobs: bool,
    workers: int,
    forwarded_allow_ips: str,
) -> None:
    """Serve the web app and the API (and, by default, run schedules and syncs here too)."""
    import uvicorn

    from rostersync.web.app import Settings, create_app, uploads_beside

    obj: Context = ctx.obj
    with _user_errors():
        if with_demo:
            click.echo("Building the demo district…", err=True)
            engine = _fresh_demo_store(ctx, folder)
            _demo_district(engine, folder, lambda title: None, show=False)
            made = _demo_accounts(engine)
        else:
            engine = obj.engine
            made = []
    settings = Settings(uploads=uploads_beside(engine), run_jobs=jobs, workers=workers)
    app = create_app(engine, settings)
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    click.echo(f"Serving on http://{shown_host}:{port}/  (Ctrl-C stops)", err=True)
    for role, email, password in made:
        click.echo(f"  {role:<15} {email:<32} password: {password}")
    uvicorn.run(
        app,
        host=host,
        port=port,
        proxy_headers=True,
        forwarded_allow_ips=forwarded_allow_ips,
        log_level="info" if logging.getLogger().level <= logging.INFO else "warning",
    )


@main.group()
def user() -> None:
    """Accounts of the web app."""


@user.command("add")
@click.argument("email")
@click.option("--district", "district_name", required=True)
@click.option(
    "--role",
    type=click.Choice(["district-admin", "school-admin", "teacher"]),
    required=True,
)
@click.option("--school", "schools", multiple=True, help="A school admin's school (repeatable).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def user_add(
    obj: Context,
    email: str,
    district_name: str,
    role: str,
    schools: tuple[str, ...],
    password_stdin: bool,
    as_json: bool,
) -> None:
    """Add an account. Without --password-stdin it signs in only with a one-time link."""
    from rostersync.web import accounts

    password = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    with _user_errors():
        ident = accounts.add_user(
            obj.engine, email, district_name, role, schools_named=schools, password=password
        )
    if as_json:
        _print_json({"user": ident, "email": email.strip().lower(), "role": role})
    else:
        click.echo(f"Account {ident} ({role}) added for {email.strip().lower()}.")


@main.group()
def token() -> None:
    """Personal API tokens (sent as `Authorization: Bearer …`)."""


@token.command("create")
@click.argument("email")
@click.option("--name", default=None, help="What the token is for.")
@click.pass_obj
def token_create(obj: Context, email: str, name: str | None) -> None:
    """Create a token with the account's permissions; it is printed once, only its hash kept."""
    from rostersync.web import accounts, auth

    with _user_errors():
        user_id = accounts.user_id_by_email(obj.engine, email)
        token_id, secret = auth.create_token(obj.engine, user_id, name)
    click.echo(f"Token {token_id}: {secret}")


@token.command("revoke")
@click.argument("token_id", type=int)
@click.pass_obj
def token_revoke(obj: Context, token_id: int) -> None:
    """Revoke a token by its id."""
    from rostersync.web import auth

    with _user_errors():
        auth.revoke_token(obj.engine, token_id)
    click.echo(f"Token {token_id} revoked.")


@main.group("extension-key")
def extension_key() -> None:
    """Keys the browser extension uses for one district."""


@extension_key.command("create")
@click.argument("district_name", metavar="DISTRICT")
@click.option("--name", default="extension", show_default=True)
@click.pass_obj
def extension_key_create(obj: Context, district_name: str, name: str) -> None:
    """Create a key; it is printed once, only its hash kept."""
    from rostersync.web import extension

    with _user_errors(), obj.engine.begin() as conn:
        key_id, key = extension.create_key(
            conn, service.district_id(conn, district_name), name, "cli"
        )
    click.echo(f"Extension key {key_id}: {key}")


@extension_key.command("revoke")
@click.argument("key_id", type=int)
@click.pass_obj
def extension_key_revoke(obj: Context, key_id: int) -> None:
    """Revoke a key by its id."""
    from rostersync.store.schema import extension_keys
    from rostersync.web import extension

    with _user_errors(), obj.engine.begin() as conn:
        district = conn.execute(
            sa.select(extension_keys.c.district_id).where(extension_keys.c.id == key_id)
        ).scalar()
        if district is None:
            _fail(f"There is no extension key {key_id}.")
        extension.revoke_key(conn, int(district), key_id)
    click.echo(f"Extension key {key_id} revoked.")


if __name__ == "__main__":
    main()
