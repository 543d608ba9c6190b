"""GET /api/results: one row per image in submit order, whatever its state, as JSON or CSV,
paged with signed tokens; only the caller's own jobs (another's answers as unknown)."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest

from retail_pulse.domain import ImageFailure, ImageSuccess
from retail_pulse.metering import usage
from tests.integration.conftest import job, visit
from tests.support.filing import file_result

A, B = "keyidaaaa1", "keyidbbbb2"
BHARAT, ASHA, UNKNOWN = "S00339218", "S01408764", "S99999999"
HEADER = "store_id,image_url,visit_time,status,perimeter,width,height,error"


def url(n: int) -> str:
    return f"https://images.example/{n}.jpg"


def submit(call_api: Any, tenant: str | None, *visits: dict[str, Any]) -> str:
    result = call_api("POST", "/api/submit/", body=job(*visits), tenant=tenant)
    assert result.status_code == 201, result.body
    return str(result.body["job_id"])


def measured(store_id: str = BHARAT) -> ImageSuccess:
    return ImageSuccess(perimeter=1908, width=550, height=404, store_id=store_id, area="710006")


def results(call_api: Any, tenant: str | None, job_id: str, **query: str) -> Any:
    return call_api("GET", "/api/results", query={"jobid": job_id, **query}, tenant=tenant)


@pytest.fixture
def mixed_job(aws: Any, stores: Any, call_api: Any) -> str:
    """Four images of three visits: measured, failed, pending, and one of an unknown store."""
    job_id = submit(
        call_api,
        A,
        visit(BHARAT, [url(0), url(1)], "2026-11-28T10:15:00Z"),
        visit(ASHA, [url(2)], "2026-11-28T11:40:00+05:30"),
        visit(UNKNOWN, [url(3)], "2026-11-28T12:00:00Z"),
    )
    assert file_result(job_id, 0, measured(), attempts=1)
    error = "image download failed: HTTP 404 for https://images.example/1.jpg"
    assert file_result(job_id, 1, ImageFailure(error), attempts=1)
    return job_id


def test_every_image_in_submit_order_with_nulls_for_what_it_does_not_have(mixed_job, call_api):
    result = results(call_api, A, mixed_job)

    assert result.status_code == 200, result.body
    assert result.body == {
        "results": [
            {
                "store_id": BHARAT,
                "image_url": url(0),
                "visit_time": "2026-11-28T10:15:00Z",
                "status": "succeeded",
                "perimeter": 1908,
                "width": 550,
                "height": 404,
                "error": None,
            },
            {
                "store_id": BHARAT,
                "image_url": url(1),
                "visit_time": "2026-11-28T10:15:00Z",
                "status": "failed",
                "perimeter": None,
                "width": None,
                "height": None,
                "error": "image download failed: HTTP 404 for https://images.example/1.jpg",
            },
            {
                "store_id": ASHA,
                "image_url": url(2),
                "visit_time": "2026-11-28T06:10:00Z",
                "status": "pending",
                "perimeter": None,
                "width": None,
                "height": None,
                "error": None,
            },
            {
                "store_id": UNKNOWN,
                "image_url": url(3),
                "visit_time": "2026-11-28T12:00:00Z",
                "status": "failed",
                "perimeter": None,
                "width": None,
                "height": None,
                "error": "store_id not found in store master",
            },
        ]
    }
    # One read of the job (whose is it?), one Query of its image records by the table's
    # keys, and, since one image of the page (the pending one) has no record yet, one Query
    # of the manifest slices that hold it: its URL and time come from there.
    requests = usage.summary()["requests"]
    assert {k: v for k, v in requests.items() if k.startswith("dynamodb.")} == {
        "dynamodb.GetItem": 1,
        "dynamodb.Query": 2,
    }
    # A page whose images all have their record (both filed) reads no manifest.
    filed = results(call_api, A, mixed_job, limit="2")
    assert [row["status"] for row in filed.body["results"]] == ["succeeded", "failed"]
    requests = usage.summary()["requests"]
    assert {k: v for k, v in requests.items() if k.startswith("dynamodb.")} == {
        "dynamodb.GetItem": 1,
        "dynamodb.Query": 1,
    }


def test_another_clients_job_and_an_unknown_one_are_both_400_with_an_empty_object(
    mixed_job, call_api
):
    other = results(call_api, B, mixed_job)
    keyless = results(call_api, None, mixed_job)
    unknown = results(call_api, A, "no-such-job")
    huge = results(call_api, A, "x" * 5000)

    for answer in (other, keyless, unknown, huge):
        assert (answer.status_code, answer.body) == (400, {})
    assert other.raw["body"] == unknown.raw["body"]
    assert results(call_api, B, mixed_job, format="csv").body == {}


def test_jobid_is_required_and_limit_and_format_are_checked(aws, call_api):
    missing = call_api("GET", "/api/results", tenant=A)
    assert missing.status_code == 400 and "jobid" in missing.body["error"]
    for query in ({"limit": "0"}, {"limit": "1001"}, {"format": "xml"}):
        result = results(call_api, A, "any", **query)
        assert result.status_code == 400 and "error" in result.body, (query, result.body)


def test_pages_in_submit_order_with_a_token_only_when_more_exist(aws, stores, call_api):
    job_id = submit(call_api, A, visit(BHARAT, [url(n) for n in range(5)]))
    seen, token, pages = [], None, 0
    while True:
        query = {"limit": "2", **({"next": token} if token else {})}
        body = results(call_api, A, job_id, **query).body
        seen += [row["image_url"] for row in body["results"]]
        pages += 1
        token = body.get("next")
        if token is None:
            break
    assert seen == [url(n) for n in range(5)]
    assert pages == 3
    exact = results(call_api, A, job_id, limit="5").body
    assert len(exact["results"]) == 5 and "next" not in exact


def test_tokens_are_bound_to_the_client_and_the_job_and_cannot_be_altered(aws, stores, call_api):
    mine = submit(call_api, A, visit(BHARAT, [url(n) for n in range(3)]))
    also_mine = submit(call_api, A, visit(BHARAT, [url(n) for n in range(3)]))
    theirs = submit(call_api, B, visit(BHARAT, [url(n) for n in range(3)]))
    token = results(call_api, A, mine, limit="1").body["next"]
    body, mac = token.split(".")

    other_client = results(call_api, B, theirs, limit="1", next=token)
    other_job = results(call_api, A, also_mine, limit="1", next=token)
    altered = results(call_api, A, mine, next=f"{body[:-2]}AA.{mac}")
    garbage = results(call_api, A, mine, next="x.y.z")

    for result in (other_client, altered, garbage):
        assert result.status_code == 400 and "next token is not valid" in result.body["error"]
    assert other_job.status_code == 400 and "different job" in other_job.body["error"]
    follow = results(call_api, A, mine, limit="1", next=token).body
    assert [row["image_url"] for row in follow["results"]] == [url(1)]


def test_csv_has_a_header_row_and_the_next_token_in_a_header(mixed_job, call_api):
    first = results(call_api, A, mixed_job, format="csv", limit="3")

    assert first.status_code == 200
    assert first.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert first.headers["X-Content-Type-Options"] == "nosniff"
    assert first.headers["Cache-Control"] == "no-store"
    lines = first.body.split("\r\n")
    assert lines[0] == HEADER
    assert lines[1] == f"{BHARAT},{url(0)},2026-11-28T10:15:00Z,succeeded,1908,550,404,"
    assert lines[3] == f"{ASHA},{url(2)},2026-11-28T06:10:00Z,pending,,,,"
    assert len(lines) == 5 and lines[4] == ""  # header, three rows, the final CRLF
    token = first.headers["Retail-Pulse-Next"]

    second = results(call_api, A, mixed_job, format="csv", limit="3", next=token)

    rows = list(csv.DictReader(io.StringIO(second.body)))
    assert [row["store_id"] for row in rows] == [UNKNOWN]
    assert rows[0]["error"] == "store_id not found in store master"
    assert "Retail-Pulse-Next" not in second.headers
    # The same token works for JSON: the format may change between pages.
    as_json = results(call_api, A, mixed_job, limit="3", next=token).body
    assert [row["store_id"] for row in as_json["results"]] == [UNKNOWN]


def test_csv_quotes_what_needs_quoting(aws, stores, call_api):
    job_id = submit(call_api, A, visit(BHARAT, ["https://images.example/a,b.jpg"]))
    error = 'image download failed: HTTP 404, "not found"'
    assert file_result(job_id, 0, ImageFailure(error), attempts=2)

    body = results(call_api, A, job_id, format="csv").body

    (row,) = list(csv.DictReader(io.StringIO(body)))
    assert row["image_url"] == "https://images.example/a,b.jpg"
    assert row["error"] == error
