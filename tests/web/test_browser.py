"""The pages in a real browser: Debian's Chromium driven by Playwright, against the app served
by uvicorn on loopback with its scheduler and worker, on SQLite.

Set ROSTERSYNC_SCREENSHOTS=docs/screenshots to save the screenshots docs/web.md shows.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
import uvicorn

from rostersync import service
from rostersync.store.schema import sections
from rostersync.web import accounts
from rostersync.web.app import Settings, create_app

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "a demo password"
ROSTER = """School,Teacher Email,Class Name,Period,Student Email,Student Name,Grade
Lincoln High,rivera@lincoln.example,Algebra I,2,ana.lee@lincoln.example,Ana Lee,9
Lincoln High,rivera@lincoln.example,Algebra I,2,ben.ortiz@lincoln.example,Ben Ortiz,9
Lincoln High,rivera@lincoln.example,Algebra I,2,cara.diaz@lincoln.example,Cara Diaz,9
Lincoln High,chen@lincoln.example,Biology,3,ana.lee@lincoln.example,Ana Lee,9
Lincoln High,chen@lincoln.example,Biology,3,dev.shah@lincoln.example,Dev Shah,9
"""

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Chromium is not installed (apt-get install chromium)"
)


@dataclass
class Served:
    url: str
    store: sa.Engine
    folder: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    store = service.open_store(f"sqlite:///{tmp_path / 'store.sqlite'}")
    service.add_district(store, "Lincoln Unified", "America/Chicago")
    accounts.add_user(
        store, "admin@lincoln.example", "Lincoln Unified", "district-admin", password=PASSWORD
    )
    for teacher in ("rivera", "chen"):
        accounts.add_user(
            store, f"{teacher}@lincoln.example", "Lincoln Unified", "teacher", password=PASSWORD
        )
    service.record_sighting(
        store,
        "Lincoln Unified",
        email="ana.home@mail.example",
        name="Ana Visitor",
        device="chromebook-9",
    )
    app = create_app(
        store, Settings(uploads=tmp_path / "uploads", run_jobs=True, workers=1, interval=1.0)
    )
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield Served(f"http://127.0.0.1:{port}", store, tmp_path)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        store.dispose()


@pytest.fixture
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


def _shot(page: object, name: str) -> None:
    folder = os.environ.get("ROSTERSYNC_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def _sign_in(page: object, url: str, email: str, shot: bool = False) -> None:
    p = page  # type: ignore[assignment]
    p.goto(url + "/")  # type: ignore[attr-defined]
    p.get_by_label("Email").fill(email)  # type: ignore[attr-defined]
    p.get_by_label("Password").fill(PASSWORD)  # type: ignore[attr-defined]
    if shot:
        _shot(p, "sign-in")
    p.get_by_role("button", name="Sign in").click()  # type: ignore[attr-defined]


def test_admin_uploads_syncs_reviews_and_resolves(served: Served, browser: object) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    page = context.new_page()
    _sign_in(page, served.url, "admin@lincoln.example", shot=True)
    expect(page.get_by_role("heading", name="Rostering")).to_be_visible()
    expect(page.get_by_text("No source is connected yet.")).to_be_visible()

    roster = served.folder / "roster.csv"
    roster.write_text(ROSTER)
    page.get_by_role("link", name="Add a source").click()
    page.get_by_label("Name", exact=True).fill("teacher sheet")
    page.get_by_label("File", exact=True).set_input_files(str(roster))
    page.get_by_role("button", name="Add source").click()
    expect(page.get_by_text("Source 'teacher sheet' added.")).to_be_visible()
    expect(page.get_by_text("Connected to CSV / Google Sheet")).to_be_visible()

    page.get_by_role("button", name="Sync Now").click()
    expect(page.get_by_text("queued.", exact=False).first).to_be_visible()
    # The page polls the run and reloads when it ends.
    expect(page.locator(".source .status.s-succeeded")).to_be_visible(timeout=30_000)
    expect(page.locator(".source .health.h-ok")).to_be_visible()
    _shot(page, "rostering")

    page.get_by_role("link", name="Sync log", exact=True).click()
    expect(page.get_by_text("sync-now by admin@lincoln.example")).to_be_visible()
    page.locator("table a").first.click()
    expect(page.get_by_role("heading", name="Changes")).to_be_visible()
    page.get_by_label("Entity").select_option("person")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("table.changes tbody tr")
    expect(rows).to_have_count(6)  # two teachers and four students
    expect(page.locator("table.changes tbody").get_by_text("section", exact=True)).to_have_count(0)
    _shot(page, "run")

    page.get_by_role("link", name="Unmatched", exact=True).click()
    expect(page.get_by_text("Ana Visitor")).to_be_visible()
    _shot(page, "unmatched")
    page.get_by_role("link", name="Match…").click()
    page.get_by_label("Search the roster").fill("Lee")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("button", name="Match to Ana Lee").click()
    expect(page.get_by_text("Matched to the roster student.")).to_be_visible()
    expect(page.get_by_text("Nothing to resolve")).to_be_visible()

    page.get_by_role("link", name="Audit", exact=True).click()
    expect(page.get_by_role("cell", name="pending.match")).to_be_visible()
    expect(page.get_by_role("cell", name="sync-now")).to_be_visible()
    context.close()

    # The teacher's side: start and end a class, make a group, and stay out of others' sections.
    with served.store.connect() as conn:
        biology = conn.execute(
            sa.select(sections.c.id).where(sections.c.name == "Biology")
        ).scalar_one()
    context = browser.new_context(viewport={"width": 820, "height": 1100})  # type: ignore[attr-defined]
    page = context.new_page()
    _sign_in(page, served.url, "rivera@lincoln.example")
    expect(page.get_by_role("heading", name="My classes")).to_be_visible()
    page.get_by_role("button", name="Start Class: Algebra I").click()
    expect(page.get_by_text("Class started: Algebra I (3 students).")).to_be_visible()
    expect(page.get_by_role("button", name="End Class: Algebra I")).to_be_visible()
    _shot(page, "teacher")
    page.get_by_role("button", name="End Class: Algebra I").click()
    expect(page.get_by_text("Class ended: Algebra I.")).to_be_visible()

    page.get_by_label("Name", exact=True).fill("Reading circle")
    page.get_by_label("Ben Ortiz").check()
    page.get_by_label("Cara Diaz").check()
    page.get_by_role("button", name="Create group").click()
    expect(page.get_by_text("Group 'Reading circle' created.")).to_be_visible()
    expect(page.get_by_role("link", name="Reading circle")).to_be_visible()

    page.get_by_role("link", name="Algebra I").click()
    expect(page.get_by_role("heading", name="Students 3")).to_be_visible()
    _shot(page, "section")

    response = page.goto(f"{served.url}/sections/{biology}")
    assert response is not None and response.status == 403
    expect(page.get_by_role("heading", name="You don't have access")).to_be_visible()
    context.close()
