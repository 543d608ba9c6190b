"""GET /api/results?status=: only the images of one status, as JSON or CSV, paged as the
whole export is, with tokens bound to the status too; read without the other rows where an
index has them (failed), and not at all where the job's counters say there are none."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest

from retail_pulse.domain import ImageCancelled, ImageFailure, ImageSuccess
from retail_pulse.jobs import results as results_module
from retail_pulse.metering import usage
from tests.integration.conftest import job, visit
from tests.support.filing import file_result

A = "keyidaaaa1"
BHARAT, ASHA, UNKNOWN = "S00339218", "S01408764", "S99999999"


def url(n: int) -> str:
    return f"https://images.example/{n}.jpg"


def submit(call_api: Any, *visits: dict[str, Any]) -> str:
    result = call_api("POST", "/api/submit/", body=job(*visits), tenant=A)
    assert result.status_code == 201, result.body
    return str(result.body["job_id"])


def results(call_api: Any, job_id: str, **query: str) -> Any:
    return call_api("GET", "/api/results", query={"jobid": job_id, **query}, tenant=A)


def every_page(call_api: Any, job_id: str, **query: str) -> tuple[list[dict[str, Any]], int]:
    """Every row across the pages, and how many pages it took."""
    rows: list[dict[str, Any]] = []
    token, pages = None, 0
    while True:
        body = results(call_api, job_id, **query, **({"next": token} if token else {})).body
        rows += body["results"]
        pages += 1
        token = body.get("next")
        if token is None:
            return rows, pages


def dynamodb_requests() -> dict[str, int]:
    requests = usage.summary()["requests"]
    return {k: v for k, v in requests.items() if k.startswith("dynamodb.")}


def measured(store_id: str = BHARAT) -> ImageSuccess:
    return ImageSuccess(perimeter=1908, width=550, height=404, store_id=store_id, area="710006")


@pytest.fixture
def mixed_job(aws: Any, stores: Any, call_api: Any) -> str:
    """Five images: measured, failed, pending, an unknown store's (failed), measured."""
    job_id = submit(
        call_api,
        visit(BHARAT, [url(0), url(1)]),
        visit(ASHA, [url(2)]),
        visit(UNKNOWN, [url(3)]),
        visit(ASHA, [url(4)]),
    )
    assert file_result(job_id, 0, measured())
    assert file_result(job_id, 1, ImageFailure(f"image download failed: HTTP 404 for {url(1)}"))
    assert file_result(job_id, 4, measured(ASHA))
    return job_id


def test_each_status_answers_exactly_its_rows_in_submit_order(mixed_job, call_api):
    by_status = {
        state: results(call_api, mixed_job, status=state).body["results"]
        for state in ("succeeded", "failed", "pending", "cancelled")
    }

    assert [row["image_url"] for row in by_status["succeeded"]] == [url(0), url(4)]
    assert [row["image_url"] for row in by_status["failed"]] == [url(1), url(3)]
    assert [row["image_url"] for row in by_status["pending"]] == [url(2)]
    assert by_status["cancelled"] == []
    # Each row is the row of the whole export, unchanged.
    everything = results(call_api, mixed_job).body["results"]
    for state, rows in by_status.items():
        assert rows == [row for row in everything if row["status"] == state], state
    assert by_status["failed"][1] == {
        "store_id": UNKNOWN,
        "image_url": url(3),
        "visit_time": "2026-11-28T10:15:00Z",
        "status": "failed",
        "perimeter": None,
        "width": None,
        "height": None,
        "error": "store_id not found in store master",
    }


def test_failures_are_read_from_their_index_and_nothing_is_read_for_a_status_the_job_lacks(
    mixed_job, call_api
):
    results(call_api, mixed_job, status="failed")
    # The job, the FailedImages index (failures only), then the page's failed records.
    assert dynamodb_requests() == {
        "dynamodb.GetItem": 1,
        "dynamodb.Query": 1,
        "dynamodb.BatchGetItem": 1,
    }
    # Never cancelled: no image can be cancelled, and only the job is read.
    assert results(call_api, mixed_job, status="cancelled").body == {"results": []}
    assert dynamodb_requests() == {"dynamodb.GetItem": 1}


