"""`python -m bench.failed_status`: what one status poll of a failed job reads, before and
after the failure summary kept with the job (issue 23), on DynamoDB Local.

Before, GET /api/status of a failed job read the job, then Queried every failure through
the FailedImages index to list one error per store. Now the job keeps a bounded summary of
its failures (at most 100 stores, how many failed), written when it fails: a poll is one
GetItem of the job. Both are measured here as the service's own data code issues them
(`get_job` + `failed_images` then, `status_of(get_job(...))` now), with read units as
DynamoDB Local reports them (ReturnConsumedCapacity, metering.py), for two jobs:

- 3,000 images of 3,000 unknown stores (each failure's error is a short sentence);
- 10,000 images of 10,000 stores whose ~2 KB presigned URLs answered 403 (each error names
  its URL).

And what finishing such a job reads (issue 24). Before, the invocation that counted the
job's last image read every failure (the FailedImages index) to sum them up, in one go;
a job with more than SUMMARY_INLINE_FAILURES (1,000) now has them summed up page by page
(jobs/summary.py: SUMMARY_PAGE_FAILURES a Query, each at most 1 MB, its place kept on the
job between pages), and is polled meanwhile with one GetItem. Measured for the two jobs
above and a third, 50,000 images failed over 5,000 stores: the read units and requests of
each page (the largest is what any invocation reads between two checkpoints), of the whole
pass, and of a status poll during it. The pass announces the job at its end: EventBridge
and SQS are pointed at a closed port here, so that announcement fails (and is left to the
reconciler), which costs no read.

Scratch tables in an in-memory DynamoDB Local of its own; prints one JSON line per job.
"""

from __future__ import annotations

import json
import os
import random
import socket
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "JOBS_TABLE": "FailedStatusBenchJobs",
    "IMAGES_TABLE": "FailedStatusBenchImages",
    "STORES_TABLE": "FailedStatusBenchStores",
    "POWERTOOLS_SERVICE_NAME": "retail-pulse",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_LOG_LEVEL": "CRITICAL",
    # Nothing listens there: the pass's announcement fails at once (see above).
    "AWS_ENDPOINT_URL_EVENTS": "http://127.0.0.1:9",
    "AWS_ENDPOINT_URL_SQS": "http://127.0.0.1:9",
    "AWS_MAX_ATTEMPTS": "1",
    "INGEST_QUEUE_URL": "http://127.0.0.1:9/000000000000/Ingest",
    "WEBHOOK_QUEUE_URL": "http://127.0.0.1:9/000000000000/Webhooks",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _presigned(n: int) -> str:
    """A URL of about 2 KB shaped like an S3 presigned one: its credential, token and
    signature are random hex (as incompressible as the real ones; a repeated pattern would
    make the kept summary look smaller than it is)."""
    noise = random.Random(n).randbytes(960).hex()
    return (
        f"https://bucket.s3.amazonaws.com/visits/{n:07d}.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential={noise[:20]}&X-Amz-Security-Token={noise[20:1856]}"
        f"&X-Amz-Signature={noise[1856:1920]}"
    )


def _failed_job(images: int, error_of: Any, stores: int | None = None) -> str:
    """A job whose every image failed, each of its own store (or of one of `stores`),
    finished as the service finishes it (mark_finished: the summary kept with the failed
    stamp, or, for more than SUMMARY_INLINE_FAILURES, its paged summary begun)."""
    from retail_pulse.data.jobs import create_job, mark_finished
    from retail_pulse.domain import FAILED, Image, Job

    job_id = str(uuid.uuid4())
    job = Job(
        job_id=job_id,
        total=images,
        succeeded=0,
        failed=images,
        visit_count=images,
        created_at=datetime.now(UTC),
    )
    rows = [
        Image(
            job_id=job_id,
            image_index=n,
            store_id=f"STORE-{n if stores is None else n % stores:07d}",
            area=None,
            url=f"https://images.example/{n}.jpg",
            visit_time="2026-11-28T10:15:00Z",
            state=FAILED,
            error=error_of(n),
        )
        for n in range(images)
    ]
    create_job(job, rows)
    assert mark_finished(job_id) is not None
    return job_id


