"""RetailPulseClient against a scripted API on 127.0.0.1: retries, errors, paging, waiting."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest
from fake_api import CSV_TYPE, FakeApi, FakeJobs, fake_api

from retail_pulse_client import (
    ApiError,
    ClientError,
    Conflict,
    RetailPulseClient,
    ServiceUnavailable,
    UnknownJob,
)

JOB = {
    "count": 1,
    "visits": [{"store_id": "S1", "image_url": ["http://x/a.jpg"], "visit_time": "t"}],
}


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with fake_api() as server:
        yield server


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(api: FakeApi, sleeps: list[float]) -> Iterator[RetailPulseClient]:
    with RetailPulseClient(api.base_url, timeout=5, sleep=sleeps.append) as made:
        yield made


def status_body(state: str, done: int = 0, total: int = 4, **extra: object) -> dict:
    return {
        "status": state,
        "job_id": "j1",
        "progress": {"total": total, "succeeded": done, "failed": 0},
        **extra,
    }


def test_submit_outlasts_503_and_429_and_sends_one_idempotency_key(
    api: FakeApi, client: RetailPulseClient, sleeps: list[float]
) -> None:
    api.on(
        "POST",
        "/api/submit/",
        (503, {"message": "Service Unavailable"}),
        (429, {"message": "Too Many Requests"}),
        (201, {"job_id": "j1"}),
    )

    assert client.submit(JOB) == "j1"

    sent = api.sent("POST", "/api/submit/")
    assert len(sent) == 3
    keys = {request.headers["idempotency-key"] for request in sent}
    assert len(keys) == 1, "a retried submit must carry the key of its first try"
    uuid.UUID(keys.pop())  # generated, and a real UUID
    assert all(request.body == JOB for request in sent)
    assert len(sleeps) == 2


def test_each_submit_gets_its_own_key_unless_one_is_given(
    api: FakeApi, client: RetailPulseClient
) -> None:
    api.on("POST", "/api/submit/", (201, {"job_id": "j1"}))

    client.submit(JOB)
    client.submit(JOB)
    client.submit(JOB, idempotency_key="my-key")

    keys = [r.headers["idempotency-key"] for r in api.sent("POST", "/api/submit/")]
    assert keys[0] != keys[1]
    assert keys[2] == "my-key"


def test_a_400_is_not_retried_and_carries_the_servers_words(
    api: FakeApi, client: RetailPulseClient, sleeps: list[float]
) -> None:
    api.on("POST", "/api/submit/", (400, {"error": "count is 2 but visits has 1 entries"}))

    with pytest.raises(ApiError) as raised:
        client.submit(JOB)

    assert raised.value.status_code == 400
    assert str(raised.value) == "count is 2 but visits has 1 entries"
    assert len(api.sent("POST", "/api/submit/")) == 1
    assert sleeps == []


def test_retries_are_bounded_and_backoff_is_capped(api: FakeApi, sleeps: list[float]) -> None:
    api.on("GET", "/api/status", (503, {"message": "down"}))
    client = RetailPulseClient(
        api.base_url, max_attempts=4, backoff_base=1.0, backoff_cap=2.0, sleep=sleeps.append
    )

    with pytest.raises(ApiError) as raised:
        client.status("j1")

    assert raised.value.status_code == 503
    assert "gave up after 4 attempts" in str(raised.value)
    assert len(api.sent("GET", "/api/status")) == 4
    assert len(sleeps) == 3
    assert all(0 <= pause <= 2.0 for pause in sleeps)


def test_retry_after_is_honoured(
    api: FakeApi, client: RetailPulseClient, sleeps: list[float]
) -> None:
    api.on("GET", "/api/status", (429, {}, {"Retry-After": "3"}), (200, status_body("ongoing")))

    client.status("j1")

    assert sleeps == [3.0]


def test_an_unreachable_api_is_reported_after_the_retries(sleeps: list[float]) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = RetailPulseClient(f"http://127.0.0.1:{port}", max_attempts=3, sleep=sleeps.append)

    with pytest.raises(ServiceUnavailable, match=f"127.0.0.1:{port} after 3 attempts"):
        client.status("j1")
    assert len(sleeps) == 2


def test_status_reads_progress_and_store_errors(api: FakeApi, client: RetailPulseClient) -> None:
    api.on(
        "GET",
        "/api/status",
        (
            200,
            {
                "status": "failed",
                "job_id": "j1",
                "error": [{"store_id": "S2", "error": "image download failed: HTTP 404"}],
                "progress": {"total": 3, "succeeded": 2, "failed": 1},
                "some_future_field": True,
            },
        ),
    )

    status = client.status("j1")

    assert status.finished and status.status == "failed"
    assert status.progress is not None and status.progress.done == 3
    assert [(e.store_id, e.error) for e in status.errors] == [
        ("S2", "image download failed: HTTP 404")
    ]
    assert api.sent("GET", "/api/status")[0].query == {"jobid": "j1"}


def test_an_unknown_job_is_its_own_error(api: FakeApi, client: RetailPulseClient) -> None:
    api.on("GET", "/api/status", (400, {}))

    with pytest.raises(UnknownJob, match="no job with id 'nope'"):
        client.status("nope")


def test_wait_polls_until_the_job_ends_backing_off_to_a_cap(
    api: FakeApi, client: RetailPulseClient, sleeps: list[float]
) -> None:
    api.on(
        "GET",
        "/api/status",
        *[(200, status_body("ongoing", done)) for done in (0, 1, 1, 2, 3, 3)],
        (200, status_body("completed", 4)),
    )
    seen: list[str] = []

    final = client.wait("j1", on_progress=lambda s: seen.append(s.status), poll=1.0, poll_cap=2.0)

    assert final.status == "completed"
    assert seen == ["ongoing"] * 6 + ["completed"]
    assert sleeps == sorted(sleeps) and sleeps[0] == 1.0 and max(sleeps) == 2.0


def test_visits_follow_next_to_the_last_page(api: FakeApi, client: RetailPulseClient) -> None:
    def page(store: str, token: str | None) -> dict:
        body: dict = {
            "results": [
                {
                    "store_id": store,
                    "area": "710006",
                    "store_name": f"Store {store}",
                    "data": [{"date": "2026-11-28T10:15:00Z", "perimeter": 1908}],
                }
            ]
        }
        if token:
            body["next"] = token
        return body

    api.on("GET", "/api/visits", (200, page("S1", "p2")), (200, page("S2", "p3")))
    api.on("GET", "/api/visits", (200, page("S3", None)))

    results = list(
        client.visits(
            area="710006", start="2026-11-28T00:00:00Z", end="2026-11-29T00:00:00Z", limit=1
        )
    )

    assert [r.store_id for r in results] == ["S1", "S2", "S3"]
    assert results[0].data[0].perimeter == 1908
    queries = [r.query for r in api.sent("GET", "/api/visits")]
    assert [q.get("next") for q in queries] == [None, "p2", "p3"]
    assert all(
        q["area"] == "710006"
        and q["startdate"] == "2026-11-28T00:00:00Z"
        and q["enddate"] == "2026-11-29T00:00:00Z"
        and q["limit"] == "1"
        for q in queries
    )


def test_a_visits_filter_the_server_rejects_raises(api: FakeApi, client: RetailPulseClient) -> None:
    api.on("GET", "/api/visits", (400, {"error": "no store with id 'S9'"}))

    with pytest.raises(ApiError, match="no store with id 'S9'"):
        list(client.visits(store="S9"))
    assert api.sent("GET", "/api/visits")[0].query == {"storeid": "S9"}


def test_the_api_key_header_is_sent_only_when_given(api: FakeApi) -> None:
    api.on("GET", "/api/status", (200, status_body("ongoing")))

    RetailPulseClient(api.base_url, api_key="secret").status("j1")
    RetailPulseClient(api.base_url).status("j1")

    first, second = api.sent("GET", "/api/status")
    assert first.headers["x-api-key"] == "secret"
    assert "x-api-key" not in second.headers


# -- cancel, retry, jobs, results (issue 15) ---------------------------------------------


@pytest.fixture
def service(api: FakeApi) -> FakeJobs:
    return FakeJobs(api)


def test_cancel_returns_the_cancelled_status(service: FakeJobs, client: RetailPulseClient) -> None:
    service.add("j1", ["succeeded", "pending", "pending"])

    status = client.cancel("j1")

    assert status.status == "cancelled" and status.finished
    assert status.progress is not None
    assert (status.progress.cancelled, status.progress.done, status.progress.total) == (2, 3, 3)
    assert service.api.sent("POST", "/api/cancel")[0].query == {"jobid": "j1"}


def test_a_409_is_a_conflict_with_the_servers_words_and_not_retried(
    service: FakeJobs, client: RetailPulseClient, sleeps: list[float]
) -> None:
    service.add("j1", ["succeeded"])

    with pytest.raises(Conflict, match="the job is already completed") as raised:
        client.cancel("j1")
    with pytest.raises(Conflict, match="only a failed job can be retried"):
        client.retry("j1")

    assert raised.value.status_code == 409
    assert len(service.api.sent("POST", "/api/cancel")) == 1
    assert sleeps == []


@pytest.mark.parametrize("action", ["cancel", "retry"])
def test_cancel_and_retry_of_an_unknown_job_raise_unknown_job(
    service: FakeJobs, client: RetailPulseClient, action: str
) -> None:
    with pytest.raises(UnknownJob, match="no job with id 'nope'"):
        getattr(client, action)("nope")


def test_a_cancel_whose_answer_was_lost_is_told_by_the_status(
    service: FakeJobs, client: RetailPulseClient
) -> None:
    """The first try cancelled the job and its answer was lost (a 502); the retry meets a
    409, and the job's status shows the cancel took."""
    service.add("j1", ["succeeded", "cancelled"], status="cancelled")
    service.api.on(
        "POST", "/api/cancel", (502, {"message": "Bad Gateway"}), (409, {"error": "already"})
    )

    status = client.cancel("j1")

    assert status.status == "cancelled"
    assert len(service.api.sent("POST", "/api/cancel")) == 2


