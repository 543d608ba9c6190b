"""The process function on real-shaped SQS batches: perimeters, failures, partial batch
responses and exactly-once accounting."""

from __future__ import annotations

import json

import pytest

from retail_pulse.data.models import FAILED, SUCCEEDED, ImageRecord, JobRecord
from tests.integration.conftest import job, visit
from tests.support.events import sqs_event
from tests.support.handlers import FakeContext, load_handler
from tests.support.pipeline import images_sent_again

pytestmark = pytest.mark.usefixtures("no_gpu_pause")


def submit(call_api, urls, store_id="S00339218"):
    result = call_api("POST", "/api/submit/", body=job(visit(store_id, urls)))
    assert result.status_code == 201
    return result.body["job_id"]


def event_from_queue(aws, receive_count=None):
    """An SQS event of the messages on the queue, with their real receipt handles."""
    messages = aws.receive()
    event = sqs_event(
        [m["Body"] for m in messages], receive_count and [receive_count] * len(messages)
    )
    for record, message in zip(event["Records"], messages, strict=True):
        record["messageId"] = message["MessageId"]
        record["receiptHandle"] = message["ReceiptHandle"]
    return event


def process(event):
    return load_handler("process").lambda_handler(event, FakeContext())


def images_of(job_id):
    """The job's image records (filed results): its manifest items, at negative indexes,
    are left out."""
    records = ImageRecord.query(
        job_id, range_key_condition=ImageRecord.image_index >= 0, consistent_read=True
    )
    return sorted(records, key=lambda i: i.image_index)


@pytest.mark.parametrize(
    ("path", "perimeter"),
    [
        ("/img/550x404.jpg", 1908),
        ("/img/1280x720.png", 4000),
        ("/img/1280x720.webp", 4000),
        ("/img/320x240.gif", 1120),
        ("/img/640x480.bmp", 2240),
        ("/img/4000x3000.jpg", 14000),
    ],
)
def test_perimeter_of_each_format(aws, stores, call_api, image_server, path, perimeter):
    job_id = submit(call_api, [image_server.url(path)])
    response = process(event_from_queue(aws))

    assert response == {"batchItemFailures": []}
    (image,) = images_of(job_id)
    assert (image.state, image.perimeter) == (SUCCEEDED, perimeter)
    assert call_api("GET", "/api/status", query={"jobid": job_id}).body["status"] == "completed"


def test_a_batch_of_ten_is_measured_and_counted(aws, stores, call_api, image_server):
    urls = [image_server.url(f"/img/{100 + i}x100.jpg") for i in range(10)]
    job_id = submit(call_api, urls)
    assert process(event_from_queue(aws)) == {"batchItemFailures": []}
    assert [i.perimeter for i in images_of(job_id)] == [2 * (200 + i) for i in range(10)]
    record = JobRecord.get(job_id)
    assert (record.succeeded, record.failed, record.finished_at is not None) == (10, 0, True)


def test_http_404_and_not_an_image_fail_the_job_with_the_cause(aws, stores, call_api, image_server):
    missing = image_server.url("/status/404")
    job_id = submit(call_api, [image_server.url("/img/10x10.jpg")])
    other = call_api(
        "POST",
        "/api/submit/",
        body=job(visit("S00339218", [missing]), visit("S01408764", [image_server.url("/text")])),
    ).body["job_id"]
    assert process(event_from_queue(aws)) == {"batchItemFailures": []}

    assert call_api("GET", "/api/status", query={"jobid": job_id}).body["status"] == "completed"
    status = call_api("GET", "/api/status", query={"jobid": other}).body
    assert status["status"] == "failed"
    errors = {e["store_id"]: e["error"] for e in status["error"]}
    assert "HTTP 404" in errors["S00339218"] and missing in errors["S00339218"]
    assert "not an image" in errors["S01408764"]


def test_duplicate_delivery_changes_no_counter(aws, stores, call_api, image_server):
    job_id = submit(call_api, [image_server.url("/img/550x404.jpg")])
    event = event_from_queue(aws)
    assert process(event) == {"batchItemFailures": []}
    assert process(event) == {"batchItemFailures": []}

    record = JobRecord.get(job_id)
    assert (record.total, record.succeeded, record.failed) == (1, 1, 0)


def test_only_the_bad_record_of_a_batch_is_reported(aws, stores, call_api, image_server):
    job_id = submit(call_api, [image_server.url("/img/550x404.jpg")] * 3)
    event = event_from_queue(aws)
    event["Records"][1]["body"] = "{not json"

    response = process(event)

    assert response == {"batchItemFailures": [{"itemIdentifier": event["Records"][1]["messageId"]}]}
    assert JobRecord.get(job_id).succeeded == 2


def test_transient_failure_is_retried_later_then_fails_with_the_attempt_count(
    aws, stores, call_api, image_server
):
    url = image_server.url("/always/503")
    job_id = submit(call_api, [url])
    first = event_from_queue(aws)

    with images_sent_again() as sent:
        response = process(first)

    # The record is done with: its retry is a message of its own, the image's second attempt,
    # held back for a backoff rather than retried at once.
    assert response == {"batchItemFailures": []}
    (retry,) = sent
    assert retry.body == {**json.loads(first["Records"][0]["body"]), "attempt": 2}
    assert retry.delay_s >= 1
    assert aws.receive() == []
    # Still pending: no result is filed for it (no record), and the export says so.
    assert images_of(job_id) == []
    (row,) = call_api("GET", "/api/results", query={"jobid": job_id}).body["results"]
    assert (row["image_url"], row["status"]) == (url, "pending")

    # Its receive count says nothing: the attempt it carries is the last one.
    last = sqs_event([json.dumps({**retry.body, "attempt": 4})], [1])
    with images_sent_again() as sent:
        assert process(last) == {"batchItemFailures": []}
    assert sent == []
    (image,) = images_of(job_id)
    assert image.state == FAILED
    assert "HTTP 503" in image.error and "4 attempts" in image.error
    assert image.attempts == 4
    status = call_api("GET", "/api/status", query={"jobid": job_id}).body
    assert status["status"] == "failed"
    assert json.dumps(status["error"]).count("S00339218") == 1


@pytest.mark.parametrize(
    ("cause", "expected"),
    [
        (
            "did not finish within 30 s for {url}",
            "image download failed: did not finish within 30 s (gave up after 4 attempts)"
            " for {url}",
        ),
        ("HTTP 503", "image download failed: HTTP 503 (gave up after 4 attempts) for {url}"),
    ],
)
def test_the_last_failed_attempt_names_the_cause_the_attempts_and_the_url_last(cause, expected):
    from retail_pulse.imaging.errors import TransientImageError
    from retail_pulse.jobs.process import describe_failure

    url = "https://img.example/a.jpg?sig=kept-for-the-client"
    error = TransientImageError(cause.format(url=url))
    assert describe_failure(error, url, "(gave up after 4 attempts)") == expected.format(url=url)
