"""Image dead-letter queue -> each image recorded failed, so its job ends (jobs/dead_letter.py).

Only records that crashed the process function (or whose result could not be filed) again
and again get here: retries and records given back unstarted are new messages carrying
their attempt, never counted by the redrive. The failure recorded says it was the service's.
"""

from __future__ import annotations

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from retail_pulse.entry import lambda_entry
from retail_pulse.jobs.dead_letter import settle_dead_letter

# A record that cannot be settled now (DynamoDB trouble) stays on the dead-letter queue
# and comes back; the others are deleted.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def handle_record(record: SQSRecord) -> None:
    settle_dead_letter(record.body)


@lambda_entry()
def lambda_handler(event: dict, context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=handle_record, processor=processor, context=context
    )
