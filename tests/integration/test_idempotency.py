"""Submit with an Idempotency-Key: a repeat gets the same job, a different body under the same
key is refused, a repeat during the first gets 409, a failed submit can be retried."""

from __future__ import annotations

import threading
import time

import boto3
import pytest

from retail_pulse.api.models import SubmitRequest
from retail_pulse.data.models import JobRecord
from tests.integration.conftest import job, visit
from tests.support.dynamodb_local import backend, backend_stores  # noqa: F401
from tests.support.pipeline import all_job_ids

pytestmark = pytest.mark.usefixtures("backend_stores")

BODY = job(visit("S00339218", ["http://127.0.0.1:9/a.jpg", "http://127.0.0.1:9/b.jpg"]))


def post(call_api, body=BODY, key=None):
    headers = {"Idempotency-Key": key} if key is not None else None
    return call_api("POST", "/api/submit/", body=body, headers=headers)


def test_the_same_request_with_the_same_key_gets_the_same_job(aws, call_api):
    first = post(call_api, key="order-1")
    again = post(call_api, key="order-1")

    assert (first.status_code, again.status_code) == (201, 201)
    assert again.body == first.body
    assert all_job_ids() == [first.body["job_id"]]
    assert len(aws.queued_messages()) == 2  # the repeat enqueued nothing


def test_without_a_key_every_request_is_a_new_job(aws, call_api):
    first, second = post(call_api), post(call_api)

    assert first.body["job_id"] != second.body["job_id"]
    assert sorted(all_job_ids()) == sorted([first.body["job_id"], second.body["job_id"]])


def test_different_keys_are_different_jobs(aws, call_api):
    assert post(call_api, key="a").body != post(call_api, key="b").body


def test_the_same_key_with_a_different_body_is_refused(aws, call_api):
    first = post(call_api, key="order-2")
    other = job(visit("S01408764", ["http://127.0.0.1:9/c.jpg"]))

    refused = post(call_api, body=other, key="order-2")

    assert refused.status_code == 409
    assert "already used for a different request" in refused.body["error"]
    assert all_job_ids() == [first.body["job_id"]]


def test_a_repeat_while_the_first_is_running_gets_409_then_the_same_job(aws, call_api, monkeypatch):
    from retail_pulse.jobs import submit

    entered, release = threading.Event(), threading.Event()
    real_record = submit.record_job

    def slow_record(request, job_id=None):
        entered.set()
        assert release.wait(30)
        return real_record(request, job_id=job_id)

    monkeypatch.setattr(submit, "record_job", slow_record)
    results: list[str] = []
    request = SubmitRequest.model_validate(BODY).to_job_request("default")
    first = threading.Thread(target=lambda: results.append(submit.submit_job(request, "order-3")))
    first.start()
    assert entered.wait(30)

    during = post(call_api, key="order-3")

    release.set()
    first.join(30)
    assert during.status_code == 409
    assert "still being processed" in during.body["error"]
    assert "retry" in during.body["error"]
    after = post(call_api, key="order-3")
    assert after.status_code == 201
    assert after.body["job_id"] == results[0]


def test_a_submit_that_fails_while_enqueueing_answers_503_and_the_retry_runs(
    aws, call_api, monkeypatch
):
    from retail_pulse.data import queue

    with monkeypatch.context() as patch:
        patch.setattr(queue, "_sqs", lambda: boto3.client("sqs", endpoint_url="http://127.0.0.1:9"))
        failed = post(call_api, key="order-4")

    assert failed.status_code == 503
    assert "send the same request again with the same Idempotency-Key" in failed.body["error"]
    (first_job,) = all_job_ids()  # the job the failed attempt began
    retried = post(call_api, key="order-4")
    assert retried.status_code == 201
    assert retried.body == {"job_id": first_job}  # the key's job, finished; never a second
    assert post(call_api, key="order-4").body == retried.body
    assert all_job_ids() == [first_job]
    assert len(aws.queued_messages()) == 2


@pytest.mark.parametrize("key", ["", "  ", "x" * 256, "tab\there"])
def test_an_unusable_key_is_a_400(aws, call_api, key):
    response = post(call_api, key=key)

    assert response.status_code == 400
    assert "Idempotency-Key" in response.body["error"]
    assert all_job_ids() == []


def test_the_key_is_remembered_for_24_hours(aws, call_api):
    post(call_api, key="order-5")

    # Two steps, each remembered: the key's job id, and that job's recording.
    records = boto3.client("dynamodb", region_name="us-east-1").scan(
        TableName="Idempotency", ConsistentRead=True
    )["Items"]
    assert len(records) == 2
    for record in records:
        remembered_s = int(record["expiration"]["N"]) - time.time()
        assert 23.9 * 3600 < remembered_s <= 24 * 3600
        assert record["status"]["S"] == "COMPLETED"


def test_jobs_table_has_no_job_for_a_refused_request(aws, call_api):
    post(call_api, body={"count": 2, "visits": []}, key="order-6")
    assert JobRecord.count() == 0
