"""Stage: tidy a feed's frames, drop exact duplicates, and hash each record's content.

The content hash lets the diff compare millions of records against the last snapshot by one
integer each. It is computed with polars' row hash, whose values may change between polars
releases; the diff treats a changed hash only as a *candidate* change and the resolve stage
compares real values, so an upgrade costs time once but never produces false changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from rostersync.domain.feed import CONTENT_COLUMNS, ENTITIES, LINE, SCHEMAS, Entity, Feed
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
    joined = pl.concat_str(
        [pl.col(c).fill_null("\u2400") for c in columns], separator="\u241f"
    )
    return joined.hash(HASH_SEED).reinterpret(signed=True).alias("hash")


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
        frame = _tidy(entity, feed.frame(entity))
        if LINE not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=pl.Int64).alias(LINE))
        file = feed.files.get(entity)

        missing = frame.filter(pl.col("ext_id").is_null())
        for line in missing[LINE].head(20).to_list():
            problems.append(
                Problem(f"a {entity} record has no id.", file=file, line=line,
                        fix="Give every record its id, or remove the row.")
            )
        frame = frame.filter(pl.col("ext_id").is_not_null())

        before = frame.height
        frame = frame.unique(subset=list(SCHEMAS[entity]), keep="first", maintain_order=True)
        if frame.height < before:
            warnings.append(
                Problem(f"{before - frame.height} exact duplicate {entity} record(s) ignored.",
                        file=file)
            )

        clashes = frame.filter(pl.col("ext_id").is_duplicated())
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
                        file=file, record_id=ext_id,
                        fix="Keep one row per id.",
                    )
                )
            frame = frame.unique(subset=["ext_id"], keep="first", maintain_order=True)

        if entity == "enrollment":
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
