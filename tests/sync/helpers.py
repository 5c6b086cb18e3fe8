"""Helpers of the sync tests: run a roster through the engine and read the store back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from rostersync import service
from rostersync.domain.feed import Feed
from rostersync.store import schema
from rostersync.sync import engine
from rostersync.sync.apply import Checkpoint, no_checkpoint
from tests.fakes.memory_source import FEEDS, Roster

#: Every table a run may write apart from its own log (runs, changes, run payloads).
ROSTER_TABLES = [
    t for t in schema.metadata.sorted_tables if t.name not in ("runs", "changes", "run_payloads")
]


def dump(store: sa.Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every roster table, sorted, for before/after equality."""
    with store.connect() as conn:
        return {
            table.name: sorted((tuple(row) for row in conn.execute(sa.select(table))), key=repr)
            for table in ROSTER_TABLES
        }


@dataclass
class World:
    """A district on a store, its memory sources, and readable views of what the store holds."""

    store: sa.Engine
    district: str = "Springfield"

    def setup(self, **settings: Any) -> None:
        service.add_district(self.store, self.district)
        if settings:
            service.set_district(self.store, self.district, **settings)
        self.add_source("sis")

    def add_source(self, name: str) -> int:
        return service.add_source(self.store, name, self.district, "memory", {"name": name})

    def settings(self, **settings: Any) -> None:
        service.set_district(self.store, self.district, **settings)

    def sync(
        self,
        roster: Roster | Feed,
        source: str = "sis",
        *,
        dry_run: bool = False,
        checkpoint: Checkpoint = no_checkpoint,
    ) -> engine.RunResult:
        FEEDS[source] = roster.feed() if isinstance(roster, Roster) else roster
        return engine.sync(self.store, source, dry_run=dry_run, checkpoint=checkpoint)

    def synced(self, roster: Roster | Feed, source: str = "sis") -> engine.RunResult:
        """Sync and insist that the run succeeded."""
        result = self.sync(roster, source)
        assert result.status == "succeeded", (result.error, result.problems, result.held_reasons)
        return result

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        return dump(self.store)

    # Reading the store --------------------------------------------------------------------

    def source_id(self, source: str) -> int:
        with self.store.connect() as conn:
            return int(
                conn.execute(
                    sa.select(schema.sources.c.id).where(schema.sources.c.name == source)
                ).scalar_one()
            )

    def canonical(self, entity: str, ext_id: str, source: str = "sis") -> int:
        """The canonical id of a source's record: from the id map, which keeps every id a record
        ever had, or for enrollments (not in the id map) from the source's snapshot."""
        if entity == "enrollment":
            table, column = schema.snapshots, schema.snapshots.c.source_id
            where = [column == self.source_id(source)]
        else:
            table = schema.id_map
            where = [table.c.namespace == f"source:{self.source_id(source)}"]
        with self.store.connect() as conn:
            found = conn.execute(
                sa.select(table.c.canonical_id).where(
                    table.c.entity == entity, table.c.external_id == ext_id, *where
                )
            ).scalar()
        assert found is not None, f"{entity} {ext_id!r} of {source} is unknown"
        return int(found)

    def row(self, entity: str, canonical_id: int) -> dict[str, Any]:
        table = schema.ENTITY_TABLES[entity]
        with self.store.connect() as conn:
            return dict(
                conn.execute(sa.select(table).where(table.c.id == canonical_id)).one()._mapping
            )

    def person(self, ext_id: str, source: str = "sis") -> dict[str, Any]:
        return self.row("person", self.canonical("person", ext_id, source))

    def section(self, ext_id: str, source: str = "sis") -> dict[str, Any]:
        return self.row("section", self.canonical("section", ext_id, source))

    def school(self, ext_id: str, source: str = "sis") -> dict[str, Any]:
        return self.row("school", self.canonical("school", ext_id, source))

    def count(self, table: str, **where: Any) -> int:
        t = schema.metadata.tables[table]
        query = sa.select(sa.func.count()).select_from(t)
        for column, value in where.items():
            query = query.where(t.c[column].is_(None) if value is None else t.c[column] == value)
        with self.store.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def enrollments(self, section_id: int | None = None) -> list[dict[str, Any]]:
        """Every enrollment row (ended ones included), with the section's name and the person's
        email, in id order."""
        e, s, p = schema.enrollments, schema.sections, schema.people
        query = (
            sa.select(e, s.c.name.label("section"), p.c.email.label("email"))
            .join(s, s.c.id == e.c.section_id)
            .join(p, p.c.id == e.c.person_id)
            .order_by(e.c.id)
        )
        if section_id is not None:
            query = query.where(e.c.section_id == section_id)
        with self.store.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def roster_of(self, section_ext_id: str, source: str = "sis") -> dict[str, str]:
        """The active members of a section: email → role."""
        rows = self.enrollments(self.canonical("section", section_ext_id, source))
        return {r["email"]: r["role"] for r in rows if r["end_at"] is None}

    def changes(self, run_id: int, entity: str | None = None) -> list[dict[str, Any]]:
        rows = service.run_changes(self.store, run_id, entity, limit=100_000)
        for row in rows:
            row["before"] = json.loads(row["before"]) if row["before"] else None
            row["after"] = json.loads(row["after"]) if row["after"] else None
        return rows

    def run(self, run_id: int) -> dict[str, Any]:
        with self.store.connect() as conn:
            return dict(
                conn.execute(sa.select(schema.runs).where(schema.runs.c.id == run_id))
                .one()
                ._mapping
            )

    # Local data the sync must respect -----------------------------------------------------

    def enroll_by_hand(self, section_ext_id: str, person_ext_id: str) -> int:
        """An enrollment made in ClassPilot, not by a source (``source_id`` null)."""
        section_id = self.canonical("section", section_ext_id)
        person_id = self.canonical("person", person_ext_id)
        with self.store.begin() as conn:
            top = conn.execute(sa.select(sa.func.max(schema.enrollments.c.id))).scalar() or 0
            ident = int(top) + 100_000
            conn.execute(
                schema.enrollments.insert().values(
                    id=ident,
                    section_id=section_id,
                    person_id=person_id,
                    role="student",
                    start_at=datetime.now(UTC),
                    source_id=None,
                )
            )
        return ident

    def make_group(self, owner_ext_id: str, name: str, members: list[str]) -> int:
        now = datetime.now(UTC)
        owner_id = self.canonical("person", owner_ext_id)
        member_ids = [self.canonical("person", m) for m in members]
        with self.store.begin() as conn:
            district_id = service.district_id(conn, self.district)
            result = conn.execute(
                schema.groups.insert().values(
                    district_id=district_id,
                    owner_id=owner_id,
                    name=name,
                    created_at=now,
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            group_id = int(key[0])
            for member_id in member_ids:
                conn.execute(
                    schema.group_members.insert().values(
                        group_id=group_id, person_id=member_id, added_at=now
                    )
                )
        return group_id
