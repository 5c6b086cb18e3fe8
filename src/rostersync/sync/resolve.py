"""Resolve: give every record a canonical id, turn external references into canonical ones, and
work out exactly what changes in the store.

Identity: a new record is first looked up in the district's id map by this source's id, then by
the other ids it carries — for people SIS id, state id, Google id and normalised email; for
schools SIS id and name — so one person or school arriving from several sources, or a student
the extension saw first, stays one record. A canonical id can be claimed by one record of a
source only; a second claimant gets a fresh id and a warning.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl
import sqlalchemy as sa

from rostersync.domain.feed import LINE, Entity
from rostersync.errors import Problem
from rostersync.store import bulk
from rostersync.store.schema import ENTITY_TABLES
from rostersync.sync.diff import EntityDiff

#: The columns of each canonical table that a source sets.
CANONICAL: dict[Entity, list[str]] = {
    "school": ["name", "sis_id"],
    "term": ["name", "start_date", "end_date", "school_year"],
    "person": [
        "role",
        "email",
        "given_name",
        "family_name",
        "grade",
        "sis_id",
        "state_id",
        "google_id",
        "school_id",
    ],
    "section": ["school_id", "term_id", "name", "course", "period", "room"],
    "enrollment": ["section_id", "person_id", "role"],
}

CANONICAL_TYPES: dict[str, pl.DataType] = {
    "school_id": pl.Int64(),
    "term_id": pl.Int64(),
    "section_id": pl.Int64(),
    "person_id": pl.Int64(),
}

#: (feed column, canonical column, referenced entity, required)
REFERENCES: dict[Entity, list[tuple[str, str, Entity, bool]]] = {
    "school": [],
    "term": [],
    "person": [("school_ext_id", "school_id", "school", False)],
    "section": [
        ("school_ext_id", "school_id", "school", True),
        ("term_ext_id", "term_id", "term", False),
    ],
    "enrollment": [
        ("section_ext_id", "section_id", "section", True),
        ("person_ext_id", "person_id", "person", True),
    ],
}

#: Other ids that identify a record across sources, in the order they are tried.
MATCH_KEYS: dict[Entity, list[tuple[str, str]]] = {
    "school": [("sis", "sis_id"), ("name", "name_key")],
    "term": [],
    "person": [
        ("sis", "sis_id"),
        ("state", "state_id"),
        ("google", "google_id"),
        ("email", "email"),
    ],
    "section": [],
    "enrollment": [],
}

CHANGE_COLUMNS = ["entity", "canonical_id", "action", "before", "after"]
CHANGE_SCHEMA: dict[str, pl.DataType] = {
    "entity": pl.Utf8(),
    "canonical_id": pl.Int64(),
    "action": pl.Utf8(),
    "before": pl.Utf8(),
    "after": pl.Utf8(),
}
ID_MAP_SCHEMA: dict[str, pl.DataType] = {
    "namespace": pl.Utf8(),
    "external_id": pl.Utf8(),
    "canonical_id": pl.Int64(),
}


def source_namespace(source_id: int) -> str:
    return f"source:{source_id}"


@dataclass
class EntityPlan:
    """Everything one run changes for one entity."""

    entity: Entity
    #: canonical rows to insert: ``id`` and the CANONICAL columns
    create: pl.DataFrame
    #: rows to update: ``id``, the CANONICAL columns and ``status``
    update: pl.DataFrame
    #: ids to archive (or, for enrollments, to end)
    remove: pl.Series
    #: the change log rows (CHANGE_SCHEMA) of everything but the creates; see create_changes
    changes: pl.DataFrame
    #: snapshot rows to write (``ext_id``, ``hash``, ``canonical_id``) and ext ids to drop
    snapshot_upsert: pl.DataFrame
    snapshot_delete: pl.Series
    #: id map entries to add (ID_MAP_SCHEMA)
    id_map_add: pl.DataFrame
    #: external id → canonical id after this run, for references of later entities
    mapping: pl.DataFrame
    #: number of active records of this entity the source held before this run
    before_count: int = 0
    warnings: list[Problem] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        found = {"create": self.create.height} if self.create.height else {}
        if self.changes.height:
            grouped = self.changes.group_by("action").len()
            found.update({str(a): int(n) for a, n in grouped.iter_rows()})
        return found

    def create_changes(self, offset: int = 0, length: int | None = None) -> pl.DataFrame:
        """The change rows of the records this plan creates (``changes`` holds the others).

        They are built when written, a slice at a time: on a first import they are most of the
        run's changes, and holding them all as JSON at once would double the run's memory.
        """
        rows = self.create.slice(offset, length)
        return rows.select(
            pl.lit(self.entity).alias("entity"),
            pl.col("id").alias("canonical_id"),
            pl.lit("create").alias("action"),
            pl.lit(None, dtype=pl.Utf8).alias("before"),
            _encode(rows, CANONICAL[self.entity]).alias("after"),
        )

    def all_changes(self) -> pl.DataFrame:
        """Every change row of the plan, creates first."""
        return pl.concat([self.create_changes(), self.changes], how="vertical_relaxed")


@dataclass
class Context:
    """What resolve needs to know about the run."""

    district_id: int
    source_id: int
    authoritative: bool
    now: datetime
    file: dict[Entity, str | None] = field(default_factory=dict)


def _empty_changes() -> pl.DataFrame:
    return pl.DataFrame(schema=CHANGE_SCHEMA)


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def read_current(
    conn: sa.Connection, entity: Entity, ids: pl.Series, extra: list[str] | None = None
) -> pl.DataFrame:
    """The store's current values of the canonical columns (and ``status``) for ``ids``."""
    table = ENTITY_TABLES[entity].name
    columns = CANONICAL[entity] + (extra or [])
    tail = ["end_at", "source_id"] if entity == "enrollment" else ["status"]
    columns = [*columns, *tail]
    schema: dict[str, pl.DataType] = {"id": pl.Int64()}
    for name in columns:
        schema[name] = CANONICAL_TYPES.get(name, pl.Int64() if name == "source_id" else pl.Utf8())
    parts = []
    values = ids.unique().to_list()
    for offset in range(0, len(values), 10_000):
        chunk = values[offset : offset + 10_000]
        marks = ", ".join(str(int(v)) for v in chunk)
        parts.append(
            bulk.read(
                conn,
                f"SELECT id, {', '.join(columns)} FROM {table} WHERE id IN ({marks})",
                {},
                schema,
            )
        )
    if not parts:
        return pl.DataFrame(schema=schema)
    frame = pl.concat(parts)
    if "end_at" in frame.columns:
        frame = frame.with_columns(pl.col("end_at").cast(pl.Utf8))
    return frame


