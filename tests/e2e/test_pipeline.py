"""The pipeline under load and failure, end to end: API -> queue -> process -> status."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.conftest import OTHER_STORE, STORE, VISIBILITY_TIMEOUT_S, Stack, visit

pytestmark = pytest.mark.e2e

# maxReceiveCount is 6 in the template; each receive is one visibility timeout apart.
DLQ_WAIT_S = 8 * VISIBILITY_TIMEOUT_S + 20
# What the dead-letter function logs for a body that names no image (jobs/dead_letter.py).
DROPPED = "dead-lettered message is not an image message; dropped"


@pytest.fixture(scope="module", autouse=True)
def poison_message(stack: Stack) -> tuple[str, str]:
    """A body the process function can never parse, sent before the other tests so that
    its six failed deliveries overlap them; the last test looks for it on the dead-letter
    queue. Returns (message id, body)."""
    body = json.dumps({"not": "an image message", "marker": time.time()})
    sent = stack.sqs().send_message(QueueUrl=stack.queue_url(), MessageBody=body)
    return sent["MessageId"], body


def test_a_200_image_job_completes_with_every_image_counted(stack: Stack) -> None:
    """How fast is make bench's business (its makespan figures); this waits generously."""
    urls = [stack.images.url(f"/img/{100 + i}x{50 + i % 7}.jpg") for i in range(200)]
    job_id = stack.submit_job([visit(urls[:100]), visit(urls[100:], OTHER_STORE)])
    final = stack.wait_until_terminal(job_id, timeout_s=300)
    assert final["status"] == "completed", final
    assert final["progress"] == {"total": 200, "succeeded": 200, "failed": 0}, final


def test_ten_concurrent_jobs_all_complete(stack: Stack) -> None:
    def run(n: int) -> dict:
        urls = [stack.images.url(f"/img/{40 + n}x{60 + i}.png") for i in range(5)]
        return stack.wait_until_terminal(stack.submit_job([visit(urls)]), timeout_s=60)

    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(run, range(10)))
    assert [r["status"] for r in results] == ["completed"] * 10, results
    assert len({r["job_id"] for r in results}) == 10


def test_only_failing_stores_are_listed(stack: Stack) -> None:
    job_id = stack.submit_job(
        [
            visit([stack.images.url("/img/50x50.gif")], STORE),
            visit([stack.images.url("/text")], OTHER_STORE),
        ]
    )
    final = stack.wait_until_terminal(job_id)
    assert final["status"] == "failed"
    assert [e["store_id"] for e in final["error"]] == [OTHER_STORE]


def test_a_message_that_always_fails_ends_in_the_dead_letter_queue(
    stack: Stack, poison_message: tuple[str, str]
) -> None:
    """The template's dead-letter consumer may take it off the queue before we look, so
    "it reached the dead-letter queue" is: we received it there, or the dead-letter function
    logged dropping it (its own line, which carries the body), on either stack."""
    message_id, body = poison_message
    sqs = stack.sqs()
    deadline = time.monotonic() + DLQ_WAIT_S
    while time.monotonic() < deadline:
        received = sqs.receive_message(
            QueueUrl=stack.queue_url(dead_letter=True),
            WaitTimeSeconds=1,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        ).get("Messages", [])
        mine = [m for m in received if m["MessageId"] == message_id]
        if mine:
            assert mine[0]["Body"] == body
            # Six failed deliveries to the function, then the redrive (plus our receive).
            assert int(mine[0]["Attributes"]["ApproximateReceiveCount"]) >= 6
            return
        if any(
            line.get("message") == DROPPED and line.get("body") == body
            for line in stack.function_json("DeadLetterFunction")
        ):
            break
    else:
        pytest.fail(f"not on the dead-letter queue after {DLQ_WAIT_S} s\n{stack.log_tail()}")
