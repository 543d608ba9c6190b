"""openapi.json, fuzzed by schemathesis against the running local stack.

Every operation gets schema-driven requests, valid and invalid (bounded, so the file runs
in about a minute): no answer may be a server error, and every answer must have a status
code, a content type and a body that the document declares, plus the security headers.

No request may make the stack reach the internet: an image URL that could pass validation
is pointed at the session's local image server (which answers 404 for made-up paths), so
an accepted job fails fast on loopback instead of fetching from a generated host name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from retail_pulse.api.resolver import SECURITY_HEADERS
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e

OPENAPI = Path(__file__).resolve().parents[2] / "openapi.json"
schema = schemathesis.openapi.from_path(OPENAPI)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
_URL = re.compile(r"^(https?://)([^/?#]*)(.*)$", re.IGNORECASE | re.DOTALL)


def _local_images(body: Any, host_port: str) -> Any:
    """`body` with every http(s) image URL's host replaced by the local image server."""
    if not isinstance(body, dict) or not isinstance(body.get("visits"), list):
        return body
    for visit in body["visits"]:
        urls = visit.get("image_url") if isinstance(visit, dict) else None
        if isinstance(urls, list):
            visit["image_url"] = [
                _URL.sub(lambda m: f"http://{host_port}{m.group(3)}", url)
                if isinstance(url, str)
                else url
                for url in urls
            ]
    return body


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_operation_answers_as_documented(case: schemathesis.Case, stack: Stack) -> None:
    if case.body is not None:
        case.body = _local_images(case.body, stack.images.host_port)
    response = case.call_and_validate(
        base_url=stack.api_url, session=stack.http, checks=CHECKS, timeout=30
    )
    headers = {name.lower(): values for name, values in response.headers.items()}
    expected = dict(SECURITY_HEADERS)
    if headers.get("content-type") == ["text/csv; charset=utf-8"]:  # /api/results?format=csv
        expected.pop("Content-Type")
    for name, value in expected.items():
        assert headers.get(name.lower()) == [value], (case.method, case.path, response.headers)
