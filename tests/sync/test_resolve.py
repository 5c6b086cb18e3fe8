"""Resolve: identity order, one canonical record per source record, and references that point
nowhere."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import polars as pl
import pytest

from rostersync import service
from rostersync.domain.feed import Entity, Feed
from rostersync.store.schema import id_map
from rostersync.sync.resolve import Context, identify, map_references
from rostersync.sync.stage import stage
from tests.fakes.memory_source import FILES, Roster, district, frame
from tests.sync.helpers import World


def context(world: World, source: str = "sis") -> Context:
    with world.store.connect() as conn:
        district_id = service.district_id(conn, world.district)
    return Context(
        district_id=district_id,
        source_id=world.source_id(source),
        authoritative=True,
        now=datetime.now(UTC),
        file=dict(FILES),
    )


def staged(entity: Entity, rows: list[dict[str, Any]]) -> pl.DataFrame:
    feed = Feed(mode="full", frames={entity: frame(entity, rows)}, files=FILES.copy())
    result = stage(feed)
    assert result.problems == []
    return result.frames[entity]


def known(world: World, ctx: Context, entity: Entity, entries: dict[str, str | int]) -> None:
    """Put ``namespace:external id`` → canonical id entries into the district's id map."""
    with world.store.begin() as conn:
        for key, canonical in entries.items():
            namespace, _, external = key.rpartition(":")
            conn.execute(
                id_map.insert().values(
                    district_id=ctx.district_id,
                    entity=entity,
                    namespace=namespace,
                    external_id=external,
                    canonical_id=int(canonical),
                )
            )


def resolve_people(
    world: World, ctx: Context, rows: list[dict[str, Any]], held: list[int] | None = None
) -> tuple[dict[str, tuple[int | None, str | None]], list[Any]]:
    with world.store.connect() as conn:
        found, warnings = identify(
            conn, ctx, "person", staged("person", rows), pl.Series(held or [], dtype=pl.Int64)
        )
    return {
        ext: (cid, by)
        for ext, cid, by in found.select("ext_id", "canonical_id", "matched_by").iter_rows()
    }, warnings


EVERY_ID = {"sis_id": "S1", "state_id": "ST1", "google_id": "G1", "email": "e@x.org"}


@pytest.mark.parametrize(
    ("ext_id", "ids", "expected", "by"),
    [
        ("x", EVERY_ID, 1, "source"),
        ("y", EVERY_ID, 2, "sis"),
        ("y", {**EVERY_ID, "sis_id": "S-unknown"}, 3, "state"),
        ("y", {"google_id": "G1", "email": "e@x.org"}, 4, "google"),
        ("y", {"email": " E@X.org"}, 5, "email"),
        ("z", {}, None, None),
        ("other", {"email": "nobody@x.org"}, None, None),
    ],
)
def test_people_are_matched_by_source_id_then_sis_state_google_email(
    world: World, ext_id: str, ids: dict[str, str], expected: int | None, by: str | None
) -> None:
    ctx = context(world)
    known(
        world,
        ctx,
        "person",
        {
            f"source:{ctx.source_id}:x": 1,
            "sis:S1": 2,
            "state:ST1": 3,
            "google:G1": 4,
            "email:e@x.org": 5,
            f"source:{ctx.source_id + 1}:other": 6,
        },
    )

    found, warnings = resolve_people(world, ctx, [{"ext_id": ext_id, "role": "student", **ids}])

    canonical, matched_by = found[ext_id]
    assert canonical == expected
    if by == "source":
        assert matched_by == f"source:{ctx.source_id}"
    else:
        assert matched_by == by
    assert warnings == []


def test_schools_are_matched_by_sis_id_then_name(world: World) -> None:
    ctx = context(world)
    known(world, ctx, "school", {"sis:100": 7, "name:lincoln high": 8})
    rows = [
        {"ext_id": "a", "name": "Jefferson", "sis_id": "100"},
        {"ext_id": "b", "name": "  LINCOLN   High "},
        {"ext_id": "c", "name": "Lincoln Middle"},
    ]

    with world.store.connect() as conn:
        found, _ = identify(
            conn, ctx, "school", staged("school", rows), pl.Series([], dtype=pl.Int64)
        )

    assert found.select("ext_id", "canonical_id").rows() == [("a", 7), ("b", 8), ("c", None)]


def test_two_new_records_claiming_one_known_email_are_kept_apart_with_a_warning(
    world: World,
) -> None:
    ctx = context(world)
    known(world, ctx, "person", {"email:twin@x.org": 5})

    found, warnings = resolve_people(
        world,
        ctx,
        [
            {"ext_id": "a", "role": "student", "email": "twin@x.org"},
            {"ext_id": "b", "role": "student", "email": "Twin@X.org"},
        ],
    )

    assert found == {"a": (5, "email"), "b": (None, None)}
    (warning,) = warnings
    assert (warning.record_id, warning.file, warning.line) == ("b", "people.csv", 3)
    assert "shares its email" in warning.message


