"""Sign-in, sessions and their cookies, CSRF, throttling, API tokens and one-time links."""

from __future__ import annotations

import re

import sqlalchemy as sa
from click.testing import CliRunner
from fastapi.testclient import TestClient

from rostersync.cli import main
from rostersync.store.schema import api_tokens, extension_keys, users
from tests.web.conftest import EMAILS, PASSWORD, Site


def _form_token(client: TestClient) -> str:
    page = client.get("/sign-in")
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found
    return found.group(1)


def _sign_in(client: TestClient, email: str, password: str) -> object:
    token = _form_token(client)
    return client.post(
        "/sign-in", data={"email": email, "password": password, "csrf_token": token, "next": "/"}
    )


def test_sign_in_sets_a_hardened_cookie_and_rotates_it(site: Site) -> None:
    client = TestClient(site.app.app, follow_redirects=False)
    first = _sign_in(client, EMAILS["district-admin"], PASSWORD)
    assert first.status_code == 303 and first.headers["location"] == "/"
    cookie = first.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    old = client.cookies.get("rostersync_session")
    assert client.get("/rostering").status_code == 200
    _sign_in(client, EMAILS["district-admin"], PASSWORD)
    assert client.cookies.get("rostersync_session") != old
    stale = TestClient(site.app.app, follow_redirects=False)
    stale.cookies.set("rostersync_session", old or "")
    assert stale.get("/rostering").status_code == 303  # the old session is gone


def test_cookie_is_secure_over_https(site: Site) -> None:
    client = TestClient(site.app.app, base_url="https://testserver", follow_redirects=False)
    response = _sign_in(client, EMAILS["teacher"], PASSWORD)
    assert "Secure" in response.headers["set-cookie"]


def test_wrong_password_and_throttle(site: Site) -> None:
    client = TestClient(site.app.app, follow_redirects=False)
    for _ in range(5):
        assert _sign_in(client, EMAILS["teacher"], "wrong password!").status_code == 401
    blocked = _sign_in(client, EMAILS["teacher"], PASSWORD)
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0
    # Another account from the same address is not blocked yet.
    assert _sign_in(client, EMAILS["district-admin"], PASSWORD).status_code == 303


def test_unsafe_requests_need_the_csrf_token(site: Site) -> None:
    client = site.client("district-admin")
    token = client.headers.pop("X-CSRF-Token")
    assert client.patch("/api/v1/district", json={}).status_code == 403
    assert client.post("/rostering/settings", data={"authoritative": "on"}).status_code == 403
    ok = client.post(
        "/rostering/settings",
        data={"authoritative": "on", "allow_groups": "on", "csrf_token": token},
    )
    assert ok.status_code == 303
    assert (
        client.patch("/api/v1/district", json={}, headers={"X-CSRF-Token": token}).status_code
        == 200
    )
    # The sign-in form itself carries a double-submit token.
    anonymous = TestClient(site.app.app, follow_redirects=False)
    forged = anonymous.post("/sign-in", data={"email": EMAILS["teacher"], "password": PASSWORD})
    assert forged.status_code == 403


def test_sign_out_ends_the_session(site: Site) -> None:
    client = site.client("teacher")
    assert client.get("/classes").status_code == 200
    assert client.post("/sign-out").status_code == 303
    assert client.get("/classes").headers["location"].startswith("/sign-in")


def test_api_tokens_act_as_their_owner_until_revoked(site: Site) -> None:
    result = CliRunner().invoke(
        main,
        [
            "--database-url",
            str(site.store.url.render_as_string(hide_password=False)),
            "token",
            "create",
            EMAILS["teacher"],
        ],
    )
    assert result.exit_code == 0, result.output
    token_id, secret = re.search(r"Token (\d+): (\S+)", result.output).groups()  # type: ignore[union-attr]
    with site.store.connect() as conn:
        stored = conn.execute(sa.select(api_tokens.c.token_hash)).scalars().all()
    assert secret not in stored and len(stored) == 1
    bearer = TestClient(site.app.app, headers={"Authorization": f"Bearer {secret}"})
    assert bearer.get("/api/v1/me").json()["email"] == EMAILS["teacher"]
    assert bearer.get("/api/v1/sources").status_code == 403  # a teacher's permissions
    # No CSRF token is needed without a cookie.
    assert bearer.post("/api/v1/groups", json={"name": "Readers"}).status_code == 201
    revoked = CliRunner().invoke(
        main,
        [
            "--database-url",
            str(site.store.url.render_as_string(hide_password=False)),
            "token",
            "revoke",
            token_id,
        ],
    )
    assert revoked.exit_code == 0, revoked.output
    assert bearer.get("/api/v1/me").status_code == 401


def test_a_sign_in_link_works_once(site: Site) -> None:
    admin = site.client("district-admin")
    created = admin.post(f"/api/v1/users/{site.users['teacher']}/sign-in-link").json()
    path = created["url"].replace("http://testserver", "")
    browser = TestClient(site.app.app, follow_redirects=False)
    page = browser.get(path)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    used = browser.post(path, data={"csrf_token": token})
    assert used.status_code == 303
    assert browser.get("/classes").status_code == 200
    again = TestClient(site.app.app, follow_redirects=False)
    page = again.get(path)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    assert again.post(path, data={"csrf_token": token}).status_code == 401


def test_cli_user_add_and_extension_keys(site: Site) -> None:
    url = site.store.url.render_as_string(hide_password=False)
    runner = CliRunner()
    added = runner.invoke(
        main,
        [
            "--database-url",
            url,
            "user",
            "add",
            "VP@Springfield.example",
            "--district",
            "Springfield",
            "--role",
            "school-admin",
            "--school",
            "Lincoln High",
            "--password-stdin",
        ],
        input="a long enough password\n",
    )
    assert added.exit_code == 0, added.output
    with site.store.connect() as conn:
        row = conn.execute(sa.select(users).where(users.c.email == "vp@springfield.example")).one()
    assert row.password_hash.startswith("$argon2id$")
    short = runner.invoke(
        main,
        [
            "--database-url",
            url,
            "user",
            "add",
            "x@springfield.example",
            "--district",
            "Springfield",
            "--role",
            "teacher",
            "--password-stdin",
        ],
        input="short\n",
    )
    assert short.exit_code == 1 and "at least" in short.output
    created = runner.invoke(main, ["--database-url", url, "extension-key", "create", "Springfield"])
    assert created.exit_code == 0, created.output
    key_id, key = re.search(r"key (\d+): (\S+)", created.output).groups()  # type: ignore[union-attr]
    body = {"email": "s01@district.example"}
    assert (
        site.app.post(
            "/api/v1/extension/sightings", json=body, headers={"X-Extension-Key": key}
        ).status_code
        == 200
    )
    assert (
        runner.invoke(main, ["--database-url", url, "extension-key", "revoke", key_id]).exit_code
        == 0
    )
    assert (
        site.app.post(
            "/api/v1/extension/sightings", json=body, headers={"X-Extension-Key": key}
        ).status_code
        == 401
    )
    with site.store.connect() as conn:
        assert key not in conn.execute(sa.select(extension_keys.c.key_hash)).scalars().all()
