"""Operations on the roster service that the CLI (and the web app and jobs) call.

Each function opens its own transactions on the engine it is given; none holds state.
"""

from __future__ import annotations

import csv
import logging
import zoneinfo
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:
    from rostersync.sources import google_api

from rostersync import secrets
from rostersync.domain.oneroster import HEADERS
from rostersync.errors import ConfigError, NotFound, RosterError
from rostersync.sources import base
from rostersync.store import bulk, db
from rostersync.store.schema import (
    changes,
    districts,
    enrollments,
    id_map,
    people,
    runs,
    schools,
    sections,
    sightings,
    sources,
    terms,
)

logger = logging.getLogger(__name__)


def open_store(url: str | None = None, *, migrate: bool = True) -> sa.Engine:
    """An engine on the configured database, its schema brought up to date."""
    engine = db.make_engine(url)
    if migrate:
        db.migrate(engine)
    return engine


# Districts ----------------------------------------------------------------------------------


def add_district(engine: sa.Engine, name: str, timezone: str = "UTC") -> int:
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"Unknown time zone {timezone!r}; use a name such as America/New_York."
        ) from None
    with engine.begin() as conn:
        if conn.execute(sa.select(districts.c.id).where(districts.c.name == name)).first():
            raise ConfigError(f"A district named {name!r} already exists.")
        result = conn.execute(
            districts.insert().values(name=name, timezone=timezone, created_at=datetime.now(UTC))
        )
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])


def district_id(conn: sa.Connection, name: str) -> int:
    found = conn.execute(sa.select(districts.c.id).where(districts.c.name == name)).scalar()
    if found is None:
        raise NotFound(
            f"There is no district named {name!r}. Add it with `rostersync district add`."
        )
    return int(found)


def set_district(engine: sa.Engine, name: str, **settings: Any) -> None:
    allowed = {"authoritative", "allow_groups", "safety_share", "safety_floor", "timezone"}
    unknown = set(settings) - allowed
    if unknown:
        raise ConfigError(f"Unknown district setting(s): {', '.join(sorted(unknown))}.")
    with engine.begin() as conn:
        ident = district_id(conn, name)
        conn.execute(districts.update().where(districts.c.id == ident).values(**settings))


def list_districts(engine: sa.Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(districts).order_by("id"))]


# Sources ------------------------------------------------------------------------------------


def _seal(engine: sa.Engine, config: Mapping[str, str]) -> dict[str, str]:
    """The settings as stored: secret ones encrypted (the key is only needed when there are)."""
    if not any(secrets.is_secret(k) and v for k, v in config.items()):
        return dict(config)
    return secrets.keyring(engine.url).encrypt(config)


def reveal(engine: sa.Engine, config: Mapping[str, Any]) -> dict[str, str]:
    """A source's stored settings in clear, to build its connector; never store the result."""
    if not secrets.has_secrets(config):
        return {k: str(v) for k, v in config.items()}
    return secrets.keyring(engine.url).decrypt(config)


def add_source(
    engine: sa.Engine, name: str, district: str, kind: str, config: Mapping[str, str]
) -> int:
    """Add a source. A setting naming a key file (``credentials``) is read now, and secret
    settings are stored encrypted."""
    config = secrets.read_files(config)
    base.build(kind, config)  # validates the kind and its settings
    config = _seal(engine, config)
    with engine.begin() as conn:
        ident = district_id(conn, district)
        if conn.execute(sa.select(sources.c.id).where(sources.c.name == name)).first():
            raise ConfigError(f"A source named {name!r} already exists.")
        result = conn.execute(
            sources.insert().values(
                district_id=ident,
                name=name,
                kind=kind,
                config=dict(config),
                created_at=datetime.now(UTC),
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])


def update_source(engine: sa.Engine, name: str, config: Mapping[str, str]) -> None:
    with engine.begin() as conn:
        row = conn.execute(sa.select(sources).where(sources.c.name == name)).first()
        if row is None:
            raise NotFound(f"There is no source named {name!r}.")
        merged = {**reveal(engine, row.config or {}), **secrets.read_files(config)}
        base.build(row.kind, merged)
        conn.execute(
            sources.update().where(sources.c.id == row.id).values(config=_seal(engine, merged))
        )


