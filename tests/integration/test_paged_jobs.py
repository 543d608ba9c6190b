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
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from retail_pulse.data.models import JobRecord, connection
from retail_pulse.data.recount import recount_job
from retail_pulse.jobs import ingest as ingest_use_case
from retail_pulse.jobs.reconcile import reconcile
from retail_pulse.settings import get_settings
from tests.integration.conftest import job, visit
from tests.integration.test_ingest import body_of, image_indexes, submitted_upload
from tests.support.handlers import FakeContext, load_handler
from tests.support.pipeline import Pipeline, age_job, assert_accounted, run_ingest_queue
from tests.support.races import Budget

BHARAT = "S00339218"
PAGE = 4
SOFT = timedelta(seconds=900 + 60)  # RECONCILE_AFTER_S, and a minute
HARD = timedelta(hours=2, minutes=1)  # JOB_HARD_DEADLINE_S, and a minute

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


class DiesAt:
    """An invocation's clock (seconds left) that dies at its `checks`-th look (the look
    between two pages), if `checks` is given."""

    def __init__(self, checks: int | None = None, seconds_left: float = 300.0) -> None:
        self.checks = checks
        self.seconds_left = seconds_left
        self.looked = 0

    def __call__(self) -> float:
        self.looked += 1
        if self.checks is not None and self.looked >= self.checks:
            raise InvocationDied
        return self.seconds_left


class DiesAfter(FakeContext):
    """An ingest function invocation with its 15 minutes, whose clock is DiesAt's."""

    def __init__(self, checks: int | None = None) -> None:
        super().__init__()
        self.clock = DiesAt(checks, seconds_left=900.0)

    def get_remaining_time_in_millis(self) -> int:
        return int(self.clock() * 1000)


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


def lease_ran_out(job_id: str) -> None:
    """The dead invocation's ingest lease has run out, as if its minutes had passed."""
    connection().client.update_item(
        TableName=get_settings().jobs_table,
        Key={"job_id": {"S": job_id}},
        UpdateExpression="SET ingest_lease_until = :past",
        ExpressionAttributeValues={":past": {"N": "0"}},
    )


def lost_job(call_api: Any, aws: Any, image_server: Any, images: int = 10) -> str:
    """A job whose image messages were all lost (a queue or poller dropped them)."""
    urls = [image_server.url(f"/img/{100 + i}x50.jpg") for i in range(images)]
    result = call_api("POST", "/api/submit/", body=job(visit(BHARAT, urls)))
    assert result.status_code == 201, result.body
    aws.queued_messages()
    return str(result.body["job_id"])


def test_a_stuck_job_is_requeued_page_by_page_each_image_once(aws, call_api, image_server):
    job_id = lost_job(call_api, aws, image_server)
    age_job(job_id, created_ago=SOFT)
    pipeline = Pipeline(aws)

    # The pass requeues the first page, then dies before the second.
    with pytest.raises(InvocationDied):
        reconcile(time_left_s=DiesAt(checks=2))
    first = pipeline.receive()
    assert indexes(first) == Counter(range(PAGE))

    report = reconcile(time_left_s=DiesAt())  # the next pass goes on where it stopped
    rest = pipeline.receive()
    assert indexes(rest) == Counter(range(PAGE, 10))
    assert (report.stuck_jobs, report.requeued_images, report.sweeps_left) == (1, 6, 0)
    assert reconcile().requeued_images == 0  # over: the next waits a whole soft deadline

    pipeline.drain(first + rest)
    assert assert_accounted(job_id).succeeded == 10


def test_a_pass_out_of_time_leaves_the_rest_of_a_sweep_to_the_next(aws, call_api, image_server):
    job_id = lost_job(call_api, aws, image_server)
    age_job(job_id, created_ago=SOFT)

    tight = reconcile(time_left_s=lambda: 10.0)  # under the pass's reserve from the start

    assert tight.out_of_time and tight.requeued_images == 0
    first = reconcile(time_left_s=Budget(calls=1))  # a visit and its first page
    assert (first.requeued_images, first.sweeps_left) == (PAGE, 1)
    assert reconcile().requeued_images == 10 - PAGE
    assert indexes(Pipeline(aws).receive()) == Counter(range(10))


def test_an_expired_job_fails_page_by_page_and_ends_once(aws, call_api, image_server):
    job_id = lost_job(call_api, aws, image_server)
    age_job(job_id, created_ago=HARD)

    with pytest.raises(InvocationDied):
        reconcile(time_left_s=DiesAt(checks=2))
    half = JobRecord.get(job_id, consistent_read=True)
    assert (half.failed, half.finished_at) == (PAGE, None)

    report = reconcile()

    assert (report.expired_jobs, report.expired_images) == (1, 10 - PAGE)
    record = assert_accounted(job_id)
    assert (record.succeeded, record.failed) == (0, 10)
    assert call_api("GET", "/api/status", query={"jobid": job_id}).body["status"] == "failed"


def test_a_cancelled_jobs_unprocessed_images_are_filed_page_by_page(aws, call_api, image_server):
    job_id = lost_job(call_api, aws, image_server)
    assert call_api("POST", "/api/cancel", query={"jobid": job_id}).status_code == 200
    age_job(job_id, created_ago=SOFT)

    with pytest.raises(InvocationDied):
        reconcile(time_left_s=DiesAt(checks=2))
    assert JobRecord.get(job_id, consistent_read=True).cancelled == PAGE

    assert reconcile().cancelled_images == 10 - PAGE
    record = assert_accounted(job_id)
    assert record.cancelled == 10


