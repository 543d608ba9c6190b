"""Two clients through a local stack with keys (LOCAL_API_KEYS): each sees only its own
jobs and results, a request without a known key is API Gateway's 403, and one client's
5,000-image backlog does not hold the other's 10-image job (the express lane)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.e2e.conftest import Stack, _local_stack, visit

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.local_stack("two API keys are LOCAL_API_KEYS, a local stack setting"),
]

KEYS = {"acme": "key-of-acme-0123456789", "globex": "key-of-globex-0123456789"}
BIG, SMALL = 5_000, 10


@pytest.fixture(scope="module")
def keyed_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own: stopping it at the end drops whatever backlog a test left."""
    keys = ",".join(f"{name}:{key}" for name, key in KEYS.items())
    yield from _local_stack(tmp_path_factory, {"LOCAL_API_KEYS": keys})


def as_client(stack: Stack, name: str | None) -> requests.Session:
    session = requests.Session()
    if name is not None:
        session.headers["x-api-key"] = KEYS[name]
    return session


def submit(stack: Stack, client: requests.Session, urls: list[str]) -> str:
    # A visit takes at most 1,000 URLs (MAX_URLS_PER_VISIT).
    visits = [visit(urls[i : i + 1000]) for i in range(0, len(urls), 1000)]
    body = {"count": len(visits), "visits": visits}
    response = client.post(stack.url("/api/submit/"), json=body, timeout=60)
    assert response.status_code == 201, response.text
    return response.json()["job_id"]


def wait_terminal(stack: Stack, client: requests.Session, job_id: str, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        body = client.get(stack.url("/api/status"), params={"jobid": job_id}, timeout=30).json()
        if body.get("status") in ("completed", "failed"):
            return body
        assert time.monotonic() < deadline, f"{job_id}: {body}\n{stack.log_tail()}"
        time.sleep(0.2)


def test_keys_are_required_and_each_client_sees_only_its_own(keyed_stack: Stack) -> None:
    stack = keyed_stack
    acme, globex = as_client(stack, "acme"), as_client(stack, "globex")
    for anonymous in (as_client(stack, None), requests.Session()):
        anonymous.headers["x-api-key"] = "not-a-key"
        refused = anonymous.get(stack.url("/api/status"), params={"jobid": "x"}, timeout=30)
        assert (refused.status_code, refused.json()) == (403, {"message": "Forbidden"})

    mine = submit(stack, acme, [stack.images.url(f"/img/{300 + i}x100.jpg") for i in range(3)])
    theirs = submit(stack, globex, [stack.images.url("/img/900x100.jpg")])
    assert wait_terminal(stack, acme, mine, 60)["status"] == "completed"
    assert wait_terminal(stack, globex, theirs, 60)["status"] == "completed"

    other = globex.get(stack.url("/api/status"), params={"jobid": mine}, timeout=30)
    assert (other.status_code, other.json()) == (400, {})

    def perimeters(client: requests.Session) -> list[int]:
        body = client.get(stack.url("/api/visits"), params={"storeid": "S00339218"}, timeout=30)
        assert body.status_code == 200, body.text
        return sorted(d["perimeter"] for s in body.json()["results"] for d in s["data"])

    assert perimeters(acme) == [800, 802, 804]
    assert perimeters(globex) == [2000]


def test_a_small_job_is_not_held_behind_another_clients_backlog(keyed_stack: Stack) -> None:
    stack = keyed_stack
    acme, globex = as_client(stack, "acme"), as_client(stack, "globex")
    big = submit(
        stack, acme, [stack.images.url(f"/img/{100 + i % 500}x64.jpg") for i in range(BIG)]
    )
    time.sleep(1)  # the scenario: the small job arrives a second after the backlog
    started = time.monotonic()
    small = submit(stack, globex, [stack.images.url(f"/img/{40 + i}x30.jpg") for i in range(SMALL)])
    body = wait_terminal(stack, globex, small, 60)
    elapsed = time.monotonic() - started
    backlog = acme.get(stack.url("/api/status"), params={"jobid": big}, timeout=30).json()
    print(
        f"\n{SMALL}-image job of one client behind another's {BIG}-image job: {elapsed:.1f} s "
        f"(the big job then at {backlog['progress']})"
    )

    assert body["status"] == "completed"
    # The behaviour, whatever the machine's load: the small job overtook the backlog, which
    # was still draining. (Its time is printed: a few seconds on 2 cores.)
    assert backlog["status"] == "ongoing"