def lookup_ids(
    conn: sa.Connection, district_id: int, entity: Entity, namespace: str, values: pl.Series
) -> pl.DataFrame:
    """Id map entries of ``namespace`` for the given external ids (``external_id``,
    ``canonical_id``)."""
    schema: dict[str, pl.DataType] = {"external_id": pl.Utf8(), "canonical_id": pl.Int64()}
    values = values.drop_nulls().unique()
    if values.len() == 0:
        return pl.DataFrame(schema=schema)
    base = (
        "SELECT external_id, canonical_id FROM id_map WHERE district_id = :d "
        "AND entity = :e AND namespace = :n"
    )
    params = {"d": district_id, "e": entity, "n": namespace}
    if values.len() > 20_000:
        found = bulk.read(conn, base, params, schema)
        return found.join(values.alias("external_id").to_frame(), on="external_id", how="semi")
    parts = []
    items = values.to_list()
    for offset in range(0, len(items), 5_000):
        chunk = items[offset : offset + 5_000]
        names = {f"v{i}": v for i, v in enumerate(chunk)}
        marks = ", ".join(f":{k}" for k in names)
        parts.append(
            bulk.read(conn, f"{base} AND external_id IN ({marks})", {**params, **names}, schema)
        )
    return pl.concat(parts)


