"""RetailPulseClient: submit a job, watch it, cancel or retry it, list jobs, read a job's
results and the visits back, and read or rotate the client's webhook secret, over HTTP.

Transient trouble (a dropped connection, HTTP 429, any 5xx) is retried a bounded number of
times with exponential backoff and full jitter, so a brief outage or throttling never
surfaces to the caller, yet a dead service is reported in well under a minute. Submits are
retried too: every submit carries an Idempotency-Key, so a retried POST never creates a
second job. Cancel and retry are retried as well: when an answer was lost and the retry
meets a 409 (the first try had already done it), the job's status is read to tell. Any
other 4xx is the caller's mistake and raises ApiError (Conflict for a 409, UnknownJob for
the SPEC's `400 {}`) at once with the server's own `error` text.

The response models below are written by hand, and client/tests/test_client_contract.py
holds each against its schema in openapi.json (fields, types, what is required), so a
change to the API breaks a test here rather than a user's script.
"""

from __future__ import annotations

import csv
import io
import random
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, Literal, TypeVar, get_args

import requests
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DEFAULT_API_URL = "http://127.0.0.1:3000"
# The paged routes (visits, jobs, results) return `next` when more pages exist; the next
# request sends it back under the same name. A CSV page of results carries it in a header.
NEXT_PARAM = "next"
EXPORT_PATH = "/api/results/export"
NEXT_HEADER = "Retail-Pulse-Next"
# A job's status, and an image's in a job's results (openapi.json: StatusResponse,
# JobSummary, ResultRow); `cancelled` is final, like completed and failed.
JobState = Literal["ongoing", "completed", "failed", "cancelled"]
ImageState = Literal["pending", "succeeded", "failed", "cancelled"]
JOB_STATES: tuple[str, ...] = get_args(JobState)
TERMINAL = frozenset({"completed", "failed", "cancelled"})
# The page sizes the routes allow (openapi.json: the `limit` parameters).
JOBS_MAX_LIMIT = 100
RESULTS_MAX_LIMIT = 1000
# GET /api/results?format=csv: the header row every page starts with (ResultRow's fields).
RESULT_COLUMNS = (
    "store_id",
    "image_url",
    "visit_time",
    "status",
    "perimeter",
    "width",
    "height",
    "error",
)
# A wrong job id is worth retrying never, a throttled or failing service always.
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504}) | frozenset(range(505, 600))


class ClientError(Exception):
    """Anything that stopped a call; the message is written for a person."""


class ApiError(ClientError):
    """The API answered with an error status (a 4xx, or a 5xx that outlasted the retries)."""

    def __init__(self, status_code: int, message: str, body: Any = None, attempts: int = 1) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.body = body
        self.attempts = attempts  # how many tries the call took, the answered one included


class UnknownJob(ApiError):
    """A job route answered 400 `{}`: the service has no job with that id (for this client)."""


class Conflict(ApiError):
    """409: the job's state does not allow it (cancelling a finished job, retrying one that
    did not fail), or a submit's Idempotency-Key is busy or was used for another body."""


class ServiceUnavailable(ClientError):
    """The API could not be reached (or kept timing out) after every retry."""


class _Model(BaseModel):
    # The SPEC lets the service add fields; an older client must keep working.
    model_config = ConfigDict(extra="ignore", frozen=True)


_M = TypeVar("_M", bound=_Model)


class _Paged(_Model):
    """A page of a paged route: `next` is present only when another page exists."""

    next: str | None = None


_P = TypeVar("_P", bound=_Paged)


class Progress(_Model):
    total: int
    succeeded: int
    failed: int
    # Only a cancelled job's progress has it: its images never processed.
    cancelled: int | None = None

    @property
    def done(self) -> int:
        """Images with a final state; all of them (== total) once the job has ended."""
        return self.succeeded + self.failed + (self.cancelled or 0)


class StoreError(_Model):
    # null for an uploaded job whose body could not become its images (the error says why)
    store_id: str | None
    error: str


class SubmitAccepted(_Model):
    """The body of POST /api/submit/ (201)."""

    job_id: str


class JobStatus(_Model):
    """The body of GET /api/status for a known job."""

    status: JobState
    job_id: str
    progress: Progress | None = None  # optional in the SPEC; this service always sends it
    errors: tuple[StoreError, ...] = Field(default=(), alias="error")
    # Only a failed job's: how many stores failed; `error` lists at most 100 of them.
    error_count: int | None = None
    error_truncated: bool | None = None
    # Only while an uploaded job's body is still being read (progress.total grows).
    ingesting: bool | None = None
    # Only while a failed job of many failures has them summed up (every image counted, the
    # job not yet failed): true.
    summarizing: bool | None = None

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


