"""The engine's central promise as a property: whatever roster A the store held, syncing roster B
leaves the same current roster as syncing B into an empty store.

The current roster is compared through a projection keyed by the source's external ids, so
canonical ids (which differ between the two stores) do not matter, but every active school,
section, person and enrollment, and every value the source sets, does.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rostersync import service
from rostersync.store import schema
from tests.conftest import PG_URL
from tests.fakes import memory_source
from tests.fakes.memory_source import Roster
from tests.sync.helpers import World

EXAMPLES = 30

SCHOOL_IDS = [f"h{n}" for n in range(4)]
SCHOOL_NAMES = ["North High", "South High", "East Middle", "north high"]
TEACHER_IDS = [f"t{n}" for n in range(5)]
STUDENT_IDS = [f"s{n:02d}" for n in range(24)]
SECTION_IDS = [f"k{n}" for n in range(10)]
SECTION_NAMES = ["Algebra", "Biology", "Art", "History", "Algebra II"]
GIVEN_NAMES = ["Ana", "Ben", "Chloé", None]
GRADES = ["6", "7", "8", None]


@st.composite
def rosters(draw: st.DrawFn) -> Roster:
    """A small district: ≤ 3 schools, ≤ 8 sections, ≤ 20 students, random enrollments.

    Ids come from small pools so that two rosters overlap: the same section renamed, a teacher
    swapped, a student moved, re-keyed (a new id with an old email) or gone."""
    roster = Roster()
    schools = draw(st.lists(st.sampled_from(SCHOOL_IDS), min_size=1, max_size=3, unique=True))
    for ext_id in schools:
        roster.school(ext_id, draw(st.sampled_from(SCHOOL_NAMES)))

    emails = st.one_of(st.none(), st.sampled_from(["x@d.org", "y@d.org", "z@d.org"]))
    for role, pool, most in (("teacher", TEACHER_IDS, 4), ("student", STUDENT_IDS, 20)):
        # At least one of each, so that no record type empties (which is held, by design).
        chosen = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=most, unique=True))
        for ext_id in chosen:
            roster._person(
                ext_id,
                role,
                draw(st.one_of(st.none(), st.sampled_from(schools))),
                email=draw(st.one_of(st.just(f"{ext_id}@d.org"), emails)),
                given_name=draw(st.sampled_from(GIVEN_NAMES)),
                family_name=draw(st.sampled_from(["Lee", "Okafor"])),
                grade=draw(st.sampled_from(GRADES)) if role == "student" else None,
                sis_id=draw(st.one_of(st.none(), st.just(f"SIS-{ext_id}"))),
            )
    teachers = [p["ext_id"] for p in roster.people if p["role"] == "teacher"]
    students = [p["ext_id"] for p in roster.people if p["role"] == "student"]

    sections = draw(st.lists(st.sampled_from(SECTION_IDS), min_size=1, max_size=8, unique=True))
    for ext_id in sections:
        owner = draw(st.sampled_from(teachers))
        roster.section(
            ext_id,
            draw(st.sampled_from(schools)),
            draw(st.sampled_from(SECTION_NAMES)),
            teacher=owner,
            period=draw(st.sampled_from(["1", "2", None])),
        )
        others = [t for t in teachers if t != owner]
        if others and draw(st.booleans()):
            roster.enroll(ext_id, draw(st.sampled_from(others)), "co-teacher")
        for seat, student in enumerate(
            draw(st.lists(st.sampled_from(students), max_size=8, unique=True))
        ):
            # Mostly one id per membership; sometimes an id per seat, which a later roster may
            # give to somebody else.
            per_seat = draw(st.booleans()) and draw(st.booleans())
            roster.enroll(ext_id, student, ext_id=f"{ext_id}:seat{seat}" if per_seat else None)
    return roster


def projection(world: World) -> dict[str, set[tuple[Any, ...]]]:
    """The store's current roster, by the ``sis`` source's external ids."""
    source_id = world.source_id("sis")
    with world.store.connect() as conn:
        ext: dict[tuple[str, int], str] = {
            (r.entity, r.canonical_id): r.external_id
            for r in conn.execute(
                sa.select(schema.snapshots).where(schema.snapshots.c.source_id == source_id)
            )
        }

        def key(entity: str, canonical_id: int | None) -> str | None:
            if canonical_id is None:
                return None
            # A current record the snapshot does not know shows up as such, never silently.
            return ext.get((entity, canonical_id), f"<unknown {entity} {canonical_id}>")

        def active(table: sa.Table) -> list[Any]:
            return list(conn.execute(sa.select(table).where(table.c.status == "active")))

        return {
            "schools": {(key("school", r.id), r.name) for r in active(schema.schools)},
            "sections": {
                (key("section", r.id), r.name, key("school", r.school_id), r.period)
                for r in active(schema.sections)
            },
            "people": {
                (
                    key("person", r.id),
                    r.email,
                    r.role,
                    r.given_name,
                    r.family_name,
                    r.grade,
                    key("school", r.school_id),
                )
                for r in active(schema.people)
            },
            "enrollments": {
                (key("section", r.section_id), key("person", r.person_id), r.role)
                for r in conn.execute(
                    sa.select(schema.enrollments).where(schema.enrollments.c.end_at.is_(None))
                )
            },
        }


@contextmanager
def fresh_store(database: str) -> Iterator[World]:
    """A new, migrated store with the district and its ``sis`` source."""
    if database == "sqlite":
        with TemporaryDirectory() as tmp:
            engine = service.open_store(f"sqlite:///{Path(tmp) / 'store.sqlite'}")
            try:
                yield _world(engine)
            finally:
                engine.dispose()
        return
    schema_name = f"p_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema_name}")
    url = sa.make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema_name}"})
    engine = service.open_store(url.render_as_string(hide_password=False))
    try:
        yield _world(engine)
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema_name} CASCADE")
        admin.dispose()


def _world(engine: sa.Engine) -> World:
    world = World(engine)
    world.setup(safety_share=1.0)
    return world


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_syncing_a_then_b_leaves_the_roster_of_b(database: str) -> None:
    memory_source.register()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(a=rosters(), b=rosters())
    def a_then_b(a: Roster, b: Roster) -> None:
        with fresh_store(database) as both, fresh_store(database) as only_b:
            both.synced(a)
            both.synced(b)
            only_b.synced(b)
            assert projection(both) == projection(only_b)
            # And B's roster is what the feed said.
            assert len(projection(only_b)["people"]) == len(b.people)
            # B again, diffed record by record (terms absent, so no digest shortcut): a no-op.
            assert both.synced(b.feed(modes={"term": "absent"})).changes == {}

    a_then_b()
