"""GET /api/status?jobid=: ongoing, completed, or failed with one error per failed store."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from retail_pulse.api.models import StatusResponse, UnknownJobBody
from retail_pulse.api.resolver import json_response, make_resolver
from retail_pulse.jobs.status import job_status
from retail_pulse.observability import logger, metrics, tracer

router = APIGatewayRouter()


@router.get("/api/status")
def status(
    jobid: Annotated[str, Query(description="The job_id that submit returned")],
) -> Response[StatusResponse | UnknownJobBody]:
    logger.append_keys(job_id=jobid)
    result = job_status(jobid)
    if result is None:
        # The SPEC's contract: an unknown job is a 400 with an empty object.
        return json_response(400, UnknownJobBody())
    return json_response(200, result)


app = make_resolver(router)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
