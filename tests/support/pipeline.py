"""Drive the pipeline in-process as SQS and Lambda would, and check a job's books.

`Pipeline.drain()` plays the event source mapping: it receives image messages, invokes the
process handler in batches of 10, deletes what succeeded, and redelivers what failed with
its receive count raised (at once: waiting out visibility timeouts teaches nothing here).
A message that fails `max_receives` times goes to the dead-letter handler, as the queue's
redrive policy sends it to the dead-letter queue. Images the function sends again (retries
and give-backs, each a new message carrying its attempt number) are sent with no delay
while it drains, and received and processed in turn.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from retail_pulse.data.models import (
    CANCELLED,
    FAILED,
    PENDING,
    SUCCEEDED,
    ImageRecord,
    JobRecord,
    connection,
)
from retail_pulse.settings import get_settings
from tests.support.events import sqs_event
from tests.support.handlers import FakeContext, LongContext, load_handler

MAX_RECEIVES = 6  # the image queue's maxReceiveCount in template.yaml


@dataclass
class Delivery:
    body: str
    receive_count: int = 1
    receipt_handle: str = field(default_factory=lambda: f"receipt-{uuid.uuid4()}")
    message_id: str = field(default_factory=lambda: str(uuid.uuid4()))


def sqs_batch(deliveries: list[Delivery]) -> dict[str, Any]:
    event = sqs_event([d.body for d in deliveries], [d.receive_count for d in deliveries])
    for record, delivery in zip(event["Records"], deliveries, strict=True):
        record["messageId"] = delivery.message_id
        record["receiptHandle"] = delivery.receipt_handle
    return event


def invoke_process(deliveries: list[Delivery]) -> list[Delivery]:
    """One process invocation; returns the deliveries it reported as failed."""
    try:
        response = load_handler("process").lambda_handler(sqs_batch(deliveries), FakeContext())
    except Exception:
        return list(deliveries)  # a function error: Lambda deletes none of the batch
    failed = {item["itemIdentifier"] for item in response["batchItemFailures"]}
    return [d for d in deliveries if d.message_id in failed]


def invoke_dead_letter(bodies: list[str]) -> dict[str, Any]:
    return load_handler("dead_letter").lambda_handler(sqs_event(bodies), FakeContext())


@dataclass
class Pipeline:
    aws: Any
    dead_lettered: list[str] = field(default_factory=list)

    def receive(self) -> list[Delivery]:
        """Everything visible on the image queue, received (not deleted)."""
        return [
            Delivery(
                body=m["Body"],
                receive_count=int(m["Attributes"]["ApproximateReceiveCount"]),
                receipt_handle=m["ReceiptHandle"],
                message_id=m["MessageId"],
            )
            for m in self.aws.receive()
        ]

    def drain(
        self,
        deliveries: list[Delivery] | None = None,
        invoke: Callable[[list[Delivery]], list[Delivery]] = invoke_process,
    ) -> None:
        """Process until nothing is left to deliver (failures come back, then dead-letter;
        images sent again come as new messages)."""
        queue = self.receive() if deliveries is None else list(deliveries)
        with sent_again_at_once() as sent_again:
            while queue:
                batch, queue = queue[:10], queue[10:]
                for delivery in invoke(batch):
                    if delivery.receive_count >= MAX_RECEIVES:
                        self.dead_lettered.append(delivery.body)
                        invoke_dead_letter([delivery.body])
                    else:
                        delivery.receive_count += 1
                        queue.append(delivery)
                if not queue and sent_again:
                    sent_again.clear()
                    queue = self.receive()


@dataclass(frozen=True)
class SentAgain:
    """An image message the process function sent again, as SQS was asked to deliver it."""

    body: dict[str, Any]
    delay_s: int
    group: str


@contextmanager
def images_sent_again() -> Iterator[list[SentAgain]]:
    """Every image message sent again (data/queue.py send_image_again) while the block runs,
    with its delay and message group; sent as usual."""
    from retail_pulse.data.queue import _sqs

    sent: list[SentAgain] = []

    def note(params: dict[str, Any], **_: Any) -> None:
        if "DelaySeconds" in params:
            sent.append(
                SentAgain(
                    json.loads(params["MessageBody"]),
                    params["DelaySeconds"],
                    params["MessageGroupId"],
                )
            )

    events = _sqs().meta.events
    events.register("before-parameter-build.sqs.SendMessage", note, unique_id="note-sent")
    try:
        yield sent
    finally:
        events.unregister("before-parameter-build.sqs.SendMessage", unique_id="note-sent")


@contextmanager
def sent_again_at_once() -> Iterator[list[str]]:
    """While the block runs, images the process function sends again (data/queue.py
    send_image_again) go without their delay, and their bodies are listed: a test drains
    retries at once, as it redelivers failures at once."""
    from retail_pulse.data.queue import _sqs

    sent: list[str] = []

    def at_once(params: dict[str, Any], **_: Any) -> None:
        if "DelaySeconds" in params:
            params["DelaySeconds"] = 0
            sent.append(params["MessageBody"])

    events = _sqs().meta.events
    events.register("before-parameter-build.sqs.SendMessage", at_once, unique_id="at-once")
    try:
        yield sent
    finally:
        events.unregister("before-parameter-build.sqs.SendMessage", unique_id="at-once")


def assert_accounted(job_id: str, terminal: bool = True) -> JobRecord:
    """The job's counters equal its image records, no filing is left open on it, and (by
    default) it has ended with a record for every image."""
    job = JobRecord.get(job_id, consistent_read=True)
    images = list(
        ImageRecord.query(
            job_id, range_key_condition=ImageRecord.image_index >= 0, consistent_read=True
        )
    )
    states = [image.state for image in images]
    if terminal:
        assert len(images) == job.total, (job_id, len(images), job.total)
    assert open_filings(job_id) == [], job_id
    assert (job.succeeded, job.failed, job.cancelled or 0) == (
        states.count(SUCCEEDED),
        states.count(FAILED),
        states.count(CANCELLED),
    )
    if terminal:
        assert PENDING not in states, job_id
        assert job.finished_at is not None, job_id
        assert job.ongoing_shard is None, job_id
    return job


def open_filings(job_id: str) -> list[str]:
    """The filings still open on the job's item (data/jobs.py file_outcomes)."""
    item = connection().client.get_item(
        TableName=get_settings().jobs_table, Key={"job_id": {"S": job_id}}, ConsistentRead=True
    )["Item"]
    return [name for name in item if name.startswith("filing_")]


