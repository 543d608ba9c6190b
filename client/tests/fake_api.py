"""A scripted stand-in for the Retail Pulse API on 127.0.0.1, for the client's tests.

Each route answers from its own script of (status, body, headers) in order and repeats the
last answer once the script runs out; every request is recorded, so a test can check what
the client sent (headers, query, body) and how many times. A body that is a str or bytes is
sent as it is (with the Content-Type its headers give, else JSON's); anything else as JSON.

A route may instead be served by a function of the request (`serve`): FakeJobs serves the
job routes (status, cancel, retry, jobs, results) over a few jobs held in memory, with the
service's rules, its `400 {}` and 409s, and pages whose opaque `next` tokens must come back
unchanged. A script, when a route has one, answers before the function.
"""

from __future__ import annotations

import csv
import io
import json
import socket
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

Answer = tuple[int, Any] | tuple[int, Any, dict[str, str]]
Responder = Callable[["Recorded"], Answer]


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class FakeApi:
    base_url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    scripts: dict[tuple[str, str], list[Answer]] = field(default_factory=lambda: defaultdict(list))
    responders: dict[tuple[str, str], Responder] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def on(self, method: str, path: str, *answers: Answer) -> FakeApi:
        """Answer `method path` with these, in order; the last one repeats."""
        self.scripts[(method, path)].extend(answers)
        return self

    def serve(self, method: str, path: str, responder: Responder) -> FakeApi:
        """Answer `method path` with `responder(request)` (when no script answers it)."""
        self.responders[(method, path)] = responder
        return self

    def sent(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == path]

    def _answer(self, recorded: Recorded) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            self.requests.append(recorded)
            route = (recorded.method, recorded.path)
            script = self.scripts.get(route)
            responder = self.responders.get(route)
            if script:
                answer = script.pop(0) if len(script) > 1 else script[0]
            elif responder is not None:
                answer = responder(recorded)
            else:
                return 404, {"error": f"no route for {recorded.path}"}, {}
        status, body, *rest = answer
        return status, body, dict(rest[0]) if rest else {}


