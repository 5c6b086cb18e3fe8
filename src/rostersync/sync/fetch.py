"""Fetch: build a source's connector and read its feed, limit it to the schools and sections the
admin chose, and pack and unpack a feed for a held run."""

from __future__ import annotations

import io
import json
import logging
import zipfile
from collections.abc import Mapping
from typing import Any, cast

import polars as pl

from rostersync.domain.feed import ENTITIES, Entity, Feed, Mode
from rostersync.errors import Problem, RosterError, SourceError
from rostersync.sources import base

logger = logging.getLogger(__name__)


def fetch(kind: str, config: Mapping[str, Any], context: base.FetchContext) -> Feed:
    """Read the source; anything but a RosterError becomes a SourceError naming the source."""
    source = base.build(kind, {k: str(v) for k, v in config.items()})
    try:
        return source.fetch(context)
    except RosterError:
        raise
    except OSError as exc:
        raise SourceError(f"The source could not be read: {exc}.") from exc


def _choices(value: Any) -> list[str]:
    if not value:
        return []
    items = value if isinstance(value, list | tuple) else str(value).replace(";", ",").split(",")
    return [str(item).strip() for item in items if str(item).strip()]


def limit_scope(feed: Feed, config: Mapping[str, Any]) -> Feed:
    """Keep only the schools and sections named in the source's ``schools`` and ``sections``
    settings (each a comma-separated list of the source's ids or names; empty means all).

    Every source kind honours them, so the choice lives here rather than in each connector.
    Sections of other schools, their enrollments, and people enrolled in none of the kept
    sections (and not belonging to a kept school) are dropped. A delta feed's deletions are kept:
    they only touch records the snapshot holds, which were in scope when synced. A name that
    matches nothing is reported as a warning, since a typo would otherwise empty the sync.
    """
    schools = _choices(config.get("schools"))
    chosen_sections = _choices(config.get("sections"))
    if not schools and not chosen_sections:
        return feed
    frames = dict(feed.frames)
    name_key = pl.col("name").str.strip_chars().str.to_lowercase()
    kept_schools: list[str] = []
    if schools:
        wanted = [s.lower() for s in schools]
        school = frames["school"].filter(pl.col("ext_id").is_in(schools) | name_key.is_in(wanted))
        found = set(school["ext_id"].to_list()) | {n.lower() for n in school["name"].drop_nulls()}
        for choice in schools:
            if choice not in found and choice.lower() not in found:
                feed.warnings.append(
                    Problem(
                        f"the school {choice!r} chosen for this source is not in its feed.",
                        fix="Check the spelling in the source's settings, or clear the choice.",
                    )
                )
        frames["school"] = school
        # Ids named directly also count in a delta feed that does not list the school again.
        kept_schools = sorted(set(school["ext_id"].to_list()) | set(schools))
        frames["section"] = frames["section"].filter(pl.col("school_ext_id").is_in(kept_schools))
    if chosen_sections:
        wanted = [s.lower() for s in chosen_sections]
        before = frames["section"]
        frames["section"] = before.filter(
            pl.col("ext_id").is_in(chosen_sections) | name_key.is_in(wanted)
        )
        if frames["section"].height == 0 and before.height:
            feed.warnings.append(
                Problem(
                    "none of the sections chosen for this source is in its feed.",
                    fix="Check the section ids or names in the source's settings.",
                )
            )
    sections = frames["section"]["ext_id"]
    enrollment = frames["enrollment"].filter(pl.col("section_ext_id").is_in(sections.implode()))
    frames["enrollment"] = enrollment
    enrolled = pl.col("ext_id").is_in(enrollment["person_ext_id"].implode())
    if kept_schools:
        enrolled = enrolled | pl.col("school_ext_id").is_in(kept_schools)
    frames["person"] = frames["person"].filter(enrolled)
    feed.frames = frames
    return feed


def pack(feed: Feed) -> bytes:
    """The feed as one zip of Parquet frames, so a held run applies exactly what it fetched."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        meta = {
            "mode": feed.mode,
            "modes": feed.modes,
            "deleted": feed.deleted,
            "warnings": [w.as_dict() for w in feed.warnings],
            "truncated": feed.truncated,
            "origin": feed.origin,
            "files": feed.files,
        }
        archive.writestr("feed.json", json.dumps(meta))
        for entity in ENTITIES:
            part = io.BytesIO()
            feed.frame(entity).write_parquet(part, compression="zstd")
            archive.writestr(f"{entity}.parquet", part.getvalue())
    return buffer.getvalue()


def unpack(data: bytes) -> Feed:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        meta = json.loads(archive.read("feed.json"))
        frames = {
            entity: pl.read_parquet(io.BytesIO(archive.read(f"{entity}.parquet")))
            for entity in ENTITIES
        }
    return Feed(
        mode=meta["mode"],
        frames=frames,
        modes=cast(dict[Entity, Mode], meta["modes"]),
        deleted=meta["deleted"],
        warnings=[Problem(**w) for w in meta["warnings"]],
        truncated=meta["truncated"],
        origin=meta["origin"],
        files=meta["files"],
    )
