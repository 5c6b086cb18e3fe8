"""Who is calling: sign-in, sessions, CSRF, throttling, personal API tokens and sign-in links.

Sessions are rows of ``web_sessions`` keyed by the SHA-256 of the cookie's random value; tokens,
links and extension keys are likewise stored only as hashes. Whatever proves an email — a
password here, a single sign-on provider later (:class:`IdentityProvider`) — ends in
:func:`open_session`, so throttling, sessions and the policy are the same for every provider.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa
from fastapi import Request
from starlette.concurrency import run_in_threadpool

from rostersync.errors import ConfigError, NotFound, RosterError
from rostersync.store.schema import (
    api_tokens,
    sign_in_failures,
    sign_in_links,
    users,
    web_sessions,
)
from rostersync.web import accounts
from rostersync.web.policy import Forbidden, Principal, Unauthenticated

logger = logging.getLogger(__name__)

SESSION_COOKIE = "rostersync_session"
#: The double-submit cookie of forms shown before a session exists (sign-in, sign-in links).
PRE_CSRF_COOKIE = "rostersync_csrf"
IDLE_TIMEOUT = timedelta(hours=12)
MAX_AGE = timedelta(days=7)
#: How often a session's last-seen time is written: rarely, so reading pages stays read-only.
TOUCH_EVERY = timedelta(minutes=5)
LINK_LIFETIME = timedelta(hours=1)
THROTTLE_WINDOW = timedelta(minutes=15)
MAX_FAILURES_PER_EMAIL = 5
MAX_FAILURES_PER_ADDRESS = 20
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
TOKEN_PREFIX = "rs_"


class Throttled(RosterError):
    """Too many attempts; try again after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def now() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes for timezone-aware columns; they are stored in UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# Identity providers ------------------------------------------------------------------------


class IdentityProvider(Protocol):
    """A way to prove who someone is. A single sign-on provider (Google, Clever, ClassLink)
    implements ``start`` (the URL to send the browser to) and ``finish`` (read the provider's
    answer on the callback and return the verified email, or raise Unauthenticated); the web app
    then signs in the account with that email through :func:`open_session`."""

    name: str

    def start(self, request: Request, next_url: str) -> str: ...

    def finish(self, request: Request) -> str: ...


@dataclass(frozen=True)
class PasswordProvider:
    """The built-in provider: an email and a password checked against the argon2 hash."""

    engine: sa.Engine
    name: str = "password"

    def verify(self, email: str, password: str, address: str) -> int:
        """The user id whose password this is; records failures and enforces the throttle."""
        email = email.strip().lower()
        check_throttle(self.engine, email, address)
        with self.engine.connect() as conn:
            row = accounts.find_user(conn, email)
        ok = accounts.verify_password(
            self.engine,
            None if row is None else int(row.id),
            None if row is None else row.password_hash,
            password,
        )
        if not ok or row is None:
            record_failure(self.engine, email, address)
            raise Unauthenticated("That email and password do not match an account.")
        clear_failures(self.engine, email)
        return int(row.id)


# Throttling --------------------------------------------------------------------------------


def check_throttle(engine: sa.Engine, email: str, address: str) -> None:
    since = now() - THROTTLE_WINDOW
    with engine.connect() as conn:
        for column, value, limit in (
            (sign_in_failures.c.email, email, MAX_FAILURES_PER_EMAIL),
            (sign_in_failures.c.address, address, MAX_FAILURES_PER_ADDRESS),
        ):
            times = [
                aware(t)
                for t in conn.execute(
                    sa.select(sign_in_failures.c.failed_at)
                    .where(column == value, sign_in_failures.c.failed_at > since)
                    .order_by(sign_in_failures.c.failed_at.desc())
                    .limit(limit)
                ).scalars()
            ]
            if len(times) >= limit:
                retry = int((times[-1] + THROTTLE_WINDOW - now()).total_seconds()) + 1
                raise Throttled(
                    "Too many failed sign-ins. Wait a few minutes and try again.", max(retry, 1)
                )


