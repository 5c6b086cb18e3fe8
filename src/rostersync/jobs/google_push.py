"""Near-real-time Google Classroom syncs: set up a source's push registrations, renew them before
they expire, and turn each Pub/Sub delivery into a queued run of the source.

A delivery queues a normal full sync of the source (trigger ``push``) rather than a fetch of the
one changed course: a full sync cannot archive courses it did not read, and the queue already
keeps at most one run of a source waiting, so a burst of deliveries becomes one run. See
``docs/connectors/google.md`` (*Near-real-time changes*).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from rostersync import service
from rostersync.errors import ConfigError, RosterError
from rostersync.jobs.queue import Mode, enqueue, mode_of
from rostersync.sources import base
from rostersync.sources import google_push as push
from rostersync.sources.google_classroom import GoogleClassroomSource
from rostersync.store.schema import push_messages, sources

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
#: Renew a source's registrations when less than this is left of them (they last a week).
RENEW_BEFORE = timedelta(days=1)
#: After a failed renewal, wait this long before trying again.
RETRY_AFTER = timedelta(hours=1)
#: Pub/Sub keeps an unacknowledged message at most 7 days; ids older than that cannot recur.
KEEP_MESSAGES = timedelta(days=8)


def utc_now() -> datetime:
    return datetime.now(UTC)


class PushRefused(RosterError):
    """A push delivery without the source's push token (or for no push-enabled source)."""


@dataclass(frozen=True)
class Watch:
    source_id: int
    registrations: list[push.Registration]
    #: The new push token, shown once; None when the source kept the one it had.
    token: str | None


def watch(
    engine: sa.Engine, name: str, topic: str, *, new_token: bool = False, now: Clock = utc_now
) -> Watch:
    """Register the source's roster feeds with Classroom to publish to ``topic``, and record
    the registrations, their expiry and (the first time, or when asked) a new push token."""
    topic = push.check_topic(topic)
    row = _source(engine, name)
    config = service.reveal(engine, row.config or {})
    made = push.register(_connector(config), topic)
    token = push.new_token() if new_token or not config.get("push_token_hash") else None
    changes = _recorded(made, now()) | {"push_topic": topic}
    if token is not None:
        changes["push_token_hash"] = push.token_hash(token)
    service.update_source(engine, name, changes)
    logger.info("Source %s: %s push registration(s) created.", row.id, len(made))
    return Watch(int(row.id), made, token)


def renew_due(engine: sa.Engine, *, now: Clock = utc_now) -> list[str]:
    """Renew the registrations of every push-enabled Google source that expire within
    ``RENEW_BEFORE``; return the names of the sources renewed. A failure is logged and retried
    after ``RETRY_AFTER``, and never stops the others."""
    renewed = []
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(sources.c.id, sources.c.name, sources.c.config).where(
                sources.c.kind == "google", sources.c.status == "active"
            )
        ).all()
    for row in rows:
        stored = row.config or {}
        if not stored.get("push_topic"):
            continue
        at = now()
        expires = _when(stored.get("push_expires"))
        tried = _when(stored.get("push_renew_tried"))
        if expires is not None and expires - at > RENEW_BEFORE:
            continue
        if tried is not None and at - tried < RETRY_AFTER:
            continue
        try:
            config = service.reveal(engine, stored)
            made = push.register(_connector(config), str(config["push_topic"]))
        except RosterError as exc:
            logger.warning(
                "Source %s: renewing its push registrations failed (%s); retrying in an hour.",
                row.id,
                exc,
            )
            service.update_source(engine, row.name, {"push_renew_tried": at.isoformat()})
            continue
        service.update_source(engine, row.name, _recorded(made, at) | {"push_renew_tried": ""})
        logger.info("Source %s: push registrations renewed.", row.id)
        renewed.append(str(row.name))
    return renewed


@dataclass(frozen=True)
class Receipt:
    #: queued (a run was queued or one was already waiting), repeat (this message was handled
    #: before), or ignored (a course the source does not sync)
    outcome: Literal["queued", "repeat", "ignored"]
    run_id: int | None = None


def receive(
    engine: sa.Engine,
    source_id: int,
    token: str,
    body: bytes,
    *,
    now: Clock = utc_now,
    mode: Mode | None = None,
) -> Receipt:
    """Handle one Pub/Sub push delivery for the source: PushRefused without its push token,
    InputError when the body is not a push envelope."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(sources.c.kind, sources.c.config).where(sources.c.id == source_id)
        ).first()
    stored = (row.config or {}) if row is not None else {}
    if row is None or row.kind != "google" or not stored.get("push_token_hash"):
        raise PushRefused("Unknown source or push token.")
    config = service.reveal(engine, stored)
    if not push.token_matches(token, config.get("push_token_hash", "")):
        raise PushRefused("Unknown source or push token.")
    notification = push.read_envelope(body)
    at = now()
    with engine.begin() as conn:
        conn.execute(push_messages.delete().where(push_messages.c.received_at < at - KEEP_MESSAGES))
        insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(
            push_messages
        )
        claimed = conn.execute(
            insert.values(source_id=source_id, message_id=notification.message_id, received_at=at)
            .on_conflict_do_nothing()
            .returning(push_messages.c.source_id)
        ).first()
        if claimed is None:
            return Receipt("repeat")
        if not _in_scope(config, notification.course_id):
            logger.info("Source %s: push for a course it does not sync; ignored.", source_id)
            return Receipt("ignored")
        queued = enqueue(conn, source_id, "push", None, mode or mode_of(engine))
        conn.execute(
            push_messages.update()
            .where(
                push_messages.c.source_id == source_id,
                push_messages.c.message_id == notification.message_id,
            )
            .values(run_id=queued.run_id)
        )
    logger.info(
        "Source %s: roster change pushed (%s %s); run %s %s.",
        source_id,
        notification.collection or "?",
        notification.event_type or "?",
        queued.run_id,
        "queued" if queued.created else "already waiting",
    )
    return Receipt("queued", queued.run_id)


def _in_scope(config: dict[str, str], course_id: str | None) -> bool:
    """Whether a change of the course can matter to the source: with only ``courses`` named,
    a course outside them cannot; with ``ous`` the owner's unit is unknown here, so it may."""
    courses = [c.strip() for c in (config.get("courses") or "").split(",") if c.strip()]
    if not courses or (config.get("ous") or "").strip() or course_id is None:
        return True
    return course_id in courses


def _source(engine: sa.Engine, name: str) -> Any:
    with engine.connect() as conn:
        row = conn.execute(sa.select(sources).where(sources.c.name == name)).first()
    if row is None:
        raise ConfigError(
            f"There is no source named {name!r}. `rostersync source list` shows them."
        )
    if row.kind != "google":
        raise ConfigError(f"The source {name!r} is not a google source; only Classroom pushes.")
    return row


def _connector(config: dict[str, str]) -> GoogleClassroomSource:
    connector = base.build("google", config)
    assert isinstance(connector, GoogleClassroomSource)
    return connector


def _recorded(made: list[push.Registration], at: datetime) -> dict[str, str]:
    expires = min((r.expires for r in made), default=at)
    return {
        "push_registrations": ",".join(r.registration_id for r in made),
        "push_expires": expires.isoformat(),
    }


def _when(value: object) -> datetime | None:
    if not value:
        return None
    try:
        found = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return found if found.tzinfo else found.replace(tzinfo=UTC)
