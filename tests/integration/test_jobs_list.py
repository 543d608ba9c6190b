"""GET /api/jobs: the caller's jobs only, newest first, by status, page by page with signed
tokens, from the TenantJobs index (never a scan, nothing read to be filtered out)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from retail_pulse.data.models import JobRecord
from retail_pulse.domain import ImageFailure, ImageSuccess
from retail_pulse.jobs.process import finish_job
from retail_pulse.metering import usage
from retail_pulse.timestamps import parse_timestamp
from retail_pulse_admin.backfill import backfill
from tests.integration.conftest import job, visit
from tests.support.filing import file_result

A, B = "keyidaaaa1", "keyidbbbb2"  # API key ids, as API Gateway writes them
URL = "https://images.example/a.jpg"
KNOWN, UNKNOWN = "S00339218", "S99999999"


def submit(call_api: Any, tenant: str | None, store: str = KNOWN, images: int = 1) -> str:
    result = call_api("POST", "/api/submit/", body=job(visit(store, [URL] * images)), tenant=tenant)
    assert result.status_code == 201, result.body
    return str(result.body["job_id"])


def complete(job_id: str, images: int = 1) -> None:
    for index in range(images):
        outcome = ImageSuccess(perimeter=4, width=1, height=1, store_id=KNOWN, area="710006")
        assert file_result(job_id, index, outcome, attempts=1)
    finish_job(job_id)


def fail(job_id: str) -> None:
    assert file_result(job_id, 0, ImageFailure("image download failed: HTTP 404"), 1)
    finish_job(job_id)


def listed(call_api: Any, tenant: str | None, **query: str) -> Any:
    result = call_api("GET", "/api/jobs", query=query or None, tenant=tenant)
    assert result.status_code == 200, result.body
    return result.body


def ids(body: dict[str, Any]) -> list[str]:
    return [entry["job_id"] for entry in body["jobs"]]


def every_page(call_api: Any, tenant: str | None, **query: str) -> list[list[str]]:
    pages, token = [], None
    while True:
        body = listed(call_api, tenant, **query, **({"next": token} if token else {}))
        pages.append(ids(body))
        token = body.get("next")
        if token is None:
            return pages


def test_a_client_lists_its_own_jobs_newest_first_with_status_and_progress(aws, stores, call_api):
    first = submit(call_api, A, images=2)
    second = submit(call_api, A)
    theirs = submit(call_api, B)
    keyless = submit(call_api, None)
    complete(second)

    mine = listed(call_api, A)

    assert ids(mine) == [second, first]
    assert "next" not in mine
    newest, oldest = mine["jobs"]
    assert newest["status"] == "completed"
    assert newest["progress"] == {"total": 1, "succeeded": 1, "failed": 0}
    assert parse_timestamp(newest["finished_at"]) >= parse_timestamp(newest["created_at"])
    assert oldest == {
        "job_id": first,
        "status": "ongoing",
        "created_at": oldest["created_at"],
        "finished_at": None,
        "progress": {"total": 2, "succeeded": 0, "failed": 0},
    }
    assert abs(parse_timestamp(oldest["created_at"]) - datetime.now(UTC)) < timedelta(minutes=1)
    assert ids(listed(call_api, B)) == [theirs]
    assert ids(listed(call_api, None)) == [keyless]


def test_the_status_filter_reads_only_jobs_of_that_status(aws, stores, call_api):
    ongoing = submit(call_api, A)
    completed = submit(call_api, A)
    failed = submit(call_api, A)
    unknown_store = submit(call_api, A, store=UNKNOWN)  # failed at submit: no image queued
    complete(completed)
    fail(failed)
    submit(call_api, B)

    assert ids(listed(call_api, A, status="ongoing")) == [ongoing]
    assert ids(listed(call_api, A, status="completed")) == [completed]
    assert ids(listed(call_api, A, status="failed")) == [unknown_store, failed]
    assert ids(listed(call_api, A)) == [unknown_store, failed, completed, ongoing]
    # One Query of the one partition and one BatchGetItem of what it found: no scan.
    listed(call_api, A, status="failed", limit="1")
    requests = usage.summary()["requests"]
    assert {k: v for k, v in requests.items() if k.startswith("dynamodb.")} == {
        "dynamodb.Query": 1,
        "dynamodb.BatchGetItem": 1,
    }


def test_pages_follow_each_other_with_no_job_twice_or_missed(aws, stores, call_api):
    made = [submit(call_api, A) for _ in range(7)]
    for job_id in made[1::3]:
        complete(job_id)
    fail(made[2])

    pages = every_page(call_api, A, limit="3")

    assert [len(page) for page in pages] == [3, 3, 1]
    assert [job_id for page in pages for job_id in page] == made[::-1]
    completed = every_page(call_api, A, status="completed", limit="1")
    assert completed == [[made[4]], [made[1]]]


def test_a_job_that_finishes_between_two_pages_is_shown_once(aws, stores, call_api):
    made = [submit(call_api, A) for _ in range(4)]
    first = listed(call_api, A, limit="2")
    assert ids(first) == [made[3], made[2]]

    complete(made[3])  # already shown: moves to "completed", at the same place in the list
    complete(made[1])  # not shown yet: still shown once, with its new status
    second = listed(call_api, A, limit="2", next=first["next"])

    assert ids(second) == [made[1], made[0]]
    assert [entry["status"] for entry in second["jobs"]] == ["completed", "ongoing"]
    assert "next" not in second


def test_limit_defaults_to_20_and_is_1_to_100(aws, stores, call_api):
    made = [submit(call_api, A) for _ in range(21)]
    body = listed(call_api, A)
    assert ids(body) == made[::-1][:20] and "next" in body
    for bad in ("0", "101", "ten"):
        result = call_api("GET", "/api/jobs", query={"limit": bad}, tenant=A)
        assert result.status_code == 400 and "limit" in result.body["error"], result.body


def test_an_unknown_status_is_400_naming_the_known_ones(aws, call_api):
    result = call_api("GET", "/api/jobs", query={"status": "done"}, tenant=A)
    assert result.status_code == 400
    assert "status" in result.body["error"] and "'completed'" in result.body["error"]


def test_tokens_are_bound_to_the_client_and_the_query_and_cannot_be_altered(aws, stores, call_api):
    for _ in range(3):
        submit(call_api, A)
        submit(call_api, B)
    token = listed(call_api, A, limit="1")["next"]
    body, mac = token.split(".")

    replayed = call_api("GET", "/api/jobs", query={"limit": "1", "next": token}, tenant=B)
    altered = call_api("GET", "/api/jobs", query={"next": f"{body[:-2]}AA.{mac}"}, tenant=A)
    other_query = call_api("GET", "/api/jobs", query={"status": "ongoing", "next": token}, tenant=A)
    garbage = call_api("GET", "/api/jobs", query={"next": "not a token"}, tenant=A)

    for result in (replayed, altered, garbage):
        assert result.status_code == 400 and "next token is not valid" in result.body["error"]
    assert other_query.status_code == 400
    assert "different query" in other_query.body["error"]
    assert listed(call_api, A, limit="1", next=token)["jobs"]


def test_a_visits_token_is_no_jobs_token(aws, stores, call_api):
    from retail_pulse.data.secrets import page_token_key
    from retail_pulse.visits.query import Cursor, VisitFilter, encode_token

    visits_token = encode_token(
        VisitFilter(store_id=KNOWN),
        Cursor(KNOWN, "2026-11-28T10:15:00Z#j#00000"),
        page_token_key(),
    )
    result = call_api("GET", "/api/jobs", query={"next": visits_token})
    assert result.status_code == 400 and "not valid" in result.body["error"]


def test_jobs_written_before_the_list_join_it_through_the_backfill(aws, stores, call_api):
    """A job without `tenant` (the first version) and one of a client written before the
    index existed: absent from the list until the one-off backfill, then listed for their
    own client only, with their status, and given an expiry."""
    created = datetime(2026, 11, 28, 10, 15, tzinfo=UTC)
    JobRecord(
        job_id="legacy-default",
        total=1,
        succeeded=1,
        failed=0,
        visit_count=1,
        created_at=created,
        finished_at=created,
    ).save()
    JobRecord(
        job_id="legacy-a",
        tenant=A,
        total=2,
        succeeded=0,
        failed=0,
        visit_count=1,
        created_at=created + timedelta(seconds=1),
    ).save()
    current = submit(call_api, A)
    assert ids(listed(call_api, None)) == []

    report = backfill()

    assert (report.jobs_listed, report.jobs_expiring) == (2, 2)
    assert ids(listed(call_api, None, status="completed")) == ["legacy-default"]
    assert ids(listed(call_api, A)) == [current, "legacy-a"]
    assert ids(listed(call_api, A, status="ongoing")) == [current, "legacy-a"]
    assert JobRecord.get("legacy-default").tenant == "default"
    assert JobRecord.get("legacy-a").expires_at > datetime.now(UTC) + timedelta(days=89)
    assert backfill().jobs_listed == 0  # nothing left to do: safe to run again


def test_an_empty_status_is_no_filter(aws, stores, call_api):
    made = [submit(call_api, A), submit(call_api, A, store=UNKNOWN)]
    assert ids(listed(call_api, A, status="")) == made[::-1]