def record_failure(engine: sa.Engine, email: str, address: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            sign_in_failures.insert().values(email=email[:320], address=address, failed_at=now())
        )
        # Old failures say nothing any more.
        conn.execute(
            sign_in_failures.delete().where(
                sign_in_failures.c.failed_at < now() - timedelta(days=1)
            )
        )
    logger.info("Failed sign-in from %s.", address)


def clear_failures(engine: sa.Engine, email: str) -> None:
    with engine.begin() as conn:
        conn.execute(sign_in_failures.delete().where(sign_in_failures.c.email == email))


# Sessions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenedSession:
    cookie: str
    csrf_token: str


def open_session(engine: sa.Engine, user_id: int, replaces: str | None = None) -> OpenedSession:
    """A new session for the user. The session the browser had (``replaces``, its cookie) is
    deleted: the cookie value changes at every sign-in, so a planted cookie is worthless."""
    cookie = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    at = now()
    with engine.begin() as conn:
        if replaces:
            conn.execute(web_sessions.delete().where(web_sessions.c.id == digest(replaces)))
        conn.execute(
            web_sessions.insert().values(
                id=digest(cookie),
                user_id=user_id,
                csrf_token=csrf,
                created_at=at,
                last_seen_at=at,
                expires_at=at + MAX_AGE,
            )
        )
        conn.execute(web_sessions.delete().where(web_sessions.c.expires_at < at))
    logger.info("Account %s signed in.", user_id)
    return OpenedSession(cookie, csrf)


def close_session(engine: sa.Engine, cookie: str | None) -> None:
    if cookie:
        with engine.begin() as conn:
            conn.execute(web_sessions.delete().where(web_sessions.c.id == digest(cookie)))


def session_user(engine: sa.Engine, cookie: str) -> tuple[int, str] | None:
    """The user id and CSRF token of a live session, or None."""
    key = digest(cookie)
    at = now()
    with engine.connect() as conn:
        row = conn.execute(sa.select(web_sessions).where(web_sessions.c.id == key)).first()
    if row is None:
        return None
    if aware(row.expires_at) < at or aware(row.last_seen_at) + IDLE_TIMEOUT < at:
        close_session(engine, cookie)
        return None
    if aware(row.last_seen_at) + TOUCH_EVERY < at:
        with engine.begin() as conn:
            conn.execute(
                web_sessions.update().where(web_sessions.c.id == key).values(last_seen_at=at)
            )
    return int(row.user_id), str(row.csrf_token)


def same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


# Personal API tokens -----------------------------------------------------------------------


