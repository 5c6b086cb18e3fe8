"""The ``oneroster-csv`` connector: reads a OneRoster 1.1 or 1.2 CSV export into a Feed.

An export is a folder or a zip of CSV tables plus ``manifest.csv``, in bulk mode (each table is
the whole scope) or delta mode (each table lists only what changed). Files are parsed with polars
and checked with vectorised expressions, so a district with millions of enrollments reads in
seconds; only rows that have a problem are ever looked at one by one.
"""

from __future__ import annotations

import csv
import logging
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

from rostersync.domain.feed import ENROLLMENT_ROLES, Entity, Feed, Mode
from rostersync.errors import ConfigError, InputError, Problem
from rostersync.sources.base import FetchContext, register

logger = logging.getLogger(__name__)

FileMode = Literal["bulk", "delta", "absent"]

#: The columns of each table in the CSV binding (1.1 and 1.2 together, canonical spelling).
#: Anything else in a header, ``metadata.*`` included, is an extension and is ignored.
BINDING_COLUMNS: dict[str, tuple[str, ...]] = {
    "orgs": (
        "sourcedId", "status", "dateLastModified", "name", "type", "identifier", "parentSourcedId",
    ),
    "academicSessions": (
        "sourcedId", "status", "dateLastModified", "title", "type", "startDate", "endDate",
        "parentSourcedId", "schoolYear",
    ),
    "courses": (
        "sourcedId", "status", "dateLastModified", "schoolYearSourcedId", "title", "courseCode",
        "grades", "orgSourcedId", "subjects", "subjectCodes",
    ),
    "classes": (
        "sourcedId", "status", "dateLastModified", "title", "grades", "courseSourcedId",
        "classCode", "classType", "location", "schoolSourcedId", "termSourcedIds", "subjects",
        "subjectCodes", "periods",
    ),
    "users": (
        "sourcedId", "status", "dateLastModified", "enabledUser", "orgSourcedIds", "role",
        "username", "userIds", "givenName", "familyName", "middleName", "identifier", "email",
        "sms", "phone", "agentSourcedIds", "grades", "password", "userMasterIdentifier",
        "resourceSourcedIds", "preferredGivenName", "preferredMiddleName", "preferredFamilyName",
        "primaryOrgSourcedId", "pronouns",
    ),
    "enrollments": (
        "sourcedId", "status", "dateLastModified", "classSourcedId", "schoolSourcedId",
        "userSourcedId", "role", "primary", "beginDate", "endDate",
    ),
    "roles": (
        "sourcedId", "status", "dateLastModified", "userSourcedId", "roleType", "role",
        "beginDate", "endDate", "orgSourcedId", "userProfileSourcedId",
    ),
}  # fmt: skip

#: The columns this connector reads from each table; the rest of the binding is not needed.
USED_COLUMNS: dict[str, tuple[str, ...]] = {
    "orgs": ("sourcedId", "status", "name", "type", "identifier"),
    "academicSessions": ("sourcedId", "status", "title", "startDate", "endDate", "schoolYear"),
    "courses": ("sourcedId", "status", "title", "courseCode"),
    "classes": (
        "sourcedId", "status", "title", "courseSourcedId", "classCode", "location",
        "schoolSourcedId", "termSourcedIds", "periods",
    ),
    "users": (
        "sourcedId", "status", "orgSourcedIds", "role", "userIds", "givenName", "familyName",
        "identifier", "email", "grades", "primaryOrgSourcedId",
    ),
    "enrollments": ("sourcedId", "status", "classSourcedId", "userSourcedId", "role", "primary"),
    "roles": ("sourcedId", "status", "userSourcedId", "roleType", "role", "orgSourcedId"),
}  # fmt: skip

#: Columns without which a table cannot be used (``users.role`` is checked separately: in 1.2
#: it lives in roles.csv).
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "orgs": ("sourcedId", "name", "type"),
    "academicSessions": ("sourcedId", "title", "startDate", "endDate", "schoolYear"),
    "courses": ("sourcedId", "title"),
    "classes": ("sourcedId", "title", "schoolSourcedId", "termSourcedIds"),
    "users": ("sourcedId", "givenName", "familyName"),
    "enrollments": ("sourcedId", "classSourcedId", "userSourcedId", "role"),
    "roles": ("sourcedId", "userSourcedId", "roleType", "role", "orgSourcedId"),
}

#: Tables a bulk export must contain.
REQUIRED_FOR_BULK = ("orgs", "users", "classes", "enrollments")

#: Which feed entity each table fills; courses and roles only feed other tables.
ENTITY_OF: dict[str, Entity] = {
    "orgs": "school",
    "academicSessions": "term",
    "users": "person",
    "classes": "section",
    "enrollments": "enrollment",
}

#: OneRoster user roles (1.1 and 1.2 vocabularies, lower-cased) that are on a roster here.
PERSON_ROLES: dict[str, str] = {
    "student": "student",
    "teacher": "teacher",
    "aide": "teacher",
    "administrator": "admin",
    "districtadministrator": "admin",
    "siteadministrator": "admin",
    "systemadministrator": "admin",
    "principal": "admin",
}

