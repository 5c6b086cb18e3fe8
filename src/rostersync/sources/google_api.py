"""Plain HTTPS access to Google's APIs for the connectors: credentials, pacing, paging, retries.

google-auth signs the service account's token request and refreshes tokens (through a small
httpx adapter of its transport interface); every API call goes through one httpx client, paced
by a token bucket, retried on rate limits and server errors, and refreshed once on a 401. Google's
error answers are turned into messages that tell an admin what to change. Why not the discovery
based client: see ``docs/connectors/google.md``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import google.auth.credentials
import google.auth.exceptions
import google.auth.transport
import google.oauth2.credentials
import httpx
from google.oauth2 import service_account

from rostersync.errors import ConfigError, SourceError
from rostersync.sources.http import retry_after

logger = logging.getLogger(__name__)

CLASSROOM_SCOPES = (
    "https://www.googleapis.com/auth/classroom.courses.readonly",
    "https://www.googleapis.com/auth/classroom.rosters.readonly",
    "https://www.googleapis.com/auth/classroom.profile.emails",
    "https://www.googleapis.com/auth/admin.directory.user.readonly",
    "https://www.googleapis.com/auth/admin.directory.orgunit.readonly",
)
SHEETS_SCOPES = ("https://www.googleapis.com/auth/spreadsheets.readonly",)
#: Needed only to create Classroom push registrations (``source google-watch``).
PUSH_SCOPE = "https://www.googleapis.com/auth/classroom.push-notifications"

#: The redirect address of the consent step: Google sends the browser there with the code in
#: the address; nothing needs to listen, the admin copies the code from the address bar.
DEFAULT_REDIRECT = "http://127.0.0.1"

#: Reasons and statuses of answers that mean "slow down", retried with backoff.
RATE_LIMITED = frozenset(
    {
        "rateLimitExceeded",
        "userRateLimitExceeded",
        "RATE_LIMIT_EXCEEDED",
        "RESOURCE_EXHAUSTED",
        "backendError",
    }
)


@dataclass(frozen=True)
class Endpoints:
    """Google's addresses, or one server standing in for all of them (``api_endpoint``)."""

    token: str = "https://oauth2.googleapis.com/token"
    consent: str = "https://accounts.google.com/o/oauth2/v2/auth"
    classroom: str = "https://classroom.googleapis.com"
    directory: str = "https://admin.googleapis.com"
    sheets: str = "https://sheets.googleapis.com"

    @classmethod
    def from_setting(cls, api_endpoint: str | None) -> Endpoints:
        if not api_endpoint:
            return cls()
        parts = urlsplit(api_endpoint)
        loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
        if not parts.hostname or not (
            parts.scheme == "https" or (parts.scheme == "http" and loopback)
        ):
            raise ConfigError(
                f"The api_endpoint {api_endpoint!r} must be an https address (plain http only "
                "on 127.0.0.1 or localhost). Leave it out to use Google's own addresses."
            )
        base = api_endpoint.rstrip("/")
        return cls(
            token=f"{base}/token",
            consent=f"{base}/o/oauth2/v2/auth",
            classroom=base,
            directory=base,
            sheets=base,
        )


# Credentials -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceAccountKey:
    info: dict[str, Any]

    @property
    def client_email(self) -> str:
        return str(self.info.get("client_email", ""))


@dataclass(frozen=True)
class OAuthClient:
    client_id: str
    client_secret: str


def parse_credentials(text: str) -> ServiceAccountKey | OAuthClient:
    """A service account key or an OAuth client (the JSON files the Cloud console gives)."""
    fix = (
        "Download a service account key (JSON) or an OAuth client of type Desktop app (JSON) "
        "from the Google Cloud console and set credentials=FILE again."
    )
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise ConfigError(f"The 'credentials' setting is not a JSON key file. {fix}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"The 'credentials' setting is not a JSON key file. {fix}")
    if data.get("type") == "service_account":
        missing = [k for k in ("client_email", "private_key") if not data.get(k)]
        if missing:
            raise ConfigError(
                f"The service account key lacks {', '.join(missing)}: it is incomplete. {fix}"
            )
        return ServiceAccountKey(data)
    client = data.get("installed") or data.get("web")
    if isinstance(client, dict) and client.get("client_id") and client.get("client_secret"):
        return OAuthClient(str(client["client_id"]), str(client["client_secret"]))
    raise ConfigError(
        "The 'credentials' file is neither a service account key nor an OAuth client. " + fix
    )


def make_credentials(
    key: ServiceAccountKey | OAuthClient,
    *,
    scopes: Sequence[str],
    endpoints: Endpoints,
    subject: str | None = None,
    refresh_token: str | None = None,
) -> google.auth.credentials.Credentials:
    """google-auth credentials: a (delegated) service account, or an admin's refresh token."""
    if isinstance(key, ServiceAccountKey):
        info = {**key.info, "token_uri": endpoints.token}
        try:
            credentials: service_account.Credentials = (
                service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                    info, scopes=list(scopes)
                )
            )
        except ValueError as exc:
            raise ConfigError(
                f"The service account key cannot be used ({exc}). Create a new JSON key for "
                "the service account and set credentials=FILE again."
            ) from None
        if subject:
            credentials = credentials.with_subject(subject)  # type: ignore[no-untyped-call]
        return credentials
    if not refresh_token:
        raise ConfigError(
            "The source has an OAuth client but no administrator's consent yet. Run "
            "`rostersync source google-consent NAME` and follow its steps."
        )
    return google.oauth2.credentials.Credentials(  # type: ignore[no-untyped-call]
        token=None,
        refresh_token=refresh_token,
        token_uri=endpoints.token,
        client_id=key.client_id,
        client_secret=key.client_secret,
        scopes=list(scopes),
    )