def create_token(engine: sa.Engine, user_id: int, name: str | None = None) -> tuple[int, str]:
    """A new token for the user: its id and the token itself, which is never stored."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        result = conn.execute(
            api_tokens.insert().values(
                user_id=user_id,
                name=name,
                token_hash=digest(token),
                prefix=token[:10],
                created_at=now(),
            )
        )
        key = result.inserted_primary_key
        assert key is not None
    return int(key[0]), token


def revoke_token(engine: sa.Engine, token_id: int, user_id: int | None = None) -> None:
    with engine.begin() as conn:
        query = api_tokens.update().where(
            api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None)
        )
        if user_id is not None:
            query = query.where(api_tokens.c.user_id == user_id)
        if not conn.execute(query.values(revoked_at=now())).rowcount:
            raise NotFound(f"There is no active token {token_id}.")


def token_user(engine: sa.Engine, token: str) -> int | None:
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(api_tokens.c.id, api_tokens.c.user_id, api_tokens.c.last_used_at).where(
                api_tokens.c.token_hash == digest(token), api_tokens.c.revoked_at.is_(None)
            )
        ).first()
    if row is None:
        return None
    if row.last_used_at is None or aware(row.last_used_at) + TOUCH_EVERY < now():
        with engine.begin() as conn:
            conn.execute(
                api_tokens.update().where(api_tokens.c.id == row.id).values(last_used_at=now())
            )
    return int(row.user_id)


def list_tokens(conn: sa.Connection, user_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        sa.select(
            api_tokens.c.id,
            api_tokens.c.name,
            api_tokens.c.prefix,
            api_tokens.c.created_at,
            api_tokens.c.last_used_at,
            api_tokens.c.revoked_at,
        )
        .where(api_tokens.c.user_id == user_id)
        .order_by(api_tokens.c.id)
    )
    return [dict(r._mapping) for r in rows]


# One-time sign-in links ---------------------------------------------------------------------


def create_sign_in_link(engine: sa.Engine, user_id: int, created_by: int | None) -> str:
    """A secret for ``/sign-in/link/{secret}``: usable once, for LINK_LIFETIME."""
    token = secrets.token_urlsafe(32)
    at = now()
    with engine.begin() as conn:
        if conn.execute(sa.select(users.c.id).where(users.c.id == user_id)).first() is None:
            raise NotFound(f"There is no account {user_id}.")
        conn.execute(
            sign_in_links.insert().values(
                token_hash=digest(token),
                user_id=user_id,
                created_by=created_by,
                created_at=at,
                expires_at=at + LINK_LIFETIME,
            )
        )
    logger.info("Sign-in link for account %s created by %s.", user_id, created_by)
    return token


def redeem_sign_in_link(engine: sa.Engine, token: str) -> int:
    """The account the link signs in; marks it used. Raises Unauthenticated when unknown,
    used or expired."""
    at = now()
    with engine.begin() as conn:
        row = conn.execute(
            sa.select(sign_in_links).where(sign_in_links.c.token_hash == digest(token))
        ).first()
        if row is None or row.used_at is not None or aware(row.expires_at) < at:
            raise Unauthenticated(
                "This sign-in link is not valid any more: links work once, for an hour. "
                "Ask your admin for a new one."
            )
        conn.execute(
            sign_in_links.update()
            .where(sign_in_links.c.token_hash == row.token_hash, sign_in_links.c.used_at.is_(None))
            .values(used_at=at)
        )
    return int(row.user_id)


# Resolving the caller of a request --------------------------------------------------------


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def authenticate(request: Request) -> Principal:
    """The principal of a request, from its Bearer token or its session cookie. A cookie-borne
    unsafe request must carry the session's CSRF token (form field or header).

    It is async because it may read the form; its database reads run in the thread pool so that
    they never hold up the event loop that serves every other request."""
    engine: sa.Engine = request.app.state.engine
    header = request.headers.get("authorization", "")
    user_id: int | None = None
    if header.lower().startswith("bearer "):
        user_id = await run_in_threadpool(token_user, engine, header[7:].strip())
        if user_id is None:
            raise Unauthenticated("The API token is unknown or revoked.")
    else:
        cookie = request.cookies.get(SESSION_COOKIE)
        found = await run_in_threadpool(session_user, engine, cookie) if cookie else None
        if found is None:
            raise Unauthenticated("Sign in first.")
        user_id, csrf = found
        request.state.csrf_token = csrf
        if request.method in UNSAFE_METHODS:
            given = request.headers.get("x-csrf-token")
            if not given and request.headers.get("content-type", "").startswith(
                ("application/x-www-form-urlencoded", "multipart/form-data")
            ):
                form = await request.form()
                value = form.get("csrf_token")
                given = value if isinstance(value, str) else None
            if not same(given, csrf):
                raise Forbidden(
                    "The form was out of date (its security token did not match). "
                    "Reload the page and try again."
                )
    found_principal = await run_in_threadpool(_principal, engine, user_id)
    if found_principal is None:
        raise Unauthenticated("The account is disabled.")
    request.state.principal = found_principal
    return found_principal


def _principal(engine: sa.Engine, user_id: int) -> Principal | None:
    with engine.connect() as conn:
        return accounts.principal(conn, user_id)


def validate_password_form(email: str, password: str) -> None:
    if not email.strip() or not password:
        raise ConfigError("Enter your email and password.")
