"""POST /api/cancel?jobid= and POST /api/retry?jobid=: a client's actions on its own job."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from aws_lambda_powertools.utilities.typing import LambdaContext

from retail_pulse.api.headers import RETRY_AFTER_HEADER
from retail_pulse.api.models import INTERNAL_ERROR, ErrorBody, StatusResponse, UnknownJobBody
from retail_pulse.api.resolver import caller_tenant, json_response, make_resolver
from retail_pulse.domain import JobStatus
from retail_pulse.entry import lambda_entry
from retail_pulse.jobs.actions import cancel_job, retry_job
from retail_pulse.observability import logger, tracer

router = APIGatewayRouter()

JobId = Annotated[str, Query(description="The job_id that submit returned")]


def _responses(
    done: str, conflict: str, extra: dict[int, OpenAPIResponse] | None = None
) -> dict[int, OpenAPIResponse]:
    return {
        **(extra or {}),
        200: {
            "description": done,
            "headers": RETRY_AFTER_HEADER,
            "content": {"application/json": {"model": StatusResponse}},
        },
        400: {
            "description": "`{}` when the caller has no job with this id; "
            '`{"error": ...}` when jobid is missing',
            "content": {"application/json": {"model": UnknownJobBody | ErrorBody}},
        },
        409: {"description": conflict, "content": {"application/json": {"model": ErrorBody}}},
        **INTERNAL_ERROR,
    }


def _answer(found: JobStatus) -> Response[StatusResponse]:
    status = StatusResponse.model_validate(found, from_attributes=True)
    headers = {"Retry-After": str(found.retry_after_s)} if found.retry_after_s else None
    return json_response(200, status, headers)


def _label(jobid: str) -> None:
    logger.append_keys(job_id=jobid)
    tracer.put_annotation(key="job_id", value=jobid[:256])


@router.post(
    "/api/cancel",
    summary="Cancel an ongoing job",
    description=(
        "The job is `cancelled` at once. Its images not yet processed are never downloaded "
        "(they count in `progress.cancelled`); results already filed stay. An image already "
        "being measured may still finish, moving from `cancelled` to `succeeded` or "
        "`failed`: the three always add up to `total`."
    ),
    responses=_responses(
        "The job's status, now `cancelled`",
        "The job has already finished (every image counted, even before its end is "
        "stamped) or is cancelled, or kept changing too fast to cancel",
    ),
)
def cancel(jobid: JobId) -> Response[StatusResponse]:
    _label(jobid)
    return _answer(cancel_job(caller_tenant(router.current_event), jobid))


@router.post(
    "/api/retry",
    summary="Re-run a failed job's failed images",
    description=(
        "The failed images go back to pending and are processed again; images of stores "
        "that are still not in the store master stay failed. The job is `ongoing` until "
        "they end, and then sends its job.finished event again (a new event_id)."
    ),
    responses=_responses(
        "The job's status, now `ongoing`",
        "The job is not `failed`, or none of its failed images can be re-run",
        {
            503: {
                "description": "Storage failed while the job was being reopened; send the "
                "same retry again",
                "content": {"application/json": {"model": ErrorBody}},
            }
        },
    ),
)
def retry(jobid: JobId) -> Response[StatusResponse]:
    _label(jobid)
    return _answer(retry_job(caller_tenant(router.current_event), jobid))


app = make_resolver(router)


@lambda_entry(api=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
