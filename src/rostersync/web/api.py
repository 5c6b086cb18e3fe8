"""The JSON API under ``/api/v1``: everything the pages do, for scripts and the extension.

Routes only parse and answer; the work and the permission checks are in ``roster``, ``actions``
and ``classroom``, which the pages call too.
"""

from __future__ import annotations

from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, File, Form, Header, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from rostersync import service
from rostersync.errors import ConfigError, InputError
from rostersync.jobs import google_push
from rostersync.web import accounts, actions, audit, auth, classroom, extension, roster
from rostersync.web.policy import Principal, require_admin

router = APIRouter(prefix="/api/v1")
Caller = Annotated[Principal, Depends(auth.authenticate)]
JSON = dict[str, Any]


def _engine(request: Request) -> sa.Engine:
    engine: sa.Engine = request.app.state.engine
    return engine


def _wake(request: Request) -> None:
    wake = getattr(request.app.state, "wake", None)
    if wake is not None:
        wake()


# Who am I ------------------------------------------------------------------------------------


@router.get("/me", tags=["accounts"])
def me(request: Request, principal: Caller) -> JSON:
    """The caller's account, and the CSRF token to send with unsafe requests from a browser."""
    return {
        "user": principal.user_id,
        "email": principal.email,
        "role": principal.role,
        "district": principal.district_id,
        "schools": sorted(principal.school_ids),
        "person": principal.person_id,
        "csrf_token": getattr(request.state, "csrf_token", None),
    }


# District and sources --------------------------------------------------------------------


class Toggles(BaseModel):
    authoritative: bool | None = None
    allow_groups: bool | None = None


@router.get("/district", tags=["rostering"])
def district_settings(request: Request, principal: Caller) -> JSON:
    require_admin(principal)
    row = roster.district(_engine(request), principal)
    return {
        key: row[key]
        for key in ("id", "name", "timezone", "authoritative", "allow_groups", "safety_share")
    } | {"safety_floor": row["safety_floor"]}


@router.patch("/district", tags=["rostering"])
def set_district(request: Request, principal: Caller, body: Toggles) -> JSON:
    return actions.set_toggles(
        _engine(request),
        principal,
        authoritative=body.authoritative,
        allow_groups=body.allow_groups,
    )


class NewSource(BaseModel):
    name: str
    kind: str = Field(description="csv or oneroster-csv")
    config: dict[str, str] = Field(default_factory=dict, description="e.g. {'url': 'https://…'}")
    schedule: str | None = Field(None, description="nightly@02:30, every 4h, or a cron line")


class SourceChange(BaseModel):
    config: dict[str, str] = Field(default_factory=dict)
    schedule: str | None = None
    paused: bool | None = None


@router.get("/sources", tags=["rostering"])
def list_sources(request: Request, principal: Caller) -> list[JSON]:
    return roster.source_list(_engine(request), principal)


@router.post("/sources", status_code=201, tags=["rostering"])
def add_source(request: Request, principal: Caller, body: NewSource) -> JSON:
    return actions.add_source(
        _engine(request), principal, body.name, body.kind, body.config, schedule=body.schedule
    )


@router.post("/sources/upload", status_code=201, tags=["rostering"])
async def upload_source(
    request: Request,
    principal: Caller,
    name: Annotated[str, Form()],
    file: Annotated[UploadFile, File(description="a roster .csv or a OneRoster .zip")],
    schedule: Annotated[str, Form()] = "",
    school: Annotated[str, Form()] = "",
) -> JSON:
    """Add a source from an uploaded file, kept in the uploads folder beside the store."""
    require_admin(principal)
    data = await file.read()
    path = actions.save_upload(request.app.state.uploads, file.filename or "upload.csv", data)
    kind = "oneroster-csv" if path.suffix == ".zip" else "csv"
    config = {"path": str(path)}
    if school.strip() and kind == "csv":
        config["school"] = school.strip()
    return actions.add_source(
        _engine(request), principal, name, kind, config, schedule=schedule or None
    )


@router.get("/sources/{source_id}", tags=["rostering"])
def get_source(request: Request, principal: Caller, source_id: int) -> JSON:
    return roster.source(_engine(request), principal, source_id)


