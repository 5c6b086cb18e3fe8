"""The permission matrix: every route of the app × every role → allowed or refused.

Routes are enumerated from the app, so a new route without an entry here fails the test. A
request is *refused* when it answers 401, 403 or 404, or redirects to sign-in; anything else
(success, a redirect elsewhere, a validation error or a conflict) means the policy let it pass.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.routing import BaseRoute, Mount

from rostersync.web import auth, classroom
from tests.web.conftest import ROLES, Site, extension_key, principal_of

DA, SA, T, CT, OD = (
    "district-admin",
    "school-admin-elsewhere",
    "teacher",
    "co-teacher",
    "other-district",
)
SIGNED_IN = {DA, SA, T, CT, OD}
ADMINS = {DA, SA, OD}
DISTRICT_ADMINS = {DA, OD}
TEACHERS = {T, CT}
NOBODY: set[str] = set()
PUBLIC = "public"

Value = Callable[[Site, str], Any]


@dataclass
class Entry:
    allowed: set[str] | str
    #: Path parameters: a name of ``site.ids`` for each placeholder.
    params: dict[str, str] = field(default_factory=dict)
    json: Value | None = None
    form: Value | None = None
    files: Value | None = None


def _json(body: dict[str, Any]) -> Value:
    return lambda site, role: body


def _named(prefix: str) -> Value:
    return lambda site, role: {
        "name": f"{prefix}-{role}",
        "kind": "memory",
        "config": {"name": "x"},
    }


MATRIX: dict[tuple[str, str], Entry] = {
    # Public: documentation, static files, sign-in (tested in test_auth.py).
    ("GET", "/openapi.json"): Entry(PUBLIC),
    ("GET", "/docs"): Entry(PUBLIC),
    ("GET", "/docs/oauth2-redirect"): Entry(PUBLIC),
    ("GET", "/redoc"): Entry(PUBLIC),
    ("GET", "/static"): Entry(PUBLIC),
    ("GET", "/sign-in"): Entry(PUBLIC),
    ("POST", "/sign-in"): Entry(PUBLIC),
    ("GET", "/sign-in/link/{token}"): Entry(PUBLIC),
    ("POST", "/sign-in/link/{token}"): Entry(PUBLIC),
    # API: accounts.
    ("GET", "/api/v1/me"): Entry(SIGNED_IN),
    ("GET", "/api/v1/users"): Entry(ADMINS),
    ("POST", "/api/v1/users"): Entry(
        DISTRICT_ADMINS, json=lambda site, role: {"email": f"new-{role}@x.example"}
    ),
    ("POST", "/api/v1/users/{user_id}/sign-in-link"): Entry({DA}, {"user_id": "teacher_user"}),
    ("GET", "/api/v1/tokens"): Entry(SIGNED_IN),
    ("POST", "/api/v1/tokens"): Entry(SIGNED_IN, json=_json({"name": "t"})),
    ("DELETE", "/api/v1/tokens/{token_id}"): Entry({DA}, {"token_id": "admin_token"}),
    # API: rostering.
    ("GET", "/api/v1/district"): Entry(ADMINS),
    ("PATCH", "/api/v1/district"): Entry(DISTRICT_ADMINS, json=_json({})),
    ("GET", "/api/v1/sources"): Entry(ADMINS),
    ("POST", "/api/v1/sources"): Entry(DISTRICT_ADMINS, json=_named("api")),
    ("POST", "/api/v1/sources/upload"): Entry(
        DISTRICT_ADMINS,
        form=lambda site, role: {"name": f"upload-{role}"},
        files=lambda site, role: {"file": ("r.csv", io.BytesIO(b"Teacher,Class,Student\n"))},
    ),
    ("GET", "/api/v1/sources/{source_id}"): Entry({DA, SA}, {"source_id": "source"}),
    ("PATCH", "/api/v1/sources/{source_id}"): Entry({DA}, {"source_id": "source"}, json=_json({})),
    ("POST", "/api/v1/sources/{source_id}/sync"): Entry({DA}, {"source_id": "source"}),
    ("GET", "/api/v1/runs"): Entry(ADMINS),
    ("GET", "/api/v1/runs/{run_id}"): Entry({DA, SA}, {"run_id": "held_run"}),
    ("GET", "/api/v1/runs/{run_id}/changes"): Entry({DA, SA}, {"run_id": "held_run"}),
    ("POST", "/api/v1/runs/{run_id}/approve"): Entry({DA}, {"run_id": "held_run"}),
    ("POST", "/api/v1/runs/{run_id}/discard"): Entry({DA}, {"run_id": "held_run"}),
    ("GET", "/api/v1/pending"): Entry(ADMINS),
    ("POST", "/api/v1/pending/{person_id}/match"): Entry(
        {DA}, {"person_id": "pending_1"}, json=lambda site, role: {"student": site.ids["s01"]}
    ),
    ("POST", "/api/v1/pending/keep"): Entry(
        {DA},
        json=lambda site, role: {"people": [site.ids["pending_2"]], "sections": [site.ids["math"]]},
    ),
    ("POST", "/api/v1/pending/dismiss"): Entry(
        {DA, SA}, json=lambda site, role: {"people": [site.ids["pending_3"]]}
    ),
    ("GET", "/api/v1/schools"): Entry(ADMINS),
    ("GET", "/api/v1/sections"): Entry(SIGNED_IN),
    ("GET", "/api/v1/sections/{section_id}"): Entry({DA, T, CT}, {"section_id": "math"}),
    ("GET", "/api/v1/people"): Entry(ADMINS),
    ("GET", "/api/v1/people/{person_id}"): Entry({DA}, {"person_id": "s01"}),
    ("GET", "/api/v1/readiness"): Entry(ADMINS),
    ("GET", "/api/v1/audit"): Entry(ADMINS),
    ("GET", "/api/v1/extension-keys"): Entry(DISTRICT_ADMINS),
    ("POST", "/api/v1/extension-keys"): Entry(DISTRICT_ADMINS, json=_json({"name": "k"})),
    ("DELETE", "/api/v1/extension-keys/{key_id}"): Entry({DA}, {"key_id": "key_1"}),
    # API: teachers.
    ("GET", "/api/v1/my/classes"): Entry(TEACHERS),
    ("POST", "/api/v1/class-sessions"): Entry(
        TEACHERS, json=lambda site, role: {"section_id": site.ids["math"]}
    ),
    ("GET", "/api/v1/class-sessions/{session_id}"): Entry({DA, T, CT}, {"session_id": "session"}),
    ("POST", "/api/v1/class-sessions/{session_id}/end"): Entry(TEACHERS, {"session_id": "session"}),
    ("GET", "/api/v1/groups"): Entry(TEACHERS),
    ("POST", "/api/v1/groups"): Entry(TEACHERS, json=_json({"name": "g"})),
    ("GET", "/api/v1/groups/{group_id}"): Entry({T}, {"group_id": "group"}),
    ("PATCH", "/api/v1/groups/{group_id}"): Entry({T}, {"group_id": "group"}, json=_json({})),
    ("DELETE", "/api/v1/groups/{group_id}"): Entry({T}, {"group_id": "group_api_delete"}),
    # API: the extension authenticates with its key, never with an account.
    ("POST", "/api/v1/extension/sightings"): Entry(
        NOBODY, json=_json({"email": "kid@district.example"})
    ),
    ("GET", "/api/v1/extension/session"): Entry(NOBODY),
    # API: Pub/Sub pushes authenticate with the source's push token, never with an account.
    ("POST", "/api/v1/google/notifications/{source_id}"): Entry(
        NOBODY, {"source_id": "source"}, json=_json({"message": {}})
    ),
    # Pages.
    ("GET", "/"): Entry(SIGNED_IN),
    ("POST", "/sign-out"): Entry(SIGNED_IN),
    ("GET", "/rostering"): Entry(ADMINS),
    ("POST", "/rostering/settings"): Entry(
        DISTRICT_ADMINS, form=_json({"authoritative": "on", "allow_groups": "on"})
    ),
    ("POST", "/rostering/sources/{source_id}/sync"): Entry({DA}, {"source_id": "source"}),
    ("GET", "/rostering/sources/new"): Entry(DISTRICT_ADMINS),
    ("POST", "/rostering/sources"): Entry(
        DISTRICT_ADMINS,
        form=lambda site, role: {
            "name": f"page-{role}",
            "how": "url",
            "url": "https://sheets.example/roster.csv",
        },
    ),
    ("GET", "/rostering/sources/{source_id}"): Entry({DA, SA}, {"source_id": "source"}),
    ("POST", "/rostering/sources/{source_id}"): Entry(
        {DA}, {"source_id": "source"}, form=_json({})
    ),
    ("GET", "/rostering/runs"): Entry(ADMINS),
    ("GET", "/rostering/runs/{run_id}"): Entry({DA, SA}, {"run_id": "held_run"}),
    ("POST", "/rostering/runs/{run_id}/approve"): Entry({DA}, {"run_id": "held_run"}),
    ("POST", "/rostering/runs/{run_id}/discard"): Entry({DA}, {"run_id": "held_run"}),
    ("GET", "/rostering/unmatched"): Entry(ADMINS),
    ("POST", "/rostering/unmatched/match"): Entry(
        {DA},
        form=lambda site, role: {"person": site.ids["pending_4"], "student": site.ids["s02"]},
    ),
    ("POST", "/rostering/unmatched/keep"): Entry(
        {DA},
        form=lambda site, role: {"people": site.ids["pending_5"], "sections": site.ids["math"]},
    ),
    ("POST", "/rostering/unmatched/dismiss"): Entry(
        {DA, SA}, form=lambda site, role: {"people": site.ids["pending_6"]}
    ),
    ("GET", "/rostering/readiness"): Entry(ADMINS),
    ("GET", "/rostering/audit"): Entry(ADMINS),
    ("GET", "/rostering/keys"): Entry(DISTRICT_ADMINS),
    ("POST", "/rostering/keys"): Entry(DISTRICT_ADMINS, form=_json({"name": "k"})),
    ("POST", "/rostering/keys/{key_id}/revoke"): Entry({DA}, {"key_id": "key_2"}),
    ("GET", "/rostering/accounts"): Entry(ADMINS),
    ("POST", "/rostering/accounts/{user_id}/sign-in-link"): Entry(
        {DA}, {"user_id": "teacher_user"}
    ),
    ("GET", "/schools"): Entry(ADMINS),
    ("GET", "/sections"): Entry(SIGNED_IN),
    ("GET", "/sections/{section_id}"): Entry({DA, T, CT}, {"section_id": "math"}),
    ("GET", "/people"): Entry(ADMINS),
    ("GET", "/people/{person_id}"): Entry({DA}, {"person_id": "s01"}),
    ("GET", "/classes"): Entry(TEACHERS),
    ("POST", "/classes/start"): Entry(
        TEACHERS, form=lambda site, role: {"section_id": site.ids["math"]}
    ),
    ("POST", "/class-sessions/{session_id}/end"): Entry(TEACHERS, {"session_id": "session"}),
    ("GET", "/class-sessions/{session_id}"): Entry({DA, T, CT}, {"session_id": "session"}),
    ("POST", "/groups"): Entry(TEACHERS, form=_json({"name": "g"})),
    ("GET", "/groups/{group_id}"): Entry({T}, {"group_id": "group"}),
    ("POST", "/groups/{group_id}"): Entry({T}, {"group_id": "group"}, form=_json({"name": "g2"})),
    ("POST", "/groups/{group_id}/delete"): Entry({T}, {"group_id": "group_page_delete"}),
}


def app_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) the app answers, with included routers flattened."""
    found: list[tuple[str, str]] = []

    def walk(routes: list[BaseRoute]) -> None:
        for route in routes:
            inner = getattr(route, "original_router", None)
            if inner is not None:
                walk(inner.routes)
            elif isinstance(route, Mount):
                found.append(("GET", route.path))
            else:
                for method in sorted(getattr(route, "methods", None) or ()):
                    if method != "HEAD":
                        found.append((method, getattr(route, "path", "")))

    walk(app.routes)
    return found


