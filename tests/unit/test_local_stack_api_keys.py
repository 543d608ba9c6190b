"""The local API Gateway asks for an API key only when keys are configured (LOCAL_API_KEYS,
or LOCAL_API_KEY for one client), and then answers like API Gateway with RequireApiKey=true:
403 {"message": "Forbidden"} before the function runs; a known key's request carries its
client's name as requestContext.identity.apiKeyId, the tenant."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from local_stack.api_gateway import ApiGateway
from local_stack.model import ApiRoute
from local_stack.runtime import Invocation, LogSink
from local_stack.stack import StackConfig, parse_api_keys

KEY = "local-test-key-0123456789"


class Recorder:
    """Stands in for the function workers: records each event, answers 200."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, function: str, event: dict[str, Any]) -> Invocation:
        self.events.append(event)
        return Invocation("req-1", True, {"statusCode": 200, "body": json.dumps({"ok": True})})


GATEWAY_HEADERS = {"DEFAULT_4XX": {"X-Content-Type-Options": "nosniff"}}


def _gateway(api_keys: dict[str, str | None] | None) -> tuple[ApiGateway, Recorder]:
    recorder = Recorder()
    gateway = ApiGateway(
        [ApiRoute("StatusFunction", "/api/status", "GET")],
        recorder,
        LogSink(io.StringIO()),
        port=0,
        api_keys=api_keys,
        gateway_response_headers=GATEWAY_HEADERS,
    )
    gateway.start()
    return gateway, recorder


@pytest.fixture
def keyed() -> Iterator[tuple[ApiGateway, Recorder]]:
    gateway, recorder = _gateway({KEY: None})
    yield gateway, recorder
    gateway.stop()


@pytest.fixture
def two_clients() -> Iterator[tuple[ApiGateway, Recorder]]:
    gateway, recorder = _gateway(parse_api_keys("acme:key-of-acme,globex:key-of-globex", None))
    yield gateway, recorder
    gateway.stop()


@pytest.fixture
def open_gateway() -> Iterator[tuple[ApiGateway, Recorder]]:
    gateway, recorder = _gateway(None)
    yield gateway, recorder
    gateway.stop()


@pytest.mark.parametrize("headers", [{}, {"x-api-key": "wrong"}, {"x-api-key": ""}])
def test_without_the_key_is_403_and_the_function_never_runs(
    keyed: tuple[ApiGateway, Recorder], headers: dict[str, str]
) -> None:
    gateway, recorder = keyed
    response = requests.get(gateway.url + "/api/status?jobid=x", headers=headers, timeout=10)
    assert response.status_code == 403
    assert response.json() == {"message": "Forbidden"}
    assert response.headers["Content-Type"] == "application/json"
    # The template's GatewayResponses headers, as on every answer API Gateway gives itself.
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert recorder.events == []


def test_with_the_key_the_request_reaches_the_function(
    keyed: tuple[ApiGateway, Recorder],
) -> None:
    gateway, recorder = keyed
    # Header names are case-insensitive, as in API Gateway.
    response = requests.get(
        gateway.url + "/api/status?jobid=x", headers={"X-Api-Key": KEY}, timeout=10
    )
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert len(recorder.events) == 1
    assert recorder.events[0]["queryStringParameters"] == {"jobid": "x"}


def test_no_key_configured_means_no_check(open_gateway: tuple[ApiGateway, Recorder]) -> None:
    gateway, recorder = open_gateway
    response = requests.get(gateway.url + "/api/status?jobid=x", timeout=10)
    assert response.status_code == 200
    assert len(recorder.events) == 1


@pytest.mark.parametrize(("value", "expected"), [(KEY, {KEY: None}), ("", None), (None, None)])
def test_local_api_key_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: dict[str, None] | None
) -> None:
    monkeypatch.delenv("LOCAL_API_KEYS", raising=False)
    if value is None:
        monkeypatch.delenv("LOCAL_API_KEY", raising=False)
    else:
        monkeypatch.setenv("LOCAL_API_KEY", value)
    assert StackConfig.from_env().api_keys == expected


def test_each_clients_key_names_its_tenant_and_other_keys_are_refused(
    two_clients: tuple[ApiGateway, Recorder],
) -> None:
    gateway, recorder = two_clients
    url = gateway.url + "/api/status?jobid=x"
    for key, tenant in (("key-of-acme", "acme"), ("key-of-globex", "globex")):
        assert requests.get(url, headers={"x-api-key": key}, timeout=10).status_code == 200
        assert recorder.events[-1]["requestContext"]["identity"]["apiKeyId"] == tenant
    refused = requests.get(url, headers={"x-api-key": "key-of-initech"}, timeout=10)
    assert (refused.status_code, refused.json()) == (403, {"message": "Forbidden"})
    assert len(recorder.events) == 2


@pytest.mark.parametrize(
    "value", ["acme", "acme:", ":key", "a b:key", "acme:k1,acme2:k1", "ac#me:k"]
)
def test_a_malformed_local_api_keys_is_refused_at_start(value: str) -> None:
    with pytest.raises(ValueError, match="LOCAL_API_KEYS"):
        parse_api_keys(value, None)


def test_the_templates_gateway_responses_carry_the_security_headers() -> None:
    from local_stack.model import StackModel

    headers = StackModel(Path(__file__).resolve().parents[2] / "template.yaml")
    for kind in ("DEFAULT_4XX", "DEFAULT_5XX"):
        assert headers.gateway_response_headers()[kind] == {
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        }


def test_any_http_method_gets_json_not_a_501_page(
    open_gateway: tuple[ApiGateway, Recorder],
) -> None:
    gateway, recorder = open_gateway
    for method in ("TRACE", "QUERY", "PROPFIND"):
        response = requests.request(method, gateway.url + "/api/status?jobid=x", timeout=10)
        assert response.status_code == 403, method
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.json() == {"message": "Missing Authentication Token"}
    assert recorder.events == []
