"""A source kind ``memory`` whose feed a test puts in a dict, and builders of roster feeds.

The connector follows the :class:`rostersync.sources.base.Source` protocol like the real ones:
it only hands over a :class:`Feed` and never touches the store. Each source's settings name
the key (``name``) under which the test stored the feed to return.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl

from rostersync.domain.feed import SCHEMAS, Entity, Feed, Mode
from rostersync.errors import ConfigError, SourceError
from rostersync.sources import base

KIND = "memory"

#: Feeds served by memory sources, by the source's ``name`` setting.
FEEDS: dict[str, Feed] = {}


@dataclass
class MemorySource:
    name: str
    kind: str = KIND
    mode: Literal["full", "delta", "either"] = "either"

    def fetch(self, context: base.FetchContext) -> Feed:
        try:
            feed = FEEDS[self.name]
        except KeyError:
            raise SourceError(f"The memory source {self.name!r} has no feed.") from None
        # A copy, so that the engine never sees a frame a test changes afterwards.
        return copy.deepcopy(feed)


def create(config: Mapping[str, str]) -> MemorySource:
    if not config.get("name"):
        raise ConfigError("A memory source needs a 'name' setting.")
    return MemorySource(name=config["name"])


def register() -> None:
    """Make the ``memory`` kind known to ``rostersync.sources.base`` (idempotent)."""
    base.register(KIND)(create)


# Roster builders ---------------------------------------------------------------------------


@dataclass
class Roster:
    """A source's roster as plain rows, easy to change between syncs, turned into a Feed."""

    schools: list[dict[str, Any]] = field(default_factory=list)
    terms: list[dict[str, Any]] = field(default_factory=list)
    people: list[dict[str, Any]] = field(default_factory=list)
    sections: list[dict[str, Any]] = field(default_factory=list)
    enrollments: list[dict[str, Any]] = field(default_factory=list)

    def school(self, ext_id: str, name: str, **extra: Any) -> Roster:
        self.schools.append({"ext_id": ext_id, "name": name, **extra})
        return self

    def teacher(self, ext_id: str, school: str | None, **extra: Any) -> Roster:
        return self._person(ext_id, "teacher", school, **extra)

    def student(self, ext_id: str, school: str | None, grade: str = "9", **extra: Any) -> Roster:
        return self._person(ext_id, "student", school, grade=grade, **extra)

    def _person(self, ext_id: str, role: str, school: str | None, **extra: Any) -> Roster:
        row = {
            "ext_id": ext_id,
            "role": role,
            "email": f"{ext_id}@district.example",
            "given_name": ext_id.capitalize(),
            "family_name": "Example",
            "school_ext_id": school,
        }
        row.update(extra)
        self.people.append(row)
        return self

    def section(
        self, ext_id: str, school: str, name: str, teacher: str | None = None, **extra: Any
    ) -> Roster:
        self.sections.append(
            {"ext_id": ext_id, "school_ext_id": school, "name": name, "period": "1", **extra}
        )
        if teacher is not None:
            self.enroll(ext_id, teacher, "owner")
        return self

    def enroll(
        self, section: str, person: str, role: str = "student", ext_id: str | None = None
    ) -> Roster:
        self.enrollments.append(
            {
                "ext_id": ext_id or f"{section}:{person}",
                "section_ext_id": section,
                "person_ext_id": person,
                "role": role,
            }
        )
        return self

    def person(self, ext_id: str) -> dict[str, Any]:
        return next(p for p in self.people if p["ext_id"] == ext_id)

    def section_row(self, ext_id: str) -> dict[str, Any]:
        return next(s for s in self.sections if s["ext_id"] == ext_id)

    def withdraw(self, *people: str) -> Roster:
        """Drop people from the roster, with every enrollment they had."""
        self.people = [p for p in self.people if p["ext_id"] not in people]
        self.enrollments = [e for e in self.enrollments if e["person_ext_id"] not in people]
        return self

    def unenroll(self, section: str, person: str) -> Roster:
        self.enrollments = [
            e
            for e in self.enrollments
            if (e["section_ext_id"], e["person_ext_id"]) != (section, person)
        ]
        return self

    def copy(self) -> Roster:
        return copy.deepcopy(self)

    def frames(self) -> dict[Entity, pl.DataFrame]:
        rows: dict[Entity, list[dict[str, Any]]] = {
            "school": self.schools,
            "term": self.terms,
            "person": self.people,
            "section": self.sections,
            "enrollment": self.enrollments,
        }
        return {entity: frame(entity, data) for entity, data in rows.items()}

    def feed(self, **options: Any) -> Feed:
        """A full feed of the roster; ``options`` go to :class:`Feed` (``truncated``, …)."""
        return Feed(mode="full", frames=self.frames(), files=FILES.copy(), **options)


#: The file each entity is said to come from, so problems can cite it.
FILES: dict[Entity, str] = {
    "school": "schools.csv",
    "term": "terms.csv",
    "person": "people.csv",
    "section": "sections.csv",
    "enrollment": "enrollments.csv",
}


def frame(entity: Entity, rows: list[dict[str, Any]], lines: bool = True) -> pl.DataFrame:
    """A feed frame of ``rows``; with ``lines`` each row gets a ``_line`` as if read from a file
    with a header on line 1."""
    schema = {**SCHEMAS[entity]}
    data = [{name: row.get(name) for name in schema} for row in rows]
    result = pl.DataFrame(data, schema=schema, orient="row")
    if lines:
        result = result.with_columns(
            pl.int_range(2, result.height + 2, dtype=pl.Int64).alias("_line")
        )
    return result


def delta_feed(
    changed: Roster | None = None,
    deleted: Mapping[Entity, list[str]] | None = None,
    modes: Mapping[Entity, Mode] | None = None,
) -> Feed:
    """A delta feed: the records of ``changed`` and the external ids ``deleted``."""
    return Feed(
        mode="delta",
        frames=(changed or Roster()).frames(),
        deleted={k: list(v) for k, v in (deleted or {}).items()},
        modes=dict(modes or {}),
        files=FILES.copy(),
    )


def district(students: int = 12) -> Roster:
    """Two schools: Lincoln High (math with Ms Rivera, biology with Mr Chen) and Jefferson Middle
    (art with Ms Okafor). The first two thirds of the students attend Lincoln and take math, the
    first four of them biology too; the rest attend Jefferson and take art."""
    roster = (
        Roster()
        .school("lincoln", "Lincoln High", sis_id="100")
        .school("jefferson", "Jefferson Middle", sis_id="200")
        .teacher("rivera", "lincoln", sis_id="T1")
        .teacher("chen", "lincoln", sis_id="T2")
        .teacher("okafor", "jefferson", sis_id="T3")
        .section("math", "lincoln", "Algebra I", teacher="rivera")
        .section("bio", "lincoln", "Biology", teacher="chen", period="2")
        .section("art", "jefferson", "Art 7", teacher="okafor", period="3")
    )
    high = (students * 2) // 3
    for n in range(1, students + 1):
        ext_id = f"s{n:02d}"
        if n <= high:
            roster.student(ext_id, "lincoln", grade="9", sis_id=f"S{n:04d}")
            roster.enroll("math", ext_id)
            if n <= 4:
                roster.enroll("bio", ext_id)
        else:
            roster.student(ext_id, "jefferson", grade="7", sis_id=f"S{n:04d}")
            roster.enroll("art", ext_id)
    return roster