def test_a_409_on_the_first_try_is_the_answer_even_for_a_cancelled_job(
    service: FakeJobs, client: RetailPulseClient
) -> None:
    service.add("j1", ["cancelled"], status="cancelled")

    with pytest.raises(Conflict, match="already cancelled"):
        client.cancel("j1")
    assert service.api.sent("GET", "/api/status") == []


def test_a_retry_whose_answer_was_lost_is_told_by_the_status(
    service: FakeJobs, client: RetailPulseClient
) -> None:
    service.add("j1", ["succeeded", "pending"])  # ongoing again: the lost first try did it
    service.api.on("POST", "/api/retry", (503, {}), (409, {"error": "job j1 is ongoing"}))

    assert client.retry("j1").status == "ongoing"


def test_retry_returns_the_job_ongoing_again(service: FakeJobs, client: RetailPulseClient) -> None:
    service.add("j1", ["succeeded", "failed"])

    status = client.retry("j1")

    assert status.status == "ongoing" and not status.finished
    assert status.progress is not None and status.progress.cancelled is None


def test_wait_ends_on_a_cancelled_job(api: FakeApi, client: RetailPulseClient) -> None:
    progress = {"total": 4, "succeeded": 1, "failed": 0, "cancelled": 3}
    api.on(
        "GET",
        "/api/status",
        (200, status_body("ongoing", 1)),
        (200, {"status": "cancelled", "job_id": "j1", "progress": progress}),
    )

    assert client.wait("j1").status == "cancelled"
    assert len(api.sent("GET", "/api/status")) == 2


