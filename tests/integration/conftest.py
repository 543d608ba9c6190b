"""Handlers invoked with real-shaped events against moto."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.events import api_event
from tests.support.handlers import FakeContext, load_handler

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
        self.body: Any = json.loads(response["body"]) if response.get("body") else None
        headers = dict(response.get("headers") or {})
        for key, values in (response.get("multiValueHeaders") or {}).items():
            headers.setdefault(key, values[-1])
        self.headers = headers


@pytest.fixture
def call_api() -> Callable[..., ApiResult]:
    """Invoke the function behind a route with an API Gateway proxy event."""

    def call(method: str, path: str, **kwargs: Any) -> ApiResult:
        name = "submit" if path.startswith("/api/submit") else path.split("/")[2]
        handler = load_handler(name).lambda_handler
        return ApiResult(handler(api_event(method, path, **kwargs), FakeContext()))

    return call


def visit(store_id: str, urls: list[str], when: str = "2026-11-28T10:15:00Z") -> dict[str, Any]:
    return {"store_id": store_id, "image_url": urls, "visit_time": when}


def job(*visits: dict[str, Any]) -> dict[str, Any]:
    return {"count": len(visits), "visits": list(visits)}
