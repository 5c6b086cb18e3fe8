"""The csv connector: header aliases, encodings, tolerance, every error, and download by URL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from rostersync.domain.feed import Feed
from rostersync.errors import ConfigError, InputError, Problem, SourceError
from rostersync.sources import base
from rostersync.sources.base import FetchContext
from rostersync.sources.csv_simple import CsvSource, create, read_roster


def read(text: str, **kwargs: Any) -> Feed:
    return read_roster(text.encode(), file="roster.csv", **kwargs)


def problems(data: str | bytes) -> list[Problem]:
    raw = data.encode() if isinstance(data, str) else data
    with pytest.raises(InputError) as caught:
        read_roster(raw, file="roster.csv")
    return caught.value.problems


def person(feed: Feed, ext_id: str) -> dict[str, Any]:
    rows = feed.frame("person").filter(pl.col("ext_id") == ext_id)
    assert rows.height == 1, f"{ext_id} appears {rows.height} times"
    return rows.drop("_line").row(0, named=True)


def roles(feed: Feed, section_ext_id: str) -> dict[str, str]:
    """Person ext id → enrollment role in one section."""
    rows = feed.frame("enrollment").filter(pl.col("section_ext_id") == section_ext_id)
    return dict(zip(rows["person_ext_id"], rows["role"], strict=True))


def section_of(feed: Feed, name: str) -> dict[str, Any]:
    rows = feed.frame("section").filter(pl.col("name") == name)
    assert rows.height == 1
    return rows.drop("_line").row(0, named=True)


# --------------------------------------------------------------------------------------------
# Mapping


def test_minimal_file_maps_to_every_frame() -> None:
    feed = read(
        "teacher email,class name,student email\n"
        "t@school.org,Math 7,a@school.org\n"
        "t@school.org,Math 7,b@school.org\n"
    )

    assert feed.mode == "full"
    assert feed.counts() == {
        "school": 1,
        "term": 0,
        "person": 3,
        "section": 1,
        "enrollment": 3,
    }
    assert feed.frame("school").drop("_line").rows(named=True) == [
        {"ext_id": "default school", "name": "Default school", "sis_id": None}
    ]
    teacher = person(feed, "email:t@school.org")
    assert teacher["role"] == "teacher"
    assert teacher["email"] == "t@school.org"
    assert teacher["school_ext_id"] == "default school"
    assert person(feed, "email:a@school.org")["role"] == "student"

    section = section_of(feed, "Math 7")
    assert section["ext_id"].startswith("key:")
    assert section["course"] == "Math 7"
    assert section["term_ext_id"] is None
    assert section["school_ext_id"] == "default school"
    assert roles(feed, section["ext_id"]) == {
        "email:t@school.org": "owner",
        "email:a@school.org": "student",
        "email:b@school.org": "student",
    }
    enrollment = feed.frame("enrollment").filter(pl.col("role") == "student").row(0, named=True)
    assert enrollment["ext_id"] == f"{section['ext_id']}|email:a@school.org"


def test_header_aliases_and_case_are_matched() -> None:
    feed = read(
        "INSTRUCTOR_EMAIL,Section Name,Student E-mail,Given Name,Surname,Grade Level,Block,"
        "Room Number,School Name,SIS ID,State.ID,Teacher First Name,Teacher Last Name\n"
        "T@School.org , Biology , A@School.org,Ann,Lee,9,3,B12,Lincoln High,S1,NY1,Tom,Hill\n"
    )

    student = person(feed, "id:S1")
    assert student == {
        "ext_id": "id:S1",
        "role": "student",
        "email": "a@school.org",
        "given_name": "Ann",
        "family_name": "Lee",
        "grade": "9",
        "sis_id": "S1",
        "state_id": "NY1",
        "google_id": None,
        "school_ext_id": "lincoln high",
    }
    teacher = person(feed, "email:t@school.org")
    assert (teacher["given_name"], teacher["family_name"]) == ("Tom", "Hill")
    section = section_of(feed, "Biology")
    assert (section["period"], section["room"], section["school_ext_id"]) == (
        "3",
        "B12",
        "lincoln high",
    )
    assert feed.warnings == []


def test_full_name_column_is_split() -> None:
    feed = read(
        "teacher,class,student,student name,teacher name\n"
        "t@s.org,Art,a@s.org,Mary Ann Smith,Pat Jones\n"
        't@s.org,Art,b@s.org,"Ray, John",Pat Jones\n'
        "t@s.org,Art,c@s.org,Cher,Pat Jones\n"
    )

    names = {
        r["email"]: (r["given_name"], r["family_name"])
        for r in feed.frame("person").iter_rows(named=True)
    }
    assert names == {
        "t@s.org": ("Pat", "Jones"),
        "a@s.org": ("Mary Ann", "Smith"),
        "b@s.org": ("John", "Ray"),
        "c@s.org": ("Cher", None),
    }


def test_student_id_alone_identifies_a_student() -> None:
    feed = read("teacher,class,student number\nt@s.org,Art,1001\n")

    student = person(feed, "id:1001")
    assert (student["email"], student["sis_id"]) == (None, "1001")


def test_student_in_several_classes_is_one_person() -> None:
    feed = read(
        "teacher,class,student,student id\n"
        "t@s.org,Math,a@s.org,S1\n"
        "u@s.org,History,a@s.org,\n"
        "u@s.org,Art,A@S.ORG,S1\n"
    )

    students = feed.frame("person").filter(pl.col("role") == "student")
    assert students["ext_id"].to_list() == ["id:S1"]
    enrolled = feed.frame("enrollment").filter(pl.col("person_ext_id") == "id:S1")
    assert enrolled.height == 3
    assert set(enrolled["role"]) == {"student"}


def test_schools_are_one_per_normalised_name() -> None:
    feed = read(
        "school,teacher,class,student\n"
        "Lincoln  High,t@s.org,Math,a@s.org\n"
        " lincoln high ,t@s.org,Art,b@s.org\n"
        "Oak Elementary,u@s.org,Reading,c@s.org\n"
    )

    assert feed.frame("school").select("ext_id", "name").rows() == [
        ("lincoln high", "Lincoln High"),
        ("oak elementary", "Oak Elementary"),
    ]
    assert person(feed, "email:c@s.org")["school_ext_id"] == "oak elementary"


def test_default_school_comes_from_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "roster.csv"
    path.write_text("teacher,class,student\nt@s.org,Math,a@s.org\n")

    feed = create({"path": str(path), "school": "Hill Middle"}).fetch(FetchContext())

    assert feed.frame("school").drop("_line").rows() == [("hill middle", "Hill Middle", None)]
    assert feed.origin == str(path)


def test_empty_school_cell_falls_back_to_default_with_a_warning() -> None:
    feed = read("school,teacher,class,student\nOak,t@s.org,Math,a@s.org\n,t@s.org,Art,b@s.org\n")

    assert set(feed.frame("school")["name"]) == {"Oak", "Default school"}
    assert any("1 row(s) have no school" in str(w) for w in feed.warnings)


def test_section_key_is_stable_and_distinguishes_periods() -> None:
    first = read(
        "teacher,class,student,period\nt@s.org,Math 7,a@s.org,1\nt@s.org,Math 7,b@s.org,2\n"
    )
    again = read("teacher,class,student,period\nT@S.org,  math   7 ,a@s.org,1\n")

    ids = first.frame("section")["ext_id"].to_list()
    assert len(set(ids)) == 2
    assert again.frame("section")["ext_id"].to_list() == [ids[0]]


def test_co_teachers_are_enrolled_as_co_teachers() -> None:
    feed = read(
        "teacher,class,student,co-teacher(s)\n"
        't@s.org,Math,a@s.org,"u@s.org, v@s.org"\n'
        "t@s.org,Math,b@s.org,u@s.org;w@s.org\n"
    )

    section = section_of(feed, "Math")
    assert roles(feed, section["ext_id"]) == {
        "email:t@s.org": "owner",
        "email:u@s.org": "co-teacher",
        "email:v@s.org": "co-teacher",
        "email:w@s.org": "co-teacher",
        "email:a@s.org": "student",
        "email:b@s.org": "student",
    }
    teachers = feed.frame("person").filter(pl.col("role") == "teacher")
    assert sorted(teachers["email"]) == ["t@s.org", "u@s.org", "v@s.org", "w@s.org"]


def test_section_id_rows_with_several_teachers() -> None:
    feed = read(
        "section id,teacher,teacher id,class,student,student id,period,room\n"
        "SEC1,t@s.org,T1,Algebra,a@s.org,S1,2,101\n"
        "SEC1,u@s.org,T2,Algebra,b@s.org,S2,2,101\n"
        "SEC1,t@s.org,,Algebra,c@s.org,,2,101\n"
        "SEC2,u@s.org,T2,Geometry,a@s.org,S1,3,102\n"
    )

    assert feed.frame("section").select("ext_id", "name", "period", "room").rows() == [
        ("id:SEC1", "Algebra", "2", "101"),
        ("id:SEC2", "Geometry", "3", "102"),
    ]
    assert roles(feed, "id:SEC1") == {
        "id:T1": "owner",
        "id:T2": "co-teacher",
        "id:S1": "student",
        "id:S2": "student",
        "email:c@s.org": "student",
    }
    assert roles(feed, "id:SEC2") == {"id:T2": "owner", "id:S1": "student"}
    assert person(feed, "id:T1")["sis_id"] == "T1"
    assert "id:SEC1|id:S1" in feed.frame("enrollment")["ext_id"].to_list()


def test_section_id_rows_that_disagree_keep_the_first_and_warn() -> None:
    feed = read(
        "class id,teacher,class,student\n"
        "C1,t@s.org,Algebra,a@s.org\n"
        "C1,t@s.org,Algebra II,b@s.org\n"
    )

    assert feed.frame("section")["name"].to_list() == ["Algebra"]
    warning = next(w for w in feed.warnings if w.record_id == "C1")
    assert (warning.line, warning.column) == (3, "class id")


def test_teacher_who_is_also_a_student_is_one_teacher() -> None:
    feed = read("teacher,class,student\nt@s.org,Math,a@s.org\nt@s.org,Math,t@s.org\n")

    assert person(feed, "email:t@s.org")["role"] == "teacher"
    assert roles(feed, section_of(feed, "Math")["ext_id"])["email:t@s.org"] == "owner"
    assert any("both a teacher and a student" in str(w) for w in feed.warnings)


# --------------------------------------------------------------------------------------------
# Tolerance


def test_utf8_bom_is_ignored() -> None:
    feed = read_roster(
        "\ufeffTeacher,Class,Student,Student Name\nt@s.org,Français,a@s.org,José Núñez\n".encode(),
        file="roster.csv",
    )

    assert section_of(feed, "Français")["name"] == "Français"
    assert person(feed, "email:a@s.org")["given_name"] == "José"


def test_utf16_tab_separated_unicode_text() -> None:
    text = (
        "Teacher Email\tClass Name\tStudent Email\tLast Name\r\nt@s.org\tMath\ta@s.org\tMüller\r\n"
    )

    feed = read_roster(text.encode("utf-16"), file="roster.txt")

    assert person(feed, "email:a@s.org")["family_name"] == "Müller"
    assert feed.frame("section")["name"].to_list() == ["Math"]


def test_semicolon_delimiter_is_sniffed() -> None:
    feed = read("Teacher;Class;Student;Student Name\nt@s.org;Math;a@s.org;Lee, Ann\n")

    student = person(feed, "email:a@s.org")
    assert (student["given_name"], student["family_name"]) == ("Ann", "Lee")


def test_crlf_blank_lines_empty_rows_and_trailing_fields() -> None:
    text = (
        "\r\n"
        "teacher,class,student,,\r\n"
        "\r\n"
        "  t@s.org  ,  Math  ,  a@s.org  \r\n"
        ",,\r\n"
        "t@s.org,Math,b@s.org,,,\r\n"
        "\r\n"
    )

    feed = read(text)

    assert sorted(feed.frame("person")["email"]) == ["a@s.org", "b@s.org", "t@s.org"]
    assert feed.frame("section")["name"].to_list() == ["Math"]
    assert feed.warnings == []


def test_line_numbers_count_physical_lines() -> None:
    found = problems("teacher,class,student\n\n,,\nt@s.org,Math,a@s.org\n\nbad,Math,b@s.org\n")

    assert [(p.line, p.column) for p in found] == [(6, "teacher")]


def test_extra_columns_are_ignored_with_one_warning() -> None:
    feed = read("Notes,teacher,class,student,Locker\nhello,t@s.org,Math,a@s.org,12\n")

    assert feed.frame("person").height == 2
    assert len(feed.warnings) == 1
    assert feed.warnings[0].line == 1
    assert "'Notes', 'Locker'" in feed.warnings[0].message


def test_exact_duplicate_rows_are_dropped_with_one_warning() -> None:
    feed = read(
        "teacher,class,student\n"
        "t@s.org,Math,a@s.org\n"
        "t@s.org,Math,a@s.org\n"
        "t@s.org,Math,b@s.org\n"
        "t@s.org , Math,a@s.org\n"
    )

    assert feed.frame("enrollment").height == 3
    assert len(feed.warnings) == 1
    assert "Dropped 2 duplicate row(s)" in feed.warnings[0].message
    assert feed.warnings[0].line == 3


def test_truncated_last_line_is_dropped_and_flagged() -> None:
    feed = read("teacher,class,student\nt@s.org,Math,a@s.org\nt@s.org,Ma")

    assert feed.truncated is not None
    assert "roster.csv line 3" in feed.truncated
    assert feed.frame("enrollment").height == 2
    assert [w.line for w in feed.warnings] == [3]


def test_progress_reports_rows(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    lines = [f"t@s.org,Math,s{i}@s.org" for i in range(2500)]
    path.write_text("teacher,class,student\n" + "\n".join(lines) + "\n")
    seen: list[tuple[str, int]] = []

    feed = CsvSource(path=str(path)).fetch(FetchContext(progress=lambda w, n: seen.append((w, n))))

    assert seen == [("rows", 1000), ("rows", 2000), ("rows", 2500)]
    assert feed.frame("enrollment").height == 2501


# --------------------------------------------------------------------------------------------
# Errors


def test_missing_required_columns_list_aliases_and_headers() -> None:
    found = problems("Name,Room\nx,y\n")

    assert len(found) == 3
    assert all((p.file, p.line) == ("roster.csv", 1) for p in found)
    text = str(found[0])
    assert text.startswith("roster.csv, line 1: No teacher email column.")
    assert "'instructor email'" in text
    assert "Headers found: 'Name', 'Room'." in text
    assert "No class name column" in str(found[1])
    assert "No student email or student id column" in str(found[2])
    assert "'student number'" in str(found[2])


def test_one_missing_column_is_reported_alone() -> None:
    found = problems("teacher,student\nt@s.org,a@s.org\n")

    assert [p.message.split(".")[0] for p in found] == ["No class name column"]


@pytest.mark.parametrize("text", ["", "\n\n", "\ufeff"])
def test_empty_file(text: str) -> None:
    [found] = problems(text)

    assert str(found).startswith("roster.csv: The file is empty.")


def test_header_only() -> None:
    [found] = problems("teacher,class,student\r\n\r\n")

    assert str(found).startswith("roster.csv, line 1: The file has a header but no rows.")


def test_every_row_problem_is_reported_at_once() -> None:
    found = problems(
        "Teacher E-mail,Class,Student,Student ID,Co-teachers\n"
        "t@s.org,Math,a@s.org,S1,\n"  # 2: fine
        "t@s,Math,b@s.org,S2,\n"  # 3: teacher email
        "t@s.org,Math,not an email,S3,\n"  # 4: student email
        "t@s.org,Math,,,\n"  # 5: neither email nor id
        "t@s.org,,c@s.org,S4,\n"  # 6: class name
        "t@s.org,Math,d@s.org,S1,\n"  # 7: S1 with another email
        "t@s.org,Math,e@s.org,S5,u@s.org;oops\n"  # 8: co-teacher
        "t@s.org,Math\n"  # 9: short row
        "t@s.org,Math,f@s.org,S6,,,surprise\n"  # 10: too many fields
        ",Math,g@s.org,S7,\n"  # 11: no teacher
    )

    where = [(p.line, p.column) for p in found]
    assert where == [
        (3, "Teacher E-mail"),
        (4, "Student"),
        (5, "Student"),
        (6, "Class"),
        (7, "Student ID"),
        (8, "Co-teachers"),
        (9, None),
        (10, None),
        (11, "Teacher E-mail"),
    ]
    assert all(p.file == "roster.csv" and p.fix for p in found)
    assert str(found[0]).startswith(
        "roster.csv, line 3, column 'Teacher E-mail': 't@s' is not an email address."
    )
    assert "neither a student email nor a student id" in found[2].message
    assert found[4].record_id == "S1"
    assert "'a@s.org' (line 2) and 'd@s.org'" in found[4].message
    assert "'oops' is not an email address" in found[5].message
    assert "has 2 fields but the header has 5" in found[6].message
    assert "has 7 fields but the header has 5" in found[7].message
    assert "double quotes" in (found[7].fix or "")


def test_same_email_with_two_ids_is_an_error() -> None:
    [found] = problems(
        "teacher,class,student,student id\nt@s.org,A,a@s.org,S1\nt@s.org,B,a@s.org,S2\n"
    )

    assert (found.line, found.column, found.record_id) == (3, "student id", "S2")


def test_invalid_utf8_names_the_line() -> None:
    data = b"teacher,class,student,student name\nt@s.org,Math,a@s.org,Ann\n"
    data += "t@s.org,Math,b@s.org,José\n".encode("cp1252")
    data += b"bad,Math,c@s.org,Cy\n"

    found = problems(data)

    assert [(p.line, p.column) for p in found] == [(3, None), (4, "teacher")]
    assert str(found[0]).startswith("roster.csv, line 3: The line is not valid UTF-8")
    assert "CSV UTF-8" in (found[0].fix or "")


def test_unclosed_quote_is_reported_where_it_starts() -> None:
    [found] = problems('teacher,class,student\nt@s.org,"Math,a@s.org\nt@s.org,Art,b@s.org\n')

    assert found.line == 2
    assert "double quote is probably not closed" in found.message


def test_excel_workbook_is_refused() -> None:
    [found] = problems(b"PK\x03\x04rest-of-zip")

    assert "Excel workbook" in found.message


# --------------------------------------------------------------------------------------------
# Settings


def test_settings_need_exactly_one_of_path_and_url() -> None:
    with pytest.raises(ConfigError, match="exactly one of 'path'"):
        create({})
    with pytest.raises(ConfigError, match="exactly one of 'path'"):
        create({"path": "/x.csv", "url": "https://example.org/x.csv"})


@pytest.mark.parametrize(
    "url", ["http://example.org/x.csv", "ftp://example.org/x.csv", "docs.google.com/x"]
)
def test_url_must_be_https_unless_loopback(url: str) -> None:
    with pytest.raises(ConfigError, match="https"):
        create({"url": url})


def test_registered_as_csv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "_load_builtin", lambda: None)

    source = base.build("csv", {"url": "http://127.0.0.1:9/roster.csv"})

    assert isinstance(source, CsvSource)
    assert (source.kind, source.mode) == ("csv", "full")


def test_missing_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        create({"path": str(tmp_path / "nope.csv")}).fetch(FetchContext())


def test_file_problems_name_the_configured_path(tmp_path: Path) -> None:
    path = tmp_path / "roster.csv"
    path.write_text("teacher,class,student\nt@s.org,Math,nope\n")

    with pytest.raises(InputError) as caught:
        create({"path": str(path)}).fetch(FetchContext())

    assert str(caught.value.problems[0]).startswith(f"{path}, line 2, column 'student'")


# --------------------------------------------------------------------------------------------
# Download


Reply = tuple[int, dict[str, str], bytes]

CSV = b"teacher,class,student\nt@s.org,Math,a@s.org\n"


class Loopback:
    """A loopback HTTP server that answers each path from a script of replies, in order."""

    def __init__(self) -> None:
        self.script: dict[str, list[Reply]] = {}
        self.hits: dict[str, int] = {}
        loopback = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                loopback.hits[path] = loopback.hits.get(path, 0) + 1
                replies = loopback.script.get(path) or [(404, {}, b"not found")]
                status, headers, body = replies.pop(0) if len(replies) > 1 else replies[0]
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server() -> Iterator[Loopback]:
    loopback = Loopback()
    yield loopback
    loopback.close()


def source(url: str, sleeps: list[float]) -> CsvSource:
    return CsvSource(url=url, sleep=sleeps.append, timeout=5.0)


def test_download_csv(server: Loopback) -> None:
    server.script["/pub"] = [(200, {"Content-Type": "text/csv"}, CSV)]
    sleeps: list[float] = []

    feed = source(f"{server.url}/pub?output=csv", sleeps).fetch(FetchContext())

    assert feed.frame("enrollment").height == 2
    assert feed.origin == f"{server.url}/pub?output=csv"
    assert sleeps == []


def test_download_follows_redirects(server: Loopback) -> None:
    server.script["/old"] = [(302, {"Location": f"{server.url}/new.csv"}, b"")]
    server.script["/new.csv"] = [(200, {"Content-Type": "text/csv"}, CSV)]

    feed = source(f"{server.url}/old", []).fetch(FetchContext())

    assert feed.frame("person").height == 2


def test_download_retries_429_honouring_retry_after(server: Loopback) -> None:
    server.script["/r.csv"] = [
        (429, {"Retry-After": "3"}, b"slow down"),
        (200, {"Content-Type": "text/csv"}, CSV),
    ]
    sleeps: list[float] = []

    feed = source(f"{server.url}/r.csv", sleeps).fetch(FetchContext())

    assert sleeps == [3.0]
    assert server.hits["/r.csv"] == 2
    assert feed.frame("enrollment").height == 2


def test_download_retries_5xx_with_exponential_backoff(server: Loopback) -> None:
    server.script["/r.csv"] = [(503, {}, b""), (500, {}, b""), (200, {}, CSV)]
    sleeps: list[float] = []

    source(f"{server.url}/r.csv", sleeps).fetch(FetchContext())

    assert sleeps == [1.0, 2.0]


def test_download_gives_up_after_the_last_attempt(server: Loopback) -> None:
    server.script["/r.csv"] = [(502, {}, b"")]
    sleeps: list[float] = []

    with pytest.raises(SourceError, match="after 4 attempts"):
        source(f"{server.url}/r.csv", sleeps).fetch(FetchContext())

    assert sleeps == [1.0, 2.0, 4.0]
    assert server.hits["/r.csv"] == 4


@pytest.mark.parametrize("status", [401, 403, 404])
def test_download_refused_is_a_plain_source_error(server: Loopback, status: int) -> None:
    server.script["/r.csv"] = [(status, {}, b"no")]
    sleeps: list[float] = []

    with pytest.raises(SourceError) as caught:
        source(f"{server.url}/r.csv", sleeps).fetch(FetchContext())

    assert not isinstance(caught.value, InputError)
    assert f"HTTP {status}" in str(caught.value)
    assert sleeps == []
    assert server.hits["/r.csv"] == 1


def test_download_of_a_sign_in_page_says_so(server: Loopback) -> None:
    page = b"<!DOCTYPE html><html><title>Sign in - Google Accounts</title></html>"
    server.script["/pub"] = [(200, {"Content-Type": "text/html; charset=utf-8"}, page)]

    with pytest.raises(SourceError) as caught:
        source(f"{server.url}/pub", []).fetch(FetchContext())

    message = str(caught.value)
    assert "returned a web page, not CSV" in message
    assert "Publish to web" in message


def test_download_problems_name_the_url_basename(server: Loopback) -> None:
    server.script["/d/roster.csv"] = [(200, {}, b"teacher,class,student\nt@s.org,Math,nope\n")]

    with pytest.raises(InputError) as caught:
        source(f"{server.url}/d/roster.csv?x=1", []).fetch(FetchContext())

    assert str(caught.value.problems[0]).startswith("roster.csv, line 2, column 'student'")
