"""The extension API: keys, malformed bodies, idempotent sightings, rate limit, class sessions."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from fastapi.testclient import TestClient

from rostersync.store.schema import people
from rostersync.web.app import Settings, create_app
from tests.web.conftest import Site, extension_key, principal_of

SIGHTINGS = "/api/v1/extension/sightings"


def _post(site: Site, key: str | None, body: object) -> object:
    headers = {"X-Extension-Key": key} if key else {}
    return site.app.post(SIGHTINGS, json=body, headers=headers)


def test_a_sighting_of_a_roster_student_is_matched(site: Site) -> None:
    _, key = extension_key(site)
    response = site.app.post(
        SIGHTINGS,
        json={"email": "S01@district.example", "google_id": "g-1", "device": "cb-1"},
        headers={"X-Extension-Key": key},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"person": site.ids["s01"], "status": "matched", "created": False}


def test_repeated_sightings_of_an_unknown_student_make_one_pending_person(site: Site) -> None:
    _, key = extension_key(site)
    headers = {"X-Extension-Key": key}
    answers = [
        site.app.post(SIGHTINGS, json={"email": "new@district.example"}, headers=headers).json()
        for _ in range(3)
    ]
    assert [a["status"] for a in answers] == ["pending"] * 3
    assert [a["created"] for a in answers] == [True, False, False]
    assert len({a["person"] for a in answers}) == 1
    with site.store.connect() as conn:
        count = conn.execute(
            sa.select(sa.func.count()).where(people.c.email == "new@district.example")
        ).scalar_one()
    assert count == 1


def test_missing_unknown_and_revoked_keys_are_refused(site: Site) -> None:
    key_id, key = extension_key(site)
    body = {"email": "s01@district.example"}
    assert site.app.post(SIGHTINGS, json=body).status_code == 401
    assert (
        site.app.post(SIGHTINGS, json=body, headers={"X-Extension-Key": "rsx_nope"}).status_code
        == 401
    )
    admin = site.client("district-admin")
    assert admin.delete(f"/api/v1/extension-keys/{key_id}").status_code == 200
    refused = site.app.post(SIGHTINGS, json=body, headers={"X-Extension-Key": key})
    assert refused.status_code == 401
    assert "revoked" in refused.json()["detail"]


def test_malformed_bodies_say_what_is_wrong(site: Site) -> None:
    _, key = extension_key(site)
    headers = {"X-Extension-Key": key, "Content-Type": "application/json"}
    not_json = site.app.post(SIGHTINGS, content=b"{nope", headers=headers)
    assert not_json.status_code == 422
    empty = site.app.post(SIGHTINGS, json={}, headers=headers)
    assert empty.status_code == 422 and "email or google_id" in empty.json()["detail"]
    bad_email = site.app.post(SIGHTINGS, json={"email": "not-an-email"}, headers=headers)
    assert bad_email.status_code == 422 and "not an email" in bad_email.json()["detail"]
    wrong_type = site.app.post(SIGHTINGS, json={"email": ["a@b.c"]}, headers=headers)
    assert wrong_type.status_code == 422
    too_long = site.app.post(SIGHTINGS, json={"email": "a" * 400 + "@x.org"}, headers=headers)
    assert too_long.status_code == 422


def test_a_key_over_its_rate_gets_429_with_retry_after(site: Site, tmp_path: Path) -> None:
    app = create_app(site.store, Settings(uploads=tmp_path, extension_rate=1.0, extension_burst=3))
    client = TestClient(app)
    _, key = extension_key(site)
    _, other = extension_key(site)
    headers = {"X-Extension-Key": key}
    codes = [
        client.post(SIGHTINGS, json={"email": "s01@district.example"}, headers=headers).status_code
        for _ in range(4)
    ]
    assert codes == [200, 200, 200, 429]
    limited = client.post(SIGHTINGS, json={"email": "s01@district.example"}, headers=headers)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    # Another key has its own bucket.
    assert (
        client.post(
            SIGHTINGS, json={"email": "s01@district.example"}, headers={"X-Extension-Key": other}
        ).status_code
        == 200
    )


def test_session_answers_the_running_class_of_a_student(site: Site) -> None:
    _, key = extension_key(site)
    headers = {"X-Extension-Key": key}
    url = "/api/v1/extension/session"
    assert site.app.get(url, params={"email": "s01@district.example"}, headers=headers).json() == {
        "session": None
    }
    teacher = site.client("teacher")
    started = teacher.post("/api/v1/class-sessions", json={"section_id": site.ids["math"]}).json()
    found = site.app.get(url, params={"email": "s01@district.example"}, headers=headers).json()
    assert found["session"]["id"] == started["id"]
    assert found["session"]["title"] == "Algebra I"
    assert found["session"]["person"] == site.ids["s01"]
    # A student not in the class, and another district's key, see nothing.
    assert (
        site.app.get(url, params={"email": "s12@district.example"}, headers=headers).json()[
            "session"
        ]
        is None
    )
    _, theirs = extension_key(site, "Shelbyville")
    assert (
        site.app.get(
            url, params={"email": "s01@district.example"}, headers={"X-Extension-Key": theirs}
        ).json()["session"]
        is None
    )
    teacher.post(f"/api/v1/class-sessions/{started['id']}/end")
    assert (
        site.app.get(url, params={"email": "s01@district.example"}, headers=headers).json()[
            "session"
        ]
        is None
    )
    assert site.app.get(url, headers=headers).status_code == 422
    assert principal_of(site, "teacher").person_id is not None
