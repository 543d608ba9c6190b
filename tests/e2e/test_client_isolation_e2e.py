"""One client's image hosts cannot fail or stall another client's jobs (issue 22).

Two keys on one local stack. The flooder submits thousands of images on hosts that answer
a status line and then trickle a header byte every half second (tests/support/
trickle_host.py, raw sockets): jobs above EXPRESS_MAX_IMAGES on the image queue and
100-image jobs on the express lane, so both lanes are full of downloads that only their
deadline ends (IMAGE_DEADLINE_S, scaled from 30 s to DEADLINE_S with LOCAL_FUNCTION_ENV).
Once both lanes are busy with them, the other client submits a 50-image job (the express
lane) and a 300-image job (the image queue) of good images. Both must complete with every
image succeeded: none failed for another client's hosts, none given up on. And each must
finish before the flood's backlog on its lane has even been started once (fewer trickling
downloads started than flood images there): fair-queue order, asserted as an order, not a
time. Their times are printed, not asserted (the 2 cores are shared).

What makes this hold: the process function's isolation (a body holds bytes of the budget
only as it arrives; attempts are the service's; each job filed as soon as its images are
done) and fair queues, which serve the quiet client's messages before the flood's backlog.
MiniStack does not emulate fair queues (it delivers in arrival order, as moto does), so
this test runs on the local stack only, whose event source emulates them
(local_stack/fair_queue.py); on the deployed template it is skipped with that reason.

To see what fairness buys, run it with the local stack's fair queues off
(ISOLATION_FAIR_QUEUES=0: LOCAL_FAIR_QUEUES=0 for its stack, arrival order): the quiet
client's jobs then wait behind the flood's backlog, and the order assertion fails.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from tests.e2e.conftest import STATE_ENV, Stack, _local_stack, visit
from tests.support.image_server import ImageServer
from tests.support.trickle_host import TrickleHost

LOCAL_ONLY = (
    "needs fair-queue order, which MiniStack does not emulate (it delivers an image queue's "
    "messages in arrival order, so the quiet client's jobs wait behind the whole flood "
    "there); the local stack's event source emulates SQS fair queues"
)
pytestmark = [pytest.mark.e2e, pytest.mark.local_stack(LOCAL_ONLY)]

KEYS = {"flooder": "key-of-flooder-0123456789", "quiet": "key-of-quiet-0123456789"}
DEADLINE_S = 3
# The flood: jobs above EXPRESS_MAX_IMAGES (100) go to the image queue, the rest to the
# express lane.
FLOOD_MAIN = [2500, 2500]
FLOOD_EXPRESS = [100] * 20
QUIET_JOBS = {50: "express", 300: "main"}  # each lane's quiet job
FLOOD = {"main": sum(FLOOD_MAIN), "express": sum(FLOOD_EXPRESS)}
# Generous: the wait is event-driven polling, this only bounds a broken run.
QUIET_TIMEOUT_S = 900
FLOOD_IN_FLIGHT_TIMEOUT_S = 120
# Off only to measure the difference (see the docstring).
FAIR_QUEUES = os.environ.get("ISOLATION_FAIR_QUEUES", "1")


@dataclass
class Finish:
    """A quiet job as last seen, when, and the flood's downloads started by then, by lane."""

    body: dict[str, Any]
    elapsed_s: float
    flood_started: dict[str, int]


@dataclass
class Isolation:
    stack: Stack
    trickle: TrickleHost
    good: ImageServer


@pytest.fixture(scope="module")
def isolation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Isolation]:
    """A stack of its own with two clients, a trickling host and a good one it may reach."""
    if os.environ.get(STATE_ENV):  # the marker skips first; this guards a direct use
        pytest.skip(f"local stack only: {LOCAL_ONLY}")
    trickle = TrickleHost(every_s=0.5).start()
    good = ImageServer().start()
    env = {
        "LOCAL_API_KEYS": ",".join(f"{name}:{key}" for name, key in KEYS.items()),
        "ALLOWED_PRIVATE_HOSTS": f"{good.host_port},{trickle.host_port}",
        "LOCAL_FUNCTION_ENV": f"IMAGE_DEADLINE_S={DEADLINE_S}",
        "LOCAL_FAIR_QUEUES": FAIR_QUEUES,
        # The template's visibility timeout (360 s), not the suite's 5 s: no message in
        # flight is delivered twice while a batch of trickling downloads runs on the shared
        # cores (retries are messages of their own, sent with a delay), and the fair pool
        # rarely needs to hide a waiting message again.
        "LOCAL_VISIBILITY_TIMEOUT_S": "",
    }
    try:
        for stack in _local_stack(tmp_path_factory, env):
            yield Isolation(stack, trickle, good)
    finally:
        trickle.stop()
        good.stop()


