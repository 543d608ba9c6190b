"""`python -m deployed.compare`: the figures behind the decision on `make run` (issue 16).

The same job of N images (default 1,000, all at one store) runs twice, first with every
function cold and then warm, through each stack at the same concurrency C (default 4):

- the local stack, `python -m local_stack` with LOCAL_PROCESS_POLLERS=C (C pollers, each
  handing batches of 10 to one process-function worker), as `make run` starts it;
- template.yaml built and deployed onto MiniStack by the SAM CLI (ProcessConcurrency=C:
  C concurrent batches of 10), as `make test-deployed` deploys it but without its warm-up.

It prints each stack's start-up time (to a ready API with the store master loaded), each
job's makespan (submit to terminal status), and the peak resident memory of each stack's
processes (the local stack's process tree; MiniStack's process group, workers included).
Both stacks are stopped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from bench.stack import start_stack
from deployed.run import (
    ROOT,
    MiniStack,
    deploy_stack,
    find_python313,
    free_port,
    processes_in_group,
    rss_mb,
)
from tests.support.image_server import ImageServer

STORE = "S00339218"  # in data/stores_sample.csv
VISIT_TIME = "2026-11-28T10:15:00Z"
JOB_TIMEOUT_S = 600


class PeakRss:
    """Samples the summed VmRSS of some processes every quarter second; keeps the peak."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self._pids = pids
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def now_mb(self) -> float:
        return rss_mb(self._pids())

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self.peak_mb = max(self.peak_mb, self.now_mb())


def descendants(root: int) -> list[int]:
    """`root` and every process below it, from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(text[text.rindex(")") + 2 :].split()[1])
    found, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found.add(pid)
                frontier.append(pid)
    return sorted(found)


def run_job(api_url: str, images: ImageServer, count: int) -> dict[str, Any]:
    """Submit one job of `count` distinct image URLs; poll until it ends."""
    urls = [images.url(f"/img/{200 + n % 7}x{100 + n % 5}.jpg?n={n}") for n in range(count)]
    visits = [
        {"store_id": STORE, "image_url": urls[i : i + 1000], "visit_time": VISIT_TIME}
        for i in range(0, count, 1000)
    ]
    http = requests.Session()
    started = time.monotonic()
    response = http.post(
        f"{api_url}/api/submit/", json={"count": len(visits), "visits": visits}, timeout=120
    )
    response.raise_for_status()
    submitted = time.monotonic() - started
    job_id = response.json()["job_id"]
    while True:
        body = http.get(f"{api_url}/api/status", params={"jobid": job_id}, timeout=60).json()
        if body["status"] in ("completed", "failed"):
            break
        if time.monotonic() - started > JOB_TIMEOUT_S:
            raise TimeoutError(f"job {job_id} still {body} after {JOB_TIMEOUT_S} s")
        time.sleep(0.2)
    return {
        "status": body["status"],
        "progress": body.get("progress"),
        "submit_s": round(submitted, 2),
        "makespan_s": round(time.monotonic() - started, 1),
    }


def measure_local(images: ImageServer, count: int, concurrency: int) -> dict[str, Any]:
    started = time.monotonic()
    stack = start_stack(images.host_port, pollers=concurrency)
    try:
        result: dict[str, Any] = {"start-up s": round(time.monotonic() - started, 1)}
        with PeakRss(lambda: descendants(stack.process.pid)) as rss:
            result["idle MB"] = round(rss.now_mb())
            for run in ("cold", "warm"):
                result[run] = run_job(stack.api_url, images, count)
        result["peak MB"] = round(rss.peak_mb)
        return result
    finally:
        stack.stop()


def measure_ministack(images: ImageServer, count: int, concurrency: int) -> dict[str, Any]:
    python313 = find_python313()
    if python313 is None:
        raise SystemExit("no python3.13 here: MiniStack cannot run the template's functions")
    workdir = Path(tempfile.mkdtemp(prefix="retail-pulse-compare-"))
    started = time.monotonic()
    ministack = MiniStack.start(ROOT / ".venv-ministack/bin/python", workdir)
    try:
        ready = round(time.monotonic() - started, 1)
        state = deploy_stack(
            ministack,
            os.environ.get("SAM", str(ROOT / ".venv-sam/bin/sam")),
            python313,
            workdir,
            images.port,
            process_concurrency=concurrency,
            warm=False,
        )
        result: dict[str, Any] = {
            "start-up s": round(time.monotonic() - started, 1),
            "steps s": {"MiniStack ready": ready, **state["timings_s"]},
        }
        with PeakRss(lambda: processes_in_group(ministack.process.pid)) as rss:
            result["idle MB"] = round(rss.now_mb())
            for run in ("cold", "warm"):
                result[run] = run_job(state["api_url"], images, count)
        result["peak MB"] = round(rss.peak_mb)
        return result
    finally:
        left = ministack.stop()
        print(f"MiniStack stopped; processes left: {left or 'none'}", flush=True)
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m deployed.compare", description=__doc__)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--only", choices=["local", "ministack"])
    args = parser.parse_args()
    images = ImageServer(port=free_port()).start()
    try:
        for name, measure in (("local", measure_local), ("ministack", measure_ministack)):
            if args.only in (None, name):
                load = os.getloadavg()[0]
                result = measure(images, args.images, args.concurrency)
                print(f"{name} (C={args.concurrency}, load {load:.2f} at start): {result}")
    finally:
        images.stop()


if __name__ == "__main__":
    main()
