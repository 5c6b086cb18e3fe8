"""The one permission policy of the web app and the API: who may see and do what.

Every page and API route turns its caller into a :class:`Principal` and asks this module. Scopes
are SQL conditions, so lists are filtered in the database and a single record is checked with the
same condition that filters its list. docs/web.md has the table of roles.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa

from rostersync.errors import NotFound, RosterError
from rostersync.store.schema import (
    enrollments,
    groups,
    people,
    runs,
    schools,
    sections,
    sources,
    users,
)

Role = Literal["district-admin", "school-admin", "teacher"]
ROLES: tuple[Role, ...] = ("district-admin", "school-admin", "teacher")
TEACHING_ROLES = ("owner", "co-teacher")


class Forbidden(RosterError):
    """The caller is signed in but may not see or do this."""


class Unauthenticated(RosterError):
    """No valid session, token or key came with the request."""


@dataclass(frozen=True)
class Principal:
    """Who is asking: a signed-in user, with what the policy needs to know about them."""

    user_id: int
    email: str
    district_id: int
    role: Role
    #: The schools of a school admin (empty for other roles).
    school_ids: frozenset[int]
    #: For a teacher, the synced teacher person with the same email in the district, if any.
    person_id: int | None

    @property
    def is_admin(self) -> bool:
        return self.role in ("district-admin", "school-admin")

    @property
    def is_district_admin(self) -> bool:
        return self.role == "district-admin"


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("Only district and school admins can do this.")


def require_district_admin(principal: Principal) -> None:
    if not principal.is_district_admin:
        raise Forbidden("Only a district admin can do this.")


def require_teacher(principal: Principal) -> int:
    """The teacher's person id; a teacher account that no roster names yet has none."""
    if principal.role != "teacher":
        raise Forbidden("Only teachers can do this.")
    if principal.person_id is None:
        raise Forbidden(
            "Your account is not linked to a teacher on the roster yet: the roster has no "
            f"teacher with the email {principal.email}. Ask your district admin."
        )
    return principal.person_id


# Scopes -------------------------------------------------------------------------------------


def taught_sections(person_id: int) -> sa.Select[tuple[int]]:
    """The sections a person teaches now: a current owner or co-teacher enrollment."""
    return sa.select(enrollments.c.section_id).where(
        enrollments.c.person_id == person_id,
        enrollments.c.role.in_(TEACHING_ROLES),
        enrollments.c.end_at.is_(None),
    )


def section_scope(principal: Principal) -> sa.ColumnElement[bool]:
    """The sections the principal may see (a condition on ``sections``)."""
    in_district = sections.c.district_id == principal.district_id
    if principal.role == "district-admin":
        return in_district
    if principal.role == "school-admin":
        return sa.and_(in_district, sections.c.school_id.in_(sorted(principal.school_ids)))
    if principal.person_id is None:
        return sa.false()
    return sa.and_(in_district, sections.c.id.in_(taught_sections(principal.person_id)))


def school_scope(principal: Principal) -> sa.ColumnElement[bool]:
    """The schools the principal may browse (teachers browse none)."""
    in_district = schools.c.district_id == principal.district_id
    if principal.role == "district-admin":
        return in_district
    if principal.role == "school-admin":
        return sa.and_(in_district, schools.c.id.in_(sorted(principal.school_ids)))
    return sa.false()


def person_scope(principal: Principal) -> sa.ColumnElement[bool]:
    """The people the principal may see: an admin's whole district or schools (pending students
    belong to no school yet and are visible to every admin of the district); a teacher's
    current students and co-teachers."""
    in_district = people.c.district_id == principal.district_id
    if principal.role == "district-admin":
        return in_district
    if principal.role == "school-admin":
        school_ids = sorted(principal.school_ids)
        enrolled = (
            sa.select(enrollments.c.person_id)
            .join(sections, sections.c.id == enrollments.c.section_id)
            .where(sections.c.school_id.in_(school_ids), enrollments.c.end_at.is_(None))
        )
        return sa.and_(
            in_district,
            sa.or_(
                people.c.school_id.in_(school_ids),
                people.c.id.in_(enrolled),
                people.c.status == "pending",
            ),
        )
    if principal.person_id is None:
        return sa.false()
    members = sa.select(enrollments.c.person_id).where(
        enrollments.c.section_id.in_(taught_sections(principal.person_id)),
        enrollments.c.end_at.is_(None),
    )
    return sa.and_(in_district, people.c.id.in_(members))


