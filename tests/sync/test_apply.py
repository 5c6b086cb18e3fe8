"""Apply: a plan becomes records, snapshot rows, id map entries and change rows, in one
transaction, on each database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from rostersync import service
from rostersync.domain.feed import ENTITIES
from rostersync.store import schema
from rostersync.sync import engine
from rostersync.sync.apply import Checkpoint, apply, no_checkpoint
from rostersync.sync.diff import diff, load_snapshot
from rostersync.sync.resolve import Context, EntityPlan, plan_entity
from rostersync.sync.stage import Staged, stage
from tests.fakes.memory_source import FILES, Roster, district
from tests.sync.helpers import World


def plan_and_apply(
    world: World, roster: Roster, checkpoint: Checkpoint = no_checkpoint
) -> tuple[int, list[EntityPlan], Staged]:
    """Run the stages by hand up to and including apply, for one run of the ``sis`` source."""
    source_id = world.source_id("sis")
    with world.store.connect() as conn:
        district_id = service.district_id(conn, world.district)
    run_id = engine.start_run(world.store, source_id, "test", None)
    feed = roster.feed()
    staged = stage(feed)
    now = datetime.now(UTC)
    ctx = Context(
        district_id=district_id, source_id=source_id, authoritative=True, now=now, file=dict(FILES)
    )
    plans = []
    mappings: dict[Any, Any] = {}
    with world.store.begin() as conn:
        for entity in ENTITIES:
            d = diff(
                entity,
                staged.frames[entity],
                load_snapshot(conn, source_id, entity),
                feed.modes[entity],
                feed.deleted[entity],
            )
            plan, problems = plan_entity(conn, ctx, d, mappings)
            assert problems == []
            mappings[entity] = plan.mapping
            plans.append(plan)
        apply(
            conn,
            plans,
            district_id=district_id,
            source_id=source_id,
            run_id=run_id,
            now=now,
            digests={},
            checkpoint=checkpoint,
        )
    return run_id, plans, staged


def rows(world: World, table: str, *where: Any) -> list[dict[str, Any]]:
    t = schema.metadata.tables[table]
    with world.store.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(t).where(*where))]


def test_apply_writes_records_snapshot_id_map_and_changes(world: World) -> None:
    steps: list[str] = []
    source_id = world.source_id("sis")

    run_id, plans, staged = plan_and_apply(world, district(), steps.append)

    assert steps == [
        "apply:school",
        "apply:term",
        "apply:person",
        "apply:section",
        "apply:enrollment",
        "apply:changes",
    ]
    schools = {r["name"]: r for r in rows(world, "schools")}
    assert set(schools) == {"Lincoln High", "Jefferson Middle"}
    assert schools["Lincoln High"]["sis_id"] == "100"
    assert all(r["status"] == "active" and r["created_at"] for r in schools.values())
    sections = rows(world, "sections")
    assert {r["source_id"] for r in sections} == {source_id}
    enrollments = rows(world, "enrollments")
    assert len(enrollments) == 19
    assert all(
        r["start_at"] and r["end_at"] is None and r["source_id"] == source_id for r in enrollments
    )
    assert {(r["role"]) for r in enrollments} == {"owner", "student"}

    # One snapshot row per record, with the staged content hash and the canonical id.
    for entity in ENTITIES:
        snapshot = {
            r["external_id"]: (r["content_hash"], r["canonical_id"])
            for r in rows(world, "snapshots", schema.snapshots.c.entity == entity)
        }
        frame = staged.frames[entity]
        assert {k: v[0] for k, v in snapshot.items()} == dict(
            frame.select("ext_id", "hash").iter_rows()
        )
        table = schema.ENTITY_TABLES[entity].name
        assert sorted(v[1] for v in snapshot.values()) == sorted(
            r["id"] for r in rows(world, table)
        )

    # The id map knows every id the records came with.
    entries = {
        (r["entity"], r["namespace"], r["external_id"]): r["canonical_id"]
        for r in rows(world, "id_map")
    }
    s01 = world.person("s01")["id"]
    assert entries[("person", f"source:{source_id}", "s01")] == s01
    assert entries[("person", "sis", "S0001")] == s01
    assert entries[("person", "email", "s01@district.example")] == s01
    lincoln = schools["Lincoln High"]["id"]
    assert entries[("school", "sis", "100")] == lincoln
    assert entries[("school", "name", "lincoln high")] == lincoln
    assert not [k for k in entries if k[0] == "enrollment"]

    changes = rows(world, "changes")
    assert len(changes) == 39
    assert {r["run_id"] for r in changes} == {run_id}
    assert {r["action"] for r in changes} == {"create"}
    assert sum(p.all_changes().height for p in plans) == 39


def test_apply_archives_ends_updates_and_forgets_gone_records(world: World) -> None:
    plan_and_apply(world, district())
    s05 = world.person("s05")["id"]
    math_s05 = world.canonical("enrollment", "math:s05")
    bio = world.section("bio")
    roster = district().withdraw("s05")
    roster.section_row("bio")["name"] = "Biology II"

    run_id, _, _ = plan_and_apply(world, roster)

    assert world.row("person", s05)["status"] == "archived"
    assert world.row("enrollment", math_s05)["end_at"] is not None
    renamed = world.section("bio")
    assert renamed["name"] == "Biology II"
    assert renamed["updated_at"] >= bio["updated_at"]
    assert renamed["created_at"] == bio["created_at"]
    assert world.count("people") == 15 and world.count("enrollments") == 19
    gone = rows(world, "snapshots", schema.snapshots.c.external_id.in_(["s05", "math:s05"]))
    assert gone == []
    # The id map keeps every id ever seen, so a returning student is the same person.
    assert world.canonical("person", "s05") == s05
    assert {
        (r["entity"], r["action"])
        for r in rows(world, "changes", schema.changes.c.run_id == run_id)
    } == {("person", "archive"), ("enrollment", "end"), ("section", "update")}


@pytest.mark.parametrize(
    "step", ["apply:school", "apply:person", "apply:enrollment", "apply:changes"]
)
def test_a_failure_inside_apply_rolls_the_whole_run_back(world: World, step: str) -> None:
    before = world.dump()

    def crash(at: str) -> None:
        if at == step:
            raise RuntimeError(at)

    with pytest.raises(RuntimeError):
        plan_and_apply(world, district(), crash)

    assert world.dump() == before
    assert rows(world, "changes") == []