class _AuthResponse(google.auth.transport.Response):
    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return dict(self._response.headers)

    @property
    def data(self) -> bytes:
        return self._response.content


class AuthTransport(google.auth.transport.Request):
    """google-auth's transport interface over an httpx client (token requests only)."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> google.auth.transport.Response:
        try:
            response = self._client.request(
                method, url, content=body, headers=dict(headers or {}), timeout=timeout or 30.0
            )
        except httpx.HTTPError as exc:
            message = str(exc) or type(exc).__name__
            raise google.auth.exceptions.TransportError(message) from exc  # type: ignore[no-untyped-call]
        return _AuthResponse(response)


def token_error(exc: google.auth.exceptions.GoogleAuthError, subject: str | None) -> SourceError:
    """A failed token request, in words an admin can act on."""
    data = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
    code = str(data.get("error", "")) or str(exc.args[0] if exc.args else "").split(":")[0]
    detail = str(data.get("error_description", "")).strip()
    if code == "unauthorized_client":
        return SourceError(
            "Google refused the token (unauthorized_client): the service account is not "
            "allowed these scopes by domain-wide delegation. In the Admin console (Security > "
            "API controls > Domain-wide delegation) add its client id with exactly the scopes "
            "listed in docs/connectors/google.md."
        )
    if code == "invalid_grant":
        who = f"the subject {subject!r}" if subject else "the administrator's consent"
        return SourceError(
            f"Google refused the token (invalid_grant{': ' + detail if detail else ''}): {who} "
            "is not valid. With a service account, set subject to the email of an active "
            "administrator of the domain; with OAuth, run `rostersync source google-consent "
            "NAME` again. Also check this server's clock is right."
        )
    if code in ("invalid_client", "deleted_client", "disabled_client"):
        return SourceError(
            f"Google refused the token ({code}): the key or OAuth client was deleted or "
            "disabled in the Cloud project. Create a new key and set credentials=FILE again."
        )
    if isinstance(exc, google.auth.exceptions.TransportError):
        return SourceError(
            f"Google's token service could not be reached ({exc}). The next run will try again."
        )
    return SourceError(
        f"Google refused the token ({code or exc}). Check the source's credentials and subject."
    )


# Pacing ------------------------------------------------------------------------------------


@dataclass
class TokenBucket:
    """At most ``rate`` requests a second on average, in bursts of at most ``capacity``."""

    rate: float
    capacity: float = 0.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _tokens: float = field(default=0.0, init=False)
    _at: float = field(default=0.0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ConfigError("requests_per_second must be more than 0.")
        self.capacity = self.capacity or max(1.0, self.rate)
        self._tokens = self.capacity
        self._at = self.clock()

    def take(self) -> None:
        with self._lock:
            now = self.clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
            self._at = now
            wait = 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate
            self._tokens -= 1
        if wait > 0:
            self.sleep(wait)


# Errors ------------------------------------------------------------------------------------


@dataclass
class GoogleError:
    """The parts of Google's error answer that say what went wrong."""

    status: int
    message: str = ""
    state: str = ""
    reasons: set[str] = field(default_factory=set)
    retry_delay: float | None = None

    @classmethod
    def parse(cls, response: httpx.Response) -> GoogleError:
        found = cls(response.status_code)
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            found.message = response.text[:200]
            return found
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            return found
        found.message = str(error.get("message", ""))
        found.state = str(error.get("status", ""))
        for item in error.get("errors") or []:
            if isinstance(item, dict) and item.get("reason"):
                found.reasons.add(str(item["reason"]))
        for detail in error.get("details") or []:
            if not isinstance(detail, dict):
                continue
            if detail.get("reason"):
                found.reasons.add(str(detail["reason"]))
            delay = detail.get("retryDelay")
            if isinstance(delay, str) and delay.endswith("s"):
                with contextlib.suppress(ValueError):
                    found.retry_delay = float(delay[:-1])
        return found

    @property
    def rate_limited(self) -> bool:
        if self.status == 429:
            return True
        return self.status == 403 and bool(
            self.reasons & RATE_LIMITED or self.state in RATE_LIMITED
        )

    def mentions(self, *words: str) -> bool:
        text = f"{self.message} {' '.join(self.reasons)} {self.state}".lower()
        return any(w.lower() in text for w in words)


