"""A finished job's results as one file, end to end: POST /api/results/export, the export
function writing it to S3 (the local stack's moto S3, or MiniStack's) from its queue, GET
polled until its 303, and the file downloaded through that redirect, row for row the
results GET /api/results gives."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests

from tests.e2e.conftest import OTHER_STORE, Stack, visit

pytestmark = pytest.mark.e2e

EXPORT = "/api/results/export"


def finished_job(stack: Stack) -> str:
    """A job of 30 images, 25 measured and 5 that fail (HTTP 404), finished."""
    urls = [stack.images.url(f"/img/{40 + i}x{30 + i % 7}.png") for i in range(25)]
    missing = [stack.images.url(f"/missing/{i}.png") for i in range(5)]
    job_id = stack.submit_job([visit(urls[:15]), visit(urls[15:] + missing, OTHER_STORE)])
    assert stack.wait_until_terminal(job_id, timeout_s=120)["status"] == "failed"
    return job_id


def poll_until_written(stack: Stack, location: str, timeout_s: float = 120) -> requests.Response:
    """GET the export's Location, as its Retry-After says, until it is no longer 202."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = stack.http.get(stack.url(location), allow_redirects=False, timeout=30)
        if answer.status_code != 202:
            return answer
        assert answer.json()["state"] == "writing"
        assert time.monotonic() < deadline, f"export still writing after {timeout_s} s"
        time.sleep(min(int(answer.headers["Retry-After"]), 2))


def results(stack: Stack, job_id: str, output: str) -> requests.Response:
    answer = stack.http.get(
        stack.url("/api/results"), params={"jobid": job_id, "format": output}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    return answer


def test_a_finished_jobs_export_downloads_through_its_303_with_every_row(stack: Stack) -> None:
    job_id = finished_job(stack)

    asked = stack.http.post(
        stack.url(EXPORT), params={"jobid": job_id, "format": "csv"}, timeout=30
    )
    assert asked.status_code in (202, 303), asked.text
    location = f"{EXPORT}?jobid={job_id}&format=csv"
    if asked.status_code == 202:
        assert asked.headers["Location"] == location
    written = poll_until_written(stack, location)

    assert written.status_code == 303, written.text
    assert written.json()["rows"] == 30
    # A client that follows redirects gets the file itself.
    file = stack.http.get(stack.url(location), timeout=60)
    assert file.status_code == 200, file.text
    assert file.headers["Content-Type"].startswith("text/csv")
    assert file.text == results(stack, job_id, "csv").text
    rows = file.text.splitlines()[1:]
    assert len(rows) == 30
    assert sum(",succeeded," in row for row in rows) == 25
    assert sum(",failed," in row for row in rows) == 5
    # The same request again answers the same, written export.
    again = stack.http.post(
        stack.url(EXPORT),
        params={"jobid": job_id, "format": "csv"},
        allow_redirects=False,
        timeout=30,
    )
    assert again.status_code == 303


def test_the_jsonl_export_holds_the_results_rows_and_another_client_sees_nothing(
    stack: Stack,
) -> None:
    job_id = finished_job(stack)

    asked = stack.http.post(
        stack.url(EXPORT), params={"jobid": job_id, "format": "jsonl"}, timeout=30
    )
    assert asked.status_code in (202, 303), asked.text
    written = poll_until_written(stack, f"{EXPORT}?jobid={job_id}&format=jsonl")
    assert written.status_code == 303, written.text
    download = requests.get(written.headers["Location"], timeout=60)

    assert download.status_code == 200
    rows: list[dict[str, Any]] = [json.loads(line) for line in download.text.splitlines()]
    assert rows == results(stack, job_id, "json").json()["results"]
    assert len(rows) == 30
    unknown = stack.http.post(
        stack.url(EXPORT), params={"jobid": "no-such-job", "format": "jsonl"}, timeout=30
    )
    assert (unknown.status_code, unknown.json()) == (400, {})
