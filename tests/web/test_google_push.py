"""Pub/Sub push deliveries of Classroom roster changes: authenticated by the source's push
token, idempotent per message, and turned into one queued run of the source."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient

from rostersync import service
from rostersync.sources import google_push
from rostersync.store.schema import runs
from rostersync.web.app import Settings, create_app

TOKEN = "push-token-for-tests"
OAUTH_CLIENT = {"installed": {"client_id": "abc.apps.googleusercontent.com", "client_secret": "s"}}


@pytest.fixture
def client(
    store: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    monkeypatch.setenv("ROSTERSYNC_SECRET_KEY", Fernet.generate_key().decode())
    monkeypatch.setenv("ROSTERSYNC_QUEUE", "embedded")
    service.add_district(store, "Lincoln Unified")
    settings = {
        "credentials": json.dumps(OAUTH_CLIENT),
        "refresh_token": "1//refresh",
        "courses": "111,222",
        "push_topic": "projects/p/topics/t",
        "push_token_hash": google_push.token_hash(TOKEN),
    }
    service.add_source(store, "classroom", "Lincoln Unified", "google", settings)
    yield TestClient(create_app(store, Settings(uploads=tmp_path / "uploads")))


def envelope(message_id: str, course_id: str = "111", **data: Any) -> dict[str, Any]:
    notification = {
        "collection": "courses.students",
        "eventType": "CREATED",
        "resourceId": {"courseId": course_id, "userId": "555"},
        "registrationId": "reg-1",
        **data,
    }
    return {
        "message": {
            "data": base64.b64encode(json.dumps(notification).encode()).decode(),
            "attributes": {},
            "messageId": message_id,
            "publishTime": "2027-01-04T08:00:00Z",
        },
        "subscription": "projects/p/subscriptions/roster-push",
    }


def queued(store: sa.Engine) -> list[tuple[str, str]]:
    with store.connect() as conn:
        return [(r.trigger, r.status) for r in conn.execute(sa.select(runs)).all()]


def url(source_id: int = 1, token: str = TOKEN) -> str:
    return f"/api/v1/google/notifications/{source_id}?token={token}"


def test_push_without_the_source_token_is_refused(client: TestClient, store: sa.Engine) -> None:
    assert client.post(url(token="guess"), json=envelope("1")).status_code == 401
    assert client.post("/api/v1/google/notifications/1", json=envelope("1")).status_code == 401
    assert client.post(url(source_id=99), json=envelope("1")).status_code == 401
    assert queued(store) == []


def test_push_queues_one_run_and_redeliveries_add_nothing(
    client: TestClient, store: sa.Engine
) -> None:
    answer = client.post(url(), json=envelope("m-1"))
    assert answer.status_code == 204 and answer.content == b""
    assert queued(store) == [("push", "queued")]

    assert client.post(url(), json=envelope("m-1")).status_code == 204  # Pub/Sub retried
    assert client.post(url(), json=envelope("m-2", "222")).status_code == 204  # coalesced
    assert queued(store) == [("push", "queued")]

    with store.begin() as conn:  # the run started: a redelivery of m-1 still does nothing
        conn.execute(runs.update().values(status="running"))
    assert client.post(url(), json=envelope("m-1")).status_code == 204
    assert queued(store) == [("push", "running")]
    assert client.post(url(), json=envelope("m-3")).status_code == 204
    assert queued(store) == [("push", "running"), ("push", "queued")]


def test_push_for_a_course_the_source_does_not_sync_is_ignored(
    client: TestClient, store: sa.Engine
) -> None:
    assert client.post(url(), json=envelope("m-9", "999")).status_code == 204
    assert queued(store) == []


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"subscription": "projects/p/subscriptions/s"}',
        b'{"message": {"data": "e30="}}',
        b'{"message": {"messageId": "1", "data": "%%%"}}',
        b'{"message": {"messageId": "1", "data": "WzFd"}}',
    ],
)
def test_malformed_envelope_is_a_bad_request(
    client: TestClient, store: sa.Engine, body: bytes
) -> None:
    answer = client.post(url(), content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    assert queued(store) == []
