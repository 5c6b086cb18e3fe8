# ruff: noqa: E501  (the CSV fixtures are written out as the files look, header lines included)
"""Tests of the oneroster-csv connector through its registered factory and ``fetch``."""

from __future__ import annotations

import zipfile
from pathlib import Path

import polars as pl
import pytest

from rostersync.errors import ConfigError, InputError, Problem
from rostersync.sources.base import FetchContext
from rostersync.sources.oneroster_csv import build_source

MANIFEST_11 = """propertyName,value
manifest.version,1.0
oneroster.version,1.1
file.academicSessions,bulk
file.categories,absent
file.classes,bulk
file.classResources,absent
file.courses,bulk
file.courseResources,absent
file.demographics,absent
file.enrollments,bulk
file.lineItems,absent
file.orgs,bulk
file.resources,absent
file.results,absent
file.users,bulk
"""

ORGS = """sourcedId,status,dateLastModified,name,type,identifier,parentSourcedId
d1,,,Riverside Unified,district,D01,
s1,,,Riverside High,school,SCH-100,d1
s2,,,Hill Middle,school,SCH-200,d1
"""

SESSIONS = """sourcedId,status,dateLastModified,title,type,startDate,endDate,parentSourcedId,schoolYear
y26,,,2025-2026,schoolYear,2025-08-20,2026-06-12,,2026
f25,,,Fall 2025,semester,2025-08-20,2026-01-16,y26,2026
"""

COURSES = """sourcedId,status,dateLastModified,schoolYearSourcedId,title,courseCode,grades,orgSourcedId,subjects,subjectCodes
c-alg,,,y26,Algebra I,ALG1,09,s1,Math,
c-bio,,,y26,,BIO,09,s1,Science,
"""

CLASSES = """sourcedId,status,dateLastModified,title,grades,courseSourcedId,classCode,classType,location,schoolSourcedId,termSourcedIds,subjects,subjectCodes,periods
k1,,,Algebra I - P1,09,c-alg,ALG1-01,scheduled,Room 12,s1,"f25,y26",Math,,1
k2,,,Biology - P2,09,c-bio,BIO-02,scheduled,Lab 3,s1,f25,Science,,"2,3"
k3,,,Homeroom 7A,07,c-none,HR-7A,homeroom,,s2,y26,,,
"""

USERS_11 = """sourcedId,status,dateLastModified,enabledUser,orgSourcedIds,role,username,userIds,givenName,familyName,middleName,identifier,email,sms,phone,agentSourcedIds,grades,password
t1,,,true,s1,teacher,mrivera,{StaffID:E1},Maria,Rivera,,E1,Maria.Rivera@Riverside.org ,,,,,
t2,,,true,s1,aide,jkim,,Jae,Kim,,E2,jkim@riverside.org,,,,,
a1,,,true,"s1,s2",administrator,pboss,,Pat,Boss,,E3,pat@riverside.org,,,,,
u1,,,false,"s1,s2",student,acook,"{StateID:NY123},{GoogleID:g-555},{LDAP:acook}",Avery,Cook,,S1001,AVERY.COOK@students.riverside.org,,,,"09,10",
u2,,,true,s1,student,bnoe,,Blake,Noe,,S1002,,,,,09,
g1,,,true,s1,guardian,gcook,,Gail,Cook,,,gail@example.com,,,u1,,
p1,,,true,s1,parent,pnoe,,Pam,Noe,,,pam@example.com,,,u2,,
"""

ENROLLMENTS = """sourcedId,status,dateLastModified,classSourcedId,schoolSourcedId,userSourcedId,role,primary,beginDate,endDate
e1,,,k1,s1,t2,aide,false,,
e2,,,k1,s1,t1,teacher,true,,
e3,,,k1,s1,u1,student,false,,
e4,,,k2,s1,t2,teacher,false,,
e5,,,k2,s1,t1,teacher,false,,
e6,,,k2,s1,u2,student,,,
e7,,,k2,s1,g1,guardian,,,
"""