_ENTITY_MODE: dict[FileMode, Mode] = {"bulk": "full", "delta": "delta", "absent": "absent"}
#: An enrollment's role while it is worked out: one byte a row rather than a string.
_ENROLLMENT_ROLE = pl.Enum(ENROLLMENT_ROLES)

#: Extra columns read past the end of the header, to notice rows with more fields than names.
_PADDING = 8
_BOM = b"\xef\xbb\xbf"
#: Vocabulary columns, compared lower-cased and trimmed.
_ENUM_COLUMNS = ("status", "role", "roleType", "type", "primary")
#: At most this many problems of one kind are listed per file; the rest are counted.
_MAX_LISTED = 50
_EMAIL_PATTERN = r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$"
_DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"
_RE_EXPORT = "Re-export the file from the student information system"


@register("oneroster-csv")
def build_source(config: Mapping[str, str]) -> OneRosterCsvSource:
    """Build the connector from the source's settings; ``path`` names a folder or a .zip file."""
    raw = (config.get("path") or "").strip()
    if not raw:
        raise ConfigError(
            "The oneroster-csv source has no 'path' setting. Set it to the folder or .zip file "
            "that holds the OneRoster export."
        )
    path = Path(raw).expanduser()
    if not path.exists():
        raise ConfigError(
            f"The oneroster-csv source's path {raw!r} does not exist. Check the path, or that the "
            "export has been delivered there."
        )
    if path.is_file() and path.suffix.lower() != ".zip":
        raise ConfigError(
            f"The oneroster-csv source's path {raw!r} is a file but not a .zip archive. Point it "
            "at the export's folder or its .zip file."
        )
    return OneRosterCsvSource(path)


class OneRosterCsvSource:
    """A OneRoster CSV export in a folder or zip; bulk files give full entities, delta files
    give changes."""

    kind = "oneroster-csv"
    mode: Literal["full", "delta", "either"] = "either"

    def __init__(self, path: Path) -> None:
        self.path = path

    def fetch(self, context: FetchContext) -> Feed:
        """Read the export and return its Feed; raise InputError listing every problem found."""
        report = _Report()
        reader = _open_export(self.path, report)
        if reader is None:
            raise InputError(report.problems)
        try:
            return _Export(reader, report, context).read(origin=str(self.path))
        finally:
            reader.close()


# --- reading files -------------------------------------------------------------------------


class _Blob:
    """One file of an export. A folder's file is handed to polars by path (it maps the file);
    a zip member is decompressed when needed. Only the header and the last few kilobytes are
    read up front; the whole content is read again only to locate a problem."""

    def __init__(self, name: str, read: Callable[[], bytes], path: Path | None = None) -> None:
        self.name = name
        self.path = path
        self._read = read
        self._data: bytes | None = None

    def read(self) -> bytes:
        """The whole file; a zip member stays in memory until :meth:`release`."""
        if self.path is not None:
            return self._read()
        if self._data is None:
            self._data = self._read()
        return self._data

    def release(self) -> None:
        self._data = None

    def head(self) -> bytes:
        if self.path is None:
            data = self.read()
            end = data.find(b"\n")
            return data if end < 0 else data[: end + 1]
        with self.path.open("rb") as handle:
            return handle.readline()

    def tail(self, size: int = 1 << 16) -> tuple[int, bytes]:
        """The last ``size`` bytes and the offset at which they start."""
        if self.path is None:
            data = self.read()
            start = max(0, len(data) - size)
            return start, data[start:]
        with self.path.open("rb") as handle:
            handle.seek(0, 2)
            start = max(0, handle.tell() - size)
            handle.seek(start)
            return start, handle.read()


class _Files:
    """The CSV files of an export, by lower-cased table name, from a folder or a zip."""

    def __init__(self, label: str) -> None:
        self.label = label

    def find(self, table: str) -> _Blob | None:
        raise NotImplementedError

    def close(self) -> None:
        return None


class _FolderFiles(_Files):
    def __init__(self, folder: Path) -> None:
        super().__init__(str(folder))
        self._paths = {p.name.lower(): p for p in folder.iterdir() if p.is_file()}

    def find(self, table: str) -> _Blob | None:
        path = self._paths.get(f"{table.lower()}.csv")
        return None if path is None else _Blob(path.name, path.read_bytes, path)


class _ZipFiles(_Files):
    def __init__(self, archive: zipfile.ZipFile, label: str) -> None:
        super().__init__(label)
        self._archive = archive
        self._members: dict[str, str] = {}
        for info in sorted(archive.infolist(), key=lambda i: i.filename.count("/")):
            base = info.filename.rsplit("/", 1)[-1]
            if info.is_dir() or base.startswith("._") or info.filename.startswith("__MACOSX"):
                continue
            # The shallowest copy wins when an export was zipped together with its folder.
            self._members.setdefault(base.lower(), info.filename)

    def find(self, table: str) -> _Blob | None:
        member = self._members.get(f"{table.lower()}.csv")
        if member is None:
            return None
        return _Blob(member.rsplit("/", 1)[-1], lambda: self._archive.read(member))

    def close(self) -> None:
        self._archive.close()