class VisitsPage(_Paged):
    """The body of GET /api/visits: one page of results, and `next` when more exist."""

    results: tuple[VisitResult, ...]
    next: str | None = None


class JobSummary(_Model):
    """One job of GET /api/jobs: times are RFC 3339 in UTC, finished_at null until it ends."""

    job_id: str
    status: JobState
    created_at: str
    finished_at: str | None = None
    progress: Progress


class JobsPage(_Paged):
    """The body of GET /api/jobs: the caller's jobs newest first, and `next` when more exist."""

    jobs: tuple[JobSummary, ...]
    next: str | None = None


class ResultRow(_Model):
    """One image of GET /api/results, in submit order; null where it has no such value."""

    store_id: str
    image_url: str | None = None
    visit_time: str | None = None
    status: ImageState
    perimeter: int | None = None
    width: int | None = None
    height: int | None = None
    error: str | None = None


class ResultsPage(_Paged):
    """The body of GET /api/results (JSON): one page of a job's images, `next` when more exist."""

    results: tuple[ResultRow, ...]
    next: str | None = None


class ResultsExport(_Model):
    """The body of POST and GET /api/results/export: where a job's export stands."""

    job_id: str
    format: str
    state: str  # writing, ready or failed
    rows: int
    bytes: int
    error: str | None = None


class WebhookSecret(_Model):
    """The caller's webhook signing secret (GET /api/webhook-secret, POST .../rotate):
    Standard Webhooks' `whsec_` form, what a receiver verifies deliveries with."""

    secret: str


