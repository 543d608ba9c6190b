"""Handlers invoked with real-shaped events against moto."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.support.events import api_event
from tests.support.handlers import FakeContext, function_for, load_handler

OPENAPI = Path(__file__).resolve().parents[2] / "openapi.json"

KNOWN_STORES = {
    "S00339218": ("710006", "BHARAT STORE"),
    "S01408764": ("710006", "Asha Communication"),
    "S90000001": ("560001", "Second Area Store"),
}


@pytest.fixture
def stores(aws: Any) -> dict[str, tuple[str, str]]:
    from retail_pulse.data.models import StoreRecord

    for store_id, (area, name) in KNOWN_STORES.items():
        StoreRecord(store_id=store_id, area_code=area, store_name=name).save()
    return KNOWN_STORES


class ApiResult:
    def __init__(self, response: dict[str, Any]) -> None:
        self.raw = response
        self.status_code: int = response["statusCode"]
        headers = dict(response.get("headers") or {})
        for key, values in (response.get("multiValueHeaders") or {}).items():
            headers.setdefault(key, values[-1])
        self.headers = headers
        # JSON, but for a route's documented text (the results' CSV), kept as text.
        text = headers.get("Content-Type", "").startswith("text/")
        body = response.get("body")
        self.body: Any = (body if text else json.loads(body)) if body else None


@cache
def documented_codes() -> dict[tuple[str, str], set[int]]:
    """{(METHOD, path): status codes} of the committed openapi.json."""
    from retail_pulse.api.openapi import documented_responses

    return documented_responses(json.loads(OPENAPI.read_text()))


def assert_documented(method: str, path: str, status: int) -> None:
    """A handler answering a status that openapi.json does not promise fails the test."""
    codes = documented_codes().get((method.upper(), path))
    assert codes is not None, f"{method} {path} is not in openapi.json; run `make openapi`"
    assert status in codes, (
        f"{method} {path} answered {status}, which openapi.json does not document "
        f"({sorted(codes)}): declare it in the route's responses= and run `make openapi`"
    )


@pytest.fixture
def call_api() -> Callable[..., ApiResult]:
    """Invoke the function behind a route with an API Gateway proxy event; every answer's
    status must be one openapi.json documents for that route."""

    def call(method: str, path: str, **kwargs: Any) -> ApiResult:
        handler = load_handler(function_for(path)).lambda_handler
        result = ApiResult(handler(api_event(method, path, **kwargs), FakeContext()))
        assert_documented(method, path, result.status_code)
        return result

    return call


def visit(store_id: str, urls: list[str], when: str = "2026-11-28T10:15:00Z") -> dict[str, Any]:
    return {"store_id": store_id, "image_url": urls, "visit_time": when}


def job(*visits: dict[str, Any]) -> dict[str, Any]:
    return {"count": len(visits), "visits": list(visits)}
