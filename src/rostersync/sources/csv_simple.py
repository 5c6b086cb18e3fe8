"""The ``csv`` connector: the simple roster file a district keeps by hand or in a Google Sheet.

One row per (section, student), read from a local file, an https URL (a sheet published to the
web as CSV) or a Google Sheet through the Sheets API, and turned into a full :class:`Feed`.
Headers are matched loosely and every problem in the file is reported at once, by line and
column, so an admin can fix the file in one pass.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import httpx
import polars as pl

from rostersync.domain.feed import LINE, SCHEMAS, Entity, Feed
from rostersync.errors import ConfigError, InputError, Problem, SourceError
from rostersync.sources import google_api
from rostersync.sources.base import Check, FetchContext, Progress, no_progress, register
from rostersync.sources.http import retry_after

logger = logging.getLogger(__name__)

DEFAULT_SCHOOL = "Default school"
#: The range of a Google Sheet read when the source names none: columns A to Z of the first tab.
DEFAULT_RANGE = "A:Z"
SHEETS = "Google Sheets API"

#: Accepted headers per field, most specific first. Matching ignores case, spaces, underscores,
#: hyphens, dots and parentheses, so "Teacher E-mail" and "teacher_email" are the same header.
ALIASES: dict[str, tuple[str, ...]] = {
    "teacher_email": (
        "teacher email",
        "teacher e-mail",
        "teacher email address",
        "instructor email",
        "teacher",
        "instructor",
    ),
    "section_name": ("class name", "class", "section name", "section", "course name", "course"),
    "student_email": (
        "student email",
        "student e-mail",
        "student email address",
        "email",
        "email address",
        "student",
    ),
    "student_id": ("student id", "student sis id", "sis id", "student number", "student no"),
    "state_id": ("state id", "student state id"),
    "school": ("school name", "school"),
    "given_name": ("student first name", "student given name", "first name", "given name"),
    "family_name": (
        "student last name",
        "student family name",
        "student surname",
        "last name",
        "family name",
        "surname",
    ),
    "student_name": ("student name", "student full name", "full name", "name"),
    "grade": ("grade", "grade level", "student grade"),
    "period": ("period", "class period", "block"),
    "room": ("room", "room number", "classroom"),
    "section_id": ("section id", "class id"),
    "teacher_id": ("teacher id", "teacher sis id", "instructor id"),
    "teacher_given_name": ("teacher first name", "teacher given name"),
    "teacher_family_name": ("teacher last name", "teacher family name", "teacher surname"),
    "teacher_name": ("teacher name", "teacher full name", "instructor name"),
    "co_teachers": (
        "co-teacher email",
        "co-teacher emails",
        "co-teachers",
        "co-teacher(s)",
        "co-teacher",
    ),
}

_LABELS = {
    "teacher_email": "teacher email",
    "section_name": "class name",
    "student_email": "student email",
    "student_id": "student id",
}

_HEADER_NOISE = re.compile(r"[\s_\-.()]+")
_EMAIL = re.compile(
    r"^[^\s@,;<>()\[\]\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$"
)
_DELIMITERS = (",", ";", "\t")
_PROGRESS_EVERY = 1000
_SAVE_AS_UTF8 = 'Save the file as "CSV UTF-8" (Excel: File > Save As > CSV UTF-8) and sync again.'
_PUBLISH_HINT = (
    "Publish the sheet as CSV: in Google Sheets choose File > Share > Publish to web, pick the "
    'sheet and "Comma-separated values (.csv)", and use that link.'
)


def _header_key(name: str) -> str:
    return _HEADER_NOISE.sub("", name).casefold()


_ALIAS_KEYS: dict[str, tuple[str, ...]] = {
    name: tuple(dict.fromkeys(_header_key(a) for a in aliases)) for name, aliases in ALIASES.items()
}


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names)


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _key(text: str) -> str:
    return _collapse(text).casefold()


# --------------------------------------------------------------------------------------------
# The source


@dataclass
class CsvSource:
    """A roster file at a local ``path``, an https ``url`` or a Google ``sheet``; each fetch
    reads the whole roster."""

    path: str | None = None
    url: str | None = None
    school: str = DEFAULT_SCHOOL
    #: A Google Sheet read through the Sheets API: its id, range, and the credentials to use.
    sheet: str | None = None
    range: str = DEFAULT_RANGE
    credentials: str | None = None
    subject: str | None = None
    api_endpoint: str | None = None
    timeout: float = 30.0
    attempts: int = 4
    backoff: float = 1.0
    max_delay: float = 60.0
    #: Injected by tests so retries do not really wait.
    sleep: Callable[[float], None] = time.sleep
    refresh_token: str | None = None
    #: Waits of the Sheets API client (None: real waits); injected by tests.
    sheet_sleep: Callable[[float], None] | None = None
    kind: str = field(default="csv", init=False)
    mode: Literal["full", "delta", "either"] = field(default="full", init=False)

    def __post_init__(self) -> None:
        if sum(bool(x) for x in (self.path, self.url, self.sheet)) != 1:
            raise ConfigError(
                "A csv source needs exactly one of 'path' (a file on this server), 'url' "
                "(an https link, such as a Google Sheet published as CSV) or 'sheet' (a Google "
                "Sheet's id, read with the source's credentials)."
            )
        if self.url:
            _check_url(self.url)
        if self.sheet:
            self._sheet_settings()
        if not self.school.strip():
            raise ConfigError(
                "The csv source's 'school' setting is empty; leave it out or name one."
            )

    @property
    def origin(self) -> str:
        if self.sheet:
            return f"Google Sheet {self.sheet} {self.range}"
        return self.path or self.url or ""

    @property
    def file_label(self) -> str:
        """How problems name the file: the path as configured, or the URL's last path segment."""
        if self.path:
            return self.path
        parts = urlsplit(self.url or "")
        return PurePosixPath(parts.path).name or parts.hostname or "download"

    def fetch(self, context: FetchContext) -> Feed:
        if self.sheet:
            feed = self._read_sheet(context.progress)
            feed.origin = self.origin
            return feed
        data = self._read_file() if self.path else self._download()
        feed = read_roster(
            data, file=self.file_label, default_school=self.school, progress=context.progress
        )
        feed.origin = self.origin
        return feed

    def _read_file(self) -> bytes:
        assert self.path is not None
        try:
            return Path(self.path).read_bytes()
        except FileNotFoundError:
            raise SourceError(f"The roster file {self.path} does not exist.") from None
        except IsADirectoryError:
            raise SourceError(f"{self.path} is a folder, not a roster file.") from None
        except PermissionError:
            raise SourceError(
                f"The roster file {self.path} cannot be read: permission denied."
            ) from None
        except OSError as exc:
            raise SourceError(f"The roster file {self.path} cannot be read: {exc}.") from None

    def _download(self) -> bytes:
        """GET the URL, retrying 429, 5xx and network failures with backoff; never half-reads."""
        assert self.url is not None
        host = urlsplit(self.url).hostname or "?"
        headers = {"Accept": "text/csv, text/plain;q=0.9, */*;q=0.1"}
        failure = "no attempt made"
        with httpx.Client(timeout=self.timeout, follow_redirects=True, headers=headers) as client:
            for attempt in range(1, self.attempts + 1):
                delay = self.backoff * 2 ** (attempt - 1)
                try:
                    response = client.get(self.url)
                except httpx.TransportError as exc:
                    failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                else:
                    status = response.status_code
                    if 200 <= status < 300:
                        _reject_html(response, self.url)
                        return response.content
                    if status in (401, 403, 404):
                        raise SourceError(_refusal(status, self.url))
                    if status != 429 and status < 500:
                        raise SourceError(
                            f"{self.url} answered HTTP {status}; expected the CSV file. "
                            "Check the link in the source's settings."
                        )
                    failure = f"HTTP {status}"
                    asked = retry_after(response)
                    delay = delay if asked is None else asked
                if attempt == self.attempts:
                    break
                delay = min(delay, self.max_delay)
                logger.warning(
                    "Roster download from %s failed (%s); retrying in %.1fs (attempt %s of %s).",
                    host,
                    failure,
                    delay,
                    attempt + 1,
                    self.attempts,
                )
                self.sleep(delay)
        raise SourceError(
            f"Could not download {self.url} after {self.attempts} attempts (last: {failure}). "
            "The next run will try again; if this persists, check the link opens in a browser."
        )

    def check(self) -> list[Check]:
        """Read and parse the roster once, as a sync would, and say what was found."""
        try:
            feed = self.fetch(FetchContext())
        except InputError as exc:
            return [Check("read", True, "The roster was read."), Check("parse", False, str(exc))]
        except SourceError as exc:
            return [Check("read", False, str(exc))]
        counts = feed.counts()
        return [
            Check(
                "read",
                True,
                f"The roster has {counts['person']} people in {counts['section']} classes.",
            )
        ]

    # The Sheets API --------------------------------------------------------------------------

    def _sheet_settings(self) -> tuple[google_api.ServiceAccountKey | google_api.OAuthClient, Any]:
        if not self.credentials:
            raise ConfigError(
                "A csv source reading a Google Sheet needs 'credentials': a service account key "
                "file (share the sheet with its email) or an OAuth client with a refresh token."
            )
        key = google_api.parse_credentials(self.credentials)
        return key, google_api.Endpoints.from_setting(self.api_endpoint)

    def _read_sheet(self, progress: Progress) -> Feed:
        assert self.sheet is not None
        key, endpoints = self._sheet_settings()
        credentials = google_api.make_credentials(
            key,
            scopes=google_api.SHEETS_SCOPES,
            endpoints=endpoints,
            subject=self.subject,
            refresh_token=self.refresh_token,
        )
        url = (
            f"{endpoints.sheets}/v4/spreadsheets/{quote(self.sheet, safe='')}/values/"
            f"{quote(self.range, safe='')}"
        )
        with google_api.GoogleApi(credentials, subject=self.subject, sleep=self.sheet_sleep) as api:
            try:
                body = api.get(
                    url,
                    {"majorDimension": "ROWS", "valueRenderOption": "FORMATTED_VALUE"},
                    api=SHEETS,
                )
            except google_api.GoogleApiError as exc:
                raise SourceError(self._sheet_refusal(exc.error, key)) from None
        assert body is not None
        tab, first_row = _range_start(str(body.get("range") or self.range))
        values = body.get("values") or []
        if not isinstance(values, list):
            raise SourceError(f"The {SHEETS} answered without a list of values for {self.range}.")
        return read_rows(
            values,
            file=f"Google Sheet {tab!r}" if tab else "Google Sheet",
            default_school=self.school,
            progress=progress,
            first_line=first_row,
        )

    def _sheet_refusal(
        self,
        error: google_api.GoogleError,
        key: google_api.ServiceAccountKey | google_api.OAuthClient,
    ) -> str:
        said = f"(HTTP {error.status}{': ' + error.message if error.message else ''})"
        if error.mentions("SERVICE_DISABLED", "accessNotConfigured"):
            return google_api.explain(SHEETS, error)
        if error.status in (403, 404):
            who = (
                f"the service account {key.client_email}"
                if isinstance(key, google_api.ServiceAccountKey) and not self.subject
                else f"{self.subject or 'the account that gave consent'}"
            )
            return (
                f"The Google Sheet {self.sheet} cannot be opened by {who} {said}. Check the "
                "sheet id (the part of the sheet's address after /d/) and share the sheet with "
                "that account (Viewer is enough)."
            )
        if error.status == 400:
            return (
                f"The range {self.range!r} is not valid in the Google Sheet {self.sheet} {said}. "
                "Use A1 notation with the tab's exact name, like Roster!A:M."
            )
        return google_api.explain(SHEETS, error)


