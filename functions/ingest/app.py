"""IngestQueue -> an upload job's body read from S3 as a stream into its manifest and image
messages (retail_pulse.jobs.ingest), one message (one job) per invocation; or a large
retry's pages reopened and enqueued (retail_pulse.jobs.retry); or a large failed job's
failures summed up page by page (retail_pulse.jobs.summary)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from retail_pulse.api.upload_body import UploadedBody
from retail_pulse.data import connect
from retail_pulse.entry import lambda_entry
from retail_pulse.jobs.ingest import IngestMessage, ingest_upload
from retail_pulse.jobs.retry import continue_retry
from retail_pulse.jobs.summary import continue_summary

connect()


@lambda_entry()
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> None:
    # BatchSize 1 (template.yaml): a record is a job's whole invocation. A record that
    # raises comes back after IngestQueue's visibility timeout; the ingest goes on from its
    # checkpoint then.

    def time_left_s() -> float:
        return context.get_remaining_time_in_millis() / 1000

    for record in event.get("Records") or []:
        message = IngestMessage.model_validate_json(record.get("body") or "{}")
        if message.kind == "retry":
            continue_retry(message.job_id, message.tenant, time_left_s)
            continue
        if message.kind == "summary":
            continue_summary(message.job_id, message.tenant, time_left_s)
            continue
        ingest_upload(
            message,
            owner=f"{context.aws_request_id}:{record.get('messageId', '')}",
            read_body=UploadedBody,
            time_left_s=time_left_s,
        )