class GoogleApiError(SourceError):
    """Google refused a request; ``str`` says what to do about it."""

    def __init__(self, message: str, error: GoogleError) -> None:
        super().__init__(message)
        self.error = error


def explain(api: str, error: GoogleError) -> str:
    """What a refusal means and what to change, for the admin who set up the source."""
    said = f" (HTTP {error.status}{': ' + error.message if error.message else ''})"
    if error.mentions("SERVICE_DISABLED", "accessNotConfigured", "has not been used in project"):
        return (
            f"The {api} is not enabled in the Google Cloud project of the credentials{said}. "
            "Enable it in the Cloud console (APIs & Services > Library), wait a few minutes, and "
            "sync again."
        )
    if error.mentions("ClassroomApiDisabled"):
        return (
            f"Classroom API access is turned off for the domain or the subject's unit{said}. In "
            "the Admin console open Apps > Google Workspace > Classroom > Data access and allow "
            "users to authorise apps to access their Google Classroom data."
        )
    if error.mentions("under 18", "under the age", "designated as under"):
        return (
            f"The domain does not allow third-party apps for users designated under 18{said}. "
            "In the Admin console (Security > Access and data control > API controls > App "
            "access control) mark this app as trusted."
        )
    if error.status in (401, 403):
        return (
            f"The {api} refused access{said}. The subject must be an administrator who can see "
            "every course and user to sync (a super administrator is simplest), and the scopes "
            "in docs/connectors/google.md must be granted."
        )
    if error.status == 404:
        return f"The {api} has no such record{said}. Check the ids in the source's settings."
    if error.status == 400:
        return f"The {api} rejected the request{said}. Check the source's settings."
    return f"The {api} answered with an error{said}."


# The client ----------------------------------------------------------------------------------


def pause(seconds: float) -> None:
    """Wait; looked up at each call so that tests can replace it."""
    time.sleep(seconds)


Params = Mapping[str, str | int | Sequence[str]]


@dataclass
class GoogleApi:
    """Authorised, paced and retried GET requests to Google's JSON APIs."""

    credentials: google.auth.credentials.Credentials
    subject: str | None = None
    rate: float = 10.0
    timeout: float = 30.0
    attempts: int = 8
    backoff: float = 1.0
    max_delay: float = 64.0
    #: Waits between attempts and for the token bucket; ``pause`` unless a test injects one.
    sleep: Callable[[float], None] | None = None
    clock: Callable[[], float] = time.monotonic
    requests: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._client = httpx.Client(
            timeout=self.timeout, headers={"Accept": "application/json"}, follow_redirects=False
        )
        self._auth = AuthTransport(self._client)
        self._bucket = TokenBucket(self.rate, clock=self.clock, sleep=self._wait)

    def _wait(self, seconds: float) -> None:
        (self.sleep or pause)(seconds)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> GoogleApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def refresh(self) -> None:
        """Get a fresh access token, or raise a SourceError that says why Google refused."""
        try:
            self.credentials.refresh(self._auth)  # type: ignore[no-untyped-call]
        except google.auth.exceptions.GoogleAuthError as exc:
            raise token_error(exc, self.subject) from None

    def _token(self) -> str:
        if not self.credentials.valid:
            self.refresh()
        return str(self.credentials.token)

    def get(
        self, url: str, params: Params | None = None, *, api: str, missing_ok: bool = False
    ) -> dict[str, Any] | None:
        """GET a JSON object. With ``missing_ok`` a 404 gives None instead of an error."""
        return self._send("GET", url, params, None, api=api, missing_ok=missing_ok)

    def post(self, url: str, body: Mapping[str, Any], *, api: str) -> dict[str, Any]:
        """POST a JSON object and return the answer, retried like :meth:`get`.

        Only used for calls whose repetition is harmless (a second push registration of the
        same feed only doubles notifications until one expires).
        """
        answer = self._send("POST", url, None, body, api=api, missing_ok=False)
        assert answer is not None
        return answer

    def _send(
        self,
        method: str,
        url: str,
        params: Params | None,
        body: Mapping[str, Any] | None,
        *,
        api: str,
        missing_ok: bool,
    ) -> dict[str, Any] | None:
        refreshed = False
        attempt = 0
        failure = "no attempt made"
        while attempt < self.attempts:
            attempt += 1
            delay = self.backoff * 2 ** (attempt - 1)
            self._bucket.take()
            headers = {"Authorization": f"Bearer {self._token()}"}
            self.requests += 1
            try:
                response = self._client.request(
                    method, url, params=_query(params), json=body, headers=headers
                )
            except httpx.TransportError as exc:
                failure = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return _json_object(response, api)
                if status == 401 and not refreshed:
                    refreshed = True
                    attempt -= 1
                    logger.info("%s answered 401; refreshing the access token once.", api)
                    self.refresh()
                    continue
                error = GoogleError.parse(response)
                if status == 404 and missing_ok:
                    return None
                if not (error.rate_limited or status >= 500):
                    raise GoogleApiError(explain(api, error), error)
                failure = f"HTTP {status}{' ' + error.state if error.state else ''}"
                asked = retry_after(response)
                asked = error.retry_delay if asked is None else asked
                delay = delay if asked is None else asked
            if attempt >= self.attempts:
                break
            delay = min(delay, self.max_delay)
            logger.warning(
                "%s request failed (%s); retrying in %.1fs (attempt %s of %s).",
                api,
                failure,
                delay,
                attempt + 1,
                self.attempts,
            )
            self._wait(delay)
        raise SourceError(
            f"The {api} kept failing after {self.attempts} attempts (last: {failure}). Nothing "
            "was changed; the next run will try again. If it keeps happening, lower the source's "
            "requests_per_second."
        )

    def pages(
        self,
        url: str,
        params: Params,
        *,
        items: str,
        api: str,
        page_param: str = "pageToken",
    ) -> Iterator[dict[str, Any]]:
        """Every item of a list call, following ``nextPageToken`` until there is none."""
        seen: set[str] = set()
        token: str | None = None
        while True:
            query = dict(params)
            if token:
                query[page_param] = token
            page = self.get(url, query, api=api)
            assert page is not None
            for item in page.get(items) or []:
                if isinstance(item, dict):
                    yield item
            token = page.get("nextPageToken") or None
            if not token:
                return
            if token in seen:
                raise SourceError(
                    f"The {api} returned the same page token twice while listing {items}; the "
                    "list cannot be read completely. The next run will try again."
                )
            seen.add(token)