def test_a_job_with_every_image_done_has_nothing_pending_and_reads_only_the_job(
    aws, stores, call_api
):
    job_id = submit(call_api, visit(BHARAT, [url(0), url(1)]))
    assert file_result(job_id, 0, measured())
    assert file_result(job_id, 1, measured())

    assert results(call_api, job_id, status="pending").body == {"results": []}
    assert dynamodb_requests() == {"dynamodb.GetItem": 1}
    assert results(call_api, job_id, status="failed").body == {"results": []}
    assert dynamodb_requests() == {"dynamodb.GetItem": 1}


def test_failures_page_by_limit_with_a_token_only_while_more_exist(aws, stores, call_api):
    job_id = submit(call_api, visit(BHARAT, [url(n) for n in range(10)]))
    for n in range(10):
        outcome = ImageFailure(f"failure {n}") if n % 2 == 0 else measured()
        assert file_result(job_id, n, outcome)

    rows, pages = every_page(call_api, job_id, status="failed", limit="2")

    assert [row["error"] for row in rows] == [f"failure {n}" for n in range(0, 10, 2)]
    assert pages == 3
    # Exactly `limit` failures left: the page says there is no more.
    whole = results(call_api, job_id, status="failed", limit="5").body
    assert len(whole["results"]) == 5 and "next" not in whole


def test_csv_of_one_status_has_the_header_and_only_those_rows(mixed_job, call_api):
    answer = results(call_api, mixed_job, status="failed", format="csv", limit="1")

    assert answer.headers["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(answer.body)))
    assert [(row["image_url"], row["status"]) for row in rows] == [(url(1), "failed")]
    token = answer.headers["Retail-Pulse-Next"]
    second = results(call_api, mixed_job, status="failed", format="csv", limit="1", next=token)
    rows = list(csv.DictReader(io.StringIO(second.body)))
    assert [row["store_id"] for row in rows] == [UNKNOWN]
    assert "Retail-Pulse-Next" not in second.headers


def test_a_token_answers_only_the_status_it_was_made_for(mixed_job, call_api):
    failed_token = results(call_api, mixed_job, status="failed", limit="1").body["next"]
    whole_token = results(call_api, mixed_job, limit="1").body["next"]

    for query in (
        {"next": failed_token},
        {"next": failed_token, "status": "succeeded"},
        {"next": whole_token, "status": "failed"},
    ):
        answer = results(call_api, mixed_job, **query)
        assert answer.status_code == 400, query
        assert "different status filter" in answer.body["error"], query
    follow = results(call_api, mixed_job, status="failed", next=failed_token).body
    assert [row["image_url"] for row in follow["results"]] == [url(3)]


def test_an_unknown_status_is_a_400_that_names_the_parameter(mixed_job, call_api):
    answer = results(call_api, mixed_job, status="done")

    assert answer.status_code == 400
    assert "status" in answer.body["error"] and "succeeded" in answer.body["error"]


def test_a_sparse_status_is_looked_for_a_bounded_stretch_per_request(
    aws, stores, call_api, monkeypatch
):
    """Each request looks at SCAN_BUDGET images at most: pages may come back empty with a
    token, and following the tokens finds every row once."""
    monkeypatch.setattr(results_module, "SCAN_BUDGET", 3)
    monkeypatch.setattr(results_module, "SCAN_WINDOW", 2)
    job_id = submit(call_api, visit(BHARAT, [url(n) for n in range(8)]))
    for n in range(8):
        assert file_result(job_id, n, measured() if n >= 6 else ImageFailure("no"))

    pages = []
    token = None
    while True:
        body = results(
            call_api, job_id, status="succeeded", **({"next": token} if token else {})
        ).body
        pages.append([row["image_url"] for row in body["results"]])
        token = body.get("next")
        if token is None:
            break

    assert pages == [[], [], [url(6), url(7)]]


def test_cancelled_and_pending_images_of_a_cancelled_job(aws, stores, call_api):
    job_id = submit(call_api, visit(BHARAT, [url(n) for n in range(4)]))
    assert file_result(job_id, 0, measured())
    cancelled = call_api("POST", "/api/cancel", query={"jobid": job_id}, tenant=A)
    assert cancelled.status_code == 200, cancelled.body
    # Two unprocessed images are filed `cancelled` as their messages arrive; one is not yet.
    assert file_result(job_id, 1, ImageCancelled())
    assert file_result(job_id, 3, ImageCancelled())

    cancelled_rows, _ = every_page(call_api, job_id, status="cancelled")
    pending_rows, _ = every_page(call_api, job_id, status="pending")

    assert [row["image_url"] for row in cancelled_rows] == [url(1), url(3)]
    assert [row["image_url"] for row in pending_rows] == [url(2)]