def _open_export(path: Path, report: _Report) -> _Files | None:
    if path.is_dir():
        return _FolderFiles(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        report.error(
            f"The file is not a readable zip archive ({exc}).",
            file=path.name,
            fix="Re-create the zip from the export's CSV files, or point the source at the folder.",
        )
        return None
    return _ZipFiles(archive, path.name)


# --- problems --------------------------------------------------------------------------------


@dataclass
class _Report:
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)

    def error(self, message: str, **where: Any) -> None:
        """Add a problem; ``where`` takes Problem's fields (file, line, column, record_id, fix)."""
        self.problems.append(Problem(message, **where))

    def warn(self, message: str, **where: Any) -> None:
        self.warnings.append(Problem(message, **where))


#: The physical line of a record for the engine's messages: exact unless a quoted value spans
#: lines, in which case it is the record's position (messages of this connector are exact).
_LINE_OF_ROW = pl.col("_row").cast(pl.Int64) + 2


class _Table:
    """One parsed CSV file: canonical column names, all strings, ``_row`` the record's index.

    Physical line numbers are worked out only when a problem needs one: record ``i`` is on line
    ``i + 2`` unless a quoted value spans lines, and then the file is scanned once.
    """

    def __init__(self, blob: _Blob, frame: pl.DataFrame, records: int) -> None:
        self.blob = blob
        self.name = blob.name
        self.frame = frame
        self._records = records
        self._line_starts: list[int] | None = None
        self._simple: bool | None = None

    def line(self, row: int) -> int:
        if self._simple is None:
            data = self.blob.read()
            physical = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
            self._simple = physical == self._records + 1
            if not self._simple:
                self._line_starts = _record_line_starts(data)
            self.blob.release()
        if self._line_starts is None or row >= len(self._line_starts):
            return row + 2
        return self._line_starts[row]

    def report_rows(
        self,
        report: _Report,
        rows: pl.DataFrame,
        message: str,
        *,
        column: str | None = None,
        fix: str | None = None,
        warning: bool = False,
        value_column: str | None = None,
    ) -> None:
        """Report a problem for each row of ``rows`` (which carries ``_row`` and ``sourcedId``).

        ``message`` may use ``{value}`` for the row's ``value_column``. Only the first rows are
        listed one by one so that a file broken everywhere still yields a readable report.
        """
        add = report.warn if warning else report.error
        columns = ["_row", "sourcedId"] + ([value_column] if value_column else [])
        for record in rows.head(_MAX_LISTED).select(columns).iter_rows(named=True):
            value = record.get(value_column) if value_column else None
            add(
                message.format(value=value),
                file=self.name,
                line=self.line(record["_row"]),
                column=column,
                record_id=record["sourcedId"],
                fix=fix,
            )
        if rows.height > _MAX_LISTED:
            add(
                f"{rows.height - _MAX_LISTED} more row(s) have the same problem.",
                file=self.name,
                column=column,
                fix=fix,
            )


def _encoding_problem(report: _Report, name: str, data: bytes) -> None:
    line: int | None = None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
    report.error(
        "The file is not valid UTF-8 text.",
        file=name,
        line=line,
        fix=f"{_RE_EXPORT} with UTF-8 encoding (in a spreadsheet: 'CSV UTF-8').",
    )


def _parse_header(report: _Report, name: str, head: bytes) -> list[str] | None:
    line = head.split(b"\n", 1)[0].rstrip(b"\r")
    if line.startswith(_BOM):
        line = line[len(_BOM) :]
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        report.error(
            "The header line is not valid UTF-8 text.",
            file=name,
            line=1,
            fix=f"{_RE_EXPORT} with UTF-8 encoding.",
        )
        return None
    if not text.strip():
        report.error(
            "The file is empty: it has no header line.",
            file=name,
            line=1,
            fix=f"{_RE_EXPORT}, or mark it absent in manifest.csv.",
        )
        return None
    return next(csv.reader([text]))


def _record_line_starts(data: bytes) -> list[int]:
    """The physical line on which each record after the header starts, honouring quotes."""
    starts: list[int] = []
    quoted = False
    for number, line in enumerate(data.split(b"\n"), start=1):
        if number > 1 and not quoted:
            starts.append(number)
        if line.count(b'"') % 2:
            quoted = not quoted
    return starts