@contextmanager
def fake_api() -> Iterator[FakeApi]:
    api = FakeApi()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _handle(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            recorded = Recorded(
                method=self.command,
                path=url.path,
                query={k: v[-1] for k, v in parse_qs(url.query).items()},
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
            status, answer, headers = api._answer(recorded)
            if isinstance(answer, bytes):
                payload = answer
            elif isinstance(answer, str):
                payload = answer.encode()
            else:
                payload = json.dumps(answer).encode()
            content_type = next(
                (headers.pop(name) for name in list(headers) if name.lower() == "content-type"),
                "application/json",
            )
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = _handle
        do_POST = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    api.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()


# -- the job routes, served from jobs held in memory ----------------------------------------

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
CSV_TYPE = "text/csv; charset=utf-8"
NEXT_HEADER = "Retail-Pulse-Next"
UNKNOWN_JOB: Answer = (400, {})


def result_row(
    store_id: str, n: int, status: str = "succeeded", error: str | None = None
) -> dict[str, Any]:
    """A ResultRow body: image `n` of a store, measured when it succeeded."""
    measured = status == "succeeded"
    return {
        "store_id": store_id,
        "image_url": f"http://h/{store_id}/{n}.jpg",
        "visit_time": "2026-11-28T10:15:00Z",
        "status": status,
        "perimeter": 2 * (100 + n + 50) if measured else None,
        "width": 100 + n if measured else None,
        "height": 50 if measured else None,
        "error": error if status == "failed" else None,
    }


class _Refused(Exception):
    """A request the fake service turns away, with its answer."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer)
        self.answer = answer


@dataclass
class FakeJob:
    """A job as the fake service holds it: its images are its ResultRow bodies, and its
    progress is counted from them, so cancel and retry change both together."""

    job_id: str
    status: str
    rows: list[dict[str, Any]]
    created_at: str
    finished_at: str | None = None
    store_errors: list[dict[str, str]] = field(default_factory=list)

    def progress(self) -> dict[str, int]:
        counts = {state: 0 for state in ("succeeded", "failed", "cancelled")}
        for row in self.rows:
            if row["status"] in counts:
                counts[row["status"]] += 1
        body = {
            "total": len(self.rows),
            "succeeded": counts["succeeded"],
            "failed": counts["failed"],
        }
        if self.status == "cancelled":  # only a cancelled job's progress has the key
            body["cancelled"] = counts["cancelled"]
        return body

    def status_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "status": self.status,
            "job_id": self.job_id,
            "progress": self.progress(),
        }
        if self.status == "failed" and self.store_errors:
            # As the service bounds it: 100 stores at most, and how many failed.
            body["error"] = self.store_errors[:100]
            body["error_count"] = len(self.store_errors)
            body["error_truncated"] = len(self.store_errors) > 100
        return body

    def summary(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "status": self.status,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "progress": self.progress(),
        }


@dataclass
class FakeJobs:
    """GET /api/status, POST /api/cancel and /api/retry, GET /api/jobs and /api/results over
    `jobs`, as the service answers them (openapi.json and issue 15's contract).

    Pages are cut at `limit` (the service's defaults otherwise); each `next` is a fresh
    opaque token bound to the route and query that got it, and any other token is a 400,
    so a client that does not send back exactly what it was given fails.
    """

    api: FakeApi
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    tokens: dict[str, tuple[str, tuple[Any, ...], int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.api.serve("GET", "/api/status", self._status)
        self.api.serve("POST", "/api/cancel", self._cancel)
        self.api.serve("POST", "/api/retry", self._retry)
        self.api.serve("GET", "/api/jobs", self._list)
        self.api.serve("GET", "/api/results", self._results)

    def add(
        self,
        job_id: str,
        statuses: Sequence[str],
        *,
        status: str | None = None,
        created_at: str = "2026-12-01T11:19:28Z",
        finished_at: str | None = None,
    ) -> FakeJob:
        """A job of one image per entry of `statuses` (pending, succeeded, failed,
        cancelled); its status follows from them unless given."""
        rows = [
            result_row(f"S{n % 3}", n, state, error=f"image download failed: HTTP 404 (#{n})")
            for n, state in enumerate(statuses)
        ]
        if status is None:
            status = (
                "ongoing"
                if "pending" in statuses
                else ("failed" if "failed" in statuses else "completed")
            )
        failed_stores = sorted({row["store_id"] for row in rows if row["status"] == "failed"})
        job = FakeJob(
            job_id=job_id,
            status=status,
            rows=rows,
            created_at=created_at,
            finished_at=finished_at or (None if status == "ongoing" else created_at),
            store_errors=[
                {"store_id": store, "error": "image download failed: HTTP 404"}
                for store in failed_stores
            ],
        )
        self.jobs[job_id] = job
        return job

    # -- the routes ----------------------------------------------------------------------

    def _job(self, request: Recorded) -> FakeJob | None:
        return self.jobs.get(request.query.get("jobid", ""))

    def _status(self, request: Recorded) -> Answer:
        job = self._job(request)
        return UNKNOWN_JOB if job is None else (200, job.status_body())

    def _cancel(self, request: Recorded) -> Answer:
        job = self._job(request)
        if job is None:
            return UNKNOWN_JOB
        if job.status != "ongoing":
            # The service's words (retail_pulse.jobs.actions).
            return 409, {
                "error": f"the job is already {job.status}; only an ongoing job can be cancelled"
            }
        for row in job.rows:
            if row["status"] == "pending":
                row["status"] = "cancelled"
        job.status, job.finished_at = "cancelled", "2026-12-01T11:20:00Z"
        return 200, job.status_body()

    def _retry(self, request: Recorded) -> Answer:
        job = self._job(request)
        if job is None:
            return UNKNOWN_JOB
        if job.status != "failed":
            return 409, {"error": f"the job is {job.status}; only a failed job can be retried"}
        for row in job.rows:
            if row["status"] == "failed":
                row.update(status="pending", error=None)
        job.status, job.finished_at = "ongoing", None
        return 200, job.status_body()

    def _list(self, request: Recorded) -> Answer:
        wanted = request.query.get("status") or None
        if wanted not in (None, "ongoing", "completed", "failed", "cancelled"):
            return 400, {"error": f"query parameter 'status': {wanted!r} is not a status"}
        listed = sorted(
            (job for job in self.jobs.values() if wanted in (None, job.status)),
            key=lambda job: job.created_at,
            reverse=True,
        )
        try:
            shown, token = self._page(request, "jobs", (wanted,), listed, default=20, most=100)
        except _Refused as refused:
            return refused.answer
        body: dict[str, Any] = {"jobs": [job.summary() for job in shown]}
        if token:
            body["next"] = token
        return 200, body

    def _results(self, request: Recorded) -> Answer:
        job = self._job(request)
        if job is None:
            return UNKNOWN_JOB
        form = request.query.get("format", "json")
        if form not in ("json", "csv"):
            return 400, {"error": "query parameter 'format': Input should be 'json' or 'csv'"}
        state = request.query.get("status")
        if state not in (None, "pending", "succeeded", "failed", "cancelled"):
            return 400, {"error": "query parameter 'status': Input should be 'pending', ..."}
        chosen = [row for row in job.rows if state is None or row["status"] == state]
        try:
            rows, token = self._page(
                request, "results", (job.job_id, state), chosen, default=1000, most=1000
            )
        except _Refused as refused:
            return refused.answer
        if form == "json":
            body: dict[str, Any] = {"results": list(rows)}
            if token:
                body["next"] = token
            return 200, body
        out = io.StringIO()
        writer = csv.writer(out)  # RFC 4180: CRLF, every page under its own header row
        writer.writerow(RESULT_COLUMNS)
        for row in rows:
            writer.writerow(["" if row[c] is None else row[c] for c in RESULT_COLUMNS])
        headers = {"Content-Type": CSV_TYPE, **({NEXT_HEADER: token} if token else {})}
        return 200, out.getvalue(), headers

    def _page(
        self,
        request: Recorded,
        route: str,
        query: tuple[Any, ...],
        items: Sequence[Any],
        *,
        default: int,
        most: int,
    ) -> tuple[Sequence[Any], str | None]:
        """The slice of `items` this request asks for and the next page's token; _Refused
        with the 400 the service would answer for a bad limit or token."""
        raw_limit = request.query.get("limit")
        limit = int(raw_limit) if raw_limit and raw_limit.isdigit() else default
        if raw_limit is not None and not 1 <= limit <= most:
            raise _Refused((400, {"error": f"query parameter 'limit': must be 1 to {most}"}))
        start = 0
        sent = request.query.get("next")
        if sent is not None:
            issued = self.tokens.get(sent)
            if issued is None or issued[:2] != (route, query):
                raise _Refused((400, {"error": "the next token is not this query's"}))
            start = issued[2]
        end = start + limit
        token = None
        if end < len(items):
            token = f"tok-{len(self.tokens) + 1}"
            self.tokens[token] = (route, query, end)
        return items[start:end], token


@contextmanager
def fake_jobs() -> Iterator[FakeJobs]:
    """A fake API on 127.0.0.1 whose job routes are served by a FakeJobs."""
    with fake_api() as api:
        yield FakeJobs(api)


def closed_port() -> str:
    """A 127.0.0.1 host:port nothing listens on (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"
