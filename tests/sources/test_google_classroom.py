"""The google connector against the fake Google: mapping, paging, filters, quotas and errors,
directly and through the engine on both databases."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from cryptography.fernet import Fernet

from rostersync import service
from rostersync.cli import main
from rostersync.errors import ConfigError, SourceError
from rostersync.sources import base, google_api
from rostersync.sources.base import FetchContext
from rostersync.store.schema import enrollments, people, sections, sources
from rostersync.sync import engine as sync_engine
from tests.fakes.google import FakeGoogle, error_body, serve

DISTRICT = "Lincoln Unified"


@pytest.fixture(autouse=True)
def secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROSTERSYNC_SECRET_KEY", Fernet.generate_key().decode())


@pytest.fixture(autouse=True)
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every wait of the Google client (backoff and pacing), taken without waiting."""
    taken: list[float] = []
    monkeypatch.setattr(google_api, "pause", taken.append)
    return taken


@pytest.fixture
def google() -> Iterator[FakeGoogle]:
    yield from serve()


@dataclass
class Domain:
    fake: FakeGoogle
    key: dict[str, Any]
    ids: dict[str, str] = field(default_factory=dict)
    north: list[str] = field(default_factory=list)
    south: list[str] = field(default_factory=list)

    def settings(self, **extra: str) -> dict[str, str]:
        return {
            "credentials": json.dumps(self.key),
            "subject": "admin@lincoln.example.org",
            "api_endpoint": self.fake.url,
            "ou_schools": "/Schools/North=North High;/Schools/South=South High",
            "page_size": "30",
            "requests_per_second": "1000",
            **extra,
        }


@pytest.fixture
def domain(google: FakeGoogle) -> Domain:
    """North High: Algebra I (Rivera, co-taught by Chen, 130 students) and Biology (Chen, the
    first 40). South High: Art (Okafor, 20 students) and its own Algebra I (Okafor, the same
    name). An archived Algebra I of last year; one North student invited to Biology only."""
    g = google
    for path in (
        "/Schools",
        "/Schools/North",
        "/Schools/South",
        "/Schools/North/Grade 9",
        "/Staff",
    ):
        g.unit(path)
    g.user("admin@lincoln.example.org", "Ada", "Admin", "/Staff", admin=True)
    d = Domain(g, g.service_account())
    d.ids["rivera"] = g.user("rivera@lincoln.example.org", "Rosa", "Rivera", "/Schools/North")
    d.ids["chen"] = g.user("chen@lincoln.example.org", "Li", "Chen", "/Schools/North")
    d.ids["okafor"] = g.user("okafor@lincoln.example.org", "Ngozi", "Okafor", "/Schools/South")
    d.north = [
        g.user(f"n{n:03d}@lincoln.example.org", f"North{n}", "Student", "/Schools/North/Grade 9")
        for n in range(130)
    ]
    d.south = [
        g.user(f"s{n:03d}@lincoln.example.org", f"South{n}", "Student", "/Schools/South")
        for n in range(20)
    ]
    d.ids["algebra"] = g.course(
        "Algebra I",
        d.ids["rivera"],
        section="Period 2",
        room="114",
        teachers=[d.ids["chen"]],
        students=d.north,
    )
    d.ids["biology"] = g.course("Biology", d.ids["chen"], students=d.north[:40])
    d.ids["art"] = g.course("Art", d.ids["okafor"], students=d.south)
    d.ids["algebra_south"] = g.course("Algebra I", d.ids["okafor"], students=d.south[:5])
    d.ids["old_algebra"] = g.course(
        "Algebra I", d.ids["rivera"], state="ARCHIVED", students=d.north[:3]
    )
    d.ids["invited"] = g.user("late@lincoln.example.org", "Late", "Joiner", "/Schools/North")
    g.invite(d.ids["biology"], d.ids["invited"])
    return d


def fetch(settings: dict[str, str]) -> Any:
    return base.build("google", settings).fetch(FetchContext())


def rows(feed: Any, entity: str) -> dict[str, dict[str, Any]]:
    return {r["ext_id"]: r for r in feed.frame(entity).to_dicts()}


# Mapping ------------------------------------------------------------------------------------


