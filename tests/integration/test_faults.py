"""Nothing lost, nothing stuck, nothing counted twice: faults injected into every DynamoDB and
SQS call of submit and process, crashes, duplicate, late, out-of-order and concurrent
deliveries. Each test ends with the job terminal and its counters equal to its image records.
Process runs with batch filing (the default: one transaction per job and batch) unless a
test says otherwise; the crash test runs with both filings.

Faults are raised where botocore sends a request (`BaseClient._make_api_call`), below
PynamoDB and boto3 and above the network, as an exhausted AWS retry would surface.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from retail_pulse.data.jobs import record_outcome
from retail_pulse.data.models import SUCCEEDED, ImageRecord, JobRecord
from retail_pulse.domain import ImageSuccess
from retail_pulse.jobs.process import process_image_message
from retail_pulse.jobs.reconcile import reconcile
from retail_pulse.settings import get_settings
from tests.integration.conftest import job, visit
from tests.support.dynamodb_local import backend, backend_stores  # noqa: F401
from tests.support.pipeline import (
    Delivery,
    Pipeline,
    all_job_ids,
    assert_accounted,
    invoke_process,
)

pytestmark = pytest.mark.usefixtures("no_gpu_pause")


@dataclass
class Fault:
    """Fail the `nth` request of `operation` (on `table`, if given) with `code`."""

    operation: str
    table: str | None = None
    nth: int = 1
    code: str = "ServiceUnavailable"
    seen: int = 0
    fired: bool = False


def _tables(params: dict[str, Any]) -> set[str]:
    names = {params.get("TableName")} | set(params.get("RequestItems", {}))
    for item in params.get("TransactItems", []):
        names |= {action.get("TableName") for action in item.values()}
    return {name for name in names if name}


@contextmanager
def injected(monkeypatch: pytest.MonkeyPatch, fault: Fault) -> Iterator[Fault]:
    real = BaseClient._make_api_call
    lock = threading.Lock()

    def call(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        if operation == fault.operation and (fault.table is None or fault.table in _tables(params)):
            with lock:
                fault.seen += 1
                fire = fault.seen == fault.nth
                fault.fired |= fire
            if fire:
                error = {"Error": {"Code": fault.code, "Message": "injected fault"}}
                raise ClientError(error, operation)
        return real(client, operation, params)

    with monkeypatch.context() as patch:
        patch.setattr(BaseClient, "_make_api_call", call)
        yield fault
    assert fault.fired, f"{fault} never fired: the test does not exercise it"


def urls(image_server, count: int, prefix: str = "img") -> list[str]:
    return [image_server.url(f"/img/{20 + i}x10.jpg") for i in range(count)]


def submit(call_api, image_urls, key=None):
    headers = {"Idempotency-Key": key} if key else None
    return call_api(
        "POST", "/api/submit/", body=job(visit("S00339218", image_urls)), headers=headers
    )


def settle_everything(aws) -> None:
    """What time does in production: deliveries, then the reconciler's passes."""
    Pipeline(aws).drain()
    reconcile(now=datetime.now(UTC) + timedelta(seconds=901))  # stuck jobs are requeued...
    Pipeline(aws).drain()
    reconcile(now=datetime.now(UTC) + timedelta(hours=2, seconds=1))  # ...the rest expires


# -- submit -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        Fault("PutItem", "Idempotency"),
        Fault("BatchGetItem", "Stores"),
        Fault("PutItem", "Jobs"),
        Fault("BatchWriteItem", "Images"),
        Fault("SendMessageBatch", nth=1),
        Fault("SendMessageBatch", nth=3),
    ],
    ids=lambda f: f"{f.operation}-{f.table or 'queue'}-{f.nth}",
)
def test_a_submit_fault_is_a_503_the_retry_succeeds_and_every_job_ends(
    aws, stores, call_api, image_server, monkeypatch, fault
):
    image_urls = urls(image_server, 25)  # three SendMessageBatch requests
    with injected(monkeypatch, fault):
        failed = submit(call_api, image_urls, key="k-1")
    assert failed.status_code == 503
    assert "send the same request again" in failed.body["error"]

    retried = submit(call_api, image_urls, key="k-1")

    assert retried.status_code == 201
    settle_everything(aws)
    for job_id in all_job_ids():
        assert_accounted(job_id)
    job_record = JobRecord.get(retried.body["job_id"])
    assert (job_record.succeeded, job_record.failed) == (25, 0)
    # What the failed attempt wrote with its images is requeued and completes; only images
    # it never wrote fail (at the hard deadline).
    for job_id in all_job_ids():
        images = list(ImageRecord.query(job_id))
        written = [i for i in images if not i.visit_key.startswith("unrecorded#")]
        assert all(i.state == SUCCEEDED for i in written), job_id


