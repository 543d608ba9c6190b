"""Nothing lost, nothing stuck, nothing counted twice: faults injected into every DynamoDB and
SQS call of submit and process, crashes, duplicate, late, out-of-order and concurrent
deliveries. Each test ends with the job terminal, its counters equal to its image records and
no filing left open on it.

Process files a batch's results per job: it opens a filing on the job's item (UpdateItem
Jobs), writes each image with a conditional UpdateItem on Images (a GetItem after a condition
failure tells its own retried write from a duplicate) and closes the filing with one
UpdateItem of the job's counters. A filing whose invocation died, or whose close failed,
stays open until the reconciler closes it, once it is STALE_FILING_S old. The dead-letter
handler and the reconciler file each image in its own transaction (TransactWriteItems).

Faults are raised where botocore sends a request (`BaseClient._make_api_call`), below
PynamoDB and boto3 and above the network, as an exhausted AWS retry would surface: before the
request is sent, or after it was applied (its answer lost, or sent again by a retry).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from retail_pulse.data.filing import STALE_FILING_S, Filed, Filing, file_outcomes
from retail_pulse.data.manifest import submitted_images
from retail_pulse.data.models import (
    CANCELLED,
    FAILED,
    PENDING,
    SUCCEEDED,
    ImageRecord,
    JobRecord,
    connection,
)
from retail_pulse.data.ranges import parse_index_ranges
from retail_pulse.domain import ImageSuccess
from retail_pulse.jobs.reconcile import reconcile
from retail_pulse.settings import get_settings
from tests.integration.conftest import job, visit
from tests.support.dynamodb_local import backend, backend_stores  # noqa: F401
from tests.support.filing import file_result
from tests.support.pipeline import (
    Delivery,
    Pipeline,
    age_job,
    all_job_ids,
    assert_accounted,
    invoke_process,
)

pytestmark = pytest.mark.usefixtures("no_gpu_pause")

# What became of the request a fault hits.
REFUSED = "refused"  # never applied: the error is all there is
LOST = "lost"  # applied, its answer lost: DynamoDB wrote, the caller sees the error
RESENT = "resent"  # applied, its answer lost, sent again by a retry: the caller sees that answer

# Parts of the filing's requests on the job's item (data/jobs.py _open_filing, _close_filing).
OPENS = "= :filing"
CLOSES = "attribute_exists(#filing)"
STAMPS_FINISHED = "attribute_not_exists"  # mark_finished's condition
MARKS_EMITTED = "ongoing_shard"  # event_emitted takes the done job out of OngoingJobs


@dataclass
class Fault:
    """Fail the `nth` request of `operation` (on `table`, and holding `marker` in its update
    or condition expression or attribute names, if given) with `code`; `then` says whether
    the request was applied first."""

    operation: str
    table: str | None = None
    nth: int = 1
    code: str = "ServiceUnavailable"
    marker: str | None = None
    then: str = REFUSED
    what: str = ""
    seen: int = 0
    fired: bool = False

    def matches(self, operation: str, params: dict[str, Any]) -> bool:
        if operation != self.operation:
            return False
        if self.table is not None and self.table not in _tables(params):
            return False
        return self.marker is None or self.marker in _expressions(params)


def _tables(params: dict[str, Any]) -> set[str]:
    names = {params.get("TableName")} | set(params.get("RequestItems", {}))
    for item in params.get("TransactItems", []):
        names |= {action.get("TableName") for action in item.values()}
    return {name for name in names if name}


def _expressions(params: dict[str, Any]) -> str:
    names = params.get("ExpressionAttributeNames", {})
    parts = [params.get("UpdateExpression", ""), params.get("ConditionExpression", "")]
    return " ".join([*parts, *names.values()])


@contextmanager
def injected(monkeypatch: pytest.MonkeyPatch, fault: Fault) -> Iterator[Fault]:
    real = BaseClient._make_api_call
    lock = threading.Lock()
    fault.seen, fault.fired = 0, False  # a parameter's Fault may serve more than one run

    def call(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        if fault.matches(operation, params):
            with lock:
                fault.seen += 1
                fire = fault.seen == fault.nth
                fault.fired |= fire
            if fire:
                error = {"Error": {"Code": fault.code, "Message": "injected fault"}}
                if fault.then == REFUSED:
                    raise ClientError(error, operation)
                real(client, operation, params)  # applied; its answer never arrives
                if fault.then == LOST:
                    raise ClientError(error, operation)
                return real(client, operation, params)
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
    """What time does in production: deliveries, then the reconciler's passes (the first
    also closes what filings were left open: it is past STALE_FILING_S too)."""
    Pipeline(aws).drain()
    reconcile(now=datetime.now(UTC) + timedelta(seconds=901))  # stuck jobs are requeued...
    Pipeline(aws).drain()
    reconcile(now=datetime.now(UTC) + timedelta(hours=2, seconds=1))  # ...the rest expires


def image_records(job_id: str) -> list[ImageRecord]:
    """The job's image records (not its manifest slices, at negative indexes)."""
    return list(
        ImageRecord.query(
            job_id, range_key_condition=ImageRecord.image_index >= 0, consistent_read=True
        )
    )