@dataclass(frozen=True)
class CsvPage:
    """One page of GET /api/results?format=csv: its header row, its rows, the next token."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    next: str | None


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

    def submit_upload(self, body: bytes, progress: Callable[[int, int], None] | None = None) -> str:
        """Submit a job too large for a request body: POST /api/uploads, the JSON `body`
        uploaded to S3 with it (`progress(sent, size)` as it goes), then POST /api/submit/
        {upload_id}; returns the job id. A retried submit of the same upload answers the
        same job, so no Idempotency-Key is needed."""
        from retail_pulse_client.upload import UploadRefused, UploadTicket, send_upload

        ticket = self._parse(UploadTicket, self._request("POST", "/api/uploads"), "uploads")
        try:
            send_upload(ticket, body, self.timeout * 10, progress)
        except UploadRefused as error:
            raise ApiError(413, str(error)) from None
        except (requests.ConnectionError, requests.Timeout) as error:
            raise ServiceUnavailable(f"the upload did not get through: {_reason(error)}") from error
        answer = self._request("POST", "/api/submit/", json={"upload_id": ticket.upload_id})
        return self._parse(SubmitAccepted, answer, "submit").job_id

    def status(self, job_id: str) -> JobStatus:
        """GET /api/status; raises UnknownJob when the service has no such job."""
        with _unknown_job(job_id):
            body = self._request("GET", "/api/status", params={"jobid": job_id})
        return self._parse(JobStatus, body, "status")

    def cancel(self, job_id: str) -> JobStatus:
        """POST /api/cancel: stop an ongoing job; its images not yet processed never are.

        Returns the job's status, now `cancelled` (progress counts the cancelled images).
        Raises Conflict with the service's words when the job has already ended, UnknownJob
        when there is no such job.
        """
        return self._change("cancel", job_id, done=lambda status: status.status == "cancelled")

    def retry(self, job_id: str) -> JobStatus:
        """POST /api/retry: process a failed job's failed images again.

        Returns the job's status, `ongoing` again. Raises Conflict with the service's words
        when the job did not fail, UnknownJob when there is no such job.
        """
        return self._change("retry", job_id, done=lambda status: status.status != "failed")

    def wait(
        self,
        job_id: str,
        on_progress: Callable[[JobStatus], None] | None = None,
        poll: float = 0.5,
        poll_cap: float = 5.0,
        timeout: float | None = None,
    ) -> JobStatus:
        """Poll status until the job is completed, failed or cancelled; return that status.

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
        params = _present(
            ("storeid", store),
            ("area", area),
            ("startdate", _timestamp(start)),
            ("enddate", _timestamp(end)),
            ("limit", limit),
        )
        for page in self._pages("visits", params, VisitsPage):
            yield from page.results

    def jobs_page(
        self, status: str | None = None, limit: int | None = None, next_token: str | None = None
    ) -> JobsPage:
        """One page of GET /api/jobs: the caller's jobs newest first, at most `limit` (1 to
        100; the service's default 20), only those of `status` when given. Pass the page's
        `next` back as `next_token` (with the same status) for the page after it."""
        params = _present(("status", status), ("limit", limit), (NEXT_PARAM, next_token))
        return self._parse(JobsPage, self._request("GET", "/api/jobs", params=params), "jobs")

    def jobs(self, status: str | None = None, limit: int | None = None) -> Iterator[JobSummary]:
        """Every job of the caller newest first, following `next` to the last page;
        `limit` is the page size."""
        params = _present(("status", status), ("limit", limit))
        for page in self._pages("jobs", params, JobsPage):
            yield from page.jobs

    def results(
        self, job_id: str, limit: int | None = None, status: str | None = None
    ) -> Iterator[ResultRow]:
        """Every image of a job in submit order (only those of `status` when given: pending,
        succeeded, failed or cancelled), following `next` to the last page; `limit` is the
        page size (1 to 1,000). UnknownJob when there is none."""
        params = _present(("jobid", job_id), ("status", status), ("limit", limit))
        with _unknown_job(job_id):
            for page in self._pages("results", params, ResultsPage):
                yield from page.results

    def results_csv(
        self, job_id: str, limit: int | None = None, status: str | None = None
    ) -> Iterator[tuple[str, ...]]:
        """A job's results as the service writes them in CSV: its header row once, then one
        row per image (of `status` when given) across every page (each page starts with the
        header; it is checked and dropped), following the Retail-Pulse-Next header to the
        last page."""
        params = _present(
            ("jobid", job_id), ("status", status), ("limit", limit), ("format", "csv")
        )
        header: tuple[str, ...] | None = None
        seen_tokens: set[str] = set()
        with _unknown_job(job_id):
            while True:
                page = self._csv_page("/api/results", params)
                if header is None:
                    header = page.header
                    yield header
                elif page.header != header:
                    raise ClientError(
                        f"the results API changed its CSV columns between pages: "
                        f"{','.join(header)} became {','.join(page.header)}"
                    )
                yield from page.rows
                if not page.next:
                    return
                params[NEXT_PARAM] = _fresh(page.next, seen_tokens, "results")

    def export_results(
        self,
        job_id: str,
        stream: IO[bytes],
        file_format: str = "csv",
        progress: Callable[[ResultsExport], None] | None = None,
    ) -> ResultsExport:
        """A finished job's whole results as one file, written to `stream`: POST
        /api/results/export, GET its Location as its Retry-After says while the service
        writes the file, then the file itself from the 303's presigned URL, a chunk at a
        time. `progress(export)` after each poll. UnknownJob, Conflict (the job has not
        finished), or ClientError when the export failed (its error says why)."""
        params = {"jobid": job_id, "format": file_format}
        with _unknown_job(job_id):
            answer = self._send("POST", EXPORT_PATH, params=params, allow_redirects=False)
            while True:
                response = answer[0]
                export = self._parse(ResultsExport, _body_or_raise(*answer), "export")
                if response.status_code == 303:
                    self._download(response.headers["Location"], stream)
                    return export
                if export.state == "failed":
                    raise ClientError(f"the export of job {job_id} failed: {export.error}")
                if progress is not None:
                    progress(export)
                self._sleep(self._backoff(1, response.headers.get("Retry-After") or "2"))
                answer = self._send("GET", EXPORT_PATH, params=params, allow_redirects=False)

    def _download(self, url: str, stream: IO[bytes]) -> None:
        """The file at a presigned URL, streamed: without this client's headers (the API
        key is not S3's business), never whole in memory. The URL is a credential: no
        message quotes it."""
        try:
            with requests.get(url, stream=True, timeout=self.timeout) as response:
                if not response.ok:
                    code = re.search(r"<Code>([^<]{1,64})</Code>", response.text)
                    raise ClientError(
                        f"downloading the export answered HTTP {response.status_code}"
                        + (f" ({code.group(1)})" if code else "")
                        + ": ask for it again (its URL is valid a few minutes)"
                    )
                for chunk in response.iter_content(chunk_size=1024 * 1024):
                    stream.write(chunk)
        except (requests.ConnectionError, requests.Timeout) as error:
            reason = (
                "no answer within the timeout"
                if isinstance(error, requests.Timeout)
                else ("the connection failed")
            )
            raise ServiceUnavailable(f"could not download the export: {reason}") from error

    def webhook_secret(self) -> str:
        """GET /api/webhook-secret: this client's webhook signing secret (`whsec_...`),
        made by the service on first use."""
        body = self._request("GET", "/api/webhook-secret")
        return self._parse(WebhookSecret, body, "webhook-secret").secret

    def rotate_webhook_secret(self, idempotency_key: str | None = None) -> str:
        """POST /api/webhook-secret/rotate: a new secret, answered; for 24 h deliveries are
        signed with it and with the one it replaced. The same Idempotency-Key goes out on
        every retry of this call, so a rotation whose answer was lost rotates once, not
        twice (a second rotation would end the replaced secret's day at once)."""
        key = idempotency_key or str(uuid.uuid4())
        body = self._request("POST", "/api/webhook-secret/rotate", headers={"Idempotency-Key": key})
        return self._parse(WebhookSecret, body, "webhook-secret rotate").secret

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

    def _send(self, method: str, path: str, **kwargs: Any) -> tuple[requests.Response, int]:
        """The response that ended the retries, and how many attempts it took."""
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
            return response, attempt
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        return _body_or_raise(*self._send(method, path, **kwargs))

    def _change(self, action: str, job_id: str, done: Callable[[JobStatus], bool]) -> JobStatus:
        """POST /api/<action>?jobid=; a 409 met only on a retry is checked against the status:
        when the job is as the action leaves it, the lost first try did it."""
        try:
            with _unknown_job(job_id):
                body = self._request("POST", f"/api/{action}", params={"jobid": job_id})
        except Conflict as conflict:
            if conflict.attempts > 1 and done(current := self.status(job_id)):
                return current
            raise
        return self._parse(JobStatus, body, action)

    def _pages(self, what: str, params: dict[str, str | int], model: type[_P]) -> Iterator[_P]:
        """GET /api/<what> page by page, sending each page's `next` back until there is none."""
        seen_tokens: set[str] = set()
        while True:
            page = self._parse(model, self._request("GET", f"/api/{what}", params=params), what)
            yield page
            if not page.next:
                return
            params[NEXT_PARAM] = _fresh(page.next, seen_tokens, what)

    def _csv_page(self, path: str, params: dict[str, str | int]) -> CsvPage:
        response, attempts = self._send(
            "GET", path, params=params, headers={"Accept": "text/csv, application/json"}
        )
        if not response.ok:
            _body_or_raise(response, attempts)  # raises with the server's words
        kind, *options = response.headers.get("Content-Type", "").split(";")
        if kind.strip().lower() != "text/csv":
            raise ClientError(
                f"GET {response.url} answered {kind.strip() or 'no content type'} where CSV "
                "was asked for"
            )
        charset = "utf-8"  # RFC 7111's default would be US-ASCII; the service says UTF-8
        for option in options:
            name, _, value = option.partition("=")
            if name.strip().lower() == "charset":
                charset = value.strip().strip('"')
        try:
            text = response.content.decode(charset)
        except (LookupError, UnicodeDecodeError) as error:
            raise ClientError(
                f"GET {response.url} answered CSV that is not {charset}: {error}"
            ) from None
        rows = [tuple(row) for row in csv.reader(io.StringIO(text, newline=""))]
        if not rows:
            raise ClientError(f"GET {response.url} answered an empty CSV page (no header row)")
        return CsvPage(rows[0], tuple(rows[1:]), response.headers.get(NEXT_HEADER) or None)

    @staticmethod
    def _parse(model: type[_M], body: Any, what: str) -> _M:
        try:
            return model.model_validate(body)
        except ValidationError as error:
            raise ClientError(
                f"the {what} API sent a body this client does not understand: {error}"
            ) from error


