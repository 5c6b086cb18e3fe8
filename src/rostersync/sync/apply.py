"""Apply: write one run's plan — records, snapshot, id map and change log — in the caller's
transaction. This is the only code that writes roster records.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

import polars as pl
import sqlalchemy as sa

from rostersync.domain.feed import Entity
from rostersync.store import bulk
from rostersync.store.schema import ENTITY_TABLES, snapshot_digests
from rostersync.sync.resolve import CANONICAL, EntityPlan, source_namespace

logger = logging.getLogger(__name__)

Checkpoint = Callable[[str], None]
"""Called between the writes of a run with the step's name; tests use it to inject faults."""


def no_checkpoint(step: str) -> None:
    return None


def timestamp(conn: sa.Connection, moment: datetime) -> str:
    """A UTC time as the store keeps it on this database."""
    text = moment.strftime("%Y-%m-%d %H:%M:%S.%f")
    return text if bulk.dialect(conn) == "sqlite" else text + "+00:00"


def write_changes(
    conn: sa.Connection, run_id: int, plans: Sequence[EntityPlan], *, applied: bool = False
) -> int:
    """Record every change of the plans against the run, a slice at a time.

    ``applied`` says the plans' records were written in this transaction; on SQLite the change
    rows of created records are then copied from their tables by one statement, which spares
    a Python round trip per record on a first import of millions.
    """
    written = 0
    for plan in plans:
        if applied and bulk.dialect(conn) == "sqlite" and _contiguous(plan.create["id"]):
            written += _copy_create_changes(conn, run_id, plan)
        else:
            for offset in range(0, plan.create.height, CHANGE_SLICE):
                written += _insert_changes(conn, run_id, plan.create_changes(offset, CHANGE_SLICE))
        written += _insert_changes(conn, run_id, plan.changes)
    return written


def _contiguous(ids: pl.Series) -> bool:
    if ids.len() == 0:
        return False
    low, high = ids.min(), ids.max()
    assert isinstance(low, int) and isinstance(high, int)
    return high - low + 1 == ids.len() and ids.n_unique() == ids.len()


def _copy_create_changes(conn: sa.Connection, run_id: int, plan: EntityPlan) -> int:
    """INSERT … SELECT the create rows of a plan whose new ids form one range (SQLite only).

    ``json_object`` writes the same compact JSON, keys in the same order, as the frame path.
    """
    table = ENTITY_TABLES[plan.entity].name
    fields = ", ".join(f"'{c}', {c}" for c in CANONICAL[plan.entity])
    low, high = plan.create["id"].min(), plan.create["id"].max()
    conn.exec_driver_sql(
        "INSERT INTO changes (run_id, entity, canonical_id, action, before, after) "
        f"SELECT ?, ?, id, 'create', NULL, json_object({fields}) FROM {table} "
        "WHERE id BETWEEN ? AND ? ORDER BY id",
        (run_id, plan.entity, low, high),
    )
    return plan.create.height


CHANGE_SLICE = 500_000


def _insert_changes(conn: sa.Connection, run_id: int, frame: pl.DataFrame) -> int:
    if frame.height == 0:
        return 0
    return bulk.insert(
        conn,
        "changes",
        frame.select(
            pl.lit(run_id).alias("run_id"), "entity", "canonical_id", "action", "before", "after"
        ),
    )


# TODO(perf): a first import writes about four rows per record (the record, its snapshot row, its
# id map entries and its change row); on SQLite that costs about 5 x the floor of the benchmark
# (parsing and inserting the raw rows), above the 4 x milestone. Fewer or cheaper rows per record
# — for example snapshot and id map entries written by INSERT ... SELECT like the change rows —
# are the way down.
def apply(
    conn: sa.Connection,
    plans: Sequence[EntityPlan],
    *,
    district_id: int,
    source_id: int,
    run_id: int,
    now: datetime,
    digests: Mapping[Entity, tuple[int, int] | None],
    checkpoint: Checkpoint = no_checkpoint,
) -> None:
    """Write every plan in entity order, then the snapshot digests and the change log.

    ``digests`` gives, per entity, the (digest, record count) of the snapshot after this run,
    or None where it is not known (a delta feed): that entity's digest is then dropped.
    """
    stamp = timestamp(conn, now)
    conn.execute(snapshot_digests.delete().where(snapshot_digests.c.source_id == source_id))
    known = [
        {"source_id": source_id, "entity": entity, "digest": value[0], "records": value[1]}
        for entity, value in digests.items()
        if value is not None
    ]
    if known:
        conn.execute(snapshot_digests.insert(), known)
    for plan in plans:
        _apply_entity(conn, plan, district_id, source_id, stamp)
        checkpoint(f"apply:{plan.entity}")
        logger.info(
            "Run %s applied %s: %s created, %s updated, %s removed.",
            run_id,
            plan.entity,
            plan.create.height,
            plan.update.height,
            plan.remove.len(),
        )
    write_changes(conn, run_id, plans, applied=True)
    checkpoint("apply:changes")


def _apply_entity(
    conn: sa.Connection, plan: EntityPlan, district_id: int, source_id: int, stamp: str
) -> None:
    entity: Entity = plan.entity
    table = ENTITY_TABLES[entity].name
    columns = CANONICAL[entity]

    if entity == "enrollment":
        bulk.insert(
            conn,
            table,
            plan.create.select(
                "id",
                *columns,
                pl.lit(stamp).alias("start_at"),
                pl.lit(source_id).alias("source_id"),
            ),
        )
        bulk.update(
            conn,
            table,
            "id",
            plan.update.select("id", "role", pl.lit(source_id).alias("source_id")),
        )
        bulk.update(
            conn,
            table,
            "id",
            plan.remove.to_frame("id").select("id", pl.lit(stamp).alias("end_at")),
        )
    else:
        extra = [pl.lit(source_id).alias("source_id")] if entity == "section" else []
        bulk.insert(
            conn,
            table,
            plan.create.select(
                "id",
                pl.lit(district_id).alias("district_id"),
                *columns,
                *extra,
                pl.lit("active").alias("status"),
                pl.lit(stamp).alias("created_at"),
                pl.lit(stamp).alias("updated_at"),
            ),
        )
        bulk.update(
            conn,
            table,
            "id",
            plan.update.select("id", *columns, *extra, "status", pl.lit(stamp).alias("updated_at")),
        )
        bulk.update(
            conn,
            table,
            "id",
            plan.remove.to_frame("id").select(
                "id", pl.lit("archived").alias("status"), pl.lit(stamp).alias("updated_at")
            ),
        )

    # Snapshot: drop what is gone and what is rewritten, then write the rewritten rows.
    drop = plan.snapshot_delete
    if drop.len():
        bulk.delete(
            conn,
            "snapshots",
            drop.to_frame("external_id").select(
                pl.lit(source_id).alias("source_id"),
                pl.lit(entity).alias("entity"),
                "external_id",
            ),
        )
    bulk.insert(
        conn,
        "snapshots",
        plan.snapshot_upsert.sort("ext_id").select(
            pl.lit(source_id).alias("source_id"),
            pl.lit(entity).alias("entity"),
            pl.col("ext_id").alias("external_id"),
            pl.col("hash").alias("content_hash"),
            "canonical_id",
        ),
    )
    bulk.insert(
        conn,
        "id_map",
        plan.id_map_add.sort("namespace", "external_id").select(
            pl.lit(district_id).alias("district_id"),
            pl.lit(entity).alias("entity"),
            "namespace",
            "external_id",
            "canonical_id",
        ),
    )


__all__ = ["Checkpoint", "apply", "no_checkpoint", "source_namespace", "write_changes"]
