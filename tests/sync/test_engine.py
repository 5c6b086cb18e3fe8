"""The sync engine end to end, on SQLite and PostgreSQL: roster stories from first import to
held runs, crashes and bad input, through ``engine.sync`` / ``approve`` / ``discard`` and the
service."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from rostersync import service
from rostersync.domain.feed import Feed
from rostersync.errors import RosterError
from rostersync.sync import engine
from tests.fakes.memory_source import FEEDS, Roster, delta_feed, district
from tests.sync.helpers import World


def actions(world: World, run_id: int, entity: str | None = None) -> dict[str, int]:
    counts: dict[str, int] = {}
    for change in world.changes(run_id, entity):
        key = f"{change['entity']}:{change['action']}"
        counts[key] = counts.get(key, 0) + 1
    return counts


# --------------------------------------------------------------------------------------------
# First import and idempotence


def test_first_import_creates_every_record_with_one_change_each(world: World) -> None:
    result = world.synced(district())

    assert result.fetched == {"school": 2, "term": 0, "person": 15, "section": 3, "enrollment": 19}
    assert result.changes == {
        "school": {"create": 2},
        "person": {"create": 15},
        "section": {"create": 3},
        "enrollment": {"create": 19},
    }
    changes = world.changes(result.run_id)
    assert len(changes) == 39
    assert len({(c["entity"], c["canonical_id"]) for c in changes}) == 39
    assert world.count("schools", status="active") == 2
    assert world.count("people", status="active") == 15
    assert world.count("sections", status="active") == 3
    assert world.count("enrollments", end_at=None) == 19

    lincoln = world.school("lincoln")
    assert (lincoln["name"], lincoln["sis_id"]) == ("Lincoln High", "100")
    math = world.section("math")
    assert (math["name"], math["school_id"], math["period"]) == ("Algebra I", lincoln["id"], "1")
    student = world.person("s01")
    assert (student["email"], student["role"], student["grade"], student["school_id"]) == (
        "s01@district.example",
        "student",
        "9",
        lincoln["id"],
    )
    assert world.roster_of("bio") == {
        "chen@district.example": "owner",
        **{f"s0{n}@district.example": "student" for n in range(1, 5)},
    }
    assert world.run(result.run_id)["status"] == "succeeded"


def full_diff(roster: Roster) -> Feed:
    """The roster's feed, saying nothing of terms: the engine cannot tell from digests alone
    that nothing changed, so it diffs every record."""
    return roster.feed(modes={"term": "absent"})


@pytest.mark.parametrize("again", [Roster.feed, full_diff], ids=["digest", "full-diff"])
def test_the_same_feed_twice_changes_nothing_the_second_time(
    world: World, again: Callable[[Roster], Feed]
) -> None:
    world.synced(district())
    world.synced(district().withdraw("s05").enroll("art", "s01"))
    before = world.dump()

    second = world.synced(again(district().withdraw("s05").enroll("art", "s01")))

    assert second.changes == {}
    assert world.changes(second.run_id) == []
    # The digests are the engine's shortcut, not roster data: an absent entity drops its own.
    after = world.dump()
    for dump in (before, after):
        dump.pop("snapshot_digests", None)
    assert after == before


# --------------------------------------------------------------------------------------------
# Withdrawals, returns and changes of sections, teachers and schools


def test_withdrawn_student_is_ended_and_archived_never_deleted(world: World) -> None:
    world.synced(district())
    enrollment_rows = world.count("enrollments")

    result = world.synced(district().withdraw("s05"))

    assert actions(world, result.run_id) == {"person:archive": 1, "enrollment:end": 1}
    assert world.person("s05")["status"] == "archived"
    assert world.count("enrollments") == enrollment_rows
    (row,) = [r for r in world.enrollments() if r["email"] == "s05@district.example"]
    assert row["end_at"] is not None
    assert "s05@district.example" not in world.roster_of("math")
    assert len(world.roster_of("math")) == 8


def test_student_re_added_gets_a_new_enrollment_and_keeps_history(world: World) -> None:
    world.synced(district())
    person_id = world.person("s05")["id"]
    world.synced(district().withdraw("s05"))

    result = world.synced(district())

    assert actions(world, result.run_id) == {"person:restore": 1, "enrollment:create": 1}
    assert world.person("s05")["id"] == person_id
    assert world.person("s05")["status"] == "active"
    history = [r for r in world.enrollments() if r["email"] == "s05@district.example"]
    assert len(history) == 2
    assert history[0]["end_at"] is not None
    assert history[1]["end_at"] is None
    assert history[0]["id"] != history[1]["id"]
    assert world.roster_of("math")["s05@district.example"] == "student"


def test_renamed_section_is_updated_in_place(world: World) -> None:
    world.synced(district())
    section_id = world.section("math")["id"]
    roster = district()
    roster.section_row("math")["name"] = "Algebra I (Honors)"

    result = world.synced(roster)

    assert result.changes == {"section": {"update": 1}}
    (change,) = world.changes(result.run_id)
    assert change["canonical_id"] == section_id
    assert change["before"] == {"name": "Algebra I"}
    assert change["after"] == {"name": "Algebra I (Honors)"}
    assert world.section("math")["name"] == "Algebra I (Honors)"
    assert len(world.roster_of("math")) == 9


@pytest.mark.parametrize("stable_id", [False, True], ids=["new-enrollment-id", "same-id"])
def test_changed_teacher_ends_the_old_owner_and_enrolls_the_new(
    world: World, stable_id: bool
) -> None:
    def roster(teacher: str) -> Roster:
        r = district()
        r.enrollments = [e for e in r.enrollments if e["ext_id"] != "math:rivera"]
        return r.enroll("math", teacher, "owner", ext_id="math-owner" if stable_id else None)

    world.synced(roster("rivera"))

    result = world.synced(roster("chen"))

    assert actions(world, result.run_id) == {"enrollment:end": 1, "enrollment:create": 1}
    owners = [r for r in world.enrollments(world.section("math")["id"]) if r["role"] == "owner"]
    assert [(r["email"], r["end_at"] is None) for r in owners] == [
        ("rivera@district.example", False),
        ("chen@district.example", True),
    ]
    assert world.person("rivera")["status"] == "active"


def test_co_teacher_added(world: World) -> None:
    world.synced(district())

    result = world.synced(district().enroll("math", "chen", "co-teacher"))

    assert actions(world, result.run_id) == {"enrollment:create": 1}
    roster = world.roster_of("math")
    assert roster["rivera@district.example"] == "owner"
    assert roster["chen@district.example"] == "co-teacher"


def test_student_moved_to_another_school(world: World) -> None:
    world.synced(district())
    person_id = world.person("s10")["id"]
    roster = district().unenroll("art", "s10").enroll("math", "s10")
    roster.person("s10")["school_ext_id"] = "lincoln"

    result = world.synced(roster)

    moved = world.person("s10")
    assert moved["id"] == person_id
    assert moved["school_id"] == world.school("lincoln")["id"]
    assert actions(world, result.run_id) == {
        "person:update": 1,
        "enrollment:end": 1,
        "enrollment:create": 1,
    }
    assert "s10@district.example" in world.roster_of("math")
    assert "s10@district.example" not in world.roster_of("art")


# --------------------------------------------------------------------------------------------
# Identity: sightings and several sources


def test_pending_student_from_a_sighting_is_attached_by_a_later_roster(world: World) -> None:
    seen = service.record_sighting(
        world.store, world.district, email="Nia@District.example ", name="Nia Park", device="cb-17"
    )
    again = service.record_sighting(
        world.store, world.district, email="nia@district.example", device="cb-17"
    )
    assert seen["status"] == "pending" and seen["created"]
    assert again == {"person": seen["person"], "status": "pending", "created": False}
    assert world.count("people") == 1
    assert world.count("sightings") == 2

    roster = (
        district().student("s13", "lincoln", email="nia@district.example").enroll("math", "s13")
    )
    result = world.synced(roster)

    nia = world.person("s13")
    assert nia["id"] == seen["person"]
    assert nia["status"] == "active"
    assert nia["given_name"] == "S13"
    assert world.count("people") == 16
    assert world.roster_of("math")["nia@district.example"] == "student"
    (attach,) = [c for c in world.changes(result.run_id, "person") if c["action"] == "attach"]
    assert attach["canonical_id"] == seen["person"]

    later = service.record_sighting(world.store, world.district, email="nia@district.example")
    assert later == {"person": seen["person"], "status": "matched", "created": False}
    assert world.count("people") == 16


@pytest.mark.parametrize("shared", ["email", "sis_id"])
def test_two_sources_naming_one_person_keep_one_person(world: World, shared: str) -> None:
    world.add_source("sheet")
    world.synced(district())
    s01 = world.person("s01")
    sheet = (
        Roster()
        .school("L", "Lincoln High")
        .teacher("t-9", "L", email="rivera@district.example")
        .section("chess", "L", "Chess club", teacher="t-9")
    )
    if shared == "email":
        sheet.student("x-1", "L", email="s01@district.example")
    else:
        sheet.student("x-1", "L", email="s01.other@district.example", sis_id="S0001")
    sheet.enroll("chess", "x-1")

    world.synced(sheet, "sheet")

    assert world.person("x-1", "sheet")["id"] == s01["id"]
    assert world.school("L", "sheet")["id"] == world.school("lincoln")["id"]
    assert world.person("t-9", "sheet")["id"] == world.person("rivera")["id"]
    assert world.count("people") == 15
    assert world.count("schools") == 2
    assert len(world.roster_of("chess", "sheet")) == 2

    def in_section(section: str, source: str) -> bool:
        rows = world.enrollments(world.section(section, source)["id"])
        return any(r["person_id"] == s01["id"] and r["end_at"] is None for r in rows)

    # The sheet drops the student: the SIS still lists them, so they stay active.
    world.synced(sheet.copy().withdraw("x-1"), "sheet")
    assert world.person("s01")["status"] == "active"
    assert in_section("math", "sis")
    assert not in_section("chess", "sheet")

    # The SIS drops them while the sheet lists them again: still active.
    world.synced(sheet, "sheet")
    world.synced(district().withdraw("s01"))
    assert world.person("s01")["status"] == "active"
    assert not in_section("math", "sis")
    assert in_section("chess", "sheet")

    # Gone from both: archived.
    world.synced(sheet.copy().withdraw("x-1"), "sheet")
    assert world.person("s01")["status"] == "archived"


def test_re_keyed_student_stays_one_active_person(world: World) -> None:
    """A source that re-issues a student's id (same email) moves the student to the new id."""
    world.synced(district())
    person_id = world.person("s05")["id"]
    roster = district().withdraw("s05")
    roster.student("s05-new", "lincoln", email="s05@district.example").enroll("math", "s05-new")

    world.synced(roster)

    assert world.person("s05-new")["id"] == person_id
    assert world.person("s05-new")["status"] == "active"
    assert world.roster_of("math")["s05@district.example"] == "student"
    assert world.count("people") == 15


