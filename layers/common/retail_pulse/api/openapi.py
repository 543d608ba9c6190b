"""One OpenAPI document for every HTTP function: their routers joined in one resolver.

Each function owns its routes (functions/<name>/app.py exposes `router`); the document is
generated from those same routes, so it cannot drift from the handlers. scripts/openapi.py
finds the routers and writes openapi.json.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.event_handler.router import Router

from retail_pulse.api.models import GatewayMessageBody

TITLE = "Retail Pulse"
DESCRIPTION = (
    "Submit jobs of store visits with image URLs; every image is downloaded and measured "
    "(perimeter = 2 * (width + height)). Follow a job with /api/status (submit's Location; "
    "Retry-After while ongoing), list your jobs with /api/jobs, export a job's results "
    "with /api/results (JSON or CSV) and read the measurements back by store and area with "
    '/api/visits. Every 4xx body is JSON: {"error": "..."}, except the SPEC\'s {} for an '
    "unknown job."
)
# Powertools documents a 422 for request validation; make_resolver answers those with 400.
_UNUSED_BY_US = (422,)
# The template's RequireApiKey (default "true"): every route needs a key of the usage plan.
SECURITY_SCHEME = "api_key"
_SECURITY_SCHEMES = {
    SECURITY_SCHEME: {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
        "description": "A key of the API's usage plan (template.yaml RequireApiKey, the "
        "default): it names the client, and the plan throttles and caps each key.",
    }
}
# What API Gateway answers by itself, before any function runs (template.yaml's
# GatewayResponses give them the security headers; the body is the gateway's own).
_GATEWAY_MESSAGE = {
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/GatewayMessageBody"}}}
}
GATEWAY_RESPONSES: dict[str, dict[str, Any]] = {
    "GatewayForbidden": {
        "description": "API Gateway: no x-api-key, or one the usage plan does not know "
        '(`{"message": "Forbidden"}`)',
        **_GATEWAY_MESSAGE,
    },
    "GatewayThrottled": {
        "description": "API Gateway: the key is over its usage plan's rate, burst or daily "
        'quota (`{"message": "Too Many Requests"}` or `"Limit Exceeded"`); wait and retry',
        **_GATEWAY_MESSAGE,
    },
    "GatewayTooLarge": {
        "description": "API Gateway: the request body is over its 10 MB payload limit",
        **_GATEWAY_MESSAGE,
    },
}
_GATEWAY_CODES = {"403": "GatewayForbidden", "429": "GatewayThrottled"}
_POWERTOOLS_VALIDATION_SCHEMAS = (
    "HTTPValidationError",
    "ValidationError",
    "ResponseValidationError",
)


def build_openapi(
    routers: Iterable[Router], version: str, routes: Iterable[tuple[str, str]]
) -> dict[str, Any]:
    """The OpenAPI 3 document of the routes in `routers`, as the handlers really answer.

    `routes` are the (METHOD, path) pairs API Gateway serves (template.yaml's Api events):
    Powertools drops a trailing slash, so a path served with and without one is listed
    both ways, and a route without a handler (or a handler without a route) is an error.
    """
    app = APIGatewayRestResolver(enable_validation=True)
    for router in routers:
        app.include_router(router)
    document = json.loads(
        app.get_openapi_json_schema(title=TITLE, version=version, description=DESCRIPTION)
    )
    document["paths"] = _as_served(document.get("paths", {}), set(routes))
    for path in document["paths"].values():
        for operation in path.values():
            for code in _UNUSED_BY_US:
                operation.get("responses", {}).pop(str(code), None)
    _add_gateway_answers(document)
    schemas = document.get("components", {}).get("schemas", {})
    text = json.dumps({k: v for k, v in document.items() if k != "components"})
    for name in _POWERTOOLS_VALIDATION_SCHEMAS:
        if f'"#/components/schemas/{name}"' not in text:
            schemas.pop(name, None)
    return document


def _add_gateway_answers(document: dict[str, Any]) -> None:
    """The API key every route needs, and API Gateway's own answers on every operation: 403
    and 429 everywhere, 413 where a body is taken (merged with a handler's own 413, whose
    body differs: the handler's limit is lower than the gateway's)."""
    components = document.setdefault("components", {})
    components["securitySchemes"] = _SECURITY_SCHEMES
    components["responses"] = GATEWAY_RESPONSES
    components.setdefault("schemas", {})["GatewayMessageBody"] = (
        GatewayMessageBody.model_json_schema()
    )
    document["security"] = [{SECURITY_SCHEME: []}]
    for operations in document["paths"].values():
        for method, served in operations.items():
            # A path served with and without its slash shares one generated operation.
            operation = operations[method] = copy.deepcopy(served)
            responses = operation.setdefault("responses", {})
            for code, name in _GATEWAY_CODES.items():
                responses[code] = {"$ref": f"#/components/responses/{name}"}
            if "requestBody" not in operation:
                continue
            own = responses.get("413")
            if own is None:
                responses["413"] = {"$ref": "#/components/responses/GatewayTooLarge"}
                continue
            schema = own["content"]["application/json"]["schema"]
            own["description"] += "; over 10 MB, API Gateway answers it itself ({message})"
            own["content"]["application/json"]["schema"] = {
                "anyOf": [schema, {"$ref": "#/components/schemas/GatewayMessageBody"}]
            }


def _as_served(paths: dict[str, Any], routes: set[tuple[str, str]]) -> dict[str, Any]:
    served: dict[str, Any] = {}
    for method, path in sorted(routes, key=lambda r: (r[1], r[0])):
        generated = paths.get(path) or paths.get(path.rstrip("/")) or {}
        operation = generated.get(method.lower())
        if operation is None:
            raise ValueError(f"template.yaml routes {method} {path}, but no function's router does")
        if path not in paths:
            operation = {**operation, "operationId": operation["operationId"] + "_slash"}
        served.setdefault(path, {})[method.lower()] = operation
    for path, operations in paths.items():
        for method in operations:
            if (method.upper(), path) not in routes and (method.upper(), path + "/") not in routes:
                raise ValueError(
                    f"{method.upper()} {path} has a handler but no Api event in template.yaml"
                )
    return served


def documented_responses(document: dict[str, Any]) -> dict[tuple[str, str], set[int]]:
    """{(METHOD, path): {status codes}} a function answers: what tests hold the handlers to
    (API Gateway's own answers, `gateway_responses`, never reach a handler)."""
    return _responses(document, gateway=False)


def gateway_responses(document: dict[str, Any]) -> dict[tuple[str, str], set[int]]:
    """{(METHOD, path): {status codes}} API Gateway answers by itself (403, 429, 413)."""
    return _responses(document, gateway=True)


def _responses(document: dict[str, Any], gateway: bool) -> dict[tuple[str, str], set[int]]:
    return {
        (method.upper(), path): {
            int(code)
            for code, response in operation.get("responses", {}).items()
            if ("$ref" in response) == gateway
        }
        for path, operations in document.get("paths", {}).items()
        for method, operation in operations.items()
    }


def render(document: dict[str, Any]) -> str:
    """The committed form: stable, indented, one trailing newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
