"""POST /api/submit/: validate a job, record it, enqueue its images, answer 201 {job_id}."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from retail_pulse.api.errors import BadRequest
from retail_pulse.api.models import SubmitRequest, SubmitResponse
from retail_pulse.api.resolver import json_response, make_resolver
from retail_pulse.jobs.submit import submit_job
from retail_pulse.observability import logger, metrics, tracer

router = APIGatewayRouter()


# Powertools matches /api/submit and /api/submit/ alike; the template routes both here.
@router.post("/api/submit/")
def submit(job: SubmitRequest) -> Response[SubmitResponse]:
    try:
        job.check_consistency()
    except ValueError as error:
        raise BadRequest(str(error)) from error
    return json_response(201, SubmitResponse(job_id=submit_job(job)))


app = make_resolver(router)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return app.resolve(event, context)