def _read_table(report: _Report, table: str, blob: _Blob) -> _Table | None:
    """Parse one table; report what makes it unusable and return None in that case."""
    name = blob.name
    header = _parse_header(report, name, blob.head())
    if header is None:
        return None
    wanted = {c.lower(): c for c in BINDING_COLUMNS[table]}
    positions: dict[str, int] = {}
    for index, raw in enumerate(header):
        canonical = wanted.get(raw.strip().lower())
        if canonical is not None:
            positions.setdefault(canonical, index)
    if not _header_usable(report, table, name, header, positions):
        return None

    named = len(header)
    while named and not header[named - 1].strip():
        named -= 1
    source: Path | bytes = blob.path if blob.path is not None else blob.read()
    cut = _truncated_at(report, blob, named)
    if cut is not None:
        data = blob.read()[:cut]
        blob = _Blob(name, lambda: data)
        source = data

    used = [c for c in USED_COLUMNS[table] if c in positions]
    enums = [c for c in _ENUM_COLUMNS if c in used]
    plain = [c for c in used if c not in enums]
    width = len(header) + _PADDING
    padding = [pl.col(f"c{i}") for i in range(len(header), width)]
    # Vocabulary columns are held as categories while parsing (a few bytes a row instead of a
    # string); their own set of categories is freed with the table, whatever a broken file
    # puts in them.
    vocabulary = pl.Categorical(pl.Categories.random())
    columns = [
        pl.col(f"c{positions[c]}").cast(vocabulary if c in enums else pl.Utf8()).alias(c)
        for c in used
    ]
    try:
        frame = (
            pl.scan_csv(
                source,
                has_header=False,
                skip_rows=1,
                schema={f"c{i}": pl.Utf8() for i in range(width)},
                missing_columns="insert",
                truncate_ragged_lines=True,
                row_index_name="_row",
                infer_schema=False,
            )
            .select(
                "_row",
                *columns,
                # Fields past the header only matter as "is any of them filled in": asking that
                # while parsing keeps eight mostly empty columns out of memory.
                _extra=pl.any_horizontal([c.str.len_bytes() > 0 for c in padding]).fill_null(False),
            )
            .collect(engine="streaming")
        )
    except pl.exceptions.NoDataError:
        frame = pl.DataFrame(
            schema={"_row": pl.UInt32(), **{c: pl.Utf8() for c in used}, "_extra": pl.Boolean()}
        )
    except pl.exceptions.PolarsError as exc:
        if "utf-8" in str(exc).lower() or "utf8" in str(exc).lower():
            _encoding_problem(report, name, blob.read())
        else:
            report.error(
                f"The file could not be read as CSV ({str(exc).splitlines()[0]}).",
                file=name,
                fix=f"{_RE_EXPORT}; check for an unclosed quote.",
            )
        return None
    del source
    blob.release()
    records = frame.height

    # Quoted empty values ("") come through as empty strings; only columns that have any are
    # rewritten, since rewriting a column of millions of strings is not free.
    has_empty = frame.select((pl.col(plain).str.len_bytes() == 0).any()).row(0)
    normalised = [_normalise_enum(frame[c]) for c in enums]
    frame = frame.with_columns(
        [_clean(pl.col(c)) for c, empty in zip(plain, has_empty, strict=True) if empty]
        + [values for values in normalised if values is not None]
    )
    frame, _blank = _split(frame, pl.all_horizontal(pl.col(used).is_null()) & ~pl.col("_extra"))
    result = _Table(blob, frame, records)

    extra = frame.filter(pl.col("_extra"))
    if extra.height:
        result.report_rows(
            report,
            extra,
            f"The row has more fields than the header's {named} column names; a value with a "
            "comma in it was probably not quoted.",
            fix="Quote values that contain commas, or remove the extra fields.",
        )
    result.frame = frame.drop("_extra")
    return result


