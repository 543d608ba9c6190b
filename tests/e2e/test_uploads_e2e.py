"""A job too large for a body, end to end: POST /api/uploads, the presigned POST to S3 (the
local stack's moto S3, or MiniStack's), POST /api/submit/ {upload_id}, the ingest function,
the images processed; and a malformed upload that fails its job and processes nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from tests.e2e.conftest import OTHER_STORE, Stack, visit

pytestmark = pytest.mark.e2e


def upload(stack: Stack, body: bytes) -> str:
    """Upload `body` as a client does and return its upload_id."""
    created = stack.http.post(stack.url("/api/uploads"), timeout=30)
    assert created.status_code == 201, created.text
    ticket = created.json()
    assert ticket["upload_method"] == "POST"
    sent = requests.post(
        ticket["upload_url"],
        data=ticket["upload_fields"],
        files={"file": ("job.json", body, "application/json")},
        timeout=60,
    )
    assert sent.status_code in (200, 201, 204), sent.text
    return str(ticket["upload_id"])


def submit_upload(stack: Stack, upload_id: str) -> str:
    response = stack.http.post(stack.url("/api/submit/"), json={"upload_id": upload_id}, timeout=30)
    assert response.status_code == 201, response.text
    assert response.headers["Location"].endswith(response.json()["job_id"])
    return str(response.json()["job_id"])


def test_an_uploaded_job_is_ingested_and_every_image_counted(stack: Stack) -> None:
    urls = [stack.images.url(f"/img/{60 + i}x{40 + i % 5}.png") for i in range(40)]
    visits: list[dict[str, Any]] = [visit(urls[:20]), visit(urls[20:], OTHER_STORE)]
    upload_id = upload(stack, json.dumps({"count": 2, "visits": visits}).encode())

    job_id = submit_upload(stack, upload_id)
    final = stack.wait_until_terminal(job_id, timeout_s=120)

    assert final == {
        "status": "completed",
        "job_id": job_id,
        "progress": {"total": 40, "succeeded": 40, "failed": 0},
    }
    # The same upload submitted again answers the same job.
    assert submit_upload(stack, upload_id) == job_id


def presigned_length(url: str, index: int) -> str:
    """An image URL as long as a presigned S3 URL of a field photo (1.3 KB)."""
    base = f"{url}?i={index}&X-Amz-Signature="
    return base + "s" * (1_300 - len(base))


def job_of(urls: list[str], per_visit: int = 3) -> bytes:
    visits = [visit(urls[i : i + per_visit]) for i in range(0, len(urls), per_visit)]
    return json.dumps({"count": len(visits), "visits": visits}).encode()


def test_a_job_of_presigned_length_urls_goes_through_an_upload_to_the_last_image(
    stack: Stack,
) -> None:
    """Issue 24's done-when at a tenth of its size (python -m bench.upload_job runs the
    20,000 images): 2,000 images of 1.3 KB URLs, every one counted."""
    urls = [
        presigned_length(stack.images.url(f"/img/{40 + i % 50}x{30 + i % 7}.png"), i)
        for i in range(2_000)
    ]
    job_id = submit_upload(stack, upload(stack, job_of(urls)))

    final = stack.wait_until_terminal(job_id, timeout_s=600)

    assert final == {
        "status": "completed",
        "job_id": job_id,
        "progress": {"total": 2_000, "succeeded": 2_000, "failed": 0},
    }


def test_a_body_over_the_limit_is_a_413_that_names_the_upload_path(stack: Stack) -> None:
    """4,700 such URLs are 6.2 MB: over MAX_BODY_BYTES (6,000,000), under API Gateway's
    10 MB, so the submit function itself answers."""
    body = job_of([presigned_length(stack.images.url("/img/40x30.png"), i) for i in range(4_700)])
    assert 6_000_000 < len(body) < 10 * 1024 * 1024

    response = stack.http.post(
        stack.url("/api/submit/"),
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=60,
    )

    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert "the limit is 6000000" in error and "POST /api/uploads" in error


def test_a_malformed_upload_fails_its_job_with_one_readable_error(stack: Stack) -> None:
    visits = [visit([stack.images.url("/img/10x10.png")]) for _ in range(3)]
    visits[2]["image_url"].append("http://[::1/x.jpg")
    upload_id = upload(stack, json.dumps({"count": 3, "visits": visits}).encode())

    final = stack.wait_until_terminal(submit_upload(stack, upload_id), timeout_s=60)

    assert final["status"] == "failed"
    assert final["progress"] == {"total": 0, "succeeded": 0, "failed": 0}
    [error] = final["error"]
    assert error["store_id"] is None
    assert error["error"].startswith(
        "visits[2].image_url[1] 'http://[::1/x.jpg' is not a valid URL"
    )


def test_an_unknown_upload_and_one_with_nothing_uploaded_are_refused(stack: Stack) -> None:
    created = stack.http.post(stack.url("/api/uploads"), timeout=30).json()

    early = stack.http.post(
        stack.url("/api/submit/"), json={"upload_id": created["upload_id"]}, timeout=30
    )
    unknown = stack.http.post(
        stack.url("/api/submit/"), json={"upload_id": "no-such-upload"}, timeout=30
    )

    assert early.status_code == 400 and "nothing has been uploaded" in early.json()["error"]
    assert unknown.status_code == 400 and "POST /api/uploads" in unknown.json()["error"]