def _present(*pairs: tuple[str, str | int | None]) -> dict[str, str | int]:
    """Query parameters without the ones not given."""
    return {name: value for name, value in pairs if value is not None}


def _fresh(token: str, seen: set[str], what: str) -> str:
    """A page token not sent before: a server bug would otherwise loop forever."""
    if token in seen:
        raise ClientError(f"the {what} API sent the page token {token!r} twice")
    seen.add(token)
    return token


@contextmanager
def _unknown_job(job_id: str) -> Iterator[None]:
    """The SPEC's `400 {}` of a job route as UnknownJob, naming the id."""
    try:
        yield
    except ApiError as error:
        if error.status_code == 400 and error.body == {}:
            raise UnknownJob(400, f"there is no job with id '{job_id}'", {}) from None
        raise


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
    kind = Conflict if response.status_code == 409 else ApiError
    server_text = body.get("error") if isinstance(body, dict) else None
    if isinstance(server_text, str) and server_text and response.status_code < 500:
        # A 4xx speaks for itself: the server's own words, unadorned.
        raise kind(response.status_code, server_text, body, attempts)
    detail = server_text or (response.text or response.reason or "").strip()[:300]
    message = f"HTTP {response.status_code}" + (f": {detail}" if detail else "")
    if response.status_code in _RETRY_STATUS:
        message += f" (gave up after {attempts} attempts)"
    raise kind(response.status_code, message, body, attempts)
