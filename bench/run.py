"""The side-by-side benchmark: the roster service against the floor and the peer, on the same files.

Generates (or reuses) a district's base and day-two exports, then runs each measured step in a
child process and records its wall seconds and peak resident memory:

    floor (SQLite raw insert) · peer first load · peer churn reload
    for each database: rostersync first import · no-change re-sync · churn re-sync

Only the `sync` calls of the product are timed; creating the database, the district and the
source is setup. See docs/benchmarks.md for what each figure means and the targets.

    python bench/run.py --size M [--db sqlite,postgresql] [--workdir DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_PG_URL = "postgresql+psycopg://root@127.0.0.1:5432/rostersync_bench"


class BenchError(Exception):
    """A step failed or reported something other than what the benchmark expects."""


@dataclass
class Step:
    """One measured child process."""

    name: str
    seconds: float
    peak_mb: float
    reference: str = ""  # the peer step this one is compared with
    detail: dict[str, Any] = field(default_factory=dict)


def measure(command: list[str], label: str) -> tuple[float, float, str]:
    """Run ``command`` as a child; returns (wall seconds, peak RSS in MB, stdout).

    The peak comes from wait4's rusage of that one child (ru_maxrss, KiB on Linux), so it is the
    child's own high-water mark, not one sampled by polling.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    if child.returncode != 0:
        tail = "\n".join((stderr or stdout).strip().splitlines()[-15:])
        raise BenchError(f"{label} failed (exit {child.returncode}): {' '.join(command)}\n{tail}")
    return seconds, usage.ru_maxrss / 1024, stdout


def run_setup(command: list[str], label: str) -> str:
    """Run an untimed setup command; raise with its output if it fails."""
    result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise BenchError(f"{label} failed (exit {result.returncode}): {' '.join(command)}\n{tail}")
    return result.stdout


# -- exports --------------------------------------------------------------------------------------


def system_code(export: Path) -> str | None:
    manifest = export / "manifest.csv"
    if not manifest.exists():
        return None
    for line in manifest.read_text().splitlines():
        name, _, value = line.partition(",")
        if name == "source.systemCode":
            return value
    return None


def ensure_exports(args: argparse.Namespace) -> tuple[Path, Path]:
    """Generate the base and day-two exports unless the work folder already holds them."""
    stem = f"{args.size}-seed{args.seed}-{args.ids}"
    base, day2 = args.workdir / stem, args.workdir / f"{stem}-day2"
    generate = [sys.executable, str(BENCH_DIR / "generate.py"), args.size]
    options = ["--seed", str(args.seed), "--ids", args.ids]
    wanted = f"{args.size}:seed={args.seed}:ids={args.ids}"
    if system_code(base) != f"{wanted}:churn=0":
        shutil.rmtree(base, ignore_errors=True)
        print(run_setup([*generate, str(base), *options], "generating the base export"), end="")
    if system_code(day2) != f"{wanted}:churn=0.01":
        shutil.rmtree(day2, ignore_errors=True)
        command = [*generate, str(day2), *options, "--day2", str(base)]
        print(run_setup(command, "generating the day-two export"), end="")
    return base, day2


def export_mb(export: Path) -> float:
    return sum(path.stat().st_size for path in export.glob("*.csv")) / 1e6


# -- references -----------------------------------------------------------------------------------


def run_references(base: Path, day2: Path, args: argparse.Namespace) -> list[Step]:
    references = [sys.executable, str(BENCH_DIR / "references.py")]
    floor_db = args.workdir / "floor.sqlite"
    seconds, peak, _ = measure([*references, "floor", str(base), "--db", str(floor_db)], "floor")
    floor_db.unlink(missing_ok=True)
    steps = [Step("floor (SQLite raw insert)", seconds, peak)]
    print(f"  floor: {seconds:.2f} s, {peak:.0f} MB", flush=True)

    pipeline_dir = args.workdir / "peer"
    shutil.rmtree(pipeline_dir, ignore_errors=True)
    hashed = ["--row-hash"] if args.peer_row_hash else []
    for name, export in (("peer first load", base), ("peer churn reload", day2)):
        command = [*references, "peer", str(export), "--pipeline-dir", str(pipeline_dir), *hashed]
        seconds, peak, _ = measure(command, name)
        steps.append(Step(name, seconds, peak))
        print(f"  {name}: {seconds:.2f} s, {peak:.0f} MB", flush=True)
    shutil.rmtree(pipeline_dir, ignore_errors=True)
    return steps