def filings_open(job_id: str) -> dict[str, tuple[datetime, list[int]]]:
    """The job's open filings by id: when each was opened, and the images it still holds."""
    item = connection().client.get_item(
        TableName=get_settings().jobs_table, Key={"job_id": {"S": job_id}}, ConsistentRead=True
    )["Item"]
    return {
        name.removeprefix("filing_"): (
            datetime.fromisoformat(value["M"]["at"]["S"]),
            parse_index_ranges(value["M"]["images"]["S"]),
        )
        for name, value in item.items()
        if name.startswith("filing_")
    }


def assert_balanced(job_id: str) -> JobRecord:
    """Between deliveries: every filed record is counted on its job, or waits uncounted in
    the open filing that wrote it (for the reconciler), never both and never neither."""
    job_record = JobRecord.get(job_id, consistent_read=True)
    waiting = {
        (filing_id, index)
        for filing_id, (_, indexes) in filings_open(job_id).items()
        for index in indexes
    }
    counted = Counter(
        record.state
        for record in image_records(job_id)
        if record.state != PENDING and (record.filed_by, int(record.image_index)) not in waiting
    )
    assert (job_record.succeeded, job_record.failed, job_record.cancelled or 0) == (
        counted[SUCCEEDED],
        counted[FAILED],
        counted[CANCELLED],
    ), job_id
    return job_record


def success() -> ImageSuccess:
    return ImageSuccess(perimeter=60, width=20, height=10, store_id="S00339218", area=None)


def filings(job_id: str, indexes: Sequence[int] | None = None) -> list[Filing]:
    """A success for each of the job's images (or those of `indexes`), as process files it."""
    images = submitted_images(job_id)
    wanted = range(len(images)) if indexes is None else indexes
    return [Filing(images[i], success(), 1) for i in wanted]


def _run_together(threads: list[threading.Thread]) -> None:
    """Start every thread, then wait for each (their barriers line their calls up)."""
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)


def dies(*args: Any) -> Any:
    """Stands in for a call the invocation never finished: its environment died."""
    raise SystemError("execution environment died")


def redeliver(batch: list[Delivery]) -> None:
    for delivery in batch:
        delivery.receive_count += 1


# -- submit -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        Fault("PutItem", "Idempotency"),
        Fault("BatchGetItem", "Stores"),
        Fault("PutItem", "Jobs"),
        Fault("BatchWriteItem", "Images"),  # the job's manifest
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
    # What the failed attempt wrote in its manifest is requeued and completes; only images
    # it never wrote fail (at the hard deadline).
    for job_id in all_job_ids():
        written = [i for i in image_records(job_id) if not i.visit_key.startswith("unrecorded#")]
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


