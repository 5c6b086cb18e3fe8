"""The teacher's side: their sections, Start Class / End Class, and their small groups.

A class session records the roster as it was when the class started (``class_session_members``),
so what a session was remains true after the next sync changes the section. Groups are local
data a sync never touches; the district's ``allow_groups`` toggle allows or forbids them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from rostersync.errors import ConfigError, NotFound
from rostersync.store.schema import (
    class_session_members,
    class_sessions,
    districts,
    enrollments,
    group_members,
    groups,
    id_map,
    people,
    sections,
)
from rostersync.web import policy, roster
from rostersync.web.policy import Forbidden, Principal


def _now() -> datetime:
    return datetime.now(UTC)


def groups_allowed(conn: sa.Connection, district_id: int) -> bool:
    return bool(
        conn.execute(
            sa.select(districts.c.allow_groups).where(districts.c.id == district_id)
        ).scalar_one()
    )


def _active_sessions(conn: sa.Connection, column: Any, ids: list[int]) -> dict[int, dict[str, Any]]:
    if not ids:
        return {}
    rows = conn.execute(
        sa.select(class_sessions).where(column.in_(ids), class_sessions.c.ended_at.is_(None))
    )
    return {int(getattr(r, column.name)): dict(r._mapping) for r in rows}


def my_classes(engine: sa.Engine, principal: Principal) -> dict[str, Any]:
    """The teacher's sections with their rosters and groups, each with its running session."""
    policy.require_teacher(principal)
    listed = roster.section_list(engine, principal)
    with engine.connect() as conn:
        for item in listed:
            item["students_list"] = roster.roster(conn, item["id"])
        active = _active_sessions(conn, class_sessions.c.section_id, [s["id"] for s in listed])
        for item in listed:
            item["session"] = active.get(item["id"])
        allowed = groups_allowed(conn, principal.district_id)
    mine = group_list(engine, principal)
    return {"sections": listed, "groups": mine, "groups_allowed": allowed}


# Class sessions -------------------------------------------------------------------------------