def student_pool(principal: Principal) -> sa.ColumnElement[bool]:
    """The students a teacher may put in a group: the current students of their sections."""
    if principal.person_id is None:
        return sa.false()
    members = sa.select(enrollments.c.person_id).where(
        enrollments.c.section_id.in_(taught_sections(principal.person_id)),
        enrollments.c.role == "student",
        enrollments.c.end_at.is_(None),
    )
    return sa.and_(people.c.district_id == principal.district_id, people.c.id.in_(members))


def group_scope(principal: Principal) -> sa.ColumnElement[bool]:
    """Groups are a teacher's own: only their owner sees them."""
    if principal.role != "teacher" or principal.person_id is None:
        return sa.false()
    return sa.and_(
        groups.c.district_id == principal.district_id,
        groups.c.owner_id == principal.person_id,
        groups.c.archived_at.is_(None),
    )


# Checks of single records --------------------------------------------------------------------


def _check(
    conn: sa.Connection,
    table: sa.Table,
    ident: int,
    district_column: sa.ColumnElement[int],
    district_id: int,
    scope: sa.ColumnElement[bool],
    what: str,
    select_from: sa.FromClause | None = None,
) -> None:
    """Another district's record answers NotFound like a missing one; a record of the district
    outside the principal's scope answers Forbidden."""
    base = sa.select(table.c.id).select_from(select_from if select_from is not None else table)
    found = conn.execute(base.where(table.c.id == ident, district_column == district_id)).first()
    if found is None:
        raise NotFound(f"There is no {what} {ident}.")
    if conn.execute(base.where(table.c.id == ident, scope)).first() is None:
        raise Forbidden(f"You don't have access to {what} {ident}.")


def check_section(conn: sa.Connection, principal: Principal, section_id: int) -> None:
    _check(
        conn,
        sections,
        section_id,
        sections.c.district_id,
        principal.district_id,
        section_scope(principal),
        "section",
    )


def check_person(conn: sa.Connection, principal: Principal, person_id: int) -> None:
    _check(
        conn,
        people,
        person_id,
        people.c.district_id,
        principal.district_id,
        person_scope(principal),
        "person",
    )


def check_school(conn: sa.Connection, principal: Principal, school_id: int) -> None:
    _check(
        conn,
        schools,
        school_id,
        schools.c.district_id,
        principal.district_id,
        school_scope(principal),
        "school",
    )


def check_group(conn: sa.Connection, principal: Principal, group_id: int) -> None:
    _check(
        conn,
        groups,
        group_id,
        groups.c.district_id,
        principal.district_id,
        group_scope(principal),
        "group",
    )


def check_source(conn: sa.Connection, principal: Principal, source_id: int) -> None:
    """Sources are the district's: every admin may read them; teachers may not."""
    scope = sa.true() if principal.is_admin else sa.false()
    _check(
        conn,
        sources,
        source_id,
        sources.c.district_id,
        principal.district_id,
        scope,
        "source",
    )


def check_run(conn: sa.Connection, principal: Principal, run_id: int) -> None:
    scope = sa.true() if principal.is_admin else sa.false()
    _check(
        conn,
        runs,
        run_id,
        sources.c.district_id,
        principal.district_id,
        scope,
        "run",
        select_from=runs.join(sources, sources.c.id == runs.c.source_id),
    )


def user_scope(principal: Principal) -> sa.ColumnElement[bool]:
    """Accounts an admin may manage: a district admin any of the district's; a school admin the
    teachers who teach in their schools."""
    in_district = users.c.district_id == principal.district_id
    if principal.is_district_admin:
        return in_district
    if principal.role != "school-admin":
        return sa.false()
    teaching_here = (
        sa.select(people.c.email)
        .join(enrollments, enrollments.c.person_id == people.c.id)
        .join(sections, sections.c.id == enrollments.c.section_id)
        .where(
            people.c.district_id == principal.district_id,
            sections.c.school_id.in_(sorted(principal.school_ids)),
            enrollments.c.role.in_(TEACHING_ROLES),
            enrollments.c.end_at.is_(None),
        )
    )
    return sa.and_(in_district, users.c.role == "teacher", users.c.email.in_(teaching_here))


def check_user(conn: sa.Connection, principal: Principal, user_id: int) -> None:
    _check(
        conn,
        users,
        user_id,
        users.c.district_id,
        principal.district_id,
        user_scope(principal),
        "account",
    )


def check_schools_allowed(principal: Principal, school_ids: Iterable[int | None]) -> None:
    """A school admin acts only within their schools."""
    if principal.is_district_admin:
        return
    outside = {s for s in school_ids if s not in principal.school_ids}
    if outside:
        raise Forbidden("That is outside your schools.")
