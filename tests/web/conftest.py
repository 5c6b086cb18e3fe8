"""Fixtures of the web tests: a synced district with accounts of every role, and another
district, on each database; and clients signed in as each role."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from rostersync import service
from rostersync.store import schema
from rostersync.sync import engine as sync_engine
from rostersync.web import accounts, auth, classroom, extension
from rostersync.web.app import Settings, create_app
from tests.fakes import memory_source
from tests.fakes.memory_source import FEEDS
from tests.sync.helpers import World

memory_source.register()

DISTRICT = "Springfield"
OTHER = "Shelbyville"

#: Every role the permission matrix checks.
ROLES = (
    "district-admin",
    "school-admin-elsewhere",
    "teacher",
    "co-teacher",
    "other-district",
    "anonymous",
)
EMAILS = {
    "district-admin": "admin@springfield.example",
    "school-admin-elsewhere": "vp.jefferson@springfield.example",
    "teacher": "rivera@district.example",
    "co-teacher": "park@district.example",
    "other-district": "admin@shelbyville.example",
}
ACCOUNT_ROLES = {
    "district-admin": "district-admin",
    "school-admin-elsewhere": "school-admin",
    "teacher": "teacher",
    "co-teacher": "teacher",
    "other-district": "district-admin",
}
PASSWORD = "correct horse battery"


@dataclass
class Site:
    """The district the tests act on, what it holds, and the accounts of each role."""

    store: sa.Engine
    app: TestClient
    world: World
    users: dict[str, int] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)

    def client(self, role: str) -> TestClient:
        """A client signed in as ``role`` (a fresh session), or anonymous."""
        client = TestClient(self.app.app, follow_redirects=False)
        if role != "anonymous":
            opened = auth.open_session(self.store, self.users[role])
            client.cookies.set(auth.SESSION_COOKIE, opened.cookie)
            client.headers["X-CSRF-Token"] = opened.csrf_token
        return client

    def pending(self, email: str) -> int:
        return int(
            service.record_sighting(self.store, DISTRICT, email=email, name="Kid X")["person"]
        )


def build_site(store: sa.Engine, tmp_path: Path) -> Site:
    world = World(store, DISTRICT)
    world.setup()
    roster = memory_source.district(12)
    roster.teacher("park", "lincoln").enroll("math", "park", "co-teacher")
    world.synced(roster)

    service.add_district(store, OTHER)
    service.add_source(store, "other-sis", OTHER, "memory", {"name": "other-sis"})
    FEEDS["other-sis"] = memory_source.district(6).feed()
    assert sync_engine.sync(store, "other-sis").status == "succeeded"

    app = create_app(store, Settings(uploads=tmp_path / "uploads"))
    site = Site(store, TestClient(app, follow_redirects=False), world)
    for role, district, schools in (
        ("district-admin", DISTRICT, ()),
        ("school-admin-elsewhere", DISTRICT, ("Jefferson Middle",)),
        ("teacher", DISTRICT, ()),
        ("co-teacher", DISTRICT, ()),
        ("other-district", OTHER, ()),
    ):
        site.users[role] = accounts.add_user(
            store,
            EMAILS[role],
            district,
            ACCOUNT_ROLES[role],
            schools_named=schools,
            password=PASSWORD,
        )
    site.ids["source"] = world.source_id("sis")
    site.ids["math"] = world.canonical("section", "math")
    site.ids["art"] = world.canonical("section", "art")
    site.ids["s01"] = world.canonical("person", "s01")
    site.ids["s02"] = world.canonical("person", "s02")
    return site


@pytest.fixture
def site(store: sa.Engine, tmp_path: Path) -> Iterator[Site]:
    yield build_site(store, tmp_path)


def principal_of(site: Site, role: str) -> accounts.Principal:
    with site.store.connect() as conn:
        found = accounts.principal(conn, site.users[role])
    assert found is not None
    return found


def extension_key(site: Site, district: str = DISTRICT) -> tuple[int, str]:
    with site.store.begin() as conn:
        return extension.create_key(conn, service.district_id(conn, district), "test", "tests")


__all__ = ["ROLES", "Site", "classroom", "extension_key", "principal_of", "schema"]