def _name_key(frame: pl.DataFrame) -> pl.DataFrame:
    if "name" not in frame.columns:
        return frame
    key = pl.col("name").str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars()
    return frame.with_columns(key.alias("name_key"))


def identify(
    conn: sa.Connection, ctx: Context, entity: Entity, new: pl.DataFrame, held: pl.Series
) -> tuple[pl.DataFrame, list[Problem]]:
    """Add ``canonical_id`` to ``new`` (null where nothing matched) and ``matched_by``.

    ``held`` lists the canonical ids this source's other records already own.
    """
    warnings: list[Problem] = []
    frame = _name_key(new).with_columns(
        pl.lit(None, dtype=pl.Int64).alias("canonical_id"),
        pl.lit(None, dtype=pl.Utf8).alias("matched_by"),
    )
    if frame.height == 0:
        return frame, warnings
    keys = [(source_namespace(ctx.source_id), "ext_id"), *MATCH_KEYS[entity]]
    for namespace, column in keys:
        open_rows = frame.filter(pl.col("canonical_id").is_null())
        if open_rows.height == 0:
            break
        found = lookup_ids(conn, ctx.district_id, entity, namespace, open_rows[column])
        if found.height == 0:
            continue
        found = found.rename({"external_id": column, "canonical_id": "_found"})
        frame = (
            frame.join(found, on=column, how="left", nulls_equal=False)
            .with_columns(
                pl.when(pl.col("canonical_id").is_null() & pl.col("_found").is_not_null())
                .then(pl.lit(namespace))
                .otherwise(pl.col("matched_by"))
                .alias("matched_by"),
                pl.coalesce("canonical_id", "_found").alias("canonical_id"),
            )
            .drop("_found")
        )

    # One canonical record per record of this source.
    taken = pl.col("canonical_id").is_in(held.implode()) | (
        pl.col("canonical_id").is_not_null()
        & pl.col("canonical_id").is_duplicated()
        & ~pl.col("canonical_id").is_first_distinct()
    )
    clashing = frame.filter(taken)
    for ext_id, line, by in clashing.select("ext_id", LINE, "matched_by").head(20).iter_rows():
        warnings.append(
            Problem(
                f"this {entity} shares its {by} with another record of the same source; "
                "it was kept as a separate record.",
                file=ctx.file.get(entity),
                line=line,
                record_id=ext_id,
                fix="Check the two records: they may be one person entered twice.",
            )
        )
    frame = frame.with_columns(
        pl.when(taken).then(None).otherwise(pl.col("canonical_id")).alias("canonical_id"),
        pl.when(taken).then(None).otherwise(pl.col("matched_by")).alias("matched_by"),
    )

    # Records that matched nothing yet share an id with an earlier record of this feed (two
    # students with one email on a first import) also stay separate, and the admin hears of it.
    warned = set(clashing["ext_id"].to_list())
    for namespace, column in MATCH_KEYS[entity]:
        repeats = frame.filter(
            pl.col("canonical_id").is_null()
            & pl.col(column).is_not_null()
            & ~pl.col(column).is_first_distinct()
        )
        for ext_id, line in repeats.select("ext_id", LINE).head(20).iter_rows():
            if ext_id in warned:
                continue
            warned.add(ext_id)
            warnings.append(
                Problem(
                    f"this {entity} shares its {namespace} with another record of the same "
                    "source; it was kept as a separate record.",
                    file=ctx.file.get(entity),
                    line=line,
                    record_id=ext_id,
                    fix="Check the two records: they may be one person entered twice.",
                )
            )
    return frame.drop("name_key", strict=False), warnings


