"""One hostile image host cannot hold the pipeline: images whose host trickles its headers
forever take every slot of the express lane (both jobs are small enough for it: the local
stack's 4 pollers x 10, the deployed stack's ExpressConcurrency 2 x 10), and a normal 20-image job
submitted right after still finishes in well under a minute, because each attempt ends at
its wall-clock deadline (IMAGE_DEADLINE_S, 30 s) and frees its slot. Before the deadline was
enforced on the socket, such an attempt held its process function until the function's own
timeout (60 s), and its whole batch came back again and again."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.e2e.conftest import Stack, visit

pytestmark = pytest.mark.e2e

NORMAL = 20
# At most one deadline (30 s) behind, plus the lane's own pace on a busy 2-core machine.
NORMAL_TIMEOUT_S = 60


def test_trickling_hosts_in_every_slot_do_not_hold_a_normal_job(stack: Stack) -> None:
    # Exactly as many hostile images as the lane takes at once: with more, the surplus
    # would wait its turn in the queue ahead of the normal job, and the normal job would
    # wait one deadline per extra wave (as any queue would), which is not the point here.
    trickling = stack.sqs_slots["ProcessFunction.ExpressImages"]
    run = uuid.uuid4().hex[:8]
    # Each hostile URL trickles on its first request only; the retry after the deadline
    # gets the image, so the hostile job completes too once its attempts have timed out.
    paths = [f"/trickle/{run}-{i}/1/64x48.jpg" for i in range(trickling)]
    hostile = stack.submit_job([visit([stack.images.url(p) for p in paths])])
    # Event-driven: the trickles hold the pollers once every hostile URL has been requested.
    deadline = time.monotonic() + 120
    while sum(stack.images.requests[p] for p in paths) < trickling:
        assert time.monotonic() < deadline, stack.log_tail()
        time.sleep(0.2)

    started = time.monotonic()
    normal = stack.submit_job(
        [visit([stack.images.url(f"/img/{100 + i}x50.jpg") for i in range(NORMAL)])]
    )
    body = stack.wait_until_terminal(normal, timeout_s=NORMAL_TIMEOUT_S)
    elapsed = time.monotonic() - started
    print(f"\n{NORMAL}-image job behind {trickling} trickling hosts: {elapsed:.1f} s")

    assert body["status"] == "completed"
    assert body["progress"]["succeeded"] == NORMAL
    held = stack.wait_until_terminal(hostile, timeout_s=90)
    assert held["status"] == "completed", held
    # Each hostile URL was cut at the deadline and served on a later delivery. (The e2e
    # stack's 5 s visibility timeout is shorter than the deadline, so a held message may also
    # be delivered once more meanwhile: exactly-once filing makes that harmless.)
    assert all(stack.images.requests[p] >= 2 for p in paths)
