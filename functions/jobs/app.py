"""GET /api/jobs?status=&limit=&next=: the caller's jobs, newest first, page by page."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BeforeValidator

from retail_pulse.api.models import INTERNAL_ERROR, ErrorBody, JobsResponse, JobSummary
from retail_pulse.api.resolver import caller_tenant, json_response, make_resolver
from retail_pulse.domain import JobState
from retail_pulse.entry import lambda_entry
from retail_pulse.jobs.job_list import DEFAULT_LIMIT, MAX_LIMIT, list_jobs

router = APIGatewayRouter()


@router.get(
    "/api/jobs",
    summary="The caller's jobs, newest first",
    description=(
        "Every job of the caller (its API key), newest first, or only those of one status. "
        f"At most `limit` jobs a page (default {DEFAULT_LIMIT}); a response has `next` only "
        "when another page exists."
    ),
    responses={
        200: {
            "description": "One page of jobs",
            "content": {"application/json": {"model": JobsResponse}},
        },
        400: {
            "description": "An unknown status, a bad limit, or a next token that is not this "
            "client's and this query's",
            "content": {"application/json": {"model": ErrorBody}},
        },
        **INTERNAL_ERROR,
    },
)
def jobs(
    status: Annotated[
        JobState | None,
        # `status=` (empty) is no filter, as an empty visits parameter counts as absent.
        BeforeValidator(lambda value: value or None),
        Query(description="Only jobs of this status; empty or absent: every status"),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="Most jobs in one response")
    ] = DEFAULT_LIMIT,
    next_token: Annotated[
        str | None,
        Query(alias="next", description="The `next` of the previous page, with the same status"),
    ] = None,
) -> Response[JobsResponse]:
    page = list_jobs(
        caller_tenant(router.current_event), status, limit=limit, next_token=next_token
    )
    body = JobsResponse(jobs=[JobSummary.of(job) for job in page.jobs], next=page.next)
    return json_response(200, body)


app = make_resolver(router)


@lambda_entry(api=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