def test_a_record_cannot_claim_what_another_record_of_the_source_holds(world: World) -> None:
    ctx = context(world)
    known(world, ctx, "person", {"email:e@x.org": 5})

    found, warnings = resolve_people(
        world, ctx, [{"ext_id": "new", "role": "student", "email": "e@x.org"}], held=[5]
    )

    assert found == {"new": (None, None)}
    (warning,) = warnings
    assert warning.record_id == "new"


def test_first_import_with_two_records_sharing_an_email_keeps_both_and_warns(
    world: World,
) -> None:
    roster = district()
    roster.person("s02")["email"] = "s01@district.example"

    result = world.synced(roster)

    assert world.person("s01")["id"] != world.person("s02")["id"]
    assert world.count("people") == 15
    warnings = [w for w in result.warnings if w.record_id == "s02"]
    assert len(warnings) == 1
    assert (warnings[0].file, warnings[0].line) == ("people.csv", 6)
    assert "shares its email" in warnings[0].message
    assert world.run(result.run_id)["warnings"] == [w.as_dict() for w in result.warnings]
    # The email leads to the first of the two, for a sighting and for other sources.
    seen = service.record_sighting(world.store, world.district, email="s01@district.example")
    assert seen["person"] == world.person("s01")["id"]


def test_the_same_person_under_one_source_id_is_not_a_clash(world: World) -> None:
    world.synced(district())

    result = world.synced(district().enroll("art", "s01"))

    assert result.warnings == []


# --------------------------------------------------------------------------------------------
# References


def mapping(**ids: int) -> pl.DataFrame:
    return pl.DataFrame(
        {"ext_id": list(ids), "canonical_id": list(ids.values())},
        schema={"ext_id": pl.Utf8, "canonical_id": pl.Int64},
    )


def empty() -> pl.DataFrame:
    return mapping()


def offline_context() -> Context:
    return Context(
        district_id=1, source_id=1, authoritative=True, now=datetime.now(UTC), file=dict(FILES)
    )


def test_unknown_required_reference_is_a_problem_with_file_line_column_record() -> None:
    sections = staged(
        "section",
        Roster()
        .section("math", "lincoln", "Algebra I")
        .section("bio", "roosevelt", "Biology")
        .sections,
    )

    kept, problems, warnings = map_references(
        offline_context(), "section", sections, {"school": mapping(lincoln=7), "term": empty()}
    )

    (problem,) = problems
    assert (problem.file, problem.line, problem.column, problem.record_id) == (
        "sections.csv",
        3,
        "school",
        "bio",
    )
    assert "unknown school reference 'roosevelt'" in problem.message
    assert problem.fix
    assert warnings == []
    assert kept.select("ext_id", "school_id").rows() == [("math", 7)]


@pytest.mark.parametrize(
    ("person", "section", "column", "value"),
    [("s99", "math", "person", "s99"), ("s01", "gym", "section", "gym")],
)
def test_unknown_enrollment_references_are_problems(
    person: str, section: str, column: str, value: str
) -> None:
    enrollments = staged(
        "enrollment", Roster().enroll("math", "s01").enroll(section, person).enrollments
    )

    _, problems, _ = map_references(
        offline_context(),
        "enrollment",
        enrollments,
        {"section": mapping(math=3), "person": mapping(s01=4)},
    )

    (problem,) = problems
    assert (problem.file, problem.line, problem.column, problem.record_id) == (
        "enrollments.csv",
        3,
        column,
        f"{section}:{person}",
    )
    assert f"unknown {column} reference {value!r}" in problem.message


def test_unknown_optional_reference_is_a_warning_and_left_empty() -> None:
    roster = Roster().student("s01", "lincoln").student("s02", "nowhere")

    kept, problems, warnings = map_references(
        offline_context(),
        "person",
        staged("person", roster.people),
        {"school": mapping(lincoln=7)},
    )

    assert problems == []
    (warning,) = warnings
    assert (warning.line, warning.column, warning.record_id) == (3, "school", "s02")
    assert kept.select("ext_id", "school_id").rows() == [("s01", 7), ("s02", None)]


def test_many_unknown_references_are_summed_up() -> None:
    roster = Roster()
    for n in range(25):
        roster.enroll("gym", f"s{n}")

    _, problems, _ = map_references(
        offline_context(),
        "enrollment",
        staged("enrollment", roster.enrollments),
        {"section": empty(), "person": mapping(**{f"s{n}": n for n in range(25)})},
    )

    assert len(problems) == 21
    assert "5 more enrollment record(s) have an unknown section reference" in problems[-1].message


def test_a_reference_to_a_record_the_feed_dropped_is_reported(world: World) -> None:
    """An enrollment that did not change still points at its person: if the person left the
    feed, the run stops instead of keeping a membership of someone gone."""
    world.synced(district())
    before = world.dump()
    roster = district()
    roster.people = [p for p in roster.people if p["ext_id"] != "s03"]

    result = world.sync(roster)

    assert result.status == "failed"
    assert {(p.column, p.record_id) for p in result.problems} == {
        ("person", "math:s03"),
        ("person", "bio:s03"),
    }
    assert world.dump() == before
    assert world.changes(result.run_id) == []