def test_domain_becomes_schools_people_sections_and_enrollments(domain: Domain) -> None:
    feed = fetch(domain.settings())
    ids = domain.ids

    schools = rows(feed, "school")
    assert {s["name"] for s in schools.values()} == {"North High", "South High"}
    assert schools["ou:/Schools/North"]["sis_id"].startswith("id:")

    persons = rows(feed, "person")
    assert len(persons) == 3 + 130 + 20
    student = persons[domain.north[0]]
    assert student["google_id"] == domain.north[0]
    assert student["email"] == "n000@lincoln.example.org"
    # /Schools/North/Grade 9 is under /Schools/North: the longest mapped prefix wins.
    assert student["school_ext_id"] == "ou:/Schools/North"
    assert persons[ids["okafor"]]["school_ext_id"] == "ou:/Schools/South"
    assert persons[ids["chen"]]["role"] == "teacher"

    sects = rows(feed, "section")
    assert set(sects) == {ids["algebra"], ids["biology"], ids["art"], ids["algebra_south"]}
    algebra = sects[ids["algebra"]]
    assert (algebra["name"], algebra["period"], algebra["room"]) == ("Algebra I", "Period 2", "114")
    assert algebra["school_ext_id"] == "ou:/Schools/North"
    # Same name, another course: another section, in the owner's school.
    assert sects[ids["algebra_south"]]["name"] == "Algebra I"
    assert sects[ids["algebra_south"]]["school_ext_id"] == "ou:/Schools/South"

    roles = rows(feed, "enrollment")
    assert roles[f"{ids['algebra']}|{ids['rivera']}"]["role"] == "owner"
    assert roles[f"{ids['algebra']}|{ids['chen']}"]["role"] == "co-teacher"
    assert roles[f"{ids['biology']}|{ids['chen']}"]["role"] == "owner"
    per_section = feed.frame("enrollment").group_by("section_ext_id").len()
    counts = dict(per_section.iter_rows())
    assert counts[ids["algebra"]] == 130 + 2
    # One person in two courses.
    assert f"{ids['biology']}|{domain.north[0]}" in roles
    assert domain.fake.violations == []


def test_lists_use_an_explicit_page_size_and_follow_every_page(domain: Domain) -> None:
    fetch(domain.settings())
    calls = domain.fake.calls("classroom.courses.students.list")
    assert all(c["pageSize"] == ["30"] for c in calls)
    # 130 students at 30 a page: five pages for Algebra I alone.
    assert sum(1 for c in calls if "pageToken" in c) >= 4
    assert domain.fake.calls("classroom.courses.list")[0]["courseStates"] == ["ACTIVE"]


def test_archived_course_only_when_its_state_is_asked_for(domain: Domain) -> None:
    assert domain.ids["old_algebra"] not in rows(fetch(domain.settings()), "section")

    feed = fetch(domain.settings(course_states="ACTIVE,ARCHIVED"))
    assert domain.ids["old_algebra"] in rows(feed, "section")
    assert domain.fake.calls("classroom.courses.list")[-1]["courseStates"] == [
        "ACTIVE",
        "ARCHIVED",
    ]


def test_courses_and_units_choose_what_is_synced(domain: Domain) -> None:
    feed = fetch(domain.settings(courses=f"{domain.ids['art']},999"))
    assert set(rows(feed, "section")) == {domain.ids["art"]}
    assert any(w.record_id == "999" for w in feed.warnings)

    feed = fetch(domain.settings(ous="/Schools/South"))
    assert set(rows(feed, "section")) == {domain.ids["art"], domain.ids["algebra_south"]}


def test_whole_domain_is_one_school_without_a_unit_mapping(domain: Domain) -> None:
    settings = domain.settings(school="Lincoln Schools")
    del settings["ou_schools"]
    feed = fetch(settings)
    assert rows(feed, "school") == {
        "domain": {"ext_id": "domain", "name": "Lincoln Schools", "sis_id": None}
    }
    assert set(feed.frame("person")["school_ext_id"].to_list()) == {"domain"}
    # No unit mapping: the Directory is not listed.
    assert domain.fake.calls("directory.users.list") == []


def test_missing_email_is_filled_from_the_directory(domain: Domain) -> None:
    hidden = domain.north[7]
    domain.fake.hidden_emails.add(hidden)
    settings = domain.settings()
    del settings["ou_schools"]
    feed = fetch(settings)
    assert rows(feed, "person")[hidden]["email"] == "n007@lincoln.example.org"
    gets = [q for name, q in domain.fake.log if name == "directory.users.get"]
    assert len(gets) == 1


def test_invited_student_is_reported_not_enrolled(domain: Domain) -> None:
    feed = fetch(domain.settings())
    assert domain.ids["invited"] not in rows(feed, "person")
    warning = next(w for w in feed.warnings if "invited" in w.message)
    assert warning.record_id == domain.ids["biology"]
    assert warning.message.startswith("1 student(s)")


