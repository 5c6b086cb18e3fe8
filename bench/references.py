"""The two reference loaders the roster service is measured against, each runnable on its own.

floor: parse every CSV of an export with the csv module and insert the raw rows (all text, one
table per file) into a fresh SQLite file with executemany, in one transaction. Nothing is
compared, resolved or kept: it is the least any loader of these files into SQLite can do.

peer: dlt's scd2 merge (a generic incremental loader that also keeps history) fed pyarrow Tables
read from the CSVs, into DuckDB, one resource per file keyed on sourcedId. A first run on a new
pipeline folder is the first load; running again on the same folder with the day-two export is
the churn reload, where dlt retires changed and vanished rows and inserts the new versions.

    python bench/references.py floor DIR [--db FILE]
    python bench/references.py peer DIR [--pipeline-dir D] [--row-hash]

Each prints the seconds it took (reading the CSVs included) on stdout, and details on stderr.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# The entity files of a OneRoster 1.1 bulk export that the peer loads (the manifest has no ids).
ENTITY_FILES = ["orgs", "academicSessions", "courses", "classes", "users", "enrollments"]


def floor(export: Path, db_path: Path) -> dict[str, int]:
    """Insert every CSV's raw rows into a fresh SQLite file; returns rows per table."""
    if db_path.exists():
        db_path.unlink()
    counts: dict[str, int] = {}
    connection = sqlite3.connect(db_path)
    try:
        with connection:  # one transaction, committed on success
            for path in sorted(export.glob("*.csv")):
                table = path.stem
                with open(path, newline="", encoding="utf-8") as handle:
                    reader = csv.reader(handle)
                    header = next(reader)
                    columns = ", ".join(f'"{name}" TEXT' for name in header)
                    marks = ", ".join("?" for _ in header)
                    connection.execute(f'CREATE TABLE "{table}" ({columns})')
                    cursor = connection.executemany(
                        f'INSERT INTO "{table}" VALUES ({marks})', reader
                    )
                    counts[table] = cursor.rowcount
    finally:
        connection.close()
    return counts


def peer(export: Path, pipeline_dir: Path, row_hash: bool = False) -> dict[str, int]:
    """Load the export with dlt's scd2 merge into DuckDB; returns rows read per file.

    By default this is dlt as configured for Arrow input: the parquet normaliser adds a random
    `_dlt_id` to each row, which scd2 takes as the row's version, so a reload retires every row
    and inserts it again whether it changed or not (the configuration the targets were set
    against). With ``row_hash`` each table gets a content hash column that scd2 uses as the row
    version instead, so a reload only retires and inserts the rows that changed.
    """
    # Arrow input only gets the `_dlt_id` column scd2 needs when the parquet normaliser adds it.
    os.environ.setdefault("NORMALIZE__PARQUET_NORMALIZER__ADD_DLT_ID", "true")
    # No usage reports: the benchmark machines have no network, and the timing must not wait.
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    # dlt warns that the key hint differs from the Arrow field (not null); it is expected here.
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "ERROR")
    try:
        import dlt
        import pyarrow as pa
        import pyarrow.csv as pa_csv
    except ImportError as error:
        raise SystemExit(
            f"the peer reference needs dlt with DuckDB and pyarrow ({error.name} is missing): "
            "pip install 'dlt[duckdb,parquet]' (or the project's `bench` extra)"
        ) from error

    tables: dict[str, Any] = {}
    for name in ENTITY_FILES:
        path = export / f"{name}.csv"
        with open(path, newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle))
        # Every column as text, as the floor keeps it: the comparison is of loading, not typing.
        options = pa_csv.ConvertOptions(column_types=dict.fromkeys(header, pa.string()))
        table = pa_csv.read_csv(path, convert_options=options)
        if row_hash:
            import polars as pl

            hashes = pl.from_arrow(table).hash_rows(seed=0).cast(pl.String)
            table = table.append_column("row_hash", hashes.to_arrow())
        tables[name] = table

    def rows(table: Any) -> Iterator[Any]:
        yield table

    disposition: dict[str, Any] = {"disposition": "merge", "strategy": "scd2"}
    if row_hash:
        disposition["row_version_column_name"] = "row_hash"
    resources = [
        dlt.resource(
            rows(table),
            name=name,
            primary_key="sourcedId",
            write_disposition=disposition,
        )
        for name, table in tables.items()
    ]
    pipeline_dir.mkdir(parents=True, exist_ok=True)
    pipeline = dlt.pipeline(
        pipeline_name="roster_peer",
        pipelines_dir=str(pipeline_dir / "pipelines"),
        destination=dlt.destinations.duckdb(str(pipeline_dir / "roster_peer.duckdb")),
        dataset_name="roster",
        progress="log" if os.environ.get("BENCH_PEER_PROGRESS") else None,
    )
    pipeline.run(resources)
    return {name: table.num_rows for name, table in tables.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    floor_parser = commands.add_parser("floor", help="raw CSV rows into a fresh SQLite file")
    floor_parser.add_argument("export", type=Path, help="folder of a OneRoster CSV export")
    floor_parser.add_argument(
        "--db", type=Path, help="SQLite file to write (replaced; default: a temporary file)"
    )
    peer_parser = commands.add_parser("peer", help="dlt scd2 merge of Arrow tables into DuckDB")
    peer_parser.add_argument("export", type=Path, help="folder of a OneRoster CSV export")
    peer_parser.add_argument(
        "--pipeline-dir",
        type=Path,
        help="dlt pipeline folder; reuse it for the churn reload (default: a temporary folder)",
    )
    peer_parser.add_argument(
        "--row-hash",
        action="store_true",
        help="version rows by a content hash, so a reload only touches changed rows",
    )
    args = parser.parse_args(argv)

    if not (args.export / "manifest.csv").exists():
        raise SystemExit(f"{args.export} is not a OneRoster CSV export (no manifest.csv)")

    scratch = Path(tempfile.mkdtemp(prefix="rostersync-bench-"))
    try:
        started = time.perf_counter()
        if args.command == "floor":
            counts = floor(args.export, args.db or scratch / "floor.sqlite")
        else:
            counts = peer(args.export, args.pipeline_dir or scratch, row_hash=args.row_hash)
        elapsed = time.perf_counter() - started
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    detail = ", ".join(f"{name} {count:,}" for name, count in counts.items())
    print(f"{args.command} {args.export}: {detail}", file=sys.stderr)
    print(f"{elapsed:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