def all_job_ids() -> list[str]:
    """Every job in the table (tests only: the service itself never scans)."""
    return [job.job_id for job in JobRecord.scan(consistent_read=True)]


def age_job(job_id: str, created_ago: timedelta, progressed_ago: timedelta | None = None) -> None:
    """Move a job's submit time (and last progress) into the past, as if time had passed."""
    now = datetime.now(UTC)
    actions = [JobRecord.created_at.set(now - created_ago)]
    if progressed_ago is not None:
        actions.append(JobRecord.progressed_at.set(now - progressed_ago))
    JobRecord(job_id=job_id).update(actions=actions)


def run_ingest_queue(aws: Any) -> int:
    """Every message on IngestQueue to the ingest function, as its event source would, until
    none is left (a retry whose first page stopped at a Query's 1 MB goes on there); how
    many it ran."""
    handler = load_handler("ingest").lambda_handler
    ran = 0
    while messages := aws.sqs.receive_message(QueueUrl=aws.ingest_url, MaxNumberOfMessages=10).get(
        "Messages", []
    ):
        for message in messages:
            event = {"Records": [{"messageId": message["MessageId"], "body": message["Body"]}]}
            handler(event, LongContext())
            aws.sqs.delete_message(QueueUrl=aws.ingest_url, ReceiptHandle=message["ReceiptHandle"])
            ran += 1
    return ran
