"""ExportQueue -> a finished job's results written to one file in S3, part by part
(retail_pulse.jobs.export), one message (one export) per invocation."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from retail_pulse.data import connect
from retail_pulse.entry import lambda_entry
from retail_pulse.jobs.export import ExportMessage, write_export

connect()


@lambda_entry()
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> None:
    # BatchSize 1 (template.yaml): a record is an export's whole invocation. A record that
    # raises comes back after ExportQueue's visibility timeout; the writing goes on from its
    # checkpoint then (or fails the export once MAX_ATTEMPTS invocations died on it).
    for record in event.get("Records") or []:
        message = ExportMessage.model_validate_json(record.get("body") or "{}")
        write_export(
            message,
            owner=f"{context.aws_request_id}:{record.get('messageId', '')}",
            time_left_s=lambda: context.get_remaining_time_in_millis() / 1000,
        )
