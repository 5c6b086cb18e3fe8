"""A fake of Google's OAuth token endpoint, Classroom v1, Admin SDK Directory v1 and Sheets v4.

It serves on 127.0.0.1 from a thread (``http.server``). Routes, query parameters, required
scopes and response fields come from the discovery documents bundled with
google-api-python-client: a request with a parameter the method does not have is answered 400
(as Google does) and recorded in ``violations``, and so is any response field the method's
schema does not name. Errors use Google's JSON error format. Tests put users, units, courses and
sheets in it, and inject faults (rate limits, disabled APIs, expired tokens) per test. Push
registrations expire ``registration_lifetime`` after the fake's ``now``, which tests may replace.
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

CLASSROOM_SCOPES = {
    "https://www.googleapis.com/auth/classroom.courses.readonly",
    "https://www.googleapis.com/auth/classroom.rosters.readonly",
    "https://www.googleapis.com/auth/classroom.profile.emails",
    "https://www.googleapis.com/auth/admin.directory.user.readonly",
    "https://www.googleapis.com/auth/admin.directory.orgunit.readonly",
}
SHEETS_SCOPE = "https://www.googleapis.com/auth/spreadsheets.readonly"
EMAIL_SCOPE = "https://www.googleapis.com/auth/classroom.profile.emails"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"

DOCUMENTS = ("classroom.v1.json", "admin.directory_v1.json", "sheets.v4.json")


def discovery_folder() -> Path:
    import googleapiclient

    return Path(googleapiclient.__file__).parent / "discovery_cache" / "documents"


@dataclass
class Method:
    id: str
    http: str
    pattern: re.Pattern[str]
    names: list[str]
    params: set[str]
    scopes: set[str]
    response: str | None
    doc: dict[str, Any]
    request: str | None = None


@functools.cache
def methods() -> list[Method]:
    """Every method of the three documents, with a path pattern built from its template."""
    found: list[Method] = []

    def walk(doc: dict[str, Any], resources: dict[str, Any]) -> None:
        for resource in resources.values():
            for md in resource.get("methods", {}).values():
                template = md.get("flatPath", md["path"])
                names = re.findall(r"{\+?(\w+)}", md["path"])
                regex = re.sub(r"{\+\w+}", "(.+)", template)
                regex = re.sub(r"{\w+}", "([^/]+)", regex)
                found.append(
                    Method(
                        id=md["id"],
                        http=md["httpMethod"],
                        pattern=re.compile(f"^/{regex}$"),
                        names=names,
                        params=set(md.get("parameters", {})) | set(doc.get("parameters", {})),
                        scopes=set(md.get("scopes", [])),
                        response=(md.get("response") or {}).get("$ref"),
                        doc=doc,
                        request=(md.get("request") or {}).get("$ref"),
                    )
                )
            walk(doc, resource.get("resources", {}))

    for name in DOCUMENTS:
        doc = json.loads((discovery_folder() / name).read_text())
        walk(doc, doc.get("resources", {}))
    return found


@dataclass
class Fault:
    """Answer the next ``times`` requests (None: all) to ``method`` — a discovery method id,
    ``token``, a prefix such as ``classroom.*``, or ``*`` — with this status, body and headers."""

    method: str
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    times: int | None = 1


def error_body(
    status: int,
    message: str,
    state: str,
    reason: str | None = None,
    details: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Google's error format: ``{"error": {code, message, status, errors[], details[]}}``."""
    body: dict[str, Any] = {"code": status, "message": message, "status": state}
    if reason:
        body["errors"] = [{"message": message, "domain": "global", "reason": reason}]
    if details:
        body["details"] = details
    return {"error": body}


@functools.cache
def _private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class Token:
    subject: str | None
    scopes: set[str]
    expires: float


