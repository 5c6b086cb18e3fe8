"""Deterministic OneRoster 1.1 CSV bulk exports of a synthetic district, for the benchmarks.

Every value is a pure function of (size, seed, churn) and a row's index, computed with a
SplitMix64 mix in vectorised polars expressions, so the same command writes byte-identical files
on any machine and with any polars version. The day-two export is the same district regenerated
with churn applied (withdrawals, new students, edits, moved enrollments, renamed sections, teacher
changes), which keeps it consistent with the base export without reading it back.

    python bench/generate.py M /tmp/bench/M
    python bench/generate.py M /tmp/bench/M-day2 --day2 /tmp/bench/M
"""

from __future__ import annotations

import argparse
import csv
import functools
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa

U64 = pl.UInt64
I64 = pl.Int64
MASK64 = (1 << 64) - 1

DISTRICT_NAME = "Bench Unified School District"
DOMAIN = "bench-usd.org"
SCHOOL_YEAR = "2026"
SYSTEM_NAME = "rostersync-bench"

# How many students one chunk of the users and enrollments files holds: XL stays under ~1 GB.
STUDENTS_PER_CHUNK = 200_000

# Random draws are keyed by a stream number so that no two uses share a sequence.
(
    ID_ORG,
    ID_SESSION,
    ID_COURSE,
    ID_SECTION,
    ID_TEACHER,
    ID_STUDENT,
    ID_ENROLLMENT,
    ID_TEACHING,
    DRAW_NAME_GIVEN,
    DRAW_NAME_FAMILY,
    DRAW_NAME_MIDDLE,
    DRAW_GRADE,
    DRAW_SEAT,
    DRAW_CO_TEACHER,
    DRAW_STUDENT_CHURN,
    DRAW_STUDENT_EDIT,
    DRAW_MOVE,
    DRAW_MOVE_TO,
    DRAW_SECTION_CHURN,
    DRAW_NEW_TEACHER,
    ID_UUID_LOW,
) = range(1, 22)


@dataclass(frozen=True)
class Size:
    """The shape of one district: students and teachers per school follow from the totals."""

    schools: int
    students: int
    teachers: int
    sections: int


SIZES: dict[str, Size] = {
    "S": Size(schools=1, students=1_000, teachers=60, sections=200),
    "M": Size(schools=85, students=50_000, teachers=3_000, sections=10_000),
    "XL": Size(schools=1_700, students=1_000_000, teachers=60_000, sections=200_000),
}

# Day-two churn, as shares of the churn rate (1 % churn: 0.4 % of students withdrawn, ...).
CHURN_SHARES = {
    "withdrawn": 0.4,
    "new": 0.4,
    "edited": 0.2,
    "moved": 1.0,
    "renamed": 0.5,
    "new_teacher": 0.5,
}

