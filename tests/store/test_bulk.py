"""Bulk reads and writes on both databases: round trips, nulls, empty strings, id allocation."""

from __future__ import annotations

import polars as pl
import sqlalchemy as sa

from rostersync.store import bulk

SCHEMA: dict[str, pl.DataType] = {
    "source_id": pl.Int64(),
    "entity": pl.Utf8(),
    "external_id": pl.Utf8(),
    "content_hash": pl.Int64(),
    "canonical_id": pl.Int64(),
}


def _rows(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "source_id": [1] * n,
            "entity": ["person"] * n,
            "external_id": [f'ext-{i}, "quoted"' for i in range(n)],
            "content_hash": [(-1) ** i * (2**62 + i) for i in range(n)],
            "canonical_id": list(range(n)),
        },
        schema=SCHEMA,
    )


def _read(conn: sa.Connection) -> pl.DataFrame:
    return bulk.read(
        conn,
        "SELECT source_id, entity, external_id, content_hash, canonical_id FROM snapshots "
        "WHERE source_id = :s ORDER BY canonical_id",
        {"s": 1},
        SCHEMA,
    )


def test_insert_read_update_delete_round_trip(store: sa.Engine) -> None:
    rows = _rows(120_001)
    with store.begin() as conn:
        assert bulk.insert(conn, "snapshots", rows) == rows.height
        assert _read(conn).equals(rows)

        changed = rows.head(3).select(
            "source_id", "entity", "external_id", pl.lit(7, dtype=pl.Int64).alias("content_hash")
        )
        bulk.update(conn, "snapshots", ["source_id", "entity", "external_id"], changed)
        bulk.delete(conn, "snapshots", rows.tail(2).select("source_id", "entity", "external_id"))
        after = _read(conn)
    assert after.height == rows.height - 2
    assert after["content_hash"].head(3).to_list() == [7, 7, 7]
    assert after["content_hash"][3] == rows["content_hash"][3]


def test_nulls_and_empty_strings_stay_apart(store: sa.Engine) -> None:
    frame = pl.DataFrame(
        {
            "id": [1, 2],
            "district_id": [1, 1],
            "name": ["", None],
            "status": ["active"] * 2,
            "created_at": ["2026-01-01 00:00:00.000000"] * 2,
            "updated_at": ["2026-01-01 00:00:00.000000"] * 2,
        },
    )
    with store.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO districts (id, name, created_at) VALUES (1, 'd', '2026-01-01 00:00:00')"
        )
        bulk.insert(conn, "schools", frame)
        back = bulk.read(
            conn,
            "SELECT id, name FROM schools ORDER BY id",
            {},
            {"id": pl.Int64(), "name": pl.Utf8()},
        )
    assert back["name"].to_list() == ["", None]


def test_allocated_ids_do_not_collide_with_written_rows(store: sa.Engine) -> None:
    """Ids reserved in a transaction that writes them are never handed out again."""
    stamp = "2026-01-01 00:00:00.000000"
    seen: set[int] = set()
    with store.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO districts (id, name, created_at) VALUES (1, 'd', '2026-01-01 00:00:00')"
        )
    for count in (5, 3, 1):
        with store.begin() as conn:
            ids = bulk.allocate_ids(conn, "terms", count)
            assert ids.len() == count and ids.n_unique() == count
            assert not seen & set(ids.to_list())
            seen |= set(ids.to_list())
            bulk.insert(
                conn,
                "terms",
                ids.to_frame("id").with_columns(
                    pl.lit(1).alias("district_id"),
                    pl.lit("active").alias("status"),
                    pl.lit(stamp).alias("created_at"),
                    pl.lit(stamp).alias("updated_at"),
                ),
            )
    with store.begin() as conn:
        assert bulk.allocate_ids(conn, "terms", 0).len() == 0
