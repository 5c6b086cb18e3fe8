"""The ``google`` connector: Google Classroom courses and rosters, schools from Workspace OUs.

Reads courses (filtered by state, and optionally by id or by the owner's organisational unit),
each course's teachers and students, and the Directory's users for emails and units, and turns
them into a full :class:`Feed`. People are keyed by their Google user id and sections by course
id. See ``docs/connectors/google.md`` for the settings and the mapping.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import polars as pl

from rostersync.domain.feed import SCHEMAS, Entity, Feed
from rostersync.errors import ConfigError, Problem, SourceError
from rostersync.sources.base import Check, FetchContext, register
from rostersync.sources.google_api import (
    CLASSROOM_SCOPES,
    Endpoints,
    GoogleApi,
    OAuthClient,
    ServiceAccountKey,
    make_credentials,
    parse_credentials,
)

logger = logging.getLogger(__name__)

DEFAULT_SCHOOL = "Default school"
COURSE_STATES = ("ACTIVE", "ARCHIVED", "PROVISIONED", "DECLINED", "SUSPENDED")
CLASSROOM = "Google Classroom API"
DIRECTORY = "Admin SDK API (Directory)"
ORIGIN = "Google Classroom"
#: The Directory's largest page of users.
DIRECTORY_PAGE = 500
_RANK = {"owner": 0, "co-teacher": 1, "student": 2}


@dataclass
class _Person:
    ext_id: str
    role: str
    email: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    org_unit: str | None = None


@dataclass
class GoogleClassroomSource:
    """A Google Workspace domain's Classroom, read as one administrator."""

    key: ServiceAccountKey | OAuthClient
    subject: str | None = None
    refresh_token: str | None = None
    endpoints: Endpoints = field(default_factory=Endpoints)
    school: str = DEFAULT_SCHOOL
    ou_schools: dict[str, str] = field(default_factory=dict)
    courses: tuple[str, ...] = ()
    ous: tuple[str, ...] = ()
    course_states: tuple[str, ...] = ("ACTIVE",)
    invitations: bool = True
    page_size: int = 100
    rate: float = 10.0
    customer: str = "my_customer"
    #: Injected by tests so waits take no time.
    sleep: Callable[[float], None] | None = None
    kind: str = field(default="google", init=False)
    mode: Literal["full", "delta", "either"] = field(default="full", init=False)

    def api(self) -> GoogleApi:
        credentials = make_credentials(
            self.key,
            scopes=CLASSROOM_SCOPES,
            endpoints=self.endpoints,
            subject=self.subject,
            refresh_token=self.refresh_token,
        )
        return GoogleApi(credentials, subject=self.subject, rate=self.rate, sleep=self.sleep)

    # Reading --------------------------------------------------------------------------------

    def fetch(self, context: FetchContext) -> Feed:
        with self.api() as api:
            api.refresh()
            return _Pull(self, api, context).run()

    # Test connection ------------------------------------------------------------------------

    def check(self) -> list[Check]:
        """Get a token, then call one cheap endpoint of each API the connector uses."""
        results: list[Check] = []
        try:
            client = self.api()
        except ConfigError as exc:
            return [Check("settings", False, str(exc))]
        with client as api:
            try:
                api.refresh()
            except SourceError as exc:
                return [Check("token", False, str(exc))]
            results.append(Check("token", True, "Google issued an access token."))
            calls: list[tuple[str, Callable[[], object]]] = [
                (
                    "classroom",
                    lambda: api.get(
                        f"{self.endpoints.classroom}/v1/courses",
                        {"pageSize": 1, "courseStates": list(self.course_states)},
                        api=CLASSROOM,
                    ),
                ),
                (
                    "directory users",
                    lambda: (
                        api.get(
                            f"{self.endpoints.directory}/admin/directory/v1/users/"
                            f"{quote(self.subject, safe='@')}",
                            {"projection": "basic"},
                            api=DIRECTORY,
                        )
                        if self.subject
                        else api.get(
                            f"{self.endpoints.directory}/admin/directory/v1/users",
                            {"customer": self.customer, "maxResults": 1},
                            api=DIRECTORY,
                        )
                    ),
                ),
                (
                    "directory units",
                    lambda: api.get(
                        f"{self.endpoints.directory}/admin/directory/v1/customer/"
                        f"{quote(self.customer, safe='')}/orgunits",
                        {"type": "children"},
                        api=DIRECTORY,
                    ),
                ),
            ]
            for name, call in calls:
                try:
                    call()
                except SourceError as exc:
                    results.append(Check(name, False, str(exc)))
                else:
                    results.append(Check(name, True, "The API answered."))
        return results


