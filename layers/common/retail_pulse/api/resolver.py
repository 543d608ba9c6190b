"""The API Gateway resolver every HTTP function uses: validation, errors and headers in one
place, so each handler holds only its route."""

from __future__ import annotations

import base64
import binascii
import json
import sys
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.exceptions import ServiceError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.router import Router
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from pydantic import BaseModel

from retail_pulse import errors as domain_errors
from retail_pulse.api.errors import (
    BadRequest,
    PayloadTooLarge,
    describe_validation_errors,
    error_response,
)
from retail_pulse.domain import DEFAULT_TENANT
from retail_pulse.observability import logger
from retail_pulse.settings import get_settings

SECURITY_HEADERS = {
    "Content-Type": "application/json",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
# Arrays and objects inside one another. A job is 4 deep ({"visits": [{"image_url": [..]}]});
# the rest is room for fields a client adds and the API ignores. Far below the depth at
# which json.loads (and any recursive walk after it) runs out of stack.
MAX_JSON_DEPTH = 32


def caller_tenant(event: APIGatewayProxyEvent) -> str:
    """The client a request comes from: the id of its API key, which API Gateway puts in
    requestContext.identity.apiKeyId when the route requires keys. Without keys (a private
    test stack, the local stack without LOCAL_API_KEYS) every request is the default tenant."""
    return event.request_context.identity.api_key_id or DEFAULT_TENANT


def json_response(
    status_code: int,
    body: BaseModel | dict[str, Any],
    headers: Mapping[str, str] | None = None,
) -> Response:
    """A JSON response with the security headers (and any `headers` of the route's own, such
    as Location); models are validated against the route's declared response type, so the
    OpenAPI document cannot drift from what is returned."""
    return Response(
        status_code=status_code,
        content_type="application/json",
        body=body,
        headers={**SECURITY_HEADERS, **(headers or {})},
    )


def text_response(
    status_code: int, body: str, content_type: str, headers: Mapping[str, str] | None = None
) -> Response:
    """A response that is not JSON (a CSV export), with the security headers all the same."""
    return Response(
        status_code=status_code,
        content_type=content_type,
        body=body,
        headers={**SECURITY_HEADERS, "Content-Type": content_type, **(headers or {})},
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


# What a body over the limit should become instead: an upload (jobs/uploads.py). API
# Gateway's own 413 above 10 MB says the same (template.yaml: REQUEST_TOO_LARGE).
UPLOAD_HINT = (
    "upload a larger job with POST /api/uploads, then POST /api/submit/ with its upload_id"
)


def _too_large(size: int, limit: int) -> str:
    return f"request body is {size} bytes; the limit is {limit} (MAX_BODY_BYTES): {UPLOAD_HINT}"


def read_json_body(text: str) -> Any:
    """The body as JSON, for Powertools to validate (its json_body_deserializer), so it
    is parsed once, here. A body that is JSON but that Python cannot turn into objects is
    a BadRequest (400), never the exception json.loads raises: RecursionError past about
    1,000 levels, ValueError for an integer over sys.get_int_max_str_digits() digits.
    Text that is not JSON stays a JSONDecodeError, which Powertools reports as such.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError as error:
        raise BadRequest(_too_deep()) from error
    except ValueError as error:  # the only other ValueError json.loads raises
        raise BadRequest(
            f"the request body has a number with more than {sys.get_int_max_str_digits()} "
            "digits; no field of a job needs one: send count as a plain integer"
        ) from error
    if _depth_over(value, MAX_JSON_DEPTH):
        raise BadRequest(_too_deep())
    return value


def _too_deep() -> str:
    return (
        f"the request body is nested too deeply (over {MAX_JSON_DEPTH} levels of arrays "
        'and objects); a job needs 4: send {"count": ..., "visits": [{"store_id": ..., '
        '"image_url": [...], "visit_time": ...}]}'
    )


def _depth_over(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than `limit` deep; iterative, so a deep value
    cannot exhaust the stack here either."""
    pending: list[tuple[dict[str, Any] | list[Any], int]] = (
        [(value, 1)] if isinstance(value, dict | list) else []
    )
    while pending:
        item, depth = pending.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        pending.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def internal_error_body(context: Any) -> dict[str, str]:
    """What a client sees of a bug on our side: no detail, but the Lambda request id, which
    is the `function_request_id` of every log line of the request (inject_lambda_context),
    so a client quoting it leads straight to the traceback."""
    request_id = str(getattr(context, "aws_request_id", None) or "unknown")
    return {
        "error": f"internal error; it has been logged (request id {request_id})",
        "request_id": request_id,
    }


class _Resolver(APIGatewayRestResolver):
    def resolve(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        try:
            check_body(event)
        except BadRequest as error:
            logger.info("request rejected", extra={"reason": str(error)})
            return _proxy_response(error.status_code, {"error": str(error)})
        try:
            return super().resolve(as_json_request(event), context)
        except Exception:
            # Raised outside the route, where make_resolver's handler cannot see it (e.g.
            # while Powertools serializes the response): still JSON, still logged.
            logger.exception("unhandled error outside the route")
            return _proxy_response(500, internal_error_body(context))


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
    app = _Resolver(
        enable_validation=True, strip_prefixes=None, json_body_deserializer=read_json_body
    )
    app.include_router(router)

    @app.exception_handler(RequestValidationError)
    def _invalid_request(error: RequestValidationError) -> Response:
        if any(e.get("loc", ("",))[0] == "response" for e in error.errors()):
            # Our own response broke its declared model: a bug on our side, never a 400.
            logger.error("response failed validation", extra={"errors": str(error.errors())})
            return json_response(500, internal_error_body(app.lambda_context))
        message = describe_validation_errors(error.errors())
        logger.info("request rejected", extra={"reason": message})
        return json_response(400, {"error": message})

    @app.exception_handler(domain_errors.ServiceError)
    def _domain_error(error: domain_errors.ServiceError) -> Response:
        status, body = error_response(error)
        if status >= 500:
            logger.exception("request interrupted", extra={"cause": repr(error.__cause__)})
        else:
            logger.info("request rejected", extra={"reason": str(error) or type(error).__name__})
        return json_response(status, body)

    @app.exception_handler(BadRequest)
    def _bad_request(error: BadRequest) -> Response:
        logger.info("request rejected", extra={"reason": str(error)})
        return json_response(error.status_code, {"error": str(error)})

    # Handlers are looked up along the exception's MRO, so every more specific one above
    # (and a function's own, such as submit's 503) still wins; this catches the rest.
    @app.exception_handler(Exception)
    def _unexpected(error: Exception) -> Response:
        if isinstance(error, ServiceError):
            # Powertools' own HTTP errors (its 404 and the like): their status, our shape.
            return json_response(error.status_code, {"error": str(error.msg)})
        logger.exception(
            "unhandled error",
            extra={"route": f"{app.current_event.http_method} {app.current_event.path}"},
        )
        return json_response(500, internal_error_body(app.lambda_context))

    @app.not_found
    def _not_found(_: Exception) -> Response:
        return json_response(404, {"error": f"no route for {app.current_event.path}"})

    return app