def _query(params: Params | None) -> list[tuple[str, str | int | float | bool | None]]:
    out: list[tuple[str, str | int | float | bool | None]] = []
    for name, value in (params or {}).items():
        if isinstance(value, str | int):
            out.append((name, str(value)))
        else:
            out.extend((name, str(v)) for v in value)
    return out


def _json_object(response: httpx.Response, api: str) -> dict[str, Any]:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise SourceError(
            f"The {api} answered with something that is not JSON ({response.url.path}). Check "
            "the source's api_endpoint, if set."
        )
    return body


# The consent step --------------------------------------------------------------------------


def consent_url(
    client: OAuthClient,
    endpoints: Endpoints,
    scopes: Sequence[str],
    redirect_uri: str = DEFAULT_REDIRECT,
    state: str | None = None,
) -> str:
    """The address an admin opens to grant read-only access (offline, so a refresh token)."""
    query = {
        "client_id": client.client_id,
        "redirect_uri": redirect_uri,
        "response_type": "code",
        "scope": " ".join(scopes),
        "access_type": "offline",
        "prompt": "consent",
        "include_granted_scopes": "true",
        "state": state or secrets.token_urlsafe(16),
    }
    return f"{endpoints.consent}?{urlencode(query)}"


def code_from(answer: str) -> str:
    """The authorization code from what the admin pasted: the code, or the whole address."""
    answer = answer.strip()
    if "code=" in answer:
        codes = parse_qs(urlsplit(answer).query).get("code")
        if codes:
            return codes[0]
    return answer


def exchange_code(
    client: OAuthClient,
    endpoints: Endpoints,
    code: str,
    redirect_uri: str = DEFAULT_REDIRECT,
    timeout: float = 30.0,
) -> str:
    """Trade the consent step's code for a refresh token."""
    form = {
        "grant_type": "authorization_code",
        "code": code_from(code),
        "client_id": client.client_id,
        "client_secret": client.client_secret,
        "redirect_uri": redirect_uri,
    }
    try:
        response = httpx.post(endpoints.token, data=form, timeout=timeout)
    except httpx.HTTPError as exc:
        raise SourceError(f"Google's token service could not be reached ({exc}).") from None
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = {}
    if response.status_code != 200:
        error = str(body.get("error", f"HTTP {response.status_code}"))
        raise SourceError(
            f"Google did not accept the code ({error}). Codes work once and expire after a few "
            "minutes: run the consent step again and paste the new code."
        )
    refresh_token = body.get("refresh_token")
    if not refresh_token:
        raise SourceError(
            "Google gave no refresh token. Remove the app's access from the account's "
            "security settings (Third-party apps) and run the consent step again."
        )
    return str(refresh_token)
