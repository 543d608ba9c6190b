"""Webhook queue -> one signed POST per record to the job's callback_url, retried through
the queue with a backoff for 24 h (retail_pulse.jobs.webhooks)."""

from __future__ import annotations

from datetime import UTC, datetime

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from retail_pulse.entry import lambda_entry
from retail_pulse.jobs.webhooks import handle_delivery

# A record whose delivery is to be retried is reported failed (its message already hidden
# for the backoff); the others are deleted.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def handle_record(record: SQSRecord) -> None:
    attributes = record.attributes
    sent = attributes.get("SentTimestamp")
    handle_delivery(
        record.body,
        receive_count=int(attributes.get("ApproximateReceiveCount") or 1),
        sent_at=datetime.fromtimestamp(int(sent) / 1000, UTC) if sent else None,
        receipt_handle=record.receipt_handle,
    )


@lambda_entry()
def lambda_handler(event: dict, context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=handle_record, processor=processor, context=context
    )