class FakeGoogle:
    """The fake's state and behaviour; ``start()`` serves it, ``url`` is its address."""

    def __init__(self) -> None:
        self.users: dict[str, dict[str, Any]] = {}
        self.units: list[dict[str, Any]] = []
        self.courses: dict[str, dict[str, Any]] = {}
        self.teachers: dict[str, list[str]] = {}
        self.students: dict[str, list[str]] = {}
        self.invitations: list[dict[str, Any]] = []
        #: Users whose Classroom profile has no emailAddress.
        self.hidden_emails: set[str] = set()
        #: spreadsheet id → tab name → rows; and who may read each.
        self.sheets: dict[str, dict[str, list[list[str]]]] = {}
        self.sheet_readers: dict[str, set[str]] = {}
        #: client_email → public key, and the scopes domain-wide delegation allows.
        self.service_accounts: dict[str, rsa.RSAPublicKey] = {}
        self.delegated: set[str] = set(CLASSROOM_SCOPES) | {SHEETS_SCOPE}
        self.admins: set[str] = set()
        self.oauth_clients: dict[str, str] = {}
        self.codes: dict[str, str] = {}
        self.refresh_tokens: dict[str, set[str]] = {}
        self.tokens: dict[str, Token] = {}
        self.token_lifetime = 3599
        self.faults: list[Fault] = []
        #: Classroom push registrations by id; their expiry follows ``now``.
        self.registrations: dict[str, dict[str, Any]] = {}
        self.registration_lifetime = timedelta(days=7)
        self.now: Callable[[], datetime] = lambda: datetime.now(UTC)
        self.log: list[tuple[str, dict[str, list[str]]]] = []
        self.violations: list[str] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(100000000001)
        self._server: ThreadingHTTPServer | None = None

    # Serving ---------------------------------------------------------------------------------

    def start(self) -> FakeGoogle:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def calls(self, method: str) -> list[dict[str, list[str]]]:
        """The query parameters of every request made to ``method``."""
        return [query for name, query in self.log if name == method]

    # Test data -------------------------------------------------------------------------------

    def new_id(self) -> str:
        return str(next(self._ids))

    def service_account(
        self, client_email: str = "sync@district-project.iam.gserviceaccount.com"
    ) -> dict[str, Any]:
        """A service account key file's JSON (a real RSA key) that the token endpoint knows."""
        key = _private_key()
        self.service_accounts[client_email] = key.public_key()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return {
            "type": "service_account",
            "project_id": "district-project",
            "private_key_id": secrets.token_hex(20),
            "private_key": pem,
            "client_email": client_email,
            "client_id": "1234567890",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": "https://oauth2.googleapis.com/token",
        }

    def oauth_client(self) -> dict[str, Any]:
        client_id = f"{secrets.token_hex(6)}.apps.googleusercontent.com"
        secret = secrets.token_urlsafe(18)
        self.oauth_clients[client_id] = secret
        return {"installed": {"client_id": client_id, "client_secret": secret}}

    def consent(self, scopes: set[str]) -> str:
        """What the consent page does when the admin approves: issue a one-time code."""
        code = "4/" + secrets.token_urlsafe(20)
        self.codes[code] = " ".join(sorted(scopes))
        return code

    def unit(self, path: str, name: str | None = None) -> None:
        parent = path.rsplit("/", 1)[0] or "/"
        self.units.append(
            {
                "kind": "admin#directory#orgUnit",
                "name": name or path.rsplit("/", 1)[1],
                "orgUnitPath": path,
                "orgUnitId": f"id:{secrets.token_hex(6)}",
                "parentOrgUnitPath": parent,
            }
        )

    def user(
        self, email: str, given: str, family: str, unit: str = "/", *, admin: bool = False
    ) -> str:
        user_id = self.new_id()
        self.users[user_id] = {
            "kind": "admin#directory#user",
            "id": user_id,
            "primaryEmail": email,
            "name": {"givenName": given, "familyName": family, "fullName": f"{given} {family}"},
            "orgUnitPath": unit,
            "isAdmin": admin,
            "suspended": False,
        }
        if admin:
            self.admins.add(email)
        return user_id

    def course(
        self,
        name: str,
        owner: str,
        *,
        state: str = "ACTIVE",
        section: str | None = None,
        room: str | None = None,
        teachers: list[str] | None = None,
        students: list[str] | None = None,
    ) -> str:
        course_id = self.new_id()
        course: dict[str, Any] = {
            "id": course_id,
            "name": name,
            "ownerId": owner,
            "courseState": state,
            "creationTime": "2024-08-20T15:00:00.000Z",
            "updateTime": "2024-08-20T15:00:00.000Z",
            "enrollmentCode": secrets.token_hex(3),
            "alternateLink": f"https://classroom.google.com/c/{course_id}",
            "guardiansEnabled": False,
        }
        if section:
            course["section"] = section
        if room:
            course["room"] = room
        self.courses[course_id] = course
        self.teachers[course_id] = [owner, *(t for t in teachers or [] if t != owner)]
        self.students[course_id] = list(students or [])
        return course_id

    def invite(self, course_id: str, user_id: str, role: str = "STUDENT") -> None:
        self.invitations.append(
            {"id": self.new_id(), "userId": user_id, "courseId": course_id, "role": role}
        )

    # Faults ----------------------------------------------------------------------------------

    def fail(
        self,
        method: str,
        status: int,
        body: dict[str, Any],
        headers: dict[str, str] | None = None,
        times: int | None = 1,
    ) -> None:
        with self._lock:
            self.faults.append(Fault(method, status, body, dict(headers or {}), times))

    def rate_limit(self, method: str = "*", times: int = 3, retry_after: str | None = "0") -> None:
        """429 RESOURCE_EXHAUSTED, as Google answers a quota overrun."""
        self.fail(
            method,
            429,
            error_body(
                429,
                "Quota exceeded for quota metric 'Read requests' and limit 'Read requests per "
                "minute per user'.",
                "RESOURCE_EXHAUSTED",
                "rateLimitExceeded",
            ),
            {"Retry-After": retry_after} if retry_after is not None else {},
            times,
        )

    def disable_service(self, method: str, service: str) -> None:
        """403 SERVICE_DISABLED: the API is not enabled in the caller's Cloud project."""
        message = (
            f"{service} has not been used in project 1234567890 before or it is disabled. "
            "Enable it by visiting the API library, then retry."
        )
        details = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "SERVICE_DISABLED",
                "domain": "googleapis.com",
                "metadata": {"service": service, "consumer": "projects/1234567890"},
            }
        ]
        body = error_body(403, message, "PERMISSION_DENIED", "accessNotConfigured", details)
        self.fail(method, 403, body, times=None)

    def classroom_disabled(self) -> None:
        """403 @ClassroomApiDisabled: Classroom data access is off for the user's domain or unit."""
        body = error_body(
            403,
            "@ClassroomApiDisabled The user is not permitted to access the Classroom API.",
            "PERMISSION_DENIED",
        )
        self.fail("classroom.*", 403, body, times=None)

    def expire_tokens(self) -> None:
        with self._lock:
            for token in self.tokens.values():
                token.expires = 0

    def _fault(self, method: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if _matches(fault.method, method) and (fault.times is None or fault.times > 0):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    # Requests --------------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, http: str) -> None:
        parts = urlsplit(handler.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        try:
            if parts.path == "/token" and http == "POST":
                self.log.append(("token", {}))
                fault = self._fault("token")
                status, payload, headers = (
                    (fault.status, fault.body, fault.headers)
                    if fault
                    else (*self._token(parse_qs(body.decode())), {})
                )
            else:
                status, payload, headers = self._api(
                    http, parts.path, query, handler.headers.get("Authorization", ""), body
                )
        except Exception as exc:  # a bug in the fake: say so loudly
            status, payload, headers = 500, error_body(500, repr(exc), "INTERNAL"), {}
            self.violations.append(f"fake error: {exc!r}")
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json; charset=UTF-8")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    def _token(self, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        grant = (form.get("grant_type") or [""])[0]
        if grant == JWT_GRANT:
            return self._jwt_grant((form.get("assertion") or [""])[0])
        client_id = (form.get("client_id") or [""])[0]
        if self.oauth_clients.get(client_id) != (form.get("client_secret") or [""])[0]:
            return 401, {"error": "invalid_client", "error_description": "Unauthorized"}
        if grant == "refresh_token":
            scopes = self.refresh_tokens.get((form.get("refresh_token") or [""])[0])
            if scopes is None:
                return 400, {
                    "error": "invalid_grant",
                    "error_description": "Token has been expired or revoked.",
                }
            return 200, self._issue(None, scopes)
        if grant == "authorization_code":
            scope = self.codes.pop((form.get("code") or [""])[0], None)
            if scope is None:
                return 400, {"error": "invalid_grant", "error_description": "Malformed auth code."}
            refresh = "1//" + secrets.token_urlsafe(30)
            self.refresh_tokens[refresh] = set(scope.split())
            return 200, {**self._issue(None, set(scope.split())), "refresh_token": refresh}
        return 400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"}

    def _jwt_grant(self, assertion: str) -> tuple[int, dict[str, Any]]:
        try:
            head, claims_part, signature = assertion.split(".")
            claims = json.loads(_unb64(claims_part))
            json.loads(_unb64(head))
        except ValueError:
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT."}
        public = self.service_accounts.get(claims.get("iss", ""))
        if public is None:
            return 401, {"error": "invalid_client", "error_description": "Client not found."}
        try:
            public.verify(
                _unb64(signature),
                f"{head}.{claims_part}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except InvalidSignature:
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        # google-auth always names Google's token endpoint as the audience, wherever it posts.
        audiences = ("https://oauth2.googleapis.com/token", f"{self.url}/token")
        if claims.get("aud") not in audiences or claims.get("exp", 0) < time.time():
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT: aud or exp."}
        scopes = set(str(claims.get("scope", "")).split())
        subject = claims.get("sub")
        if subject:
            if subject not in self.admins:
                return 400, {
                    "error": "invalid_grant",
                    "error_description": "Invalid email or User ID",
                }
            if not scopes <= self.delegated:
                return 401, {
                    "error": "unauthorized_client",
                    "error_description": "Client is unauthorized to retrieve access tokens using "
                    "this method, or client not authorized for any of the scopes requested.",
                }
        return 200, self._issue(subject or claims.get("iss"), scopes)

    def _issue(self, subject: str | None, scopes: set[str]) -> dict[str, Any]:
        token = "ya29." + secrets.token_urlsafe(24)
        with self._lock:
            self.tokens[token] = Token(subject, scopes, time.time() + self.token_lifetime)
        return {
            "access_token": token,
            "expires_in": self.token_lifetime,
            "token_type": "Bearer",
            "scope": " ".join(sorted(scopes)),
        }

    def _api(
        self,
        http: str,
        path: str,
        query: dict[str, list[str]],
        authorization: str,
        body: bytes = b"",
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        for method in methods():
            match = method.pattern.match(path)
            if match and method.http == http:
                break
        else:
            return 404, error_body(404, f"No route for {path}.", "NOT_FOUND", "notFound"), {}
        args = {
            name: unquote(value) for name, value in zip(method.names, match.groups(), strict=True)
        }
        self.log.append((method.id, query))
        unknown = set(query) - method.params
        if unknown:
            message = f"Invalid JSON payload received. Unknown name {sorted(unknown)[0]!r}."
            self.violations.append(f"{method.id}: unknown parameter(s) {sorted(unknown)}")
            return 400, error_body(400, message, "INVALID_ARGUMENT", "badRequest"), {}
        token = self.tokens.get(authorization.removeprefix("Bearer "))
        if token is None or token.expires < time.time():
            body = error_body(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access token.",
                "UNAUTHENTICATED",
                "authError",
            )
            return 401, body, {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'}
        fault = self._fault(method.id)
        if fault:
            return fault.status, fault.body, fault.headers
        if not token.scopes & method.scopes:
            return (
                403,
                error_body(
                    403,
                    "Request had insufficient authentication scopes.",
                    "PERMISSION_DENIED",
                    "insufficientPermissions",
                ),
                {},
            )
        handler = getattr(self, "_" + method.id.replace(".", "_"), None)
        if handler is None:
            return 501, error_body(501, f"{method.id} is not faked.", "UNIMPLEMENTED"), {}
        if method.request:
            try:
                sent = json.loads(body or b"null")
            except ValueError:
                return 400, error_body(400, "Invalid JSON payload.", "INVALID_ARGUMENT"), {}
            self._conform(method, method.request, sent, f"{method.id} request")
            args["body"] = sent
        status, payload = handler(args, {k: v for k, v in query.items()}, token)
        if status == 200 and method.response:
            self._conform(method, method.response, payload, method.id)
        return status, payload, {}

    def _conform(self, method: Method, schema_name: str, payload: Any, where: str) -> None:
        """Record any field the discovery document's schema does not have."""
        schema = method.doc["schemas"][schema_name]
        properties = schema.get("properties", {})
        if not isinstance(payload, dict):
            return
        for name, value in payload.items():
            if name not in properties:
                self.violations.append(f"{where}: {schema_name} has no field {name!r}")
                continue
            prop = properties[name]
            ref = prop.get("$ref") or (prop.get("items") or {}).get("$ref")
            if ref:
                for item in value if isinstance(value, list) else [value]:
                    self._conform(method, ref, item, f"{where}.{name}")

    # Paging ------------------------------------------------------------------------------------

    def _page(
        self,
        items: list[Any],
        query: dict[str, list[str]],
        *,
        size_param: str = "pageSize",
        default: int = 30,
        largest: int = 1000,
    ) -> tuple[list[Any], dict[str, str]]:
        size = int((query.get(size_param) or ["0"])[0] or 0) or default
        size = min(size, largest)
        start = 0
        token = (query.get("pageToken") or [""])[0]
        if token:
            start = int(_unb64(token).decode().split(":")[1])
        page = items[start : start + size]
        more = start + size < len(items)
        extra = {"nextPageToken": _b64(f"page:{start + size}".encode())} if more else {}
        return page, extra

    # Classroom ---------------------------------------------------------------------------------

    def _profile(self, user_id: str, token: Token) -> dict[str, Any]:
        user = self.users[user_id]
        profile: dict[str, Any] = {
            "id": user_id,
            "name": dict(user["name"]) | {"fullName": user["name"]["fullName"]},
            "permissions": [],
            "verifiedTeacher": False,
        }
        profile["name"].pop("displayName", None)
        if user_id not in self.hidden_emails and EMAIL_SCOPE in token.scopes:
            profile["emailAddress"] = user["primaryEmail"]
        return profile

    def _classroom_courses_list(
        self, args: dict[str, str], query: dict[str, list[str]], token: Token
    ) -> tuple[int, dict[str, Any]]:
        states = set(query.get("courseStates") or [])
        courses = [c for c in self.courses.values() if not states or c["courseState"] in states]
        page, extra = self._page(courses, query, default=30, largest=1000)
        return 200, {"courses": page, **extra} if page else extra

    def _classroom_courses_get(
        self, args: dict[str, str], query: dict[str, list[str]], token: Token
    ) -> tuple[int, dict[str, Any]]:
        course = self.courses.get(args["id"])
        if course is None:
            return 404, error_body(404, "Requested entity was not found.", "NOT_FOUND")
        return 200, course

    def _members(
        self, kind: str, args: dict[str, str], query: dict[str, list[str]], token: Token
    ) -> tuple[int, dict[str, Any]]:
        course_id = args["courseId"]
        if course_id not in self.courses:
            return 404, error_body(404, "Requested entity was not found.", "NOT_FOUND")
        members = self.teachers if kind == "teachers" else self.students
        items = [
            {"courseId": course_id, "userId": u, "profile": self._profile(u, token)}
            for u in members[course_id]
        ]
        page, extra = self._page(items, query, default=30, largest=1000)
        return 200, {kind: page, **extra} if page else extra

    def _classroom_courses_teachers_list(
        self, args: dict[str, str], query: dict[str, list[str]], token: Token
    ) -> tuple[int, dict[str, Any]]:
        return self._members("teachers", args, query, token)

    def _classroom_courses_students_list(
        self, args: dict[str, str], query: dict[str, list[str]], token: Token
    ) -> tuple[int, dict[str, Any]]:
        return self._members("students", args, query, token)

    def _classroom_invitations_list(
        self, args: dict[str, str], query: dict[str, list[str]], token: Token
    ) -> tuple[int, dict[str, Any]]:
        course_id = (query.get("courseId") or [""])[0]
        user_id = (query.get("userId") or [""])[0]
        if not course_id and not user_id:
            message = "Precondition check failed: either courseId or userId must be set."
            return 400, error_body(400, message, "FAILED_PRECONDITION")
        found = [
            i
            for i in self.invitations
            if (not course_id or i["courseId"] == course_id)
            and (not user_id or i["userId"] == user_id)
        ]
        page, extra = self._page(found, query, default=500, largest=500)
        return 200, {"invitations": page, **extra} if page else extra

    def _classroom_registrations_create(
        self, args: dict[str, Any], query: dict[str, list[str]], token: Token
    ) -> tuple[int, dict[str, Any]]:
        if token.subject is not None:
            message = (
                "The caller does not have permission: domain-wide delegation of authority is "
                "not supported for push notifications."
            )
            return 403, error_body(403, message, "PERMISSION_DENIED")
        sent = args.get("body")
        feed = (sent or {}).get("feed") or {}
        topic = ((sent or {}).get("cloudPubsubTopic") or {}).get("topicName") or ""
        if not re.fullmatch(r"projects/[^/]+/topics/[^/]+", topic):
            return 400, error_body(400, "cloudPubsubTopic is not valid.", "INVALID_ARGUMENT")
        kind = feed.get("feedType")
        if kind == "COURSE_ROSTER_CHANGES":
            course_id = (feed.get("courseRosterChangesInfo") or {}).get("courseId")
            if course_id not in self.courses:
                return 404, error_body(404, "Requested entity was not found.", "NOT_FOUND")
        elif kind != "DOMAIN_ROSTER_CHANGES":
            return 400, error_body(400, "feed is not valid.", "INVALID_ARGUMENT")
        expiry = self.now() + self.registration_lifetime
        registration = {
            "registrationId": self.new_id(),
            "feed": feed,
            "cloudPubsubTopic": {"topicName": topic},
            "expiryTime": expiry.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        self.registrations[registration["registrationId"]] = registration
        return 200, registration

    # Directory ---------------------------------------------------------------------------------

    def _directory_users_list(
        self, args: dict[str, str], query: dict[str, list[str]], token: Token
    ) -> tuple[int, dict[str, Any]]:
        if not query.get("customer") and not query.get("domain"):
            return 400, error_body(400, "Bad Request", "INVALID_ARGUMENT", "badRequest")
        users = list(self.users.values())
        page, extra = self._page(users, query, size_param="maxResults", default=100, largest=500)
        return 200, {"kind": "admin#directory#users", "users": page, **extra}

    def _directory_users_get(
        self, args: dict[str, str], query: dict[str, list[str]], token: Token
    ) -> tuple[int, dict[str, Any]]:
        key = args["userKey"]
        user = self.users.get(key) or next(
            (u for u in self.users.values() if u["primaryEmail"] == key), None
        )
        if user is None:
            message = "Resource Not Found: userKey"
            return 404, error_body(404, message, "NOT_FOUND", "notFound")
        return 200, user

    def _directory_orgunits_list(
        self, args: dict[str, str], query: dict[str, list[str]], token: Token
    ) -> tuple[int, dict[str, Any]]:
        kind = (query.get("type") or ["children"])[0]
        parent = (query.get("orgUnitPath") or ["/"])[0]
        if kind == "children":
            units = [u for u in self.units if u["parentOrgUnitPath"] == parent]
        else:
            units = [u for u in self.units if parent == "/" or u["orgUnitPath"].startswith(parent)]
        return 200, {"kind": "admin#directory#orgUnits", "organizationUnits": units}

    # Sheets ------------------------------------------------------------------------------------

    def _sheets_spreadsheets_values_get(
        self, args: dict[str, str], query: dict[str, list[str]], token: Token
    ) -> tuple[int, dict[str, Any]]:
        tabs = self.sheets.get(args["spreadsheetId"])
        if tabs is None:
            return 404, error_body(404, "Requested entity was not found.", "NOT_FOUND")
        if token.subject not in self.sheet_readers.get(args["spreadsheetId"], set()):
            return 403, error_body(403, "The caller does not have permission", "PERMISSION_DENIED")
        written = args["range"]
        tab_name, sep, cells = written.rpartition("!")
        tab_name = tab_name.strip("'") if sep else next(iter(tabs))
        match = re.fullmatch(r"([A-Z]+)(\d*):([A-Z]+)(\d*)", cells if sep else written)
        if tab_name not in tabs or match is None:
            message = f"Unable to parse range: {written}"
            return 400, error_body(400, message, "INVALID_ARGUMENT")
        first_col, first_row = _column(match.group(1)), int(match.group(2) or 1)
        last_col, last_row = _column(match.group(3)), int(match.group(4) or 1000)
        rows = [
            list(row[first_col : last_col + 1]) for row in tabs[tab_name][first_row - 1 : last_row]
        ]
        for row in rows:
            while row and row[-1] == "":
                row.pop()
        while rows and not rows[-1]:
            rows.pop()
        a1 = f"'{tab_name}'!{match.group(1)}{first_row}:{match.group(3)}{last_row}"
        out: dict[str, Any] = {"range": a1, "majorDimension": "ROWS"}
        if rows:
            out["values"] = rows
        return 200, out


def _matches(pattern: str, method: str) -> bool:
    """``classroom.courses.list`` exactly, ``classroom.*`` by prefix, ``*`` any API method."""
    if pattern.endswith("*"):
        return method != "token" and method.startswith(pattern[:-1])
    return pattern == method


def _column(letters: str) -> int:
    number = 0
    for letter in letters:
        number = number * 26 + ord(letter) - 64
    return number - 1


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def serve() -> Iterator[FakeGoogle]:
    """For a fixture: a started fake, stopped afterwards."""
    fake = FakeGoogle().start()
    try:
        yield fake
    finally:
        fake.stop()