def _split(frame: pl.DataFrame, condition: pl.Expr) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split ``frame`` into the rows where ``condition`` does not hold and those where it does.

    When no row matches, ``frame`` is returned as it is: filtering copies every value, which
    is most of the cost on a file with millions of rows.
    """
    mask = frame.select(condition.fill_null(False)).to_series()
    if not mask.any():
        return frame, frame.clear()
    return frame.filter(~mask), frame.filter(mask)


def _clean(expr: pl.Expr) -> pl.Expr:
    """An empty value is null. Values are otherwise kept as they are (trimming every value of
    a file with millions of rows costs more than the whole parse)."""
    return pl.when(expr.str.len_bytes() > 0).then(expr)


def _normalise_enum(values: pl.Series) -> pl.Series | None:
    """Lower-case and trim a vocabulary column (status, role, type...), through its few
    distinct values rather than row by row; None when every value is already in that form.

    Leaving such a column alone is worth it: a rewritten column no longer lines up in chunks
    with the others, and the next filter then copies the whole table to line them up again.
    The rewritten column is an Enum, which compares with plain strings like the categories.
    """
    mapping = {v: v.strip().lower() or None for v in values.unique().drop_nulls().to_list()}
    if all(raw == value for raw, value in mapping.items()):
        return None
    vocabulary = pl.Enum(sorted({v for v in mapping.values() if v is not None}))
    return values.replace_strict(mapping, default=None, return_dtype=vocabulary)


def _header_usable(
    report: _Report, table: str, name: str, header: list[str], positions: dict[str, int]
) -> bool:
    has = ", ".join(h.strip() for h in header if h.strip()) or "nothing"
    known = len(positions)
    if "sourcedId" not in positions and known < len(REQUIRED_COLUMNS[table]):
        report.error(
            f"This is not a OneRoster {table} table: its header is {has}.",
            file=name,
            line=1,
            fix=(
                f"Export {name} in the OneRoster CSV format; its header starts with "
                f"{', '.join(BINDING_COLUMNS[table][:4])}."
            ),
        )
        return False
    missing = [c for c in REQUIRED_COLUMNS[table] if c not in positions]
    for column in missing:
        report.error(
            f"The required column {column!r} is missing. The header has: {has}.",
            file=name,
            line=1,
            column=column,
            fix=f"Add the {column} column to {name} and export it again.",
        )
    return not missing


def _truncated_at(report: _Report, blob: _Blob, named: int) -> int | None:
    """Where to cut a file whose last line was cut short (too few fields and no final line
    break), or None when the file ends properly."""
    offset, tail = blob.tail()
    if not tail or tail.endswith(b"\n"):
        return None
    last_break = tail.rfind(b"\n")
    if last_break < 0:
        return None
    last = tail[last_break + 1 :]
    if not last.strip():
        return None
    fields = next(csv.reader([last.decode("utf-8", errors="replace")]), [])
    if last.count(b'"') % 2 == 0 and len(fields) >= named:
        return None
    data = blob.read()
    line = data.count(b"\n") + 1
    report.truncated.append(
        f"{blob.name} line {line}: the last line has {len(fields)} of {named} fields and the "
        "file does not end with a line break, so the file looks cut short; that row was left out."
    )
    logger.warning("Truncated last line in %s at line %s; the row was left out.", blob.name, line)
    return offset + last_break + 1


# --- the export ------------------------------------------------------------------------------


class _Export:
    """Reads the tables of one export in dependency order and assembles the Feed."""

    def __init__(self, files: _Files, report: _Report, context: FetchContext) -> None:
        self.files = files
        self.report = report
        self.context = context
        self.modes: dict[str, FileMode] = {}

    def read(self, origin: str) -> Feed:
        self.modes = self._file_modes()
        tables = {t: self._load(t) for t in BINDING_COLUMNS if self.modes.get(t) != "absent"}

        frames: dict[Entity, pl.DataFrame] = {}
        deleted: dict[Entity, list[str]] = {}
        for table, entity in ENTITY_OF.items():
            loaded = tables.get(table)
            if loaded is None:
                continue
            records, gone = self._split_status(loaded)
            if table == "orgs":
                records, gone = self._schools(loaded, records, gone)
            elif table == "academicSessions":
                records = self._terms(loaded, records)
            elif table == "classes":
                records = self._sections(records, tables.get("courses"))
            elif table == "users":
                records = self._people(loaded, records, tables.get("roles"))
            else:
                records = self._enrollments(records)
            frames[entity] = records
            deleted[entity] = gone
            # What the feed does not keep of the file can go before the next, larger one.
            loaded.frame = loaded.frame.clear()

        if self.report.problems:
            raise InputError(self.report.problems)
        entity_modes: dict[Entity, Mode] = {
            entity: _ENTITY_MODE[self.modes[table]] for table, entity in ENTITY_OF.items()
        }
        present = [m for m in entity_modes.values() if m != "absent"]
        feed = Feed(
            mode="full" if all(m == "full" for m in present) else "delta",
            frames=frames,
            modes=entity_modes,
            deleted=deleted,
            warnings=self.report.warnings,
            truncated="; ".join(self.report.truncated) or None,
            origin=origin,
            files={
                entity: found.name
                for table, entity in ENTITY_OF.items()
                if (found := tables.get(table)) is not None
            },
        )
        logger.info("Read OneRoster export %s: %s", self.files.label, feed.counts())
        return feed

    # -- manifest and files

    def _file_modes(self) -> dict[str, FileMode]:
        declared = self._manifest()
        modes: dict[str, FileMode] = {}
        for table in BINDING_COLUMNS:
            present = self.files.find(table) is not None
            if declared is None:
                mode: FileMode = "bulk" if present else "absent"
                if not present and table in REQUIRED_FOR_BULK:
                    self.report.error(
                        f"{table}.csv is missing, and a bulk export needs it.",
                        file=f"{table}.csv",
                        fix=f"Add {table}.csv to the export.",
                    )
            else:
                mode = declared.get(table.lower(), "bulk" if present else "absent")
                if table.lower() not in declared and present:
                    self.report.warn(
                        f"manifest.csv does not mention {table}.csv; it is read as bulk.",
                        file="manifest.csv",
                        fix=f"Add file.{table} to manifest.csv.",
                    )
                if mode == "absent" and present:
                    self.report.warn(
                        f"manifest.csv marks {table} absent, so {table}.csv is ignored.",
                        file="manifest.csv",
                    )
                if mode != "absent" and not present:
                    if mode == "bulk" and table in REQUIRED_FOR_BULK:
                        self.report.error(
                            f"manifest.csv lists {table} as bulk but {table}.csv is missing.",
                            file=f"{table}.csv",
                            fix=f"Add {table}.csv, or mark it absent in the manifest.",
                        )
                    else:
                        self.report.warn(
                            f"manifest.csv lists {table} as {mode} but {table}.csv is missing; "
                            "nothing of that kind changes.",
                            file=f"{table}.csv",
                        )
                    mode = "absent"
            modes[table] = mode
        return modes

    def _manifest(self) -> dict[str, FileMode] | None:
        """The manifest's ``file.*`` modes keyed by lower-cased table name; None if missing."""
        blob = self.files.find("manifest")
        if blob is None:
            self.report.warn(
                "manifest.csv is missing; every file present is read as bulk.",
                file="manifest.csv",
                fix="Include manifest.csv in the export.",
            )
            return None
        name = blob.name
        try:
            data = blob.read()
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            self.report.error(
                f"The file could not be read from the export ({exc}).",
                file=name,
                fix="Re-create the zip archive from the export's files.",
            )
            return {}
        header = _parse_header(self.report, name, data)
        if header is None:
            return {}
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            _encoding_problem(self.report, name, data)
            return {}
        lowered = [h.strip().lower() for h in header]
        if "propertyname" not in lowered or "value" not in lowered:
            self.report.error(
                f"This is not a OneRoster manifest: its header is {', '.join(header)}.",
                file=name,
                line=1,
                fix="The manifest's header is propertyName,value.",
            )
            return {}
        key_at, value_at = lowered.index("propertyname"), lowered.index("value")
        declared: dict[str, FileMode] = {}
        for number, row in enumerate(csv.reader(text.splitlines()), start=1):
            if number == 1 or len(row) <= max(key_at, value_at):
                continue
            key, value = row[key_at].strip().lower(), row[value_at].strip().lower()
            if key == "oneroster.version":
                logger.info("OneRoster export %s declares version %s", self.files.label, value)
            if not key.startswith("file."):
                continue
            if value not in ("bulk", "delta", "absent"):
                self.report.error(
                    f"{row[key_at].strip()} is {row[value_at].strip()!r}; it must be bulk, "
                    "delta or absent.",
                    file=name,
                    line=number,
                    column="value",
                    fix="Correct the manifest entry.",
                )
                continue
            declared[key.removeprefix("file.")] = value  # type: ignore[assignment]
        return declared

    def _load(self, table: str) -> _Table | None:
        blob = self.files.find(table)
        if blob is None:
            return None
        try:
            loaded = _read_table(self.report, table, blob)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            self.report.error(
                f"The file could not be read from the export ({exc}).",
                file=blob.name,
                fix="Re-create the zip archive from the export's files.",
            )
            return None
        if loaded is None:
            return None
        loaded.frame = self._unique_ids(loaded)
        logger.info("Read %s: %s rows", blob.name, loaded.frame.height)
        self.context.progress(table, loaded.frame.height)
        return loaded

    def _unique_ids(self, table: _Table) -> pl.DataFrame:
        """Check sourcedIds are present and unique; drop exact duplicate rows with a warning."""
        frame, missing = _split(table.frame, pl.col("sourcedId").is_null())
        if missing.height:
            table.report_rows(
                self.report,
                missing,
                "The row has no sourcedId.",
                column="sourcedId",
                fix="Give every row its sourcedId.",
            )
        # Counting distinct ids is about twice as fast as marking the repeated ones.
        if frame["sourcedId"].n_unique() == frame.height:
            return frame
        repeated = frame.filter(pl.col("sourcedId").is_duplicated())
        content = [c for c in frame.columns if c != "_row"]
        copies = repeated.filter(pl.struct(content).is_first_distinct().not_())
        if copies.height:
            first = copies.row(0, named=True)
            self.report.warn(
                f"{copies.height} row(s) repeat an earlier row exactly and were left out "
                f"(the first on line {table.line(first['_row'])}).",
                file=table.name,
                record_id=first["sourcedId"],
            )
            frame = frame.filter(pl.col("_row").is_in(copies["_row"].implode()).not_())
        clashes = (
            frame.filter(pl.col("sourcedId").is_duplicated())
            .filter(pl.col("sourcedId").is_first_distinct().not_())
            .sort("_row")
        )
        if clashes.height:
            table.report_rows(
                self.report,
                clashes,
                "Another row earlier in the file has the same sourcedId but different values.",
                column="sourcedId",
                fix="Each sourcedId must appear once per file; remove or correct the repeat.",
            )
        return frame

    def _split_status(self, table: _Table) -> tuple[pl.DataFrame, list[str]]:
        """Split rows into records and deleted ids by ``status`` and the file's mode."""
        frame = table.frame
        if "status" not in frame.columns:
            return frame, []
        frame = frame.with_columns(_status=pl.col("status"))
        inactive = frame.filter(pl.col("_status") == "inactive")
        if inactive.height:
            self.report.warn(
                f"{inactive.height} row(s) have status 'inactive', which OneRoster 1.1 replaced "
                "with 'tobedeleted'; they are treated as tobedeleted.",
                file=table.name,
                line=table.line(inactive["_row"][0]),
                column="status",
            )
        odd = frame.filter(
            pl.col("_status").is_not_null()
            & pl.col("_status").is_in(["active", "tobedeleted", "inactive"]).not_()
        )
        if odd.height:
            table.report_rows(
                self.report,
                odd,
                "Unknown status {value!r}; the row is read as active.",
                column="status",
                warning=True,
                value_column="status",
            )
        gone = pl.col("_status").is_in(["tobedeleted", "inactive"]).fill_null(False)
        frame, removed = _split(frame, gone)
        frame = frame.drop("_status", "status")
        if self.modes.get(self._table_of(table)) == "delta":
            return frame, removed["sourcedId"].to_list()
        if removed.height:
            self.report.warn(
                f"{removed.height} row(s) marked tobedeleted in a bulk file were left out.",
                file=table.name,
                column="status",
            )
        return frame, []

    @staticmethod
    def _table_of(table: _Table) -> str:
        stem = table.name.rsplit(".", 1)[0].lower()
        return next(t for t in BINDING_COLUMNS if t.lower() == stem)

    # -- entities

    def _schools(
        self, table: _Table, records: pl.DataFrame, gone: list[str]
    ) -> tuple[pl.DataFrame, list[str]]:
        if gone:
            other = table.frame.filter(
                pl.col("sourcedId").is_in(gone)
                & pl.col("type").is_not_null()
                & (pl.col("type") != "school")
            )
            skip = set(other["sourcedId"].to_list())
            gone = [g for g in gone if g not in skip]
        schools = records.filter(pl.col("type") == "school").select(
            _line=_LINE_OF_ROW,
            ext_id="sourcedId",
            name="name",
            sis_id=pl.col("identifier") if "identifier" in records.columns else pl.lit(None),
        )
        return schools, gone

    def _terms(self, table: _Table, records: pl.DataFrame) -> pl.DataFrame:
        for column in ("startDate", "endDate"):
            value = pl.col(column)
            bad = records.filter(
                value.is_not_null()
                & (
                    value.str.contains(_DATE_PATTERN).not_()
                    | value.str.to_date("%Y-%m-%d", strict=False).is_null()
                )
            )
            if bad.height:
                table.report_rows(
                    self.report,
                    bad,
                    "{value!r} is not a date in the form YYYY-MM-DD.",
                    column=column,
                    fix="Write dates as YYYY-MM-DD, for example 2025-08-20.",
                    value_column=column,
                )
        return records.select(
            _line=_LINE_OF_ROW,
            ext_id="sourcedId",
            name="title",
            start_date="startDate",
            end_date="endDate",
            school_year="schoolYear",
        )

    def _sections(self, records: pl.DataFrame, courses: _Table | None) -> pl.DataFrame:
        def optional(column: str) -> pl.Expr:
            return pl.col(column) if column in records.columns else pl.lit(None, pl.Utf8())

        course = optional("classCode")
        if courses is not None and "courseSourcedId" in records.columns:
            titles = courses.frame.select(
                courseSourcedId="sourcedId",
                _course=pl.coalesce(
                    "title",
                    pl.col("courseCode") if "courseCode" in courses.frame.columns else pl.lit(None),
                ),
            ).unique("courseSourcedId", keep="first")
            records = records.join(titles, on="courseSourcedId", how="left")
            course = pl.coalesce(pl.col("_course"), course)
        return records.select(
            _line=_LINE_OF_ROW,
            ext_id="sourcedId",
            school_ext_id="schoolSourcedId",
            term_ext_id=_first_of("termSourcedIds"),
            name="title",
            course=course,
            period=optional("periods"),
            room=optional("location"),
        )

    def _people(self, table: _Table, records: pl.DataFrame, roles: _Table | None) -> pl.DataFrame:
        def optional(column: str) -> pl.Expr:
            return pl.col(column) if column in records.columns else pl.lit(None, pl.Utf8())

        role = optional("role").cast(pl.Utf8())
        org = _first_of("orgSourcedIds") if "orgSourcedIds" in records.columns else pl.lit(None)
        school = pl.coalesce(optional("primaryOrgSourcedId"), org)
        if roles is not None:
            primary = self._primary_roles(roles)
            records = records.join(primary, left_on="sourcedId", right_on="_user", how="left")
            role = pl.coalesce(role, pl.col("_role"))
            school = pl.coalesce(school, pl.col("_org"))
        elif "role" not in records.columns:
            self.report.error(
                "users.csv has no role column and the export has no roles.csv.",
                file=table.name,
                line=1,
                column="role",
                fix="Add roles.csv (OneRoster 1.2) or a role column (OneRoster 1.1).",
            )
        records = records.with_columns(
            _source_role=role,
            _email=_clean(optional("email").str.strip_chars().str.to_lowercase()),
        ).with_columns(
            _person_role=pl.col("_source_role").replace_strict(
                PERSON_ROLES, default=None, return_dtype=pl.Utf8()
            )
        )

        records, skipped = _split(records, pl.col("_person_role").is_null())
        if skipped.height:
            counts = skipped.group_by("_source_role").len().sort("len", descending=True).iter_rows()
            detail = ", ".join(f"{r or 'no role'}: {n}" for r, n in counts)
            self.report.warn(
                f"{skipped.height} user(s) are not students, teachers, aides or administrators "
                f"and were left out ({detail}).",
                file=table.name,
                column="role",
            )

        bad = records.filter(
            pl.col("_email").is_not_null() & pl.col("_email").str.contains(_EMAIL_PATTERN).not_()
        )
        if bad.height:
            table.report_rows(
                self.report,
                bad,
                "The email address is malformed.",
                column="email",
                fix="Correct the address or leave it empty.",
            )
        user_ids = optional("userIds")
        return records.select(
            _line=_LINE_OF_ROW,
            ext_id="sourcedId",
            role="_person_role",
            email="_email",
            given_name="givenName",
            family_name="familyName",
            grade=_first_of("grades") if "grades" in records.columns else pl.lit(None),
            sis_id=optional("identifier"),
            state_id=user_ids.str.extract(_user_id_pattern("state"), 1).str.strip_chars(),
            google_id=user_ids.str.extract(_user_id_pattern("google"), 1).str.strip_chars(),
            school_ext_id=school,
        )

    def _primary_roles(self, roles: _Table) -> pl.DataFrame:
        """One role per user from roles.csv: the primary one, else the first in the file."""
        frame = roles.frame
        if "status" in frame.columns:
            frame = frame.filter(
                pl.col("status").is_null()
                | pl.col("status").is_in(["tobedeleted", "inactive"]).not_()
            )
        return (
            frame.sort(pl.col("roleType").ne_missing("primary"), pl.col("_row"))
            .unique("userSourcedId", keep="first", maintain_order=True)
            .select(
                _user="userSourcedId", _role=pl.col("role").cast(pl.Utf8()), _org="orgSourcedId"
            )
        )

    def _enrollments(self, records: pl.DataFrame) -> pl.DataFrame:
        role = pl.col("role")
        primary = (
            pl.col("primary").eq_missing("true") if "primary" in records.columns else pl.lit(False)
        )
        records = records.with_columns(
            _role=pl.when(role == "student")
            .then(pl.lit("student", _ENROLLMENT_ROLE))
            .when((role == "teacher") & primary)
            .then(pl.lit("owner", _ENROLLMENT_ROLE))
            .when(role.is_in(["teacher", "aide"]))
            .then(pl.lit("co-teacher", _ENROLLMENT_ROLE)),
            _teacher=role == "teacher",
        )
        records, skipped = _split(records, pl.col("_role").is_null())
        if skipped.height:
            self.report.warn(
                f"{skipped.height} enrollment(s) with a role other than student, teacher or aide "
                "were left out.",
                file="enrollments.csv",
                column="role",
            )
        if self.modes.get("enrollments") == "bulk":
            records = _promote_first_teachers(records)
        return records.select(
            _line=_LINE_OF_ROW,
            ext_id="sourcedId",
            section_ext_id="classSourcedId",
            person_ext_id="userSourcedId",
            role=pl.col("_role").cast(pl.Utf8()),
        )


