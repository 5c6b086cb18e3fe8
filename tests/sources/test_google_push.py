"""Classroom push registrations against the fake Google: creating them, refusing delegation,
and renewing them before they expire, with injected clocks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from rostersync import service
from rostersync.errors import ConfigError
from rostersync.jobs import google_push
from rostersync.jobs.scheduler import Scheduler
from rostersync.sources import google_api
from rostersync.store.schema import sources
from tests.fakes.google import FakeGoogle, serve

TOPIC = "projects/lincoln-sync/topics/roster-changes"
START = datetime(2027, 1, 4, 8, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROSTERSYNC_SECRET_KEY", Fernet.generate_key().decode())
    monkeypatch.setattr(google_api, "pause", lambda seconds: None)


@pytest.fixture
def google() -> Iterator[FakeGoogle]:
    yield from serve()


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def clock(google: FakeGoogle) -> Clock:
    found = Clock(START)
    google.now = found
    return found


def oauth_source(store: sa.Engine, google: FakeGoogle, **extra: str) -> None:
    """A google source with an admin's consent that includes the push-notifications scope."""
    client = google.oauth_client()
    key = google_api.parse_credentials(json.dumps(client))
    assert isinstance(key, google_api.OAuthClient)
    endpoints = google_api.Endpoints.from_setting(google.url)
    code = google.consent({*google_api.CLASSROOM_SCOPES, google_api.PUSH_SCOPE})
    token = google_api.exchange_code(key, endpoints, code)
    service.add_district(store, "Lincoln Unified")
    settings = {
        "credentials": json.dumps(client),
        "refresh_token": token,
        "api_endpoint": google.url,
    }
    service.add_source(store, "classroom", "Lincoln Unified", "google", settings | extra)


def stored(store: sa.Engine) -> dict[str, str]:
    with store.connect() as conn:
        config = conn.execute(sa.select(sources.c.config)).scalar_one()
    return {k: str(v) for k, v in config.items()}


def test_watch_registers_the_domain_and_records_expiry_and_token(
    store: sa.Engine, google: FakeGoogle, clock: Clock
) -> None:
    oauth_source(store, google)

    done = google_push.watch(store, "classroom", TOPIC, now=clock)

    [registration] = done.registrations
    assert registration.course_id is None and registration.expires == START + timedelta(days=7)
    assert google.registrations[registration.registration_id]["feed"] == {
        "feedType": "DOMAIN_ROSTER_CHANGES"
    }
    config = stored(store)
    assert config["push_topic"] == TOPIC
    assert config["push_registrations"] == registration.registration_id
    assert datetime.fromisoformat(config["push_expires"]) == START + timedelta(days=7)
    # The token is shown once and kept only as an encrypted hash.
    assert done.token and done.token not in json.dumps(config)
    assert config["push_token_hash"].startswith("fernet:")
    assert not google.violations

    again = google_push.watch(store, "classroom", TOPIC, now=clock)
    assert again.token is None  # the subscription's address stays valid


def test_named_courses_get_one_course_feed_each(
    store: sa.Engine, google: FakeGoogle, clock: Clock
) -> None:
    owner = google.user("rivera@lincoln.example.org", "Rosa", "Rivera")
    algebra = google.course("Algebra I", owner)
    art = google.course("Art", owner)
    oauth_source(store, google, courses=f"{algebra},{art}")

    done = google_push.watch(store, "classroom", TOPIC, now=clock)

    assert [r.course_id for r in done.registrations] == [algebra, art]
    assert {r["feed"]["feedType"] for r in google.registrations.values()} == {
        "COURSE_ROSTER_CHANGES"
    }
    assert not google.violations


def test_delegated_service_account_is_refused_with_a_way_out(
    store: sa.Engine, google: FakeGoogle
) -> None:
    google.user("admin@lincoln.example.org", "Ada", "Admin", admin=True)
    service.add_district(store, "Lincoln Unified")
    settings = {
        "credentials": json.dumps(google.service_account()),
        "subject": "admin@lincoln.example.org",
        "api_endpoint": google.url,
    }
    service.add_source(store, "classroom", "Lincoln Unified", "google", settings)

    with pytest.raises(ConfigError, match="google-consent NAME --push"):
        google_push.watch(store, "classroom", TOPIC)
    with pytest.raises(ConfigError, match="not a Pub/Sub topic"):
        google_push.watch(store, "classroom", "roster-changes")
    assert not google.registrations


def test_scheduler_renews_registrations_a_day_before_they_expire(
    store: sa.Engine, google: FakeGoogle, clock: Clock
) -> None:
    oauth_source(store, google)
    first = google_push.watch(store, "classroom", TOPIC, now=clock).registrations[0]
    scheduler = Scheduler(store, now=clock, mode="embedded")

    clock.at = START + timedelta(days=5, hours=23)
    scheduler.renew()
    assert list(google.registrations) == [first.registration_id]

    clock.at = START + timedelta(days=6, hours=1)
    scheduler.renew()
    assert len(google.registrations) == 2
    config = stored(store)
    assert config["push_registrations"] != first.registration_id
    assert datetime.fromisoformat(config["push_expires"]) == clock.at + timedelta(days=7)

    clock.at += timedelta(hours=1)
    scheduler.renew()  # renewed: nothing to do for another six days
    assert len(google.registrations) == 2


def test_a_failed_renewal_waits_an_hour_before_trying_again(
    store: sa.Engine, google: FakeGoogle, clock: Clock
) -> None:
    oauth_source(store, google)
    google_push.watch(store, "classroom", TOPIC, now=clock)
    google.refresh_tokens.clear()  # the admin revoked the consent

    clock.at = START + timedelta(days=6, hours=12)
    assert google_push.renew_due(store, now=clock) == []
    tokens_asked = len(google.calls("token"))
    clock.at += timedelta(minutes=30)
    assert google_push.renew_due(store, now=clock) == []
    assert len(google.calls("token")) == tokens_asked
    clock.at += timedelta(minutes=31)
    google_push.renew_due(store, now=clock)
    assert len(google.calls("token")) > tokens_asked
