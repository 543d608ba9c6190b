"""Soak: thousands of images through the local stack, with trouble, and a strict audit.

`make soak` (or `python -m bench.soak --jobs 50 --images-per-job 100`) starts the whole
service on this machine (local_stack), an image server on 127.0.0.1, and submits the jobs
over HTTP. Of the image URLs, 10% are flaky (HTTP 503 twice, then the image: each has its
own key, so it really is retried) and 5% are permanently bad (HTTP 404). While the jobs
run, copies of image messages are sent straight to the image queue: duplicate deliveries
the pipeline must absorb. Then it audits every job in DynamoDB:

  jobs terminal         every job's status is completed or failed
  images lost           images still pending, or never recorded: must be 0
  counter mismatches    jobs whose succeeded/failed differ from their image records: must be 0
  unexpected outcomes   a flaky or good image that failed, a bad one that succeeded: must be 0
  duplicates absorbed   duplicate messages sent, none of them counted
  time to drain         first submit to last job terminal

Exits 1 when an audit figure that must be 0 is not. tests/e2e/test_soak.py runs a short
version against the e2e stack.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import requests

from retail_pulse.data.manifest import unpack_slice
from retail_pulse.domain import DEFAULT_TENANT
from retail_pulse.jobs.messages import ImageMessage
from tests.support.image_server import ImageServer

TERMINAL = {"completed", "failed"}
STORES = ("S00339218", "S01408764")
VISIT_TIME = "2026-11-28T10:15:00Z"
IMAGES_PER_VISIT = 10


@dataclass
class SoakConfig:
    jobs: int = 50
    images_per_job: int = 100
    flaky_share: float = 0.10
    bad_share: float = 0.05
    duplicate_share: float = 0.05  # duplicate messages sent, as a share of all images
    timeout_s: float = 900.0
    seed: int = 4


@dataclass
class Target:
    """Where the service under soak runs (the local stack's endpoints)."""

    api_url: str
    aws_endpoint_url: str
    dynamodb_endpoint_url: str
    queue_url: str
    jobs_table: str
    images_table: str


@dataclass
class SoakReport:
    jobs: int = 0
    images: int = 0
    jobs_terminal: int = 0
    images_lost: int = 0
    counter_mismatches: int = 0
    unexpected_outcomes: int = 0
    duplicates_sent: int = 0
    # Deliveries the process function found already filed: the duplicates sent, plus SQS
    # redeliveries of messages whose first delivery outlived the visibility timeout.
    duplicates_absorbed: int | None = None
    drain_s: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return (
            self.jobs_terminal == self.jobs
            and self.images_lost == 0
            and self.counter_mismatches == 0
            and self.unexpected_outcomes == 0
        )

    def _absorbed(self) -> str:
        if self.duplicates_absorbed is None:
            return "n/a (no stack log)"
        return f"{self.duplicates_absorbed} deliveries ignored as already filed"

    def text(self) -> str:
        return "\n".join(
            [
                f"jobs terminal:        {self.jobs_terminal} / {self.jobs}",
                f"images:               {self.images} ({dict(self.outcomes)})",
                f"images lost:          {self.images_lost}",
                f"counter mismatches:   {self.counter_mismatches}",
                f"unexpected outcomes:  {self.unexpected_outcomes}",
                f"duplicates absorbed:  {self._absorbed()} "
                f"({self.duplicates_sent} duplicate messages sent, none counted twice: "
                f"{'yes' if self.counter_mismatches == 0 else 'NO'})",
                f"time to drain:        {self.drain_s:.1f} s "
                f"({self.images / max(self.drain_s, 0.001):.0f} images/s)",
                f"verdict:              {'OK' if self.ok else 'FAILED'}",
            ]
        )


def plan_job(images: ImageServer, config: SoakConfig, rng: random.Random, n: int) -> list[dict]:
    """One job's visits; each URL's expected fate is encoded in its path (img/flaky/404)."""
    urls = []
    for i in range(config.images_per_job):
        roll = rng.random()
        size = f"{rng.randint(20, 400)}x{rng.randint(20, 400)}"
        if roll < config.bad_share:
            urls.append(images.url(f"/status/404?job={n}&i={i}"))
        elif roll < config.bad_share + config.flaky_share:
            urls.append(images.url(f"/flaky/soak-{config.seed}-{n}-{i}/2/{size}.jpg"))
        else:
            urls.append(images.url(f"/img/{size}.jpg"))
    return [
        {
            "store_id": STORES[v % len(STORES)],
            "image_url": urls[start : start + IMAGES_PER_VISIT],
            "visit_time": VISIT_TIME,
        }
        for v, start in enumerate(range(0, len(urls), IMAGES_PER_VISIT))
    ]


def expected_state(url: str) -> str:
    return "failed" if "/status/404" in url else "succeeded"


def _clients(target: Target) -> tuple[Any, Any]:
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    return (
        session.client("dynamodb", endpoint_url=target.dynamodb_endpoint_url),
        session.client("sqs", endpoint_url=target.aws_endpoint_url),
    )


def _image_items(
    dynamodb: Any, table: str, job_id: str, manifest: bool = False
) -> Iterator[dict[str, Any]]:
    """The job's image records (indexes >= 0), or its manifest's slices (below 0)."""
    pages = dynamodb.get_paginator("query").paginate(
        TableName=table,
        KeyConditionExpression="job_id = :j AND image_index " + ("< :z" if manifest else ">= :z"),
        ExpressionAttributeValues={":j": {"S": job_id}, ":z": {"N": "0"}},
        ConsistentRead=True,
    )
    for page in pages:
        yield from page["Items"]


def _message_bodies(item: dict[str, Any]) -> list[str]:
    """The image messages submit sent for the images of this manifest slice (what the
    reconciler sends)."""
    images = unpack_slice(item["job_id"]["S"], int(item["image_index"]["N"]), item["images"]["B"])
    return [json.dumps(ImageMessage.body(image, DEFAULT_TENANT, express=False)) for image in images]


def send_duplicates(target: Target, job_ids: list[str], count: int, seed: int) -> int:
    """Send `count` copies of random images' messages to the image queue, a few at a time
    while the jobs run, so some land before, some during and some after the original."""
    dynamodb, sqs = _clients(target)
    rng = random.Random(seed)
    bodies = [
        body
        for job_id in job_ids
        for item in _image_items(dynamodb, target.images_table, job_id, manifest=True)
        for body in _message_bodies(item)
    ]
    chosen = [rng.choice(bodies) for _ in range(count)] if bodies else []
    sent = 0
    for start in range(0, len(chosen), 10):
        entries = [
            {"Id": str(i), "MessageBody": b} for i, b in enumerate(chosen[start : start + 10])
        ]
        sent += len(
            sqs.send_message_batch(QueueUrl=target.queue_url, Entries=entries)["Successful"]
        )
        time.sleep(rng.uniform(0, 0.2))
    return sent


def run_soak(
    target: Target, images: ImageServer, config: SoakConfig, log_path: Path | None = None
) -> SoakReport:
    """Submit, inject duplicates, wait for every job to end, audit. `log_path` is the stack's
    log, where the process function notes each duplicate delivery it ignored."""
    log_offset = log_path.stat().st_size if log_path and log_path.exists() else 0
    rng = random.Random(config.seed)
    http = requests.Session()
    plans = [plan_job(images, config, rng, n) for n in range(config.jobs)]
    report = SoakReport(jobs=config.jobs, images=config.jobs * config.images_per_job)

    def submit(visits: list[dict]) -> str:
        body = {"count": len(visits), "visits": visits}
        response = http.post(f"{target.api_url}/api/submit/", json=body, timeout=60)
        response.raise_for_status()
        return response.json()["job_id"]

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as pool:
        job_ids = list(pool.map(submit, plans))
    duplicates: list[int] = []
    sender = threading.Thread(
        target=lambda: duplicates.append(
            send_duplicates(
                target, job_ids, round(config.duplicate_share * report.images), config.seed
            )
        ),
        daemon=True,
    )
    sender.start()

    unfinished = set(job_ids)
    deadline = started + config.timeout_s
    while unfinished and time.monotonic() < deadline:
        for job_id in list(unfinished):
            status = http.get(f"{target.api_url}/api/status", params={"jobid": job_id}, timeout=30)
            if status.status_code == 200 and status.json()["status"] in TERMINAL:
                unfinished.discard(job_id)
        time.sleep(0.5)
    report.drain_s = time.monotonic() - started
    report.jobs_terminal = config.jobs - len(unfinished)
    sender.join(timeout=60)
    report.duplicates_sent = duplicates[0] if duplicates else 0
    # Late duplicates may still be in flight: let them land before the audit.
    time.sleep(3)
    _audit(target, job_ids, plans, report)
    if log_path is not None:
        with open(log_path, "rb") as log:
            log.seek(log_offset)
            report.duplicates_absorbed = log.read().count(b"duplicate delivery ignored")
    return report


def _audit(target: Target, job_ids: list[str], plans: list[list[dict]], report: SoakReport) -> None:
    dynamodb, _ = _clients(target)
    for job_id, visits in zip(job_ids, plans, strict=True):
        urls = [url for visit in visits for url in visit["image_url"]]
        job = dynamodb.get_item(
            TableName=target.jobs_table, Key={"job_id": {"S": job_id}}, ConsistentRead=True
        )["Item"]
        items = list(_image_items(dynamodb, target.images_table, job_id))
        states = Counter(item["state"]["S"] for item in items)
        report.outcomes.update(states)
        report.images_lost += (len(urls) - len(items)) + states["pending"]
        counted = (int(job["succeeded"]["N"]), int(job["failed"]["N"]))
        if counted != (states["succeeded"], states["failed"]):
            report.counter_mismatches += 1
        for item in items:
            url = urls[int(item["image_index"]["N"])]
            if item["state"]["S"] != "pending" and item["state"]["S"] != expected_state(url):
                report.unexpected_outcomes += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--images-per-job", type=int, default=100)
    parser.add_argument(
        "--pollers", type=int, default=8, help="SQS pollers of the process function"
    )
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args(argv)
    config = SoakConfig(
        jobs=args.jobs, images_per_job=args.images_per_job, timeout_s=args.timeout, seed=args.seed
    )

    from local_stack.runtime import LogSink
    from local_stack.stack import LocalStack, StackConfig

    log_path = Path(tempfile.mkdtemp(prefix="soak-")) / "stack.log"
    images = ImageServer().start()
    # Fetchers dropping kept-alive connections is normal here, not worth a traceback each.
    images._httpd.handle_error = lambda request, address: None  # type: ignore[method-assign]
    stack_config = StackConfig(
        port=0,
        pollers=args.pollers,
        # The process function's timeout: a failed delivery comes back after a minute, not
        # the template's six, and a slow batch on a busy machine is never redelivered
        # while it still runs.
        visibility_timeout_s=60,
        schedule_period_s=10,
        allowed_private_hosts=images.host_port,
        # Transient retries back off from 1 s: 503-twice images take ~3 s, not ~6 s.
        parameter_overrides={"RetryBaseDelaySeconds": "1"},
    )
    with open(log_path, "w") as log:
        stack = LocalStack(stack_config, LogSink(log))
        try:
            endpoints = stack.start()
            target = Target(
                api_url=endpoints.api_url,
                aws_endpoint_url=endpoints.aws_endpoint_url,
                dynamodb_endpoint_url=endpoints.dynamodb_endpoint_url,
                queue_url=endpoints.queues["ImageQueue"],
                jobs_table=endpoints.tables["JobsTable"],
                images_table=endpoints.tables["ImagesTable"],
            )
            print(
                f"soak: {config.jobs} jobs x {config.images_per_job} images, "
                f"{config.flaky_share:.0%} flaky, {config.bad_share:.0%} bad, "
                f"{config.duplicate_share:.0%} duplicate deliveries (log: {log_path})",
                flush=True,
            )
            report = run_soak(target, images, config, log_path)
        finally:
            stack.stop()
            images.stop()
    print(report.text())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