# --------------------------------------------------------------------------------------------
# Authority and local data


def test_authoritative_sync_ends_a_hand_made_enrollment(world: World) -> None:
    world.synced(district())
    by_hand = world.enroll_by_hand("math", "s09")
    assert "s09@district.example" in world.roster_of("math")

    result = world.synced(district())

    assert actions(world, result.run_id) == {"enrollment:end": 1}
    (change,) = world.changes(result.run_id)
    assert change["canonical_id"] == by_hand
    assert world.row("enrollment", by_hand)["end_at"] is not None
    assert "s09@district.example" not in world.roster_of("math")


def test_non_authoritative_sync_only_adds(world: World) -> None:
    world.synced(district())
    world.settings(authoritative=False)
    by_hand = world.enroll_by_hand("math", "s09")
    roster = district().withdraw("s05", "s06").student("s13", "lincoln").enroll("math", "s13")

    result = world.synced(roster)

    assert actions(world, result.run_id) == {"person:create": 1, "enrollment:create": 1}
    assert world.row("enrollment", by_hand)["end_at"] is None
    assert world.person("s05")["status"] == "active"
    assert world.count("enrollments", end_at=None) == 21
    assert {
        "s05@district.example",
        "s06@district.example",
        "s09@district.example",
        "s13@district.example",
    } <= set(world.roster_of("math"))


