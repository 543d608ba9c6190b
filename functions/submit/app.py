"""POST /api/submit/: validate a job, record it, enqueue its images, answer 201 {job_id}.

With an `Idempotency-Key` header, the same request within 24 h answers the same job_id. A
body `{"upload_id"}` submits a job uploaded with POST /api/uploads: the job is made at once
and its upload read by the ingest function (jobs/uploads.py); the same upload submitted
again answers the same job.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from aws_lambda_powertools.utilities.typing import LambdaContext

from retail_pulse.api.errors import BadRequest
from retail_pulse.api.headers import LOCATION_HEADER
from retail_pulse.api.models import (
    INTERNAL_ERROR,
    ErrorBody,
    SubmitBody,
    SubmitResponse,
    UploadSubmitRequest,
)
from retail_pulse.api.resolver import caller_tenant, json_response, make_resolver
from retail_pulse.entry import lambda_entry
from retail_pulse.jobs.submit import HEADER, remember_invocation, submit_job
from retail_pulse.jobs.uploads import submit_upload

router = APIGatewayRouter()


# Powertools matches /api/submit and /api/submit/ alike; the template routes both here.
@router.post(
    "/api/submit/",
    summary="Submit a job of store visits",
    responses={
        201: {
            "description": "Job accepted",
            "headers": LOCATION_HEADER,
            "content": {"application/json": {"model": SubmitResponse}},
        },
        400: {
            "description": "The body is not JSON, a field is missing or of the wrong type, "
            "count != len(visits), the job is over a size limit, or its upload_id is not "
            "the caller's upload (or has nothing uploaded yet)",
            "content": {"application/json": {"model": ErrorBody}},
        },
        413: {
            "description": "The body is over MAX_BODY_BYTES; it is refused before parsing. "
            "Upload a larger job: POST /api/uploads, then submit its upload_id",
            "content": {"application/json": {"model": ErrorBody}},
        },
        409: {
            "description": "A request with this Idempotency-Key is still being processed "
            "(retry in a few seconds to get its job_id), or the key was used in the last "
            "24 h for a different body (use a new key)",
            "content": {"application/json": {"model": ErrorBody}},
        },
        503: {
            "description": "Storage failed part-way through; send the same request again",
            "content": {"application/json": {"model": ErrorBody}},
        },
        **INTERNAL_ERROR,
    },
)
def submit(job: Annotated[SubmitBody, Body()]) -> Response[SubmitResponse]:
    tenant = caller_tenant(router.current_event)
    if isinstance(job, UploadSubmitRequest):
        job_id = submit_upload(tenant, job.upload_id)
    else:
        try:
            job.check_consistency()
        except ValueError as error:
            raise BadRequest(str(error)) from error
        key = router.current_event.headers.get(HEADER)
        job_id = submit_job(job.to_job_request(tenant), key)
    # The polling contract: where to follow the job.
    location = f"/api/status?jobid={quote(job_id, safe='')}"
    return json_response(201, SubmitResponse(job_id=job_id), {"Location": location})


app = make_resolver(router)


@lambda_entry(api=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    remember_invocation(context)
    return app.resolve(event, context)