class _Pull:
    """One fetch: the API calls, then the frames."""

    def __init__(self, source: GoogleClassroomSource, api: GoogleApi, context: FetchContext):
        self.source = source
        self.api = api
        self.context = context
        self.ep = source.endpoints
        self.warnings: list[Problem] = []
        #: Directory data by Google user id: email, unit and names.
        self.directory: dict[str, dict[str, Any]] = {}
        self.unit_ids: dict[str, str] = {}

    def warn(self, message: str, record_id: str | None = None, fix: str | None = None) -> None:
        self.warnings.append(Problem(message, file=ORIGIN, record_id=record_id, fix=fix))

    def run(self) -> Feed:
        source = self.source
        if source.ou_schools or source.ous:
            self._read_units()
            self._read_directory()
        courses = self._courses()
        self.context.progress("courses", len(courses))

        people: dict[str, _Person] = {}
        enrollments: dict[str, dict[str, str]] = {}
        sections: list[dict[str, Any]] = []
        both_roles: set[str] = set()
        for number, course in enumerate(courses, start=1):
            course_id = str(course["id"])
            teachers = self._members(course_id, "teachers")
            students = self._members(course_id, "students")
            owner = str(course.get("ownerId") or "")
            teacher_ids = [str(t.get("userId") or "") for t in teachers]
            if owner not in teacher_ids and teacher_ids:
                self.warn(
                    "The course's owner is not among its teachers; its first teacher is made "
                    "the owner.",
                    course_id,
                )
                owner = teacher_ids[0]
            for member, role in [(t, "teacher") for t in teachers] + [
                (s, "student") for s in students
            ]:
                user_id = str(member.get("userId") or "")
                if not user_id:
                    continue
                person = self._person(people, user_id, role, member.get("profile") or {})
                if person.role != role:
                    both_roles.add(user_id)
                    person.role = "teacher"
                enrolled = (
                    "student"
                    if role == "student"
                    else "owner"
                    if user_id == owner
                    else "co-teacher"
                )
                ext_id = f"{course_id}|{user_id}"
                current = enrollments.get(ext_id)
                if current is None or _RANK[enrolled] < _RANK[current["role"]]:
                    enrollments[ext_id] = {
                        "ext_id": ext_id,
                        "section_ext_id": course_id,
                        "person_ext_id": user_id,
                        "role": enrolled,
                    }
            if source.invitations:
                self._report_invitations(course_id)
            sections.append(
                {
                    "ext_id": course_id,
                    "owner": owner,
                    "name": (course.get("name") or "").strip() or f"Course {course_id}",
                    "course": (course.get("name") or "").strip() or None,
                    "period": (course.get("section") or "").strip() or None,
                    "room": (course.get("room") or "").strip() or None,
                }
            )
            self.context.progress("sections", number)
        self._fill_from_directory(people)
        self.context.progress("people", len(people))
        if both_roles:
            self.warn(
                f"{len(both_roles)} person(s) teach one course and are students in another; "
                "they are kept as teachers.",
            )
        return self._feed(people, sections, list(enrollments.values()))

    # Courses ---------------------------------------------------------------------------------

    def _courses(self) -> list[dict[str, Any]]:
        source = self.source
        states = set(source.course_states)
        chosen: dict[str, dict[str, Any]] = {}
        for course_id in source.courses:
            course = self.api.get(
                f"{self.ep.classroom}/v1/courses/{quote(course_id, safe='')}",
                api=CLASSROOM,
                missing_ok=True,
            )
            if course is None:
                self.warn(
                    "The course named in the source's 'courses' setting does not exist (or the "
                    "subject cannot see it).",
                    course_id,
                    fix="Remove it from the setting, or check the course id.",
                )
            elif course.get("courseState") not in states:
                self.warn(
                    f"The course is {course.get('courseState')}, not one of the states synced "
                    f"({', '.join(source.course_states)}); it was left out.",
                    course_id,
                    fix="Add its state to course_states to sync it.",
                )
            else:
                chosen[str(course["id"])] = course
        if source.courses and not source.ous:
            return list(chosen.values())
        listed = self.api.pages(
            f"{self.ep.classroom}/v1/courses",
            {"courseStates": list(source.course_states), "pageSize": source.page_size},
            items="courses",
            api=CLASSROOM,
        )
        for course in listed:
            if str(course.get("id")) in chosen or course.get("courseState") not in states:
                continue
            if source.ous and not self._in_units(str(course.get("ownerId") or ""), source.ous):
                continue
            chosen[str(course["id"])] = course
        return list(chosen.values())

    def _in_units(self, user_id: str, units: tuple[str, ...]) -> bool:
        unit = (self.directory.get(user_id) or {}).get("org_unit")
        return bool(unit) and any(_under(str(unit), u) for u in units)

    def _members(
        self, course_id: str, kind: Literal["teachers", "students"]
    ) -> list[dict[str, Any]]:
        return list(
            self.api.pages(
                f"{self.ep.classroom}/v1/courses/{quote(course_id, safe='')}/{kind}",
                {"pageSize": self.source.page_size},
                items=kind,
                api=CLASSROOM,
            )
        )

    def _report_invitations(self, course_id: str) -> None:
        pending = {"STUDENT": 0, "TEACHER": 0, "OWNER": 0}
        for invitation in self.api.pages(
            f"{self.ep.classroom}/v1/invitations",
            {"courseId": course_id, "pageSize": self.source.page_size},
            items="invitations",
            api=CLASSROOM,
        ):
            role = str(invitation.get("role") or "")
            if role in pending:
                pending[role] += 1
        if pending["STUDENT"]:
            self.warn(
                f"{pending['STUDENT']} student(s) invited to the course have not joined yet; "
                "they are not enrolled until they accept the invitation.",
                course_id,
                fix="Ask the students to accept in Classroom, or add them to the course directly.",
            )
        teachers = pending["TEACHER"] + pending["OWNER"]
        if teachers:
            self.warn(
                f"{teachers} teacher(s) invited to the course have not accepted yet; they are "
                "not enrolled until they do.",
                course_id,
            )

    # People ----------------------------------------------------------------------------------

    def _person(
        self, people: dict[str, _Person], user_id: str, role: str, profile: Mapping[str, Any]
    ) -> _Person:
        person = people.get(user_id)
        name = profile.get("name") or {}
        email = str(profile.get("emailAddress") or "").strip().lower() or None
        if person is None:
            person = people[user_id] = _Person(user_id, role)
        person.email = person.email or email
        person.given_name = person.given_name or (str(name.get("givenName") or "") or None)
        person.family_name = person.family_name or (str(name.get("familyName") or "") or None)
        return person

    def _read_units(self) -> None:
        found = self.api.get(
            f"{self.ep.directory}/admin/directory/v1/customer/"
            f"{quote(self.source.customer, safe='')}/orgunits",
            {"type": "all"},
            api=DIRECTORY,
        )
        for unit in (found or {}).get("organizationUnits") or []:
            if isinstance(unit, dict) and unit.get("orgUnitPath"):
                self.unit_ids[str(unit["orgUnitPath"])] = str(unit.get("orgUnitId") or "")
        for path in list(self.source.ou_schools) + list(self.source.ous):
            if path != "/" and path not in self.unit_ids:
                self.warn(
                    f"The organisational unit {path!r} named in the source's settings does not "
                    "exist in the domain.",
                    fix="Correct the path (Admin console > Directory > Organisational units).",
                )

    def _read_directory(self) -> None:
        count = 0
        for user in self.api.pages(
            f"{self.ep.directory}/admin/directory/v1/users",
            {
                "customer": self.source.customer,
                "maxResults": DIRECTORY_PAGE,
                "projection": "basic",
            },
            items="users",
            api=DIRECTORY,
        ):
            self._remember(user)
            count += 1
            if count % 1000 == 0:
                self.context.progress("directory users", count)
        self.context.progress("directory users", count)

    def _remember(self, user: Mapping[str, Any]) -> None:
        name = user.get("name") or {}
        self.directory[str(user.get("id"))] = {
            "email": str(user.get("primaryEmail") or "").strip().lower() or None,
            "org_unit": user.get("orgUnitPath"),
            "given_name": name.get("givenName"),
            "family_name": name.get("familyName"),
        }

    def _fill_from_directory(self, people: dict[str, _Person]) -> None:
        """Emails missing from Classroom, and units, from the Directory (``users.get`` for
        anyone the domain listing did not include)."""
        units_needed = bool(self.source.ou_schools)
        unknown = 0
        for person in people.values():
            known = self.directory.get(person.ext_id)
            if known is None and (person.email is None or units_needed):
                known = self._lookup(person.ext_id)
            if known is None:
                unknown += 1
                continue
            person.email = person.email or known["email"]
            person.given_name = person.given_name or known["given_name"]
            person.family_name = person.family_name or known["family_name"]
            person.org_unit = known["org_unit"]
        without_email = sum(1 for p in people.values() if p.email is None)
        if without_email:
            self.warn(
                f"{without_email} person(s) have no email in Classroom or the Directory; they "
                "are synced by their Google id only.",
                fix="Check the scope classroom.profile.emails is delegated.",
            )
        if unknown and units_needed:
            self.warn(
                f"{unknown} person(s) are not users of the domain's Directory (guests from "
                "another domain, or deleted accounts); they have no school.",
            )

    def _lookup(self, user_id: str) -> dict[str, Any] | None:
        user = self.api.get(
            f"{self.ep.directory}/admin/directory/v1/users/{quote(user_id, safe='')}",
            {"projection": "basic"},
            api=DIRECTORY,
            missing_ok=True,
        )
        if user is None:
            return None
        self._remember(user)
        return self.directory[str(user.get("id"))]

    # Frames ----------------------------------------------------------------------------------

    def _school_of(self, unit: str | None) -> str | None:
        if not self.source.ou_schools:
            return "domain"
        if not unit:
            return None
        best = max((p for p in self.source.ou_schools if _under(unit, p)), key=len, default=None)
        return f"ou:{best}" if best is not None else None

    def _feed(
        self,
        people: dict[str, _Person],
        sections: list[dict[str, Any]],
        enrollments: list[dict[str, str]],
    ) -> Feed:
        source = self.source
        schools: dict[str, dict[str, Any]] = {}
        if source.ou_schools:
            for path, name in source.ou_schools.items():
                schools[f"ou:{path}"] = {
                    "ext_id": f"ou:{path}",
                    "name": name,
                    "sis_id": self.unit_ids.get(path) or None,
                }
        fallback = {"ext_id": "domain", "name": source.school}

        person_rows = []
        unmapped = 0
        for person in people.values():
            school = self._school_of(person.org_unit)
            if school is None:
                unmapped += 1
            person_rows.append(
                {
                    "ext_id": person.ext_id,
                    "role": person.role,
                    "email": person.email,
                    "given_name": person.given_name,
                    "family_name": person.family_name,
                    "google_id": person.ext_id,
                    "school_ext_id": school,
                }
            )
        if unmapped and source.ou_schools:
            self.warn(
                f"{unmapped} person(s) are in organisational units that map to no school; "
                "their school is left empty.",
                fix="Add their units to the source's ou_schools setting.",
            )

        if any(row["school_ext_id"] == "domain" for row in person_rows):
            schools.setdefault("domain", fallback)
        homeless = 0
        for section in sections:
            owner = people.get(section.pop("owner"))
            school = self._school_of(owner.org_unit if owner else None)
            if school is None:
                homeless += 1
                school = "domain"
            section["school_ext_id"] = school
            if school == "domain":
                schools.setdefault("domain", fallback)
        if homeless:
            self.warn(
                f"{homeless} course(s) have an owner in no mapped unit; they were put in "
                f"{source.school!r}.",
                fix="Map the owners' units in ou_schools, or set the 'school' setting.",
            )
        frames: dict[Entity, pl.DataFrame] = {
            "school": _frame("school", list(schools.values())),
            "person": _frame("person", person_rows),
            "section": _frame("section", sections),
            "enrollment": _frame("enrollment", enrollments),
        }
        logger.info(
            "Read Google Classroom: %s sections, %s people, %s enrollments, %s requests.",
            len(sections),
            len(person_rows),
            len(enrollments),
            self.api.requests,
        )
        return Feed(
            mode="full",
            frames=frames,
            warnings=self.warnings,
            origin=f"{ORIGIN} ({source.subject or 'OAuth'})",
            files=dict.fromkeys(frames, ORIGIN),
        )