def _promote_first_teachers(records: pl.DataFrame) -> pl.DataFrame:
    """Make the first teacher (in file order) the owner of each section that has no owner.

    A complete enrollments file is needed to know that no teacher of a section is primary, so
    this only runs for bulk files.
    """
    without_owner = (
        records.lazy()
        .filter(pl.col("_teacher"))
        .group_by("classSourcedId")
        .agg(owned=(pl.col("_role") == "owner").any(), first=pl.col("_row").min())
        .filter(pl.col("owned").not_())
        .collect()
    )
    if not without_owner.height:
        return records
    promoted = without_owner["first"].implode()
    return records.with_columns(
        _role=pl.when(pl.col("_row").is_in(promoted))
        .then(pl.lit("owner", _ENROLLMENT_ROLE))
        .otherwise("_role")
    )


def _first_of(column: str) -> pl.Expr:
    """The first entry of a comma-separated list column, trimmed."""
    # Not when/then: that can regroup the column's chunks, and a frame whose columns are
    # chunked differently is copied whole by the next select.
    return pl.col(column).str.split(",").list.first().str.strip_chars().replace("", None)


def _user_id_pattern(kind: str) -> str:
    """Match a ``{type:value}`` entry of ``userIds`` whose type mentions ``kind``."""
    return rf"(?i)(?:^|[,{{\s])[^,{{}}:]*{kind}[^,{{}}:]*:([^,}}]*)"
