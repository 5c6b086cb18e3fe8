"""Fetch: the choice of schools and sections a source syncs, and the packing of held feeds."""

from __future__ import annotations

from rostersync import service
from rostersync.sync.fetch import limit_scope, pack, unpack
from tests.fakes.memory_source import district
from tests.sync.helpers import World


def _ids(feed: object, entity: str) -> list[str]:
    return sorted(feed.frame(entity)["ext_id"].to_list())  # type: ignore[attr-defined]


def test_no_choice_keeps_everything() -> None:
    feed = district().feed()
    assert limit_scope(feed, {}) is feed
    assert _ids(feed, "section") == ["art", "bio", "math"]


def test_schools_by_name_or_id_keep_their_sections_enrollments_and_people() -> None:
    by_name = limit_scope(district().feed(), {"schools": " jefferson middle "})
    assert _ids(by_name, "school") == ["jefferson"]
    assert _ids(by_name, "section") == ["art"]
    assert {p for p in by_name.frame("enrollment")["section_ext_id"]} == {"art"}
    assert "rivera" not in _ids(by_name, "person") and "okafor" in _ids(by_name, "person")
    assert "s12" in _ids(by_name, "person") and "s01" not in _ids(by_name, "person")
    assert by_name.warnings == []

    by_id = limit_scope(district().feed(), {"schools": "lincoln"})
    assert _ids(by_id, "section") == ["bio", "math"]


def test_sections_narrow_further_and_unknown_choices_are_warned() -> None:
    feed = limit_scope(
        district().feed(), {"schools": "lincoln, Nowhere High", "sections": "Biology"}
    )
    assert _ids(feed, "section") == ["bio"]
    students = [p for p in _ids(feed, "person") if p.startswith("s")]
    # Students of the kept school stay people of the source even when not in a kept section.
    assert "s05" in students and "s12" not in students
    assert [w.message for w in feed.warnings] == [
        "the school 'Nowhere High' chosen for this source is not in its feed."
    ]


def test_a_packed_feed_unpacks_to_the_same_records() -> None:
    feed = district().feed()
    again = unpack(pack(feed))
    for entity in ("school", "person", "section", "enrollment"):
        assert again.frame(entity).equals(feed.frame(entity))
    assert again.modes == feed.modes


def test_a_source_limited_to_one_school_syncs_only_that_school(world: World) -> None:
    service.update_source(world.store, "sis", {"schools": "Jefferson Middle"})
    result = world.synced(district())
    assert result.changes["school"] == {"create": 1}
    assert result.changes["section"] == {"create": 1}

    service.update_source(world.store, "sis", {"schools": ""})
    widened = world.synced(district())
    assert widened.changes["school"] == {"create": 1}
    assert widened.changes["section"] == {"create": 2}
