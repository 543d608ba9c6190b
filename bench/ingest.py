"""`python -m bench.ingest`: the ingest function's memory and speed on an upload job of
10,000 and 100,000 images with 1.3 KB presigned-style URLs (a 130 MB body at 100,000).

For each size: fresh emulators, as the local stack runs them (local_stack/aws.py: MiniStack
for S3 and SQS, DynamoDB Local); the body written to
a file and uploaded with the presigned POST POST /api/uploads gives (jobs/uploads.py), then
submitted by its upload_id; then the ingest function's handler runs in a subprocess of its
own, as Lambda runs it, and reports its peak RSS (VmHWM: the function's memory, not the
server's), the RSS of each pass (sampled) and its wall time. Prints `ingest_peak_mb_10000=`,
`ingest_peak_mb_100000=` and `ingest_images_per_s=` (at the largest size), and checks that
every image was enqueued once.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
URL_BYTES = 1_300
IMAGES_PER_VISIT = 3
STORE = "S00339218"
ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "JOBS_TABLE": "Jobs",
    "IMAGES_TABLE": "Images",
    "STORES_TABLE": "Stores",
    "IDEMPOTENCY_TABLE": "Idempotency",
    "UPLOADS_TABLE": "Uploads",
    "EXPORTS_TABLE": "Exports",
    "WEBHOOK_SECRETS_TABLE": "WebhookSecrets",
    "UPLOADS_BUCKET": "bench-uploads",
    "PAGE_TOKEN_SECRET_ARN": "bench-page-token",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_SERVICE_NAME": "retail-pulse",
    "POWERTOOLS_METRICS_NAMESPACE": "RetailPulse",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
    "EXPRESS_MAX_IMAGES": "100",
}
QUEUES = {
    "IMAGE_QUEUE_URL": "Images",
    "EXPRESS_QUEUE_URL": "Express",
    "INGEST_QUEUE_URL": "Ingest",
    "EXPORT_QUEUE_URL": "Export",
    "WEBHOOK_QUEUE_URL": "Webhooks",
}


def write_body(path: Path, images: int) -> int:
    """The job's JSON body, written visit by visit; returns its size in bytes."""
    visits = (images + IMAGES_PER_VISIT - 1) // IMAGES_PER_VISIT
    padding = "x" * (URL_BYTES - 80)
    with path.open("w") as out:
        out.write(f'{{"count": {visits}, "visits": [')
        for v in range(visits):
            count = min(IMAGES_PER_VISIT, images - v * IMAGES_PER_VISIT)
            urls = [
                f"https://photos.example.com/v{v}/{i}.jpg?X-Amz-Signature={padding}"
                for i in range(count)
            ]
            visit = {"store_id": STORE, "image_url": urls, "visit_time": "2026-11-28T10:15:00Z"}
            out.write(("," if v else "") + json.dumps(visit))
        out.write("]}")
    return path.stat().st_size


def prepare(endpoint: str, body: Path) -> dict[str, Any]:
    """Tables, bucket, queues and a store on the server; the body uploaded and submitted.
    Returns the ingest message."""
    import boto3
    import requests
    from pynamodb.models import Model

    from retail_pulse.data.models import TABLE_MODELS, StoreRecord, UploadRecord
    from retail_pulse.jobs.uploads import create_upload, submit_upload

    models: list[type[Model]] = [*TABLE_MODELS, UploadRecord]
    for model in models:
        model._connection = None
        model.create_table(billing_mode="PAY_PER_REQUEST", wait=True)
    StoreRecord(store_id=STORE, area_code="710006", store_name="BHARAT STORE").save()
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=ENV["UPLOADS_BUCKET"])
    s3.put_bucket_versioning(
        Bucket=ENV["UPLOADS_BUCKET"], VersioningConfiguration={"Status": "Enabled"}
    )
    ticket = create_upload("bench")
    with body.open("rb") as file:
        sent = requests.post(
            ticket.url, data=ticket.fields, files={"file": ("job.json", file)}, timeout=600
        )
    sent.raise_for_status()
    job_id = submit_upload("bench", ticket.upload.upload_id)
    sqs = boto3.client("sqs", endpoint_url=endpoint)
    [message] = sqs.receive_message(QueueUrl=os.environ["INGEST_QUEUE_URL"])["Messages"]
    sqs.delete_message(
        QueueUrl=os.environ["INGEST_QUEUE_URL"], ReceiptHandle=message["ReceiptHandle"]
    )
    return {"job_id": job_id, "body": message["Body"]}