# -- the product ----------------------------------------------------------------------------------


def database_url(db: str, args: argparse.Namespace) -> str:
    if db == "sqlite":
        return f"sqlite:///{(args.workdir / 'bench.sqlite').resolve()}"
    return str(args.pg_url)


def fresh_database(db: str, args: argparse.Namespace) -> None:
    """An empty store: a new SQLite file, or the PostgreSQL database dropped and created again."""
    if db == "sqlite":
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{args.workdir / 'bench.sqlite'}{suffix}").unlink(missing_ok=True)
        return
    recreate_postgres(str(args.pg_url))


def recreate_postgres(url: str) -> None:
    """Drop the PostgreSQL database the URL names and create it again, empty."""
    import psycopg
    from psycopg import sql

    url = url.replace("postgresql+psycopg://", "postgresql://", 1)
    server, _, name = url.rpartition("/")
    name = name.split("?")[0]
    with psycopg.connect(f"{server}/postgres", autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def sync_result(stdout: str, label: str) -> dict[str, Any]:
    """The JSON object `sync --json` prints (the last JSON line, if it prints more)."""
    candidates = [stdout.strip()] + [
        line for line in reversed(stdout.splitlines()) if line.lstrip().startswith("{")
    ]
    for text in candidates:
        try:
            result = json.loads(text)
        except ValueError:
            continue
        if isinstance(result, dict):
            return result
    raise BenchError(f"{label}: `sync --json` printed no JSON object:\n{stdout[-2000:]}")


def total_changes(result: dict[str, Any]) -> int:
    changes = result.get("changes") or {}
    return sum(
        int(count)
        for actions in changes.values()
        if isinstance(actions, dict)
        for count in actions.values()
    )


def run_product(db: str, base: Path, day2: Path, args: argparse.Namespace) -> list[Step]:
    cli = [str(args.rostersync), "--database-url", database_url(db, args)]
    fresh_database(db, args)
    run_setup([*cli, "init"], f"{db}: init")
    run_setup(
        [*cli, "district", "add", "bench", "--timezone", "America/New_York"],
        f"{db}: district add",
    )
    run_setup(
        [*cli, "source", "add", "sis", "--district", "bench", "--kind", "oneroster-csv",
         "--set", f"path={base.resolve()}"],
        f"{db}: source add",
    )  # fmt: skip

    steps: list[Step] = []
    plan = [
        ("rostersync first import", None, "peer first load", "some"),
        ("rostersync no-change re-sync", None, "peer churn reload", "none"),
        ("rostersync churn re-sync", day2, "peer churn reload", "some"),
    ]
    for name, switch_to, reference, expected in plan:
        label = f"{name} ({db})"
        if switch_to is not None:
            run_setup(
                [*cli, "source", "set", "sis", "--set", f"path={switch_to.resolve()}"],
                f"{db}: source set",
            )
        seconds, peak, stdout = measure([*cli, "sync", "sis", "--json"], label)
        result = sync_result(stdout, label)
        if result.get("status") != "succeeded":
            raise BenchError(
                f"{label}: run {result.get('run')} ended {result.get('status')!r}, not "
                f"'succeeded':\n{json.dumps(result, indent=2)[:2000]}"
            )
        changed = total_changes(result)
        if expected == "none" and changed:
            raise BenchError(
                f"{label}: a re-sync of unchanged files reported {changed} changes: "
                f"{json.dumps(result.get('changes'))[:2000]}"
            )
        if expected == "some" and not changed:
            raise BenchError(f"{label}: the run reported no changes; the export did change")
        steps.append(
            Step(label, seconds, peak, reference, {"run": result.get("run"), "changes": changed})
        )
        print(f"  {label}: {seconds:.2f} s, {peak:.0f} MB, {changed:,} changes", flush=True)
    return steps


# -- report ---------------------------------------------------------------------------------------


def report(steps: list[Step]) -> list[dict[str, Any]]:
    """Rows of the table: each step with ratios against the floor and its peer step."""
    by_name = {step.name: step for step in steps}
    floor = by_name.get("floor (SQLite raw insert)")
    rows = []
    for step in steps:
        peer = by_name.get(step.reference) if step.reference else None
        rows.append(
            {
                **asdict(step),
                "x_floor": step.seconds / floor.seconds if floor else None,
                "x_peer": step.seconds / peer.seconds if peer else None,
                "peak_x_peer": step.peak_mb / peer.peak_mb if peer else None,
            }
        )
    return rows


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    def ratio(value: float | None) -> str:
        return "" if value is None else f"{value:.2f}×"

    header = ("step", "seconds", "peak MB", "× floor", "× peer", "peak × peer")
    lines = [
        (
            row["name"],
            f"{row['seconds']:.2f}",
            f"{row['peak_mb']:.0f}",
            ratio(row["x_floor"]),
            ratio(row["x_peer"]),
            ratio(row["peak_x_peer"]),
        )
        for row in rows
    ]
    widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header))]
    print(f"\n{title}")
    for cells in [header, tuple("-" * width for width in widths), *lines]:
        first = cells[0].ljust(widths[0])
        rest = "  ".join(
            cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)
        )
        print(f"{first}  {rest}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--size", choices=["S", "M", "XL"], default="M")
    parser.add_argument(
        "--db", default="sqlite", help="comma-separated stores: sqlite, postgresql (default sqlite)"
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "rostersync-bench",
        help="where exports, databases and the peer's pipeline go (exports are reused)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--ids", choices=["uuid", "compact"], default="compact")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the figures here")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="PostgreSQL database URL")
    parser.add_argument(
        "--rostersync", type=Path, default=Path(sys.executable).parent / "rostersync",
        help="the product's CLI (default: the one beside this Python)",
    )  # fmt: skip
    parser.add_argument(
        "--skip-references", action="store_true", help="measure only the product's steps"
    )
    parser.add_argument(
        "--skip-product", action="store_true", help="measure only the floor and the peer"
    )
    parser.add_argument(
        "--peer-row-hash", action="store_true",
        help="let the peer version rows by content hash (reloads touch only changed rows)",
    )  # fmt: skip
    args = parser.parse_args(argv)

    databases = [db.strip() for db in args.db.split(",") if db.strip()]
    unknown = sorted(set(databases) - {"sqlite", "postgresql"})
    if unknown:
        parser.error(f"unknown --db {', '.join(unknown)}: use sqlite and/or postgresql")
    if not args.skip_product and not args.rostersync.exists():
        parser.error(f"{args.rostersync} not found: install the product or pass --rostersync")
    args.workdir.mkdir(parents=True, exist_ok=True)

    try:
        base, day2 = ensure_exports(args)
        print(f"{args.size}: base {export_mb(base):.1f} MB, day two {export_mb(day2):.1f} MB")
        steps: list[Step] = []
        if not args.skip_references:
            steps += run_references(base, day2, args)
        if not args.skip_product:
            for db in databases:
                steps += run_product(db, base, day2, args)
    except BenchError as error:
        print(f"\nBENCHMARK FAILED: {error}", file=sys.stderr)
        return 1

    rows = report(steps)
    print_table(
        rows, f"size {args.size} ({args.ids} ids, seed {args.seed}), {os.cpu_count()} cores"
    )
    if args.json:
        figures = {
            "size": args.size,
            "seed": args.seed,
            "ids": args.ids,
            "export_mb": round(export_mb(base), 1),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "peer_row_hash": args.peer_row_hash,
            "steps": rows,
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