def test_jobs_follow_next_with_the_same_filter(
    service: FakeJobs, client: RetailPulseClient
) -> None:
    for n in range(5):
        service.add(f"j{n}", ["failed"], created_at=f"2026-12-01T1{n}:00:00Z")
    service.add("ok", ["succeeded"])

    listed = list(client.jobs(status="failed", limit=2))

    assert [job.job_id for job in listed] == ["j4", "j3", "j2", "j1", "j0"]
    assert listed[0].finished_at == "2026-12-01T14:00:00Z" and listed[0].progress.failed == 1
    queries = [r.query for r in service.api.sent("GET", "/api/jobs")]
    assert [q.get("next") for q in queries] == [None, "tok-1", "tok-2"]
    assert all(q["status"] == "failed" and q["limit"] == "2" for q in queries)


def test_one_page_of_jobs_carries_its_next(service: FakeJobs, client: RetailPulseClient) -> None:
    service.add("a", ["pending"], created_at="2026-12-01T10:00:00Z")
    service.add("b", ["pending"], created_at="2026-12-01T11:00:00Z")

    first = client.jobs_page(limit=1)
    second = client.jobs_page(limit=1, next_token=first.next)

    assert [j.job_id for j in first.jobs] == ["b"] and first.next == "tok-1"
    assert [j.job_id for j in second.jobs] == ["a"] and second.next is None
    assert first.jobs[0].finished_at is None