def _prepare(site: Site) -> None:
    """The records the matrix's paths name."""
    ids = site.ids
    ids["teacher_user"] = site.users[T]
    ids["admin_token"], _ = auth.create_token(site.store, site.users[DA], "matrix")
    for n in range(1, 7):
        ids[f"pending_{n}"] = site.pending(f"pending{n}@district.example")
    ids["key_1"], _ = extension_key(site)
    ids["key_2"], _ = extension_key(site)
    teacher = principal_of(site, T)
    ids["group"] = classroom.create_group(site.store, teacher, "Readers", [ids["s01"]])["id"]
    for name in ("group_api_delete", "group_page_delete"):
        ids[name] = classroom.create_group(site.store, teacher, name)["id"]
    ids["session"] = classroom.start(site.store, teacher, section_id=ids["math"])["id"]
    # A held run: a feed that drops every student.
    roster = site.world
    from tests.fakes import memory_source

    emptied = memory_source.district(12)
    emptied.teacher("park", "lincoln").enroll("math", "park", "co-teacher")
    emptied.withdraw(*[f"s{n:02d}" for n in range(1, 13)])
    held = roster.sync(emptied)
    assert held.status == "held", held
    ids["held_run"] = held.run_id


def _refused(status: int, location: str) -> bool:
    return status in (401, 403, 404) or (
        status in (302, 303) and location.startswith("/sign-in?next=")
    )


