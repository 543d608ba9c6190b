"""What an operator reads in CloudWatch, from handlers run on real-shaped events: the EMF
metrics a job produces, and the keys (correlation id, job id, image, host) that let Logs
Insights answer "why did job X fail" and "which image hosts are failing"."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.integration.conftest import job, visit
from tests.support.events import api_event
from tests.support.handlers import FakeContext, load_handler
from tests.support.pipeline import Delivery, invoke_dead_letter, invoke_process

pytestmark = pytest.mark.usefixtures("stores", "no_gpu_pause")

Lines = list[dict[str, Any]]


class _CurrentStdout:
    """Writes to whatever sys.stdout is at the moment: capsys swaps it in only for the test
    itself, after fixtures are set up."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


@pytest.fixture
def output(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[[], Lines]:
    """Reads what the handlers printed since the last read, as JSON objects. Powertools
    prints EMF with print(), but its logger's handler holds the stdout of import time."""
    from retail_pulse.observability import logger

    monkeypatch.setattr(logger.registered_handler, "stream", _CurrentStdout())

    def read() -> Lines:
        out = capsys.readouterr().out
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    return read


def log_lines(lines: Lines) -> Lines:
    return [line for line in lines if "_aws" not in line]


def metrics(lines: Lines) -> dict[tuple[str, tuple[tuple[str, str], ...]], list[float]]:
    """{(metric name, dimensions other than service): values} of every EMF blob."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], list[float]] = defaultdict(list)
    for blob in lines:
        if "_aws" not in blob:
            continue
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == "RetailPulse"
            names = {name for group in directive["Dimensions"] for name in group}
            assert "service" in names and blob["service"] == "retail-pulse"
            dims = tuple(sorted((n, blob[n]) for n in names if n != "service"))
            for metric in directive["Metrics"]:
                value = blob[metric["Name"]]
                found[(metric["Name"], dims)].extend(value if isinstance(value, list) else [value])
    return dict(found)


def total(found: dict, name: str, **dims: str) -> float:
    return sum(found.get((name, tuple(sorted(dims.items()))), []))


def samples(found: dict, name: str) -> int:
    return sum(len(values) for (metric, _), values in found.items() if metric == name)


def submit(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the API Gateway event, the response) of one submit."""
    event = api_event("POST", "/api/submit/", body=body)
    return event, load_handler("submit").lambda_handler(event, FakeContext())


def deliveries(aws: Any) -> list[Delivery]:
    return [
        Delivery(body=m["Body"], receipt_handle=m["ReceiptHandle"], message_id=m["MessageId"])
        for m in aws.queued_messages()
    ]


def test_a_job_of_three_images_with_one_404(aws, image_server, output):
    missing = image_server.url("/status/404")
    urls = [image_server.url("/img/30x20.jpg"), missing, image_server.url("/img/40x20.png")]
    output()

    event, response = submit(job(visit("S00339218", urls)))
    assert response["statusCode"] == 201
    job_id = json.loads(response["body"])["job_id"]
    submitted = output()
    assert not invoke_process(deliveries(aws))
    processed = output()

    # Metrics: what the dashboard and alarms read.
    found = metrics(submitted + processed)
    assert total(found, "JobsSubmitted") == 1
    assert total(found, "ImagesSubmitted") == 3
    assert total(found, "ImagesSucceeded") == 2
    assert total(found, "ImagesFailed", reason="download") == 1
    assert samples(found, "ImagesFailed") == 1
    assert total(found, "JobsFailed") == 1 and samples(found, "JobsCompleted") == 0
    assert samples(found, "JobDuration") == 1
    assert samples(found, "QueueAge") == 3
    assert samples(found, "DownloadTime") == samples(found, "MeasureTime") == 2
    assert total(found, "DownloadBytes") > 0

    # Submit: every line carries the request's correlation id; "job accepted" its job id.
    request_id = event["requestContext"]["requestId"]
    submit_logs = log_lines(submitted)
    assert submit_logs and {line["correlation_id"] for line in submit_logs} == {request_id}
    (accepted,) = [line for line in submit_logs if line["message"] == "job accepted"]
    assert (accepted["job_id"], accepted["images"], accepted["level"]) == (job_id, 3, "INFO")

    # Process: every line names the job, every line about an image that image; the failure
    # its cause and host.
    process_logs = log_lines(processed)
    assert process_logs
    assert all(line["job_id"] == job_id for line in process_logs)
    job_lines = {"job finished", "job event emitted"}
    image_lines = [line for line in process_logs if line["message"] not in job_lines]
    assert all(line["image"].startswith(f"{job_id}/") for line in image_lines)
    (failed,) = [line for line in process_logs if line["message"] == "image failed"]
    assert failed["image"] == f"{job_id}/1"
    assert (failed["reason"], failed["host"]) == ("download", image_server.host_port)
    assert "HTTP 404" in failed["error"] and missing in failed["error"]
    (finished,) = [line for line in process_logs if line["message"] == "job finished"]
    assert (finished["outcome"], finished["succeeded"], finished["failed"]) == ("failed", 2, 1)
    assert finished["duration_s"] >= 0
    # No per-image success lines at INFO: a 10,000-image job would be 10,000 lines.
    assert {line["message"] for line in process_logs if line["level"] == "INFO"} == {
        "image failed",
        "job finished",
        "job event emitted",
    }


def test_lines_of_one_record_never_carry_another_records_image(aws, image_server, output):
    """Ten records of a batch run at once on ten threads: each failure names its own image,
    and a thread's next record, one that names no image, does not inherit the last one."""
    urls = [image_server.url(f"/missing-{n}.jpg") for n in range(10)]  # each a 404
    _, response = submit(job(visit("S00339218", urls)))
    job_id = json.loads(response["body"])["job_id"]
    output()
    assert not invoke_process(deliveries(aws))
    failures = [line for line in log_lines(output()) if line["message"] == "image failed"]

    assert sorted(line["image"] for line in failures) == sorted(f"{job_id}/{n}" for n in range(10))
    for line in failures:
        n = line["image"].rsplit("/", 1)[1]
        assert line["error"].endswith(f"/missing-{n}.jpg"), line

    unreadable = invoke_process([Delivery(body="{not an image message")])
    assert len(unreadable) == 1
    (crash,) = [line for line in log_lines(output()) if line["level"] == "ERROR"]
    assert crash["message"] == "image message unreadable; SQS will deliver it again"
    assert "image" not in crash and "job_id" not in crash


def test_a_request_never_carries_the_job_id_of_the_one_before(aws, image_server, output):
    _, accepted = submit(job(visit("S00339218", [image_server.url("/img/10x10.jpg")])))
    assert accepted["statusCode"] == 201
    output()

    event, rejected = submit({"count": 2, "visits": []})

    assert rejected["statusCode"] == 400
    (line,) = log_lines(output())
    assert line["message"] == "request rejected"
    assert line["correlation_id"] == event["requestContext"]["requestId"]
    assert "job_id" not in line


def test_status_lines_carry_the_job_id_and_the_request_id(aws, image_server, output, monkeypatch):
    from retail_pulse.observability import logger

    _, response = submit(job(visit("S00339218", [image_server.url("/img/10x10.jpg")])))
    job_id = json.loads(response["body"])["job_id"]
    # The status function logs nothing on success: its lines are its troubles. Make one
    # happen inside the request, once the job id is known.
    status = load_handler("status")
    lookup = status.job_status

    def troubled_lookup(tenant: str, job: str) -> Any:
        logger.warning("trouble")
        return lookup(tenant, job)

    monkeypatch.setattr(status, "job_status", troubled_lookup)
    event = api_event("GET", "/api/status", query={"jobid": job_id})
    output()

    assert status.lambda_handler(event, FakeContext())["statusCode"] == 200

    (line,) = log_lines(output())
    assert line["message"] == "trouble"
    assert line["job_id"] == job_id
    assert line["correlation_id"] == event["requestContext"]["requestId"]


def test_unknown_stores_count_as_failed_images_at_submit(aws, image_server, output):
    output()
    _, response = submit(
        job(
            visit("S00339218", [image_server.url("/img/10x10.jpg")]),
            visit("S99999999", [image_server.url("/img/10x11.jpg")] * 2),
        )
    )
    assert response["statusCode"] == 201

    found = metrics(output())
    assert total(found, "ImagesSubmitted") == 3
    assert total(found, "ImagesFailed", reason="store_unknown") == 2


def test_a_dead_lettered_image_counts_as_failed_by_dead_letter(aws, image_server, output):
    _, response = submit(job(visit("S00339218", [image_server.url("/img/10x10.jpg")])))
    assert response["statusCode"] == 201
    (message,) = aws.queued_messages()
    output()

    assert invoke_dead_letter([message["Body"]]) == {"batchItemFailures": []}

    found = metrics(output())
    assert total(found, "ImagesFailed", reason="dead_letter") == 1
    assert samples(found, "JobDuration") == 1


def test_the_reconciler_counts_stuck_jobs_and_deadline_failures(aws, image_server, output):
    from retail_pulse.jobs.reconcile import reconcile
    from retail_pulse.observability import metrics as powertools_metrics

    urls = [image_server.url(f"/img/{10 + i}x10.jpg") for i in range(2)]
    _, response = submit(job(visit("S00339218", urls)))
    assert response["statusCode"] == 201
    aws.queued_messages()  # lost: nothing will process them
    powertools_metrics.clear_metrics()  # what another test may have left unflushed
    output()

    reconcile(now=datetime.now(UTC) + timedelta(hours=3))  # past the hard deadline
    powertools_metrics.flush_metrics()  # what the reconciler's handler does on return

    found = metrics(output())
    assert total(found, "StuckJobs") == 1
    assert total(found, "JobsExpired") == 1
    assert total(found, "ImagesFailed", reason="deadline") == 2


def test_logs_never_carry_an_image_urls_credentials_but_the_client_sees_its_url(
    aws, image_server, output
):
    # A presigned-style URL with userinfo: both are credentials of the client's.
    secret_url = image_server.url("/status/404?X-Amz-Signature=SECRET-SIG&X-Amz-Credential=KEY")
    secret_url = secret_url.replace("http://", "http://agent:PASSWORD@")
    retried = image_server.url("/always/503?token=RETRY-TOKEN")
    _, response = submit(job(visit("S00339218", [secret_url, retried])))
    job_id = json.loads(response["body"])["job_id"]
    output()

    # Each its image's last attempt (carried in the message): the 503 has no retry left.
    last_attempts = [
        replace(d, body=json.dumps({**json.loads(d.body), "attempt": 4})) for d in deliveries(aws)
    ]
    assert not invoke_process(last_attempts)
    lines = output()

    printed = json.dumps(lines)
    for secret in ("SECRET-SIG", "KEY", "PASSWORD", "agent:", "RETRY-TOKEN"):
        assert secret not in printed
    failed = [line for line in log_lines(lines) if line["message"] == "image failed"]
    assert len(failed) == 2
    assert any("/status/404?<redacted>" in line["error"] for line in failed)
    status = load_handler("status").lambda_handler(
        api_event("GET", "/api/status", query={"jobid": job_id}), FakeContext()
    )
    errors = json.loads(status["body"])["error"]
    # The client's own job status keeps its URLs whole: they are how it finds the image.
    assert any(secret_url in e["error"] for e in errors)


def test_an_unexpected_error_on_one_image_fails_that_image_once_not_the_batch(
    aws, image_server, output, monkeypatch
):
    """A bug met on one image's bytes would fail every delivery alike: it becomes that
    image's permanent failure (traceback logged once), never six redeliveries and a
    dead letter, and the batch's other images are filed as usual."""
    from retail_pulse.jobs import process as process_module

    real_measure = process_module.measure_image

    def measure_with_a_bug(data: bytes, *args: Any, **kwargs: Any) -> Any:
        size = real_measure(data, *args, **kwargs)
        if size.width == 13:
            raise ZeroDivisionError("a bug only this image meets")
        return size

    monkeypatch.setattr(process_module, "measure_image", measure_with_a_bug)
    urls = [image_server.url("/img/13x10.jpg"), image_server.url("/img/30x20.jpg")]
    _, response = submit(job(visit("S00339218", urls)))
    job_id = json.loads(response["body"])["job_id"]
    output()

    assert not invoke_process(deliveries(aws))  # no record failure: nothing is redelivered
    printed = output()
    lines = log_lines(printed)

    tracebacks = [line for line in lines if "ZeroDivisionError" in str(line.get("exception"))]
    assert len(tracebacks) == 1
    status = json.loads(
        load_handler("status").lambda_handler(
            api_event("GET", "/api/status", query={"jobid": job_id}), FakeContext()
        )["body"]
    )
    assert status["status"] == "failed"
    assert status["progress"] == {"total": 2, "succeeded": 1, "failed": 1}
    (error,) = status["error"]
    assert error["error"] == (
        "image failed: unexpected error (ZeroDivisionError) while downloading or measuring; "
        f"it has been logged for the Retail Pulse team for {urls[0]}"
    )
    assert total(metrics(printed), "ImagesFailed", reason="internal") == 1