def test_teacher_who_is_also_a_student_is_kept_as_a_teacher(domain: Domain) -> None:
    domain.fake.students[domain.ids["art"]].append(domain.ids["chen"])
    feed = fetch(domain.settings())
    assert rows(feed, "person")[domain.ids["chen"]]["role"] == "teacher"
    assert (
        rows(feed, "enrollment")[f"{domain.ids['art']}|{domain.ids['chen']}"]["role"] == "student"
    )
    assert any("kept as teachers" in w.message for w in feed.warnings)


# Quotas and faults ----------------------------------------------------------------------------


def test_a_storm_of_429s_is_waited_out(domain: Domain, waits: list[float]) -> None:
    domain.fake.rate_limit("classroom.courses.students.list", times=5, retry_after="7")
    domain.fake.rate_limit("directory.users.list", times=2, retry_after=None)
    feed = fetch(domain.settings())
    assert feed.frame("person").height == 153
    assert waits.count(7.0) == 5
    # Without Retry-After: exponential backoff, 1 s then 2 s.
    assert [w for w in waits if w in (1.0, 2.0)][:2] == [1.0, 2.0]


def test_endless_rate_limits_fail_the_run_with_a_plain_message(domain: Domain) -> None:
    domain.fake.rate_limit("classroom.courses.list", times=None)
    with pytest.raises(SourceError, match=r"kept failing after 8 attempts .*HTTP 429"):
        fetch(domain.settings())