def _source_row(engine: sa.Engine, name: str) -> Any:
    with engine.connect() as conn:
        row = conn.execute(sa.select(sources).where(sources.c.name == name)).first()
    if row is None:
        raise NotFound(f"There is no source named {name!r}. `rostersync source list` shows them.")
    return row


def check_source(engine: sa.Engine, name: str) -> list[dict[str, object]]:
    """Try a source's connection without syncing: each check says ok, or what to fix."""
    row = _source_row(engine, name)
    try:
        connector = base.build(row.kind, reveal(engine, row.config or {}))
    except RosterError as exc:
        return [base.Check("settings", False, str(exc)).as_dict()]
    check = getattr(connector, "check", None)
    if check is None:
        try:
            counts = connector.fetch(base.FetchContext()).counts()
        except RosterError as exc:
            return [base.Check("read", False, str(exc)).as_dict()]
        return [base.Check("read", True, f"Read {counts['person']} people.").as_dict()]
    return [c.as_dict() for c in check()]


def _oauth_client(engine: sa.Engine, name: str) -> tuple[Any, google_api.OAuthClient]:
    from rostersync.sources import google_api

    row = _source_row(engine, name)
    config = reveal(engine, row.config or {})
    key = google_api.parse_credentials(config.get("credentials") or "{}")
    if not isinstance(key, google_api.OAuthClient):
        raise ConfigError(
            f"The source {name!r} uses a service account, which needs no consent step. Consent "
            "is for sources whose credentials are an OAuth client."
        )
    return config, key


def google_consent_url(
    engine: sa.Engine, name: str, redirect_uri: str, *, push: bool = False
) -> str:
    """The address where an admin grants a Google source read-only access (and, with
    ``push``, the right to register Classroom push notifications)."""
    from rostersync.sources import google_api

    config, key = _oauth_client(engine, name)
    endpoints = google_api.Endpoints.from_setting(config.get("api_endpoint") or None)
    scopes: tuple[str, ...] = (
        google_api.SHEETS_SCOPES if config.get("sheet") else google_api.CLASSROOM_SCOPES
    )
    if push:
        scopes = (*google_api.CLASSROOM_SCOPES, google_api.PUSH_SCOPE)
    return google_api.consent_url(key, endpoints, scopes, redirect_uri)


def complete_google_consent(engine: sa.Engine, name: str, code: str, redirect_uri: str) -> None:
    """Trade the consent code for a refresh token and store it (encrypted) on the source."""
    from rostersync.sources import google_api

    config, key = _oauth_client(engine, name)
    endpoints = google_api.Endpoints.from_setting(config.get("api_endpoint") or None)
    token = google_api.exchange_code(key, endpoints, code, redirect_uri)
    update_source(engine, name, {"refresh_token": token})
    logger.info("Stored the administrator's consent for source %s.", name)


def list_sources(engine: sa.Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(sources, districts.c.name.label("district"))
            .join(districts, districts.c.id == sources.c.district_id)
            .order_by(sources.c.id)
        )
        out = []
        for row in rows:
            item = dict(row._mapping)
            item["config"] = secrets.mask(item["config"] or {})
            out.append(item)
        return out


def list_runs(engine: sa.Engine, source: str, limit: int = 50) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        ident = conn.execute(sa.select(sources.c.id).where(sources.c.name == source)).scalar()
        if ident is None:
            raise NotFound(f"There is no source named {source!r}.")
        rows = conn.execute(
            sa.select(runs).where(runs.c.source_id == ident).order_by(runs.c.id.desc()).limit(limit)
        )
        return [dict(r._mapping) for r in rows]


