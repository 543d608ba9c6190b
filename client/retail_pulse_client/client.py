"""RetailPulseClient: submit a job, watch it, read the visit results back, over HTTP.

Transient trouble (a dropped connection, HTTP 429, any 5xx) is retried a bounded number of
times with exponential backoff and full jitter, so a brief outage or throttling never
surfaces to the caller, yet a dead service is reported in well under a minute. Submits are
retried too: every submit carries an Idempotency-Key, so a retried POST never creates a
second job. Any other 4xx is the caller's mistake and raises ApiError at once with the
server's own `error` text.

The response models below are written by hand, and tests/unit/test_client_contract.py
holds each against its schema in openapi.json (fields, types, what is required), so a
change to the API breaks a test here rather than a user's script.
"""

from __future__ import annotations

import random
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import requests
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_API_URL = "http://127.0.0.1:3000"
# The visits API returns `next` when more pages exist; the next request sends it back
# under the same name.
NEXT_PARAM = "next"
TERMINAL = frozenset({"completed", "failed"})
# A wrong job id is worth retrying never, a throttled or failing service always.
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504}) | frozenset(range(505, 600))


class ClientError(Exception):
    """Anything that stopped a call; the message is written for a person."""


class ApiError(ClientError):
    """The API answered with an error status (a 4xx, or a 5xx that outlasted the retries)."""

    def __init__(self, status_code: int, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.body = body


class UnknownJob(ApiError):
    """GET /api/status answered 400 `{}`: the service has no job with that id."""


class ServiceUnavailable(ClientError):
    """The API could not be reached (or kept timing out) after every retry."""


class _Model(BaseModel):
    # The SPEC lets the service add fields; an older client must keep working.
    model_config = ConfigDict(extra="ignore", frozen=True)


_M = TypeVar("_M", bound=_Model)


class Progress(_Model):
    total: int
    succeeded: int
    failed: int

    @property
    def done(self) -> int:
        return self.succeeded + self.failed


class StoreError(_Model):
    store_id: str
    error: str


class SubmitAccepted(_Model):
    """The body of POST /api/submit/ (201)."""

    job_id: str


class JobStatus(_Model):
    """The body of GET /api/status for a known job."""

    status: Literal["ongoing", "completed", "failed"]
    job_id: str
    progress: Progress | None = None  # optional in the SPEC; this service always sends it
    errors: tuple[StoreError, ...] = Field(default=(), alias="error")

    @field_validator("errors", mode="before")
    @classmethod
    def _null_is_none(cls, value: Any) -> Any:
        """openapi.json allows `"error": null`; it means no failed stores."""
        return () if value is None else value

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


class ImageResult(_Model):
    date: str
    perimeter: int


class VisitResult(_Model):
    """One entry of GET /api/visits `results`: a store and its measured images."""

    store_id: str
    area: str = ""
    store_name: str = ""
    data: tuple[ImageResult, ...] = ()


class VisitsPage(_Model):
    """The body of GET /api/visits: one page of results, and `next` when more exist."""

    results: tuple[VisitResult, ...]
    next: str | None = None


def _timestamp(value: str | datetime | None) -> str | None:
    """Datetimes go out as RFC 3339 in UTC; strings are sent as the caller wrote them."""
    if value is None or isinstance(value, str):
        return value
    moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class RetailPulseClient:
    """A client for one Retail Pulse API; safe to reuse for many calls (one HTTP session)."""

    def __init__(
        self,
        base_url: str = DEFAULT_API_URL,
        api_key: str | None = None,
        timeout: float = 30.0,
        *,
        max_attempts: int = 5,
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
        sleep: Callable[[float], None] | None = None,
        session: requests.Session | None = None,
    ) -> None:
        """`max_attempts` counts the first try; with the defaults a call gives up after at
        most about 15 s of backoff. `sleep` is injectable so tests need not wait."""
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._sleep = sleep or time.sleep
        self.session = session or requests.Session()
        self.session.headers["Accept"] = "application/json"
        self.session.headers["User-Agent"] = "retail-pulse-client/0.1"
        if api_key:
            self.session.headers["x-api-key"] = api_key

    def __enter__(self) -> RetailPulseClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    # -- the API -------------------------------------------------------------------------

    def submit(self, payload: Mapping[str, Any], idempotency_key: str | None = None) -> str:
        """POST /api/submit/ and return the job id.

        The same Idempotency-Key goes out on every retry of this call, so a submit whose
        answer was lost cannot create a second job. Pass your own key to make a re-run of
        the same submission (say, after the program crashed) safe as well.
        """
        key = idempotency_key or str(uuid.uuid4())
        body = self._request(
            "POST", "/api/submit/", json=dict(payload), headers={"Idempotency-Key": key}
        )
        return self._parse(SubmitAccepted, body, "submit").job_id

    def status(self, job_id: str) -> JobStatus:
        """GET /api/status; raises UnknownJob when the service has no such job."""
        try:
            body = self._request("GET", "/api/status", params={"jobid": job_id})
        except ApiError as error:
            if error.status_code == 400 and error.body == {}:
                raise UnknownJob(400, f"there is no job with id '{job_id}'", {}) from None
            raise
        return self._parse(JobStatus, body, "status")

    def wait(
        self,
        job_id: str,
        on_progress: Callable[[JobStatus], None] | None = None,
        poll: float = 0.5,
        poll_cap: float = 5.0,
        timeout: float | None = None,
    ) -> JobStatus:
        """Poll status until the job is completed or failed, and return the final status.

        The interval starts at `poll` and grows by half each time up to `poll_cap`: a short
        job is noticed quickly, an hour-long one costs few requests. `on_progress` sees
        every status read, the final one included. Raises TimeoutError after `timeout` s.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = poll
        while True:
            current = self.status(job_id)
            if on_progress is not None:
                on_progress(current)
            if current.finished:
                return current
            if deadline is not None and time.monotonic() + interval > deadline:
                raise TimeoutError(f"job {job_id} is still {current.status} after {timeout} s")
            self._sleep(interval)
            interval = min(interval * 1.5, poll_cap)

    def visits(
        self,
        store: str | None = None,
        area: str | None = None,
        start: str | datetime | None = None,
        end: str | datetime | None = None,
        limit: int | None = None,
    ) -> Iterator[VisitResult]:
        """GET /api/visits, following `next` until the last page; `limit` is the page size.

        Results stream page by page, so a caller can stop early without reading them all.
        """
        params: dict[str, str | int] = {
            name: value
            for name, value in (
                ("storeid", store),
                ("area", area),
                ("startdate", _timestamp(start)),
                ("enddate", _timestamp(end)),
                ("limit", limit),
            )
            if value is not None
        }
        seen_tokens: set[str] = set()
        while True:
            body = self._request("GET", "/api/visits", params=params)
            page = self._parse(VisitsPage, body, "visits")
            yield from page.results
            token = page.next
            if not token:
                return
            if token in seen_tokens:  # a server bug would otherwise loop forever
                raise ClientError(f"the visits API sent the page token {token!r} twice")
            seen_tokens.add(token)
            params[NEXT_PARAM] = token

    # -- transport -----------------------------------------------------------------------

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        """Full jitter (a random wait up to the exponential bound) spreads out clients that
        failed together; a server's Retry-After is honoured up to the cap."""
        if retry_after:
            try:
                return min(max(float(retry_after), 0.0), self.backoff_cap)
            except ValueError:
                pass  # an HTTP date: fall back to our own schedule
        bound = min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1))
        return random.uniform(0, bound)

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        url = self.base_url + path
        for attempt in range(1, self.max_attempts + 1):
            last_try = attempt == self.max_attempts
            try:
                response = self.session.request(method, url, timeout=self.timeout, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as error:
                if last_try:
                    raise ServiceUnavailable(
                        f"could not reach the Retail Pulse API at {self.base_url} "
                        f"after {attempt} attempts: {_reason(error)}"
                    ) from error
                self._sleep(self._backoff(attempt, None))
                continue
            if response.status_code in _RETRY_STATUS and not last_try:
                self._sleep(self._backoff(attempt, response.headers.get("Retry-After")))
                continue
            return _body_or_raise(response, attempt)
        raise AssertionError("unreachable: the last attempt returns or raises")

    @staticmethod
    def _parse(model: type[_M], body: Any, what: str) -> _M:
        try:
            return model.model_validate(body)
        except ValidationError as error:
            raise ClientError(
                f"the {what} API sent a body this client does not understand: {error}"
            ) from error


def _reason(error: Exception) -> str:
    """requests buries the useful words ("Connection refused") deep in urllib3's repr."""
    if isinstance(error, requests.Timeout):
        return "no answer within the timeout"
    match = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(error))
    return match.group(1).strip() if match else str(error)[:200]


def _body_or_raise(response: requests.Response, attempts: int) -> Any:
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if response.ok:
        if body is None:
            raise ClientError(
                f"{response.request.method} {response.url} answered {response.status_code} "
                "with a body that is not JSON"
            )
        return body
    server_text = body.get("error") if isinstance(body, dict) else None
    if isinstance(server_text, str) and server_text and response.status_code < 500:
        # A 4xx speaks for itself: the server's own words, unadorned.
        raise ApiError(response.status_code, server_text, body)
    detail = server_text or (response.text or response.reason or "").strip()[:300]
    message = f"HTTP {response.status_code}" + (f": {detail}" if detail else "")
    if response.status_code in _RETRY_STATUS:
        message += f" (gave up after {attempts} attempts)"
    raise ApiError(response.status_code, message, body)
