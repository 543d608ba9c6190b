"""The API Gateway resolver every HTTP function uses: validation, errors and headers in one
place, so each handler holds only its route."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.router import Router
from pydantic import BaseModel

from retail_pulse.api.errors import BadRequest, PayloadTooLarge, describe_validation_errors
from retail_pulse.observability import logger
from retail_pulse.settings import get_settings

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


def check_body(event: Mapping[str, Any]) -> None:
    """Refuse a body over MAX_BODY_BYTES, or one that is not UTF-8 text, before anything
    parses it: Powertools' validation would parse first and answer a 500 for bytes that are
    not UTF-8."""
    body = event.get("body")
    if not body or not isinstance(body, str):
        return
    limit = get_settings().max_body_bytes
    base64_encoded = bool(event.get("isBase64Encoded"))
    # Base64 holds 3 bytes per 4 characters: no need to decode a body that is too big.
    size = (
        len(body) * 3 // 4 - body[-2:].count("=")
        if base64_encoded
        else len(body.encode("utf-8", errors="surrogatepass"))
    )
    if size > limit:
        raise PayloadTooLarge(_too_large(size, limit))
    if base64_encoded:
        try:
            raw = base64.b64decode(body, validate=True)
            raw.decode("utf-8")
        except (binascii.Error, ValueError) as error:
            raise BadRequest("the request body is not UTF-8 text; send a JSON object") from error


def as_json_request(event: Mapping[str, Any]) -> Mapping[str, Any]:
    """Every body is read as JSON, whatever its Content-Type says.

    `curl -d` labels a JSON body application/x-www-form-urlencoded, and other clients send
    text/plain or nothing; the API only speaks JSON, so such a body is parsed as JSON (and
    answered with the usual 400 if it is not). Powertools would otherwise parse it as a
    form, as multipart (a 500 without a boundary) or answer 415 in its own shape.
    """
    if not event.get("body"):
        return event
    headers = {k: v for k, v in (event.get("headers") or {}).items() if k.lower() != "content-type"}
    multi = {
        k: v
        for k, v in (event.get("multiValueHeaders") or {}).items()
        if k.lower() != "content-type"
    }
    headers["Content-Type"] = "application/json"
    multi["Content-Type"] = ["application/json"]
    return {**event, "headers": headers, "multiValueHeaders": multi}


def _too_large(size: int, limit: int) -> str:
    return f"request body is {size} bytes; the limit is {limit} (MAX_BODY_BYTES)"


class _Resolver(APIGatewayRestResolver):
    def resolve(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        try:
            check_body(event)
        except BadRequest as error:
            logger.info("request rejected", extra={"reason": str(error)})
            return _proxy_response(error.status_code, {"error": str(error)})
        return super().resolve(as_json_request(event), context)


def _proxy_response(status_code: int, body: dict[str, Any]) -> dict[str, Any]:
    """The Lambda proxy result Powertools would build for json_response(status_code, body)."""
    return {
        "statusCode": status_code,
        "multiValueHeaders": {name: [value] for name, value in SECURITY_HEADERS.items()},
        "body": json.dumps(body, separators=(",", ":")),
        "isBase64Encoded": False,
    }


def make_resolver(router: Router) -> APIGatewayRestResolver:
    """A REST API resolver with request validation and the project's error shape."""
    app = _Resolver(enable_validation=True, strip_prefixes=None)
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
