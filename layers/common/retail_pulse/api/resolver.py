"""The API Gateway resolver every HTTP function uses: validation, errors and headers in one
place, so each handler holds only its route."""

from __future__ import annotations

import json

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.router import Router

from retail_pulse.api.errors import BadRequest, describe_validation_errors
from retail_pulse.observability import logger

SECURITY_HEADERS = {
    "Content-Type": "application/json",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def json_response(status_code: int, body: object) -> Response:
    return Response(
        status_code=status_code,
        content_type="application/json",
        body=json.dumps(body),
        headers=dict(SECURITY_HEADERS),
    )


def make_resolver(router: Router) -> APIGatewayRestResolver:
    """A REST API resolver with request validation and the project's error shape."""
    app = APIGatewayRestResolver(enable_validation=True, strip_prefixes=None)
    app.include_router(router)

    @app.exception_handler(RequestValidationError)
    def _invalid_request(error: RequestValidationError) -> Response:
        message = describe_validation_errors(error.errors())
        logger.info("request rejected", extra={"reason": message})
        return json_response(400, {"error": message})

    @app.exception_handler(BadRequest)
    def _bad_request(error: BadRequest) -> Response:
        logger.info("request rejected", extra={"reason": str(error)})
        return json_response(error.status_code, {"error": str(error)})

    @app.not_found
    def _not_found(_: Exception) -> Response:
        return json_response(404, {"error": f"no route for {app.current_event.path}"})

    return app
