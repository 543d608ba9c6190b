"""Observed locally: a small job through the local stack shows up in GET /local/metrics (what
CloudWatch would have received) and in the relayed logs, raw JSON when piped."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.e2e.conftest import OTHER_STORE, Stack, visit

pytestmark = pytest.mark.e2e

# The job is terminal in DynamoDB a moment before its last invocation ends and its metrics
# are printed and relayed: wait for them this long at most.
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


def relayed_json(stack: Stack, source: str) -> list[dict[str, Any]]:
    """The JSON lines a function printed, as the piped stack log relays them."""
    prefix = f"[{source}] {{"
    return [
        json.loads(line.removeprefix(f"[{source}] "))
        for line in stack.log_path.read_text(errors="replace").splitlines()
        if line.startswith(prefix)
    ]


def test_a_small_job_shows_in_local_metrics_and_logs(stack: Stack) -> None:
    before = metric_totals(stack)
    missing = stack.images.url("/status/404")
    job_id = stack.submit_job(
        [
            visit([stack.images.url("/img/60x40.jpg"), stack.images.url("/img/80x40.png")]),
            visit([missing], OTHER_STORE),
        ]
    )
    assert stack.wait_until_terminal(job_id)["status"] == "failed"

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

    # Piped, the function's lines are its Powertools JSON, with the keys Logs Insights needs.
    process_lines = [line for line in relayed_json(stack, "ProcessFunction") if "_aws" not in line]
    (failed,) = [
        line
        for line in process_lines
        if line.get("job_id") == job_id and line["message"] == "image failed"
    ]
    assert (failed["reason"], failed["host"]) == ("download", stack.images.host_port)
    assert failed["image"] == f"{job_id}/2"
    finished = [
        line
        for line in process_lines
        if line.get("job_id") == job_id and line["message"] == "job finished"
    ]
    assert len(finished) == 1 and finished[0]["outcome"] == "failed"
    submit_lines = relayed_json(stack, "SubmitFunction")
    (accepted,) = [line for line in submit_lines if line.get("job_id") == job_id]
    assert accepted["message"] == "job accepted" and accepted["correlation_id"]