# Every DynamoDB request one batch of one job's five images makes, in order (no SQS request:
# the batch's answer says what to deliver again):
BATCH_FAULTS = [
    # The cancel check fails: a function error, the whole batch comes back.
    Fault("GetItem", "Jobs", nth=1, what="cancel-check"),
    # Opening the filing fails: nothing written, every record comes back.
    Fault("UpdateItem", "Jobs", marker=OPENS, what="open"),
    # ...or it was opened and the answer lost: an empty filing is left open.
    Fault("UpdateItem", "Jobs", marker=OPENS, then=LOST, what="open-lost"),
    # An image's write fails: that record comes back (its image left to the open filing).
    Fault("UpdateItem", "Images", nth=1, what="image"),
    Fault("UpdateItem", "Images", nth=3, code="InternalServerError", what="image-internal"),
    # ...or it was applied and the answer lost: the redelivery finds the image filed (a
    # duplicate), the open filing's record is counted by the reconciler.
    Fault("UpdateItem", "Images", nth=2, then=LOST, what="image-lost"),
    # ...or applied and sent again: the condition fails on the filing's own record, counted.
    Fault("UpdateItem", "Images", nth=4, then=RESENT, what="image-resent"),
    # (The GetItem after a condition failure is made only for a duplicate or a resent write:
    # test_a_fault_telling_a_duplicate_apart_is_redelivered_and_counted_once.)
    # Closing the filing fails: every image filed, counted by the reconciler.
    Fault("UpdateItem", "Jobs", marker=CLOSES, what="close"),
    # ...or it was applied and the answer lost, or sent again: counted once, by the close.
    Fault("UpdateItem", "Jobs", marker=CLOSES, then=LOST, what="close-lost"),
    Fault("UpdateItem", "Jobs", marker=CLOSES, then=RESENT, what="close-resent"),
    # Filed, but the batch's job-end check fails: the records come back, duplicates.
    Fault("GetItem", "Jobs", nth=2, what="end-check"),
    # Filed, stamping the job finished fails: likewise.
    Fault("UpdateItem", "Jobs", marker=STAMPS_FINISHED, what="stamp-finished"),
    # Finished, marking its event emitted fails: the reconciler emits it again.
    Fault("UpdateItem", "Jobs", marker=MARKS_EMITTED, what="event-emitted"),
]


@pytest.mark.parametrize("fault", BATCH_FAULTS, ids=lambda fault: fault.what)
def test_a_process_fault_is_redelivered_and_counted_once(
    aws, stores, call_api, image_server, monkeypatch, fault
):
    job_id = submit(call_api, urls(image_server, 5)).body["job_id"]
    with injected(monkeypatch, fault):
        Pipeline(aws).drain()
    # Whatever the fault left open is counted by nothing else yet, and nothing twice.
    assert_balanced(job_id)
    # A job whose end check failed is finished by a redelivery or by the reconciler, which
    # also closes a filing left open.
    settle_everything(aws)

    job_record = assert_accounted(job_id)
    assert (job_record.succeeded, job_record.failed) == (5, 0)


def test_a_fault_delaying_a_retry_still_retries(aws, stores, call_api, image_server, monkeypatch):
    """Sending the retry's message fails: the record is hidden for its backoff instead and
    reported failed, so SQS delivers it again, and the image is retried all the same."""
    url = image_server.url("/flaky/delay-fault/1/30x10.jpg")
    job_id = submit(call_api, [url]).body["job_id"]
    with injected(monkeypatch, Fault("SendMessage")):
        Pipeline(aws).drain()

    job_record = assert_accounted(job_id)
    assert (job_record.succeeded, job_record.failed) == (1, 0)


@pytest.mark.parametrize("filed_by", ["another-delivery", "own-retried-write"])
def test_a_fault_telling_a_duplicate_apart_is_redelivered_and_counted_once(
    aws, stores, call_api, image_server, monkeypatch, filed_by
):
    """An image's write fails its condition (filed already by another delivery, or by this
    filing's own write that a retry sent again), and the GetItem that tells the two apart
    fails too. Only that record comes back; it is a duplicate then. Filed by another
    delivery it was counted already; filed by the open filing, the reconciler counts it."""
    job_id = submit(call_api, urls(image_server, 5)).body["job_id"]
    batch = Pipeline(aws).receive()
    faults = [Fault("GetItem", "Images")]
    if filed_by == "another-delivery":
        assert file_result(job_id, 2, success(), 1)  # a first delivery of image 2 got there
    else:
        faults.append(Fault("UpdateItem", "Images", nth=3, then=RESENT))
    with ExitStack() as stack:
        for fault in faults:
            stack.enter_context(injected(monkeypatch, fault))
        failed = invoke_process(batch)
    assert len(failed) == 1
    counted = assert_balanced(job_id).succeeded
    assert counted == (5 if filed_by == "another-delivery" else 4)
    Pipeline(aws).drain(failed)
    assert assert_balanced(job_id).succeeded == counted  # a duplicate, not counted again
    settle_everything(aws)

    job_record = assert_accounted(job_id)
    assert (job_record.succeeded, job_record.failed) == (5, 0)