def map_references(
    ctx: Context,
    entity: Entity,
    frame: pl.DataFrame,
    mappings: dict[Entity, pl.DataFrame],
    *,
    check_only: bool = False,
) -> tuple[pl.DataFrame, list[Problem], list[Problem]]:
    """Replace external references by canonical ids; report the ones that point nowhere.

    With ``check_only`` the frame comes back as it was (records the run does not write need
    their references checked, not resolved).
    """
    problems: list[Problem] = []
    warnings: list[Problem] = []
    for column, target, referenced, required in REFERENCES[entity]:
        mapping = mappings[referenced].rename({"ext_id": column, "canonical_id": target})
        if check_only:
            dangling = frame.filter(pl.col(column).is_not_null()).join(
                mapping, on=column, how="anti"
            )
        else:
            # Join only the reference column and add the result: joining the whole frame would
            # copy every column of millions of enrollments, once per reference.
            looked = frame.select(column).join(
                mapping, on=column, how="left", maintain_order="left"
            )
            frame = frame.with_columns(looked[target])
            dangling = frame.filter(pl.col(column).is_not_null() & pl.col(target).is_null())
        if dangling.height == 0:
            continue
        sink = problems if required else warnings
        for ext_id, value, line in dangling.select("ext_id", column, LINE).head(20).iter_rows():
            sink.append(
                Problem(
                    f"unknown {referenced} reference {value!r}"
                    + ("." if required else "; the reference was left empty."),
                    file=ctx.file.get(entity),
                    line=line,
                    column=column.removesuffix("_ext_id"),
                    record_id=ext_id,
                    fix=f"Add the {referenced} to the export or correct the reference.",
                )
            )
        if dangling.height > 20:
            sink.append(
                Problem(
                    f"{dangling.height - 20} more {entity} record(s) have an unknown "
                    f"{referenced} reference.",
                    file=ctx.file.get(entity),
                )
            )
        if required and not check_only:
            frame = frame.filter(pl.col(column).is_null() | pl.col(target).is_not_null())
    return frame, problems, warnings


#: Entities several sources may share: a source that leaves a field empty does not erase what
#: another source (or the extension, for a pending student) put there.
FILL_ONLY: tuple[Entity, ...] = ("school", "term", "person")


def _fill_from_store(
    incoming: pl.DataFrame, current: pl.DataFrame, columns: list[str]
) -> pl.DataFrame:
    cur = current.select("id", *[pl.col(c).alias(f"{c}__store") for c in columns])
    joined = incoming.join(cur, left_on="canonical_id", right_on="id", how="left")
    return joined.with_columns([pl.coalesce(c, f"{c}__store").alias(c) for c in columns]).drop(
        [f"{c}__store" for c in columns]
    )


def _encode(frame: pl.DataFrame, columns: list[str]) -> pl.Expr:
    return pl.struct([pl.col(c) for c in columns]).struct.json_encode()


