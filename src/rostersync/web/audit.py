"""The audit log of admin actions: who did what, when, to what."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from rostersync.store.schema import audit_log
from rostersync.web.policy import Principal, require_admin


def record(
    conn: sa.Connection,
    principal: Principal,
    action: str,
    target: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Write one entry, in the caller's transaction when the change is ours."""
    conn.execute(
        audit_log.insert().values(
            district_id=principal.district_id,
            user_id=principal.user_id,
            actor=principal.email,
            action=action,
            target=target,
            details=details or {},
            at=datetime.now(UTC),
        )
    )


def entries(
    engine: sa.Engine, principal: Principal, *, limit: int = 200, action: str | None = None
) -> list[dict[str, Any]]:
    require_admin(principal)
    query = sa.select(audit_log).where(audit_log.c.district_id == principal.district_id)
    if action:
        query = query.where(audit_log.c.action == action)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(audit_log.c.id.desc()).limit(limit))
        return [dict(r._mapping) for r in rows]
