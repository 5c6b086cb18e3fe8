"""Admin and teacher actions through the API: Sync Now, held runs, the unmatched tray, toggles,
class sessions and groups, the readiness report and enrollment history."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from rostersync.jobs import embedded
from rostersync.store.schema import class_session_members, enrollments, people, runs, sections
from tests.fakes import memory_source
from tests.fakes.memory_source import district
from tests.web.conftest import Site


def _audit_actions(site: Site) -> list[str]:
    return [e["action"] for e in site.client("district-admin").get("/api/v1/audit").json()]


def test_sync_now_queues_once_records_who_and_runs(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROSTERSYNC_QUEUE", "embedded")
    admin = site.client("district-admin")
    first = admin.post(f"/api/v1/sources/{site.ids['source']}/sync")
    again = admin.post(f"/api/v1/sources/{site.ids['source']}/sync")
    assert first.status_code == 202 and first.json()["queued"] is True
    assert again.json() == {**first.json(), "queued": False}
    run = admin.get(f"/api/v1/runs/{first.json()['run']}").json()
    assert (run["status"], run["trigger"], run["requested_by"]) == (
        "queued",
        "sync-now",
        "admin@springfield.example",
    )
    assert embedded.run_one(site.store) == run["id"]
    assert admin.get(f"/api/v1/runs/{run['id']}").json()["status"] == "succeeded"
    assert _audit_actions(site).count("sync-now") == 2


def test_held_runs_are_approved_or_discarded(site: Site) -> None:
    emptied = memory_source.district(12).withdraw(*[f"s{n:02d}" for n in range(1, 9)])
    emptied.teacher("park", "lincoln").enroll("math", "park", "co-teacher")
    held = [site.world.sync(emptied).run_id for _ in range(2)]
    admin = site.client("district-admin")
    assert [r["id"] for r in admin.get("/api/v1/runs", params={"status": "held"}).json()] == held[
        ::-1
    ]
    plan = admin.get(
        f"/api/v1/runs/{held[0]}/changes", params={"entity": "enrollment", "action": "end"}
    )
    assert plan.json()["total"] == 12
    assert admin.post(f"/api/v1/runs/{held[1]}/discard").json()["status"] == "discarded"
    assert admin.post(f"/api/v1/runs/{held[0]}/approve").json()["status"] == "succeeded"
    assert admin.post(f"/api/v1/runs/{held[0]}/approve").status_code == 409
    with site.store.connect() as conn:
        decided = dict(
            conn.execute(sa.select(runs.c.id, runs.c.decided_by).where(runs.c.id.in_(held))).all()
        )
    assert set(decided.values()) == {"admin@springfield.example"}
    assert {"run.approve", "run.discard"} <= set(_audit_actions(site))


def test_unmatched_students_are_matched_kept_or_dismissed(site: Site) -> None:
    admin = site.client("district-admin")
    lost = site.pending("lost@home.example")
    new = site.pending("new@district.example")
    junk = [site.pending(f"junk{n}@x.example") for n in range(2)]
    assert {p["id"] for p in admin.get("/api/v1/pending").json()} == {lost, new, *junk}

    matched = admin.post(f"/api/v1/pending/{lost}/match", json={"student": site.ids["s01"]})
    assert matched.status_code == 200, matched.text
    again = admin.post(
        "/api/v1/extension/sightings",
        json={"email": "lost@home.example"},
        headers={"X-Extension-Key": admin.post("/api/v1/extension-keys", json={}).json()["key"]},
    )
    assert again.json() == {"person": site.ids["s01"], "status": "matched", "created": False}

    kept = admin.post(
        "/api/v1/pending/keep",
        json={"people": [new], "grade": "10", "sections": [site.ids["math"]]},
    )
    assert kept.status_code == 200, kept.text
    dismissed = admin.post("/api/v1/pending/dismiss", json={"people": junk})
    assert dismissed.json() == {"dismissed": sorted(junk)}
    assert admin.get("/api/v1/pending").json() == []
    with site.store.connect() as conn:
        row = conn.execute(sa.select(people).where(people.c.id == new)).one()
        enrolled = (
            conn.execute(sa.select(enrollments.c.section_id).where(enrollments.c.person_id == new))
            .scalars()
            .all()
        )
    assert (row.status, row.grade, enrolled) == ("active", "10", [site.ids["math"]])
    history = admin.get(f"/api/v1/people/{new}").json()["enrollments"]
    assert [(e["section"], e["end_at"]) for e in history] == [("Algebra I", None)]
    assert (
        admin.post(f"/api/v1/pending/{lost}/match", json={"student": site.ids["s02"]}).status_code
        == 422
    )
    assert {"pending.match", "pending.keep", "pending.dismiss", "extension-key.create"} <= set(
        _audit_actions(site)
    )


def test_toggles_and_groups(site: Site) -> None:
    admin = site.client("district-admin")
    teacher = site.client("teacher")
    created = teacher.post("/api/v1/groups", json={"name": "Readers", "members": [site.ids["s01"]]})
    assert created.status_code == 201
    group = created.json()["id"]
    changed = teacher.patch(
        f"/api/v1/groups/{group}",
        json={"name": "Fast readers", "add": [site.ids["s02"]], "remove": [site.ids["s01"]]},
    ).json()
    assert changed["name"] == "Fast readers" and [m["id"] for m in changed["members"]] == [
        site.ids["s02"]
    ]
    art_student = next(p["id"] for p in admin.get("/api/v1/people", params={"q": "s12"}).json())
    outside = teacher.patch(f"/api/v1/groups/{group}", json={"add": [art_student]})
    assert outside.status_code == 403
    assert (
        admin.patch("/api/v1/district", json={"allow_groups": False}).json()["allow_groups"]
        is False
    )
    assert teacher.post("/api/v1/groups", json={"name": "No"}).status_code == 403
    assert teacher.get("/api/v1/my/classes").json()["groups_allowed"] is False
    assert admin.patch("/api/v1/district", json={"allow_groups": True}).status_code == 200
    assert teacher.delete(f"/api/v1/groups/{group}").json()["deleted"] is True
    assert teacher.get("/api/v1/groups").json() == []
    assert "district.settings" in _audit_actions(site)


def test_a_class_session_keeps_the_roster_it_started_with(site: Site) -> None:
    teacher = site.client("teacher")
    co_teacher = site.client("co-teacher")
    started = teacher.post("/api/v1/class-sessions", json={"section_id": site.ids["math"]}).json()
    assert started["started"] is True and len(started["members"]) == 8
    # Starting again returns the running session; the co-teacher may end it.
    assert (
        co_teacher.post("/api/v1/class-sessions", json={"section_id": site.ids["math"]}).json()[
            "id"
        ]
        == started["id"]
    )
    site.world.synced(
        memory_source.district(12)
        .teacher("park", "lincoln")
        .enroll("math", "park", "co-teacher")
        .unenroll("math", "s01")
    )
    with site.store.connect() as conn:
        members = conn.execute(
            sa.select(sa.func.count()).where(
                class_session_members.c.class_session_id == started["id"]
            )
        ).scalar_one()
    assert members == 8
    ended = co_teacher.post(f"/api/v1/class-sessions/{started['id']}/end").json()
    assert ended["ended_at"] is not None
    assert (
        teacher.post("/api/v1/class-sessions", json={"section_id": site.ids["art"]}).status_code
        == 403
    )
    assert teacher.post("/api/v1/class-sessions", json={}).status_code == 422


def test_readiness_report(site: Site) -> None:
    roster = (
        memory_source.district(12).teacher("park", "lincoln").enroll("math", "park", "co-teacher")
    )
    roster.teacher("idle", "lincoln")
    roster.person("s03")["email"] = None
    roster.person("s04")["email"] = "s05@district.example"
    roster.section("empty", "lincoln", "Study Hall")
    site.world.synced(roster)
    report = site.client("district-admin").get("/api/v1/readiness").json()
    assert [p["sis_id"] for p in report["students_without_email"]] == ["S0003"]
    assert {p["email"] for p in report["duplicate_emails"]} == {"s05@district.example"}
    assert [p["email"] for p in report["teachers_without_sections"]] == ["idle@district.example"]
    assert [s["name"] for s in report["sections_without_teachers"]] == ["Study Hall"]
    elsewhere = site.client("school-admin-elsewhere").get("/api/v1/readiness").json()
    assert elsewhere["sections_without_teachers"] == [] and elsewhere["duplicate_emails"] == []


def test_a_source_can_be_limited_to_chosen_schools_from_its_page(site: Site) -> None:
    admin = site.client("district-admin")
    page = admin.get(f"/rostering/sources/{site.ids['source']}")
    assert page.status_code == 200
    assert "Lincoln High" in page.text and 'name="schools"' in page.text

    saved = admin.post(
        f"/rostering/sources/{site.ids['source']}",
        data={
            "schools": "Jefferson Middle",
            "sections": "",
            "csrf_token": admin.headers["X-CSRF-Token"],
        },
    )
    assert saved.status_code == 303
    config = admin.get(f"/api/v1/sources/{site.ids['source']}").json()["config"]
    assert config["schools"] == "Jefferson Middle"

    def active_sections() -> list[str]:
        query = (
            sa.select(sections.c.name)
            .where(sections.c.status == "active", sections.c.source_id == site.ids["source"])
            .order_by(sections.c.name)
        )
        with site.store.connect() as conn:
            return [str(name) for name in conn.execute(query).scalars()]

    before = active_sections()
    site.world.settings(safety_share=1.0)
    result = site.world.sync(district())
    assert result.status == "succeeded", result.held_reasons
    active = active_sections()
    assert len(before) == 3 and active == ["Art 7"]
