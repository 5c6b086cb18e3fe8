"""Stage: tidy a feed's frames, drop exact duplicates, and hash each record's content.

The content hash lets the diff compare millions of records against the last snapshot by one
integer each. It is computed with polars' row hash, whose values may change between polars
releases; the diff treats a changed hash only as a *candidate* change and the resolve stage
compares real values, so an upgrade costs time once but never produces false changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from rostersync.domain.feed import (
    CONTENT_COLUMNS,
    ENROLLMENT_ROLES,
    ENTITIES,
    LINE,
    PERSON_ROLES,
    SCHEMAS,
    Entity,
    Feed,
)
from rostersync.errors import Problem

HASH_SEED = 0x524F5354


@dataclass
class Staged:
    """A feed after staging: per entity, the records with a ``hash`` column."""

    feed: Feed
    frames: dict[Entity, pl.DataFrame]
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


def content_hash(entity: Entity) -> pl.Expr:
    columns = CONTENT_COLUMNS[entity]
    return pl.struct(columns).hash(HASH_SEED).reinterpret(signed=True).alias("hash")


def digest(frame: pl.DataFrame) -> int:
    """An order-free digest of a staged frame's (external id, content hash) pairs.

    Equal digests mean the same records with the same content, so a sync whose every entity
    has the digest of the last applied run has nothing to do.
    """
    if frame.height == 0:
        return 0
    value = frame.select(
        pl.struct("ext_id", "hash").hash(HASH_SEED).bitwise_xor().reinterpret(signed=True)
    ).item()
    return int(value)


def _check_roles(frame: pl.DataFrame) -> pl.DataFrame:
    """Enrollments: empty ids become missing ones, and roles are lower-cased when a connector
    left them otherwise. (Values are not trimmed: connectors hand over trimmed ids.)"""
    ids = ["ext_id", "section_ext_id", "person_ext_id"]
    # Rewrite a column only when it has an empty value: a rewrite copies millions of strings.
    empty = frame.select([(pl.col(c) == "").any().alias(c) for c in ids]).row(0, named=True)
    if any(empty.values()):
        frame = frame.with_columns(
            [pl.when(pl.col(c) == "").then(None).otherwise(pl.col(c)).alias(c) for c in ids]
        )
    if frame.height and not frame.select(pl.col("role").is_in(ENROLLMENT_ROLES).all()).item():
        return frame.with_columns(pl.col("role").str.strip_chars().str.to_lowercase())
    return frame


ALLOWED_ROLES: dict[Entity, tuple[str, ...]] = {
    "person": PERSON_ROLES,
    "enrollment": ENROLLMENT_ROLES,
}


def _invalid(entity: Entity, frame: pl.DataFrame, file: str | None) -> list[Problem]:
    """Records the engine cannot take: an unknown role, an enrollment without its section or
    person."""
    found: list[Problem] = []
    allowed = ALLOWED_ROLES.get(entity)
    if allowed is not None:
        bad = frame.filter(pl.col("role").is_null() | ~pl.col("role").is_in(allowed))
        for ext_id, role, line in bad.select("ext_id", "role", LINE).head(20).iter_rows():
            found.append(
                Problem(
                    f"the role {role!r} is not one of {', '.join(allowed)}.",
                    file=file,
                    line=line,
                    column="role",
                    record_id=ext_id,
                    fix="Correct the role, or leave the record out.",
                )
            )
    if entity == "enrollment":
        for column in ("section_ext_id", "person_ext_id"):
            bad = frame.filter(pl.col(column).is_null())
            for ext_id, line in bad.select("ext_id", LINE).head(20).iter_rows():
                found.append(
                    Problem(
                        f"the enrollment names no {column.removesuffix('_ext_id')}.",
                        file=file,
                        line=line,
                        column=column.removesuffix("_ext_id"),
                        record_id=ext_id,
                        fix="Give every enrollment its section and person.",
                    )
                )
    return found


def _tidy(entity: Entity, frame: pl.DataFrame) -> pl.DataFrame:
    exprs = []
    for name in SCHEMAS[entity]:
        expr = pl.col(name).str.strip_chars()
        expr = pl.when(expr.str.len_bytes() == 0).then(None).otherwise(expr)
        if name == "email":
            expr = expr.str.to_lowercase()
        if name == "role":
            expr = expr.str.to_lowercase()
        exprs.append(expr.alias(name))
    return frame.with_columns(exprs)


def stage(feed: Feed) -> Staged:
    """Tidy and hash every entity of ``feed``; collect problems that make the feed unusable."""
    staged: dict[Entity, pl.DataFrame] = {}
    problems: list[Problem] = []
    warnings: list[Problem] = list(feed.warnings)
    for entity in ENTITIES:
        frame = feed.frame(entity)
        # Enrollments are the bulk of a feed and carry only ids and a role; connectors hand
        # them over tidy, and only the role is checked below. The rest is tidied here.
        frame = _check_roles(frame) if entity == "enrollment" else _tidy(entity, frame)
        if LINE not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=pl.Int64).alias(LINE))
        file = feed.files.get(entity)

        missing = frame.filter(pl.col("ext_id").is_null())
        for line in missing[LINE].head(20).to_list():
            problems.append(
                Problem(
                    f"a {entity} record has no id.",
                    file=file,
                    line=line,
                    column="id",
                    fix="Give every record its id, or remove the row.",
                )
            )
        if missing.height:
            frame = frame.filter(pl.col("ext_id").is_not_null())
        problems += _invalid(entity, frame, file)

        # Most feeds have no repeated ids at all: one pass finds out, and the costlier search
        # for exact duplicates and clashes runs only when there is something to find.
        # Hashes first: a table of 64-bit integers is far smaller than one of millions of
        # strings; a collision only costs the exact search below.
        repeated = bool(frame.select(pl.col("ext_id").hash().is_duplicated().any()).item())
        before = frame.height
        if repeated:
            frame = frame.unique(subset=list(SCHEMAS[entity]), keep="first", maintain_order=True)
        if frame.height < before:
            warnings.append(
                Problem(
                    f"{before - frame.height} exact duplicate {entity} record(s) ignored.",
                    file=file,
                )
            )

        clashes = frame.filter(pl.col("ext_id").is_duplicated()) if repeated else frame.clear()
        if clashes.height:
            for ext_id, lines in (
                clashes.group_by("ext_id", maintain_order=True)
                .agg(pl.col(LINE))
                .head(20)
                .iter_rows()
            ):
                shown = ", ".join(str(n) for n in lines if n is not None)
                problems.append(
                    Problem(
                        f"the id appears on several rows with different values"
                        f"{' (lines ' + shown + ')' if shown else ''}.",
                        file=file,
                        line=next((n for n in lines if n is not None), None),
                        column="id",
                        record_id=ext_id,
                        fix="Keep one row per id.",
                    )
                )
            frame = frame.unique(subset=["ext_id"], keep="first", maintain_order=True)

        pair = pl.struct("section_ext_id", "person_ext_id")
        if entity == "enrollment" and frame.select(pair.hash().is_duplicated().any()).item():
            before = frame.height
            frame = frame.unique(
                subset=["section_ext_id", "person_ext_id"], keep="first", maintain_order=True
            )
            if frame.height < before:
                warnings.append(
                    Problem(
                        f"{before - frame.height} enrollment(s) repeat a person already enrolled "
                        "in the same section; the first was kept.",
                        file=file,
                    )
                )
        staged[entity] = frame.with_columns(content_hash(entity))
    return Staged(feed=feed, frames=staged, problems=problems, warnings=warnings)
