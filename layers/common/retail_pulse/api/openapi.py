"""One OpenAPI document for every HTTP function: their routers joined in one resolver.

Each function owns its routes (functions/<name>/app.py exposes `router`); the document is
generated from those same routes, so it cannot drift from the handlers. scripts/openapi.py
finds the routers and writes openapi.json.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.event_handler.router import Router

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
    schemas = document.get("components", {}).get("schemas", {})
    text = json.dumps({k: v for k, v in document.items() if k != "components"})
    for name in _POWERTOOLS_VALIDATION_SCHEMAS:
        if f'"#/components/schemas/{name}"' not in text:
            schemas.pop(name, None)
    return document


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
    """{(METHOD, path): {status codes}} of a document: what tests hold the handlers to."""
    return {
        (method.upper(), path): {int(code) for code in operation.get("responses", {})}
        for path, operations in document.get("paths", {}).items()
        for method, operation in operations.items()
    }


def render(document: dict[str, Any]) -> str:
    """The committed form: stable, indented, one trailing newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