def test_results_follow_next_to_the_last_page(service: FakeJobs, client: RetailPulseClient) -> None:
    service.add("j1", ["succeeded", "failed", "pending"])

    rows = list(client.results("j1", limit=1))

    assert [row.status for row in rows] == ["succeeded", "failed", "pending"]
    assert rows[0].perimeter == 300 and rows[1].perimeter is None and rows[1].error
    assert [r.query.get("next") for r in service.api.sent("GET", "/api/results")] == [
        None,
        "tok-1",
        "tok-2",
    ]


def test_results_of_an_unknown_job_raise_unknown_job(
    service: FakeJobs, client: RetailPulseClient
) -> None:
    with pytest.raises(UnknownJob, match="no job with id 'nope'"):
        list(client.results("nope"))
    with pytest.raises(UnknownJob, match="no job with id 'nope'"):
        list(client.results_csv("nope"))


def test_results_csv_gives_the_header_once_then_every_row(
    service: FakeJobs, client: RetailPulseClient
) -> None:
    service.add("j1", ["succeeded", "failed", "pending"])

    rows = list(client.results_csv("j1", limit=2))

    assert rows[0] == (
        "store_id",
        "image_url",
        "visit_time",
        "status",
        "perimeter",
        "width",
        "height",
        "error",
    )
    assert [row[3] for row in rows[1:]] == ["succeeded", "failed", "pending"]
    (second,) = [r for r in service.api.sent("GET", "/api/results") if "next" in r.query]
    assert second.query == {"jobid": "j1", "limit": "2", "format": "csv", "next": "tok-1"}


def test_results_csv_whose_columns_change_between_pages_is_an_error(
    api: FakeApi, client: RetailPulseClient
) -> None:
    api.on(
        "GET",
        "/api/results",
        (200, "a,b\r\n1,2\r\n", {"Content-Type": CSV_TYPE, "Retail-Pulse-Next": "t2"}),
        (200, "a,c\r\n3,4\r\n", {"Content-Type": CSV_TYPE}),
    )

    with pytest.raises(ClientError, match="changed its CSV columns between pages: a,b became a,c"):
        list(client.results_csv("j1"))


def test_results_csv_answered_as_json_is_an_error(api: FakeApi, client: RetailPulseClient) -> None:
    api.on("GET", "/api/results", (200, {"results": []}))

    with pytest.raises(ClientError, match="answered application/json where CSV was asked for"):
        list(client.results_csv("j1"))
