"""SQS batch -> one measured image per record, the records of a batch concurrently.

Each record mostly waits (download, then the GPU stand-in), so a batch of 10 takes about
as long as its slowest image; only failed records are reported back for redelivery.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import cast

from aws_lambda_powertools.utilities.batch import (
    AsyncBatchProcessor,
    EventType,
    async_process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from retail_pulse.data import connect
from retail_pulse.entry import lambda_entry
from retail_pulse.jobs.process import RetryLater, finish_jobs, process_image_message
from retail_pulse.observability import logger

connect()
# One thread per record of the largest batch (the event source's BatchSize is 10).
_workers = ThreadPoolExecutor(max_workers=10, thread_name_prefix="image")
# A batch whose every record failed is still a partial response: raising would count as a
# function error and hide which records to retry.
processor = AsyncBatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


async def handle_record(record: SQSRecord) -> None:
    await asyncio.get_running_loop().run_in_executor(_workers, process_record, record)


def process_record(record: SQSRecord) -> None:
    """Runs on a worker thread, whose log keys name this record's image: so does the line
    of a failure, which the event loop's thread could not label."""
    receive_count = int(record.attributes.approximate_receive_count or 1)
    sent_at = datetime.fromtimestamp(int(record.attributes.sent_timestamp) / 1000, UTC)
    try:
        process_image_message(
            record.body, receive_count, record.receipt_handle, sent_at, finish=False
        )
    except RetryLater:
        raise  # already logged, and its redelivery is scheduled
    except Exception:
        logger.exception(
            "image message failed; SQS will deliver it again",
            extra={"message_id": record.message_id, "receive_count": receive_count},
        )
        raise


@lambda_entry()
def lambda_handler(event: dict, context: LambdaContext) -> PartialItemFailureResponse:
    response = async_process_partial_response(
        event=event, record_handler=handle_record, processor=processor, context=context
    )
    # The processor keeps the raw records of the batch's successes (event dicts).
    finish_jobs(cast(dict, record)["body"] for record in processor.success_messages)
    return response