def _under(unit: str, prefix: str) -> bool:
    """Whether ``unit`` is ``prefix`` or below it (`/A/B/C` is under `/A/B`)."""
    prefix = prefix.rstrip("/")
    return not prefix or unit == prefix or unit.startswith(prefix + "/")


def _frame(entity: Entity, records: list[dict[str, Any]]) -> pl.DataFrame:
    schema = SCHEMAS[entity]
    return pl.DataFrame({name: [r.get(name) for r in records] for name in schema}, schema=schema)


# Settings ------------------------------------------------------------------------------------


def _list(value: str | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v.strip() for v in (value or "").split(",") if v.strip()))


def _unit(path: str, setting: str) -> str:
    path = path.strip()
    if not path.startswith("/"):
        raise ConfigError(
            f"The {setting} setting names {path!r}, which is not an organisational unit path; "
            "paths start with '/', like /Schools/North."
        )
    return path.rstrip("/") or "/"


def parse_ou_schools(value: str | None) -> dict[str, str]:
    """``/Schools/North=North High;/Schools/South=South High`` as a dict of unit → school."""
    out: dict[str, str] = {}
    for pair in (value or "").split(";"):
        if not pair.strip():
            continue
        path, sep, name = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigError(
                f"The ou_schools setting has {pair.strip()!r}; write each pair as "
                "/Unit/Path=School name, separated by semicolons."
            )
        out[_unit(path, "ou_schools")] = " ".join(name.split())
    return out


