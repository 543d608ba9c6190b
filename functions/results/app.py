"""GET /api/results?jobid=&status=&limit=&next=&format=json|csv: every image of one of the
caller's jobs (or those of one status), in submit order, page by page; as CSV, the next
page's token is a response header."""

from __future__ import annotations

from typing import Annotated, Literal

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from aws_lambda_powertools.utilities.typing import LambdaContext

from retail_pulse.api.models import (
    INTERNAL_ERROR,
    NEXT_HEADER,
    NEXT_PAGE_HEADER,
    ErrorBody,
    ResultRow,
    ResultsResponse,
    UnknownJobBody,
)
from retail_pulse.api.resolver import caller_tenant, json_response, make_resolver, text_response
from retail_pulse.domain import ImageState
from retail_pulse.entry import lambda_entry
from retail_pulse.jobs.results import (
    CSV_COLUMNS,
    DEFAULT_LIMIT,
    MAX_LIMIT,
    SCAN_BUDGET,
    job_results,
    to_csv,
)
from retail_pulse.observability import logger, tracer

router = APIGatewayRouter()

CSV_TYPE = "text/csv; charset=utf-8"


@router.get(
    "/api/results",
    summary="A job's results, one row per image",
    description=(
        "Every image of the job in submit order, whatever its state: pending, succeeded "
        "(perimeter, width, height), failed (error) or cancelled; null where a value is "
        "absent. With `status`, only the images of that status (every failure of a job "
        "whose status lists 100 stores: status=failed). At most `limit` rows a page "
        f"(default {DEFAULT_LIMIT}); a page filtered by succeeded, pending or cancelled "
        f"looks at {SCAN_BUDGET:,} images at most, so it may hold fewer rows, even none, "
        "with a `next` to go on. As JSON a response has `next` only when images remain to "
        "look at; with format=csv every page starts with the header row "
        f"({','.join(CSV_COLUMNS)}) and the next page's token is the {NEXT_HEADER} header."
    ),
    responses={
        200: {
            "description": "One page of the job's images",
            "headers": NEXT_PAGE_HEADER,
            "content": {
                "application/json": {"model": ResultsResponse},
                "text/csv": {"schema": {"type": "string"}},
            },
        },
        400: {
            "description": "`{}` when the caller has no job with this id (as GET /api/status); "
            '`{"error": ...}` when jobid is missing, status, limit or format is bad, or the '
            "next token is not this client's, this job's and this status filter's",
            "content": {"application/json": {"model": UnknownJobBody | ErrorBody}},
        },
        **INTERNAL_ERROR,
    },
)
def results(
    jobid: Annotated[str, Query(description="The job_id that submit returned")],
    status: Annotated[
        ImageState | None,
        Query(description="Only the images of this status (default: every image)"),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="Most images in one response")
    ] = DEFAULT_LIMIT,
    next_token: Annotated[
        str | None,
        Query(
            alias="next",
            description="The `next` of the previous page, with the same jobid and status",
        ),
    ] = None,
    output: Annotated[
        Literal["json", "csv"], Query(alias="format", description="json (default) or csv")
    ] = "json",
) -> Response[ResultsResponse | str]:
    logger.append_keys(job_id=jobid)
    tracer.put_annotation(key="job_id", value=jobid[:256])
    # An unknown job, or another client's, raises UnknownJob: 400 {} (api/errors.py).
    page = job_results(caller_tenant(router.current_event), jobid, limit, next_token, status)
    if output == "csv":
        headers = {NEXT_HEADER: page.next} if page.next else None
        return text_response(200, to_csv(page.results), CSV_TYPE, headers)
    body = ResultsResponse(results=[ResultRow.of(row) for row in page.results], next=page.next)
    return json_response(200, body)


app = make_resolver(router)


@lambda_entry(api=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
