"""The browser extension's access: per-district keys (only their hash is stored) and a rate
limit per key.

The limit is a token bucket per key in this process: several web processes each keep their own,
so the effective limit is per process (docs/web.md).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from rostersync.errors import NotFound
from rostersync.store.schema import extension_keys
from rostersync.web.auth import Throttled, digest
from rostersync.web.policy import Unauthenticated

logger = logging.getLogger(__name__)

KEY_PREFIX = "rsx_"


def create_key(
    conn: sa.Connection, district_id: int, name: str, created_by: str | None
) -> tuple[int, str]:
    """A new key: its id and the key itself, shown once and never stored."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    result = conn.execute(
        extension_keys.insert().values(
            district_id=district_id,
            name=name.strip() or "extension",
            key_hash=digest(key),
            prefix=key[:10],
            created_by=created_by,
            created_at=datetime.now(UTC),
        )
    )
    inserted = result.inserted_primary_key
    assert inserted is not None
    logger.info("Extension key %s created for district %s.", inserted[0], district_id)
    return int(inserted[0]), key


def revoke_key(conn: sa.Connection, district_id: int, key_id: int) -> None:
    done = conn.execute(
        extension_keys.update()
        .where(
            extension_keys.c.id == key_id,
            extension_keys.c.district_id == district_id,
            extension_keys.c.revoked_at.is_(None),
        )
        .values(revoked_at=datetime.now(UTC))
    )
    if not done.rowcount:
        raise NotFound(f"There is no active extension key {key_id}.")
    logger.info("Extension key %s revoked.", key_id)


def list_keys(conn: sa.Connection, district_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        sa.select(
            extension_keys.c.id,
            extension_keys.c.name,
            extension_keys.c.prefix,
            extension_keys.c.created_by,
            extension_keys.c.created_at,
            extension_keys.c.last_used_at,
            extension_keys.c.revoked_at,
        )
        .where(extension_keys.c.district_id == district_id)
        .order_by(extension_keys.c.id)
    )
    return [dict(r._mapping) for r in rows]


@dataclass(frozen=True)
class KeyHolder:
    key_id: int
    district_id: int


def verify(engine: sa.Engine, key: str | None) -> KeyHolder:
    if not key:
        raise Unauthenticated("Send the district's extension key in the X-Extension-Key header.")
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(extension_keys.c.id, extension_keys.c.district_id).where(
                extension_keys.c.key_hash == digest(key.strip()),
                extension_keys.c.revoked_at.is_(None),
            )
        ).first()
    if row is None:
        raise Unauthenticated("The extension key is unknown or revoked.")
    return KeyHolder(int(row.id), int(row.district_id))


class RateLimiter:
    """A token bucket per key: ``rate`` requests a second on average, ``burst`` at once."""

    # TODO(rate-limit): the buckets live in this process; several web processes each allow the
    # full rate. A shared limit needs a counter in the store or a shared cache.

    def __init__(self, rate: float = 10.0, burst: float = 120.0) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[int, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key_id: int) -> None:
        """Spend one request of the key's bucket, or raise Throttled with the wait."""
        at = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key_id, (self.burst, at))
            tokens = min(self.burst, tokens + (at - last) * self.rate)
            if tokens < 1:
                self._buckets[key_id] = (tokens, at)
                wait = (1 - tokens) / self.rate
                raise Throttled(
                    "Too many requests with this extension key; slow down.", 1 + int(wait)
                )
            self._buckets[key_id] = (tokens - 1, at)
