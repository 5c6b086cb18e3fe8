"""Admin actions of the Rostering page and the API: Sync Now, approve and discard held runs, the
unmatched tray, the district's toggles, sources, extension keys and sign-in links.

Each checks the policy, makes its change and writes the audit log — in the same transaction when
the change is ours; after the engine's own transaction for approve and discard.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from rostersync import service
from rostersync.errors import ConfigError, NotFound, RosterError
from rostersync.jobs import queue, schedules, tasks
from rostersync.store import bulk
from rostersync.store.schema import (
    districts,
    enrollments,
    group_members,
    id_map,
    people,
    sections,
    sightings,
    sources,
)
from rostersync.sync import engine as sync_engine
from rostersync.web import audit, auth, extension, policy
from rostersync.web.policy import Principal

logger = logging.getLogger(__name__)


def _source_name(conn: sa.Connection, source_id: int) -> str:
    return str(
        conn.execute(sa.select(sources.c.name).where(sources.c.id == source_id)).scalar_one()
    )


def _district_name(conn: sa.Connection, district_id: int) -> str:
    return str(
        conn.execute(sa.select(districts.c.name).where(districts.c.id == district_id)).scalar_one()
    )


# Runs ----------------------------------------------------------------------------------------


def sync_now(engine: sa.Engine, principal: Principal, source_id: int) -> dict[str, Any]:
    """Queue a run of the source (or return the one already waiting), asked by the principal."""
    policy.require_district_admin(principal)
    with engine.connect() as conn:
        policy.check_source(conn, principal, source_id)
        name = _source_name(conn, source_id)
    queued = queue.request_run(engine, name, trigger="sync-now", requested_by=principal.email)
    with engine.begin() as conn:
        audit.record(
            conn,
            principal,
            "sync-now",
            f"source:{source_id}",
            {"run": queued.run_id, "queued": queued.created},
        )
    return queued.as_dict()


def approve(engine: sa.Engine, principal: Principal, run_id: int) -> dict[str, Any]:
    """Apply a held run (within this request: the feed was fetched already)."""
    policy.require_district_admin(principal)
    with engine.connect() as conn:
        policy.check_run(conn, principal, run_id)
    result = sync_engine.approve(engine, run_id, by=principal.email)
    with engine.connect() as conn:
        from rostersync.store.schema import runs

        source_id = conn.execute(
            sa.select(runs.c.source_id).where(runs.c.id == run_id)
        ).scalar_one()
    tasks.record_outcome(engine, int(source_id))
    with engine.begin() as conn:
        audit.record(conn, principal, "run.approve", f"run:{run_id}", {"status": result.status})
    return result.as_dict()


def discard(engine: sa.Engine, principal: Principal, run_id: int) -> dict[str, Any]:
    policy.require_district_admin(principal)
    with engine.connect() as conn:
        policy.check_run(conn, principal, run_id)
    result = sync_engine.discard(engine, run_id, by=principal.email)
    with engine.begin() as conn:
        audit.record(conn, principal, "run.discard", f"run:{run_id}")
    return result.as_dict()


# District toggles ----------------------------------------------------------------------------


def set_toggles(
    engine: sa.Engine,
    principal: Principal,
    *,
    authoritative: bool | None = None,
    allow_groups: bool | None = None,
) -> dict[str, Any]:
    """Change "Sources are authoritative" and "Allow teacher custom groups"."""
    policy.require_district_admin(principal)
    values = {
        k: v
        for k, v in (("authoritative", authoritative), ("allow_groups", allow_groups))
        if v is not None
    }
    with engine.begin() as conn:
        before = conn.execute(
            sa.select(districts.c.authoritative, districts.c.allow_groups).where(
                districts.c.id == principal.district_id
            )
        ).one()
        if values:
            conn.execute(
                districts.update().where(districts.c.id == principal.district_id).values(**values)
            )
            audit.record(
                conn,
                principal,
                "district.settings",
                f"district:{principal.district_id}",
                {k: {"before": bool(getattr(before, k)), "after": v} for k, v in values.items()},
            )
        row = conn.execute(
            sa.select(districts.c.authoritative, districts.c.allow_groups).where(
                districts.c.id == principal.district_id
            )
        ).one()
    return {"authoritative": bool(row.authoritative), "allow_groups": bool(row.allow_groups)}


# The unmatched tray -----------------------------------------------------------------------


def _pending_row(conn: sa.Connection, principal: Principal, person_id: int) -> Any:
    row = conn.execute(
        sa.select(people).where(
            people.c.id == person_id, people.c.district_id == principal.district_id
        )
    ).first()
    if row is None:
        raise NotFound(f"There is no person {person_id}.")
    if row.status != "pending":
        raise ConfigError(f"Person {person_id} is {row.status}, not an unmatched student.")
    return row


def match(
    engine: sa.Engine, principal: Principal, pending_id: int, student_id: int
) -> dict[str, Any]:
    """Merge a pending student into a roster student: the pending one's ids, sightings and group
    memberships move to the student, and the pending record is archived (kept, not deleted)."""
    policy.require_admin(principal)
    with engine.begin() as conn:
        pending = _pending_row(conn, principal, pending_id)
        policy.check_person(conn, principal, student_id)
        student = conn.execute(sa.select(people).where(people.c.id == student_id)).one()
        if student.role != "student" or student.status != "active":
            raise ConfigError(f"Person {student_id} is not an active roster student.")
        policy.check_schools_allowed(principal, [student.school_id])
        conn.execute(
            id_map.update()
            .where(
                id_map.c.district_id == principal.district_id,
                id_map.c.entity == "person",
                id_map.c.canonical_id == pending_id,
            )
            .values(canonical_id=student_id)
        )
        conn.execute(
            sightings.update()
            .where(sightings.c.person_id == pending_id)
            .values(person_id=student_id)
        )
        already = sa.select(group_members.c.group_id).where(group_members.c.person_id == student_id)
        conn.execute(
            group_members.delete().where(
                group_members.c.person_id == pending_id, group_members.c.group_id.in_(already)
            )
        )
        conn.execute(
            group_members.update()
            .where(group_members.c.person_id == pending_id)
            .values(person_id=student_id)
        )
        if pending.google_id and not student.google_id:
            conn.execute(
                people.update()
                .where(people.c.id == student_id)
                .values(google_id=pending.google_id, updated_at=datetime.now(UTC))
            )
        conn.execute(
            people.update()
            .where(people.c.id == pending_id)
            .values(status="archived", updated_at=datetime.now(UTC))
        )
        audit.record(
            conn,
            principal,
            "pending.match",
            f"person:{pending_id}",
            {"student": student_id},
        )
    logger.info("Pending person %s matched to student %s.", pending_id, student_id)
    return {"person": pending_id, "matched_to": student_id}


def keep(
    engine: sa.Engine,
    principal: Principal,
    person_ids: Iterable[int],
    *,
    grade: str | None = None,
    section_ids: Iterable[int] = (),
    school_id: int | None = None,
) -> dict[str, Any]:
    """Keep pending students as local students, with a grade and hand-made enrollments in the
    given sections (which an authoritative source ends if it does not list them)."""
    policy.require_admin(principal)
    ids = sorted(set(person_ids))
    section_list = sorted(set(section_ids))
    if not ids:
        raise ConfigError("Choose at least one student.")
    now = datetime.now(UTC)
    with engine.begin() as conn:
        for ident in ids:
            _pending_row(conn, principal, ident)
        school_ids = []
        for section_id in section_list:
            policy.check_section(conn, principal, section_id)
            school_ids.append(
                conn.execute(
                    sa.select(sections.c.school_id).where(sections.c.id == section_id)
                ).scalar()
            )
        if school_id is None and school_ids:
            school_id = school_ids[0]
        if school_id is not None:
            policy.check_school(conn, principal, school_id)
        elif not principal.is_district_admin:
            raise ConfigError("Choose a section or school of yours for the student.")
        conn.execute(
            people.update()
            .where(people.c.id.in_(ids))
            .values(
                status="active",
                grade=(grade or "").strip() or None,
                school_id=school_id,
                updated_at=now,
            )
        )
        pairs = [(p, s) for p in ids for s in section_list]
        new_ids = bulk.allocate_ids(conn, "enrollments", len(pairs)).to_list()
        for new_id, (person_id, section_id) in zip(new_ids, pairs, strict=True):
            conn.execute(
                enrollments.insert().values(
                    id=int(new_id),
                    section_id=section_id,
                    person_id=person_id,
                    role="student",
                    start_at=now,
                    source_id=None,
                )
            )
        audit.record(
            conn,
            principal,
            "pending.keep",
            ",".join(f"person:{i}" for i in ids)[:200],
            {"people": ids, "grade": grade, "sections": section_list, "school": school_id},
        )
    return {"kept": ids, "sections": section_list}


def dismiss(engine: sa.Engine, principal: Principal, person_ids: Iterable[int]) -> dict[str, Any]:
    """Dismiss pending students as junk: archived, kept for the record."""
    policy.require_admin(principal)
    ids = sorted(set(person_ids))
    if not ids:
        raise ConfigError("Choose at least one student.")
    with engine.begin() as conn:
        for ident in ids:
            _pending_row(conn, principal, ident)
        conn.execute(
            people.update()
            .where(people.c.id.in_(ids))
            .values(status="archived", updated_at=datetime.now(UTC))
        )
        audit.record(
            conn,
            principal,
            "pending.dismiss",
            ",".join(f"person:{i}" for i in ids)[:200],
            {"people": ids},
        )
    return {"dismissed": ids}


# Sources ----------------------------------------------------------------------------------

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def save_upload(uploads: Path, filename: str, data: bytes) -> Path:
    """Keep an uploaded roster file in the uploads folder beside the store, under a fresh name."""
    if not data:
        raise ConfigError("The uploaded file is empty.")
    suffix = Path(filename).suffix.lower()
    if suffix not in (".csv", ".zip"):
        raise ConfigError("Upload a .csv file (simple roster) or a .zip (OneRoster CSV export).")
    uploads.mkdir(parents=True, exist_ok=True)
    stem = _SAFE.sub("-", Path(filename).stem)[:60] or "upload"
    path = uploads / f"{uuid.uuid4().hex[:12]}-{stem}{suffix}"
    path.write_bytes(data)
    return path.resolve()


def add_source(
    engine: sa.Engine,
    principal: Principal,
    name: str,
    kind: str,
    config: Mapping[str, str],
    *,
    schedule: str | None = None,
) -> dict[str, Any]:
    policy.require_district_admin(principal)
    name = name.strip()
    if not name:
        raise ConfigError("Give the source a name.")
    with engine.connect() as conn:
        district = _district_name(conn, principal.district_id)
    source_id = service.add_source(engine, name, district, kind, dict(config))
    if schedule and schedule.strip():
        schedules.set_schedule(engine, name, schedule.strip())
    with engine.begin() as conn:
        audit.record(
            conn,
            principal,
            "source.add",
            f"source:{source_id}",
            {"name": name, "kind": kind, "schedule": schedule or None},
        )
    return {"source": source_id, "name": name}


def update_source(
    engine: sa.Engine,
    principal: Principal,
    source_id: int,
    config: Mapping[str, str],
    *,
    schedule: str | None = None,
    paused: bool | None = None,
) -> dict[str, Any]:
    policy.require_district_admin(principal)
    with engine.connect() as conn:
        policy.check_source(conn, principal, source_id)
        name = _source_name(conn, source_id)
    if config:
        service.update_source(engine, name, dict(config))
    if schedule is not None and schedule.strip():
        schedules.set_schedule(engine, name, schedule.strip())
    if paused is not None:
        try:
            schedules.set_paused(engine, name, paused)
        except NotFound:
            if paused:
                raise
    with engine.begin() as conn:
        audit.record(
            conn,
            principal,
            "source.update",
            f"source:{source_id}",
            {"settings": sorted(config), "schedule": schedule or None, "paused": paused},
        )
    return {"source": source_id, "name": name}


# Extension keys and accounts ----------------------------------------------------------------


def create_extension_key(engine: sa.Engine, principal: Principal, name: str) -> dict[str, Any]:
    policy.require_district_admin(principal)
    with engine.begin() as conn:
        key_id, key = extension.create_key(conn, principal.district_id, name, principal.email)
        audit.record(conn, principal, "extension-key.create", f"extension-key:{key_id}")
    return {"id": key_id, "key": key}


def revoke_extension_key(engine: sa.Engine, principal: Principal, key_id: int) -> dict[str, Any]:
    policy.require_district_admin(principal)
    with engine.begin() as conn:
        extension.revoke_key(conn, principal.district_id, key_id)
        audit.record(conn, principal, "extension-key.revoke", f"extension-key:{key_id}")
    return {"id": key_id, "revoked": True}


def extension_keys(engine: sa.Engine, principal: Principal) -> list[dict[str, Any]]:
    policy.require_district_admin(principal)
    with engine.connect() as conn:
        return extension.list_keys(conn, principal.district_id)


def sign_in_link(
    engine: sa.Engine, principal: Principal, user_id: int, base_url: str
) -> dict[str, Any]:
    """A one-time sign-in link for a teacher (shown and logged in place of e-mail delivery)."""
    policy.require_admin(principal)
    with engine.connect() as conn:
        policy.check_user(conn, principal, user_id)
    token = auth.create_sign_in_link(engine, user_id, principal.user_id)
    with engine.begin() as conn:
        audit.record(conn, principal, "user.sign-in-link", f"user:{user_id}")
    url = f"{base_url.rstrip('/')}/sign-in/link/{token}"
    # TODO(mail): e-mail the link to the teacher; until then the admin is shown it.
    logger.warning(
        "Sign-in link for account %s (no mail delivery configured): %s…", user_id, url[:-32]
    )
    return {"user": user_id, "url": url, "expires_in": int(auth.LINK_LIFETIME.total_seconds())}


def create_account(
    engine: sa.Engine, principal: Principal, email: str, role: str
) -> dict[str, Any]:
    """A district admin adds a teacher or district admin account (no password: the person signs
    in with a link or sets one later)."""
    from rostersync.web import accounts

    policy.require_district_admin(principal)
    if role not in ("teacher", "district-admin"):
        raise ConfigError("Add school admins with `rostersync user add --role school-admin`.")
    with engine.connect() as conn:
        district = _district_name(conn, principal.district_id)
    try:
        user_id = accounts.add_user(engine, email, district, role)
    except RosterError:
        raise
    with engine.begin() as conn:
        audit.record(conn, principal, "user.add", f"user:{user_id}", {"role": role})
    return {"user": user_id}
