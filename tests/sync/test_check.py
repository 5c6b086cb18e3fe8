"""Check: the safety rules — share and floor, empty feeds, truncated feeds."""

from __future__ import annotations

import polars as pl
import pytest

from rostersync.domain.feed import Entity, Feed
from rostersync.sync.check import check
from rostersync.sync.resolve import CHANGE_SCHEMA, ID_MAP_SCHEMA, EntityPlan
from rostersync.sync.stage import Staged, stage
from tests.fakes.memory_source import Roster, district

SHARE = 0.1
FLOOR = 10


def plan(entity: Entity, before: int, **actions: int) -> EntityPlan:
    """A plan for ``entity`` of a source that held ``before`` records, with ``actions`` changes
    (for example ``archive=3``)."""
    rows = [
        (entity, n, action, None, None) for action, count in actions.items() for n in range(count)
    ]
    empty = pl.DataFrame()
    return EntityPlan(
        entity=entity,
        create=empty,
        update=empty,
        remove=pl.Series("id", [], dtype=pl.Int64),
        changes=pl.DataFrame(rows, schema=CHANGE_SCHEMA, orient="row"),
        snapshot_upsert=empty,
        snapshot_delete=pl.Series("ext_id", [], dtype=pl.Utf8),
        id_map_add=pl.DataFrame(schema=ID_MAP_SCHEMA),
        mapping=empty,
        before_count=before,
    )


def full(roster: Roster | None = None, **options: object) -> Staged:
    return stage((roster or district()).feed(**options))


@pytest.mark.parametrize(
    ("before", "removed", "held"),
    [
        (200, 20, False),  # exactly 10 %
        (200, 21, True),
        (30, 10, False),  # 33 %, but within the floor of 10
        (30, 11, True),
        (5, 5, False),  # a tiny school may lose everyone
        (1000, 100, False),
        (1000, 101, True),
    ],
)
def test_removals_beyond_share_and_floor_hold(before: int, removed: int, held: bool) -> None:
    archive = removed // 2
    reasons = check(
        full(), [plan("person", before, archive=archive, end=removed - archive)], SHARE, FLOOR
    )

    assert bool(reasons) is held
    if held:
        (reason,) = reasons
        assert f"{removed} of {before} people would be archived or ended" in reason
        assert "the limit is 10%" in reason


@pytest.mark.parametrize(
    ("before", "updated", "held"),
    [(200, 20, False), (200, 21, True), (12, 10, False), (12, 11, True)],
)
def test_updates_beyond_share_and_floor_hold(before: int, updated: int, held: bool) -> None:
    reasons = check(full(), [plan("section", before, update=updated)], SHARE, FLOOR)

    assert bool(reasons) is held
    if held:
        assert f"{updated} of {before} sections would change" in reasons[0]


def test_creations_never_hold() -> None:
    assert check(full(), [plan("person", 10, create=5000)], SHARE, FLOOR) == []


def test_first_import_is_never_held_by_share() -> None:
    assert check(full(), [plan("enrollment", 0, create=19)], SHARE, FLOOR) == []


def test_each_record_type_is_judged_on_its_own() -> None:
    reasons = check(
        full(),
        [
            plan("person", 1000, archive=50),
            plan("enrollment", 100, end=40),
            plan("section", 100, update=30),
        ],
        SHARE,
        FLOOR,
    )

    assert len(reasons) == 2
    assert "40 of 100 enrollments" in reasons[0]
    assert "30 of 100 sections" in reasons[1]


def test_share_and_floor_are_parameters() -> None:
    plans = [plan("person", 100, archive=40)]

    assert check(full(), plans, 0.5, FLOOR) == []
    assert check(full(), plans, 0.1, 50) == []
    assert check(full(), plans, 0.1, 39) != []


def test_empty_feed_holds_when_the_source_had_records() -> None:
    reasons = check(full(Roster()), [plan("person", 15, archive=15)], SHARE, FLOOR)

    (reason,) = reasons
    assert "lists no people, but the last sync had 15" in reason


def test_empty_entity_on_a_first_import_does_not_hold() -> None:
    assert check(full(Roster()), [plan("person", 0)], SHARE, FLOOR) == []


def test_empty_frame_of_a_delta_or_absent_entity_does_not_hold() -> None:
    delta = stage(Feed(mode="delta"))
    absent = stage(Feed(mode="full", modes={"person": "absent"}))

    assert check(delta, [plan("person", 15)], SHARE, FLOOR) == []
    assert check(absent, [plan("person", 15)], SHARE, FLOOR) == []


def test_truncated_feed_holds_whatever_it_changes() -> None:
    reasons = check(
        full(truncated="users.csv ends mid-row at line 4,112"),
        [plan("person", 100, archive=1)],
        SHARE,
        FLOOR,
    )

    assert reasons == ["The feed looks cut short: users.csv ends mid-row at line 4,112"]