def test_a_handler_crash_mid_batch_redelivers_the_batch_without_double_counting(
    aws, stores, call_api, image_server, monkeypatch
):
    """The invocation dies after some results were filed: Lambda deletes nothing, so the
    whole batch comes back, filed records included. It dies after the first of the batch's
    two jobs was filed."""
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
        patch.setattr(process, "file_outcomes", dies_after(1, process.file_outcomes))
        invoke_process(batch)  # its answer is lost with the environment
    counts = [JobRecord.get(job_id).succeeded for job_id in (first, second)]
    assert sorted(counts) == [0, 5]  # one job's filing landed whole, one not at all

    redeliver(batch)
    Pipeline(aws).drain(batch)

    for job_id in (first, second):
        job_record = assert_accounted(job_id)
        assert (job_record.succeeded, job_record.failed) == (5, 0)


def test_a_crash_between_the_image_writes_and_the_close_is_counted_by_the_reconciler_once(
    aws, stores, call_api, image_server, monkeypatch
):
    """The invocation dies with its images written and its filing still open: the whole
    batch comes back and finds every image filed (duplicates, not counted again), so the job
    stays short until the reconciler closes the filing; and not before it is STALE_FILING_S
    old, since its invocation might still be running until then."""
    from retail_pulse.data import filing

    job_id = submit(call_api, urls(image_server, 5)).body["job_id"]
    batch = Pipeline(aws).receive()
    with monkeypatch.context() as patch:
        patch.setattr(filing, "_close_filing", dies)
        invoke_process(batch)  # its answer is lost with the environment
    ((filing_id, (opened, held)),) = filings_open(job_id).items()
    assert held == [0, 1, 2, 3, 4]
    records = image_records(job_id)
    assert [(r.state, r.filed_by) for r in records] == [(SUCCEEDED, filing_id)] * 5
    assert JobRecord.get(job_id, consistent_read=True).succeeded == 0
    assert_balanced(job_id)

    redeliver(batch)
    Pipeline(aws).drain(batch)

    # Duplicates, every one: no record filed again, nothing counted, the job not finished.
    assert [r.filed_by for r in image_records(job_id)] == [filing_id] * 5
    job_record = assert_balanced(job_id)
    assert (job_record.succeeded, job_record.finished_at) == (0, None)
    assert list(filings_open(job_id)) == [filing_id]  # the redelivery's own filing closed

    # The reconciler visits the job (it looks stuck), but the filing is too young to close.
    age_job(job_id, created_ago=timedelta(seconds=get_settings().reconcile_after_s + 60))
    young = reconcile(now=opened + timedelta(seconds=STALE_FILING_S - 1))
    assert young.recounted_images == 0
    assert list(filings_open(job_id)) == [filing_id]
    assert JobRecord.get(job_id, consistent_read=True).succeeded == 0

    stale = reconcile(now=opened + timedelta(seconds=STALE_FILING_S + 1))
    assert stale.recounted_images == 5
    job_record = assert_accounted(job_id)
    assert (job_record.succeeded, job_record.failed) == (5, 0)
    later = reconcile(now=opened + timedelta(seconds=STALE_FILING_S + 2))
    assert later.recounted_images == 0
    assert assert_accounted(job_id).succeeded == 5


@pytest.mark.parametrize(
    "fault",
    [
        Fault("GetItem", "Jobs", what="read-filings"),
        Fault("BatchGetItem", "Images", what="read-records"),
        Fault("UpdateItem", "Jobs", marker=CLOSES, what="close"),
        Fault("UpdateItem", "Jobs", marker=CLOSES, then=LOST, what="close-lost"),
    ],
    ids=lambda f: f.what,
)
def test_a_fault_closing_a_stale_filing_is_retried_by_the_next_pass_and_counted_once(
    aws, stores, call_api, image_server, monkeypatch, fault
):
    from retail_pulse.data import filing

    job_id = submit(call_api, urls(image_server, 5)).body["job_id"]
    batch = Pipeline(aws).receive()
    with monkeypatch.context() as patch:
        patch.setattr(filing, "_close_filing", dies)
        invoke_process(batch)  # died before closing its filing
    ((_, (opened, _)),) = filings_open(job_id).items()
    age_job(job_id, created_ago=timedelta(seconds=get_settings().reconcile_after_s + 60))
    past_stale = opened + timedelta(seconds=STALE_FILING_S + 1)

    with injected(monkeypatch, fault), suppress(Exception):
        reconcile(now=past_stale)  # the pass may fail: the next one goes on
    assert_balanced(job_id)
    reconcile(now=past_stale + timedelta(seconds=1))

    job_record = assert_accounted(job_id)
    assert (job_record.succeeded, job_record.failed) == (5, 0)