def test_teacher_groups_survive_every_sync_and_an_approved_mass_withdrawal(world: World) -> None:
    world.synced(district(students=40))
    world.make_group("rivera", "Reading group", ["s01", "s02", "s03"])
    world.make_group("okafor", "Clay", ["s30", "s31"])
    groups = {k: v for k, v in world.dump().items() if k in ("groups", "group_members")}

    world.synced(district(students=40).withdraw("s02"))
    held = world.sync(district(students=40).withdraw(*[f"s{n:02d}" for n in range(1, 21)]))
    assert held.status == "held"
    approved = engine.approve(world.store, held.run_id, by="admin@district.example")

    assert approved.status == "succeeded"
    assert world.person("s01")["status"] == "archived"
    assert {k: v for k, v in world.dump().items() if k in ("groups", "group_members")} == groups


# --------------------------------------------------------------------------------------------
# Safety: held runs, approve, discard, dry run


def mass_withdrawal() -> Roster:
    return district(students=40).withdraw(*[f"s{n:02d}" for n in range(1, 16)])


@pytest.mark.parametrize(
    "feed",
    [mass_withdrawal, lambda: Roster().feed()],
    ids=["mass-withdrawal", "empty-feed"],
)
def test_held_run_applies_nothing_and_shows_its_plan(world: World, feed: Callable[[], Any]) -> None:
    world.synced(district(students=40))
    before = world.dump()

    result = world.sync(feed())

    assert result.status == "held"
    assert result.held_reasons
    assert world.dump() == before
    run = world.run(result.run_id)
    assert run["status"] == "held"
    assert run["held_reasons"] == result.held_reasons
    planned = actions(world, result.run_id)
    assert planned.get("person:archive", 0) >= 15
    assert planned.get("enrollment:end", 0) >= 15


