"""The API Gateway resolver every HTTP function uses: validation, errors and headers in one
place, so each handler holds only its route."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.router import Router
from pydantic import BaseModel

from retail_pulse.api.errors import BadRequest, describe_validation_errors
from retail_pulse.observability import logger

SECURITY_HEADERS = {
    "Content-Type": "application/json",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def json_response(status_code: int, body: BaseModel | dict[str, Any]) -> Response:
    """A JSON response with the security headers; models are validated against the route's
    declared response type, so the OpenAPI document cannot drift from what is returned."""
    return Response(
        status_code=status_code,
        content_type="application/json",
        body=body,
        headers=dict(SECURITY_HEADERS),
    )


def make_resolver(router: Router) -> APIGatewayRestResolver:
    """A REST API resolver with request validation and the project's error shape."""
    app = APIGatewayRestResolver(enable_validation=True, strip_prefixes=None)
    app.include_router(router)

    @app.exception_handler(RequestValidationError)
    def _invalid_request(error: RequestValidationError) -> Response:
        if any(e.get("loc", ("",))[0] == "response" for e in error.errors()):
            # Our own response broke its declared model: a bug on our side, never a 400.
            logger.error("response failed validation", extra={"errors": str(error.errors())})
            return json_response(500, {"error": "internal error; it has been logged"})
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