def write_export(folder: Path, files: dict[str, str | bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content.encode("utf-8") if isinstance(content, str) else content
        (folder / name).write_bytes(data)
    return folder


def bulk_11(**overrides: str | bytes) -> dict[str, str | bytes]:
    files: dict[str, str | bytes] = {
        "manifest.csv": MANIFEST_11,
        "orgs.csv": ORGS,
        "academicSessions.csv": SESSIONS,
        "courses.csv": COURSES,
        "classes.csv": CLASSES,
        "users.csv": USERS_11,
        "enrollments.csv": ENROLLMENTS,
    }
    files.update(overrides)
    return files


def fetch(path: Path):  # type: ignore[no-untyped-def]
    return build_source({"path": str(path)}).fetch(FetchContext())


def fetch_problems(path: Path) -> list[Problem]:
    with pytest.raises(InputError) as caught:
        fetch(path)
    return caught.value.problems


def rows(frame: pl.DataFrame) -> dict[str, dict[str, object]]:
    return {row["ext_id"]: row for row in frame.drop("_line", strict=False).iter_rows(named=True)}


# --- configuration -----------------------------------------------------------------------------


def test_missing_path_setting_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no 'path'"):
        build_source({})


def test_path_that_does_not_exist_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        build_source({"path": str(tmp_path / "nowhere")})


def test_source_declares_kind_and_mode(tmp_path: Path) -> None:
    source = build_source({"path": str(tmp_path)})
    assert source.kind == "oneroster-csv"
    assert source.mode == "either"


# --- a 1.1 bulk export ------------------------------------------------------------------------


def test_bulk_11_export_maps_every_entity(tmp_path: Path) -> None:
    seen: list[tuple[str, int]] = []
    source = build_source({"path": str(write_export(tmp_path / "x", bulk_11()))})
    feed = source.fetch(FetchContext(progress=lambda what, n: seen.append((what, n))))

    assert feed.mode == "full"
    assert set(feed.modes.values()) == {"full"}
    assert feed.truncated is None
    assert ("users", 7) in seen and ("enrollments", 7) in seen

    assert feed.frame("school").drop("_line").sort("ext_id").rows() == [
        ("s1", "Riverside High", "SCH-100"),
        ("s2", "Hill Middle", "SCH-200"),
    ]
    assert feed.frame("term").drop("_line").sort("ext_id").rows() == [
        ("f25", "Fall 2025", "2025-08-20", "2026-01-16", "2026"),
        ("y26", "2025-2026", "2025-08-20", "2026-06-12", "2026"),
    ]

    sections = rows(feed.frame("section"))
    assert sections["k1"] == {
        "ext_id": "k1",
        "school_ext_id": "s1",
        "term_ext_id": "f25",
        "name": "Algebra I - P1",
        "course": "Algebra I",
        "period": "1",
        "room": "Room 12",
    }
    assert sections["k2"]["course"] == "BIO"  # the course has no title: its code
    assert sections["k3"]["course"] == "HR-7A"  # no such course: the class code
    assert sections["k3"]["room"] is None

    people = rows(feed.frame("person"))
    assert set(people) == {"t1", "t2", "a1", "u1", "u2"}
    assert {k: v["role"] for k, v in people.items()} == {
        "t1": "teacher",
        "t2": "teacher",
        "a1": "admin",
        "u1": "student",
        "u2": "student",
    }
    assert people["t1"]["email"] == "maria.rivera@riverside.org"
    assert people["u1"] == {
        "ext_id": "u1",
        "role": "student",
        "email": "avery.cook@students.riverside.org",
        "given_name": "Avery",
        "family_name": "Cook",
        "grade": "09",
        "sis_id": "S1001",
        "state_id": "NY123",
        "google_id": "g-555",
        "school_ext_id": "s1",
    }
    assert people["u2"]["email"] is None
    assert people["a1"]["school_ext_id"] == "s1"

    enrollments = rows(feed.frame("enrollment"))
    assert {k: v["role"] for k, v in enrollments.items()} == {
        "e1": "co-teacher",
        "e2": "owner",
        "e3": "student",
        "e4": "owner",  # k2 has no primary teacher: its first teacher owns it
        "e5": "co-teacher",
        "e6": "student",
    }
    assert enrollments["e3"]["section_ext_id"] == "k1"
    assert enrollments["e3"]["person_ext_id"] == "u1"

    messages = " | ".join(w.message for w in feed.warnings)
    assert "2 user(s)" in messages and "guardian: 1" in messages and "parent: 1" in messages
    assert "1 enrollment(s)" in messages


def test_disabled_users_stay_on_the_roster(tmp_path: Path) -> None:
    feed = fetch(write_export(tmp_path / "x", bulk_11()))
    assert "u1" in feed.frame("person")["ext_id"].to_list()


def test_zip_export_reads_like_a_folder(tmp_path: Path) -> None:
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in bulk_11().items():
            zf.writestr(f"export/{name}", content)
    feed = fetch(archive)
    assert feed.counts() == {
        "school": 2,
        "term": 2,
        "person": 5,
        "section": 3,
        "enrollment": 6,
    }
    assert rows(feed.frame("person"))["u1"]["state_id"] == "NY123"


def test_bad_zip_is_reported(tmp_path: Path) -> None:
    archive = tmp_path / "export.zip"
    archive.write_bytes(b"PK\x03\x04 this is not really a zip")
    problems = fetch_problems(archive)
    assert problems[0].file == "export.zip"
    assert "zip" in problems[0].message


# --- 1.2 with roles.csv -------------------------------------------------------------------------

USERS_12 = """sourcedId,status,dateLastModified,enabledUser,username,userIds,givenName,familyName,middleName,identifier,email,sms,phone,agentSourcedIds,grades,password,userMasterIdentifier,resourceSourcedIds,preferredGivenName,preferredMiddleName,preferredFamilyName,primaryOrgSourcedId,pronouns
t1,active,2025-08-01T00:00:00Z,true,mrivera,,Maria,Rivera,,E1,mrivera@riverside.org,,,,,,,,,,,s2,
u1,active,2025-08-01T00:00:00Z,true,acook,{Google:g-1},Avery,Cook,,S1,acook@riverside.org,,,,"10,11",,,,,,,,
x1,active,2025-08-01T00:00:00Z,true,sadmin,,Sam,Admin,,E9,sam@riverside.org,,,,,,,,,,,,
r1,active,2025-08-01T00:00:00Z,true,rel,,Rel,Ative,,,rel@example.com,,,,,,,,,,,,
"""

ROLES_12 = """sourcedId,status,dateLastModified,userSourcedId,roleType,role,beginDate,endDate,orgSourcedId,userProfileSourcedId
ro1,active,,t1,secondary,aide,,,s1,
ro2,active,,t1,primary,teacher,,,s1,
ro3,active,,u1,primary,student,,,s1,
ro4,active,,x1,Primary,siteAdministrator,,,s2,
ro5,active,,r1,primary,relative,,,s1,
"""

MANIFEST_12 = """propertyName,value
manifest.version,1.0
oneroster.version,1.2
file.academicSessions,bulk
file.classes,bulk
file.courses,bulk
file.enrollments,bulk
file.orgs,bulk
file.roles,bulk
file.users,bulk
file.userProfiles,absent
file.demographics,absent
"""


def test_12_export_takes_roles_and_schools_from_roles_csv(tmp_path: Path) -> None:
    files = bulk_11(**{"manifest.csv": MANIFEST_12, "users.csv": USERS_12})
    files["roles.csv"] = ROLES_12
    files["enrollments.csv"] = ENROLLMENTS.splitlines()[0] + "\ne1,,,k1,s1,t1,teacher,true,,\n"
    feed = fetch(write_export(tmp_path / "x", files))

    people = rows(feed.frame("person"))
    assert set(people) == {"t1", "u1", "x1"}
    assert people["t1"]["role"] == "teacher"  # the primary role wins over the first
    assert people["t1"]["school_ext_id"] == "s2"  # primaryOrgSourcedId
    assert people["u1"]["school_ext_id"] == "s1"  # from the role's org
    assert people["u1"]["grade"] == "10"
    assert people["u1"]["google_id"] == "g-1"
    assert people["x1"]["role"] == "admin"
    assert any("relative: 1" in w.message for w in feed.warnings)


def test_12_users_without_roles_csv_is_an_error(tmp_path: Path) -> None:
    manifest = MANIFEST_12.replace("file.roles,bulk", "file.roles,absent")
    files = bulk_11(**{"manifest.csv": manifest, "users.csv": USERS_12})
    problems = fetch_problems(write_export(tmp_path / "x", files))
    assert [(p.file, p.column) for p in problems] == [("users.csv", "role")]


# --- delta --------------------------------------------------------------------------------------

MANIFEST_DELTA = """propertyName,value
manifest.version,1.0
oneroster.version,1.1
file.academicSessions,absent
file.classes,absent
file.courses,absent
file.enrollments,delta
file.orgs,absent
file.users,delta
"""


def test_delta_export_lists_upserts_and_deletions(tmp_path: Path) -> None:
    header_users = USERS_11.splitlines()[0]
    users = (
        f"{header_users}\n"
        "u3,active,2025-09-01T00:00:00Z,true,s1,student,new,,Nia,New,,S3,nia@r.org,,,,09,\n"
        "u2,TOBEDELETED,2025-09-01T00:00:00Z,,,,,,,,,,,,,,,\n"
        "u4,inactive,2025-09-01T00:00:00Z,,,,,,,,,,,,,,,\n"
    )
    header_enr = ENROLLMENTS.splitlines()[0]
    enrollments = (
        f"{header_enr}\n"
        "e9,active,2025-09-01T00:00:00Z,k2,s1,u3,student,,,\n"
        "e6,tobedeleted,2025-09-01T00:00:00Z,k2,s1,u2,student,,,\n"
        "e8,active,2025-09-01T00:00:00Z,k3,s2,t2,teacher,false,,\n"
    )
    files = {"manifest.csv": MANIFEST_DELTA, "users.csv": users, "enrollments.csv": enrollments}
    feed = fetch(write_export(tmp_path / "x", files))

    assert feed.mode == "delta"
    assert feed.modes == {
        "school": "absent",
        "term": "absent",
        "person": "delta",
        "section": "absent",
        "enrollment": "delta",
    }
    assert feed.frame("person")["ext_id"].to_list() == ["u3"]
    assert feed.deleted["person"] == ["u2", "u4"]
    assert feed.deleted["enrollment"] == ["e6"]
    # A delta cannot tell that a section has no primary teacher: no owner is made up.
    assert rows(feed.frame("enrollment"))["e8"]["role"] == "co-teacher"
    assert any("inactive" in w.message for w in feed.warnings)


def test_bulk_file_leaves_out_tobedeleted_rows(tmp_path: Path) -> None:
    users = USERS_11.replace("u2,,,true", "u2,tobedeleted,,true")
    feed = fetch(write_export(tmp_path / "x", bulk_11(**{"users.csv": users})))
    assert "u2" not in feed.frame("person")["ext_id"].to_list()
    assert feed.deleted["person"] == []
    assert any("tobedeleted" in w.message and w.file == "users.csv" for w in feed.warnings)


def test_missing_manifest_reads_files_as_bulk_with_a_warning(tmp_path: Path) -> None:
    files = bulk_11()
    del files["manifest.csv"]
    feed = fetch(write_export(tmp_path / "x", files))
    assert feed.mode == "full"
    assert feed.frame("person").height == 5
    assert any(w.file == "manifest.csv" for w in feed.warnings)


# --- tolerance ----------------------------------------------------------------------------------


def test_bom_crlf_header_case_and_extension_columns_are_tolerated(tmp_path: Path) -> None:
    users = (
        " SourcedID ,STATUS,dateLastModified,enabledUser,orgSourcedIds,Role,username,userIds,"
        "givenName,familyName,middleName,identifier,EMAIL,sms,phone,agentSourcedIds,grades,"
        "password,metadata.district.house,x_custom\r\n"
        "u1,,,true,s1,Student,ac,,Avery,Cook,,S1,ac@r.org,,,,09,,Blue,foo\r\n"
        "\r\n"
        "u2,,,true,s1,STUDENT,bn,,Blake,Noe,,S2,bn@r.org,,,,10,,Red,bar\r\n"
    )
    files = bulk_11(**{"users.csv": b"\xef\xbb\xbf" + users.encode("utf-8")})
    feed = fetch(write_export(tmp_path / "x", files))
    people = rows(feed.frame("person"))
    assert set(people) == {"u1", "u2"}
    assert people["u2"] == {
        "ext_id": "u2",
        "role": "student",
        "email": "bn@r.org",
        "given_name": "Blake",
        "family_name": "Noe",
        "grade": "10",
        "sis_id": "S2",
        "state_id": None,
        "google_id": None,
        "school_ext_id": "s1",
    }


def test_stray_trailing_empty_fields_are_ignored(tmp_path: Path) -> None:
    orgs = (
        "sourcedId,status,dateLastModified,name,type,identifier,parentSourcedId,\n"
        "s1,,,Riverside High,school,SCH-100,,,,\n"
        "s2,,,Hill Middle,school,SCH-200,\n"
    )
    feed = fetch(write_export(tmp_path / "x", bulk_11(**{"orgs.csv": orgs})))
    assert feed.frame("school").sort("ext_id")["name"].to_list() == [
        "Riverside High",
        "Hill Middle",
    ]


def test_enrollment_vocabulary_is_read_in_any_case_and_spacing(tmp_path: Path) -> None:
    enrollments = (
        ENROLLMENTS.replace("t1,teacher,true", "t1, Teacher ,TRUE")
        .replace("u1,student,false", "u1,STUDENT,false")
        .replace("e4,,,", "e4, Active ,,")
    )
    feed = fetch(write_export(tmp_path / "x", bulk_11(**{"enrollments.csv": enrollments})))
    roles = {k: v["role"] for k, v in rows(feed.frame("enrollment")).items()}
    assert (roles["e2"], roles["e3"], roles["e4"]) == ("owner", "student", "owner")
    assert feed.frame("enrollment").schema["role"] == pl.Utf8()


def test_filled_in_field_well_past_the_header_is_an_error(tmp_path: Path) -> None:
    orgs = ORGS.replace("SCH-200,d1", "SCH-200,d1,,,,late")
    problems = fetch_problems(write_export(tmp_path / "x", bulk_11(**{"orgs.csv": orgs})))
    assert [(p.file, p.line, p.record_id) for p in problems] == [("orgs.csv", 4, "s2")]


def test_exact_duplicate_rows_are_dropped_with_a_warning(tmp_path: Path) -> None:
    lines = ENROLLMENTS.splitlines()
    enrollments = "\n".join([*lines, lines[3], lines[3]]) + "\n"
    feed = fetch(write_export(tmp_path / "x", bulk_11(**{"enrollments.csv": enrollments})))
    assert feed.frame("enrollment")["ext_id"].to_list().count("e3") == 1
    warning = next(w for w in feed.warnings if "repeat an earlier row" in w.message)
    assert warning.file == "enrollments.csv"
    assert "2 row(s)" in warning.message
    assert "line 9" in warning.message


def test_quoted_line_breaks_keep_line_numbers_right(tmp_path: Path) -> None:
    classes = CLASSES.replace("Algebra I - P1", '"Algebra I\nPeriod 1"').replace(
        "k3,,,Homeroom 7A", "k2,,,Homeroom 7A"
    )
    problems = fetch_problems(write_export(tmp_path / "x", bulk_11(**{"classes.csv": classes})))
    assert [(p.file, p.line, p.record_id) for p in problems] == [("classes.csv", 5, "k2")]


# --- errors -------------------------------------------------------------------------------------


def test_required_file_missing_in_a_bulk_export(tmp_path: Path) -> None:
    files = bulk_11()
    del files["classes.csv"]
    problems = fetch_problems(write_export(tmp_path / "x", files))
    assert len(problems) == 1
    assert problems[0].file == "classes.csv"
    assert "missing" in problems[0].message


def test_required_file_missing_without_manifest(tmp_path: Path) -> None:
    files = bulk_11()
    del files["manifest.csv"], files["orgs.csv"]
    problems = fetch_problems(write_export(tmp_path / "x", files))
    assert [p.file for p in problems] == ["orgs.csv"]


def test_required_column_missing_names_column_and_header(tmp_path: Path) -> None:
    enrollments = ENROLLMENTS.replace("userSourcedId,", "personId,")
    problems = fetch_problems(
        write_export(tmp_path / "x", bulk_11(**{"enrollments.csv": enrollments}))
    )
    assert len(problems) == 1
    problem = problems[0]
    assert (problem.file, problem.line, problem.column) == ("enrollments.csv", 1, "userSourcedId")
    assert "personId" in problem.message and "classSourcedId" in problem.message


def test_file_that_is_not_a_oneroster_table(tmp_path: Path) -> None:
    users = "Teacher,Class,Student Email\nRivera,Algebra,a@r.org\n"
    problems = fetch_problems(write_export(tmp_path / "x", bulk_11(**{"users.csv": users})))
    assert len(problems) == 1
    assert problems[0].file == "users.csv"
    assert "not a OneRoster users table" in problems[0].message
    assert "Student Email" in problems[0].message


def test_two_different_rows_with_one_sourced_id(tmp_path: Path) -> None:
    users = USERS_11 + "u1,,,true,s1,student,other,,Other,Person,,S9,o@r.org,,,,09,\n"
    problems = fetch_problems(write_export(tmp_path / "x", bulk_11(**{"users.csv": users})))
    assert [(p.file, p.line, p.column, p.record_id) for p in problems] == [
        ("users.csv", 9, "sourcedId", "u1")
    ]
    assert "users.csv, line 9, column 'sourcedId', record 'u1'" in str(problems[0])


def test_malformed_email(tmp_path: Path) -> None:
    users = USERS_11.replace("jkim@riverside.org", "jkim at riverside")
    problems = fetch_problems(write_export(tmp_path / "x", bulk_11(**{"users.csv": users})))
    assert [(p.file, p.line, p.column, p.record_id) for p in problems] == [
        ("users.csv", 3, "email", "t2")
    ]
    assert problems[0].fix


def test_bad_dates(tmp_path: Path) -> None:
    sessions = SESSIONS.replace("2026-01-16", "01/16/2026").replace("2026-06-12", "2026-02-30")
    problems = fetch_problems(
        write_export(tmp_path / "x", bulk_11(**{"academicSessions.csv": sessions}))
    )
    found = sorted((p.line, p.column, p.record_id) for p in problems)
    assert found == [(2, "endDate", "y26"), (3, "endDate", "f25")]
    assert all(p.file == "academicSessions.csv" for p in problems)
    assert any("01/16/2026" in p.message for p in problems)


def test_wrong_encoding_names_the_line(tmp_path: Path) -> None:
    users = USERS_11.replace("Blake", "Bl\u00e9ke").encode("latin-1")
    problems = fetch_problems(write_export(tmp_path / "x", bulk_11(**{"users.csv": users})))
    assert [(p.file, p.line) for p in problems] == [("users.csv", 6)]
    assert "UTF-8" in str(problems[0])


def test_unquoted_comma_shifting_fields_is_an_error(tmp_path: Path) -> None:
    orgs = ORGS.replace("Hill Middle", "Hill, Middle")
    problems = fetch_problems(write_export(tmp_path / "x", bulk_11(**{"orgs.csv": orgs})))
    assert [(p.file, p.line, p.record_id) for p in problems] == [("orgs.csv", 4, "s2")]


def test_all_problems_are_collected_before_raising(tmp_path: Path) -> None:
    users = USERS_11.replace("jkim@riverside.org", "jkim@")
    sessions = SESSIONS.replace("2025-08-20,2026-01-16", "2025-8-20,2026-01-16")
    files = bulk_11(**{"users.csv": users, "academicSessions.csv": sessions})
    del files["enrollments.csv"]
    problems = fetch_problems(write_export(tmp_path / "x", files))
    assert sorted(p.file or "" for p in problems) == [
        "academicSessions.csv",
        "enrollments.csv",
        "users.csv",
    ]


# --- truncation ---------------------------------------------------------------------------------


def test_truncated_last_line_is_dropped_and_flagged(tmp_path: Path) -> None:
    enrollments = ENROLLMENTS + "e10,,,k2,s1,u"
    feed = fetch(write_export(tmp_path / "x", bulk_11(**{"enrollments.csv": enrollments})))
    assert "e10" not in feed.frame("enrollment")["ext_id"].to_list()
    assert feed.frame("enrollment").height == 6
    assert feed.truncated is not None
    assert "enrollments.csv line 9" in feed.truncated


def test_complete_last_line_without_line_break_is_kept(tmp_path: Path) -> None:
    enrollments = ENROLLMENTS + "e10,,,k2,s1,u1,student,false,,"
    feed = fetch(write_export(tmp_path / "x", bulk_11(**{"enrollments.csv": enrollments})))
    assert "e10" in feed.frame("enrollment")["ext_id"].to_list()
    assert feed.truncated is None


def test_truncated_file_in_a_zip(tmp_path: Path) -> None:
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, content in bulk_11().items():
            if name == "users.csv":
                content = str(content) + "u9,,,true,s1,stu"
            zf.writestr(name, content)
    feed = fetch(archive)
    assert feed.truncated is not None and "users.csv line 9" in feed.truncated
    assert "u9" not in feed.frame("person")["ext_id"].to_list()


def test_row_without_sourced_id_is_an_error(tmp_path: Path) -> None:
    classes = CLASSES + ",,,Orphan,09,,OR-1,scheduled,,s1,f25,,,\n"
    problems = fetch_problems(write_export(tmp_path / "x", bulk_11(**{"classes.csv": classes})))
    assert [(p.file, p.line, p.column) for p in problems] == [("classes.csv", 5, "sourcedId")]


def test_header_only_file_gives_an_empty_entity(tmp_path: Path) -> None:
    files = bulk_11(**{"enrollments.csv": ENROLLMENTS.splitlines()[0] + "\n"})
    feed = fetch(write_export(tmp_path / "x", files))
    assert feed.frame("enrollment").height == 0
    assert feed.modes["enrollment"] == "full"