UUID_VARIANTS = "89ab"
# Compact ids: (kind << KEY_BITS | key) through a 40-bit bijection, so they never collide.
KEY_BITS = 35
SCRAMBLE_MULTIPLIERS = (0x9E3779B97F, 0xC2B2AE3D27, 0x165667B19F)
# Blank fields are written as nulls: polars quotes an empty string but leaves a null empty.
BLANK = pl.lit(None, dtype=pl.String)
PERIODS = 6
# Teachers' name draws are keyed past any student index so that teacher 0 is not student 0's twin.
TEACHER_KEY_OFFSET = 1 << 40
SUBJECTS = [
    ("English Language Arts", "ELA"),
    ("Mathematics", "MATH"),
    ("Science", "SCI"),
    ("Social Studies", "SS"),
    ("World Languages", "WL"),
    ("Arts", "ART"),
]
BANDS = {
    "Elementary": ["KG", "01", "02", "03", "04", "05"],
    "Middle": ["06", "07", "08"],
    "High": ["09", "10", "11", "12"],
}
BAND_ORDER = ["High", "Middle", "Elementary"]
SCHOOL_STEMS = [
    "Lincoln", "Washington", "Jefferson", "Roosevelt", "Franklin", "Madison", "Kennedy", "Adams",
    "Hamilton", "Jackson", "Monroe", "Garfield", "Riverside", "Lakeview", "Hillcrest", "Oakwood",
    "Maple Grove", "Cedar Ridge", "Pine Valley", "Willow Creek", "Sunset Park", "Brookside",
    "Fairview", "Highland", "Meadowbrook", "Northgate", "Southside", "Westfield", "Eastwood",
    "Harbor View", "Liberty", "Heritage", "Pioneer", "Summit", "Valley View", "Greenfield",
    "Parkside", "Stonebridge", "Clearwater", "Silver Lake",
]  # fmt: skip
GIVEN_NAMES = [
    "Aaliyah", "Aaron", "Abigail", "Adrian", "Aiden", "Alejandro", "Alexa", "Alice", "Amara",
    "Amelia", "Andre", "Angela", "Anthony", "Aria", "Ava", "Benjamin", "Bianca", "Brandon", "Caleb",
    "Camila", "Carlos", "Carmen", "Charlotte", "Chloe", "Christopher", "Daniel", "David", "Destiny",
    "Diego", "Dylan", "Elena", "Elijah", "Emily", "Emma", "Ethan", "Evelyn", "Fatima", "Gabriel",
    "Grace", "Hannah", "Harper", "Hector", "Isaac", "Isabella", "Jada", "Jamal", "James", "Jasmine",
    "Jayden", "Jin", "Jordan", "Jose", "Joshua", "Julia", "Kai", "Kayla", "Kevin", "Layla", "Leah",
    "Liam", "Lucas", "Luis", "Maya", "Mason", "Mateo", "Mia", "Michael", "Mohammed", "Naomi",
    "Nathan", "Nia", "Noah", "Nora", "Olivia", "Omar", "Priya", "Rafael", "Riley", "Rosa", "Ryan",
    "Samuel", "Sara", "Sebastian", "Sofia", "Sophia", "Tariq", "Thomas", "Valentina", "Victoria",
    "William", "Wei", "Xavier", "Yusuf", "Zoe", "Zara", "Ananya", "Malik", "Hiro", "Ines", "Kofi",
]  # fmt: skip
FAMILY_NAMES = [
    "Abbott", "Acosta", "Adeyemi", "Ahmed", "Alvarez", "Anderson", "Baker", "Banerjee", "Bell",
    "Brooks", "Brown", "Campbell", "Castillo", "Chen", "Clark", "Collins", "Cruz", "Davis", "Diaz",
    "Edwards", "Evans", "Fernandez", "Fischer", "Flores", "Garcia", "Gomez", "Gonzalez", "Green",
    "Gupta", "Hall", "Harris", "Hernandez", "Hill", "Huang", "Ibrahim", "Jackson", "James",
    "Johnson", "Jones", "Kang", "Khan", "Kim", "King", "Kowalski", "Lee", "Lewis", "Lopez",
    "Martin",
    "Martinez", "Mendoza", "Miller", "Mitchell", "Moore", "Morales", "Murphy", "Nguyen", "Novak",
    "Okafor", "Ortiz", "Park", "Patel", "Perez", "Phillips", "Ramirez", "Reyes", "Rivera",
    "Roberts", "Robinson", "Rodriguez", "Rossi", "Ruiz", "Sanchez", "Santos", "Scott", "Shah",
    "Silva", "Singh", "Smith", "Sullivan", "Tanaka", "Taylor", "Thomas", "Thompson", "Torres",
    "Tran", "Turner", "Walker", "Wang", "Washington", "Williams", "Wilson", "Wong", "Wright", "Wu",
    "Yamamoto", "Yang", "Young", "Zhang", "Zimmerman", "Obi",
]  # fmt: skip

MANIFEST_FILES = [
    "academicSessions", "categories", "classes", "classResources", "courses", "courseResources",
    "demographics", "enrollments", "lineItems", "orgs", "resources", "results", "users",
]  # fmt: skip
WRITTEN_FILES = {"academicSessions", "classes", "courses", "enrollments", "orgs", "users"}

COLUMNS = {
    "orgs": ["sourcedId", "status", "dateLastModified", "name", "type", "identifier",
             "parentSourcedId"],
    "academicSessions": ["sourcedId", "status", "dateLastModified", "title", "type", "startDate",
                         "endDate", "parentSourcedId", "schoolYear"],
    "courses": ["sourcedId", "status", "dateLastModified", "schoolYearSourcedId", "title",
                "courseCode", "grades", "orgSourcedId", "subjects", "subjectCodes"],
    "classes": ["sourcedId", "status", "dateLastModified", "title", "grades", "courseSourcedId",
                "classCode", "classType", "location", "schoolSourcedId", "termSourcedIds",
                "subjects", "subjectCodes", "periods"],
    "users": ["sourcedId", "status", "dateLastModified", "enabledUser", "orgSourcedIds", "role",
              "username", "userIds", "givenName", "familyName", "middleName", "identifier",
              "email", "sms", "phone", "agentSourcedIds", "grades", "password"],
    "enrollments": ["sourcedId", "status", "dateLastModified", "classSourcedId",
                    "schoolSourcedId", "userSourcedId", "role", "primary", "beginDate",
                    "endDate"],
}  # fmt: skip


def mix_int(value: int) -> int:
    """SplitMix64's finaliser on a Python int; the same function as `mix` on columns."""
    value &= MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & MASK64
    return value ^ (value >> 31)


def _shr(expr: pl.Expr, bits: int) -> pl.Expr:
    return expr // pl.lit(1 << bits, dtype=U64)


