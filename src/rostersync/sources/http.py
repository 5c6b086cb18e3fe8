"""HTTP helpers shared by the connectors that read over the network."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime

import httpx


def retry_after(response: httpx.Response) -> float | None:
    """Seconds asked by a ``Retry-After`` header (delta seconds or an HTTP date), or None."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