@register("csv")
def create(settings: Mapping[str, str]) -> CsvSource:
    """Build a csv source from its settings: ``path``, ``url`` or ``sheet`` (with ``range``,
    ``credentials``, ``subject``, ``api_endpoint``), and optional ``school``."""
    return CsvSource(
        path=settings.get("path") or None,
        url=settings.get("url") or None,
        school=settings.get("school") or DEFAULT_SCHOOL,
        sheet=(settings.get("sheet") or "").strip() or None,
        range=(settings.get("range") or "").strip() or DEFAULT_RANGE,
        credentials=settings.get("credentials") or None,
        subject=(settings.get("subject") or "").strip() or None,
        api_endpoint=(settings.get("api_endpoint") or "").strip() or None,
        refresh_token=(settings.get("refresh_token") or "").strip() or None,
    )


def _range_start(a1: str) -> tuple[str | None, int]:
    """The tab and first row of an A1 range as the API returns it (``'My tab'!B3:F20``)."""
    tab, sep, cells = a1.rpartition("!")
    if not sep:
        tab, cells = "", a1
    tab = tab.strip()
    if tab.startswith("'") and tab.endswith("'"):
        tab = tab[1:-1].replace("''", "'")
    match = re.match(r"^[A-Za-z]*(\d+)", cells.split(":")[0])
    return tab or None, int(match.group(1)) if match else 1


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and loopback:
        return
    raise ConfigError(
        f"The csv source's url {url!r} must be an https link "
        "(for a Google Sheet: File > Share > Publish to web > CSV)."
    )


