"""SQS batch -> one measured image per record, the records of a batch concurrently, their
results filed per job (retail_pulse.jobs.process.process_batch).

Each record mostly waits (download, then the GPU stand-in), so a batch of 99 takes about as
long as its slowest image; only failed records are reported back for redelivery.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from retail_pulse.data import connect
from retail_pulse.data.queue import delivery_attributes
from retail_pulse.entry import lambda_entry
from retail_pulse.jobs.process import BatchRecord, ByteBudget, process_batch
from retail_pulse.settings import get_settings

connect()
# Built once per execution environment: a batch's images run on these threads, holding at
# most IMAGE_BYTES_IN_FLIGHT bytes of image bodies at once between them. Whether a job was
# cancelled is read afresh by each batch (process_batch), then at most once a second.
_settings = get_settings()
_workers = ThreadPoolExecutor(max_workers=_settings.image_concurrency, thread_name_prefix="image")
_budget = ByteBudget(_settings.image_bytes_in_flight)


def batch_record(record: dict[str, Any]) -> BatchRecord:
    """A record of the event as process_batch takes it (Lambda's SQS record shape)."""
    receive_count, sent_at = delivery_attributes(record.get("attributes") or {})
    return BatchRecord(
        message_id=record["messageId"],
        body=record.get("body") or "",
        receive_count=receive_count,
        receipt_handle=record.get("receiptHandle") or "",
        sent_at=sent_at,
    )


@lambda_entry()
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    records = [batch_record(record) for record in event.get("Records") or []]
    failed = process_batch(
        records,
        _workers,
        _budget,
        lambda: context.get_remaining_time_in_millis() / 1000,
    )
    # A batch whose every record failed is still a partial response: a function error would
    # hide which records to retry, and Lambda would deliver them all again.
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}
