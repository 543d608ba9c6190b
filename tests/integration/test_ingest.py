"""The ingest function: an uploaded job's body, read from S3 as a stream, becomes its
manifest and image messages, resumably; a body that breaks a rule fails its job with one
error that says what and where, and nothing of it is processed."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from retail_pulse.data.manifest import submitted_images
from retail_pulse.data.models import JobRecord
from retail_pulse.jobs import ingest as use_case
from tests.integration.conftest import visit
from tests.integration.test_uploads import ingest_messages, new_upload, send
from tests.support.handlers import LongContext, load_handler
from tests.support.pipeline import run_ingest_queue

KNOWN = "S00339218"


def body_of(images: int, per_visit: int = 3, store: str = KNOWN) -> dict[str, Any]:
    visits = []
    for v in range((images + per_visit - 1) // per_visit):
        count = min(per_visit, images - v * per_visit)
        urls = [f"https://images.example.com/v{v}/{i}.jpg" for i in range(count)]
        visits.append(visit(store, urls))
    return {"count": len(visits), "visits": visits}


def submitted_upload(call_api: Any, body: dict[str, Any] | bytes) -> str:
    upload = new_upload(call_api)
    send(upload, body if isinstance(body, bytes) else json.dumps(body).encode())
    result = call_api("POST", "/api/submit/", body={"upload_id": upload["upload_id"]})
    assert result.status_code == 201
    return str(result.body["job_id"])


def image_indexes(aws: Any) -> Counter[int]:
    return Counter(json.loads(m["Body"])["image_index"] for m in aws.queued_messages(100_000))


def status(call_api: Any, job_id: str) -> dict[str, Any]:
    return dict(call_api("GET", "/api/status", query={"jobid": job_id}).body)


def test_an_upload_becomes_its_manifest_and_one_message_per_image(aws, stores, call_api):
    job_id = submitted_upload(call_api, body_of(2_500))

    assert run_ingest_queue(aws) == 1

    assert image_indexes(aws) == Counter(range(2_500))
    images = submitted_images(job_id)
    assert [i.image_index for i in images] == list(range(2_500))
    assert images[1_001].url == "https://images.example.com/v333/2.jpg"
    record = JobRecord.get(job_id, consistent_read=True)
    assert (record.total, record.visit_count, record.ingesting) == (2_500, 834, None)
    assert status(call_api, job_id) == {
        "status": "ongoing",
        "job_id": job_id,
        "progress": {"total": 2_500, "succeeded": 0, "failed": 0},
    }


def test_images_of_unknown_stores_fail_at_once_as_at_submit(aws, stores, call_api):
    body = body_of(2, per_visit=1)
    body["visits"][1]["store_id"] = "S99999999"
    job_id = submitted_upload(call_api, body)

    run_ingest_queue(aws)

    assert image_indexes(aws) == Counter([0])
    assert status(call_api, job_id)["progress"] == {"total": 2, "succeeded": 0, "failed": 1}


def test_a_bad_url_fails_the_job_with_one_error_that_says_where(aws, stores, call_api):
    body = body_of(4_000, per_visit=4)
    body["visits"][812]["image_url"][3] = "http://[::1/x.jpg"
    job_id = submitted_upload(call_api, body)

    run_ingest_queue(aws)

    found = status(call_api, job_id)
    assert found["status"] == "failed"
    assert found["progress"] == {"total": 0, "succeeded": 0, "failed": 0}
    [error] = found["error"]
    assert error["store_id"] is None
    assert error["error"].startswith(
        "visits[812].image_url[3] 'http://[::1/x.jpg' is not a valid URL"
    )
    # The sentence the same body posted to submit gets in its 400.
    assert call_api("POST", "/api/submit/", body=body).body == {"error": error["error"]}
    assert image_indexes(aws) == Counter()  # nothing of it is processed
    assert submitted_images(job_id) == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b'{"count": 1, "visits": [{"store_id": "S1", "image_url": ["https://a.example/x',
            "not valid JSON",
        ),
        (b"[1, 2]", "must be a JSON object"),
        (json.dumps(body_of(6) | {"count": 5}).encode(), "count is 5 but visits has 2 entries"),
        (json.dumps({"count": 1}).encode(), "visits is missing"),
        (json.dumps(body_of(3) | {"callback_url": "ftp://x"}).encode(), "callback_url"),
    ],
)
def test_a_body_that_breaks_a_rule_fails_its_job_and_says_what(
    aws, stores, call_api, body, expected
):
    job_id = submitted_upload(call_api, body)

    run_ingest_queue(aws)

    found = status(call_api, job_id)
    assert found["status"] == "failed"
    [error] = found["error"]
    assert error["store_id"] is None and expected in error["error"]
    assert image_indexes(aws) == Counter()


def test_over_the_upload_limit_fails_the_job_naming_the_limit(aws, stores, call_api, monkeypatch):
    monkeypatch.setenv("MAX_IMAGES_PER_UPLOAD_JOB", "10")
    from retail_pulse.settings import get_settings

    get_settings.cache_clear()
    job_id = submitted_upload(call_api, body_of(12))

    try:
        run_ingest_queue(aws)
        [error] = status(call_api, job_id)["error"]
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()

    assert error["error"].startswith("visits[3]: the job has 12 images; the limit is 10")
    assert "MAX_IMAGES_PER_UPLOAD_JOB" in error["error"]


def test_an_ingest_out_of_time_hands_over_and_nothing_is_sent_twice_or_skipped(
    aws, stores, call_api, monkeypatch
):
    """The invocation runs out of time after its first chunk: it sends its message again
    and the next invocation goes on from the checkpoint."""
    job_id = submitted_upload(call_api, body_of(3_500))
    out_of_time = {"now": False}
    real_enqueue = use_case.enqueue_images

    def enqueue_then_run_out(messages: Any, express: bool) -> None:
        real_enqueue(messages, express)
        out_of_time["now"] = True  # the next check of the clock hands over

    monkeypatch.setattr(use_case, "enqueue_images", enqueue_then_run_out)
    monkeypatch.setattr(
        LongContext,
        "get_remaining_time_in_millis",
        lambda self: 1_000 if out_of_time["now"] else 900_000,
    )

    handler = load_handler("ingest").lambda_handler
    [message] = aws.sqs.receive_message(QueueUrl=aws.ingest_url)["Messages"]
    handler({"Records": [{"messageId": "m1", "body": message["Body"]}]}, LongContext())

    record = JobRecord.get(job_id, consistent_read=True)
    assert record.ingesting is True
    assert status(call_api, job_id)["ingesting"] is True
    assert len(ingest_messages(aws)) == 1  # handed over
    assert image_indexes(aws) == Counter(range(1_000))

    monkeypatch.setattr(use_case, "enqueue_images", real_enqueue)
    out_of_time["now"] = False
    aws.sqs.purge_queue(QueueUrl=aws.ingest_url)
    handler({"Records": [{"messageId": "m2", "body": message["Body"]}]}, LongContext())

    assert image_indexes(aws) == Counter(range(1_000, 3_500))
    assert len(submitted_images(job_id)) == 3_500
    assert JobRecord.get(job_id, consistent_read=True).ingesting is None


def test_while_the_body_is_read_status_counts_the_images_read(aws, stores, call_api, monkeypatch):
    job_id = submitted_upload(call_api, body_of(12_000, per_visit=4))
    noted = {"once": False}
    real_note = use_case.checkpoint.note_read

    def note_then_run_out(*args: Any, **kwargs: Any) -> None:
        real_note(*args, **kwargs)
        noted["once"] = True

    monkeypatch.setattr(use_case.checkpoint, "note_read", note_then_run_out)
    monkeypatch.setattr(
        LongContext,
        "get_remaining_time_in_millis",
        lambda self: 1_000 if noted["once"] else 900_000,
    )
    handler = load_handler("ingest").lambda_handler
    [message] = aws.sqs.receive_message(QueueUrl=aws.ingest_url)["Messages"]
    handler({"Records": [{"messageId": "m1", "body": message["Body"]}]}, LongContext())

    found = status(call_api, job_id)
    assert found["ingesting"] is True
    assert found["status"] == "ongoing"
    assert found["progress"]["total"] == use_case.PROGRESS_EVERY
    assert image_indexes(aws) == Counter()  # the first pass enqueues nothing


def test_a_second_delivery_while_the_first_holds_the_lease_does_nothing(aws, stores, call_api):
    job_id = submitted_upload(call_api, body_of(10))
    from datetime import UTC, datetime

    from retail_pulse.data import ingest as checkpoint

    assert checkpoint.acquire(job_id, "first", datetime.now(UTC), 600) is not None

    run_ingest_queue(aws)

    assert image_indexes(aws) == Counter()
    assert JobRecord.get(job_id, consistent_read=True).ingesting is True


def test_a_job_cancelled_while_it_is_read_stops_with_the_images_sent_so_far(
    aws, stores, call_api, monkeypatch
):
    job_id = submitted_upload(call_api, body_of(2_500))
    cancelled = {"now": False}
    real_enqueue = use_case.enqueue_images

    def enqueue_then_cancel(messages: Any, express: bool) -> None:
        real_enqueue(messages, express)
        if not cancelled["now"]:  # the client cancels after the first chunk is out
            cancelled["now"] = True
            assert call_api("POST", "/api/cancel", query={"jobid": job_id}).status_code == 200

    monkeypatch.setattr(use_case, "enqueue_images", enqueue_then_cancel)

    run_ingest_queue(aws)

    record = JobRecord.get(job_id, consistent_read=True)
    assert (record.ingesting, record.total) == (None, 1_000)
    assert image_indexes(aws) == Counter(range(1_000))  # nothing read after the cancel
    assert status(call_api, job_id)["status"] == "cancelled"
