"""Webhook queue -> one signed POST per record to the job's callback_url, retried through
the queue with a backoff for 24 h (retail_pulse.jobs.webhooks).

A batch's deliveries all run at once, each on a thread of its own within its deadline
(WEBHOOK_DEADLINE_S): a receiver that hangs holds only its own delivery, so the others of
its batch, whoever's they are, go out at once and the batch ends within one deadline.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    AsyncBatchProcessor,
    EventType,
    async_process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from retail_pulse.data.queue import delivery_attributes
from retail_pulse.entry import lambda_entry
from retail_pulse.jobs.webhooks import handle_delivery

# A record whose delivery is to be retried is reported failed (its message already hidden
# for the backoff); the others are deleted. Powertools' async processor awaits every
# record's handler together; each handler hands its delivery to a thread.
processor = AsyncBatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def handle_record(record: SQSRecord) -> None:
    receive_count, sent_at = delivery_attributes(record.attributes)
    handle_delivery(
        record.body,
        receive_count=receive_count,
        sent_at=sent_at,
        receipt_handle=record.receipt_handle,
    )


@lambda_entry()
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    records = event.get("Records") or []
    # One thread per record of this batch (the event source's BatchSize at most).
    with ThreadPoolExecutor(
        max_workers=max(1, len(records)), thread_name_prefix="webhook"
    ) as threads:

        async def on_a_thread(record: SQSRecord) -> None:
            await asyncio.get_running_loop().run_in_executor(threads, handle_record, record)

        return async_process_partial_response(
            event=event, record_handler=on_a_thread, processor=processor, context=context
        )