def test_a_submit_without_a_key_fails_cleanly_too(aws, stores, call_api, image_server, monkeypatch):
    with injected(monkeypatch, Fault("SendMessageBatch", nth=2)):
        failed = submit(call_api, urls(image_server, 25))
    assert failed.status_code == 503
    settle_everything(aws)
    (job_id,) = all_job_ids()
    job_record = assert_accounted(job_id)
    assert (job_record.succeeded, job_record.failed) == (25, 0)  # requeued, not expired


# -- process ------------------------------------------------------------------------------


@pytest.fixture(params=["batch", "per_image"])
def filing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run the test with each FILING of the process function."""
    monkeypatch.setenv("FILING", request.param)
    get_settings.cache_clear()
    yield request.param
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.mark.parametrize(
    "fault",
    [
        Fault("TransactWriteItems", "Images", nth=1),  # the batch's results are not filed
        Fault("TransactWriteItems", "Images", nth=1, code="InternalServerError"),  # retried
        Fault("GetItem", "Jobs", nth=1),  # filed, but the batch's job-end check fails
        Fault("UpdateItem", "Jobs", nth=1),  # filed, stamping the job finished fails
    ],
    ids=lambda f: f"{f.operation}-{f.code}-{f.nth}",
)
def test_a_process_fault_is_redelivered_and_counted_once(
    aws, stores, call_api, image_server, monkeypatch, fault
):
    job_id = submit(call_api, urls(image_server, 5)).body["job_id"]
    with injected(monkeypatch, fault):
        Pipeline(aws).drain()
    # A job whose end check failed is finished by a redelivery or by the reconciler.
    settle_everything(aws)

    job_record = assert_accounted(job_id)
    assert (job_record.succeeded, job_record.failed) == (5, 0)


def test_a_fault_delaying_a_retry_still_retries(aws, stores, call_api, image_server, monkeypatch):
    """ChangeMessageVisibility fails: the message comes back at the visibility timeout."""
    url = image_server.url("/flaky/delay-fault/1/30x10.jpg")
    job_id = submit(call_api, [url]).body["job_id"]
    with injected(monkeypatch, Fault("ChangeMessageVisibility")):
        Pipeline(aws).drain()

    job_record = assert_accounted(job_id)
    assert (job_record.succeeded, job_record.failed) == (1, 0)


def test_a_fault_while_filing_a_duplicate_batch_image_by_image_is_redelivered(
    aws, stores, call_api, image_server, monkeypatch
):
    """A batch holding an image filed already is filed image by image; a fault there fails
    only that record, which comes back and is counted once."""
    job_id = submit(call_api, urls(image_server, 5)).body["job_id"]
    batch = Pipeline(aws).receive()
    outcome = ImageSuccess(perimeter=60, width=20, height=10, store_id="S00339218", area=None)
    assert record_outcome(job_id, 2, outcome, 1)  # a first delivery of image 2 got there
    # The batch's transaction is cancelled (image 2 left pending); the first image-by-image
    # transaction after it fails.
    with injected(monkeypatch, Fault("TransactWriteItems", "Images", nth=2)):
        failed = invoke_process(batch)
    assert len(failed) == 1
    Pipeline(aws).drain(failed)

    job_record = assert_accounted(job_id)
    assert (job_record.succeeded, job_record.failed) == (5, 0)


def test_a_handler_crash_mid_batch_redelivers_the_batch_without_double_counting(
    aws, stores, call_api, image_server, monkeypatch, filing
):
    """The invocation dies after some results were filed: Lambda deletes nothing, so the
    whole batch comes back, filed records included. Batch filing dies after the first of
    the batch's two jobs was filed; image-by-image filing after four images."""
    from retail_pulse.jobs import process

    first = submit(call_api, urls(image_server, 5)).body["job_id"]
    second = submit(call_api, urls(image_server, 5)).body["job_id"]
    batch = Pipeline(aws).receive()
    assert len(batch) == 10
    filed = 0
    lock = threading.Lock()

    def dies_after(limit: int, real: Any) -> Any:
        def file(*args: Any) -> Any:
            nonlocal filed
            with lock:
                filed += 1
                crash = filed > limit
            if crash:
                raise SystemError("execution environment died")
            return real(*args)

        return file

    with monkeypatch.context() as patch:
        if filing == "batch":
            patch.setattr(process, "record_outcomes", dies_after(1, process.record_outcomes))
        else:
            patch.setattr(process, "record_outcome", dies_after(4, record_outcome))
        invoke_process(batch)  # its answer is lost with the environment
    counts = [JobRecord.get(job_id).succeeded for job_id in (first, second)]
    assert sum(counts) == (5 if filing == "batch" else 4)
    if filing == "batch":
        assert sorted(counts) == [0, 5]  # one job's transaction landed whole, one not at all

    for delivery in batch:
        delivery.receive_count += 1
    Pipeline(aws).drain(batch)

    for job_id in (first, second):
        job_record = assert_accounted(job_id)
        assert (job_record.succeeded, job_record.failed) == (5, 0)


