"""Demo data: a small district with a OneRoster export and a hand-kept CSV, synced end to end.

The demo shows the product's main moves on a fresh SQLite store: a first import, a second
source naming some of the same students, a student the extension saw before any roster named
them, and a day-two export with a withdrawal, a new student and a renamed section.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

from rostersync.domain.oneroster import HEADERS

SCHOOLS = [
    ("org-lhs", "Lincoln High School", "LHS"),
    ("org-wms", "Washington Middle School", "WMS"),
]
FIRST = [
    "Ava",
    "Ben",
    "Chloe",
    "Diego",
    "Emma",
    "Farah",
    "Gus",
    "Hana",
    "Ivan",
    "Jade",
    "Kai",
    "Lena",
    "Milo",
    "Nora",
    "Omar",
    "Pia",
    "Quinn",
    "Rosa",
    "Sami",
    "Theo",
]
LAST = ["Adams", "Baker", "Chen", "Diaz", "Evans", "Fox", "Garcia", "Hill", "Ito", "Jones"]
COURSES = ["Algebra I", "Biology", "World History", "English 9", "Spanish I", "Art"]


def _write(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def write_oneroster(folder: Path, *, day: int = 1) -> None:
    """A OneRoster 1.1 CSV bulk export of the demo district (``day=2``: the next day's)."""
    rng = random.Random(7)
    folder.mkdir(parents=True, exist_ok=True)
    _write(
        folder / "manifest.csv",
        ["propertyName", "value"],
        [
            ["manifest.version", "1.0"],
            ["oneroster.version", "1.1"],
            *[
                [f"file.{n}", "bulk"]
                for n in ("orgs", "academicSessions", "courses", "classes", "users", "enrollments")
            ],
            *[
                [f"file.{n}", "absent"]
                for n in ("demographics", "lineItems", "categories", "results")
            ],
        ],
    )
    _write(
        folder / "orgs.csv",
        HEADERS["orgs"],
        [["org-district", "", "", "Lincoln Unified", "district", "LU", ""]]
        + [[ident, "", "", name, "school", code, "org-district"] for ident, name, code in SCHOOLS],
    )
    _write(
        folder / "academicSessions.csv",
        HEADERS["academicSessions"],
        [["term-fall", "", "", "Fall 2026", "semester", "2026-08-24", "2026-12-18", "", "2027"]],
    )
    courses, classes, users, enrollments = [], [], [], []
    teacher = 0
    for ident, _name, code in SCHOOLS:
        for index, title in enumerate(COURSES):
            course_id = f"crs-{code}-{index}"
            courses.append([course_id, "", "", "", title, f"{code}-{index}", "", ident, "", ""])
            teacher += 1
            teacher_id = f"tch-{teacher}"
            users.append(
                [
                    teacher_id,
                    "",
                    "",
                    "true",
                    ident,
                    "teacher",
                    f"t{teacher}",
                    "",
                    rng.choice(FIRST),
                    rng.choice(LAST),
                    "",
                    f"T{teacher:04d}",
                    f"teacher{teacher}@lincoln.example.org",
                    "",
                    "",
                    "",
                    "",
                    "",
                ]
            )
            class_id = f"cls-{code}-{index}"
            title_shown = f"{title} (Period {index + 1})"
            if day == 2 and class_id == "cls-LHS-1":
                title_shown = "Biology Honors (Period 2)"
            classes.append(
                [
                    class_id,
                    "",
                    "",
                    title_shown,
                    "",
                    course_id,
                    f"{code}{index}",
                    "scheduled",
                    f"Room {100 + index}",
                    ident,
                    "term-fall",
                    "",
                    "",
                    str(index + 1),
                ]
            )
            enrollments.append(
                [
                    f"enr-{class_id}-{teacher_id}",
                    "",
                    "",
                    class_id,
                    ident,
                    teacher_id,
                    "teacher",
                    "true",
                    "",
                    "",
                ]
            )
    student = 0
    for ident, _name, code in SCHOOLS:
        for _ in range(30):
            student += 1
            if day == 2 and student == 3:
                continue  # withdrawn
            rng = random.Random(student)
            student_id = f"stu-{student}"
            users.append(
                [
                    student_id,
                    "",
                    "",
                    "true",
                    ident,
                    "student",
                    f"s{student}",
                    f"{{StateID:ST{student:06d}}}",
                    rng.choice(FIRST),
                    rng.choice(LAST),
                    "",
                    f"S{student:05d}",
                    f"student{student}@lincoln.example.org",
                    "",
                    "",
                    "",
                    "9" if code == "LHS" else "7",
                    "",
                ]
            )
            for index in rng.sample(range(len(COURSES)), 4):
                class_id = f"cls-{code}-{index}"
                enrollments.append(
                    [
                        f"enr-{class_id}-{student_id}",
                        "",
                        "",
                        class_id,
                        ident,
                        student_id,
                        "student",
                        "false",
                        "",
                        "",
                    ]
                )
    if day == 2:
        users.append(
            [
                "stu-new",
                "",
                "",
                "true",
                "org-lhs",
                "student",
                "snew",
                "",
                "Zoe",
                "Newman",
                "",
                "S09999",
                "zoe.newman@lincoln.example.org",
                "",
                "",
                "",
                "9",
                "",
            ]
        )
        enrollments.append(
            [
                "enr-cls-LHS-0-stu-new",
                "",
                "",
                "cls-LHS-0",
                "org-lhs",
                "stu-new",
                "student",
                "false",
                "",
                "",
            ]
        )
    _write(
        folder / "courses.csv",
        HEADERS["courses"],
        courses,
    )
    _write(
        folder / "classes.csv",
        HEADERS["classes"],
        classes,
    )
    _write(
        folder / "users.csv",
        HEADERS["users"],
        users,
    )
    _write(
        folder / "enrollments.csv",
        HEADERS["enrollments"],
        enrollments,
    )


def write_clubs_csv(path: Path) -> None:
    """The after-school clubs sheet an admin keeps by hand: some students are already on the
    SIS roster, one is known only to the extension so far."""
    rows = [
        [
            "coach.lee@lincoln.example.org",
            "Robotics Club",
            "student1@lincoln.example.org",
            "Lincoln High School",
        ],
        [
            "coach.lee@lincoln.example.org",
            "Robotics Club",
            "student2@lincoln.example.org",
            "Lincoln High School",
        ],
        [
            "coach.lee@lincoln.example.org",
            "Robotics Club",
            "visitor@lincoln.example.org",
            "Lincoln High School",
        ],
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, ["Teacher Email", "Class Name", "Student Email", "School"], rows)
