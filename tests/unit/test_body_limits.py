"""A job too large for a request body is told to upload: submit's own 413 (over
MAX_BODY_BYTES) and API Gateway's (over its 10 MB, the template's REQUEST_TOO_LARGE gateway
response, which the local stack's front door answers from the template) both name the limit
and `POST /api/uploads`. The body path takes up to MAX_IMAGES_PER_JOB images (50,000)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from local_stack.api_gateway import MAX_PAYLOAD_BYTES, ApiGateway
from local_stack.template import load_template
from retail_pulse.api.resolver import UPLOAD_HINT
from retail_pulse.settings import Settings, get_settings
from tests.support.events import api_event
from tests.support.front_door import Recorder, front_door, template_model
from tests.support.handlers import FakeContext, load_handler

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load_template(ROOT / "template.yaml")
GLOBALS = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]


@pytest.fixture(scope="module")
def local_front_door() -> Iterator[tuple[ApiGateway, Recorder]]:
    recorder = Recorder(status_code=201)
    with front_door(template_model(), recorder) as api:
        yield api, recorder


def test_the_body_path_takes_50000_images_by_default_in_the_template_too() -> None:
    assert Settings().max_images_per_job == 50_000
    assert GLOBALS["MAX_IMAGES_PER_JOB"] == "50000"


def test_api_gateways_own_413_names_the_body_limit_and_the_upload_path() -> None:
    response = TEMPLATE["Resources"]["RetailPulseApi"]["Properties"]["GatewayResponses"][
        "REQUEST_TOO_LARGE"
    ]
    assert response["StatusCode"] == "413"
    message = json.loads(response["ResponseTemplates"]["application/json"])["message"]
    assert f"the limit is {GLOBALS['MAX_BODY_BYTES']} bytes (MAX_BODY_BYTES)" in message
    assert message.endswith(UPLOAD_HINT)
    headers = response["ResponseParameters"]["Headers"]
    assert headers["X-Content-Type-Options"] == "'nosniff'"


def test_the_local_front_door_answers_a_body_over_10_mb_as_the_template_says(
    local_front_door: tuple[ApiGateway, Recorder],
) -> None:
    api, recorder = local_front_door
    response = requests.post(
        api.url + "/api/submit/", data=b"x" * (MAX_PAYLOAD_BYTES + 1), timeout=60
    )
    assert response.status_code == 413
    body = response.json()
    assert set(body) == {"message"}
    assert "10 MB" in body["message"] and "POST /api/uploads" in body["message"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert recorder.calls == 0  # the function never saw it


def test_submits_own_413_names_the_limit_and_the_upload_path(
    aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_BODY_BYTES", "100")
    get_settings.cache_clear()
    try:
        event = api_event("POST", "/api/submit/", body={"count": 1, "visits": ["x" * 200]})
        result = load_handler("submit").lambda_handler(event, FakeContext())
    finally:
        monkeypatch.delenv("MAX_BODY_BYTES")
        get_settings.cache_clear()
    assert result["statusCode"] == 413
    error = json.loads(result["body"])["error"]
    assert "the limit is 100 (MAX_BODY_BYTES)" in error
    assert "POST /api/uploads" in error
