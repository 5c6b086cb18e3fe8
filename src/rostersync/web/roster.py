"""What the pages and the API show: sources with their health, runs and changes, schools,
sections, people, enrollment history, the unmatched tray and the data readiness report.

Every function takes the principal and reads only what the policy lets it see.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from rostersync.jobs import schedules
from rostersync.store.schema import (
    changes,
    districts,
    enrollments,
    people,
    runs,
    schools,
    sections,
    sightings,
    snapshots,
    sources,
    terms,
)
from rostersync.web import policy
from rostersync.web.policy import Principal

KIND_LABELS = {
    "csv": "CSV / Google Sheet",
    "oneroster-csv": "OneRoster CSV",
    "oneroster": "OneRoster",
    "clever": "Clever",
    "google": "Google Classroom",
}
SECRET_HINTS = ("password", "secret", "token", "key", "credentials")
ACTIVE_RUN = ("queued", "running")


def kind_label(kind: str) -> str:
    return KIND_LABELS.get(kind, kind)


def district(engine: sa.Engine, principal: Principal) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(districts).where(districts.c.id == principal.district_id)
        ).one()
    return dict(row._mapping)


def _public_config(config: dict[str, Any] | None) -> dict[str, Any]:
    return {
        k: ("•••" if any(s in k.lower() for s in SECRET_HINTS) else v)
        for k, v in (config or {}).items()
    }


def source_list(engine: sa.Engine, principal: Principal) -> list[dict[str, Any]]:
    """The district's sources with their health, last and next run, and any run in progress."""
    policy.require_admin(principal)
    described = schedules.describe(engine)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(sources)
            .where(sources.c.district_id == principal.district_id)
            .order_by(sources.c.id)
        ).all()
        active = {
            int(r.source_id): dict(r._mapping)
            for r in conn.execute(
                sa.select(runs)
                .join(sources, sources.c.id == runs.c.source_id)
                .where(
                    sources.c.district_id == principal.district_id,
                    runs.c.status.in_(ACTIVE_RUN),
                )
                .order_by(runs.c.id)
            )
        }
        last_ids = {
            int(info["last_run"]["run"])
            for info in described.values()
            if info.get("last_run") is not None
        }
        last_runs = {
            int(r.id): dict(r._mapping)
            for r in conn.execute(sa.select(runs).where(runs.c.id.in_(sorted(last_ids))))
        }
    out = []
    for row in rows:
        info = described.get(int(row.id), {})
        health = info.get("health", "new")
        if info.get("paused"):
            health = "paused"
        last = info.get("last_run")
        out.append(
            {
                "id": int(row.id),
                "name": row.name,
                "kind": row.kind,
                "kind_label": kind_label(row.kind),
                "config": _public_config(row.config),
                "status": row.status,
                "health": health,
                "schedule": info.get("schedule"),
                "paused": info.get("paused", False),
                "next_run_at": info.get("next_run_at"),
                "next_run_local": info.get("next_run_local"),
                "last_run": None if last is None else last_runs.get(int(last["run"])),
                "active_run": active.get(int(row.id)),
            }
        )
    return out