def test_a_retried_image_write_whose_first_attempt_was_applied_is_counted_once(
    aws, stores, call_api, image_server, monkeypatch
):
    """The write landed, its answer was lost and the retry's condition fails: the filing's
    own id on the record says it is this filing's image, filed and counted, not a duplicate."""
    job_id = submit(call_api, urls(image_server, 5)).body["job_id"]
    aws.queued_messages()
    with injected(monkeypatch, Fault("UpdateItem", "Images", nth=3, then=RESENT)):
        filed = file_outcomes(job_id, filings(job_id))

    assert filed == Filed(filed=[0, 1, 2, 3, 4], duplicates=[], unsettled=[], closed=True)
    assert len({r.filed_by for r in image_records(job_id)}) == 1
    job_record = assert_accounted(job_id, terminal=False)
    assert (job_record.succeeded, job_record.failed) == (5, 0)


def test_an_image_write_applied_but_unanswered_is_counted_once_by_the_reconciler(
    aws, stores, call_api, image_server, monkeypatch
):
    """The write landed but the filing never heard: the image stays in the open filing
    (not counted), its redelivery finds it filed by that filing (a duplicate), and the
    reconciler counts it with the filing's id."""
    job_id = submit(call_api, urls(image_server, 5)).body["job_id"]
    aws.queued_messages()
    with injected(monkeypatch, Fault("UpdateItem", "Images", nth=1, then=LOST)):
        filed = file_outcomes(job_id, filings(job_id))
    (unsettled,) = filed.unsettled
    assert (sorted(filed.filed + filed.unsettled), filed.duplicates) == ([0, 1, 2, 3, 4], [])
    ((filing_id, (opened, held)),) = filings_open(job_id).items()
    assert held == [unsettled]
    assert image_records(job_id)[unsettled].filed_by == filing_id  # written, not counted
    assert assert_balanced(job_id).succeeded == 4

    again = file_outcomes(job_id, filings(job_id, [unsettled]))
    assert again == Filed(filed=[], duplicates=[0], unsettled=[], closed=True)
    assert assert_balanced(job_id).succeeded == 4

    assert reconcile(now=opened + timedelta(seconds=901)).recounted_images == 1
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
    shorter than the work): both invocations measure the image, both write it at the same
    moment. One write wins; the other finds it a duplicate."""
    from retail_pulse.data import filing

    job_id = submit(call_api, urls(image_server, 1)).body["job_id"]
    (delivery,) = Pipeline(aws).receive()
    both_measured = threading.Barrier(2, timeout=30)
    written: list[str] = []
    real_write = filing._file_image

    def at_the_same_moment(filing: Filing, *args: Any) -> str:
        both_measured.wait()
        result = real_write(filing, *args)
        written.append(result)
        return result

    monkeypatch.setattr(filing, "_file_image", at_the_same_moment)
    answers: list[list[Delivery]] = []
    threads = [
        threading.Thread(target=lambda d=d: answers.append(invoke_process([d])))
        for d in (delivery, Delivery(delivery.body, receive_count=2))
    ]
    _run_together(threads)

    assert answers == [[], []]
    assert sorted(written) == ["duplicate", "filed"]
    job_record = assert_accounted(job_id)
    assert (job_record.succeeded, job_record.failed) == (1, 0)


@pytest.mark.usefixtures("backend_stores")
def test_a_batch_redelivered_while_its_first_delivery_runs_counts_once(
    aws, call_api, image_server, monkeypatch, caplog
):
    """Two invocations hold the same batch (a visibility timeout shorter than the work) and
    file it at once: for every image, both filings' writes are sent at the same moment. One
    write of each wins; the other filing finds it a duplicate. Counted once, finished once."""
    from retail_pulse.data import filing
    from retail_pulse.jobs import process

    job_id = submit(call_api, urls(image_server, 5)).body["job_id"]
    batch = Pipeline(aws).receive()
    copies = [Delivery(d.body, receive_count=2) for d in batch]
    side_by_side = {index: threading.Barrier(2, timeout=30) for index in range(5)}
    results: list[Filed] = []
    real_write, real_file = filing._file_image, process.file_outcomes

    def write(filing: Filing, *args: Any) -> str:
        side_by_side[filing.image.image_index].wait()
        return real_write(filing, *args)

    def file(*args: Any) -> Filed:
        filed = real_file(*args)
        results.append(filed)
        return filed

    monkeypatch.setattr(filing, "_file_image", write)
    monkeypatch.setattr(process, "file_outcomes", file)
    answers: list[list[Delivery]] = []
    threads = [
        threading.Thread(target=lambda b=b: answers.append(invoke_process(b)))
        for b in (batch, copies)
    ]
    _run_together(threads)

    assert answers == [[], []]
    assert [len(r.filed) + len(r.duplicates) for r in results] == [5, 5]
    assert sum(len(r.filed) for r in results) == 5
    assert sum(len(r.duplicates) for r in results) == 5
    assert all(r.unsettled == [] and r.closed for r in results)
    job_record = assert_accounted(job_id)
    assert (job_record.succeeded, job_record.failed) == (5, 0)
    assert [r.getMessage() for r in caplog.records].count("job finished") == 1


@pytest.mark.usefixtures("backend_stores")
def test_many_images_of_one_job_filed_at_once_are_all_counted(aws, call_api, image_server):
    """Concurrent transactions on one job item conflict in DynamoDB; every one must land."""
    job_id = submit(call_api, urls(image_server, 12)).body["job_id"]
    aws.queued_messages()
    outcome = success()
    start = threading.Barrier(12, timeout=30)

    def file(index: int) -> None:
        start.wait()
        assert file_result(job_id, index, outcome, 1)

    threads = [threading.Thread(target=file, args=(i,)) for i in range(12)]
    _run_together(threads)

    job_record = assert_accounted(job_id, terminal=False)
    assert (job_record.succeeded, job_record.failed) == (12, 0)


@pytest.mark.usefixtures("backend_stores")
def test_many_batches_of_one_job_filed_at_once_are_all_counted(aws, call_api, image_server):
    """Filings of one job opened and closed at the same moment, each on the job's item."""
    job_id = submit(call_api, urls(image_server, 12)).body["job_id"]
    aws.queued_messages()
    start = threading.Barrier(4, timeout=30)
    results: list[Filed] = []

    def file(indexes: range) -> None:
        mine = filings(job_id, indexes)
        start.wait()
        results.append(file_outcomes(job_id, mine))

    threads = [threading.Thread(target=file, args=(range(i, i + 3),)) for i in (0, 3, 6, 9)]
    _run_together(threads)

    assert sorted(len(r.filed) for r in results) == [3, 3, 3, 3]
    assert all(r.closed for r in results)
    job_record = assert_accounted(job_id, terminal=False)
    assert (job_record.succeeded, job_record.failed) == (12, 0)