def _refusal(status: int, url: str) -> str:
    if urlsplit(url).hostname == "docs.google.com":
        return (
            f"Google Sheets refused the link (HTTP {status}): the sheet is not published to the "
            f"web or the link is wrong. {_PUBLISH_HINT}"
        )
    meaning = {401: "asks for a sign-in", 403: "refuses access", 404: "does not exist"}[status]
    return (
        f"The roster link {url} {meaning} (HTTP {status}). The link must be public and point "
        "at the CSV file itself."
    )


def _reject_html(response: httpx.Response, url: str) -> None:
    content_type = response.headers.get("content-type", "").lower()
    start = response.content[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if "html" in content_type or start.startswith((b"<!doctype html", b"<html")):
        raise SourceError(
            f"{url} returned a web page, not CSV: the sheet is private (Google shows a sign-in "
            f"page) or the link is to the page instead of the file. {_PUBLISH_HINT}"
        )


# --------------------------------------------------------------------------------------------
# Reading the file


def read_roster(
    data: bytes,
    *,
    file: str,
    default_school: str = DEFAULT_SCHOOL,
    progress: Progress = no_progress,
) -> Feed:
    """Parse a roster file's bytes into a full feed, or raise InputError listing every problem.

    Args:
        data: the file's raw bytes (any of the encodings the module accepts).
        file: how problems name the file (a path or a URL's last segment).
        default_school: the school of rows without one.
        progress: called with ``("rows", n)`` while reading.
    """
    text, problems, bad_lines = _decode(data, file)
    if text is None:
        raise InputError(problems)
    reader = _RosterReader(file, default_school, progress, bad_lines)
    reader.problems.extend(problems)
    return reader.read(_records(text, _sniff_delimiter(text), file, reader.problems))


def read_rows(
    rows: Sequence[Sequence[object]],
    *,
    file: str,
    default_school: str = DEFAULT_SCHOOL,
    progress: Progress = no_progress,
    first_line: int = 1,
) -> Feed:
    """Parse a roster given as rows of cells (a sheet's values) like a file's lines.

    Row ``i`` (from 0) is reported as line ``first_line + i``: the sheet's row number when
    ``first_line`` is the first row of the range. Rows shorter than the header are padded with
    empty cells, as the Sheets API leaves out a row's trailing empty cells.
    """
    reader = _RosterReader(file, default_school, progress, set(), cells=True)
    return reader.read(_cell_records(rows, first_line))


def _cell_records(rows: Sequence[Sequence[object]], first_line: int) -> Iterator[_Record]:
    width: int | None = None
    for offset, row in enumerate(rows):
        cells = ["" if cell is None else str(cell) for cell in row]
        if not any(c.strip() for c in cells):
            continue
        if width is None:
            width = len(cells)
        elif len(cells) < width:
            cells += [""] * (width - len(cells))
        line = first_line + offset
        yield _Record(line, line, cells)


def _decode(data: bytes, file: str) -> tuple[str | None, list[Problem], set[int]]:
    """Decode UTF-8 (BOM or not) or UTF-16 with a BOM; name every line that is not UTF-8."""
    if data.startswith(b"PK\x03\x04"):
        return None, [_whole_file(file, "is an Excel workbook (.xlsx), not a CSV file.")], set()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16"), [], set()
        except UnicodeDecodeError:
            return (
                None,
                [_whole_file(file, "starts like UTF-16 text but is not valid UTF-16.")],
                set(),
            )
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        problems: list[Problem] = []
        bad_lines: set[int] = set()
        for number, raw in enumerate(data.split(b"\n"), start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad_lines.add(number)
                problems.append(
                    Problem(
                        f"The line is not valid UTF-8 text (byte 0x{raw[exc.start]:02x} at "
                        f"position {exc.start + 1}); the file was probably saved in another "
                        "encoding.",
                        file=file,
                        line=number,
                        fix=_SAVE_AS_UTF8,
                    )
                )
        text = data.decode("utf-8", errors="replace")
        return text, problems, bad_lines
    if "\x00" in text:
        return None, [_whole_file(file, "contains NUL bytes: it is not a text CSV file.")], set()
    return text, [], set()


def _whole_file(file: str, message: str) -> Problem:
    return Problem(f"The file {message}", file=file, fix=_SAVE_AS_UTF8)


def _sniff_delimiter(text: str) -> str:
    """Pick comma, semicolon or tab: whichever the header line (quoted parts aside) uses most."""
    for line in io.StringIO(text, newline=""):
        if line.strip():
            bare = re.sub(r'"[^"]*"', "", line)
            counts = {d: bare.count(d) for d in _DELIMITERS}
            best = max(_DELIMITERS, key=lambda d: counts[d])
            return best if counts[best] else ","
    return ","


@dataclass
class _Record:
    #: The physical lines the record spans (more than one when a quoted value holds a line end).
    line: int
    end: int
    fields: list[str]
    #: The record is on the file's last line and that line has no line end.
    last: bool = False


def _records(text: str, delimiter: str, file: str, problems: list[Problem]) -> Iterator[_Record]:
    """Yield each CSV record with the physical line it starts on; blank lines are skipped."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    ends_with_newline = text.endswith(("\n", "\r"))
    previous_end = 0
    pending: _Record | None = None
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(
                Problem(f"The file cannot be read as CSV ({exc}).", file=file, line=reader.line_num)
            )
            return
        start, previous_end = previous_end + 1, reader.line_num
        if not any(f.strip() for f in fields):
            continue
        if pending is not None:
            yield pending
        pending = _Record(start, previous_end, fields)
    if pending is not None:
        pending.last = not ends_with_newline and pending.end == previous_end
        yield pending


@dataclass
class _Row:
    line: int
    values: dict[str, str]
    co_teachers: list[str]


@dataclass
class _Person:
    ext_id: str
    role: str
    email: str | None
    given_name: str | None
    family_name: str | None
    grade: str | None
    sis_id: str | None
    state_id: str | None
    school_ext_id: str


@dataclass
class _Identity:
    """Which email each id came with, and which id each email came with, and where."""

    email_by_id: dict[str, tuple[str, int]] = field(default_factory=dict)
    id_by_email: dict[str, tuple[str, int]] = field(default_factory=dict)


class _RosterReader:
    """One pass over the file: validate every row, then build the frames from the good rows."""

    def __init__(
        self,
        file: str,
        default_school: str,
        progress: Progress,
        bad_lines: set[int],
        cells: bool = False,
    ) -> None:
        #: Rows come as cells (a sheet), not as delimited text.
        self.cells = cells
        self.file = file
        self.default_school = _collapse(default_school)
        self.progress = progress
        self.bad_lines = bad_lines
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.truncated: str | None = None
        self.columns: dict[str, int] = {}
        self.header: list[str] = []
        self.identity = _Identity()
        self.record_count = 0

    def problem(
        self,
        message: str,
        line: int | None,
        field_name: str | None = None,
        record_id: str | None = None,
        fix: str | None = None,
    ) -> None:
        column = self.header[self.columns[field_name]] if field_name in self.columns else None
        self.problems.append(Problem(message, self.file, line, column, record_id, fix))

    def read(self, records: Iterator[_Record]) -> Feed:
        header_record = next(records, None)
        if header_record is None:
            self.problem(
                "The file is empty.",
                None,
                fix="Export the roster with a header row and one row per student in each class.",
            )
            raise InputError(self.problems)
        self._map_header(header_record)
        if not self.columns:
            raise InputError(self.problems)

        rows = self._rows(records, header_record.line)
        if not self.record_count:
            self.problem(
                "The file has a header but no rows.",
                header_record.line,
                fix="Add one row per student in each class below the header.",
            )
        if self.problems:
            raise InputError(self.problems)
        feed = self._build(rows)
        logger.info(
            "Read csv roster: %s rows, %s people, %s sections, %s warnings.",
            len(rows),
            feed.frame("person").height,
            feed.frame("section").height,
            len(feed.warnings),
        )
        return feed

    def _map_header(self, record: _Record) -> None:
        names = [f.strip() for f in record.fields]
        while names and not names[-1]:
            names.pop()
        self.header = names
        by_key: dict[str, int] = {}
        for index, name in enumerate(names):
            if name:
                by_key.setdefault(_header_key(name), index)

        used: set[int] = set()
        for name, keys in _ALIAS_KEYS.items():
            for key in keys:
                at = by_key.get(key)
                if at is not None and at not in used:
                    self.columns[name] = at
                    used.add(at)
                    break

        before = len(self.problems)
        found = _quoted([n for n in names if n]) or "none"
        missing = [f for f in ("teacher_email", "section_name") if f not in self.columns]
        for name in missing:
            self._missing_column(_LABELS[name], ALIASES[name], found, record.line)
        if "student_email" not in self.columns and "student_id" not in self.columns:
            self._missing_column(
                "student email or student id",
                ALIASES["student_email"] + ALIASES["student_id"],
                found,
                record.line,
            )
        if len(self.problems) > before:
            self.columns.clear()
            return

        ignored = [n for i, n in enumerate(names) if n and i not in used]
        if ignored:
            self.warnings.append(
                Problem(
                    f"Ignored column(s) not used for rosters: {_quoted(ignored)}.",
                    self.file,
                    record.line,
                    fix="Rename a column to one of the documented headers if it should be read.",
                )
            )

    def _missing_column(self, label: str, aliases: tuple[str, ...], found: str, line: int) -> None:
        accepted = _quoted(aliases)
        self.problem(
            f"No {label} column. Headers accepted for it: {accepted}. Headers found: {found}.",
            line,
            fix=f"Add a {label} column or rename the existing one to an accepted header.",
        )

    def _rows(self, records: Iterator[_Record], header_line: int) -> list[_Row]:
        width = len(self.header)
        rows: list[_Row] = []
        seen: set[tuple[str, ...]] = set()
        duplicates: list[int] = []
        count = 0
        for record in records:
            count += 1
            if count % _PROGRESS_EVERY == 0:
                self.progress("rows", count)
            cells = [f.strip() for f in record.fields]
            if record.end > record.line and (
                len(cells) != width or any("\n" in c or "\r" in c for c in self._mapped(cells))
            ):
                self.problem(
                    f"A value runs from line {record.line} to line {record.end}; a double quote "
                    "is probably not closed.",
                    record.line,
                    fix="Close the quote, or remove the stray double quote.",
                )
                continue
            if len(cells) > width:
                if any(cells[width:]):
                    self.problem(
                        f"The row has {len(cells)} fields but the header has {width}.",
                        record.line,
                        fix=(
                            "Clear the cells right of the last headed column, or give that "
                            f"column a header in row {header_line}."
                        )
                        if self.cells
                        else "A value probably contains the delimiter: put that value in "
                        "double quotes, or remove the extra field. The header is line "
                        f"{header_line}.",
                    )
                    continue
                del cells[width:]
            elif len(cells) < width:
                if record.last:
                    self.truncated = (
                        f"{self.file} line {record.line}: the last line has {len(cells)} of "
                        f"{width} fields and no line end; the file looks cut short."
                    )
                    self.warnings.append(
                        Problem(
                            f"The last line has {len(cells)} of {width} fields and no line end; "
                            "it was left out because the file looks cut short.",
                            self.file,
                            record.line,
                            fix="Check the file was saved or downloaded completely.",
                        )
                    )
                    continue
                self.problem(
                    f"The row has {len(cells)} fields but the header has {width}.",
                    record.line,
                    fix="Fill in the missing fields (empty ones still need their delimiters).",
                )
                continue
            key = tuple(cells)
            if key in seen:
                duplicates.append(record.line)
                continue
            seen.add(key)
            row = self._row(record.line, cells)
            if row is not None:
                rows.append(row)
        self.progress("rows", count)
        self.record_count = count
        if duplicates:
            self.warnings.append(
                Problem(
                    f"Dropped {len(duplicates)} duplicate row(s) (the first at line "
                    f"{duplicates[0]}); each repeats an earlier row exactly.",
                    self.file,
                    duplicates[0],
                )
            )
        return rows

    def _mapped(self, cells: list[str]) -> list[str]:
        return [cells[i] for i in self.columns.values() if i < len(cells)]

    def _row(self, line: int, cells: list[str]) -> _Row | None:
        """Check one row's values; return it if nothing is wrong with it."""
        values = {name: cells[index] for name, index in self.columns.items()}
        if line in self.bad_lines:
            return None
        before = len(self.problems)

        written_teacher = values["teacher_email"]
        teacher = values["teacher_email"] = written_teacher.lower()
        if not teacher:
            self.problem(
                "The teacher email is empty.",
                line,
                "teacher_email",
                fix="Fill in the teacher's school email.",
            )
        elif not _EMAIL.match(teacher):
            self.problem(
                f"{written_teacher!r} is not an email address.",
                line,
                "teacher_email",
                fix="Use the teacher's full school email, like name@school.org.",
            )
        if not values["section_name"]:
            self.problem(
                "The class name is empty.",
                line,
                "section_name",
                fix="Fill in the name of the class.",
            )

        written_student = values.get("student_email", "")
        student = values["student_email"] = written_student.lower()
        student_id = values.get("student_id", "")
        if not student and not student_id:
            self.problem(
                "The row has neither a student email nor a student id.",
                line,
                "student_email" if "student_email" in self.columns else "student_id",
                fix="Fill in the student's email or id, or delete the row.",
            )
        elif student and not _EMAIL.match(student):
            self.problem(
                f"{written_student!r} is not an email address.",
                line,
                "student_email",
                record_id=student_id or None,
                fix="Use the student's full school email, like name@school.org.",
            )

        co_teachers = []
        for written in re.split(r"[,;]", values.get("co_teachers", "")):
            co_teacher = written.strip().lower()
            if not co_teacher:
                continue
            if _EMAIL.match(co_teacher):
                co_teachers.append(co_teacher)
            else:
                self.problem(
                    f"{written.strip()!r} is not an email address.",
                    line,
                    "co_teachers",
                    fix="List co-teachers by email, separated by commas or semicolons.",
                )

        if len(self.problems) > before:
            return None
        self._note_identity(student_id, student, line, "student_id")
        self._note_identity(values.get("teacher_id", ""), teacher, line, "teacher_id")
        return _Row(line, values, co_teachers)

    def _note_identity(self, ext_id: str, email_address: str, line: int, field_name: str) -> None:
        """Remember which id goes with which email; the same id or email twice must agree."""
        if not ext_id or not email_address:
            return
        label = "student id" if field_name == "student_id" else "teacher id"
        known = self.identity.email_by_id.setdefault(ext_id, (email_address, line))
        if known[0] != email_address:
            self.problem(
                f"The id {ext_id!r} appears with two emails: {known[0]!r} (line {known[1]}) and "
                f"{email_address!r}.",
                line,
                field_name,
                record_id=ext_id,
                fix=f"Each {label} belongs to one person: correct the id or the email.",
            )
        known = self.identity.id_by_email.setdefault(email_address, (ext_id, line))
        if known[0] != ext_id:
            self.problem(
                f"The email {email_address!r} appears with two ids: {known[0]!r} (line "
                f"{known[1]}) and {ext_id!r}.",
                line,
                field_name,
                record_id=ext_id,
                fix="Each person has one id: correct the id or the email.",
            )

    # ----------------------------------------------------------------------------------------
    # Building the frames

    def _person_id(self, ext_id: str, email_address: str) -> str:
        if ext_id:
            return f"id:{ext_id}"
        known = self.identity.id_by_email.get(email_address)
        return f"id:{known[0]}" if known else f"email:{email_address}"

    def _build(self, rows: list[_Row]) -> Feed:
        schools: dict[str, dict[str, str | int | None]] = {}
        people: dict[str, _Person] = {}
        sections: dict[str, dict[str, str | int | None]] = {}
        owners: dict[str, str] = {}
        enrollments: dict[str, dict[str, str | int]] = {}
        first_line: dict[str, int] = {}
        both_roles: set[str] = set()
        renamed: dict[str, int] = {}
        defaulted = 0

        def person(ext_id: str, role: str, email_address: str, school: str, row: _Row) -> None:
            values = row.values
            student = role == "student"
            given, family = _names(values, role)
            sis_id = values.get("student_id" if student else "teacher_id") or None
            grade = (values.get("grade") or None) if student else None
            state_id = (values.get("state_id") or None) if student else None
            current = people.get(ext_id)
            if current is None:
                first_line[ext_id] = row.line
                people[ext_id] = _Person(
                    ext_id=ext_id,
                    role=role,
                    email=email_address or None,
                    given_name=given,
                    family_name=family,
                    grade=grade,
                    sis_id=sis_id,
                    state_id=state_id,
                    school_ext_id=school,
                )
                return
            if current.role != role:
                both_roles.add(ext_id)
                current.role = "teacher"
            current.email = current.email or email_address or None
            current.given_name = current.given_name or given
            current.family_name = current.family_name or family
            current.grade = current.grade or grade
            current.sis_id = current.sis_id or sis_id
            current.state_id = current.state_id or state_id

        def enroll(section_id: str, person_id: str, role: str, line: int) -> None:
            ext_id = f"{section_id}|{person_id}"
            current = enrollments.get(ext_id)
            if current is None or _RANK[role] < _RANK[str(current["role"])]:
                enrollments[ext_id] = {
                    "ext_id": ext_id,
                    "section_ext_id": section_id,
                    "person_ext_id": person_id,
                    "role": role,
                    LINE: line,
                }

        for row in rows:
            values = row.values
            school_name = _collapse(values.get("school", "")) or self.default_school
            if "school" in self.columns and not values["school"]:
                defaulted += 1
            school_id = school_name.casefold()
            schools.setdefault(
                school_id, {"ext_id": school_id, "name": school_name, LINE: row.line}
            )

            teacher_id = self._person_id(values.get("teacher_id", ""), values["teacher_email"])
            person(teacher_id, "teacher", values["teacher_email"], school_id, row)
            student_id = self._person_id(values.get("student_id", ""), values["student_email"])
            person(student_id, "student", values["student_email"], school_id, row)

            section_id = self._section_id(values, school_id)
            section = {
                "ext_id": section_id,
                "school_ext_id": school_id,
                "name": values["section_name"],
                "course": values["section_name"],
                "period": values.get("period") or None,
                "room": values.get("room") or None,
                LINE: row.line,
            }
            known = sections.setdefault(section_id, section)
            if known is not section and any(
                section[k] != known[k] for k in ("school_ext_id", "name", "period", "room")
            ):
                renamed.setdefault(section_id, row.line)

            owner = owners.setdefault(section_id, teacher_id)
            enroll(
                section_id, teacher_id, "owner" if owner == teacher_id else "co-teacher", row.line
            )
            for co_teacher in row.co_teachers:
                co_teacher_id = self._person_id("", co_teacher)
                person(co_teacher_id, "teacher", co_teacher, school_id, _NO_NAMES)
                enroll(section_id, co_teacher_id, "co-teacher", row.line)
            enroll(section_id, student_id, "student", row.line)

        self._warn_build(defaulted, renamed, both_roles)
        frames: dict[Entity, pl.DataFrame] = {
            "school": _frame("school", list(schools.values())),
            "person": _frame(
                "person", [{**vars(p), LINE: first_line.get(p.ext_id)} for p in people.values()]
            ),
            "section": _frame("section", list(sections.values())),
            "enrollment": _frame("enrollment", list(enrollments.values())),
        }
        return Feed(
            mode="full",
            frames=frames,
            warnings=self.warnings,
            truncated=self.truncated,
            origin=self.file,
            files=dict.fromkeys(frames, self.file),
        )

    def _section_id(self, values: dict[str, str], school_id: str) -> str:
        """The section id column if given, else a hash of what names the section in the file.

        Without an id, a section is school + teacher + class name + period: renaming the class
        in the file makes a new section (the old one ends) rather than a renamed one.
        """
        given = values.get("section_id", "")
        if given:
            return f"id:{given}"
        parts = (school_id, values["teacher_email"], _key(values["section_name"]))
        natural = "\x1f".join((*parts, _key(values.get("period", ""))))
        return "key:" + hashlib.sha256(natural.encode()).hexdigest()[:20]

    def _warn_build(self, defaulted: int, renamed: dict[str, int], both_roles: set[str]) -> None:
        if defaulted:
            self.warnings.append(
                Problem(
                    f"{defaulted} row(s) have no school; they were put in {self.default_school!r}.",
                    self.file,
                    column=self.header[self.columns["school"]],
                    fix="Fill in the school, or set the source's default school.",
                )
            )
        for section_id, line in renamed.items():
            self.warnings.append(
                Problem(
                    "Rows of the same section id name a different class, period, room or "
                    "school; the first row's values were kept.",
                    self.file,
                    line,
                    self.header[self.columns["section_id"]],
                    record_id=section_id.removeprefix("id:"),
                    fix="Make every row of a section id describe the same class.",
                )
            )
        if both_roles:
            self.warnings.append(
                Problem(
                    f"{len(both_roles)} person(s) appear as both a teacher and a student; "
                    "they are kept as teachers.",
                    self.file,
                    fix="Check those rows use the right email in each column.",
                )
            )


_RANK = {"owner": 0, "co-teacher": 1, "student": 2}
_NO_NAMES = _Row(0, {}, [])


def _names(values: Mapping[str, str], who: str) -> tuple[str | None, str | None]:
    """A person's given and family names from the first/last columns or a full-name column.

    A full name splits at its last space ("Mary Ann Smith" → "Mary Ann", "Smith"), or at a comma
    when written family name first ("Smith, Mary Ann").
    """
    prefix = "teacher_" if who == "teacher" else ""
    given = values.get(f"{prefix}given_name", "")
    family = values.get(f"{prefix}family_name", "")
    full = _collapse(values.get(f"{who}_name", ""))
    if not given and not family and full:
        if "," in full:
            family, _, given = (p.strip() for p in full.partition(","))
        else:
            given, _, family = full.rpartition(" ")
            if not given:
                given, family = family, ""
    return given or None, family or None


def _frame(entity: Entity, records: Sequence[Mapping[str, object]]) -> pl.DataFrame:
    schema: dict[str, pl.DataType] = {**SCHEMAS[entity], LINE: pl.Int64()}
    columns = {name: [r.get(name) for r in records] for name in schema}
    return pl.DataFrame(columns, schema=schema)