def test_token_bucket_paces_requests_after_a_burst() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        now[0] += seconds

    bucket = google_api.TokenBucket(5.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(5 + 10):
        bucket.take()
    # A burst of five, then one request every 0.2 s.
    assert slept == [0.2] * 10
    now[0] += 10  # idle time refills the bucket up to its capacity only
    for _ in range(5):
        bucket.take()
    assert len(slept) == 10


def test_a_401_refreshes_the_token_once(domain: Domain) -> None:
    unauthenticated = error_body(
        401, "Request had invalid authentication credentials.", "UNAUTHENTICATED"
    )
    domain.fake.fail("classroom.courses.list", 401, unauthenticated)
    fetch(domain.settings())
    assert len(domain.fake.calls("token")) == 2

    domain.fake.fail("classroom.courses.list", 401, unauthenticated, times=None)
    with pytest.raises(SourceError, match="refused access"):
        fetch(domain.settings())


def test_expired_access_token_is_refreshed(domain: Domain) -> None:
    source = base.build("google", domain.settings())
    with source.api() as api:  # type: ignore[attr-defined]
        api.refresh()
        domain.fake.expire_tokens()
        assert (
            api.get(f"{domain.fake.url}/v1/courses", {"pageSize": 1}, api="Classroom") is not None
        )
    assert len(domain.fake.calls("token")) == 2


def test_api_disabled_in_the_project_says_so(domain: Domain) -> None:
    domain.fake.disable_service("classroom.courses.list", "classroom.googleapis.com")
    with pytest.raises(
        SourceError, match="Google Classroom API is not enabled in the Google Cloud project"
    ):
        fetch(domain.settings())


def test_classroom_disabled_for_the_domain_says_where_to_turn_it_on(domain: Domain) -> None:
    domain.fake.classroom_disabled()
    with pytest.raises(SourceError, match="Classroom > Data access"):
        fetch(domain.settings())


def test_under_18_third_party_block_is_explained(domain: Domain) -> None:
    body = error_body(
        403,
        "Access to this app is blocked for users designated as under 18 by the domain.",
        "PERMISSION_DENIED",
    )
    domain.fake.fail("classroom.courses.students.list", 403, body)
    with pytest.raises(SourceError, match="App access control"):
        fetch(domain.settings())


# Connection test and credentials -------------------------------------------------------------


def test_connection_test_passes_and_names_each_api(domain: Domain) -> None:
    checks = base.build("google", domain.settings()).check()  # type: ignore[attr-defined]
    assert [(c.name, c.ok) for c in checks] == [
        ("token", True),
        ("classroom", True),
        ("directory users", True),
        ("directory units", True),
    ]


def test_connection_test_explains_token_refusals(domain: Domain) -> None:
    domain.fake.delegated = set()
    checks = base.build("google", domain.settings()).check()  # type: ignore[attr-defined]
    assert not checks[0].ok and "unauthorized_client" in checks[0].detail
    assert "Domain-wide delegation" in checks[0].detail

    domain.fake.delegated = set(google_api.CLASSROOM_SCOPES)
    wrong = base.build("google", domain.settings(subject="nobody@lincoln.example.org"))
    checks = wrong.check()  # type: ignore[attr-defined]
    assert "invalid_grant" in checks[0].detail and "nobody@lincoln.example.org" in checks[0].detail


def test_connection_test_reports_a_disabled_directory(domain: Domain) -> None:
    domain.fake.disable_service("directory.users.get", "admin.googleapis.com")
    checks = base.build("google", domain.settings()).check()  # type: ignore[attr-defined]
    assert [c.ok for c in checks] == [True, True, False, True]
    assert "Admin SDK API (Directory) is not enabled" in checks[2].detail


def test_oauth_consent_then_refresh_token(domain: Domain) -> None:
    client = domain.fake.oauth_client()
    key = google_api.parse_credentials(json.dumps(client))
    assert isinstance(key, google_api.OAuthClient)
    endpoints = google_api.Endpoints.from_setting(domain.fake.url)
    url = google_api.consent_url(key, endpoints, google_api.CLASSROOM_SCOPES)
    assert url.startswith(f"{domain.fake.url}/o/oauth2/v2/auth?")
    assert "access_type=offline" in url and "classroom.rosters.readonly" in url

    code = domain.fake.consent(set(google_api.CLASSROOM_SCOPES))
    token = google_api.exchange_code(key, endpoints, f"http://127.0.0.1/?state=x&code={code}")
    settings = domain.settings(credentials=json.dumps(client), refresh_token=token)
    del settings["subject"]
    assert fetch(settings).frame("section").height == 4

    domain.fake.refresh_tokens.clear()  # the admin revoked the app's access
    with pytest.raises(SourceError, match=r"invalid_grant.*google-consent"):
        fetch(settings)


def test_oauth_client_without_consent_is_a_config_error(domain: Domain) -> None:
    settings = domain.settings(credentials=json.dumps(domain.fake.oauth_client()))
    with pytest.raises(ConfigError, match="google-consent"):
        fetch(settings)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"credentials": ""}, "no 'credentials'"),
        ({"credentials": "not json"}, "not a JSON key file"),
        ({"subject": ""}, "needs a 'subject'"),
        ({"course_states": "ACTIVE,GONE"}, "Unknown course state"),
        ({"ou_schools": "/Schools/North"}, "/Unit/Path=School name"),
        ({"ous": "Schools"}, "start with '/'"),
        ({"api_endpoint": "http://example.org"}, "must be an https address"),
        ({"page_size": "many"}, "must be a number"),
    ],
)
def test_bad_settings_are_config_errors(
    domain: Domain, change: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        base.build("google", domain.settings(**change))


# Through the engine and the CLI ----------------------------------------------------------------


def test_sync_attaches_a_student_the_extension_saw(
    store: sa.Engine, domain: Domain, tmp_path: Path
) -> None:
    service.add_district(store, DISTRICT)
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(domain.key))
    settings = domain.settings(credentials=str(key_file))
    service.add_source(store, "classroom", DISTRICT, "google", settings)
    # The extension saw one student by Google id, another by email, before any sync.
    by_id = service.record_sighting(store, DISTRICT, google_id=domain.north[0])
    by_email = service.record_sighting(store, DISTRICT, email="n001@lincoln.example.org")

    result = sync_engine.sync(store, "classroom")
    assert result.status == "succeeded", result.error
    with store.connect() as conn:
        found = {
            r.google_id: r
            for r in conn.execute(sa.select(people.c.id, people.c.google_id, people.c.status))
        }
        assert found[domain.north[0]].id == by_id["person"]
        assert found[domain.north[1]].id == by_email["person"]
        assert {r.status for r in found.values()} == {"active"}
        enrolled = conn.execute(
            sa.select(sa.func.count())
            .select_from(enrollments)
            .where(enrollments.c.person_id == by_id["person"], enrollments.c.end_at.is_(None))
        ).scalar_one()
        assert enrolled == 2  # Algebra I and Biology
        names = conn.execute(sa.select(sections.c.name)).scalars().all()
        assert sorted(names) == ["Algebra I", "Algebra I", "Art", "Biology"]


