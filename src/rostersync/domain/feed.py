"""What a source yields: a feed of normalised records, one columnar frame per entity.

A connector translates its provider's model into these frames and nothing else; the sync engine
takes it from there. Every id in a feed is the source's own external id (a string). References
between frames (a section's school, an enrollment's section and person) use those external ids.

Frames and their columns (all Utf8 unless noted; missing values are null):

- ``schools``: ``ext_id``, ``name``, ``sis_id``
- ``terms``: ``ext_id``, ``name``, ``start_date``, ``end_date`` (ISO dates), ``school_year``
- ``people``: ``ext_id``, ``role`` (student / teacher / admin), ``email`` (lower-cased),
  ``given_name``, ``family_name``, ``grade``, ``sis_id``, ``state_id``, ``google_id``,
  ``school_ext_id`` (primary school, may be null)
- ``sections``: ``ext_id``, ``school_ext_id``, ``term_ext_id``, ``name``, ``course``,
  ``period``, ``room``
- ``enrollments``: ``ext_id``, ``section_ext_id``, ``person_ext_id``, ``role`` (student /
  owner / co-teacher)

Each entity has a mode. ``full``: the frame lists everything in the source's scope, so what is
missing is gone. ``delta``: the frame lists only what changed, and ``deleted`` names the external
ids the source removed. ``absent``: the source said nothing about this entity this time; nothing
of that kind changes. A feed's ``mode`` is ``full`` when every entity is full.

A frame may also carry ``_line`` (Int64): the line of the record in the file it came from, and
``Feed.files`` names that file per entity, so the engine can point at the line of a record whose
reference it cannot resolve.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import polars as pl

from rostersync.errors import Problem

Entity = Literal["school", "term", "person", "section", "enrollment"]
Mode = Literal["full", "delta", "absent"]

#: Entities in the order they are applied: a reference always points at an earlier entity.
ENTITIES: tuple[Entity, ...] = ("school", "term", "person", "section", "enrollment")

PERSON_ROLES = ("student", "teacher", "admin")
ENROLLMENT_ROLES = ("student", "owner", "co-teacher")

SCHEMAS: dict[Entity, dict[str, pl.DataType]] = {
    "school": {"ext_id": pl.Utf8(), "name": pl.Utf8(), "sis_id": pl.Utf8()},
    "term": {
        "ext_id": pl.Utf8(),
        "name": pl.Utf8(),
        "start_date": pl.Utf8(),
        "end_date": pl.Utf8(),
        "school_year": pl.Utf8(),
    },
    "person": {
        "ext_id": pl.Utf8(),
        "role": pl.Utf8(),
        "email": pl.Utf8(),
        "given_name": pl.Utf8(),
        "family_name": pl.Utf8(),
        "grade": pl.Utf8(),
        "sis_id": pl.Utf8(),
        "state_id": pl.Utf8(),
        "google_id": pl.Utf8(),
        "school_ext_id": pl.Utf8(),
    },
    "section": {
        "ext_id": pl.Utf8(),
        "school_ext_id": pl.Utf8(),
        "term_ext_id": pl.Utf8(),
        "name": pl.Utf8(),
        "course": pl.Utf8(),
        "period": pl.Utf8(),
        "room": pl.Utf8(),
    },
    "enrollment": {
        "ext_id": pl.Utf8(),
        "section_ext_id": pl.Utf8(),
        "person_ext_id": pl.Utf8(),
        "role": pl.Utf8(),
    },
}

#: Columns whose change is a change of the record (everything but the external id).
CONTENT_COLUMNS: dict[Entity, list[str]] = {
    entity: [c for c in schema if c != "ext_id"] for entity, schema in SCHEMAS.items()
}


def empty_frame(entity: Entity) -> pl.DataFrame:
    return pl.DataFrame(schema=SCHEMAS[entity])


LINE = "_line"


def conform(entity: Entity, frame: pl.DataFrame) -> pl.DataFrame:
    """Return ``frame`` with exactly the entity's columns, in order, missing ones as nulls.

    The optional ``_line`` column is kept when present.
    """
    schema = SCHEMAS[entity]
    exprs = []
    for name, dtype in schema.items():
        if name in frame.columns:
            exprs.append(pl.col(name).cast(dtype))
        else:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
    if LINE in frame.columns:
        exprs.append(pl.col(LINE).cast(pl.Int64))
    return frame.select(exprs)


@dataclass
class Feed:
    """A source's records for one run, normalised; see the module docstring for the columns."""

    mode: Literal["full", "delta"]
    frames: dict[Entity, pl.DataFrame] = field(default_factory=dict)
    #: Per-entity mode; an entity not named here takes the feed's ``mode``.
    modes: dict[Entity, Mode] = field(default_factory=dict)
    deleted: dict[Entity, list[str]] = field(default_factory=dict)
    #: Problems that did not stop the feed (a skipped row, a filled-in default), by file and line.
    warnings: list[Problem] = field(default_factory=list)
    #: Set when the connector suspects the feed is cut short (a truncated file, a short page).
    truncated: str | None = None
    #: A short label of where the data came from, for the run log (a path, a URL).
    origin: str = ""
    #: The file each entity's records came from, for messages that cite a ``_line``.
    files: dict[Entity, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for entity in ENTITIES:
            frame = self.frames.get(entity)
            self.frames[entity] = empty_frame(entity) if frame is None else conform(entity, frame)
            self.deleted.setdefault(entity, [])
            self.modes.setdefault(entity, self.mode)

    def frame(self, entity: Entity) -> pl.DataFrame:
        return self.frames[entity]

    def counts(self) -> dict[str, int]:
        return {entity: self.frames[entity].height for entity in ENTITIES}

    def is_empty(self) -> bool:
        return all(self.frames[e].height == 0 for e in ENTITIES)
