"""The SPEC's API contract, over HTTP against the local stack and the real handlers."""

from __future__ import annotations

import uuid

import pytest
import requests

from tests.e2e.conftest import OTHER_STORE, STORE, Stack, visit

pytestmark = pytest.mark.e2e


def test_submit_then_status_goes_ongoing_to_completed(stack: Stack) -> None:
    urls = [stack.images.url(f"/img/{300 + i}x200.jpg") for i in range(3)]
    # One 503 first: its retry waits at least a second, so the job is surely still
    # ongoing when status is first asked, however fast the machine.
    urls.append(stack.images.url(f"/flaky/{uuid.uuid4().hex}/1/303x200.jpg"))
    response = stack.submit({"count": 2, "visits": [visit(urls[:2]), visit(urls[2:], OTHER_STORE)]})

    assert response.status_code == 201, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert set(response.json()) == {"job_id"}
    job_id = response.json()["job_id"]
    assert isinstance(job_id, str)

    first = stack.status(job_id)
    assert first.status_code == 200
    assert first.json()["status"] == "ongoing"
    assert first.json()["job_id"] == job_id

    final = stack.wait_until_terminal(job_id)
    assert final["status"] == "completed", final
    assert final["job_id"] == job_id
    assert "error" not in final


def test_submit_without_trailing_slash_is_the_same_route(stack: Stack) -> None:
    body = {"count": 1, "visits": [visit([stack.images.url("/img/10x10.png")])]}
    response = requests.post(stack.url("/api/submit"), json=body, timeout=30)
    assert response.status_code == 201, response.text
    assert stack.wait_until_terminal(response.json()["job_id"])["status"] == "completed"


def test_unknown_job_is_400_with_an_empty_object(stack: Stack) -> None:
    response = stack.status("no-such-job")
    assert response.status_code == 400
    assert response.json() == {}


def test_status_without_jobid_is_400(stack: Stack) -> None:
    response = requests.get(stack.url("/api/status"), timeout=30)
    assert response.status_code == 400
    assert "error" in response.json()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("{not json", id="not-json"),
        pytest.param('{"count": 2, "visits": []}', id="empty-visits"),
        pytest.param("[]", id="not-an-object"),
    ],
)
def test_bad_submit_bodies_are_400_with_an_error(stack: Stack, body: str) -> None:
    response = requests.post(
        stack.url("/api/submit/"),
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert isinstance(response.json()["error"], str)


def test_count_mismatch_is_400(stack: Stack) -> None:
    url = stack.images.url("/img/10x10.jpg")
    response = stack.submit({"count": 2, "visits": [visit([url])]})
    assert response.status_code == 400
    assert "count" in response.json()["error"]


def test_unknown_store_fails_the_job_naming_the_store(stack: Stack) -> None:
    good = stack.images.url("/img/20x20.jpg")
    job_id = stack.submit_job([visit([good]), visit([good], "S99999999")])
    final = stack.wait_until_terminal(job_id)
    assert final["status"] == "failed", final
    assert [e["store_id"] for e in final["error"]] == ["S99999999"]
    assert isinstance(final["error"][0]["error"], str) and final["error"][0]["error"]


def test_missing_image_fails_the_job_with_http_404(stack: Stack) -> None:
    missing = stack.images.url("/status/404")
    job_id = stack.submit_job([visit([stack.images.url("/img/30x30.jpg"), missing])])
    final = stack.wait_until_terminal(job_id)
    assert final["status"] == "failed", final
    assert len(final["error"]) == 1
    assert final["error"][0]["store_id"] == STORE
    assert "HTTP 404" in final["error"][0]["error"]


def test_unknown_routes_and_methods_are_api_gateways_403(stack: Stack) -> None:
    """A REST API answers a path it has no resource for, and a method a resource does not
    serve, with 403 Missing Authentication Token (it cannot tell them from a request for
    an IAM-signed route). The local stack answers as API Gateway does."""
    for method, path in [
        ("GET", "/api/nothing-here"),
        ("DELETE", "/api/status"),
        ("GET", "/api/submit/"),
        ("GET", "/"),
    ]:
        response = requests.request(method, stack.url(path), timeout=30)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json() == {"message": "Missing Authentication Token"}, (method, path)
        assert response.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"


def _over_api_gateway_limit(stack: Stack) -> requests.Response:
    return requests.post(
        stack.url("/api/submit/"),
        data=b"x" * (10 * 1024 * 1024 + 1),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )


def test_body_over_api_gateway_limit_is_413(stack: Stack) -> None:
    assert _over_api_gateway_limit(stack).status_code == 413


@pytest.mark.local_stack(
    "MiniStack answers a body over 10 MB with a 413 of its own, not with the template's "
    "REQUEST_TOO_LARGE gateway response (tests/unit/test_body_limits.py checks the template's)"
)
def test_api_gateways_413_says_where_a_large_job_goes(stack: Stack) -> None:
    # API Gateway's own answer (its REQUEST_TOO_LARGE response) names the upload path.
    assert "POST /api/uploads" in _over_api_gateway_limit(stack).json()["message"]
