"""Google Classroom push notifications: registrations of roster feeds with Classroom, the push
token that authenticates Pub/Sub's deliveries, and reading a delivery's envelope.

Classroom publishes a notification to a Cloud Pub/Sub topic whenever someone joins or leaves a
course of a registered feed; a push subscription of that topic delivers it to the roster
service. See ``docs/connectors/google.md`` (*Near-real-time changes*).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rostersync.errors import ConfigError, InputError, Problem
from rostersync.sources.google_api import (
    CLASSROOM_SCOPES,
    PUSH_SCOPE,
    GoogleApi,
    OAuthClient,
    make_credentials,
)
from rostersync.sources.google_classroom import CLASSROOM, GoogleClassroomSource

TOPIC = re.compile(r"^projects/[^/\s]+/topics/[^/\s]+$")


@dataclass(frozen=True)
class Registration:
    registration_id: str
    expires: datetime
    #: The course of a COURSE_ROSTER_CHANGES feed; None for the whole domain.
    course_id: str | None = None


@dataclass(frozen=True)
class Notification:
    """One Pub/Sub delivery of a Classroom notification."""

    message_id: str
    collection: str
    event_type: str
    course_id: str | None
    registration_id: str | None


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token: str, stored_hash: str) -> bool:
    return bool(stored_hash) and hmac.compare_digest(token_hash(token), stored_hash)


def check_topic(topic: str) -> str:
    topic = topic.strip()
    if not TOPIC.match(topic):
        raise ConfigError(
            f"{topic!r} is not a Pub/Sub topic name; write it as projects/PROJECT/topics/TOPIC."
        )
    return topic


def register(source: GoogleClassroomSource, topic: str) -> list[Registration]:
    """Register the source's roster feeds with Classroom: one COURSE_ROSTER_CHANGES feed per
    course of its ``courses`` setting when only courses are named, else one
    DOMAIN_ROSTER_CHANGES feed (which also covers courses created later).

    Classroom refuses registrations made through domain-wide delegation, so the source must use
    an administrator's OAuth consent that includes the push-notifications scope.
    """
    if not isinstance(source.key, OAuthClient):
        raise ConfigError(
            "Classroom does not accept push registrations made by a service account through "
            "domain-wide delegation. Give the source an OAuth client as credentials and run "
            "`rostersync source google-consent NAME --push` as a domain administrator."
        )
    credentials = make_credentials(
        source.key,
        scopes=(*CLASSROOM_SCOPES, PUSH_SCOPE),
        endpoints=source.endpoints,
        refresh_token=source.refresh_token,
    )
    feeds: list[dict[str, Any]] = (
        [
            {"feedType": "COURSE_ROSTER_CHANGES", "courseRosterChangesInfo": {"courseId": c}}
            for c in source.courses
        ]
        if source.courses and not source.ous
        else [{"feedType": "DOMAIN_ROSTER_CHANGES"}]
    )
    made: list[Registration] = []
    with GoogleApi(credentials, rate=source.rate, sleep=source.sleep) as api:
        api.refresh()
        for feed in feeds:
            answer = api.post(
                f"{source.endpoints.classroom}/v1/registrations",
                {"feed": feed, "cloudPubsubTopic": {"topicName": topic}},
                api=CLASSROOM,
            )
            made.append(
                Registration(
                    registration_id=str(answer.get("registrationId") or ""),
                    expires=_time(str(answer.get("expiryTime") or "")),
                    course_id=(feed.get("courseRosterChangesInfo") or {}).get("courseId"),
                )
            )
    return made


def _time(text: str) -> datetime:
    """An RFC 3339 time as Google writes it (``2025-01-01T00:00:00.123456Z``)."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"Classroom answered a registration without a valid expiry ({text!r})."
        ) from None


def _malformed(message: str) -> InputError:
    return InputError([Problem(message, file="Pub/Sub push")])


def read_envelope(body: bytes) -> Notification:
    """The notification inside a Pub/Sub push envelope; InputError when it is not one.

    The envelope is ``{"message": {"data": base64, "attributes": {...}, "messageId": ...},
    "subscription": ...}``; the data is Classroom's JSON notification with ``collection``,
    ``eventType``, ``resourceId`` (``courseId``, ``userId``) and ``registrationId``.
    """
    try:
        envelope = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _malformed("The push body is not JSON.") from None
    message = envelope.get("message") if isinstance(envelope, dict) else None
    if not isinstance(message, dict):
        raise _malformed("The push body has no 'message' object.")
    message_id = message.get("messageId") or message.get("message_id")
    if not isinstance(message_id, str | int) or not str(message_id):
        raise _malformed("The push message has no messageId.")
    try:
        data = json.loads(base64.b64decode(str(message.get("data") or ""), validate=True))
    except (binascii.Error, ValueError):
        raise _malformed("The push message's data is not base64-encoded JSON.") from None
    if not isinstance(data, dict):
        raise _malformed("The push message's data is not a JSON object.")
    resource = data.get("resourceId")
    resource = resource if isinstance(resource, dict) else {}
    course_id = resource.get("courseId")
    registration = data.get("registrationId")
    return Notification(
        message_id=str(message_id)[:200],
        collection=str(data.get("collection") or ""),
        event_type=str(data.get("eventType") or ""),
        course_id=str(course_id) if course_id else None,
        registration_id=str(registration) if registration else None,
    )
