"""POST /api/uploads: a presigned S3 POST for a job too large for a request body."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from aws_lambda_powertools.utilities.typing import LambdaContext

from retail_pulse.api.models import INTERNAL_ERROR, UploadResponse
from retail_pulse.api.resolver import caller_tenant, json_response, make_resolver
from retail_pulse.entry import lambda_entry
from retail_pulse.jobs.uploads import create_upload
from retail_pulse.timestamps import format_timestamp

router = APIGatewayRouter()


@router.post(
    "/api/uploads",
    summary="Upload a job too large for a request body",
    description="Answers a presigned S3 POST: send the job's JSON body (the body POST "
    "/api/submit/ takes) to upload_url as multipart/form-data, upload_fields first and the "
    'file last, then POST /api/submit/ with {"upload_id": ...}. S3 refuses a body over '
    "max_bytes, and the URL after expires_at.",
    responses={
        201: {
            "description": "The upload, and how to send it",
            "content": {"application/json": {"model": UploadResponse}},
        },
        **INTERNAL_ERROR,
    },
)
def uploads() -> Response[UploadResponse]:
    ticket = create_upload(caller_tenant(router.current_event))
    assert ticket.expires_at is not None
    body = UploadResponse(
        upload_id=ticket.upload.upload_id,
        upload_url=ticket.url,
        upload_method="POST",
        upload_fields=ticket.fields,
        expires_at=format_timestamp(ticket.expires_at),
        max_bytes=ticket.upload.max_bytes,
    )
    return json_response(201, body)


app = make_resolver(router)


@lambda_entry(api=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