def child(message_body: str) -> None:
    """The ingest function's handler on one message, as Lambda invokes it; prints its peak
    RSS and wall time as JSON."""
    sys.path.insert(0, str(ROOT / "functions" / "ingest"))
    from app import lambda_handler  # type: ignore[import-not-found]

    class Context:
        function_name = "IngestFunction"
        function_version = "$LATEST"
        memory_limit_in_mb = 512
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:IngestFunction"
        aws_request_id = "bench"
        log_group_name = "/aws/lambda/IngestFunction"
        log_stream_name = "bench"

        def get_remaining_time_in_millis(self) -> int:
            return 900_000

    from retail_pulse.data import ingest as checkpoint

    # The RSS of each pass: sampled on a thread, the pass switching when validation ends.
    phase = {"now": "validate"}
    peaks = {"validate": 0.0, "enqueue": 0.0}
    real_validated = checkpoint.validated

    def validated(*args: Any, **kwargs: Any) -> None:
        real_validated(*args, **kwargs)
        phase["now"] = "enqueue"

    checkpoint.validated = validated  # the bench's own probe of where the first pass ends
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            peaks[phase["now"]] = max(peaks[phase["now"]], _rss_now_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    before_mb = _rss_now_mb()  # after the imports, before the handler
    sampler.start()
    started = time.perf_counter()
    lambda_handler({"Records": [{"messageId": "bench", "body": message_body}]}, Context())
    seconds = time.perf_counter() - started
    stop.set()
    sampler.join()
    peak_mb = _rss_now_mb("VmHWM")
    print(
        json.dumps(
            {"seconds": seconds, "peak_mb": peak_mb, "imported_mb": before_mb, "passes": peaks}
        )
    )


def _rss_now_mb(field: str = "VmRSS") -> float:
    """This process's resident memory now (VmRSS) or at its highest (VmHWM), in MB. Not
    ru_maxrss: Linux carries that across exec, so a child started by a parent holding the
    server and the body would report the parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_size(images: int, workdir: Path) -> dict[str, Any]:
    from local_stack.aws import Emulators

    server = Emulators()
    server.start()
    endpoint = server.url
    os.environ.update(ENV, AWS_ENDPOINT_URL=endpoint, AWS_ENDPOINT_URL_DYNAMODB=server.dynamodb_url)
    for variable, name in QUEUES.items():
        os.environ[variable] = f"{endpoint}/123456789012/{name}"
    try:
        import boto3

        sqs = boto3.client("sqs", endpoint_url=endpoint)
        for name in QUEUES.values():
            sqs.create_queue(QueueName=name)
        from retail_pulse.settings import get_settings

        get_settings.cache_clear()
        body = workdir / f"job-{images}.json"
        size = write_body(body, images)
        prepared = prepare(endpoint, body)
        body.unlink()
        done = subprocess.run(
            [sys.executable, "-m", "bench.ingest", "--child", prepared["body"]],
            cwd=ROOT,
            env=dict(os.environ),
            capture_output=True,
            text=True,
            check=True,
        )
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        queued = int(
            sqs.get_queue_attributes(
                QueueUrl=os.environ["IMAGE_QUEUE_URL"],
                AttributeNames=["ApproximateNumberOfMessages"],
            )["Attributes"]["ApproximateNumberOfMessages"]
        )
        from retail_pulse.data.jobs import get_job

        job = get_job(prepared["job_id"])
        assert job is not None and not job.ingesting, job
        assert job.total == images == queued, (job.total, images, queued)
        return {
            "images": images,
            "body_mb": round(size / 1e6, 1),
            "seconds": round(measured["seconds"], 2),
            "peak_mb": round(measured["peak_mb"], 1),
            "imported_mb": round(measured["imported_mb"], 1),
            "validate_pass_mb": round(measured["passes"]["validate"], 1),
            "enqueue_pass_mb": round(measured["passes"]["enqueue"], 1),
            "images_per_s": round(images / measured["seconds"]),
            "enqueued": queued,
        }
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--sizes", default="10000,100000", help="images per job, comma-separated")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    if args.one:
        with tempfile.TemporaryDirectory(prefix="bench-ingest-") as workdir:
            print(json.dumps(run_size(args.one, Path(workdir))))
        return 0
    runs = []
    for images in (int(size) for size in args.sizes.split(",")):
        # Each size in a process of its own: a fresh server, and clients made for it.
        done = subprocess.run(
            [sys.executable, "-m", "bench.ingest", "--one", str(images)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if done.returncode:
            print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
            return 1
        run = json.loads(done.stdout.strip().splitlines()[-1])
        runs.append(run)
        print(
            f"ingest of {run['images']:,} images ({run['body_mb']} MB body): "
            f"{run['seconds']} s, {run['images_per_s']:,} images/s, peak RSS "
            f"{run['peak_mb']} MB ({run['imported_mb']} MB after imports, validating "
            f"{run['validate_pass_mb']} MB, enqueueing {run['enqueue_pass_mb']} MB), "
            f"{run['enqueued']:,} enqueued",
            flush=True,
        )
    for run in runs:
        print(f"ingest_peak_mb_{run['images']}={run['peak_mb']}")
    print(f"ingest_images_per_s={runs[-1]['images_per_s']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