def _differences(incoming: pl.DataFrame, current: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """Join incoming rows (with ``canonical_id``) to current store rows and keep the ones whose
    columns or status differ; adds ``before`` and ``after`` JSON of what differs."""
    cur = current.rename({c: f"{c}__old" for c in current.columns if c != "id"})
    joined = incoming.join(cur, left_on="canonical_id", right_on="id", how="inner")
    rows = []
    for row in joined.iter_rows(named=True):
        before: dict[str, Any] = {}
        after: dict[str, Any] = {}
        for column in columns:
            if row[column] != row[f"{column}__old"]:
                before[column] = row[f"{column}__old"]
                after[column] = row[column]
        status = row.get("status__old")
        if status is not None and status != "active":
            before["status"] = status
            after["status"] = "active"
        if before or after:
            action = {"pending": "attach", "archived": "restore"}.get(str(status), "update")
            rows.append((row["canonical_id"], action, _json(before), _json(after)))
    return pl.DataFrame(
        rows,
        schema={
            "canonical_id": pl.Int64(),
            "action": pl.Utf8(),
            "before": pl.Utf8(),
            "after": pl.Utf8(),
        },
        orient="row",
    )


def held_elsewhere(conn: sa.Connection, ctx: Context, entity: Entity) -> pl.Series:
    """Canonical ids of ``entity`` that another source of the district still lists."""
    frame = bulk.read(
        conn,
        "SELECT DISTINCT s.canonical_id FROM snapshots s JOIN sources src ON src.id = s.source_id "
        "WHERE src.district_id = :d AND s.source_id <> :s AND s.entity = :e",
        {"d": ctx.district_id, "s": ctx.source_id, "e": entity},
        {"canonical_id": pl.Int64()},
    )
    return frame["canonical_id"]


def plan_entity(
    conn: sa.Connection,
    ctx: Context,
    d: EntityDiff,
    mappings: dict[Entity, pl.DataFrame],
) -> tuple[EntityPlan, list[Problem]]:
    """Turn one entity's diff into the exact writes and change rows of this run."""
    entity = d.entity
    warnings: list[Problem] = []
    problems: list[Problem] = []
    columns = CANONICAL[entity]

    if entity == "enrollment":
        new = d.new.with_columns(
            pl.lit(None, dtype=pl.Int64).alias("canonical_id"),
            pl.lit(None, dtype=pl.Utf8).alias("matched_by"),
        )
    else:
        held = pl.concat([d.changed["canonical_id"], d.unchanged["canonical_id"]])
        new, found_warnings = identify(conn, ctx, entity, d.new, held)
        warnings += found_warnings

    # References of every row are checked, so that a record pointing at something the feed no
    # longer has is reported even when the record itself did not change; only the rows this
    # run writes need their references resolved.
    incoming = new.drop("matched_by")
    if d.changed.height:
        incoming = pl.concat([incoming, d.changed], how="diagonal_relaxed")
    # The diff's copies are not needed any more; on a first import they are the whole feed.
    d.new, d.changed, new = d.new.clear(), d.changed.clear(), new.clear()
    incoming, ref_problems, ref_warnings = map_references(ctx, entity, incoming, mappings)
    problems += ref_problems
    warnings += ref_warnings
    unchanged = d.unchanged
    _, ref_problems, ref_warnings = map_references(
        ctx, entity, unchanged, mappings, check_only=True
    )
    problems += ref_problems
    warnings += ref_warnings
    for target in [r[1] for r in REFERENCES[entity]]:
        incoming = incoming.with_columns(pl.col(target).cast(pl.Int64))

    if entity == "enrollment":
        # Enrollments are written by canonical references only: drop the external ones early.
        incoming = incoming.drop("section_ext_id", "person_ext_id", LINE)
        plan = _plan_enrollments(conn, ctx, d, incoming, unchanged)
        plan.warnings = warnings
        return plan, problems

    # Records that matched an existing canonical record, and changed ones: compare real values.
    existing = incoming.filter(pl.col("canonical_id").is_not_null())
    current = read_current(conn, entity, existing["canonical_id"])
    if entity in FILL_ONLY and existing.height:
        # Only where another source lists the record too, or the extension made it: a record
        # this source alone holds takes the source's values, emptied ones included.
        pending = current.filter(pl.col("status") == "pending")["id"]
        shared = pl.col("canonical_id").is_in(held_elsewhere(conn, ctx, entity).implode()) | (
            pl.col("canonical_id").is_in(pending.implode())
        )
        existing = pl.concat(
            [_fill_from_store(existing.filter(shared), current, columns), existing.filter(~shared)]
        )
    updates = _differences(existing, current, columns)
    update_rows = (
        existing.join(updates.select("canonical_id"), on="canonical_id", how="semi")
        .select(pl.col("canonical_id").alias("id"), *columns)
        .with_columns(pl.lit("active").alias("status"))
        .unique(subset=["id"], keep="first")
    )

    creating = incoming.filter(pl.col("canonical_id").is_null())
    ids = bulk.allocate_ids(conn, ENTITY_TABLES[entity].name, creating.height)
    creating = creating.with_columns(ids.alias("canonical_id"))
    create_rows = creating.select(pl.col("canonical_id").alias("id"), *columns)

    kept = pl.concat([incoming["canonical_id"], unchanged["canonical_id"]]).drop_nulls()
    remove, remove_changes = _removals(conn, ctx, entity, d, kept)

    changes = (
        pl.concat(
            [
                updates,
                remove_changes,
            ],
            how="vertical_relaxed",
        )
        .with_columns(pl.lit(entity).alias("entity"))
        .select(CHANGE_COLUMNS)
    )

    mapping = pl.concat(
        [
            creating.select("ext_id", "canonical_id"),
            incoming.filter(pl.col("canonical_id").is_not_null()).select("ext_id", "canonical_id"),
            unchanged.select("ext_id", "canonical_id"),
        ]
    )
    mapping = _with_untouched(d, mapping)

    touched = pl.concat(
        [
            creating.select("ext_id", "hash", "canonical_id"),
            incoming.filter(pl.col("canonical_id").is_not_null()).select(
                "ext_id", "hash", "canonical_id"
            ),
        ]
    )
    plan = EntityPlan(
        entity=entity,
        create=create_rows,
        update=update_rows,
        remove=remove,
        changes=changes,
        snapshot_upsert=touched,
        snapshot_delete=_snapshot_drops(d, touched),
        id_map_add=_id_map_entries(
            conn,
            ctx,
            entity,
            touched.join(
                pl.concat(
                    [creating, incoming.filter(pl.col("canonical_id").is_not_null())],
                    how="diagonal_relaxed",
                ).drop("hash", "canonical_id"),
                on="ext_id",
                how="left",
            ),
        ),
        mapping=mapping,
        before_count=d.snapshot.height,
        warnings=warnings,
    )
    return plan, problems


def _snapshot_drops(d: EntityDiff, touched: pl.DataFrame) -> pl.Series:
    """External ids whose snapshot rows go: the gone ones and the ones rewritten this run."""
    if d.snapshot.height == 0:
        return d.gone["ext_id"]
    rewritten = touched.select("ext_id").join(d.snapshot.select("ext_id"), on="ext_id", how="semi")
    return pl.concat([d.gone["ext_id"], rewritten["ext_id"]]).unique()


def _with_untouched(d: EntityDiff, mapping: pl.DataFrame) -> pl.DataFrame:
    """For delta feeds, snapshot records the feed did not mention still resolve references."""
    rest = d.snapshot.join(mapping.select("ext_id"), on="ext_id", how="anti").join(
        d.gone.select("ext_id"), on="ext_id", how="anti"
    )
    return pl.concat([mapping, rest.select("ext_id", "canonical_id")])


def _removals(
    conn: sa.Connection,
    ctx: Context,
    entity: Entity,
    d: EntityDiff,
    kept: pl.Series,
) -> tuple[pl.Series, pl.DataFrame]:
    """Ids to archive for records the source no longer lists, with their change rows.

    A gone record whose canonical id this run's feed still holds under another external id (a
    student the source re-keyed, matched by email) is not archived.
    """
    empty = pl.Series("id", [], dtype=pl.Int64)
    if d.gone.height == 0 or not ctx.authoritative:
        return empty, _empty_changes().drop("entity")
    candidates = d.gone["canonical_id"].unique()
    candidates = candidates.filter(~candidates.is_in(kept.implode()))
    candidates = candidates.filter(~candidates.is_in(held_elsewhere(conn, ctx, entity).implode()))
    current = read_current(conn, entity, candidates)
    active = current.filter(pl.col("status") != "archived")
    ids = active["id"]
    changes = active.select(
        pl.col("id").alias("canonical_id"),
        pl.lit("archive").alias("action"),
        pl.format('{{"status":"{}"}}', pl.col("status")).alias("before"),
        pl.lit('{"status":"archived"}').alias("after"),
    )
    return ids, changes


def _id_map_entries(
    conn: sa.Connection, ctx: Context, entity: Entity, rows: pl.DataFrame
) -> pl.DataFrame:
    """Id map entries for every id the touched records carry that the map does not know yet."""
    # One namespace at a time: each is deduplicated (the first record keeps an id two records
    # share) and checked against the map on its own, which keeps the frames small.
    rows = _name_key(rows)
    keys = [(source_namespace(ctx.source_id), "ext_id"), *MATCH_KEYS[entity]]
    kept = []
    for namespace, column in keys:
        if column not in rows.columns:
            continue
        group = (
            rows.filter(pl.col(column).is_not_null())
            .select(pl.col(column).alias("external_id"), pl.col("canonical_id"))
            .unique(subset=["external_id"], keep="first", maintain_order=True)
        )
        if group.height == 0:
            continue
        known = lookup_ids(conn, ctx.district_id, entity, namespace, group["external_id"])
        if known.height:
            group = group.join(known.select("external_id"), on="external_id", how="anti")
        kept.append(
            group.select(pl.lit(namespace).alias("namespace"), "external_id", "canonical_id")
        )
    if not kept:
        return pl.DataFrame(schema=ID_MAP_SCHEMA)
    return pl.concat(kept).select(list(ID_MAP_SCHEMA))


def _plan_enrollments(
    conn: sa.Connection,
    ctx: Context,
    d: EntityDiff,
    incoming: pl.DataFrame,
    unchanged: pl.DataFrame,
) -> EntityPlan:
    """Enrollments are memberships with history: a change of section or person ends the old
    enrollment and starts a new one; a change of role updates it in place."""
    columns = CANONICAL["enrollment"]
    changed = incoming.filter(pl.col("canonical_id").is_not_null())
    current = read_current(conn, "enrollment", changed["canonical_id"])
    cur = current.rename({c: f"{c}__old" for c in current.columns if c != "id"})
    joined = changed.join(cur, left_on="canonical_id", right_on="id", how="left")
    moved = joined.filter(
        (pl.col("section_id") != pl.col("section_id__old"))
        | (pl.col("person_id") != pl.col("person_id__old"))
        | pl.col("end_at__old").is_not_null()
    )
    role_changed = joined.join(moved.select("ext_id"), on="ext_id", how="anti").filter(
        pl.col("role") != pl.col("role__old")
    )

    # New memberships, and moved ones, may already exist as an active enrollment made by hand
    # (or left without a snapshot entry): adopt it rather than enroll the person twice.
    # (On a first import every row is new and nothing is adoptable: the frames are used as they
    # are, since each filter or join would copy millions of rows.)
    fresh = incoming if changed.height == 0 else incoming.filter(pl.col("canonical_id").is_null())
    parts = [fresh] if moved.height == 0 else [fresh, moved.select(incoming.columns)]
    starting = pl.concat(parts, how="vertical_relaxed").with_columns(
        pl.lit(None, dtype=pl.Int64).alias("canonical_id")
    )
    adoptable = _active_unowned(conn, ctx, starting)
    if adoptable.height:
        starting = (
            starting.join(adoptable, on=["section_id", "person_id"], how="left")
            .with_columns(pl.col("_adopt").alias("canonical_id"))
            .drop("_adopt", "_adopt_role")
        )
        adopted = starting.filter(pl.col("canonical_id").is_not_null())
        creating = starting.filter(pl.col("canonical_id").is_null())
    else:
        adopted, creating = starting.clear(), starting
    ids = bulk.allocate_ids(conn, "enrollments", creating.height)
    creating = creating.with_columns(ids.alias("canonical_id"))
    create_rows = creating.select(pl.col("canonical_id").alias("id"), *columns)

    update_rows = pl.concat(
        [
            role_changed.select(pl.col("canonical_id").alias("id"), "role"),
            adopted.select(pl.col("canonical_id").alias("id"), "role"),
        ]
    )

    # Ended: memberships the source dropped, the old side of moves, and — when sources are
    # authoritative — active enrollments made by hand in this source's sections.
    ended_ids = moved["canonical_id"]
    if ctx.authoritative:
        gone = d.gone["canonical_id"]
        still = read_current(conn, "enrollment", gone).filter(pl.col("end_at").is_null())
        manual = _manual_in_synced_sections(conn, ctx).filter(
            ~pl.col("id").is_in(adopted["canonical_id"].implode())
        )
        ended_ids = pl.concat([ended_ids, still["id"], manual["id"]]).unique()
    ended = read_current(conn, "enrollment", ended_ids).filter(pl.col("end_at").is_null())

    changes = (
        pl.concat(
            [
                role_changed.select(
                    "canonical_id",
                    pl.lit("update").alias("action"),
                    pl.format('{{"role":"{}"}}', pl.col("role__old")).alias("before"),
                    pl.format('{{"role":"{}"}}', pl.col("role")).alias("after"),
                ),
                adopted.select(
                    "canonical_id",
                    pl.lit("attach").alias("action"),
                    pl.lit('{"source":null}').alias("before"),
                    pl.format(
                        '{{"role":"{}","source":{}}}', pl.col("role"), pl.lit(ctx.source_id)
                    ).alias("after"),
                ),
                ended.select(
                    pl.col("id").alias("canonical_id"),
                    pl.lit("end").alias("action"),
                    _encode(ended, columns).alias("before"),
                    pl.lit(_json({"end_at": ctx.now.isoformat()})).alias("after"),
                ),
            ],
            how="vertical_relaxed",
        )
        .with_columns(pl.lit("enrollment").alias("entity"))
        .select(CHANGE_COLUMNS)
    )

    keep_changed = changed.join(moved.select("ext_id"), on="ext_id", how="anti")
    touched = pl.concat(
        [
            part.select("ext_id", "hash", "canonical_id")
            for part in (creating, adopted, keep_changed)
            if part.height or part is creating
        ]
    )
    # Nothing refers to enrollments, so no mapping of them is kept.
    mapping = pl.DataFrame(schema={"ext_id": pl.Utf8(), "canonical_id": pl.Int64()})
    return EntityPlan(
        entity="enrollment",
        create=create_rows,
        update=update_rows,
        remove=ended["id"],
        changes=changes,
        snapshot_upsert=touched,
        snapshot_delete=_snapshot_drops(d, touched),
        id_map_add=pl.DataFrame(schema=ID_MAP_SCHEMA),
        mapping=mapping,
        before_count=d.snapshot.height,
    )


def _active_unowned(conn: sa.Connection, ctx: Context, starting: pl.DataFrame) -> pl.DataFrame:
    """Active enrollments without a source in this source's sections, keyed for adoption."""
    schema: dict[str, pl.DataType] = {
        "_adopt": pl.Int64(),
        "section_id": pl.Int64(),
        "person_id": pl.Int64(),
        "_adopt_role": pl.Utf8(),
    }
    if starting.height == 0:
        return pl.DataFrame(schema=schema)
    found = bulk.read(
        conn,
        "SELECT e.id, e.section_id, e.person_id, e.role FROM enrollments e "
        "JOIN sections s ON s.id = e.section_id "
        "WHERE s.source_id = :src AND e.end_at IS NULL AND e.source_id IS NULL",
        {"src": ctx.source_id},
        schema,
    )
    return found.unique(subset=["section_id", "person_id"], keep="first")


def _manual_in_synced_sections(conn: sa.Connection, ctx: Context) -> pl.DataFrame:
    return bulk.read(
        conn,
        "SELECT e.id FROM enrollments e JOIN sections s ON s.id = e.section_id "
        "WHERE s.source_id = :src AND e.end_at IS NULL AND e.source_id IS NULL",
        {"src": ctx.source_id},
        {"id": pl.Int64()},
    )