# -- deliveries, on both backends ---------------------------------------------------------


@pytest.mark.usefixtures("backend_stores")
def test_duplicate_and_out_of_order_deliveries_count_once_and_finish_once(
    aws, call_api, image_server, caplog
):
    job_id = submit(call_api, urls(image_server, 5)).body["job_id"]
    by_index = {d.body: d for d in Pipeline(aws).receive()}
    ordered = sorted(by_index.values(), key=lambda d: d.body)
    shuffled = [ordered[i] for i in (4, 2, 4, 0, 3, 1, 2, 0)]

    for delivery in shuffled:  # one at a time, the last ones after the job finished
        Pipeline(aws).drain([Delivery(delivery.body, receive_count=1)])

    job_record = assert_accounted(job_id)
    assert (job_record.succeeded, job_record.failed) == (5, 0)
    assert [r.getMessage() for r in caplog.records].count("job finished") == 1


@pytest.mark.usefixtures("backend_stores")
def test_a_redelivery_while_the_first_delivery_runs_counts_once(
    aws, call_api, image_server, monkeypatch
):
    """SQS redelivers a message whose first delivery is still running (a visibility timeout
    shorter than the work): both measure the image, both try to file it at the same moment."""
    from retail_pulse.jobs import process

    job_id = submit(call_api, urls(image_server, 1)).body["job_id"]
    (delivery,) = Pipeline(aws).receive()
    both_measured = threading.Barrier(2, timeout=30)
    filed: list[bool] = []

    def at_the_same_moment(*args: Any) -> bool:
        both_measured.wait()
        result = record_outcome(*args)
        filed.append(result)
        return result

    monkeypatch.setattr(process, "record_outcome", at_the_same_moment)
    threads = [
        threading.Thread(
            target=process_image_message, args=(delivery.body, count, delivery.receipt_handle)
        )
        for count in (1, 2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(filed) == [False, True]
    job_record = assert_accounted(job_id)
    assert (job_record.succeeded, job_record.failed) == (1, 0)


@pytest.mark.usefixtures("backend_stores")
def test_many_images_of_one_job_filed_at_once_are_all_counted(aws, call_api, image_server):
    """Concurrent transactions on one job item conflict in DynamoDB; every one must land."""
    job_id = submit(call_api, urls(image_server, 12)).body["job_id"]
    aws.queued_messages()
    outcome = ImageSuccess(perimeter=60, width=20, height=10, store_id="S00339218", area=None)
    start = threading.Barrier(12, timeout=30)

    def file(index: int) -> None:
        start.wait()
        assert record_outcome(job_id, index, outcome, 1)

    threads = [threading.Thread(target=file, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    job_record = assert_accounted(job_id, terminal=False)
    assert (job_record.succeeded, job_record.failed) == (12, 0)


@pytest.mark.usefixtures("backend_stores")
def test_one_image_filed_by_many_deliveries_at_once_counts_once(aws, call_api, image_server):
    job_id = submit(call_api, urls(image_server, 1)).body["job_id"]
    aws.queued_messages()
    outcome = ImageSuccess(perimeter=60, width=20, height=10, store_id="S00339218", area=None)
    start = threading.Barrier(6, timeout=30)
    results: list[bool] = []

    def file() -> None:
        start.wait()
        results.append(record_outcome(job_id, 0, outcome, 1))

    threads = [threading.Thread(target=file) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert sorted(results) == [False] * 5 + [True]
    job_record = assert_accounted(job_id, terminal=False)
    assert (job_record.succeeded, job_record.failed) == (1, 0)
