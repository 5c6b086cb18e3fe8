"""Accounts of the web app: district admins, school admins and teachers.

A teacher's account is linked to the synced teacher person by email, looked up on every request,
so an account made before the roster names the teacher starts working when a sync brings them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from rostersync.errors import ConfigError, NotFound
from rostersync.service import district_id
from rostersync.store.schema import people, schools, user_schools, users
from rostersync.web.policy import ROLES, Principal, Role

logger = logging.getLogger(__name__)

_hasher = PasswordHasher()
#: A hash to verify against when the email is unknown, so a wrong email costs as long as a
#: wrong password and timing does not tell which accounts exist.
_DUMMY_HASH = _hasher.hash("not a password")
MIN_PASSWORD = 10


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    if "@" not in email or email.startswith("@") or email.endswith("@"):
        raise ConfigError(f"{email!r} is not an email address.")
    return email


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"A password needs at least {MIN_PASSWORD} characters.")
    return _hasher.hash(password)


def verify_password(engine: sa.Engine, user_id: int | None, stored: str | None, given: str) -> bool:
    """Check a password against its argon2 hash, re-hashing it when the parameters moved on."""
    try:
        _hasher.verify(stored or _DUMMY_HASH, given)
    except (VerificationError, InvalidHashError):
        return False
    if stored is None or user_id is None:
        return False
    if _hasher.check_needs_rehash(stored):
        with engine.begin() as conn:
            conn.execute(
                users.update()
                .where(users.c.id == user_id)
                .values(password_hash=_hasher.hash(given))
            )
    return True


def add_user(
    engine: sa.Engine,
    email: str,
    district: str,
    role: str,
    *,
    schools_named: Sequence[str] = (),
    password: str | None = None,
) -> int:
    """Create an account; a school admin needs at least one school of the district."""
    email = normalise_email(email)
    if role not in ROLES:
        raise ConfigError(f"Unknown role {role!r}: use {', '.join(ROLES)}.")
    if role == "school-admin" and not schools_named:
        raise ConfigError("A school admin needs at least one --school.")
    if role != "school-admin" and schools_named:
        raise ConfigError("Only a school admin has schools.")
    password_hash = hash_password(password) if password else None
    with engine.begin() as conn:
        ident = district_id(conn, district)
        if conn.execute(sa.select(users.c.id).where(users.c.email == email)).first():
            raise ConfigError(f"There is already an account for {email}.")
        school_ids = []
        for name in schools_named:
            found = conn.execute(
                sa.select(schools.c.id).where(
                    schools.c.district_id == ident,
                    sa.or_(schools.c.name == name, schools.c.sis_id == name),
                )
            ).scalar()
            if found is None:
                raise NotFound(
                    f"District {district!r} has no school named {name!r}; sync its roster first."
                )
            school_ids.append(int(found))
        result = conn.execute(
            users.insert().values(
                district_id=ident,
                email=email,
                role=role,
                password_hash=password_hash,
                created_at=datetime.now(UTC),
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        user_id = int(key[0])
        for school_id in school_ids:
            conn.execute(user_schools.insert().values(user_id=user_id, school_id=school_id))
    logger.info("Account %s added (%s).", user_id, role)
    return user_id


def set_password(engine: sa.Engine, email: str, password: str) -> None:
    hashed = hash_password(password)
    with engine.begin() as conn:
        done = conn.execute(
            users.update()
            .where(users.c.email == normalise_email(email))
            .values(password_hash=hashed)
        )
        if not done.rowcount:
            raise NotFound(f"There is no account for {email}.")


def find_user(conn: sa.Connection, email: str) -> Any:
    return conn.execute(
        sa.select(users).where(
            users.c.email == email.strip().lower(), users.c.disabled_at.is_(None)
        )
    ).first()


def user_id_by_email(engine: sa.Engine, email: str) -> int:
    with engine.connect() as conn:
        row = find_user(conn, email)
    if row is None:
        raise NotFound(f"There is no account for {email}. Add one with `rostersync user add`.")
    return int(row.id)


def principal(conn: sa.Connection, user_id: int) -> Principal | None:
    """The principal of an enabled account, or None."""
    row = conn.execute(
        sa.select(users).where(users.c.id == user_id, users.c.disabled_at.is_(None))
    ).first()
    if row is None:
        return None
    school_ids = frozenset(
        int(s)
        for s in conn.execute(
            sa.select(user_schools.c.school_id).where(user_schools.c.user_id == user_id)
        ).scalars()
    )
    person_id = None
    if row.role == "teacher":
        found = conn.execute(
            sa.select(people.c.id)
            .where(
                people.c.district_id == row.district_id,
                people.c.email == row.email,
                people.c.role == "teacher",
                people.c.status == "active",
            )
            .order_by(people.c.id)
            .limit(1)
        ).scalar()
        person_id = None if found is None else int(found)
    return Principal(
        user_id=int(row.id),
        email=str(row.email),
        district_id=int(row.district_id),
        role=cast(Role, row.role),
        school_ids=school_ids,
        person_id=person_id,
    )


def list_users(conn: sa.Connection, principal: Principal) -> list[dict[str, Any]]:
    """The accounts the principal may manage (policy.user_scope)."""
    from rostersync.web import policy

    policy.require_admin(principal)
    rows = conn.execute(
        sa.select(users.c.id, users.c.email, users.c.role, users.c.created_at, users.c.disabled_at)
        .where(policy.user_scope(principal))
        .order_by(users.c.role, users.c.email)
    )
    return [dict(r._mapping) for r in rows]
