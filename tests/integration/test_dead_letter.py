"""The dead-letter handler: an image the queue gave up on is recorded failed, its job ends,
and nothing is counted twice."""

from __future__ import annotations

import json

import pytest

from retail_pulse.data.models import FAILED, SUCCEEDED, ImageRecord, JobRecord
from retail_pulse.domain import ImageSuccess
from tests.integration.conftest import job, visit
from tests.support.dynamodb_local import backend, backend_stores  # noqa: F401
from tests.support.filing import file_result
from tests.support.pipeline import (
    MAX_RECEIVES,
    assert_accounted,
    invoke_dead_letter,
)

pytestmark = pytest.mark.usefixtures("backend_stores", "no_gpu_pause")


def submit(call_api, image_server, count=2):
    urls = [image_server.url(f"/img/{10 + i}x10.jpg") for i in range(count)]
    result = call_api("POST", "/api/submit/", body=job(visit("S00339218", urls)))
    assert result.status_code == 201
    return result.body["job_id"]


def test_a_dead_lettered_image_fails_with_its_attempts_and_the_job_ends(
    aws, call_api, image_server
):
    job_id = submit(call_api, image_server, count=2)
    first, second = (m["Body"] for m in aws.queued_messages())
    file_result(job_id, 0, ImageSuccess(40, 10, 10, "S00339218", "710006"), 1)

    response = invoke_dead_letter([second])

    assert response == {"batchItemFailures": []}
    image = ImageRecord.get(job_id, 1)
    url = json.loads(second)["url"]
    assert image.state == FAILED
    # The service failed, not the image or its host: the client reads so, and what to do.
    assert image.error == (
        f"processing failed: the service crashed or could not save the result {MAX_RECEIVES} "
        "times in a row, so the image was set aside and the Retail Pulse team alerted; "
        f"retry the job (POST /api/retry) to try it again, for {url}"
    )
    # Its attempts are the downloads that may have started: the one its message carries.
    assert image.attempts == 1
    assert_accounted(job_id)
    status = call_api("GET", "/api/status", query={"jobid": job_id}).body
    assert status["status"] == "failed"
    assert status["error"] == [{"store_id": "S00339218", "error": image.error}]
    assert first  # the other image's message was processed normally


def test_the_same_dead_letter_twice_changes_nothing(aws, call_api, image_server):
    job_id = submit(call_api, image_server, count=1)
    (body,) = (m["Body"] for m in aws.queued_messages())

    invoke_dead_letter([body])
    invoke_dead_letter([body, body])

    job_record = assert_accounted(job_id)
    assert (job_record.succeeded, job_record.failed) == (0, 1)


def test_a_late_dead_letter_does_not_undo_a_success(aws, call_api, image_server):
    job_id = submit(call_api, image_server, count=1)
    (body,) = (m["Body"] for m in aws.queued_messages())
    file_result(job_id, 0, ImageSuccess(40, 10, 10, "S00339218", "710006"), 3)

    invoke_dead_letter([body])

    assert ImageRecord.get(job_id, 0).state == SUCCEEDED
    job_record = assert_accounted(job_id)
    assert (job_record.succeeded, job_record.failed) == (1, 0)


def test_an_unreadable_body_is_logged_and_dropped(aws, call_api, image_server, caplog):
    job_id = submit(call_api, image_server, count=1)

    response = invoke_dead_letter(["{not json", json.dumps({"job_id": job_id})])

    assert response == {"batchItemFailures": []}
    dropped = [r for r in caplog.records if "not an image message" in r.getMessage()]
    assert [r.body for r in dropped] == ["{not json", json.dumps({"job_id": job_id})]
    assert_accounted(job_id, terminal=False)


def test_a_message_for_an_unknown_job_is_dropped(aws, caplog):
    body = json.dumps(
        {"job_id": "no-such-job", "image_index": 0, "url": "http://x/y.jpg", "store_id": "S1"}
    )
    assert invoke_dead_letter([body]) == {"batchItemFailures": []}
    # Nothing is written for it: filing an image creates its record, but not for a job
    # that no longer exists (expired), which would leave an orphan record behind.
    assert list(ImageRecord.query("no-such-job", consistent_read=True)) == []
    with pytest.raises(JobRecord.DoesNotExist):
        JobRecord.get("no-such-job", consistent_read=True)
    assert any("its job is gone" in r.getMessage() for r in caplog.records)


def test_when_dynamodb_fails_the_message_stays_on_the_dead_letter_queue(
    aws, call_api, image_server, monkeypatch
):
    from retail_pulse.jobs import dead_letter

    job_id = submit(call_api, image_server, count=1)
    (body,) = (m["Body"] for m in aws.queued_messages())

    def unavailable(*args, **kwargs):
        raise RuntimeError("DynamoDB unavailable")

    with monkeypatch.context() as patch:
        patch.setattr(dead_letter, "record_outcome", unavailable)
        response = invoke_dead_letter([body])
    assert len(response["batchItemFailures"]) == 1

    assert invoke_dead_letter([body]) == {"batchItemFailures": []}
    assert_accounted(job_id)


def test_sqs_moves_a_message_after_max_receives_and_the_handler_settles_it(
    aws, call_api, image_server
):
    """The real redrive, on moto: six receives without a delete, then the dead-letter queue."""
    job_id = submit(call_api, image_server, count=1)
    for _ in range(MAX_RECEIVES):
        (message,) = aws.receive()
        aws.sqs.change_message_visibility(
            QueueUrl=aws.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )
    assert aws.receive() == []
    dead = aws.sqs.receive_message(QueueUrl=aws.dlq_url, MaxNumberOfMessages=10)["Messages"]

    invoke_dead_letter([m["Body"] for m in dead])

    job_record = assert_accounted(job_id)
    assert job_record.failed == 1
