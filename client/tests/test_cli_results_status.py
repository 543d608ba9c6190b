"""`retail-pulse results --status` exports only the images of one status (the API filters,
page by page), and `retail-pulse status` of a failed job whose list was cut says how many
stores are left out and how to get every failure (issue 23)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

import pytest
from fake_api import RESULT_COLUMNS, FakeJobs, fake_jobs
from typer.testing import CliRunner, Result

from retail_pulse_client.cli import app

STATES = ["succeeded", "failed", "pending", "failed", "succeeded", "failed"]


@pytest.fixture
def service() -> Iterator[FakeJobs]:
    with fake_jobs() as jobs:
        jobs.add("j1", STATES)
        yield jobs


def run(service: FakeJobs, *args: str) -> Result:
    return CliRunner().invoke(app, [*args, "--api", service.api.base_url], catch_exceptions=False)


def test_results_status_failed_exports_only_the_failures_across_pages(service: FakeJobs) -> None:
    result = run(service, "results", "j1", "--status", "failed", "--page-size", "2")

    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["image_url"] for row in rows] == [
        service.jobs["j1"].rows[n]["image_url"] for n in (1, 3, 5)
    ]
    assert result.stdout.splitlines()[0] == ",".join(RESULT_COLUMNS)
    queries = [r.query for r in service.api.sent("GET", "/api/results")]
    # Every page asks for the same status, the token of the page before after the first.
    assert [q["status"] for q in queries] == ["failed", "failed"]
    assert [q.get("next") for q in queries] == [None, "tok-1"]
    assert "Wrote 3 results of job j1: 3 failed" in result.stderr


def test_results_status_as_json(service: FakeJobs) -> None:
    result = run(service, "results", "j1", "--status", "pending", "--format", "json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"job_id": "j1", "results": [service.jobs["j1"].rows[2]]}


def test_results_status_with_no_such_images_says_so(service: FakeJobs) -> None:
    result = run(service, "results", "j1", "--status", "cancelled", "--format", "json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["results"] == []
    assert "Wrote 0 results of job j1: no cancelled images" in result.stderr


def test_an_unknown_status_is_refused_before_any_request(service: FakeJobs) -> None:
    result = run(service, "results", "j1", "--status", "done")

    assert result.exit_code == 2
    assert "'done' is not one of" in result.stderr
    assert "pending" in result.stderr and "cancelled" in result.stderr
    assert service.api.sent("GET", "/api/results") == []


def test_status_of_a_failed_job_whose_list_was_cut_says_how_to_get_every_failure(
    service: FakeJobs,
) -> None:
    job = service.add("j2", ["failed"] * 3)
    job.store_errors = [
        {"store_id": f"S{n:04d}", "error": "store_id not found in store master"} for n in range(150)
    ]

    result = run(service, "status", "j2")

    assert result.exit_code == 1
    listed = [line for line in result.stdout.splitlines() if line.startswith("S0")]
    assert len(listed) == 100 and listed[0] == "S0000: store_id not found in store master"
    assert (
        "50 more failed stores not listed; every failure: "
        "retail-pulse results j2 --status failed" in result.stderr
    )


def test_status_of_a_failed_job_listed_whole_adds_nothing(service: FakeJobs) -> None:
    service.add("j3", ["failed", "succeeded"])

    result = run(service, "status", "j3")

    assert result.exit_code == 1
    assert "not listed" not in result.stderr