def test_api_disabled_fails_the_run_and_leaves_the_store(store: sa.Engine, domain: Domain) -> None:
    service.add_district(store, DISTRICT)
    service.add_source(store, "classroom", DISTRICT, "google", domain.settings())
    assert sync_engine.sync(store, "classroom").status == "succeeded"

    def snapshot() -> list[Any]:
        with store.connect() as conn:
            return [
                sorted(map(tuple, conn.execute(sa.select(table)).all()))
                for table in (people, sections, enrollments)
            ]

    before = snapshot()
    domain.fake.students[domain.ids["art"]].pop()
    domain.fake.disable_service("classroom.courses.list", "classroom.googleapis.com")
    result = sync_engine.sync(store, "classroom")
    assert result.status == "failed"
    assert result.error and "not enabled in the Google Cloud project" in result.error
    assert snapshot() == before


def test_key_is_stored_encrypted_and_masked(store: sa.Engine, domain: Domain) -> None:
    service.add_district(store, DISTRICT)
    service.add_source(store, "classroom", DISTRICT, "google", domain.settings())
    with store.connect() as conn:
        raw = conn.execute(sa.select(sources.c.config)).scalar_one()
    assert "PRIVATE KEY" not in json.dumps(raw)
    assert raw["credentials"].startswith("fernet:")
    assert raw["subject"] == "admin@lincoln.example.org"
    listed = service.list_sources(store)[0]["config"]
    assert listed["credentials"] == "•••"
    assert listed["ou_schools"].startswith("/Schools/North")


def test_cli_adds_tests_and_lists_a_google_source(
    store_url: str, domain: Domain, tmp_path: Path
) -> None:
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(domain.key))
    runner = CliRunner()

    def cli(*args: str, code: int = 0) -> str:
        result = runner.invoke(main, ["--database-url", store_url, *args])
        assert result.exit_code == code, (result.output, result.exception)
        return result.stdout

    cli("district", "add", DISTRICT)
    pairs = [f"--set={k}={v}" for k, v in domain.settings(credentials=str(key_file)).items()]
    cli("source", "add", "classroom", "--district", DISTRICT, "--kind", "google", *pairs)
    report = json.loads(cli("source", "test", "classroom", "--json"))
    assert report["ok"] and len(report["checks"]) == 4
    listed = json.loads(cli("source", "list", "--json"))
    assert listed[0]["config"]["credentials"] == "•••"
    assert "PRIVATE" not in json.dumps(listed)

    domain.fake.classroom_disabled()
    out = cli("source", "test", "classroom", code=1)
    assert "FAIL  classroom" in out and "Data access" in out


def test_cli_consent_stores_the_refresh_token(
    store_url: str, domain: Domain, tmp_path: Path
) -> None:
    client_file = tmp_path / "client.json"
    client_file.write_text(json.dumps(domain.fake.oauth_client()))
    runner = CliRunner()

    def cli(*args: str, code: int = 0, given: str | None = None) -> str:
        result = runner.invoke(main, ["--database-url", store_url, *args], input=given)
        assert result.exit_code == code, (result.output, result.exception)
        return result.stdout

    cli("district", "add", DISTRICT)
    cli(
        "source", "add", "classroom", "--district", DISTRICT, "--kind", "google",
        f"--set=credentials={client_file}", f"--set=api_endpoint={domain.fake.url}",
        "--set=requests_per_second=1000",
    )  # fmt: skip
    code = domain.fake.consent(set(google_api.CLASSROOM_SCOPES))
    out = cli("source", "google-consent", "classroom", given=f"http://127.0.0.1/?code={code}\n")
    assert f"{domain.fake.url}/o/oauth2/v2/auth?" in out and "Consent stored" in out
    engine = service.open_store(store_url)
    try:
        with engine.connect() as conn:
            raw = conn.execute(sa.select(sources.c.config)).scalar_one()
        assert raw["refresh_token"].startswith("fernet:")
        assert sync_engine.sync(engine, "classroom").status == "succeeded"
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(sections)).scalar_one() == 4
    finally:
        engine.dispose()


def test_frames_have_the_feed_columns(domain: Domain) -> None:
    feed = fetch(domain.settings())
    assert feed.frame("person").schema["google_id"] == pl.Utf8
    assert feed.mode == "full"


def test_connection_test_of_an_oauth_source_without_consent(domain: Domain) -> None:
    settings = domain.settings(credentials=json.dumps(domain.fake.oauth_client()))
    checks = base.build("google", settings).check()  # type: ignore[attr-defined]
    assert [(c.name, c.ok) for c in checks] == [("settings", False)]
    assert "google-consent" in checks[0].detail
