"""Diff: new, changed, unchanged and gone against a source's snapshot, per entity mode."""

from __future__ import annotations

import polars as pl
import sqlalchemy as sa

from rostersync.sync.diff import SNAPSHOT_SCHEMA, diff, load_snapshot
from rostersync.sync.stage import stage
from tests.fakes.memory_source import Roster, district
from tests.sync.helpers import World


def staged_people(roster: Roster) -> pl.DataFrame:
    return stage(roster.feed()).frames["person"]


def snapshot_of(frame: pl.DataFrame, first_id: int = 100) -> pl.DataFrame:
    """The snapshot a run of ``frame`` would leave: every record with its hash and an id."""
    return frame.select(
        "ext_id",
        pl.col("hash").alias("old_hash"),
        pl.int_range(first_id, first_id + frame.height, dtype=pl.Int64).alias("canonical_id"),
    ).cast(SNAPSHOT_SCHEMA)


def ids(frame: pl.DataFrame) -> list[str]:
    return sorted(frame["ext_id"].to_list())


def test_full_mode_splits_new_changed_unchanged_and_gone() -> None:
    snapshot = snapshot_of(staged_people(district()))
    roster = district().withdraw("s05", "s06").student("s13", "lincoln")
    roster.person("s01")["grade"] = "10"
    roster.person("s02")["email"] = "s02.new@district.example"

    d = diff("person", staged_people(roster), snapshot, "full", [])

    assert ids(d.new) == ["s13"]
    assert ids(d.changed) == ["s01", "s02"]
    assert ids(d.gone) == ["s05", "s06"]
    assert d.unchanged.height == 15 - 2 - 2
    assert "s13" not in ids(d.unchanged)
    by_ext = dict(snapshot.select("ext_id", "canonical_id").iter_rows())
    assert dict(d.changed.select("ext_id", "canonical_id").iter_rows()) == {
        "s01": by_ext["s01"],
        "s02": by_ext["s02"],
    }
    assert dict(d.gone.iter_rows()) == {"s05": by_ext["s05"], "s06": by_ext["s06"]}
    assert "canonical_id" not in d.new.columns


def test_full_mode_against_an_empty_snapshot_is_all_new() -> None:
    staged = staged_people(district())

    d = diff("person", staged, snapshot_of(staged.clear()), "full", [])

    assert d.new.height == 15
    assert d.changed.height == d.unchanged.height == d.gone.height == 0


def test_full_mode_with_an_empty_frame_makes_everything_gone() -> None:
    snapshot = snapshot_of(staged_people(district()))

    d = diff("person", staged_people(Roster()), snapshot, "full", [])

    assert d.gone.height == 15


def test_delta_mode_only_deleted_ids_are_gone() -> None:
    snapshot = snapshot_of(staged_people(district()))
    changes = (
        Roster().student("s13", "lincoln").student("s01", "lincoln", grade="10", sis_id="S0001")
    )

    d = diff("person", staged_people(changes), snapshot, "delta", ["s05", "s06", "never-seen"])

    assert ids(d.new) == ["s13"]
    assert ids(d.changed) == ["s01"]
    assert ids(d.gone) == ["s05", "s06"]
    assert d.unchanged.height == 0
    assert d.snapshot.height == 15


def test_delta_mode_without_deletions_removes_nothing() -> None:
    snapshot = snapshot_of(staged_people(district()))

    d = diff("person", staged_people(Roster()), snapshot, "delta", [])

    assert d.gone.height == d.new.height == d.changed.height == 0


def test_absent_mode_changes_nothing() -> None:
    snapshot = snapshot_of(staged_people(district()))

    d = diff("person", staged_people(Roster()), snapshot, "absent", ["s01"])

    assert d.new.height == d.changed.height == d.unchanged.height == d.gone.height == 0
    assert d.snapshot.height == 15


def test_snapshot_is_what_the_last_run_applied(world: World) -> None:
    world.synced(district())
    staged = stage(district().feed()).frames

    source_id = world.source_id("sis")

    with world.store.connect() as conn:
        snapshots = {e: load_snapshot(conn, source_id, e) for e in staged}
        other = load_snapshot(conn, source_id + 1, "person")

    for entity, frame in staged.items():
        d = diff(entity, frame, snapshots[entity], "full", [])
        assert d.new.height == d.changed.height == d.gone.height == 0, entity
        assert d.unchanged.height == frame.height
    assert snapshots["person"]["canonical_id"].to_list() != []
    assert other.height == 0


def test_an_absent_entity_keeps_its_records_in_a_sync(world: World) -> None:
    """A source that says nothing about people this time leaves them, and the enrollments of the
    feed may still point at them."""
    world.synced(district())
    roster = district().enroll("bio", "s05")
    feed = roster.feed(modes={"person": "absent"})
    feed.frames["person"] = feed.frames["person"].clear()

    result = world.synced(feed)

    assert result.changes == {"enrollment": {"create": 1}}
    assert world.count("people", status="active") == 15
    assert "s05@district.example" in world.roster_of("bio")
    with world.store.connect() as conn:
        left = conn.execute(sa.text("SELECT count(*) FROM snapshots WHERE entity = 'person'"))
        assert left.scalar_one() == 15