def test_every_route_has_an_entry(site: Site) -> None:
    routes = set(app_routes(site.app.app))  # type: ignore[arg-type]
    missing = routes - set(MATRIX)
    assert not missing, f"routes without an entry in the permission matrix: {sorted(missing)}"
    stale = set(MATRIX) - routes
    assert not stale, f"entries for routes that no longer exist: {sorted(stale)}"


def test_permission_matrix(site: Site) -> None:
    _prepare(site)
    # The district admin goes last, so what it changes (an approved run, a matched student)
    # cannot make another role's request look allowed.
    order = [r for r in ROLES if r != DA] + [DA]
    clients = {role: site.client(role) for role in order}
    failures = []
    for (method, path), entry in MATRIX.items():
        if entry.allowed == PUBLIC:
            continue
        assert isinstance(entry.allowed, set)
        url = path
        for name, key in entry.params.items():
            url = url.replace("{" + name + "}", str(site.ids[key]))
        for role in order:
            kwargs: dict[str, Any] = {}
            if entry.json is not None:
                kwargs["json"] = entry.json(site, role)
            if entry.form is not None:
                kwargs["data"] = entry.form(site, role)
            if entry.files is not None:
                kwargs["files"] = entry.files(site, role)
            response = clients[role].request(method, url, **kwargs)
            if path == "/sign-out":
                clients[role] = site.client(role)
            refused = _refused(response.status_code, response.headers.get("location", ""))
            expected = role in entry.allowed
            if refused == expected or response.status_code >= 500:
                failures.append(
                    f"{method} {path} as {role}: {response.status_code} "
                    f"(expected {'allowed' if expected else 'refused'}) {response.text[:160]!r}"
                )
    assert not failures, "\n".join(failures)


def test_lists_never_show_another_district(site: Site) -> None:
    other = site.client(OD)
    mine = site.client(DA)
    their_people = {p["id"] for p in other.get("/api/v1/people").json()}
    our_people = {p["id"] for p in mine.get("/api/v1/people").json()}
    assert their_people and our_people and not their_people & our_people
    assert {s["name"] for s in other.get("/api/v1/sources").json()} == {"other-sis"}
    assert all(r["source"] == "other-sis" for r in other.get("/api/v1/runs").json())


@pytest.mark.parametrize("role", [T, CT])
def test_teachers_see_only_the_sections_they_teach(site: Site, role: str) -> None:
    listed = site.client(role).get("/api/v1/sections").json()
    assert [s["id"] for s in listed] == [site.ids["math"]]
    assert site.client(role).get(f"/api/v1/sections/{site.ids['art']}").status_code == 403
