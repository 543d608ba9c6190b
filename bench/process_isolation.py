"""`python -m bench.process_isolation`: what one client's image hosts and a cancel cost, before
and after issue 22 (points 1, 2, 3, 7), measured in-process on moto.

Three scenarios, each through the process function's handler (functions/process/app.py):

- `flood`: a hostile client's job of `--hostile` (40) images on a host that sends a status
  line and then trickles header bytes, then a victim client's job of `--victim` (20) good
  images; the event source hands the function batches of 100 (ProcessBatchSize), one at a
  time, records reported failed come back with their receive count raised (dead-lettered at
  6, as the redrive does), messages sent again come back at once. IMAGE_DEADLINE_S is scaled
  to `--deadline` (4 s; 30 s in the template) and the invocation's time with it (60 s of 30
  in the template). Prints the victim's job time (submit to terminal, or "not terminal"
  after `--limit` s; the job's own finished stamp as `victim_job_s`, the invocation's end as
  `victim_terminal_s`), its images that failed, that took more than one attempt, that were
  given back unstarted, and that were dead-lettered.
- `cancel`: a job of `--images` (300) images on a host that answers each after `--slow`
  (0.5) s, on a function of IMAGE_CONCURRENCY `--concurrency` (10) threads, cancelled
  `--cancel-after` (2) s after the first batch starts. Prints the downloads that started
  after the cancel was answered, and those that started more than 2 s after it.
- `memory`: one batch of 100 records, each a ~20 MB JPEG (bench/images.py's, with its
  Content-Length; `--chunked` sends it without one), in a fresh process with the
  function's malloc settings. Prints the process's peak RSS and its growth over the batch.

`--root DIR` measures another checkout's layer and functions (the hosts, moto and this script
come from this checkout either way), for the "before" figures: export the commit before
issue 22's process change, e.g.

    mkdir /tmp/rp-before && git archive 4fb1a0d | tar -x -C /tmp/rp-before
    python -m bench.process_isolation flood --root /tmp/rp-before

The last line printed is the scenario's figures, as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from bench.images import send_jpeg, serve_on_loopback
from bench.moto_env import MOTO_ENV, REGION

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    **MOTO_ENV,
    "EXPRESS_MAX_IMAGES": "0",
    "POWERTOOLS_METRICS_DISABLED": "true",
}
BATCH = 100  # ProcessBatchSize
MAX_RECEIVES = 6  # the image queue's maxReceiveCount


class Moto:
    """The tables and queues the submit, process, cancel and dead-letter functions use."""

    def __init__(self) -> None:
        import boto3
        from moto import mock_aws

        self._mock = mock_aws()
        self._mock.start()
        from retail_pulse.data.models import ALL_MODELS, StoreRecord
        from tests.support.template import create_tables

        for model in ALL_MODELS:
            model._connection = None
        create_tables(boto3.client("dynamodb", region_name=REGION), os.environ)
        boto3.client("secretsmanager", region_name=REGION).create_secret(
            Name=ENV["PAGE_TOKEN_SECRET_ARN"], SecretString="bench"
        )
        self.sqs = boto3.client("sqs", region_name=REGION)
        for name in ("Images", "ImagesDeadLetter", "ExpressImages", "Webhooks", "Ingest"):
            self.sqs.create_queue(QueueName=name)
        StoreRecord(store_id="S00339218", area_code="710006", store_name="BHARAT STORE").save()

    def receive(self, limit: int) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        while len(got) < limit:
            page = self.sqs.receive_message(
                QueueUrl=ENV["IMAGE_QUEUE_URL"],
                MaxNumberOfMessages=min(10, limit - len(got)),
                AttributeNames=["All"],
            ).get("Messages", [])
            if not page:
                break
            got.extend(page)
        return got

    def delete(self, message: dict[str, Any]) -> None:
        self.sqs.delete_message(
            QueueUrl=ENV["IMAGE_QUEUE_URL"], ReceiptHandle=message["ReceiptHandle"]
        )


_FUNCTIONS: dict[str, Any] = {}
MEASURED = ROOT  # the checkout whose layer and functions run (--root)


def _function(name: str) -> Any:
    """functions/<name>/app.py of the measured checkout, loaded once, as Lambda loads it."""
    if name not in _FUNCTIONS:
        import importlib.util

        path = MEASURED / "functions" / name / "app.py"
        spec = importlib.util.spec_from_file_location(f"bench_{name}_app", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _FUNCTIONS[name] = module
    return _FUNCTIONS[name].lambda_handler


def _api(method: str, path: str, tenant: str, **kwargs: Any) -> dict[str, Any]:
    from tests.support.events import api_event
    from tests.support.handlers import FakeContext, function_for

    handler = _function(function_for(path))
    response = handler(api_event(method, path, tenant=tenant, **kwargs), FakeContext())
    return {"status": response["statusCode"], "body": json.loads(response["body"] or "null")}


def _submit(urls: list[str], tenant: str) -> str:
    body = {
        "count": 1,
        "visits": [
            {"store_id": "S00339218", "image_url": urls, "visit_time": "2026-11-28T10:15:00Z"}
        ],
    }
    answer = _api("POST", "/api/submit/", tenant, body=body)
    assert answer["status"] == 201, answer
    return str(answer["body"]["job_id"])


class _Context:
    """A Lambda context with `remaining_s` left at its start."""

    function_name = "bench-process"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench-process"
    aws_request_id = "00000000-0000-4000-8000-000000000000"

    def __init__(self, remaining_s: float) -> None:
        self._ends = time.monotonic() + remaining_s

    def get_remaining_time_in_millis(self) -> int:
        return int((self._ends - time.monotonic()) * 1000)


def _event(messages: list[dict[str, Any]], receives: dict[str, int]) -> dict[str, Any]:
    from tests.support.events import sqs_event

    event = sqs_event([m["Body"] for m in messages], [receives[m["MessageId"]] for m in messages])
    for record, message in zip(event["Records"], messages, strict=True):
        record["messageId"] = message["MessageId"]
        record["receiptHandle"] = message["ReceiptHandle"]
    return event


def _zero_delays(sqs: Any) -> list[dict[str, Any]]:
    """Messages the function sends again come back at once (as the tests drain them); their
    bodies are listed."""
    sent: list[dict[str, Any]] = []

    def at_once(params: dict[str, Any], **_: Any) -> None:
        if "DelaySeconds" in params:
            params["DelaySeconds"] = 0
            sent.append(json.loads(params["MessageBody"]))

    from retail_pulse.data.queue import _sqs

    _sqs().meta.events.register("before-parameter-build.sqs.SendMessage", at_once)
    return sent


def flood(args: argparse.Namespace) -> dict[str, Any]:
    os.environ["IMAGE_DEADLINE_S"] = str(args.deadline)
    aws = Moto()
    from retail_pulse.data.models import ImageRecord, JobRecord
    from retail_pulse.settings import get_settings
    from tests.support.events import sqs_event
    from tests.support.handlers import FakeContext
    from tests.support.image_server import ImageServer
    from tests.support.trickle_host import TrickleHost

    good, trickle = ImageServer().start(), TrickleHost(every_s=0.5).start()
    os.environ["ALLOWED_PRIVATE_HOSTS"] = f"{good.host_port},{trickle.host_port}"
    get_settings.cache_clear()
    process, dead_letter = _function("process"), _function("dead_letter")
    sent_again = _zero_delays(aws.sqs)
    hostile = _submit([trickle.url(f"/hostile/{i}.jpg") for i in range(args.hostile)], "hostile")
    started = time.monotonic()
    victim = _submit([good.url(f"/img/{20 + i}x10.jpg") for i in range(args.victim)], "victim")
    receives: dict[str, int] = {}  # message id -> receives so far
    bodies: dict[str, str] = {}
    not_started: list[int] = []
    dead: list[str] = []
    # The invocation's time, scaled as the deadline is: in the template an image may start
    # until 24.6 s into a 60 s invocation (60 - 30 s of deadline - 0.4 s of pause - 5 s
    # kept to file), 0.82 of the deadline; the same fraction here.
    remaining_s = 0.82 * args.deadline + args.deadline + 0.4 + 5.0
    terminal_s = None
    while time.monotonic() - started < args.limit:
        batch = aws.receive(BATCH)
        if not batch:
            break
        for message in batch:
            receives[message["MessageId"]] = receives.get(message["MessageId"], 0) + 1
            bodies[message["MessageId"]] = message["Body"]
        response = process(_event(batch, receives), _Context(remaining_s))
        failed = {item["itemIdentifier"] for item in response["batchItemFailures"]}
        for message in batch:
            body = json.loads(message["Body"])
            if message["MessageId"] not in failed:
                aws.delete(message)
                continue
            if body["job_id"] == victim:
                not_started.append(body["image_index"])
            if receives[message["MessageId"]] >= MAX_RECEIVES:
                aws.delete(message)
                dead.append(message["Body"])
                dead_letter(sqs_event([message["Body"]]), FakeContext())
            else:  # visible again at once (the function asked for 0 s, or its timeout)
                aws.sqs.change_message_visibility(
                    QueueUrl=ENV["IMAGE_QUEUE_URL"],
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=0,
                )
        job = JobRecord.get(victim, consistent_read=True)
        if job.finished_at is not None and terminal_s is None:
            terminal_s = time.monotonic() - started
            break
    trickle.stop()
    good.stop()
    records = list(ImageRecord.query(victim, range_key_condition=ImageRecord.image_index >= 0))
    job = JobRecord.get(victim, consistent_read=True)
    given_back = not_started + [
        b["image_index"] for b in sent_again if b["job_id"] == victim and b.get("attempt") == 1
    ]
    return {
        "scenario": "flood",
        "root": str(args.root),
        "hostile_images": args.hostile,
        "victim_images": args.victim,
        "deadline_s": args.deadline,
        "victim_terminal_s": None if terminal_s is None else round(terminal_s, 2),
        # The job's own clock: submitted to stamped finished, whatever the batch did after.
        "victim_job_s": (
            None
            if job.finished_at is None
            else round((job.finished_at - job.created_at).total_seconds(), 2)
        ),
        "victim_succeeded": job.succeeded,
        "victim_failed": job.failed,
        "victim_more_than_one_attempt": sum(1 for r in records if (r.attempts or 0) > 1),
        "victim_given_back_unstarted": len(given_back),
        "victim_dead_lettered": sum(1 for b in dead if json.loads(b)["job_id"] == victim),
        "victim_errors": sorted({r.error for r in records if r.error})[:3],
        "hostile_job": hostile,
    }


class SlowHost:
    """Answers every GET with a small JPEG after `slow_s`; notes when each request came."""

    def __init__(self, slow_s: float) -> None:
        from tests.support.image_server import make_image

        body = make_image(64, 48, "jpg")
        self.arrivals: list[float] = []
        lock = threading.Lock()
        arrivals = self.arrivals

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:
                with lock:
                    arrivals.append(time.monotonic())
                time.sleep(slow_s)
                send_jpeg(self, body)

        self._httpd, self.host_port = serve_on_loopback(Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def cancel(args: argparse.Namespace) -> dict[str, Any]:
    os.environ["IMAGE_CONCURRENCY"] = str(args.concurrency)
    aws = Moto()
    from retail_pulse.settings import get_settings
    from tests.support.handlers import FakeContext

    host = SlowHost(args.slow)
    os.environ["ALLOWED_PRIVATE_HOSTS"] = host.host_port
    get_settings.cache_clear()
    process = _function("process")
    _zero_delays(aws.sqs)
    job_id = _submit([f"http://{host.host_port}/{i}.jpg" for i in range(args.images)], "default")
    cancelled_at: list[float] = []

    def cancel_later() -> None:
        time.sleep(args.cancel_after)
        answer = _api("POST", "/api/cancel", "default", query={"jobid": job_id})
        cancelled_at.append(time.monotonic())
        assert answer["status"] == 200, answer

    canceller = threading.Thread(target=cancel_later)
    started = time.monotonic()
    canceller.start()
    receives: dict[str, int] = {}
    while batch := aws.receive(BATCH):
        for message in batch:
            receives[message["MessageId"]] = 1
        process(_event(batch, receives), FakeContext())
        for message in batch:
            aws.delete(message)
    canceller.join()
    host.stop()
    answered = cancelled_at[0]
    status = _api("GET", "/api/status", "default", query={"jobid": job_id})["body"]
    return {
        "scenario": "cancel",
        "root": str(args.root),
        "images": args.images,
        "concurrency": args.concurrency,
        "cancel_after_s": round(answered - started, 2),
        "fetched": len(host.arrivals),
        "fetched_after_cancel": sum(1 for t in host.arrivals if t > answered),
        "fetched_over_2s_after_cancel": sum(1 for t in host.arrivals if t > answered + 2),
        "status": status.get("status"),
        "progress": status.get("progress"),
    }


def memory(args: argparse.Namespace) -> dict[str, Any]:
    """In a fresh process (with the function's malloc settings): see _memory_child."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_ARENA_MAX": "2"}
    command = [sys.executable, "-m", "bench.process_isolation", "_memory_child"]
    command += ["--root", str(args.root)] + (["--chunked"] if args.chunked else [])
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _memory_child(args: argparse.Namespace) -> dict[str, Any]:
    aws = Moto()
    from bench.images import LARGE_NAME, ensure_images
    from retail_pulse.settings import get_settings
    from tests.support.handlers import FakeContext

    large = ensure_images()[LARGE_NAME].read_bytes()
    chunked = args.chunked

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0" if chunked else "HTTP/1.1"

        def log_message(self, *a: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            if not chunked:  # without a length, the body ends when the connection closes
                self.send_header("Content-Length", str(len(large)))
            self.end_headers()
            self.wfile.write(large)

    httpd, host_port = serve_on_loopback(Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    os.environ["ALLOWED_PRIVATE_HOSTS"] = host_port
    get_settings.cache_clear()
    process = _function("process")
    _zero_delays(aws.sqs)
    job_id = _submit([f"http://{host_port}/big.jpg?i={i}" for i in range(BATCH)], "default")
    batch = aws.receive(BATCH)
    receives = {m["MessageId"]: 1 for m in batch}
    before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    response = process(_event(batch, receives), FakeContext())
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    from retail_pulse.data.models import JobRecord

    job = JobRecord.get(job_id, consistent_read=True)
    return {
        "scenario": "memory",
        "root": str(args.root),
        "chunked": chunked,
        "images": len(batch),
        "image_bytes": len(large),
        "peak_rss_mb": round(peak_kb / 1024),
        "rss_before_batch_mb": round(before_kb / 1024),
        "growth_mb": round((peak_kb - before_kb) / 1024),
        "succeeded": job.succeeded,
        "failed_records": len(response["batchItemFailures"]),
    }


SCENARIOS = {"flood": flood, "cancel": cancel, "memory": memory, "_memory_child": _memory_child}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout measured")
    parser.add_argument("--hostile", type=int, default=40)
    parser.add_argument("--victim", type=int, default=20)
    parser.add_argument("--deadline", type=float, default=4.0)
    parser.add_argument("--limit", type=float, default=120.0)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--slow", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--cancel-after", type=float, default=2.0)
    parser.add_argument("--chunked", action="store_true")
    args = parser.parse_args(argv)
    args.root = args.root.resolve()
    global MEASURED
    MEASURED = args.root
    os.environ.update(ENV)
    # The measured checkout's layer first, so its retail_pulse is the one imported.
    sys.path.insert(0, str(args.root / "layers" / "common"))
    result = SCENARIOS[args.scenario](args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
