"""API Gateway's own answers, as openapi.json documents them: every route of the template
needs the usage plan's x-api-key (403 without), each key is throttled by the plan (429), and
a body over 10 MB is refused (413), all with the gateway's `{"message": ...}` body and
before any function runs. Exercised on the local stack's API front door, built from the
template's routes and usage plan."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from local_stack.api_gateway import MAX_PAYLOAD_BYTES, ApiGateway, KeyThrottle
from local_stack.model import StackModel
from retail_pulse.api.models import GatewayMessageBody
from retail_pulse.api.openapi import gateway_responses
from tests.support.front_door import Recorder, front_door, template_model

ROOT = Path(__file__).resolve().parents[2]
KEY = "gateway-test-key-0123456789"


class Clock:
    """A clock that moves only when told: the throttle's buckets refill by it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def model() -> StackModel:
    return template_model()


@pytest.fixture
def gateway(model: StackModel) -> Iterator[tuple[ApiGateway, Recorder, Clock]]:
    throttle = model.usage_plan_throttle()
    assert throttle is not None, "the template's usage plan has no Throttle"
    clock = Clock()
    recorder = Recorder()
    with front_door(
        model,
        recorder,
        api_keys={KEY: "acme", "other-key-0123456789": "globex"},
        throttle=KeyThrottle(*throttle, clock=clock),
    ) as api:
        yield api, recorder, clock


def documented() -> list[tuple[str, str, int]]:
    document = json.loads((ROOT / "openapi.json").read_text())
    assert document["security"] == [{"api_key": []}]
    scheme = document["components"]["securitySchemes"]["api_key"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "x-api-key")
    return sorted(
        (method, path, code)
        for (method, path), codes in gateway_responses(document).items()
        for code in codes
    )


def test_every_route_documents_the_gateways_403_and_429() -> None:
    answers = documented()
    routes = {(method, path) for method, path, _ in answers}
    assert routes, "openapi.json documents no gateway answers"
    for method, path in routes:
        assert (method, path, 403) in answers and (method, path, 429) in answers


def _call(api: ApiGateway, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, api.url + path, timeout=30, **kwargs)


@pytest.mark.parametrize(("method", "path", "code"), documented())
def test_each_documented_gateway_answer_happens_with_its_body(
    gateway: tuple[ApiGateway, Recorder, Clock], method: str, path: str, code: int
) -> None:
    api, recorder, _clock = gateway
    if code == 403:
        response = _call(api, method, path)
    elif code == 429:
        burst = api.throttle.burst if api.throttle else 0
        for _ in range(burst):
            assert _call(api, method, path, headers={"x-api-key": KEY}).status_code == 200
        response = _call(api, method, path, headers={"x-api-key": KEY})
    else:
        assert code == 413
        response = _call(
            api, method, path, headers={"x-api-key": KEY}, data=b"x" * (MAX_PAYLOAD_BYTES + 1)
        )
    assert response.status_code == code, response.text
    GatewayMessageBody.model_validate(response.json())
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    if code != 429:
        assert recorder.calls == 0


def test_the_throttle_is_per_key_and_refills_at_the_plans_rate(
    gateway: tuple[ApiGateway, Recorder, Clock],
) -> None:
    api, recorder, clock = gateway
    assert api.throttle is not None
    url = "/api/status?jobid=x"
    for _ in range(api.throttle.burst):
        assert _call(api, "GET", url, headers={"x-api-key": KEY}).status_code == 200
    throttled = _call(api, "GET", url, headers={"x-api-key": KEY})
    assert (throttled.status_code, throttled.json()) == (429, {"message": "Too Many Requests"})
    # Another client's key has a bucket of its own.
    assert _call(api, "GET", url, headers={"x-api-key": "other-key-0123456789"}).status_code == 200
    # One token comes back every 1/rate seconds: one and a half of them, one request.
    clock.now += 1.5 / api.throttle.rate
    assert _call(api, "GET", url, headers={"x-api-key": KEY}).status_code == 200
    assert _call(api, "GET", url, headers={"x-api-key": KEY}).status_code == 429
    assert recorder.calls == api.throttle.burst + 2