def _number(settings: Mapping[str, str], name: str, default: float, low: float) -> float:
    raw = (settings.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"The {name} setting must be a number, not {raw!r}.") from None
    if value < low:
        raise ConfigError(f"The {name} setting must be at least {low:g}.")
    return value


def _flag(settings: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (settings.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("yes", "true", "on", "1"):
        return True
    if raw in ("no", "false", "off", "0"):
        return False
    raise ConfigError(f"The {name} setting must be yes or no, not {raw!r}.")


@register("google")
def create(settings: Mapping[str, str]) -> GoogleClassroomSource:
    """Build the connector from its settings; see ``docs/connectors/google.md``."""
    raw = (settings.get("credentials") or "").strip()
    if not raw:
        raise ConfigError(
            "The google source has no 'credentials' setting. Set credentials=FILE to the service "
            "account key (or OAuth client) JSON file from the Google Cloud console."
        )
    key = parse_credentials(raw)
    subject = (settings.get("subject") or "").strip() or None
    if isinstance(key, ServiceAccountKey) and not subject:
        raise ConfigError(
            "A service account needs a 'subject': the email of the domain administrator it acts "
            "as (set subject=admin@your-domain)."
        )
    states = tuple(s.upper() for s in _list(settings.get("course_states"))) or ("ACTIVE",)
    unknown = [s for s in states if s not in COURSE_STATES]
    if unknown:
        raise ConfigError(
            f"Unknown course state(s) {', '.join(unknown)}; use {', '.join(COURSE_STATES)}."
        )
    school = " ".join((settings.get("school") or DEFAULT_SCHOOL).split())
    return GoogleClassroomSource(
        key=key,
        subject=subject,
        refresh_token=(settings.get("refresh_token") or "").strip() or None,
        endpoints=Endpoints.from_setting((settings.get("api_endpoint") or "").strip() or None),
        school=school or DEFAULT_SCHOOL,
        ou_schools=parse_ou_schools(settings.get("ou_schools")),
        courses=_list(settings.get("courses")),
        ous=tuple(_unit(u, "ous") for u in _list(settings.get("ous"))),
        course_states=states,
        invitations=_flag(settings, "invitations", True),
        page_size=int(_number(settings, "page_size", 100, 1)),
        rate=_number(settings, "requests_per_second", 10.0, 0.01),
        customer=(settings.get("customer") or "").strip() or "my_customer",
    )
