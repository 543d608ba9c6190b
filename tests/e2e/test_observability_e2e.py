"""Observed end to end: a small job's log lines carry what Logs Insights queries need (in the
local stack's relayed log, raw JSON when piped, or in the deployed functions' CloudWatch Logs
groups), and locally its metrics show up in GET /local/metrics (what CloudWatch would have
received from the EMF lines)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.e2e.conftest import OTHER_STORE, Stack, visit

pytestmark = pytest.mark.e2e

# The job is terminal in DynamoDB a moment before its last invocation ends and its metrics
# and log lines are printed and relayed: wait for them this long at most.
METRICS_WAIT_S = 30


def metric_totals(stack: Stack) -> dict[str, Any]:
    response = stack.http.get(stack.url("/local/metrics"), timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    return response.json()["metrics"]


def delta(before: dict[str, Any], after: dict[str, Any], name: str, field: str = "sum") -> float:
    return after.get(name, {}).get(field, 0) - before.get(name, {}).get(field, 0)


def failed_by(totals: dict[str, Any], reason: str) -> float:
    return totals.get("ImagesFailed", {}).get("by", {}).get("reason", {}).get(reason, 0)


def small_failed_job(stack: Stack) -> str:
    """Two images that measure and one 404, in two visits; returns the job id once failed."""
    missing = stack.images.url("/status/404")
    job_id = stack.submit_job(
        [
            visit([stack.images.url("/img/60x40.jpg"), stack.images.url("/img/80x40.png")]),
            visit([missing], OTHER_STORE),
        ]
    )
    assert stack.wait_until_terminal(job_id)["status"] == "failed"
    return job_id


@pytest.mark.local_stack("GET /local/metrics (the EMF totals) is the local stack's")
def test_a_small_job_shows_in_local_metrics(stack: Stack) -> None:
    before = metric_totals(stack)
    small_failed_job(stack)

    deadline = time.monotonic() + METRICS_WAIT_S
    while True:
        after = metric_totals(stack)
        settled = (
            delta(before, after, "ImagesSucceeded") >= 2
            and failed_by(after, "download") - failed_by(before, "download") >= 1
            and delta(before, after, "JobDuration", "samples") >= 1
        )
        if settled or time.monotonic() > deadline:
            break
        time.sleep(0.25)

    # Submits are this test's alone (e2e tests run one at a time): exact.
    assert delta(before, after, "JobsSubmitted") == 1
    assert delta(before, after, "ImagesSubmitted") == 3
    # Processing: at least this job's (a previous test's stragglers may still be counted).
    assert delta(before, after, "ImagesSucceeded") >= 2, after
    assert failed_by(after, "download") - failed_by(before, "download") >= 1, after
    assert delta(before, after, "JobDuration", "samples") >= 1, after
    assert after["ImagesSucceeded"]["namespace"] == "RetailPulse"
    assert after["ImagesSucceeded"]["unit"] == "Count"


def test_a_small_jobs_log_lines_carry_what_logs_insights_needs(stack: Stack) -> None:
    job_id = small_failed_job(stack)

    def mine(function: str, message: str) -> list[dict[str, Any]]:
        return [
            line
            for line in stack.function_json(function)
            if "_aws" not in line and line.get("job_id") == job_id and line["message"] == message
        ]

    deadline = time.monotonic() + METRICS_WAIT_S
    while not mine("ProcessFunction", "job finished") and time.monotonic() < deadline:
        time.sleep(0.25)

    # The function's lines are its Powertools JSON, with the keys Logs Insights needs.
    (failed,) = mine("ProcessFunction", "image failed")
    assert (failed["reason"], failed["host"]) == ("download", stack.images.host_port)
    assert failed["image"] == f"{job_id}/2"
    finished = mine("ProcessFunction", "job finished")
    assert len(finished) == 1 and finished[0]["outcome"] == "failed"
    (accepted,) = mine("SubmitFunction", "job accepted")
    assert accepted["correlation_id"]