def test_a_retry_whose_message_was_lost_is_handed_on_again(aws, call_api, image_server):
    job_id = failed_job(call_api, image_server)
    pipeline = Pipeline(aws)
    pipeline.drain()
    assert call_api("POST", "/api/retry", query={"jobid": job_id}).status_code == 200
    pipeline.drain(pipeline.receive())
    aws.sqs.purge_queue(QueueUrl=aws.ingest_url)  # the retry's message is lost

    assert reconcile().retries_resent == 0  # its cursor moved a moment ago
    later = reconcile(now=datetime.now(UTC) + SOFT)

    assert later.retries_resent == 1
    assert deliver_ingest_queue(aws, DiesAfter()) == ["retry"]
    assert indexes(pipeline.receive()) == Counter(range(PAGE, 10))
    assert JobRecord.get(job_id, consistent_read=True).retry_next is None


def test_an_ingest_whose_message_was_lost_goes_on_where_it_stopped(aws, call_api, monkeypatch):
    job_id = submitted_upload(call_api, body_of(2_500))
    real_enqueue = ingest_use_case.enqueue_images
    sent: list[int] = []

    def enqueue_then_die(messages: list[Any], express: bool) -> None:
        if sent:
            raise InvocationDied  # the second chunk: the invocation ends here
        real_enqueue(messages, express)
        sent.append(len(messages))

    monkeypatch.setattr(ingest_use_case, "enqueue_images", enqueue_then_die)
    [message] = aws.sqs.receive_message(QueueUrl=aws.ingest_url)["Messages"]
    with pytest.raises(InvocationDied):
        load_handler("ingest").lambda_handler(
            {"Records": [{"messageId": "m1", "body": message["Body"]}]}, DiesAfter()
        )
    monkeypatch.setattr(ingest_use_case, "enqueue_images", real_enqueue)
    aws.sqs.purge_queue(QueueUrl=aws.ingest_url)  # its message is lost (or dead-lettered)
    assert image_indexes(aws) == Counter(range(1_000))

    # While its lease runs (the invocation might still be reading), nothing is sent.
    assert reconcile(now=datetime.now(UTC) + timedelta(minutes=5)).ingests_resent == 0
    lease_ran_out(job_id)
    report = reconcile(now=datetime.now(UTC) + SOFT)

    assert report.ingests_resent == 1
    assert report.stuck_jobs == 0  # nothing requeued or expired while it is read
    assert run_ingest_queue(aws) == 1
    assert image_indexes(aws) == Counter(range(1_000, 2_500))
    assert JobRecord.get(job_id, consistent_read=True).ingesting is None


def lost_count(call_api: Any, aws: Any, image_server: Any) -> tuple[str, list[Any]]:
    """A job of 10 whose first 8 images succeeded but whose counter lost 3 of them (a
    filing gone when it closed, marked for a recount); its last 2 deliveries, unprocessed."""
    urls = [image_server.url(f"/img/{100 + i}x50.jpg") for i in range(10)]
    result = call_api("POST", "/api/submit/", body=job(visit(BHARAT, urls)))
    assert result.status_code == 201, result.body
    job_id = str(result.body["job_id"])
    pipeline = Pipeline(aws)
    deliveries = pipeline.receive()
    index = {json.loads(d.body)["image_index"]: d for d in deliveries}
    pipeline.drain([index[i] for i in range(8)])
    connection().client.update_item(
        TableName=get_settings().jobs_table,
        Key={"job_id": {"S": job_id}},
        UpdateExpression="SET succeeded = :lost, recount_due = :now",
        ExpressionAttributeValues={":lost": {"N": "5"}, ":now": {"S": "2026-12-07T00:00:00"}},
    )
    age_job(job_id, created_ago=SOFT, progressed_ago=timedelta(0))
    return job_id, [index[8], index[9]]


def test_a_recount_goes_page_by_page_and_a_death_between_pages_counts_nothing_twice(
    aws, call_api, image_server
):
    job_id, rest = lost_count(call_api, aws, image_server)

    # The pass's look at its clock before the job, before page one, then it dies before two.
    with pytest.raises(InvocationDied):
        reconcile(time_left_s=DiesAt(checks=3))
    half = JobRecord.get(job_id, consistent_read=True)
    assert half.succeeded == 5  # not corrected before the whole recount is over
    item = connection().client.get_item(
        TableName=get_settings().jobs_table, Key={"job_id": {"S": job_id}}, ConsistentRead=True
    )["Item"]
    assert (item["recount_next"]["N"], item["recount_succeeded"]["N"]) == (str(PAGE), str(PAGE))

    report = reconcile(time_left_s=DiesAt())  # goes on from page two

    assert (report.recounted_jobs, report.recount_correction) == (1, 3)
    assert JobRecord.get(job_id, consistent_read=True).succeeded == 8
    assert reconcile().recounted_jobs == 0  # its mark is off: nothing more to repair
    Pipeline(aws).drain(rest)
    record = assert_accounted(job_id)
    assert (record.succeeded, record.failed) == (10, 0)


def test_a_recount_whose_job_moves_between_pages_begins_again(aws, call_api, image_server):
    job_id, rest = lost_count(call_api, aws, image_server)
    looks = 0

    def an_image_filed_between_pages() -> bool:
        nonlocal looks
        looks += 1
        if looks == 2:  # after page one: image 9 filed, the job's books move
            Pipeline(aws).drain([rest[1]])
        return False

    assert recount_job(job_id, an_image_filed_between_pages) is None
    assert JobRecord.get(job_id, consistent_read=True).succeeded == 6  # left as it was

    assert recount_job(job_id) == 3  # from the first page again: 9 final records
    assert JobRecord.get(job_id, consistent_read=True).succeeded == 9
    Pipeline(aws).drain([rest[0]])
    record = assert_accounted(job_id)
    assert (record.succeeded, record.failed) == (10, 0)
