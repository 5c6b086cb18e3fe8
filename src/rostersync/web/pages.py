"""The HTML pages: server-rendered Jinja2 templates over the same functions the API calls.

Forms post back here (with the session's CSRF token) and redirect with a notice or an error, so
every page works without JavaScript; ``static/app.js`` only polls a running sync's progress.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import sqlalchemy as sa
from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from rostersync.errors import ConfigError, NotFound, RosterError
from rostersync.jobs import queue
from rostersync.web import accounts, actions, audit, auth, classroom, roster
from rostersync.web.policy import Forbidden, Principal, Unauthenticated

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
Caller = Annotated[Principal, Depends(auth.authenticate)]
IntList = Annotated[list[int], Form()]


def _when(value: Any) -> str:
    if not isinstance(value, datetime):
        return "—" if value in (None, "") else str(value)
    return auth.aware(value).strftime("%Y-%m-%d %H:%M UTC")


def _json(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)


templates.env.filters["when"] = _when
templates.env.filters["tojson_compact"] = _json
templates.env.globals["TERMINAL"] = queue.TERMINAL


def _engine(request: Request) -> sa.Engine:
    engine: sa.Engine = request.app.state.engine
    return engine


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    principal = getattr(request.state, "principal", None)
    context.setdefault("notice", request.query_params.get("notice"))
    context.setdefault("error", request.query_params.get("error"))
    return templates.TemplateResponse(
        request,
        name,
        {
            "principal": principal,
            "csrf_token": getattr(request.state, "csrf_token", ""),
            **context,
        },
        status_code=status_code,
    )


def error_page(
    request: Request, status: int, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    titles = {403: "You don't have access", 404: "Not found", 429: "Slow down"}
    response = render(
        request,
        "error.html",
        status,
        title=titles.get(status, "Something is wrong"),
        message=message,
    )
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def back(url: str, *, notice: str | None = None, error: str | None = None) -> RedirectResponse:
    query = {k: v for k, v in (("notice", notice), ("error", error)) if v}
    joiner = "&" if "?" in url else "?"
    return RedirectResponse(url + (joiner + urlencode(query) if query else ""), status_code=303)


def attempt(
    fn: Callable[[], Any], url: str, notice: str | Callable[[Any], str]
) -> RedirectResponse:
    """Run a form's action and go back with a notice, or with the error an admin can act on.
    Refusals (403, 404) are not caught: they answer with their own page."""
    try:
        result = fn()
    except (Forbidden, NotFound, Unauthenticated):
        raise
    except RosterError as exc:
        return back(url, error=str(exc))
    return back(url, notice=notice(result) if callable(notice) else notice)


# Sign-in --------------------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return "/"


def _pre_csrf(request: Request) -> str:
    return request.cookies.get(auth.PRE_CSRF_COOKIE) or secrets.token_urlsafe(24)


def _with_pre_csrf(request: Request, response: Response, token: str) -> Response:
    response.set_cookie(
        auth.PRE_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        max_age=3600,
    )
    return response


def _check_pre_csrf(request: Request, given: str) -> None:
    if not auth.same(request.cookies.get(auth.PRE_CSRF_COOKIE), given):
        raise Forbidden("The form was out of date. Reload the page and try again.")


def _signed_in(request: Request, user_id: int, target: str) -> Response:
    opened = auth.open_session(
        _engine(request), user_id, replaces=request.cookies.get(auth.SESSION_COOKIE)
    )
    response = RedirectResponse(_safe_next(target), status_code=303)
    response.set_cookie(
        auth.SESSION_COOKIE,
        opened.cookie,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        max_age=int(auth.MAX_AGE.total_seconds()),
    )
    response.delete_cookie(auth.PRE_CSRF_COOKIE)
    return response


@router.get("/sign-in")
def sign_in_form(request: Request, next: str = "/") -> Response:
    token = _pre_csrf(request)
    response = render(request, "sign_in.html", next=_safe_next(next), form_token=token, email="")
    return _with_pre_csrf(request, response, token)


@router.post("/sign-in")
def sign_in(
    request: Request,
    email: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    _check_pre_csrf(request, csrf_token)
    token = _pre_csrf(request)
    try:
        auth.validate_password_form(email, password)
        user_id = auth.PasswordProvider(_engine(request)).verify(
            email, password, auth.client_address(request)
        )
    except auth.Throttled as exc:
        response = render(
            request,
            "sign_in.html",
            429,
            next=next,
            form_token=token,
            email=email,
            error=str(exc),
        )
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except (Unauthenticated, ConfigError) as exc:
        return render(
            request,
            "sign_in.html",
            401,
            next=next,
            form_token=token,
            email=email,
            error=str(exc),
        )
    return _signed_in(request, user_id, next)


@router.post("/sign-out")
def sign_out(request: Request, principal: Caller) -> Response:
    auth.close_session(_engine(request), request.cookies.get(auth.SESSION_COOKIE))
    response = RedirectResponse("/sign-in?notice=" + quote("You are signed out."), 303)
    response.delete_cookie(auth.SESSION_COOKIE)
    return response


@router.get("/sign-in/link/{token}")
def sign_in_link_form(request: Request, token: str) -> Response:
    """A confirmation page: link scanners that open the link do not use it up."""
    form_token = _pre_csrf(request)
    response = render(request, "sign_in_link.html", token=token, form_token=form_token)
    return _with_pre_csrf(request, response, form_token)


@router.post("/sign-in/link/{token}")
def sign_in_with_link(
    request: Request, token: str, csrf_token: Annotated[str, Form()] = ""
) -> Response:
    _check_pre_csrf(request, csrf_token)
    try:
        user_id = auth.redeem_sign_in_link(_engine(request), token)
    except Unauthenticated as exc:
        return error_page(request, 401, str(exc))
    return _signed_in(request, user_id, "/")


@router.get("/")
def home(principal: Caller) -> Response:
    return RedirectResponse("/rostering" if principal.is_admin else "/classes", status_code=303)


# Rostering (admins) -----------------------------------------------------------------------


@router.get("/rostering")
def rostering(request: Request, principal: Caller) -> Response:
    engine = _engine(request)
    sources = roster.source_list(engine, principal)
    return render(
        request,
        "rostering.html",
        district=roster.district(engine, principal),
        sources=sources,
        held=roster.held_runs(engine, principal),
        pending_count=len(roster.pending(engine, principal)),
        runs=roster.run_log(engine, principal, limit=10),
    )


@router.post("/rostering/settings")
def rostering_settings(
    request: Request,
    principal: Caller,
    authoritative: Annotated[str, Form()] = "",
    allow_groups: Annotated[str, Form()] = "",
) -> Response:
    return attempt(
        lambda: actions.set_toggles(
            _engine(request),
            principal,
            authoritative=authoritative == "on",
            allow_groups=allow_groups == "on",
        ),
        "/rostering",
        "Settings saved.",
    )


@router.post("/rostering/sources/{source_id}/sync")
def rostering_sync(request: Request, principal: Caller, source_id: int) -> Response:
    def run() -> dict[str, Any]:
        queued = actions.sync_now(_engine(request), principal, source_id)
        wake = getattr(request.app.state, "wake", None)
        if wake is not None:
            wake()
        return queued

    return attempt(
        run,
        "/rostering",
        lambda q: (
            f"Run {q['run']} queued." if q["queued"] else f"Run {q['run']} is already waiting."
        ),
    )


@router.get("/rostering/sources/new")
def source_new(request: Request, principal: Caller) -> Response:
    if not principal.is_district_admin:
        raise Forbidden("Only a district admin can add sources.")
    return render(request, "source_new.html")


@router.post("/rostering/sources")
async def source_create(
    request: Request,
    principal: Caller,
    name: Annotated[str, Form()] = "",
    how: Annotated[str, Form()] = "upload",
    url: Annotated[str, Form()] = "",
    school: Annotated[str, Form()] = "",
    schools: Annotated[str, Form()] = "",
    sections: Annotated[str, Form()] = "",
    schedule: Annotated[str, Form()] = "",
    file: Annotated[UploadFile | None, File()] = None,
) -> Response:
    engine = _engine(request)
    try:
        if how == "url":
            config = {"url": url.strip()}
            kind = "csv"
        else:
            if file is None or not file.filename:
                raise ConfigError("Choose a file to upload.")
            path = actions.save_upload(request.app.state.uploads, file.filename, await file.read())
            kind = "oneroster-csv" if path.suffix == ".zip" else "csv"
            config = {"path": str(path)}
        if school.strip() and kind == "csv":
            config["school"] = school.strip()
        config.update({k: v.strip() for k, v in (("schools", schools), ("sections", sections))})
        added = actions.add_source(engine, principal, name, kind, config, schedule=schedule)
    except (Forbidden, NotFound, Unauthenticated):
        raise
    except RosterError as exc:
        return back("/rostering/sources/new", error=str(exc))
    return back("/rostering", notice=f"Source {added['name']!r} added. Press Sync Now to pull it.")


@router.get("/rostering/sources/{source_id}")
def source_page(request: Request, principal: Caller, source_id: int) -> Response:
    engine = _engine(request)
    found = roster.source(engine, principal, source_id)
    return render(
        request,
        "source.html",
        source=found,
        runs=roster.run_log(engine, principal, source_id=source_id, limit=50),
        known_schools=roster.source_schools(engine, principal, source_id),
    )


@router.post("/rostering/sources/{source_id}")
def source_update(
    request: Request,
    principal: Caller,
    source_id: int,
    url: Annotated[str, Form()] = "",
    path: Annotated[str, Form()] = "",
    school: Annotated[str, Form()] = "",
    schools: Annotated[str, Form()] = "",
    sections: Annotated[str, Form()] = "",
    schedule: Annotated[str, Form()] = "",
    paused: Annotated[str, Form()] = "",
) -> Response:
    config = {
        k: v.strip() for k, v in (("url", url), ("path", path), ("school", school)) if v.strip()
    }
    # The scope is always saved, so that clearing it widens the source to everything again.
    config.update({k: v.strip() for k, v in (("schools", schools), ("sections", sections))})
    return attempt(
        lambda: actions.update_source(
            _engine(request),
            principal,
            source_id,
            config,
            schedule=schedule,
            paused=paused == "on" if schedule.strip() or paused else None,
        ),
        f"/rostering/sources/{source_id}",
        "Source saved.",
    )


@router.get("/rostering/runs")
def runs_page(
    request: Request, principal: Caller, source_id: int | None = None, status: str | None = None
) -> Response:
    engine = _engine(request)
    return render(
        request,
        "runs.html",
        runs=roster.run_log(engine, principal, source_id=source_id, status=status or None),
        sources=roster.source_list(engine, principal),
        source_id=source_id,
        status=status or "",
    )


@router.get("/rostering/runs/{run_id}")
def run_page(
    request: Request,
    principal: Caller,
    run_id: int,
    entity: str | None = None,
    action: str | None = None,
    offset: int = 0,
) -> Response:
    engine = _engine(request)
    found = roster.run(engine, principal, run_id)
    listed = roster.run_changes(
        engine, principal, run_id, entity=entity or None, action=action or None, offset=offset
    )
    return render(
        request,
        "run.html",
        run=found,
        changes=listed,
        entity=entity or "",
        action=action or "",
    )


@router.post("/rostering/runs/{run_id}/approve")
def run_approve(request: Request, principal: Caller, run_id: int) -> Response:
    return attempt(
        lambda: actions.approve(_engine(request), principal, run_id),
        f"/rostering/runs/{run_id}",
        lambda r: f"Run {run_id} approved: {r['status']}.",
    )


@router.post("/rostering/runs/{run_id}/discard")
def run_discard(request: Request, principal: Caller, run_id: int) -> Response:
    return attempt(
        lambda: actions.discard(_engine(request), principal, run_id),
        f"/rostering/runs/{run_id}",
        f"Run {run_id} discarded; nothing of it was applied.",
    )


# The unmatched tray ---------------------------------------------------------------------------


@router.get("/rostering/unmatched")
def unmatched_page(request: Request, principal: Caller, q: str = "", person: int = 0) -> Response:
    engine = _engine(request)
    return render(
        request,
        "unmatched.html",
        pending=roster.pending(engine, principal),
        q=q,
        person=person,
        candidates=roster.candidates(engine, principal, q),
        sections=roster.section_list(engine, principal),
    )


@router.post("/rostering/unmatched/match")
def unmatched_match(
    request: Request,
    principal: Caller,
    person: Annotated[int, Form()],
    student: Annotated[int, Form()],
) -> Response:
    return attempt(
        lambda: actions.match(_engine(request), principal, person, student),
        "/rostering/unmatched",
        "Matched to the roster student.",
    )


@router.post("/rostering/unmatched/keep")
def unmatched_keep(
    request: Request,
    principal: Caller,
    people: IntList,
    grade: Annotated[str, Form()] = "",
    sections: Annotated[list[int] | None, Form()] = None,
) -> Response:
    return attempt(
        lambda: actions.keep(
            _engine(request), principal, people, grade=grade, section_ids=sections or []
        ),
        "/rostering/unmatched",
        lambda r: f"Kept {len(r['kept'])} student(s) as local students.",
    )


@router.post("/rostering/unmatched/dismiss")
def unmatched_dismiss(request: Request, principal: Caller, people: IntList) -> Response:
    return attempt(
        lambda: actions.dismiss(_engine(request), principal, people),
        "/rostering/unmatched",
        lambda r: f"Dismissed {len(r['dismissed'])}.",
    )


# Reports, keys, accounts, audit -------------------------------------------------------------


@router.get("/rostering/readiness")
def readiness_page(request: Request, principal: Caller) -> Response:
    return render(request, "readiness.html", report=roster.readiness(_engine(request), principal))


@router.get("/rostering/audit")
def audit_page(request: Request, principal: Caller, action: str = "") -> Response:
    return render(
        request,
        "audit.html",
        entries=audit.entries(_engine(request), principal, action=action or None),
        action=action,
    )


@router.get("/rostering/keys")
def keys_page(request: Request, principal: Caller) -> Response:
    return render(request, "keys.html", keys=actions.extension_keys(_engine(request), principal))


@router.post("/rostering/keys")
def keys_create(
    request: Request, principal: Caller, name: Annotated[str, Form()] = "extension"
) -> Response:
    try:
        created = actions.create_extension_key(_engine(request), principal, name)
    except (Forbidden, NotFound, Unauthenticated):
        raise
    except RosterError as exc:
        return back("/rostering/keys", error=str(exc))
    return render(
        request,
        "keys.html",
        keys=actions.extension_keys(_engine(request), principal),
        new_key=created["key"],
    )


@router.post("/rostering/keys/{key_id}/revoke")
def keys_revoke(request: Request, principal: Caller, key_id: int) -> Response:
    return attempt(
        lambda: actions.revoke_extension_key(_engine(request), principal, key_id),
        "/rostering/keys",
        f"Key {key_id} revoked.",
    )


@router.get("/rostering/accounts")
def accounts_page(request: Request, principal: Caller) -> Response:
    with _engine(request).connect() as conn:
        users = accounts.list_users(conn, principal)
    return render(request, "accounts.html", users=users)


@router.post("/rostering/accounts/{user_id}/sign-in-link")
def accounts_link(request: Request, principal: Caller, user_id: int) -> Response:
    engine = _engine(request)
    created = actions.sign_in_link(engine, principal, user_id, str(request.base_url))
    with engine.connect() as conn:
        users = accounts.list_users(conn, principal)
    return render(request, "accounts.html", users=users, link=created)


# Browsing ---------------------------------------------------------------------------------------


@router.get("/schools")
def schools_page(request: Request, principal: Caller) -> Response:
    return render(request, "schools.html", schools=roster.school_list(_engine(request), principal))


@router.get("/sections")
def sections_page(
    request: Request, principal: Caller, school_id: int | None = None, q: str = ""
) -> Response:
    return render(
        request,
        "sections.html",
        sections=roster.section_list(_engine(request), principal, school_id=school_id, q=q),
        q=q,
        school_id=school_id,
    )


@router.get("/sections/{section_id}")
def section_page(request: Request, principal: Caller, section_id: int) -> Response:
    engine = _engine(request)
    found = roster.section(engine, principal, section_id)
    running = None
    if principal.role == "teacher":
        mine = classroom.my_classes(engine, principal)
        running = next((s["session"] for s in mine["sections"] if s["id"] == section_id), None)
    return render(request, "section.html", section=found, running=running)


@router.get("/people")
def people_page(
    request: Request, principal: Caller, q: str = "", role: str = "", status: str = ""
) -> Response:
    return render(
        request,
        "people.html",
        people=roster.people_list(
            _engine(request), principal, q=q, role=role or None, status=status or None
        ),
        q=q,
        role=role,
        status=status,
    )


@router.get("/people/{person_id}")
def person_page(request: Request, principal: Caller, person_id: int) -> Response:
    return render(
        request, "person.html", person=roster.person(_engine(request), principal, person_id)
    )


# Teachers ---------------------------------------------------------------------------------------


@router.get("/classes")
def classes_page(request: Request, principal: Caller) -> Response:
    return render(request, "classes.html", mine=classroom.my_classes(_engine(request), principal))


@router.post("/classes/start")
def classes_start(
    request: Request,
    principal: Caller,
    section_id: Annotated[int | None, Form()] = None,
    group_id: Annotated[int | None, Form()] = None,
) -> Response:
    return attempt(
        lambda: classroom.start(
            _engine(request), principal, section_id=section_id, group_id=group_id
        ),
        "/classes",
        lambda s: f"Class started: {s['title']} ({len(s['members'])} students).",
    )


@router.post("/class-sessions/{session_id}/end")
def classes_end(request: Request, principal: Caller, session_id: int) -> Response:
    return attempt(
        lambda: classroom.end(_engine(request), principal, session_id),
        "/classes",
        lambda s: f"Class ended: {s['title']}.",
    )


@router.get("/class-sessions/{session_id}")
def class_session_page(request: Request, principal: Caller, session_id: int) -> Response:
    found = classroom.session(_engine(request), principal, session_id)
    return render(request, "class_session.html", session=found)


@router.post("/groups")
def group_create(
    request: Request,
    principal: Caller,
    name: Annotated[str, Form()] = "",
    members: Annotated[list[int] | None, Form()] = None,
) -> Response:
    return attempt(
        lambda: classroom.create_group(_engine(request), principal, name, members or []),
        "/classes",
        lambda g: f"Group {g['name']!r} created.",
    )


@router.get("/groups/{group_id}")
def group_page(request: Request, principal: Caller, group_id: int) -> Response:
    engine = _engine(request)
    found = classroom.group(engine, principal, group_id)
    mine = classroom.my_classes(engine, principal)
    present = {m["id"] for m in found["members"]}
    pool: dict[int, dict[str, Any]] = {}
    for item in mine["sections"]:
        for student in item["students_list"]:
            if student["id"] not in present:
                pool.setdefault(student["id"], student)
    return render(
        request,
        "group.html",
        group=found,
        pool=sorted(pool.values(), key=lambda s: s["name"]),
        groups_allowed=mine["groups_allowed"],
    )


@router.post("/groups/{group_id}")
def group_update(
    request: Request,
    principal: Caller,
    group_id: int,
    name: Annotated[str | None, Form()] = None,
    add: Annotated[list[int] | None, Form()] = None,
    remove: Annotated[list[int] | None, Form()] = None,
) -> Response:
    return attempt(
        lambda: classroom.update_group(
            _engine(request), principal, group_id, name=name, add=add or [], remove=remove or []
        ),
        f"/groups/{group_id}",
        "Group saved.",
    )


@router.post("/groups/{group_id}/delete")
def group_delete(request: Request, principal: Caller, group_id: int) -> Response:
    return attempt(
        lambda: classroom.delete_group(_engine(request), principal, group_id),
        "/classes",
        "Group deleted.",
    )
