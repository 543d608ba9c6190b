"""GET /api/status?jobid=: ongoing, completed, or failed with the first error of each failed
store (at most 100 of them) and how many stores failed; one read of the job whatever it is."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from aws_lambda_powertools.utilities.typing import LambdaContext

from retail_pulse.api.headers import RETRY_AFTER_HEADER
from retail_pulse.api.models import INTERNAL_ERROR, ErrorBody, StatusResponse, UnknownJobBody
from retail_pulse.api.resolver import caller_tenant, json_response, make_resolver
from retail_pulse.entry import lambda_entry
from retail_pulse.jobs.status import job_status
from retail_pulse.observability import logger, tracer

router = APIGatewayRouter()


@router.get(
    "/api/status",
    summary="A job's status",
    responses={
        200: {
            "description": "ongoing, completed, or failed with the first error of each failed "
            "store, at most 100 stores in store id order, `error_count` (how many failed) and "
            "`error_truncated` (whether `error` leaves some out: every failure is in "
            "GET /api/results?status=failed)",
            "headers": RETRY_AFTER_HEADER,
            "content": {"application/json": {"model": StatusResponse}},
        },
        400: {
            "description": "`{}` when no job has this id (the SPEC's contract); "
            '`{"error": ...}` when jobid is missing',
            "content": {"application/json": {"model": UnknownJobBody | ErrorBody}},
        },
        **INTERNAL_ERROR,
    },
)
def status(
    jobid: Annotated[str, Query(description="The job_id that submit returned")],
) -> Response[StatusResponse | UnknownJobBody]:
    logger.append_keys(job_id=jobid)
    tracer.put_annotation(key="job_id", value=jobid[:256])
    # An unknown job raises UnknownJob: the SPEC's 400 {} (api/errors.py).
    found = job_status(caller_tenant(router.current_event), jobid)
    status = StatusResponse.model_validate(found, from_attributes=True)
    # Only an ongoing job has it: when asking again is worth it (jobs/status.py).
    headers = {"Retry-After": str(found.retry_after_s)} if found.retry_after_s else None
    return json_response(200, status, headers)


app = make_resolver(router)


@lambda_entry(api=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
