"""Visits read back over HTTP from the stack, and the OpenAPI document the local stack serves."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import ROOT, STORE, Stack

pytestmark = pytest.mark.e2e

# A time no other e2e test uses, so this test reads back only its own images.
WHEN = "2026-12-01T08:00:00Z"


def test_measured_perimeters_come_back_from_the_visits_api(stack: Stack) -> None:
    urls = [stack.images.url("/img/550x404.jpg"), stack.images.url("/img/1280x720.webp")]
    job_id = stack.submit_job([{"store_id": STORE, "image_url": urls, "visit_time": WHEN}])
    assert stack.wait_until_terminal(job_id)["status"] == "completed"

    response = stack.http.get(
        stack.url("/api/visits"),
        params={"storeid": STORE, "startdate": WHEN, "enddate": WHEN},
        timeout=30,
    )

    assert response.status_code == 200, response.text
    assert response.json() == {
        "results": [
            {
                "store_id": STORE,
                "area": "710006",
                "store_name": "BHARAT STORE",
                "data": [
                    {"date": WHEN, "perimeter": 1908},
                    {"date": WHEN, "perimeter": 4000},
                ],
            }
        ]
    }
    by_area = stack.http.get(
        stack.url("/api/visits"),
        params={"area": "710006", "startdate": WHEN, "enddate": WHEN},
        timeout=30,
    )
    assert by_area.json() == response.json()


def test_an_unknown_store_is_a_400_over_http(stack: Stack) -> None:
    response = stack.http.get(stack.url("/api/visits"), params={"storeid": "S_NOPE"}, timeout=30)
    assert response.status_code == 400
    assert "not in the store master" in response.json()["error"]


@pytest.mark.local_stack("GET /api/openapi.json is the local stack's, not a template route")
def test_the_stack_serves_the_openapi_document(stack: Stack) -> None:
    response = stack.http.get(stack.url("/api/openapi.json"), timeout=30)
    assert response.status_code == 200
    document = response.json()
    assert document == json.loads((ROOT / "openapi.json").read_text())
    assert {"/api/submit/", "/api/status", "/api/visits"} <= set(document["paths"])
