"""A job too large for one invocation to go through whole (up to 1,000,000 images): retry,
the reconciler's requeue, expiry, cancel and recount go JOB_PAGE_IMAGES at a time, keep
their place on the job and go on in the next invocation. Here pages of 4 images, so jobs of
10 are 2.5 pages: each image is re-run, requeued or filed exactly once across invocations,
also when an invocation dies between two pages."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from retail_pulse.data.models import JobRecord
from retail_pulse.settings import get_settings
from tests.integration.conftest import job, visit
from tests.support.handlers import FakeContext, load_handler
from tests.support.pipeline import Pipeline, assert_accounted

BHARAT = "S00339218"
PAGE = 4

pytestmark = pytest.mark.usefixtures("stores", "no_gpu_pause", "small_pages")


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("JOB_PAGE_IMAGES", str(PAGE))
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


class InvocationDied(Exception):
    """Lambda ended the invocation (timeout, out of memory) at this point."""


class DiesAfter(FakeContext):
    """An invocation with the ingest function's 15 minutes that dies at its `checks`-th
    look at the clock (the look between two pages), if `checks` is given."""

    def __init__(self, checks: int | None = None) -> None:
        super().__init__()
        self.checks = checks
        self.looked = 0

    def get_remaining_time_in_millis(self) -> int:
        self.looked += 1
        if self.checks is not None and self.looked >= self.checks:
            raise InvocationDied
        return 900_000


def deliver_ingest_queue(aws: Any, context: FakeContext) -> list[str]:
    """Every message on IngestQueue to the ingest function, once; a message whose invocation
    died stays on the queue (it comes back). Returns the kinds delivered."""
    handler = load_handler("ingest").lambda_handler
    kinds = []
    for message in aws.sqs.receive_message(QueueUrl=aws.ingest_url, MaxNumberOfMessages=10).get(
        "Messages", []
    ):
        kinds.append(json.loads(message["Body"]).get("kind", "ingest"))
        event = {"Records": [{"messageId": message["MessageId"], "body": message["Body"]}]}
        try:
            handler(event, context)
        except InvocationDied:
            aws.sqs.change_message_visibility(
                QueueUrl=aws.ingest_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )
            continue
        aws.sqs.delete_message(QueueUrl=aws.ingest_url, ReceiptHandle=message["ReceiptHandle"])
    return kinds


def indexes(deliveries: list[Any]) -> Counter[int]:
    return Counter(json.loads(d.body)["image_index"] for d in deliveries)


def failed_job(call_api: Any, image_server: Any, images: int = 10) -> str:
    """A job whose every image failed (its host answered 503 past the attempts), and whose
    images succeed when run again."""
    run = uuid.uuid4().hex[:8]
    urls = [image_server.url(f"/flaky/paged-{run}-{i}/6/64x48.jpg") for i in range(images)]
    result = call_api("POST", "/api/submit/", body=job(visit(BHARAT, urls)))
    assert result.status_code == 201, result.body
    return str(result.body["job_id"])


def test_a_retry_of_many_pages_reruns_each_failed_image_once_across_invocations(
    aws, call_api, image_server
):
    job_id = failed_job(call_api, image_server)
    pipeline = Pipeline(aws)
    pipeline.drain()
    failed = call_api("GET", "/api/status", query={"jobid": job_id}).body
    assert failed["progress"] == {"total": 10, "succeeded": 0, "failed": 10}

    result = call_api("POST", "/api/retry", query={"jobid": job_id})

    # The first page at once; the rest handed on, and the job not done meanwhile.
    assert result.status_code == 200, result.body
    assert result.body["status"] == "ongoing"
    assert result.body["progress"] == {"total": 10, "succeeded": 0, "failed": 6}
    first = pipeline.receive()
    assert indexes(first) == Counter(range(PAGE))
    assert JobRecord.get(job_id).retry_next == PAGE
    # Its images all succeed before the other pages are reopened: still ongoing.
    pipeline.drain(first)
    between = call_api("GET", "/api/status", query={"jobid": job_id}).body
    assert between["status"] == "ongoing"
    assert between["progress"] == {"total": 10, "succeeded": 4, "failed": 6}

    # The ingest function reopens the second page, then dies before the third.
    assert deliver_ingest_queue(aws, DiesAfter(checks=2)) == ["retry"]
    second = pipeline.receive()
    assert indexes(second) == Counter(range(PAGE, 2 * PAGE))
    assert JobRecord.get(job_id).retry_next == 2 * PAGE
    # Its message comes back: the third page, from where the second left off.
    assert deliver_ingest_queue(aws, DiesAfter()) == ["retry"]
    third = pipeline.receive()
    assert indexes(third) == Counter(range(2 * PAGE, 10))
    assert JobRecord.get(job_id).retry_next is None
    # Nothing is left to hand on, and a duplicate of the message reopens nothing more.
    assert deliver_ingest_queue(aws, DiesAfter()) == []

    pipeline.drain(second + third)
    assert call_api("GET", "/api/status", query={"jobid": job_id}).body == {
        "status": "completed",
        "job_id": job_id,
        "progress": {"total": 10, "succeeded": 10, "failed": 0},
    }
    assert_accounted(job_id)


def test_a_job_cancelled_between_retry_pages_keeps_the_rest_failed_and_ends(
    aws, call_api, image_server
):
    job_id = failed_job(call_api, image_server)
    pipeline = Pipeline(aws)
    pipeline.drain()
    assert call_api("POST", "/api/retry", query={"jobid": job_id}).status_code == 200
    pipeline.drain(pipeline.receive())

    cancelled = call_api("POST", "/api/cancel", query={"jobid": job_id})
    assert cancelled.status_code == 200, cancelled.body
    assert deliver_ingest_queue(aws, DiesAfter()) == ["retry"]

    assert pipeline.receive() == []  # no page after the cancel is reopened
    record = assert_accounted(job_id)
    assert record.retry_next is None
    assert (record.succeeded, record.failed) == (4, 6)
    assert call_api("GET", "/api/status", query={"jobid": job_id}).body["status"] == "cancelled"