def as_client(name: str) -> requests.Session:
    session = requests.Session()
    session.headers["x-api-key"] = KEYS[name]
    return session


def submit(stack: Stack, client: requests.Session, urls: list[str]) -> str:
    visits = [visit(urls[i : i + 1000]) for i in range(0, len(urls), 1000)]
    response = client.post(
        stack.url("/api/submit/"), json={"count": len(visits), "visits": visits}, timeout=60
    )
    assert response.status_code == 201, response.text
    return response.json()["job_id"]


def status(stack: Stack, client: requests.Session, job_id: str) -> dict[str, Any]:
    response = client.get(stack.url("/api/status"), params={"jobid": job_id}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_flood_of_trickling_hosts_neither_fails_nor_stalls_another_clients_jobs(
    isolation: Isolation,
) -> None:
    stack, trickle, good = isolation.stack, isolation.trickle, isolation.good
    flooder, quiet = as_client("flooder"), as_client("quiet")
    flood = [(size, "main") for size in FLOOD_MAIN] + [(size, "express") for size in FLOOD_EXPRESS]
    flood_jobs = [
        submit(stack, flooder, [trickle.url(f"/{lane}/{n}-{i}.jpg") for i in range(size)])
        for n, (size, lane) in enumerate(flood)
    ]
    # Event-driven: both lanes are busy with trickling downloads once every process
    # instance of each has started some (4 pollers a lane, 8 downloads each at the least).
    busy = stack.sqs_slots
    assert trickle.wait_for(
        lambda host: host.requests["main"] >= 32 and host.requests["express"] >= 32,
        FLOOD_IN_FLIGHT_TIMEOUT_S,
    ), f"the flood never filled both lanes: {trickle.requests} ({busy})\n{stack.log_tail()}"

    started = time.monotonic()
    quiet_jobs = {
        size: submit(
            stack, quiet, [good.url(f"/img/{100 + i % 30}x{size}.jpg") for i in range(size)]
        )
        for size in QUIET_JOBS
    }

    def wait(size: int) -> Finish:
        session = as_client("quiet")  # a session per thread
        deadline = started + QUIET_TIMEOUT_S
        while True:
            body = status(stack, session, quiet_jobs[size])
            if body["status"] in ("completed", "failed") or time.monotonic() > deadline:
                with trickle.changed:
                    flood_started = dict(trickle.requests)
                return Finish(body, time.monotonic() - started, flood_started)
            time.sleep(0.5)

    with ThreadPoolExecutor(max_workers=len(QUIET_JOBS)) as pool:
        results = dict(zip(QUIET_JOBS, pool.map(wait, QUIET_JOBS), strict=True))
    flood_progress = [status(stack, flooder, job)["progress"] for job in flood_jobs]
    print(
        f"\nfair queues {'on' if FAIR_QUEUES != '0' else 'OFF'}; flood: {FLOOD['main']} "
        f"images on the image queue, {FLOOD['express']} on the express lane, trickling "
        f"(deadline {DEADLINE_S} s); trickling requests at the end {dict(trickle.requests)}, "
        f"{trickle.open} open"
    )
    for size, finish in results.items():
        print(
            f"quiet client's {size}-image job ({QUIET_JOBS[size]}): {finish.body['status']} "
            f"in {finish.elapsed_s:.1f} s, {finish.body['progress']}; flood downloads "
            f"started by then: {finish.flood_started}"
        )
    print(f"flood jobs then: {flood_progress}")

    for size, finish in results.items():
        body = finish.body
        assert body["status"] == "completed", (size, body, stack.log_tail())
        assert body["progress"]["succeeded"] == size, (size, body)
        assert body["progress"]["failed"] == 0, (size, body)
    for size, finish in results.items():
        # Fair-queue order, an ordering and not a time: the quiet job was served ahead of
        # the flood's backlog on its lane, finished before every flood image there had been
        # tried even once. In arrival order it could not be: its messages came after them.
        lane = QUIET_JOBS[size]
        assert finish.flood_started[lane] < FLOOD[lane], (size, lane, finish.flood_started)