def mix(expr: pl.Expr) -> pl.Expr:
    """SplitMix64's finaliser on a UInt64 column (polars multiplies modulo 2**64)."""
    expr = (expr ^ _shr(expr, 30)) * pl.lit(0xBF58476D1CE4E5B9, dtype=U64)
    expr = (expr ^ _shr(expr, 27)) * pl.lit(0x94D049BB133111EB, dtype=U64)
    return expr ^ _shr(expr, 31)


class District:
    """One synthetic district: index arithmetic that every file of the export agrees on.

    Schools, sections, teachers and students are numbered, and entity ``i`` belongs to school
    ``i % schools``. A school's sections are split across six periods (local index modulo six);
    a student takes one section in each period, so the six sections are always distinct.
    """

    def __init__(self, size_name: str, seed: int, churn: float, id_style: str = "compact") -> None:
        self.size_name = size_name
        self.id_style = id_style
        self.size = SIZES[size_name]
        self.seed = seed
        self.churn = churn
        self.rates = {
            name: round(share * churn * 1_000_000) for name, share in CHURN_SHARES.items()
        }
        self.new_students = round(self.size.students * CHURN_SHARES["new"] * churn)

    # -- random draws and ids -------------------------------------------------------------------

    def _stream(self, stream: int) -> int:
        return mix_int(mix_int(self.seed) + stream)

    def draw(self, stream: int, key: pl.Expr, key2: pl.Expr | None = None) -> pl.Expr:
        """A uniform UInt64 per row, a pure function of (seed, stream, key, key2)."""
        value = mix(key.cast(U64) + pl.lit(self._stream(stream), dtype=U64))
        if key2 is not None:
            value = mix(value + key2.cast(U64))
        return value

    def draw_below(
        self, stream: int, bound: pl.Expr | int, key: pl.Expr, key2: pl.Expr | None = None
    ) -> pl.Expr:
        bound_expr = bound.cast(U64) if isinstance(bound, pl.Expr) else pl.lit(bound, dtype=U64)
        return (self.draw(stream, key, key2) % bound_expr).cast(I64)

    def draw_int(self, stream: int, key: int, key2: int | None = None) -> int:
        """`draw` for one key, in plain Python."""
        value = mix_int(key + self._stream(stream))
        if key2 is not None:
            value = mix_int(value + key2)
        return value

    def id_int(self, kind: int, key: int) -> str:
        """The sourcedId `ids` gives for one key, in plain Python (for the small files)."""
        if self.id_style == "compact":
            return _compact_text(_scramble40_int((kind << KEY_BITS) | key, self._stream(0)))
        high = self.draw_int(kind, key)
        low = self.draw_int(ID_UUID_LOW, high)
        return _uuid_text(high.to_bytes(8, "little").hex(), low.to_bytes(8, "little").hex())

    def ids(self, frame: pl.DataFrame, kind: int, key: pl.Expr) -> pl.Series:
        """The sourcedId of each row of ``frame``; ``key`` is unique within ``kind``.

        ``uuid`` ids are version-4-shaped UUIDs drawn from the seeded generator (36 characters,
        as many SIS products send). ``compact`` ids are 10 hex digits from a bijection of
        (kind, key), unique by construction; they keep the files at the sizes the performance
        targets were set on (M about 22 MB, XL about 470 MB).
        """
        if self.id_style == "compact":
            code = pl.lit(kind << KEY_BITS, dtype=U64) + key.cast(U64)
            scrambled = frame.select(_scramble40(code, self._stream(0))).to_series()
            return _hex(scrambled).str.slice(0, 10)
        halves = frame.select(
            high=self.draw(kind, key),
            low=self.draw(ID_UUID_LOW, self.draw(kind, key)),
        )
        high = _hex(halves["high"])
        low = _hex(halves["low"])
        variant = (low.str.slice(0, 1).str.to_integer(base=16) % 4).replace_strict(
            dict(enumerate(UUID_VARIANTS)), return_dtype=pl.String
        )
        return pl.select(
            pl.concat_str(
                [
                    high.str.slice(0, 8),
                    pl.lit("-"),
                    high.str.slice(8, 4),
                    pl.lit("-4"),
                    high.str.slice(13, 3),
                    pl.lit("-"),
                    variant,
                    low.str.slice(1, 3),
                    pl.lit("-"),
                    low.str.slice(4, 12),
                ]
            )
        ).to_series()

    # -- structure ------------------------------------------------------------------------------

    def per_school(self, total: int, school: pl.Expr) -> pl.Expr:
        """How many of ``total`` round-robin entities land in ``school``."""
        n = self.size.schools
        return (pl.lit(total, dtype=I64) - school + (n - 1)) // n

    def band_index(self, school: pl.Expr) -> pl.Expr:
        return school % len(BAND_ORDER)

    @functools.cached_property
    def school_ids(self) -> pl.Series:
        frame = pl.select(school=pl.int_range(1, self.size.schools + 1, dtype=I64))
        return self.ids(frame, ID_ORG, pl.col("school"))

    def section_teacher(
        self, section: pl.Expr, school: pl.Expr
    ) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
        """Each section's primary and co-teacher index on this day, and whether it changed."""
        n = self.size.schools
        local = section // n
        teachers_here = self.per_school(self.size.teachers, school)
        slot = local % teachers_here
        # One draw splits the sections: the lowest share renamed, the next share a new teacher.
        draw = self.draw_below(DRAW_SECTION_CHURN, 1_000_000, section)
        renamed = self.rates["renamed"]
        changed = (draw >= renamed) & (draw < renamed + self.rates["new_teacher"])
        new_slot = (slot + 2 + self.draw_below(DRAW_NEW_TEACHER, teachers_here - 2, section)) % (
            teachers_here
        )
        primary_slot = pl.when(changed).then(new_slot).otherwise(slot)
        co_slot = (slot + 1) % teachers_here
        return school + n * primary_slot, school + n * co_slot, changed.cast(I64)

    def has_co_teacher(self, section: pl.Expr) -> pl.Expr:
        return self.draw_below(DRAW_CO_TEACHER, 10, section) == 0

    # -- small files ----------------------------------------------------------------------------

    def orgs(self) -> pl.DataFrame:
        district = self.id_int(ID_ORG, 0)
        rows = [(district, DISTRICT_NAME, "district", "D0001", "")]
        for s, school_id in enumerate(self.school_ids):
            stem = SCHOOL_STEMS[s % len(SCHOOL_STEMS)]
            round_ = s // len(SCHOOL_STEMS)
            name = f"{stem} {BAND_ORDER[s % len(BAND_ORDER)]} School"
            if round_:
                name = f"{name} {round_ + 1}"
            rows.append((school_id, name, "school", f"S{s + 1:04d}", district))
        frame = pl.DataFrame(
            rows,
            schema=["sourcedId", "name", "type", "identifier", "parentSourcedId"],
            orient="row",
        )
        return _blank_status(frame, "orgs")

    def sessions(self) -> pl.DataFrame:
        year, fall, spring = (self.id_int(ID_SESSION, k) for k in range(3))
        rows = [
            (year, "2025-2026", "schoolYear", "2025-08-25", "2026-06-26", "", SCHOOL_YEAR),
            (fall, "Fall 2025", "semester", "2025-08-25", "2026-01-23", year, SCHOOL_YEAR),
            (spring, "Spring 2026", "semester", "2026-01-26", "2026-06-26", year, SCHOOL_YEAR),
        ]
        frame = pl.DataFrame(
            rows,
            orient="row",
            schema=[
                "sourcedId",
                "title",
                "type",
                "startDate",
                "endDate",
                "parentSourcedId",
                "schoolYear",
            ],
        )
        return _blank_status(frame, "academicSessions")

    def course_catalog(self) -> list[tuple[int, int, str]]:
        """(band, subject, grade) for each district course, in course index order."""
        return [
            (b, k, grade)
            for b, band in enumerate(BAND_ORDER)
            for k in range(len(SUBJECTS))
            for grade in BANDS[band]
        ]

    def courses(self) -> pl.DataFrame:
        year = self.id_int(ID_SESSION, 0)
        district = self.id_int(ID_ORG, 0)
        rows = []
        for c, (_, k, grade) in enumerate(self.course_catalog()):
            subject, code = SUBJECTS[k]
            label = "Kindergarten" if grade == "KG" else f"Grade {int(grade)}"
            rows.append(
                (
                    self.id_int(ID_COURSE, c),
                    year,
                    f"{subject} {label}",
                    f"{code}{grade}",
                    grade,
                    district,
                    subject,
                    "",
                )
            )
        frame = pl.DataFrame(
            rows,
            orient="row",
            schema=[
                "sourcedId",
                "schoolYearSourcedId",
                "title",
                "courseCode",
                "grades",
                "orgSourcedId",
                "subjects",
                "subjectCodes",
            ],
        )
        return _blank_status(frame, "courses")

    # -- sections -------------------------------------------------------------------------------

    def sections(self) -> pl.DataFrame:
        n = self.size.schools
        catalog = self.course_catalog()
        course_of = {(b, k, g): c for c, (b, k, g) in enumerate(catalog)}
        course_ids = pl.Series([self.id_int(ID_COURSE, c) for c in range(len(catalog))])
        course_titles = pl.Series(
            [f"{SUBJECTS[k][0]} {'K' if g == 'KG' else int(g)}" for (_, k, g) in catalog]
        )
        course_codes = pl.Series([f"{SUBJECTS[k][1]}{g}" for (_, k, g) in catalog])
        course_grades = pl.Series([g for (_, _, g) in catalog])
        course_subjects = pl.Series([SUBJECTS[k][0] for (_, k, _) in catalog])
        # The course of a section is picked from its band's grades, one per period's subject.
        lookup = pl.DataFrame(
            [
                (b, k, gi, course_of[(b, k, g)])
                for (b, k, g) in catalog
                for gi in [BANDS[BAND_ORDER[b]].index(g)]
            ],
            schema={"band": I64, "period": I64, "grade_slot": I64, "course": I64},
            orient="row",
        )
        band_sizes = pl.Series([len(BANDS[b]) for b in BAND_ORDER], dtype=I64)

        frame = (
            pl.select(section=pl.int_range(0, self.size.sections, dtype=I64))
            .with_columns(school=pl.col("section") % n, local=pl.col("section") // n)
            .with_columns(
                band=self.band_index(pl.col("school")),
                period=pl.col("local") % PERIODS,
                row=pl.col("local") // PERIODS,
            )
            .with_columns(grade_slot=pl.col("row") % pl.lit(band_sizes).gather(pl.col("band")))
            .join(lookup, on=["band", "period", "grade_slot"], how="left")
            .sort("section")
        )
        renamed = (
            self.draw_below(DRAW_SECTION_CHURN, 1_000_000, pl.col("section"))
            < self.rates["renamed"]
        )
        title = pl.concat_str(
            [
                pl.lit(course_titles).gather(pl.col("course")),
                pl.when(renamed).then(pl.lit(" Honors")).otherwise(pl.lit("")),
                pl.lit(" - P"),
                (pl.col("period") + 1).cast(pl.String),
                pl.lit(" - "),
                (pl.col("row") + 1).cast(pl.String).str.zfill(2),
            ]
        )
        school_ids = self.school_ids
        out = frame.select(
            sourcedId=self.ids(frame, ID_SECTION, pl.col("section")),
            status=BLANK,
            dateLastModified=BLANK,
            title=title,
            grades=pl.lit(course_grades).gather(pl.col("course")),
            courseSourcedId=pl.lit(course_ids).gather(pl.col("course")),
            classCode=pl.concat_str(
                [
                    pl.lit(course_codes).gather(pl.col("course")),
                    pl.lit("-"),
                    pl.col("local").cast(pl.String).str.zfill(3),
                ]
            ),
            classType=pl.lit("scheduled"),
            location=pl.concat_str(
                [pl.lit("Room "), (100 + pl.col("local") % 300).cast(pl.String)]
            ),
            schoolSourcedId=pl.lit(school_ids).gather(pl.col("school")),
            termSourcedIds=pl.lit(self.id_int(ID_SESSION, 0)),
            subjects=pl.lit(course_subjects).gather(pl.col("course")),
            subjectCodes=BLANK,
            periods=(pl.col("period") + 1).cast(pl.String),
        )
        return out

    # -- people ---------------------------------------------------------------------------------

    def _names(self, key: pl.Expr) -> dict[str, pl.Expr]:
        given = pl.lit(pl.Series(GIVEN_NAMES)).gather(
            self.draw_below(DRAW_NAME_GIVEN, len(GIVEN_NAMES), key)
        )
        family = pl.lit(pl.Series(FAMILY_NAMES)).gather(
            self.draw_below(DRAW_NAME_FAMILY, len(FAMILY_NAMES), key)
        )
        middle = pl.lit(pl.Series(GIVEN_NAMES)).gather(
            self.draw_below(DRAW_NAME_MIDDLE, len(GIVEN_NAMES), key)
        )
        return {"given": given, "family": family, "middle": middle}

    def teachers(self) -> pl.DataFrame:
        n = self.size.schools
        frame = pl.select(person=pl.int_range(0, self.size.teachers, dtype=I64)).with_columns(
            school=pl.col("person") % n, **self._names(pl.col("person") + TEACHER_KEY_OFFSET)
        )
        handle = pl.concat_str(
            [
                pl.col("given").str.to_lowercase(),
                pl.lit("."),
                pl.col("family").str.to_lowercase(),
                (pl.col("person") + 1).cast(pl.String),
            ]
        )
        staff_id = pl.concat_str([pl.lit("E"), (pl.col("person") + 1).cast(pl.String).str.zfill(6)])
        return frame.select(
            sourcedId=self.ids(frame, ID_TEACHER, pl.col("person")),
            status=BLANK,
            dateLastModified=BLANK,
            enabledUser=pl.lit("true"),
            orgSourcedIds=pl.lit(self.school_ids).gather(pl.col("school")),
            role=pl.lit("teacher"),
            username=handle,
            userIds=pl.concat_str([pl.lit("{StaffID:"), staff_id, pl.lit("}")]),
            givenName=pl.col("given"),
            familyName=pl.col("family"),
            middleName=BLANK,
            identifier=staff_id,
            email=pl.concat_str([handle, pl.lit("@" + DOMAIN)]),
            sms=BLANK,
            phone=BLANK,
            agentSourcedIds=BLANK,
            grades=BLANK,
            password=BLANK,
        )

    def student_chunks(self) -> Iterator[tuple[int, int]]:
        """Index ranges of students: the base roster in chunks, then the day's new students."""
        for start in range(0, self.size.students, STUDENTS_PER_CHUNK):
            yield start, min(start + STUDENTS_PER_CHUNK, self.size.students)
        if self.new_students:
            yield self.size.students, self.size.students + self.new_students

    def student_frame(self, start: int, stop: int) -> pl.DataFrame:
        """Index columns of the students of one chunk who are on the roster on this day."""
        n = self.size.schools
        churn_draw = self.draw_below(DRAW_STUDENT_CHURN, 1_000_000, pl.col("person"))
        withdrawn = self.rates["withdrawn"]
        edited = withdrawn + self.rates["edited"]
        frame = pl.select(person=pl.int_range(start, stop, dtype=I64)).with_columns(
            school=pl.col("person") % n,
            churn=pl.when(pl.col("person") >= self.size.students)
            .then(pl.lit("new"))
            .when(churn_draw < withdrawn)
            .then(pl.lit("withdrawn"))
            .when(churn_draw < edited)
            .then(
                pl.when(self.draw_below(DRAW_STUDENT_EDIT, 2, pl.col("person")) == 0)
                .then(pl.lit("renamed"))
                .otherwise(pl.lit("regraded"))
            )
            .otherwise(pl.lit("")),
        )
        return frame.filter(pl.col("churn") != "withdrawn")

    def students(self, frame: pl.DataFrame) -> pl.DataFrame:
        band_grades = [BANDS[b] for b in BAND_ORDER]
        grade_lists = pl.Series([g for grades in band_grades for g in grades])
        offsets = pl.Series([sum(len(g) for g in band_grades[:b]) for b in range(3)], dtype=I64)
        counts = pl.Series([len(g) for g in band_grades], dtype=I64)
        band = self.band_index(pl.col("school"))
        band_count = pl.lit(counts).gather(band)
        grade_slot = self.draw_below(DRAW_GRADE, band_count, pl.col("person"))
        grade_slot = (
            pl.when(pl.col("churn") == "regraded")
            .then((grade_slot + 1) % band_count)
            .otherwise(grade_slot)
        )
        frame = frame.with_columns(
            grade=pl.lit(grade_lists).gather(pl.lit(offsets).gather(band) + grade_slot),
            **self._names(pl.col("person")),
        ).with_columns(
            family=pl.when(pl.col("churn") == "renamed")
            .then(pl.concat_str([pl.col("family"), pl.lit("-"), pl.col("middle")]))
            .otherwise(pl.col("family"))
        )
        number = (pl.col("person") + 100_001).cast(pl.String).str.zfill(7)
        state_id = ((pl.col("person") * 7_919 + 104_729) % 10_000_000_000).cast(pl.String)
        handle = pl.concat_str(
            [
                pl.col("given").str.to_lowercase(),
                pl.lit("."),
                pl.col("family").str.to_lowercase().str.replace_all("-", ""),
                number,
            ]
        )
        return frame.select(
            sourcedId=self.ids(frame, ID_STUDENT, pl.col("person")),
            status=BLANK,
            dateLastModified=BLANK,
            enabledUser=pl.lit("true"),
            orgSourcedIds=pl.lit(self.school_ids).gather(pl.col("school")),
            role=pl.lit("student"),
            username=handle,
            userIds=pl.concat_str([pl.lit("{StateID:"), state_id.str.zfill(10), pl.lit("}")]),
            givenName=pl.col("given"),
            familyName=pl.col("family"),
            middleName=pl.col("middle"),
            identifier=number,
            email=pl.concat_str([handle, pl.lit("@students." + DOMAIN)]),
            sms=BLANK,
            phone=BLANK,
            agentSourcedIds=BLANK,
            grades=pl.col("grade"),
            password=BLANK,
        )

    # -- enrollments ----------------------------------------------------------------------------

    def student_enrollments(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Six enrollments per student, one section in each period of their school."""
        n = self.size.schools
        sections_here = self.per_school(self.size.sections, pl.col("school"))
        in_period = (sections_here - pl.col("period") + PERIODS - 1) // PERIODS
        seat = self.draw_below(DRAW_SEAT, in_period, pl.col("person"), pl.col("period"))
        moved = (
            self.draw_below(DRAW_MOVE, 1_000_000, pl.col("person"), pl.col("period"))
            < self.rates["moved"]
        ) & (pl.col("churn") != "new")
        other_seat = (
            seat
            + 1
            + self.draw_below(DRAW_MOVE_TO, in_period - 1, pl.col("person"), pl.col("period"))
        ) % in_period
        periods = pl.DataFrame({"period": list(range(PERIODS))}, schema={"period": I64})
        rows = (
            frame.select("person", "school", "churn")
            .join(periods, how="cross")
            .with_columns(moved=moved)
            .with_columns(seat=pl.when(pl.col("moved")).then(other_seat).otherwise(seat))
            .with_columns(
                section=pl.col("school") + n * (pl.col("period") + PERIODS * pl.col("seat")),
                key=(pl.col("person") * PERIODS + pl.col("period")) * 2 + pl.col("moved").cast(I64),
            )
            .sort("person", "period")
        )
        return self._enrollment_rows(rows, ID_ENROLLMENT, ID_STUDENT, "student", by_row=False)

    def teacher_enrollments(self) -> pl.DataFrame:
        """Each section's teacher (primary) and, for about one in ten, a co-teacher."""
        n = self.size.schools
        sections = pl.select(section=pl.int_range(0, self.size.sections, dtype=I64)).with_columns(
            school=pl.col("section") % n
        )
        primary, co, changed = self.section_teacher(pl.col("section"), pl.col("school"))
        leads = sections.with_columns(
            person=primary, primary=pl.lit("true"), key=pl.col("section") * 4 + 2 * changed
        )
        co_teachers = sections.filter(self.has_co_teacher(pl.col("section"))).with_columns(
            person=co, primary=pl.lit("false"), key=pl.col("section") * 4 + 1
        )
        rows = pl.concat([leads, co_teachers]).sort("section", "primary", descending=[False, True])
        return self._enrollment_rows(rows, ID_TEACHING, ID_TEACHER, "teacher", by_row=True)

    def _enrollment_rows(
        self, rows: pl.DataFrame, kind: int, person_kind: int, role: str, by_row: bool
    ) -> pl.DataFrame:
        """Enrollment rows; a moved student or a new teacher is a drop and an add (a new id).

        ``primary`` is only meaningful for teachers (``by_row``); students leave it blank.
        """
        school_ids = self.school_ids
        section_ids = self.ids(rows, ID_SECTION, pl.col("section"))
        person_ids = self.ids(rows, person_kind, pl.col("person"))
        return rows.select(
            sourcedId=self.ids(rows, kind, pl.col("key")),
            status=BLANK,
            dateLastModified=BLANK,
            classSourcedId=pl.lit(section_ids),
            schoolSourcedId=pl.lit(school_ids).gather(pl.col("school")),
            userSourcedId=pl.lit(person_ids),
            role=pl.lit(role),
            primary=pl.col("primary") if by_row else BLANK,
            beginDate=BLANK,
            endDate=BLANK,
        )

    # -- writing --------------------------------------------------------------------------------

    def write(self, outdir: Path) -> dict[str, int]:
        """Write the export to ``outdir``; returns the row count of each file."""
        outdir.mkdir(parents=True, exist_ok=True)
        counts: dict[str, int] = {}
        for name, frame in (
            ("orgs", self.orgs()),
            ("academicSessions", self.sessions()),
            ("courses", self.courses()),
            ("classes", self.sections()),
        ):
            _check_columns(frame, name)
            frame.write_csv(outdir / f"{name}.csv")
            counts[name] = frame.height

        teaching = self.teacher_enrollments()
        counts["users"] = counts["enrollments"] = 0
        with (
            open(outdir / "users.csv", "wb") as users_file,
            open(outdir / "enrollments.csv", "wb") as enrollments_file,
        ):
            users_file.write(_header("users"))
            enrollments_file.write(_header("enrollments"))
            for frame, name, target in (
                (self.teachers(), "users", users_file),
                (teaching, "enrollments", enrollments_file),
            ):
                _check_columns(frame, name)
                frame.write_csv(target, include_header=False)
                counts[name] += frame.height
            for start, stop in self.student_chunks():
                people = self.student_frame(start, stop)
                users = self.students(people)
                _check_columns(users, "users")
                users.write_csv(users_file, include_header=False)
                counts["users"] += users.height
                enrollments = self.student_enrollments(people)
                _check_columns(enrollments, "enrollments")
                enrollments.write_csv(enrollments_file, include_header=False)
                counts["enrollments"] += enrollments.height

        with open(outdir / "manifest.csv", "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["propertyName", "value"])
            writer.writerow(["manifest.version", "1.0"])
            writer.writerow(["oneroster.version", "1.1"])
            for name in MANIFEST_FILES:
                writer.writerow([f"file.{name}", "bulk" if name in WRITTEN_FILES else "absent"])
            writer.writerow(["source.systemName", SYSTEM_NAME])
            writer.writerow(["source.systemCode", self.system_code()])
        return counts

    def system_code(self) -> str:
        return f"{self.size_name}:seed={self.seed}:ids={self.id_style}:churn={self.churn:g}"


def _hex(values: pl.Series) -> pl.Series:
    """16 lowercase hex digits per UInt64 (the bytes as stored; the order does not matter)."""
    as_bytes = values.to_arrow().view(pa.binary(8))
    return pl.Series(values.name, as_bytes).bin.encode("hex")


def _scramble40(code: pl.Expr, salt: int) -> pl.Expr:
    """A seeded bijection of 40-bit integers (odd multipliers, xor-shifts), for compact ids."""
    modulus = pl.lit(1 << 40, dtype=U64)
    code = (code + pl.lit(salt % (1 << 40), dtype=U64)) % modulus
    for multiplier in SCRAMBLE_MULTIPLIERS:
        code = code ^ (code // pl.lit(1 << 20, dtype=U64))
        code = (code * pl.lit(multiplier, dtype=U64)) % modulus
    return code ^ (code // pl.lit(1 << 20, dtype=U64))


def _scramble40_int(code: int, salt: int) -> int:
    code = (code + salt) % (1 << 40)
    for multiplier in SCRAMBLE_MULTIPLIERS:
        code ^= code >> 20
        code = (code * multiplier) % (1 << 40)
    return code ^ (code >> 20)


def _compact_text(code: int) -> str:
    return code.to_bytes(8, "little").hex()[:10]


def _uuid_text(high: str, low: str) -> str:
    """Lay 32 hex digits out as a version-4 UUID, as `District.ids` does for columns."""
    variant = UUID_VARIANTS[int(low[0], 16) % 4]
    return f"{high[:8]}-{high[8:12]}-4{high[13:16]}-{variant}{low[1:4]}-{low[4:16]}"


def _blank_status(frame: pl.DataFrame, name: str) -> pl.DataFrame:
    """Bulk files may leave status and dateLastModified blank; empty text is written unquoted."""
    blanks = {column: pl.col(column).replace("", None) for column in frame.columns}
    return (
        frame.with_columns(**blanks)
        .with_columns(status=BLANK, dateLastModified=BLANK)
        .select(COLUMNS[name])
    )


def _header(name: str) -> bytes:
    return (",".join(COLUMNS[name]) + "\n").encode()


def _check_columns(frame: pl.DataFrame, name: str) -> None:
    if frame.columns != COLUMNS[name]:
        raise AssertionError(f"{name}.csv columns {frame.columns} differ from the spec's")


def read_system_code(basedir: Path) -> str:
    """The ``source.systemCode`` a base export was written with (size, seed and churn)."""
    manifest = basedir / "manifest.csv"
    if not manifest.exists():
        raise SystemExit(f"{manifest} not found: generate the base export first")
    with open(manifest, newline="") as handle:
        for row in csv.reader(handle):
            if len(row) == 2 and row[0] == "source.systemCode":
                return row[1]
    raise SystemExit(f"{manifest} has no source.systemCode: it was not written by this generator")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("size", choices=sorted(SIZES), help="district size")
    parser.add_argument("outdir", type=Path, help="folder to write the CSV files to")
    parser.add_argument("--seed", type=int, default=2026, help="random seed (default 2026)")
    parser.add_argument(
        "--day2",
        type=Path,
        metavar="BASEDIR",
        help="write the day-two export of the district whose base export is in BASEDIR",
    )
    parser.add_argument(
        "--ids",
        choices=["uuid", "compact"],
        default="compact",
        help="sourcedId style: uuid (36 characters) or compact (10 hex digits; the file sizes the"
        " performance targets were set on)",
    )
    parser.add_argument(
        "--churn", type=float, default=0.01, help="day-two churn rate (default 0.01, i.e. 1 %%)"
    )
    args = parser.parse_args(argv)

    churn = 0.0
    if args.day2 is not None:
        base_code = read_system_code(args.day2)
        expected = District(args.size, args.seed, 0.0, args.ids).system_code()
        if base_code != expected:
            raise SystemExit(
                f"{args.day2} holds {base_code!r}, not {expected!r}: pass the same size, --seed"
                " and --ids"
            )
        churn = args.churn
        if not 0 < churn <= 0.05:
            raise SystemExit("--churn must be in (0, 0.05]: larger churn trips the safety hold")

    started = time.perf_counter()
    counts = District(args.size, args.seed, churn, args.ids).write(args.outdir)
    elapsed = time.perf_counter() - started
    total_bytes = sum(p.stat().st_size for p in args.outdir.glob("*.csv"))
    summary = ", ".join(f"{name} {count:,}" for name, count in counts.items())
    print(f"{args.outdir}: {summary}; {total_bytes / 1e6:.1f} MB in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
