"""The job lifecycle an integrator builds on, through the stack over HTTP: a signed webhook
that matches the final status and comes again after a receiver error; cancel that stops
downloads at once with counters that add up; retry that turns a failed job into a
completed one once its host recovers; the job list and the results export."""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.e2e.conftest import Stack, visit

pytestmark = pytest.mark.e2e


def webhook_secret(stack: Stack) -> str:
    """The caller's own webhook secret, as a client asks for it (GET /api/webhook-secret)."""
    response = stack.http.get(stack.url("/api/webhook-secret"), timeout=30)
    assert response.status_code == 200, response.text
    return str(response.json()["secret"])


def post(stack: Stack, action: str, job_id: str) -> Any:
    return stack.http.post(stack.url(f"/api/{action}"), params={"jobid": job_id}, timeout=30)


def test_the_webhook_is_signed_matches_the_status_and_comes_again_after_a_500(
    stack: Stack,
) -> None:
    key = uuid.uuid4().hex[:12]
    urls = [stack.images.url(f"/img/{60 + i}x40.jpg") for i in range(3)]
    response = stack.submit(
        {"count": 1, "visits": [visit(urls)], "callback_url": stack.images.url(f"/hook/{key}/1")}
    )
    assert response.status_code == 201, response.text
    job_id = response.json()["job_id"]

    # The receiver answers 500 once: the same event comes again (first retry within 30 s).
    first, second = stack.images.wait_for_deliveries(key, 2, timeout_s=90)[:2]

    assert (first.answered, second.answered) == (500, 204)
    assert first.body == second.body
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    # Checked as a receiver checks it: the Standard Webhooks library, unchanged, with the
    # secret the API gives this client. Another secret verifies nothing.
    secret = webhook_secret(stack)
    for delivery in (first, second):
        Webhook(secret).verify(delivery.body, delivery.headers)
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + base64.b64encode(os.urandom(32)).decode()).verify(
                delivery.body, delivery.headers
            )
    event = json.loads(second.body)
    assert event["type"] == "job.finished"
    assert event["event_id"] == second.headers["webhook-id"]
    assert event["job"] == stack.status(job_id).json()
    assert event["job"]["status"] == "completed"
    print(f"\nwebhook: {json.dumps(event)}\nheaders: {second.headers}")


def test_cancel_stops_the_downloads_and_the_counters_add_up(stack: Stack) -> None:
    images = 2000
    run = uuid.uuid4().hex[:8]
    paths = [f"/img/{200 + i % 400}x{100 + i // 400}.jpg?{run}-{i}" for i in range(images)]
    urls = [stack.images.url(p) for p in paths]
    job_id = stack.submit_job([visit(urls[:1000]), visit(urls[1000:])])

    def downloads() -> int:
        return sum(stack.images.requests[p] for p in paths)

    deadline = time.monotonic() + 60
    while downloads() == 0:
        assert time.monotonic() < deadline, stack.log_tail()
        time.sleep(0.05)
    response = post(stack, "cancel", job_id)
    at_cancel = downloads()

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "cancelled"
    progress = body["progress"]
    assert progress["succeeded"] + progress["failed"] + progress["cancelled"] == images

    # Every image reaches its final record; none pending, each counted once.
    rows = wait_for_final_rows(stack, job_id, images)
    states = [row["status"] for row in rows]
    final = stack.status(job_id).json()
    assert final["status"] == "cancelled"
    assert final["progress"] == {
        "total": images,
        "succeeded": states.count("succeeded"),
        "failed": states.count("failed"),
        "cancelled": states.count("cancelled"),
    }
    assert states.count("cancelled") > 0
    # Only images of batches already started at the cancel were downloaded after it.
    in_flight = stack.sqs_slots["ProcessFunction.Images"]
    assert downloads() - at_cancel <= in_flight
    print(
        f"\ncancel: {at_cancel} downloads before, {downloads() - at_cancel} after (bound "
        f"{in_flight}); final {final['progress']}"
    )
    assert post(stack, "cancel", job_id).status_code == 409


def wait_for_final_rows(stack: Stack, job_id: str, images: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 120
    while True:
        rows = export(stack, job_id)
        assert len(rows) == images
        if all(row["status"] != "pending" for row in rows):
            return rows
        assert time.monotonic() < deadline, stack.log_tail()
        time.sleep(0.5)


def export(stack: Stack, job_id: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    token = None
    while True:
        params = {"jobid": job_id, "limit": "1000", **({"next": token} if token else {})}
        page = stack.http.get(stack.url("/api/results"), params=params, timeout=30)
        assert page.status_code == 200, page.text
        rows += page.json()["results"]
        token = page.json().get("next")
        if not token:
            return rows


def test_retry_completes_a_failed_job_once_its_host_recovers(stack: Stack) -> None:
    key = uuid.uuid4().hex[:12]
    # 503 for four requests: every attempt (MAX_ATTEMPTS 4) fails, then the host recovers.
    flaky = stack.images.url(f"/flaky/{key}/4/64x48.jpg")
    good = stack.images.url("/img/90x30.jpg")
    job_id = stack.submit_job([visit([good, flaky])])
    failed = stack.wait_until_terminal(job_id, timeout_s=90)
    assert failed["status"] == "failed", failed

    response = post(stack, "retry", job_id)

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ongoing"
    assert response.json()["progress"] == {"total": 2, "succeeded": 1, "failed": 0}
    done = stack.wait_until_terminal(job_id, timeout_s=60)
    assert done == {
        "status": "completed",
        "job_id": job_id,
        "progress": {"total": 2, "succeeded": 2, "failed": 0},
    }
    assert post(stack, "retry", job_id).status_code == 409
    # The list has it, newest first; the export has each image's result in submit order.
    listed = stack.http.get(stack.url("/api/jobs"), params={"status": "completed"}, timeout=30)
    assert listed.status_code == 200
    assert job_id in [job["job_id"] for job in listed.json()["jobs"]]
    rows = export(stack, job_id)
    assert [(row["image_url"], row["status"], row["perimeter"]) for row in rows] == [
        (good, "succeeded", 240),
        (flaky, "succeeded", 224),
    ]
