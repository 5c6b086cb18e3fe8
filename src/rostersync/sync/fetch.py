"""Fetch: build a source's connector and read its feed; pack and unpack a feed for a held run."""

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
