"""GET /api/visits: measured images read back by store, area and time range, page by page."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from aws_lambda_powertools.utilities.typing import LambdaContext

from retail_pulse.api.models import INTERNAL_ERROR, ErrorBody, VisitsResponse
from retail_pulse.api.resolver import caller_tenant, json_response, make_resolver
from retail_pulse.entry import lambda_entry
from retail_pulse.visits.query import DEFAULT_LIMIT, MAX_LIMIT
from retail_pulse.visits.service import find_visits

router = APIGatewayRouter()


@router.get(
    "/api/visits",
    summary="Measured images, grouped by store",
    description=(
        "One data entry per successfully processed image, oldest first; stores in store-id "
        "order. Every parameter is optional and an empty one counts as absent. With neither "
        "area nor storeid, every area of the store master is read. Results come in pages of "
        f"at most `limit` entries (default {DEFAULT_LIMIT}); a response has `next` only when "
        "another page exists, and a store may continue on the next page."
    ),
    responses={
        200: {
            "description": "The results",
            "content": {"application/json": {"model": VisitsResponse}},
        },
        400: {
            "description": (
                "An unknown area or storeid, a store outside the given area, a date that does "
                "not parse, startdate after enddate, a bad limit, or a next token that is not "
                "this query's"
            ),
            "content": {"application/json": {"model": ErrorBody}},
        },
        **INTERNAL_ERROR,
    },
)
def visits(
    area: Annotated[str | None, Query(description="An area code of the store master")] = None,
    storeid: Annotated[str | None, Query(description="A store id of the store master")] = None,
    startdate: Annotated[
        str | None,
        Query(
            description="Earliest visit_time, inclusive: RFC 3339 (no offset means UTC), "
            "or a date for the start of that UTC day"
        ),
    ] = None,
    enddate: Annotated[
        str | None,
        Query(
            description="Latest visit_time, inclusive: RFC 3339 (no offset means UTC), "
            "or a date for the end of that UTC day"
        ),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="Most data entries in one response")
    ] = DEFAULT_LIMIT,
    next_token: Annotated[
        str | None,
        Query(alias="next", description="The `next` of the previous page, with the same filters"),
    ] = None,
) -> Response[VisitsResponse]:
    tenant = caller_tenant(router.current_event)
    page = find_visits(
        tenant, area, storeid, startdate, enddate, limit=limit, next_token=next_token
    )
    return json_response(200, VisitsResponse.model_validate(page, from_attributes=True))


app = make_resolver(router)


@lambda_entry(api=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