@router.patch("/sources/{source_id}", tags=["rostering"])
def change_source(request: Request, principal: Caller, source_id: int, body: SourceChange) -> JSON:
    return actions.update_source(
        _engine(request),
        principal,
        source_id,
        body.config,
        schedule=body.schedule,
        paused=body.paused,
    )


@router.post("/sources/{source_id}/sync", status_code=202, tags=["rostering"])
def sync_now(request: Request, principal: Caller, source_id: int) -> JSON:
    """Sync Now: queue a run (or return the one already waiting); poll /runs/{run}."""
    queued = actions.sync_now(_engine(request), principal, source_id)
    _wake(request)
    return queued


# Runs ----------------------------------------------------------------------------------------


@router.get("/runs", tags=["rostering"])
def list_runs(
    request: Request,
    principal: Caller,
    source_id: int | None = None,
    status: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[JSON]:
    return roster.run_log(
        _engine(request), principal, source_id=source_id, status=status, limit=limit
    )


@router.get("/runs/{run_id}", tags=["rostering"])
def get_run(request: Request, principal: Caller, run_id: int) -> JSON:
    """A run with its stage and counts: poll it every 2 s while it is queued or running."""
    return roster.run(_engine(request), principal, run_id)


@router.get("/runs/{run_id}/changes", tags=["rostering"])
def get_changes(
    request: Request,
    principal: Caller,
    run_id: int,
    entity: str | None = None,
    action: str | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> JSON:
    return roster.run_changes(
        _engine(request),
        principal,
        run_id,
        entity=entity,
        action=action,
        limit=limit,
        offset=offset,
    )


@router.post("/runs/{run_id}/approve", tags=["rostering"])
def approve_run(request: Request, principal: Caller, run_id: int) -> JSON:
    return actions.approve(_engine(request), principal, run_id)


@router.post("/runs/{run_id}/discard", tags=["rostering"])
def discard_run(request: Request, principal: Caller, run_id: int) -> JSON:
    return actions.discard(_engine(request), principal, run_id)


# The unmatched tray -----------------------------------------------------------------------


class Match(BaseModel):
    student: int = Field(description="the roster student's person id")


class Keep(BaseModel):
    people: list[int]
    grade: str | None = None
    sections: list[int] = Field(default_factory=list)
    school: int | None = None


class Dismiss(BaseModel):
    people: list[int]


@router.get("/pending", tags=["unmatched"])
def list_pending(request: Request, principal: Caller) -> list[JSON]:
    return roster.pending(_engine(request), principal)


@router.post("/pending/{person_id}/match", tags=["unmatched"])
def match_pending(request: Request, principal: Caller, person_id: int, body: Match) -> JSON:
    return actions.match(_engine(request), principal, person_id, body.student)


@router.post("/pending/keep", tags=["unmatched"])
def keep_pending(request: Request, principal: Caller, body: Keep) -> JSON:
    return actions.keep(
        _engine(request),
        principal,
        body.people,
        grade=body.grade,
        section_ids=body.sections,
        school_id=body.school,
    )


@router.post("/pending/dismiss", tags=["unmatched"])
def dismiss_pending(request: Request, principal: Caller, body: Dismiss) -> JSON:
    return actions.dismiss(_engine(request), principal, body.people)


# Browsing --------------------------------------------------------------------------------------


@router.get("/schools", tags=["roster"])
def list_schools(request: Request, principal: Caller) -> list[JSON]:
    return roster.school_list(_engine(request), principal)


@router.get("/sections", tags=["roster"])
def list_sections(
    request: Request, principal: Caller, school_id: int | None = None, q: str | None = None
) -> list[JSON]:
    return roster.section_list(_engine(request), principal, school_id=school_id, q=q)


@router.get("/sections/{section_id}", tags=["roster"])
def get_section(request: Request, principal: Caller, section_id: int) -> JSON:
    return roster.section(_engine(request), principal, section_id)


@router.get("/people", tags=["roster"])
def list_people(
    request: Request,
    principal: Caller,
    q: str | None = None,
    role: str | None = None,
    status: str | None = None,
) -> list[JSON]:
    return roster.people_list(_engine(request), principal, q=q, role=role, status=status)


@router.get("/people/{person_id}", tags=["roster"])
def get_person(request: Request, principal: Caller, person_id: int) -> JSON:
    """A person with their enrollment history."""
    return roster.person(_engine(request), principal, person_id)


@router.get("/readiness", tags=["roster"])
def readiness(request: Request, principal: Caller) -> JSON:
    return roster.readiness(_engine(request), principal)


@router.get("/audit", tags=["rostering"])
def audit_log(
    request: Request,
    principal: Caller,
    action: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[JSON]:
    return audit.entries(_engine(request), principal, limit=limit, action=action)


# Keys, accounts, tokens --------------------------------------------------------------------


class NewKey(BaseModel):
    name: str = "extension"


class NewAccount(BaseModel):
    email: str
    role: str = "teacher"


class NewToken(BaseModel):
    name: str | None = None


@router.get("/extension-keys", tags=["extension"])
def list_keys(request: Request, principal: Caller) -> list[JSON]:
    return actions.extension_keys(_engine(request), principal)


@router.post("/extension-keys", status_code=201, tags=["extension"])
def create_key(request: Request, principal: Caller, body: NewKey) -> JSON:
    """A new extension key; the key is in this answer only."""
    return actions.create_extension_key(_engine(request), principal, body.name)


@router.delete("/extension-keys/{key_id}", tags=["extension"])
def revoke_key(request: Request, principal: Caller, key_id: int) -> JSON:
    return actions.revoke_extension_key(_engine(request), principal, key_id)


@router.get("/users", tags=["accounts"])
def list_users(request: Request, principal: Caller) -> list[JSON]:
    with _engine(request).connect() as conn:
        return accounts.list_users(conn, principal)


@router.post("/users", status_code=201, tags=["accounts"])
def add_user(request: Request, principal: Caller, body: NewAccount) -> JSON:
    return actions.create_account(_engine(request), principal, body.email, body.role)


@router.post("/users/{user_id}/sign-in-link", status_code=201, tags=["accounts"])
def sign_in_link(request: Request, principal: Caller, user_id: int) -> JSON:
    """A one-time sign-in link for a teacher (single use, one hour)."""
    return actions.sign_in_link(_engine(request), principal, user_id, str(request.base_url))


@router.get("/tokens", tags=["accounts"])
def list_tokens(request: Request, principal: Caller) -> list[JSON]:
    with _engine(request).connect() as conn:
        return auth.list_tokens(conn, principal.user_id)


@router.post("/tokens", status_code=201, tags=["accounts"])
def create_token(request: Request, principal: Caller, body: NewToken) -> JSON:
    """A personal API token with the caller's permissions; the token is in this answer only."""
    token_id, token = auth.create_token(_engine(request), principal.user_id, body.name)
    return {"id": token_id, "token": token}


@router.delete("/tokens/{token_id}", tags=["accounts"])
def revoke_token(request: Request, principal: Caller, token_id: int) -> JSON:
    auth.revoke_token(_engine(request), token_id, principal.user_id)
    return {"id": token_id, "revoked": True}


# Teachers: classes, class sessions, groups -------------------------------------------------


class StartClass(BaseModel):
    section_id: int | None = None
    group_id: int | None = None


class NewGroup(BaseModel):
    name: str
    members: list[int] = Field(default_factory=list)


class GroupChange(BaseModel):
    name: str | None = None
    add: list[int] = Field(default_factory=list)
    remove: list[int] = Field(default_factory=list)


@router.get("/my/classes", tags=["classes"])
def my_classes(request: Request, principal: Caller) -> JSON:
    """The teacher's sections with rosters and running sessions, and their groups."""
    return classroom.my_classes(_engine(request), principal)


@router.post("/class-sessions", status_code=201, tags=["classes"])
def start_class(request: Request, principal: Caller, body: StartClass) -> JSON:
    """Start Class: records the roster as it is now."""
    return classroom.start(
        _engine(request), principal, section_id=body.section_id, group_id=body.group_id
    )


@router.get("/class-sessions/{session_id}", tags=["classes"])
def get_class_session(request: Request, principal: Caller, session_id: int) -> JSON:
    return classroom.session(_engine(request), principal, session_id)


@router.post("/class-sessions/{session_id}/end", tags=["classes"])
def end_class(request: Request, principal: Caller, session_id: int) -> JSON:
    return classroom.end(_engine(request), principal, session_id)


@router.get("/groups", tags=["classes"])
def list_groups(request: Request, principal: Caller) -> list[JSON]:
    return classroom.group_list(_engine(request), principal)


@router.post("/groups", status_code=201, tags=["classes"])
def create_group(request: Request, principal: Caller, body: NewGroup) -> JSON:
    return classroom.create_group(_engine(request), principal, body.name, body.members)


@router.get("/groups/{group_id}", tags=["classes"])
def get_group(request: Request, principal: Caller, group_id: int) -> JSON:
    return classroom.group(_engine(request), principal, group_id)


@router.patch("/groups/{group_id}", tags=["classes"])
def change_group(request: Request, principal: Caller, group_id: int, body: GroupChange) -> JSON:
    return classroom.update_group(
        _engine(request), principal, group_id, name=body.name, add=body.add, remove=body.remove
    )


@router.delete("/groups/{group_id}", tags=["classes"])
def delete_group(request: Request, principal: Caller, group_id: int) -> JSON:
    return classroom.delete_group(_engine(request), principal, group_id)


# The extension --------------------------------------------------------------------------------


class Sighting(BaseModel):
    email: str | None = Field(None, max_length=320)
    google_id: str | None = Field(None, max_length=200)
    name: str | None = Field(None, max_length=300)
    device: str | None = Field(None, max_length=200)


KeyHeader = Annotated[str | None, Header(alias="X-Extension-Key")]


def _key_holder(request: Request, key: str | None) -> extension.KeyHolder:
    holder = extension.verify(_engine(request), key)
    request.app.state.limiter.take(holder.key_id)
    return holder


@router.post("/extension/sightings", tags=["extension"])
def record_sighting(request: Request, body: Sighting, x_extension_key: KeyHeader = None) -> JSON:
    """The extension saw a student: recorded idempotently; answers matched or pending."""
    holder = _key_holder(request, x_extension_key)
    engine = _engine(request)
    if not (body.email or "").strip() and not (body.google_id or "").strip():
        raise ConfigError("A sighting needs the student's email or google_id.")
    with engine.connect() as conn:
        from rostersync.store.schema import districts

        name = conn.execute(
            sa.select(districts.c.name).where(districts.c.id == holder.district_id)
        ).scalar_one()
    result = service.record_sighting(
        engine,
        str(name),
        email=body.email,
        google_id=body.google_id,
        name=body.name,
        device=body.device,
    )
    return result


@router.get("/extension/session", tags=["extension"])
def student_session(
    request: Request,
    x_extension_key: KeyHeader = None,
    email: str | None = None,
    google_id: str | None = None,
) -> JSON:
    """The class session a student is in now, or null."""
    holder = _key_holder(request, x_extension_key)
    if not (email or "").strip() and not (google_id or "").strip():
        raise ConfigError("Ask with the student's email or google_id.")
    found = classroom.active_session_of_student(
        _engine(request), holder.district_id, email=email, google_id=google_id
    )
    return {"session": found}


# Google Classroom push notifications ----------------------------------------------------------


@router.post("/google/notifications/{source_id}", status_code=204, tags=["rostering"])
async def google_notification(request: Request, source_id: int, token: str = "") -> Response:
    """A Pub/Sub push delivery of a Classroom roster change, authenticated by the source's push
    token in the address (Pub/Sub sends no other credential we hold). Queues a sync of the
    source; a redelivered message does nothing new. Answers 204 so Pub/Sub stops retrying."""
    body = await request.body()
    try:
        receipt = await run_in_threadpool(
            google_push.receive, _engine(request), source_id, token, body
        )
    except google_push.PushRefused as exc:
        return JSONResponse({"detail": str(exc)}, status_code=401)
    except InputError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=400)
    if receipt.outcome == "queued":
        _wake(request)
    return Response(status_code=204)