def source(engine: sa.Engine, principal: Principal, source_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        policy.check_source(conn, principal, source_id)
    return next(s for s in source_list(engine, principal) if s["id"] == source_id)


def source_schools(engine: sa.Engine, principal: Principal, source_id: int) -> list[str]:
    """The names of the schools a source listed at its last applied run, for its scope form."""
    with engine.connect() as conn:
        policy.check_source(conn, principal, source_id)
        rows = conn.execute(
            sa.select(schools.c.name)
            .join(snapshots, snapshots.c.canonical_id == schools.c.id)
            .where(snapshots.c.source_id == source_id, snapshots.c.entity == "school")
            .order_by(schools.c.name)
        )
        return [str(name) for name in rows.scalars() if name]


def _run_dict(row: Any) -> dict[str, Any]:
    item = dict(row._mapping)
    summary = item.get("summary") or {}
    item["total_changes"] = sum(sum(v.values()) for v in summary.values())
    return item


def run_log(
    engine: sa.Engine,
    principal: Principal,
    *,
    source_id: int | None = None,
    status: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Every run of the district's sources, newest first: trigger and who, counts, errors."""
    policy.require_admin(principal)
    query = (
        sa.select(runs, sources.c.name.label("source"), sources.c.kind.label("kind"))
        .join(sources, sources.c.id == runs.c.source_id)
        .where(sources.c.district_id == principal.district_id)
    )
    if source_id is not None:
        query = query.where(runs.c.source_id == source_id)
    if status:
        query = query.where(runs.c.status == status)
    with engine.connect() as conn:
        return [_run_dict(r) for r in conn.execute(query.order_by(runs.c.id.desc()).limit(limit))]


def run(engine: sa.Engine, principal: Principal, run_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        policy.check_run(conn, principal, run_id)
        row = conn.execute(
            sa.select(runs, sources.c.name.label("source"), sources.c.kind.label("kind"))
            .join(sources, sources.c.id == runs.c.source_id)
            .where(runs.c.id == run_id)
        ).one()
    return _run_dict(row)


def run_changes(
    engine: sa.Engine,
    principal: Principal,
    run_id: int,
    *,
    entity: str | None = None,
    action: str | None = None,
    limit: int = 500,
    offset: int = 0,
) -> dict[str, Any]:
    """A run's changes, filtered by entity and action, with the totals per entity and action."""
    with engine.connect() as conn:
        policy.check_run(conn, principal, run_id)
        query = sa.select(changes).where(changes.c.run_id == run_id)
        count = sa.select(sa.func.count()).select_from(changes).where(changes.c.run_id == run_id)
        if entity:
            query = query.where(changes.c.entity == entity)
            count = count.where(changes.c.entity == entity)
        if action:
            query = query.where(changes.c.action == action)
            count = count.where(changes.c.action == action)
        rows = conn.execute(query.order_by(changes.c.id).limit(limit).offset(offset)).all()
        total = int(conn.execute(count).scalar_one())
    items = []
    for r in rows:
        item = dict(r._mapping)
        for side in ("before", "after"):
            item[side] = json.loads(item[side]) if item[side] else None
        items.append(item)
    return {"run": run_id, "total": total, "changes": items, "limit": limit, "offset": offset}


def held_runs(engine: sa.Engine, principal: Principal) -> list[dict[str, Any]]:
    return run_log(engine, principal, status="held", limit=50)


# Schools, sections, people -------------------------------------------------------------------


def school_list(engine: sa.Engine, principal: Principal) -> list[dict[str, Any]]:
    policy.require_admin(principal)
    counts = (
        sa.select(sections.c.school_id, sa.func.count().label("sections"))
        .where(sections.c.status == "active")
        .group_by(sections.c.school_id)
        .subquery()
    )
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(schools, sa.func.coalesce(counts.c.sections, 0).label("sections"))
            .outerjoin(counts, counts.c.school_id == schools.c.id)
            .where(policy.school_scope(principal))
            .order_by(schools.c.name)
        )
        return [dict(r._mapping) for r in rows]


def _current_counts() -> Any:
    return (
        sa.select(
            enrollments.c.section_id,
            sa.func.count().filter(enrollments.c.role == "student").label("students"),
        )
        .where(enrollments.c.end_at.is_(None))
        .group_by(enrollments.c.section_id)
        .subquery()
    )


def section_list(
    engine: sa.Engine,
    principal: Principal,
    *,
    school_id: int | None = None,
    q: str | None = None,
    include_archived: bool = False,
    limit: int = 500,
) -> list[dict[str, Any]]:
    """The sections the principal may see, with school, term and current student count."""
    counts = _current_counts()
    query = (
        sa.select(
            sections,
            schools.c.name.label("school"),
            terms.c.name.label("term"),
            sa.func.coalesce(counts.c.students, 0).label("students"),
        )
        .outerjoin(schools, schools.c.id == sections.c.school_id)
        .outerjoin(terms, terms.c.id == sections.c.term_id)
        .outerjoin(counts, counts.c.section_id == sections.c.id)
        .where(policy.section_scope(principal))
    )
    if school_id is not None:
        with engine.connect() as conn:
            policy.check_school(conn, principal, school_id)
        query = query.where(sections.c.school_id == school_id)
    if not include_archived:
        query = query.where(sections.c.status == "active")
    if q:
        query = query.where(sections.c.name.ilike(f"%{q}%"))
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(schools.c.name, sections.c.period, sections.c.name))
        result = [dict(r._mapping) for r in rows.fetchmany(limit)]
        teachers = _teachers(conn, [r["id"] for r in result])
    for item in result:
        item["teachers"] = teachers.get(item["id"], [])
    return result


def _teachers(conn: sa.Connection, section_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    if not section_ids:
        return out
    rows = conn.execute(
        sa.select(
            enrollments.c.section_id,
            enrollments.c.role,
            people.c.id,
            people.c.given_name,
            people.c.family_name,
            people.c.email,
        )
        .join(people, people.c.id == enrollments.c.person_id)
        .where(
            enrollments.c.section_id.in_(section_ids),
            enrollments.c.role.in_(policy.TEACHING_ROLES),
            enrollments.c.end_at.is_(None),
        )
        .order_by(enrollments.c.role.desc(), people.c.family_name)
    )
    for r in rows:
        out.setdefault(int(r.section_id), []).append(
            {"id": r.id, "name": display_name(r), "email": r.email, "role": r.role}
        )
    return out


def display_name(row: Any) -> str:
    name = " ".join(p for p in (row.given_name, row.family_name) if p)
    return name or row.email or f"person {row.id}"


def section(engine: sa.Engine, principal: Principal, section_id: int) -> dict[str, Any]:
    """A section with its teachers and current roster."""
    with engine.connect() as conn:
        policy.check_section(conn, principal, section_id)
        row = conn.execute(
            sa.select(sections, schools.c.name.label("school"), terms.c.name.label("term"))
            .outerjoin(schools, schools.c.id == sections.c.school_id)
            .outerjoin(terms, terms.c.id == sections.c.term_id)
            .where(sections.c.id == section_id)
        ).one()
        item = dict(row._mapping)
        item["teachers"] = _teachers(conn, [section_id]).get(section_id, [])
        item["students"] = roster(conn, section_id)
    return item


def roster(conn: sa.Connection, section_id: int) -> list[dict[str, Any]]:
    """The current students of a section, by family name."""
    rows = conn.execute(
        sa.select(
            people.c.id,
            people.c.given_name,
            people.c.family_name,
            people.c.email,
            people.c.grade,
            people.c.status,
            enrollments.c.start_at,
        )
        .join(enrollments, enrollments.c.person_id == people.c.id)
        .where(
            enrollments.c.section_id == section_id,
            enrollments.c.role == "student",
            enrollments.c.end_at.is_(None),
        )
        .order_by(people.c.family_name, people.c.given_name, people.c.id)
    )
    return [{**dict(r._mapping), "name": display_name(r)} for r in rows]


def people_list(
    engine: sa.Engine,
    principal: Principal,
    *,
    q: str | None = None,
    role: str | None = None,
    status: str | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    policy.require_admin(principal)
    query = (
        sa.select(people, schools.c.name.label("school"))
        .outerjoin(schools, schools.c.id == people.c.school_id)
        .where(policy.person_scope(principal))
    )
    if q:
        like = f"%{q.strip().lower()}%"
        query = query.where(
            sa.or_(
                sa.func.lower(people.c.email).like(like),
                sa.func.lower(people.c.given_name).like(like),
                sa.func.lower(people.c.family_name).like(like),
            )
        )
    if role:
        query = query.where(people.c.role == role)
    if status:
        query = query.where(people.c.status == status)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(people.c.family_name, people.c.id).limit(limit))
        return [{**dict(r._mapping), "name": display_name(r)} for r in rows]


def person(engine: sa.Engine, principal: Principal, person_id: int) -> dict[str, Any]:
    """A person with their enrollment history: every section, from when to when."""
    policy.require_admin(principal)
    with engine.connect() as conn:
        policy.check_person(conn, principal, person_id)
        row = conn.execute(
            sa.select(people, schools.c.name.label("school"))
            .outerjoin(schools, schools.c.id == people.c.school_id)
            .where(people.c.id == person_id)
        ).one()
        item = {**dict(row._mapping), "name": display_name(row)}
        history = conn.execute(
            sa.select(
                enrollments.c.id,
                enrollments.c.section_id,
                enrollments.c.role,
                enrollments.c.start_at,
                enrollments.c.end_at,
                enrollments.c.source_id,
                sections.c.name.label("section"),
                sections.c.period,
                schools.c.name.label("school"),
            )
            .join(sections, sections.c.id == enrollments.c.section_id)
            .outerjoin(schools, schools.c.id == sections.c.school_id)
            .where(enrollments.c.person_id == person_id)
            .order_by(enrollments.c.start_at.desc(), enrollments.c.id.desc())
        )
        item["enrollments"] = [dict(r._mapping) for r in history]
        seen = conn.execute(
            sa.select(sightings.c.seen_at, sightings.c.device)
            .where(sightings.c.person_id == person_id)
            .order_by(sightings.c.id.desc())
            .limit(20)
        )
        item["sightings"] = [dict(r._mapping) for r in seen]
    return item


def pending(engine: sa.Engine, principal: Principal) -> list[dict[str, Any]]:
    """The Unmatched students tray: pending people with their latest sighting."""
    policy.require_admin(principal)
    last = (
        sa.select(
            sightings.c.person_id,
            sa.func.max(sightings.c.seen_at).label("last_seen"),
            sa.func.count().label("sightings"),
        )
        .group_by(sightings.c.person_id)
        .subquery()
    )
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(people, last.c.last_seen, last.c.sightings)
            .outerjoin(last, last.c.person_id == people.c.id)
            .where(people.c.district_id == principal.district_id, people.c.status == "pending")
            .order_by(last.c.last_seen.desc(), people.c.id)
        )
        out = []
        for r in rows:
            item = {**dict(r._mapping), "name": display_name(r)}
            item["devices"] = [
                d
                for d in conn.execute(
                    sa.select(sightings.c.device)
                    .where(sightings.c.person_id == r.id, sightings.c.device.is_not(None))
                    .distinct()
                    .limit(5)
                ).scalars()
            ]
            out.append(item)
        return out


def candidates(
    engine: sa.Engine, principal: Principal, q: str, limit: int = 20
) -> list[dict[str, Any]]:
    """Roster students a pending student could be matched to."""
    if not q.strip():
        return []
    return people_list(engine, principal, q=q, role="student", status="active", limit=limit)


# Data readiness ----------------------------------------------------------------------------


def readiness(engine: sa.Engine, principal: Principal) -> dict[str, Any]:
    """Students without email, duplicate emails, teachers without sections, sections without
    teachers, people without a school — within what the principal may see."""
    policy.require_admin(principal)
    visible = policy.person_scope(principal)
    active = people.c.status == "active"
    teaching = sa.select(enrollments.c.person_id).where(
        enrollments.c.role.in_(policy.TEACHING_ROLES), enrollments.c.end_at.is_(None)
    )
    taught = sa.select(enrollments.c.section_id).where(
        enrollments.c.role.in_(policy.TEACHING_ROLES), enrollments.c.end_at.is_(None)
    )

    def listing(query: Any, limit: int = 100) -> list[dict[str, Any]]:
        with engine.connect() as conn:
            return [
                {**dict(r._mapping), "name": display_name(r)}
                for r in conn.execute(query.limit(limit))
            ]

    person_columns = (
        people.c.id,
        people.c.given_name,
        people.c.family_name,
        people.c.email,
        people.c.role,
        people.c.sis_id,
    )
    no_email = sa.select(*person_columns).where(
        visible, active, people.c.role == "student", people.c.email.is_(None)
    )
    idle_teachers = sa.select(*person_columns).where(
        visible, active, people.c.role == "teacher", people.c.id.not_in(teaching)
    )
    no_school = sa.select(*person_columns).where(visible, active, people.c.school_id.is_(None))
    dup_keys = (
        sa.select(people.c.email)
        .where(visible, active, people.c.email.is_not(None))
        .group_by(people.c.email)
        .having(sa.func.count() > 1)
    )
    duplicates = (
        sa.select(*person_columns)
        .where(visible, active, people.c.email.in_(dup_keys))
        .order_by(people.c.email, people.c.id)
    )
    with engine.connect() as conn:
        orphan_sections = [
            dict(r._mapping)
            for r in conn.execute(
                sa.select(sections.c.id, sections.c.name, schools.c.name.label("school"))
                .outerjoin(schools, schools.c.id == sections.c.school_id)
                .where(
                    policy.section_scope(principal),
                    sections.c.status == "active",
                    sections.c.id.not_in(taught),
                )
                .order_by(sections.c.name)
                .limit(100)
            )
        ]
    return {
        "students_without_email": listing(no_email),
        "duplicate_emails": listing(duplicates),
        "teachers_without_sections": listing(idle_teachers),
        "sections_without_teachers": orphan_sections,
        "people_without_school": listing(no_school),
    }