def run_changes(
    engine: sa.Engine, run_id: int, entity: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        query = sa.select(changes).where(changes.c.run_id == run_id)
        if entity:
            query = query.where(changes.c.entity == entity)
        return [dict(r._mapping) for r in conn.execute(query.order_by(changes.c.id).limit(limit))]


# Sightings ----------------------------------------------------------------------------------


def record_sighting(
    engine: sa.Engine,
    district: str,
    *,
    email: str | None = None,
    google_id: str | None = None,
    name: str | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Record that the extension saw a student.

    Links the sighting to the person with that email or Google account id; when there is none,
    creates a *pending* student whom a later roster sync attaches. Idempotent: repeating a
    sighting never creates a second person.
    """
    email = email.strip().lower() if email else None
    google_id = google_id.strip() if google_id else None
    if not email and not google_id:
        raise ConfigError("A sighting needs the student's email or Google account id.")
    if email and ("@" not in email or email.startswith("@") or email.endswith("@")):
        raise ConfigError(f"{email!r} is not an email address.")
    now = datetime.now(UTC)
    with engine.begin() as conn:
        ident = district_id(conn, district)
        if conn.dialect.name == "postgresql":
            # Two sightings of one new student at once must not make two pending people: hold
            # a lock per (district, id) across the look-up and the insert. (SQLite's write
            # transactions already run one at a time.)
            for key in sorted(v for v in (email, google_id) if v):
                conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:d, hashtext(:k))"),
                    {"d": 7462_0000 + ident, "k": key},
                )
        person_id = None
        for namespace, value in (("google", google_id), ("email", email)):
            if value and person_id is None:
                person_id = conn.execute(
                    sa.select(id_map.c.canonical_id).where(
                        id_map.c.district_id == ident,
                        id_map.c.entity == "person",
                        id_map.c.namespace == namespace,
                        id_map.c.external_id == value,
                    )
                ).scalar()
        created = False
        if person_id is None:
            person_id = int(bulk.allocate_ids(conn, "people", 1)[0])
            given, _, family = (name or "").strip().rpartition(" ")
            if not given:
                given, family = family, ""
            conn.execute(
                people.insert().values(
                    id=person_id,
                    district_id=ident,
                    role="student",
                    email=email,
                    given_name=given or None,
                    family_name=family or None,
                    google_id=google_id,
                    status="pending",
                    created_at=now,
                    updated_at=now,
                )
            )
            created = True
        for namespace, value in (("google", google_id), ("email", email)):
            if (
                value
                and conn.execute(
                    sa.select(id_map.c.canonical_id).where(
                        id_map.c.district_id == ident,
                        id_map.c.entity == "person",
                        id_map.c.namespace == namespace,
                        id_map.c.external_id == value,
                    )
                ).first()
                is None
            ):
                conn.execute(
                    id_map.insert().values(
                        district_id=ident,
                        entity="person",
                        namespace=namespace,
                        external_id=value,
                        canonical_id=person_id,
                    )
                )
        conn.execute(
            sightings.insert().values(
                district_id=ident,
                person_id=person_id,
                email=email,
                google_id=google_id,
                name=name,
                device=device,
                seen_at=now,
            )
        )
        status = conn.execute(
            sa.select(people.c.status).where(people.c.id == person_id)
        ).scalar_one()
    logger.info("Sighting recorded for person %s (%s).", person_id, status)
    return {
        "person": person_id,
        "status": "matched" if status == "active" else str(status),
        "created": created,
    }


# Export -------------------------------------------------------------------------------------

EXPORT_FILES = (
    "orgs",
    "academicSessions",
    "courses",
    "classes",
    "users",
    "enrollments",
    "demographics",
)


def export_oneroster(engine: sa.Engine, district: str, out: Path) -> dict[str, int]:
    """Write the district's current roster as a OneRoster 1.1 CSV bulk export.

    Canonical ids are the sourcedIds; only active records are written.
    """
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    with engine.connect() as conn:
        ident = district_id(conn, district)
        district_name = conn.execute(
            sa.select(districts.c.name).where(districts.c.id == ident)
        ).scalar_one()

        def write(name: str, header: list[str], rows: Any) -> None:
            count = 0
            with (out / f"{name}.csv").open("w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(header)
                for row in rows:
                    writer.writerow(["" if v is None else v for v in row])
                    count += 1
            counts[name] = count

        dist_id = f"d{ident}"
        write(
            "orgs",
            HEADERS["orgs"],
            [(dist_id, "", "", district_name, "district", "", "")]
            + [
                (f"s{r.id}", "", "", r.name, "school", r.sis_id, dist_id)
                for r in conn.execute(
                    sa.select(schools)
                    .where(schools.c.district_id == ident, schools.c.status == "active")
                    .order_by("id")
                )
            ],
        )
        write(
            "academicSessions",
            HEADERS["academicSessions"],
            (
                (f"t{r.id}", "", "", r.name, "term", r.start_date, r.end_date, "", r.school_year)
                for r in conn.execute(
                    sa.select(terms)
                    .where(terms.c.district_id == ident, terms.c.status == "active")
                    .order_by("id")
                )
            ),
        )
        section_rows = conn.execute(
            sa.select(sections)
            .where(sections.c.district_id == ident, sections.c.status == "active")
            .order_by("id")
        ).all()
        write(
            "courses",
            HEADERS["courses"],
            (
                (
                    f"c{r.id}",
                    "",
                    "",
                    "",
                    r.course or r.name,
                    "",
                    "",
                    f"s{r.school_id}" if r.school_id else dist_id,
                    "",
                    "",
                )
                for r in section_rows
            ),
        )
        write(
            "classes",
            HEADERS["classes"],
            (
                (
                    f"k{r.id}",
                    "",
                    "",
                    r.name,
                    "",
                    f"c{r.id}",
                    "",
                    "scheduled",
                    r.room,
                    f"s{r.school_id}" if r.school_id else "",
                    f"t{r.term_id}" if r.term_id else "",
                    "",
                    "",
                    r.period,
                )
                for r in section_rows
            ),
        )
        role_names = {"student": "student", "teacher": "teacher", "admin": "administrator"}
        write(
            "users",
            HEADERS["users"],
            (
                (
                    f"p{r.id}",
                    "",
                    "",
                    "true",
                    f"s{r.school_id}" if r.school_id else dist_id,
                    role_names.get(r.role, r.role),
                    r.email or "",
                    "{StateID:" + r.state_id + "}" if r.state_id else "",
                    r.given_name,
                    r.family_name,
                    "",
                    r.sis_id,
                    r.email,
                    "",
                    "",
                    "",
                    r.grade,
                    "",
                )
                for r in conn.execute(
                    sa.select(people)
                    .where(people.c.district_id == ident, people.c.status == "active")
                    .order_by("id")
                )
            ),
        )
        active_people = sa.select(people.c.id).where(
            people.c.district_id == ident, people.c.status == "active"
        )
        write(
            "enrollments",
            HEADERS["enrollments"],
            (
                (
                    f"e{r.id}",
                    "",
                    "",
                    f"k{r.section_id}",
                    f"s{r.school_id}" if r.school_id else "",
                    f"p{r.person_id}",
                    "student" if r.role == "student" else "teacher",
                    "true" if r.role == "owner" else "false",
                    r.start_at.date().isoformat() if isinstance(r.start_at, datetime) else "",
                    "",
                )
                for r in conn.execute(
                    sa.select(enrollments, sections.c.school_id)
                    .join(sections, sections.c.id == enrollments.c.section_id)
                    .where(
                        sections.c.district_id == ident,
                        sections.c.status == "active",
                        enrollments.c.end_at.is_(None),
                        enrollments.c.person_id.in_(active_people),
                    )
                    .order_by(enrollments.c.id)
                )
            ),
        )
    with (out / "manifest.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["propertyName", "value"])
        writer.writerow(["manifest.version", "1.0"])
        writer.writerow(["oneroster.version", "1.1"])
        for name in EXPORT_FILES:
            writer.writerow([f"file.{name}", "bulk" if name in counts else "absent"])
        writer.writerow(["file.lineItems", "absent"])
        writer.writerow(["file.categories", "absent"])
        writer.writerow(["file.results", "absent"])
        writer.writerow(["source.systemName", "ClassPilot roster service"])
    return counts