def _reads(call: Any) -> tuple[Any, float, dict[str, int]]:
    """What `call` returns, the read units it consumed, and its DynamoDB requests."""
    from retail_pulse.metering import usage

    usage.reset()
    result = call()
    summary = usage.summary()
    requests = {k: v for k, v in summary["requests"].items() if k.startswith("dynamodb.")}
    return result, round(sum(usage.read_units.values()), 1), requests


def _paged_summary(job_id: str) -> dict[str, Any]:
    """The job's paged summary run to its end in one invocation, each page's reads taken
    at the clock it looks at between pages (so the first and last entries are the pass's
    reads of the job around the pages)."""
    from retail_pulse.jobs.summary import continue_summary
    from retail_pulse.metering import usage

    pages: list[float] = []

    def clock() -> float:
        pages.append(sum(usage.read_units.values()))
        usage.reset()
        return 900.0

    usage.reset()
    continue_summary(job_id, "default", clock)
    last = round(sum(usage.read_units.values()), 1)
    per_page = [round(units, 1) for units in pages[1:]] + [last]
    return {
        "pages": len(per_page),
        "page_read_units_max": max(per_page),
        "read_units": round(sum(pages) + last, 1),
    }


def measure(name: str, images: int, error_of: Any, stores: int | None = None) -> dict[str, Any]:
    from retail_pulse.data.image_records import failed_images
    from retail_pulse.data.jobs import get_job
    from retail_pulse.jobs.status import status_document, status_of

    job_id = _failed_job(images, error_of, stores)

    def poll() -> dict[str, Any]:
        job = get_job(job_id)
        assert job is not None
        return status_document(status_of(job))

    during, during_units, during_requests = _reads(poll)
    paged = _paged_summary(job_id) if during["status"] == "ongoing" else None

    def before() -> list[dict[str, str]]:
        get_job(job_id)
        first: dict[str, dict[str, str]] = {}
        for failure in failed_images(job_id):
            first.setdefault(failure.store_id, vars(failure))
        return list(first.values())

    old, old_units, old_requests = _reads(before)
    new, new_units, new_requests = _reads(poll)
    return {
        "job": name,
        "failed_images": images,
        "before": {
            "read_units": old_units,
            "requests": old_requests,
            "error_bytes": len(json.dumps(old)),
        },
        "after": {
            "read_units": new_units,
            "requests": new_requests,
            "body_bytes": len(json.dumps(new)),
            "listed": len(new["error"]),
            "error_count": new["error_count"],
        },
        # Finishing it: before, `before`'s reads in the one invocation that stamped it.
        "paged_summary": paged,
        "poll_while_summing_up": {
            "status": during["status"],
            "read_units": during_units,
            "requests": during_requests,
        },
    }


def main() -> int:
    os.environ.update(_ENV)
    from local_stack.dynamodb_local import START_TIMEOUT_S, ensure_jar, start, wait_ready

    port = _free_port()
    log_path = Path(tempfile.mkdtemp(prefix="dynamodb-local-")) / "dynamodb-local.log"
    process = start(ensure_jar(), port, log_path)
    try:
        wait_ready(port, process, START_TIMEOUT_S)
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = f"http://127.0.0.1:{port}"
        from retail_pulse.data.models import ImageRecord, JobRecord
        from retail_pulse.metering import enable

        enable()  # as lambda_entry does: count what the clients send

        for model in (JobRecord, ImageRecord):
            model.create_table(billing_mode="PAY_PER_REQUEST", wait=False)
        results = [
            measure("3,000 unknown stores", 3000, lambda n: "store_id not found in store master"),
            measure(
                "10,000 stores, 2 KB presigned URLs answering 403",
                10_000,
                lambda n: f"image download failed: HTTP 403 for {_presigned(n)}",
            ),
            measure(
                "50,000 images of 5,000 unknown stores",
                50_000,
                lambda n: "store_id not found in store master",
                stores=5_000,
            ),
        ]
    finally:
        process.terminate()
        process.wait(timeout=10)
    for result in results:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