def test_empty_feed_hold_names_every_emptied_record_type(world: World) -> None:
    world.synced(district())

    result = world.sync(Roster().feed())

    assert result.status == "held"
    text = " ".join(result.held_reasons)
    for label in ("schools", "people", "sections", "enrollments"):
        assert f"lists no {label}" in text


def test_truncated_feed_is_held(world: World) -> None:
    world.synced(district())
    before = world.dump()

    cut_short = district().withdraw("s12")

    result = world.sync(cut_short.feed(truncated="people.csv ends in the middle of a row"))

    assert result.status == "held"
    assert any("people.csv ends in the middle" in r for r in result.held_reasons)
    assert world.dump() == before


def test_approving_a_held_run_applies_it(world: World) -> None:
    world.synced(district(students=40))
    held = world.sync(mass_withdrawal())
    planned = actions(world, held.run_id)

    result = engine.approve(world.store, held.run_id, by="admin@district.example")

    assert result.status == "succeeded"
    assert result.run_id == held.run_id
    assert actions(world, held.run_id) == planned
    run = world.run(held.run_id)
    assert (run["status"], run["decided_by"]) == ("succeeded", "admin@district.example")
    assert world.person("s01")["status"] == "archived"
    assert world.person("s16")["status"] == "active"
    assert len(world.roster_of("math")) == 12
    with pytest.raises(RosterError, match="not held"):
        engine.approve(world.store, held.run_id)

    # The approved run is the new baseline: the same feed again changes nothing.
    assert world.synced(mass_withdrawal()).changes == {}


def test_discarding_a_held_run_leaves_the_store_as_it_was(world: World) -> None:
    world.synced(district(students=40))
    before = world.dump()
    held = world.sync(mass_withdrawal())

    result = engine.discard(world.store, held.run_id, by="admin@district.example")

    assert result.status == "discarded"
    assert world.dump() == before
    assert world.run(held.run_id)["status"] == "discarded"
    with pytest.raises(RosterError, match="not held"):
        engine.approve(world.store, held.run_id)
    # The next sync of the same feed is held again: discarding did not lower the guard.
    assert world.sync(mass_withdrawal()).status == "held"


def test_safety_limits_are_district_settings(world: World) -> None:
    world.synced(district(students=40))
    world.settings(safety_share=0.5)

    assert world.sync(mass_withdrawal()).status == "succeeded"


def test_dry_run_reports_the_plan_and_changes_nothing(world: World) -> None:
    world.synced(district())
    before = world.dump()
    roster = district().withdraw("s05").student("s13", "jefferson").enroll("art", "s13")
    roster.section_row("bio")["name"] = "Biology II"

    result = world.sync(roster, dry_run=True)

    assert result.status == "dry-run"
    assert result.changes == {
        "person": {"create": 1, "archive": 1},
        "section": {"update": 1},
        "enrollment": {"create": 1, "end": 1},
    }
    assert actions(world, result.run_id) == {
        "person:create": 1,
        "person:archive": 1,
        "section:update": 1,
        "enrollment:create": 1,
        "enrollment:end": 1,
    }
    assert world.dump() == before
    assert world.synced(roster).changes == result.changes


# --------------------------------------------------------------------------------------------
# Faults and bad input


