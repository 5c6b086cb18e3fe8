"""Diff: split each staged entity into new, changed, unchanged and gone against the snapshot.

The snapshot of a source holds, per entity, every external id it listed at its last applied
run with the content hash and canonical id. The diff is two joins on the external id.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import sqlalchemy as sa

from rostersync.domain.feed import Entity, Mode
from rostersync.store import bulk

SNAPSHOT_SCHEMA: dict[str, pl.DataType] = {
    "ext_id": pl.Utf8(),
    "old_hash": pl.Int64(),
    "canonical_id": pl.Int64(),
}


@dataclass
class EntityDiff:
    entity: Entity
    #: staged rows whose external id the snapshot does not know
    new: pl.DataFrame
    #: staged rows whose hash differs, with ``canonical_id``
    changed: pl.DataFrame
    #: staged rows with the same hash, with ``canonical_id``
    unchanged: pl.DataFrame
    #: snapshot rows (``ext_id``, ``canonical_id``) the source no longer lists
    gone: pl.DataFrame
    #: the whole snapshot as it was, for references of delta feeds
    snapshot: pl.DataFrame


def load_snapshot(conn: sa.Connection, source_id: int, entity: Entity) -> pl.DataFrame:
    """The source's snapshot of one entity as the last applied run left it."""
    return bulk.read_committed(
        conn,
        "SELECT external_id, content_hash, canonical_id FROM snapshots "
        "WHERE source_id = :source AND entity = :entity",
        {"source": source_id, "entity": entity},
        SNAPSHOT_SCHEMA,
    )


def diff(
    entity: Entity,
    staged: pl.DataFrame,
    snapshot: pl.DataFrame,
    mode: Mode,
    deleted: list[str],
) -> EntityDiff:
    """Compare ``staged`` (with ``ext_id`` and ``hash``) to ``snapshot``."""
    if snapshot.height == 0:
        # A first import: everything is new. No join, so no copy of a feed of millions.
        nothing = staged.clear().with_columns(pl.lit(None, dtype=pl.Int64).alias("canonical_id"))
        return EntityDiff(
            entity=entity,
            new=staged,
            changed=nothing,
            unchanged=nothing,
            gone=snapshot.select("ext_id", "canonical_id"),
            snapshot=snapshot,
        )
    joined = staged.join(snapshot, on="ext_id", how="left")
    known = pl.col("canonical_id").is_not_null()
    new = joined.filter(~known).drop("old_hash", "canonical_id")
    changed = joined.filter(known & (pl.col("hash") != pl.col("old_hash"))).drop("old_hash")
    unchanged = joined.filter(known & (pl.col("hash") == pl.col("old_hash"))).drop("old_hash")

    if mode == "full":
        gone = snapshot.join(staged.select("ext_id"), on="ext_id", how="anti")
    elif mode == "delta" and deleted:
        removed = pl.DataFrame({"ext_id": deleted}, schema={"ext_id": pl.Utf8()})
        gone = snapshot.join(removed, on="ext_id", how="semi")
    else:
        gone = snapshot.clear()
    return EntityDiff(
        entity=entity,
        new=new,
        changed=changed,
        unchanged=unchanged,
        gone=gone.select("ext_id", "canonical_id"),
        snapshot=snapshot,
    )