@pytest.mark.usefixtures("backend_stores")
def test_one_image_filed_by_many_deliveries_at_once_counts_once(aws, call_api, image_server):
    job_id = submit(call_api, urls(image_server, 1)).body["job_id"]
    aws.queued_messages()
    outcome = success()
    start = threading.Barrier(6, timeout=30)
    results: list[bool] = []

    def file() -> None:
        start.wait()
        results.append(file_result(job_id, 0, outcome, 1))

    threads = [threading.Thread(target=file) for _ in range(6)]
    _run_together(threads)

    assert sorted(results) == [False] * 5 + [True]
    job_record = assert_accounted(job_id, terminal=False)
    assert (job_record.succeeded, job_record.failed) == (1, 0)


@pytest.mark.usefixtures("backend_stores")
def test_one_batch_filed_by_many_deliveries_at_once_counts_once(aws, call_api, image_server):
    job_id = submit(call_api, urls(image_server, 5)).body["job_id"]
    aws.queued_messages()
    start = threading.Barrier(6, timeout=30)
    results: list[Filed] = []

    def file() -> None:
        mine = filings(job_id)
        start.wait()
        results.append(file_outcomes(job_id, mine))

    threads = [threading.Thread(target=file) for _ in range(6)]
    _run_together(threads)

    won = Counter(i for r in results for i in r.filed)
    assert won == Counter(range(5))  # each image filed by one delivery
    assert sum(len(r.duplicates) for r in results) == 5 * 5
    assert all(r.unsettled == [] and r.closed for r in results)
    job_record = assert_accounted(job_id, terminal=False)
    assert (job_record.succeeded, job_record.failed) == (5, 0)