@pytest.mark.parametrize("step", ["apply:person", "apply:enrollment"])
def test_crash_mid_apply_leaves_the_store_unchanged(world: World, step: str) -> None:
    world.synced(district())
    before = world.dump()
    roster = district().withdraw("s05").student("s13", "jefferson").enroll("art", "s13")
    roster.section_row("bio")["name"] = "Biology II"

    def crash(at: str) -> None:
        if at == step:
            raise RuntimeError(f"power cut at {at}")

    result = world.sync(roster, checkpoint=crash)

    assert result.status == "failed"
    assert "power cut" in (result.error or "")
    assert world.run(result.run_id)["status"] == "failed"
    assert world.dump() == before
    assert world.changes(result.run_id) == []

    retry = world.synced(roster)
    assert retry.changes == {
        "person": {"create": 1, "archive": 1},
        "section": {"update": 1},
        "enrollment": {"create": 1, "end": 1},
    }
    assert world.person("s05")["status"] == "archived"
    assert "s13@district.example" in world.roster_of("art")


def test_crash_during_first_import_leaves_an_empty_store(world: World) -> None:
    before = world.dump()

    def crash(at: str) -> None:
        if at == "apply:enrollment":
            raise RuntimeError("disk full")

    assert world.sync(district(), checkpoint=crash).status == "failed"
    assert world.dump() == before
    assert world.synced(district()).changes["enrollment"] == {"create": 19}


def test_delta_feed_ends_and_archives_exactly_the_deleted_ids(world: World) -> None:
    world.synced(district())
    withdrawn = world.person("s05")["id"]
    ended = {world.canonical("enrollment", "math:s05"), world.canonical("enrollment", "bio:s02")}
    newcomer = Roster().student("s13", "jefferson", grade="7").enroll("art", "s13")

    result = world.synced(
        delta_feed(
            newcomer,
            deleted={"person": ["s05"], "enrollment": ["math:s05", "bio:s02"]},
        )
    )

    changes = world.changes(result.run_id)
    removed = {
        (c["entity"], c["action"], c["canonical_id"])
        for c in changes
        if c["action"] in ("archive", "end")
    }
    assert removed == {("person", "archive", withdrawn)} | {
        ("enrollment", "end", ident) for ident in ended
    }
    assert actions(world, result.run_id) == {
        "person:create": 1,
        "person:archive": 1,
        "enrollment:create": 1,
        "enrollment:end": 2,
    }
    assert world.count("people", status="active") == 15
    assert world.count("enrollments", end_at=None) == 18
    assert "s13@district.example" in world.roster_of("art")
    assert "s02@district.example" in world.roster_of("math")
    assert "s02@district.example" not in world.roster_of("bio")


def unknown_school(r: Roster) -> None:
    r.section_row("bio")["school_ext_id"] = "roosevelt"


def unknown_section(r: Roster) -> None:
    r.enroll("gym", "s03")


def unknown_person(r: Roster) -> None:
    r.enroll("math", "s99")


def duplicate_id(r: Roster) -> None:
    r.student("s03", "lincoln", given_name="Sam")


def missing_id(r: Roster) -> None:
    r.student("", "lincoln", email="noid@district.example")


@pytest.mark.parametrize(
    ("corrupt", "where"),
    [
        (unknown_school, ("sections.csv", 3, "school", "bio")),
        (unknown_section, ("enrollments.csv", 21, "section", "gym:s03")),
        (unknown_person, ("enrollments.csv", 21, "person", "math:s99")),
        (duplicate_id, ("people.csv", 7, "id", "s03")),
        (missing_id, ("people.csv", 17, "id", None)),
    ],
    ids=["unknown-school", "unknown-section", "unknown-person", "duplicate-id", "missing-id"],
)
def test_bad_input_names_file_line_column_record_and_changes_nothing(
    world: World,
    corrupt: Callable[[Roster], None],
    where: tuple[str, int, str, str | None],
) -> None:
    world.synced(district())
    before = world.dump()
    roster = district()
    corrupt(roster)

    result = world.sync(roster)

    assert result.status == "failed"
    assert world.dump() == before
    assert world.changes(result.run_id) == []
    (problem,) = result.problems
    file, line, column, record = where
    assert (problem.file, problem.line, problem.column, problem.record_id) == (
        file,
        line,
        column,
        record,
    )
    text = str(problem)
    assert file in text and f"line {line}" in text and repr(column) in text
    if record:
        assert repr(record) in text
    if corrupt is duplicate_id:
        assert "lines 7, 17" in text
    assert problem.fix
    stored = world.run(result.run_id)
    assert stored["status"] == "failed"
    assert stored["problems"] == [problem.as_dict()]


def test_a_source_that_cannot_be_read_fails_the_run(world: World) -> None:
    world.synced(district())
    before = world.dump()
    FEEDS.pop("sis")

    result = engine.sync(world.store, "sis")

    assert result.status == "failed"
    assert "has no feed" in (result.error or "")
    assert world.dump() == before
