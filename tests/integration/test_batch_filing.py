"""Batch filing: the results of one SQS batch that belong to one job are filed
as one filing (the job's item opened, one plain conditional write per image, the job's
counters moved once), duplicates are told apart and counted once, and what the clients sent
is counted as DynamoDB and SQS bill it.

The accounting runs on both backends: moto for the request counts, DynamoDB Local for the
consumed capacity (moto reports none for a transaction and none for index writes, so only
DynamoDB Local's units are asserted), reached at its own endpoint as the local stack's
functions reach it.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.client import BaseClient

from retail_pulse.data.manifest import submitted_images
from retail_pulse.data.models import FAILED, SUCCEEDED, ImageRecord, JobRecord
from retail_pulse.domain import ImageSuccess
from retail_pulse.metering import usage
from tests.integration.conftest import job, visit
from tests.support.dynamodb_local import backend, backend_stores  # noqa: F401
from tests.support.filing import file_result
from tests.support.pipeline import (
    Delivery,
    Pipeline,
    assert_accounted,
    images_sent_again,
    invoke_process,
)

pytestmark = pytest.mark.usefixtures("no_gpu_pause", "backend_stores")


def submit(call_api: Any, urls: list[str], store_id: str = "S00339218") -> str:
    result = call_api("POST", "/api/submit/", body=job(visit(store_id, urls)))
    assert result.status_code == 201, result.body
    return result.body["job_id"]


def image_urls(image_server: Any, count: int) -> list[str]:
    # One image file, many URLs: every record of the batch is a distinct image.
    return [image_server.url(f"/img/20x10.jpg?n={i}") for i in range(count)]


@pytest.fixture
def sent() -> Iterator[Counter[str]]:
    """Every DynamoDB and SQS call botocore makes, counted independently of the service's
    own hooks: the number the accounting must agree with. Keyed by operation, and by
    "operation table" for calls that name one table."""
    calls: Counter[str] = Counter()
    lock = threading.Lock()
    real = BaseClient._make_api_call

    def counting(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        with lock:
            calls[operation] += 1
            if "TableName" in params:
                calls[f"{operation} {params['TableName']}"] += 1
        return real(client, operation, params)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(BaseClient, "_make_api_call", counting)
        yield calls


def test_a_batch_of_two_jobs_is_one_filing_per_job(aws, call_api, image_server, sent):
    first = submit(call_api, image_urls(image_server, 60))
    second = submit(call_api, image_urls(image_server, 39), store_id="S01408764")
    batch = Pipeline(aws).receive()
    assert len(batch) == 99
    sent.clear()

    assert invoke_process(batch) == []

    assert sent["TransactWriteItems"] == 0
    assert sent["UpdateItem Images"] == 99  # one conditional write per image
    # Per job: the filing opened and closed, then the finished stamp and the event marked
    # emitted.
    assert sent["UpdateItem Jobs"] == 2 * (2 + 2)
    assert usage.summary()["requests"]["dynamodb.UpdateItem"] == 99 + 8
    for job_id, total in ((first, 60), (second, 39)):
        record = assert_accounted(job_id)
        assert (record.succeeded, record.failed) == (total, 0)


def test_more_images_of_one_job_than_a_transaction_takes_are_one_filing(
    aws, call_api, image_server, sent
):
    job_id = submit(call_api, image_urls(image_server, 150))
    batch = Pipeline(aws).receive()
    sent.clear()

    assert invoke_process(batch) == []

    assert sent["TransactWriteItems"] == 0
    assert sent["UpdateItem Images"] == 150
    assert sent["UpdateItem Jobs"] == 2 + 2  # one filing for all 150, however many there are
    record = assert_accounted(job_id)
    assert (record.succeeded, record.failed) == (150, 0)


def test_a_batch_holding_a_filed_image_files_the_rest_with_exact_counters(
    aws, call_api, image_server, sent
):
    job_id = submit(call_api, image_urls(image_server, 8))
    batch = Pipeline(aws).receive()
    late = ImageSuccess(perimeter=60, width=20, height=10, store_id="S00339218", area="710006")
    assert file_result(job_id, 3, late, 1)  # an earlier delivery of image 3 got there
    # And the same message twice in one batch, as SQS may deliver it.
    batch.append(Delivery(batch[0].body, receive_count=2))
    sent.clear()

    assert invoke_process(batch) == []

    # One write per image of the filing (image 3's refused by its condition, then read
    # to tell a duplicate from this filing's own retried write); the repeated message on
    # its own, in a transaction cancelled as a duplicate.
    assert sent["UpdateItem Images"] == 8
    assert sent["GetItem Images"] == 1
    assert sent["TransactWriteItems"] == 1
    assert usage.summary()["cancelled_transactions"] == 1
    record = assert_accounted(job_id)
    assert (record.succeeded, record.failed) == (8, 0)
    assert ImageRecord.get(job_id, 3).perimeter == 60  # the earlier result stands


def test_retries_and_unreadable_records_are_reported_and_the_rest_filed_at_once(
    aws, call_api, image_server, sent
):
    urls = [
        *image_urls(image_server, 4),
        image_server.url("/always/503"),
        image_server.url("/status/404"),
    ]
    job_id = submit(call_api, urls)
    batch = [*Pipeline(aws).receive(), Delivery(body="{not an image message")]
    by_url = {json.loads(d.body)["url"]: d for d in batch[:-1]}
    sent.clear()

    with images_sent_again() as sent_again:
        failed = invoke_process(batch)

    # The unreadable body comes back; the transient 503 is sent again as its second attempt
    # after a backoff (a message of its own: its record is done); the 404 is a permanent
    # failure, filed with the successes.
    assert {d.message_id for d in failed} == {batch[-1].message_id}
    assert sent["UpdateItem Images"] == 5
    assert sent["UpdateItem Jobs"] == 2  # the one filing, opened and closed
    assert sent["ChangeMessageVisibility"] == 0
    assert sent["SendMessage"] == 1
    (again,) = sent_again
    retried = json.loads(by_url[image_server.url("/always/503")].body)
    assert again.body == {**retried, "attempt": 2} and again.delay_s >= 1
    images = {
        int(i.image_index): i.state
        for i in ImageRecord.query(job_id, range_key_condition=ImageRecord.image_index >= 0)
    }
    # The retried image has no record yet: it is pending, known from the job's manifest.
    assert images == {0: SUCCEEDED, 1: SUCCEEDED, 2: SUCCEEDED, 3: SUCCEEDED, 5: FAILED}
    assert submitted_images(job_id, 4, 4)[0].url == image_server.url("/always/503")
    record = JobRecord.get(job_id, consistent_read=True)
    assert (record.succeeded, record.failed) == (4, 1)
    assert_accounted(job_id, terminal=False)


def test_a_failed_end_check_fails_only_that_jobs_records(aws, call_api, image_server, monkeypatch):
    from retail_pulse.jobs import process

    first = submit(call_api, image_urls(image_server, 3))
    second = submit(call_api, image_urls(image_server, 2))
    batch = Pipeline(aws).receive()
    real = process.finish_job

    def finish(job_id: str) -> None:
        if job_id == first:
            raise ConnectionError("injected: the job's GetItem failed")
        real(job_id)

    monkeypatch.setattr(process, "finish_job", finish)
    failed = invoke_process(batch)
    monkeypatch.undo()

    assert {json.loads(d.body)["job_id"] for d in failed} == {first}
    assert len(failed) == 3
    assert_accounted(second)
    Pipeline(aws).drain(failed)  # duplicates now: nothing counted again, then finished
    for job_id, total in ((first, 3), (second, 2)):
        record = assert_accounted(job_id)
        assert (record.succeeded, record.failed) == (total, 0)


def test_consumed_capacity_is_counted_with_index_writes(
    aws,
    call_api,
    image_server,
    sent,
    backend,  # noqa: F811 - the fixture imported above
):
    """What the hooks count equals what botocore sent; on DynamoDB Local the write units
    are DynamoDB's own: a plain write is 1 unit per item and per index entry."""
    images = 20
    job_id = submit(call_api, image_urls(image_server, images))
    submitted = usage.summary()
    batch = Pipeline(aws).receive()
    sent.clear()

    assert invoke_process(batch) == []
    summary = usage.summary()

    dynamodb = {k.split(".", 1)[1]: n for k, n in summary["requests"].items() if "dynamodb" in k}
    not_dynamodb = ("ChangeMessageVisibility", "PutEvents")
    assert dynamodb == {op: n for op, n in sent.items() if op not in not_dynamodb and " " not in op}
    assert summary["sqs_requests"] == 0
    assert_accounted(job_id)
    if backend != "dynamodb-local":
        return  # moto's units are not DynamoDB's
    # Submit: the job (1, and its keys in OngoingJobs and TenantJobs) and its manifest, one
    # compressed slice of 20 images (1); no record per image.
    assert submitted["wru_by"] == {
        "Jobs": 1.0,
        "Jobs/OngoingJobs": 1.0,
        "Jobs/TenantJobs": 1.0,
        "Images": 1.0,
    }
    wru = summary["wru_by"]
    # Each success: its record and its entries in StoreVisits and AreaVisits, 1 unit each,
    # written plainly.
    assert wru["Images"] == pytest.approx(images)
    assert wru["Images/StoreVisits"] == pytest.approx(images)
    assert wru["Images/AreaVisits"] == pytest.approx(images)
    # The job's item: the filing opened and closed (1 + 1), then the job's finished stamp
    # (1), and its event marked emitted as it leaves OngoingJobs (1).
    assert wru["Jobs"] == pytest.approx(2 + 2)
    assert wru["Jobs/OngoingJobs"] == pytest.approx(1)
    assert summary["dynamodb_wru"] == pytest.approx(sum(wru.values()))
    # Per job and batch: the cancel check, at most a second old, as its
    # images start (strongly consistent, 1: a cancel just answered is seen) and the end check
    # after the filing (strongly consistent, 1); as it leaves OngoingJobs, one read for
    # filings left open on it (1).
    assert summary["dynamodb_rru"] == pytest.approx(3)


def test_each_invocation_publishes_what_it_sent(aws, call_api, image_server, capsys):
    job_id = submit(call_api, image_urls(image_server, 3))
    batch = Pipeline(aws).receive()
    capsys.readouterr()

    invoke_process(batch)

    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "_aws" in line]
    (blob,) = [b for b in blobs if "aws_usage" in b]
    # 3 image writes, the filing opened and closed, the finished stamp, the event emitted.
    assert blob["aws_usage"]["requests"]["dynamodb.UpdateItem"] == 3 + 2 + 2
    assert blob["DynamoDBRequests"] == [blob["aws_usage"]["dynamodb_requests"]]
    assert blob["SQSRequests"] == [0.0]
    assert_accounted(job_id)
