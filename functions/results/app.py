"""GET /api/results?jobid=&status=&limit=&next=&format=json|csv: every image of one of the
caller's jobs (or those of one status), in submit order, page by page; as CSV, the next
page's token is a response header. POST and GET /api/results/export?jobid=&format=: a
finished job's results as one file, written by the export function (jobs/export.py)."""

from __future__ import annotations

from typing import Annotated, Literal

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from aws_lambda_powertools.utilities.typing import LambdaContext

from retail_pulse.api.headers import (
    EXPORT_FILE_HEADER,
    EXPORT_POLL_HEADERS,
    NEXT_HEADER,
    NEXT_PAGE_HEADER,
)
from retail_pulse.api.models import (
    INTERNAL_ERROR,
    ErrorBody,
    ExportResponse,
    ResultRow,
    ResultsResponse,
    UnknownJobBody,
)
from retail_pulse.api.resolver import caller_tenant, json_response, make_resolver, text_response
from retail_pulse.domain import ExportFormat, ImageState
from retail_pulse.entry import lambda_entry
from retail_pulse.jobs.export import ExportAnswer, export_status, poll_path, request_export
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


ExportFormatQuery = Annotated[
    ExportFormat,
    Query(
        alias="format",
        description="csv (default): the header and rows of format=csv; jsonl: one JSON "
        "object a line, the rows of GET /api/results",
    ),
]
_EXPORT_ANSWERS: dict[int, OpenAPIResponse] = {
    202: {
        "description": "The file is being written: poll the Location (GET) after Retry-After",
        "headers": EXPORT_POLL_HEADERS,
        "content": {"application/json": {"model": ExportResponse}},
    },
    303: {
        "description": "The file is written: the Location is a presigned S3 GET of it",
        "headers": EXPORT_FILE_HEADER,
        "content": {"application/json": {"model": ExportResponse}},
    },
    400: {
        "description": "`{}` when the caller has no job with this id (as GET /api/results); "
        '`{"error": ...}` when jobid is missing or format is not csv or jsonl',
        "content": {"application/json": {"model": UnknownJobBody | ErrorBody}},
    },
    **INTERNAL_ERROR,
}


@router.post(
    "/api/results/export",
    summary="Export a finished job's results as one file",
    description="Starts writing every row of GET /api/results (every image once, in submit "
    "order) to one file, CSV or JSON Lines, or answers the export this job has in this "
    "format already: the same request twice answers the same export. A failed export, or "
    "one made before the job was retried, is replaced by a new one. The file is kept as "
    "long as the job (RETENTION_DAYS after submit).",
    responses={
        **_EXPORT_ANSWERS,
        409: {
            "description": "The job has not finished (ongoing, or its last images are still "
            "being filed): export it once GET /api/status says it is done",
            "content": {"application/json": {"model": ErrorBody}},
        },
    },
)
def export_results(
    jobid: Annotated[str, Query(description="The job_id that submit returned")],
    file_format: ExportFormatQuery = "csv",
) -> Response[ExportResponse]:
    logger.append_keys(job_id=jobid)
    answer = request_export(caller_tenant(router.current_event), jobid, file_format)
    return _export_response(answer)


@router.get(
    "/api/results/export",
    summary="Poll a results export",
    description="202 while the file is written, 303 to a presigned S3 URL of it once it is, "
    '200 with `"state": "failed"` and the `error` when it could not be written.',
    responses={
        **_EXPORT_ANSWERS,
        200: {
            "description": "The export failed: `error` says why; POST again for a new one",
            "content": {"application/json": {"model": ExportResponse}},
        },
        404: {
            "description": "The job has no export in this format (none was asked for, or the "
            "job was retried since): POST /api/results/export",
            "content": {"application/json": {"model": ErrorBody}},
        },
    },
)
def export_poll(
    jobid: Annotated[str, Query(description="The job_id that submit returned")],
    file_format: ExportFormatQuery = "csv",
) -> Response[ExportResponse]:
    logger.append_keys(job_id=jobid)
    answer = export_status(caller_tenant(router.current_event), jobid, file_format)
    return _export_response(answer)


def _export_response(answer: ExportAnswer) -> Response[ExportResponse]:
    """303 to the file once written (the presigned URL is never logged), 202 with where
    and when to poll while it is, 200 saying why when it failed."""
    export = answer.export
    body = ExportResponse(
        job_id=export.job_id,
        format=export.file_format,
        state=export.state,
        rows=export.rows,
        bytes=export.size,
        error=export.error,
        url_expires_in=answer.url_expires_s,
    )
    if answer.url is not None:
        return json_response(303, body, {"Location": answer.url})
    if answer.retry_after_s is not None:
        headers = {
            "Location": poll_path(export.job_id, export.file_format),
            "Retry-After": str(answer.retry_after_s),
        }
        return json_response(202, body, headers)
    return json_response(200, body)


app = make_resolver(router)


@lambda_entry(api=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