def start(
    engine: sa.Engine,
    principal: Principal,
    *,
    section_id: int | None = None,
    group_id: int | None = None,
) -> dict[str, Any]:
    """Start a class on a section the teacher teaches (or one of their groups) with the roster
    as it is now. A class already running there is returned instead of starting another."""
    teacher = policy.require_teacher(principal)
    if (section_id is None) == (group_id is None):
        raise ConfigError("Start a class on one section or one group.")
    with engine.begin() as conn:
        if section_id is not None:
            policy.check_section(conn, principal, section_id)
            column, ident = class_sessions.c.section_id, section_id
            members = sa.select(enrollments.c.person_id).where(
                enrollments.c.section_id == section_id,
                enrollments.c.role == "student",
                enrollments.c.end_at.is_(None),
            )
        else:
            assert group_id is not None
            policy.check_group(conn, principal, group_id)
            column, ident = class_sessions.c.group_id, group_id
            members = sa.select(group_members.c.person_id).where(
                group_members.c.group_id == group_id
            )
        running = _active_sessions(conn, column, [ident]).get(ident)
        if running is not None:
            return {**_session(conn, int(running["id"])), "started": False}
        result = conn.execute(
            class_sessions.insert().values(
                district_id=principal.district_id,
                section_id=section_id,
                group_id=group_id,
                teacher_id=teacher,
                started_by=principal.user_id,
                started_at=_now(),
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        session_id = int(key[0])
        conn.execute(
            class_session_members.insert().from_select(
                ["class_session_id", "person_id"],
                sa.select(sa.literal(session_id), members.subquery().c.person_id).distinct(),
            )
        )
        return {**_session(conn, session_id), "started": True}


def _check_session(conn: sa.Connection, principal: Principal, session_id: int) -> Any:
    row = conn.execute(
        sa.select(class_sessions).where(
            class_sessions.c.id == session_id,
            class_sessions.c.district_id == principal.district_id,
        )
    ).first()
    if row is None:
        raise NotFound(f"There is no class session {session_id}.")
    if row.section_id is not None:
        policy.check_section(conn, principal, int(row.section_id))
    elif row.group_id is not None:
        policy.check_group(conn, principal, int(row.group_id))
    return row


def end(engine: sa.Engine, principal: Principal, session_id: int) -> dict[str, Any]:
    policy.require_teacher(principal)
    with engine.begin() as conn:
        row = _check_session(conn, principal, session_id)
        if row.ended_at is None:
            conn.execute(
                class_sessions.update()
                .where(class_sessions.c.id == session_id, class_sessions.c.ended_at.is_(None))
                .values(ended_at=_now())
            )
        return _session(conn, session_id)


def session(engine: sa.Engine, principal: Principal, session_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        _check_session(conn, principal, session_id)
        return _session(conn, session_id)


def _session(conn: sa.Connection, session_id: int) -> dict[str, Any]:
    row = conn.execute(sa.select(class_sessions).where(class_sessions.c.id == session_id)).one()
    item = dict(row._mapping)
    members = conn.execute(
        sa.select(people.c.id, people.c.given_name, people.c.family_name, people.c.email)
        .join(class_session_members, class_session_members.c.person_id == people.c.id)
        .where(class_session_members.c.class_session_id == session_id)
        .order_by(people.c.family_name, people.c.given_name, people.c.id)
    )
    item["members"] = [{**dict(m._mapping), "name": roster.display_name(m)} for m in members]
    if row.section_id is not None:
        item["title"] = conn.execute(
            sa.select(sections.c.name).where(sections.c.id == row.section_id)
        ).scalar()
    else:
        item["title"] = conn.execute(
            sa.select(groups.c.name).where(groups.c.id == row.group_id)
        ).scalar()
    return item


def active_session_of_student(
    engine: sa.Engine, district_id: int, *, email: str | None, google_id: str | None
) -> dict[str, Any] | None:
    """The running class session a student is in (the latest started), for the extension."""
    with engine.connect() as conn:
        person_id = None
        for namespace, value in (
            ("google", (google_id or "").strip()),
            ("email", (email or "").strip().lower()),
        ):
            if value and person_id is None:
                person_id = conn.execute(
                    sa.select(id_map.c.canonical_id).where(
                        id_map.c.district_id == district_id,
                        id_map.c.entity == "person",
                        id_map.c.namespace == namespace,
                        id_map.c.external_id == value,
                    )
                ).scalar()
        if person_id is None:
            return None
        row = conn.execute(
            sa.select(class_sessions.c.id)
            .join(
                class_session_members,
                class_session_members.c.class_session_id == class_sessions.c.id,
            )
            .where(
                class_session_members.c.person_id == person_id,
                class_sessions.c.district_id == district_id,
                class_sessions.c.ended_at.is_(None),
            )
            .order_by(class_sessions.c.started_at.desc())
            .limit(1)
        ).first()
        if row is None:
            return None
        item = _session(conn, int(row.id))
        teacher = None
        if item["teacher_id"] is not None:
            found = conn.execute(
                sa.select(
                    people.c.id, people.c.given_name, people.c.family_name, people.c.email
                ).where(people.c.id == item["teacher_id"])
            ).first()
            teacher = None if found is None else roster.display_name(found)
    return {
        "id": item["id"],
        "title": item["title"],
        "section_id": item["section_id"],
        "group_id": item["group_id"],
        "teacher": teacher,
        "started_at": item["started_at"],
        "person": int(person_id),
    }


# Groups ---------------------------------------------------------------------------------------


def group_list(engine: sa.Engine, principal: Principal) -> list[dict[str, Any]]:
    policy.require_teacher(principal)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(groups).where(policy.group_scope(principal)).order_by(groups.c.name)
        ).all()
        active = _active_sessions(conn, class_sessions.c.group_id, [int(r.id) for r in rows])
        out = []
        for r in rows:
            item = dict(r._mapping)
            item["members"] = _members(conn, int(r.id))
            item["session"] = active.get(int(r.id))
            out.append(item)
    return out


def _members(conn: sa.Connection, group_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        sa.select(people.c.id, people.c.given_name, people.c.family_name, people.c.email)
        .join(group_members, group_members.c.person_id == people.c.id)
        .where(group_members.c.group_id == group_id)
        .order_by(people.c.family_name, people.c.given_name, people.c.id)
    )
    return [{**dict(r._mapping), "name": roster.display_name(r)} for r in rows]


def group(engine: sa.Engine, principal: Principal, group_id: int) -> dict[str, Any]:
    policy.require_teacher(principal)
    with engine.connect() as conn:
        policy.check_group(conn, principal, group_id)
        row = conn.execute(sa.select(groups).where(groups.c.id == group_id)).one()
        return {**dict(row._mapping), "members": _members(conn, group_id)}


def _require_groups(conn: sa.Connection, principal: Principal) -> int:
    teacher = policy.require_teacher(principal)
    if not groups_allowed(conn, principal.district_id):
        raise Forbidden("Your district does not allow custom groups.")
    return teacher


def _check_students(conn: sa.Connection, principal: Principal, person_ids: list[int]) -> None:
    if not person_ids:
        return
    allowed = set(
        conn.execute(
            sa.select(people.c.id).where(
                policy.student_pool(principal), people.c.id.in_(person_ids)
            )
        ).scalars()
    )
    outside = [p for p in person_ids if p not in allowed]
    if outside:
        raise Forbidden(
            f"A group can only hold students of your sections; not: {', '.join(map(str, outside))}."
        )


def create_group(
    engine: sa.Engine, principal: Principal, name: str, members: Iterable[int] = ()
) -> dict[str, Any]:
    name = name.strip()
    if not name:
        raise ConfigError("Give the group a name.")
    member_ids = sorted(set(members))
    with engine.begin() as conn:
        teacher = _require_groups(conn, principal)
        _check_students(conn, principal, member_ids)
        result = conn.execute(
            groups.insert().values(
                district_id=principal.district_id, owner_id=teacher, name=name, created_at=_now()
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        group_id = int(key[0])
        for person_id in member_ids:
            conn.execute(
                group_members.insert().values(
                    group_id=group_id, person_id=person_id, added_at=_now()
                )
            )
    return group(engine, principal, group_id)


def update_group(
    engine: sa.Engine,
    principal: Principal,
    group_id: int,
    *,
    name: str | None = None,
    add: Iterable[int] = (),
    remove: Iterable[int] = (),
) -> dict[str, Any]:
    adding = sorted(set(add))
    removing = sorted(set(remove))
    with engine.begin() as conn:
        _require_groups(conn, principal)
        policy.check_group(conn, principal, group_id)
        if name is not None:
            if not name.strip():
                raise ConfigError("Give the group a name.")
            conn.execute(groups.update().where(groups.c.id == group_id).values(name=name.strip()))
        _check_students(conn, principal, adding)
        present = set(
            conn.execute(
                sa.select(group_members.c.person_id).where(group_members.c.group_id == group_id)
            ).scalars()
        )
        for person_id in adding:
            if person_id not in present:
                conn.execute(
                    group_members.insert().values(
                        group_id=group_id, person_id=person_id, added_at=_now()
                    )
                )
        if removing:
            conn.execute(
                group_members.delete().where(
                    group_members.c.group_id == group_id,
                    group_members.c.person_id.in_(removing),
                )
            )
    return group(engine, principal, group_id)


def delete_group(engine: sa.Engine, principal: Principal, group_id: int) -> dict[str, Any]:
    """Delete a group: archived (its past class sessions keep pointing at it)."""
    with engine.begin() as conn:
        _require_groups(conn, principal)
        policy.check_group(conn, principal, group_id)
        conn.execute(groups.update().where(groups.c.id == group_id).values(archived_at=_now()))
    return {"group": group_id, "deleted": True}
