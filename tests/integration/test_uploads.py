"""POST /api/uploads and POST /api/submit/ {upload_id}: a job too large for a request body
is uploaded to S3 with a presigned POST, then submitted by its id, and becomes its job at
once (before a byte of it is read)."""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

import boto3
import requests

from retail_pulse.data.models import JobRecord, UploadRecord
from retail_pulse.settings import get_settings
from tests.integration.conftest import job, visit
from tests.support.handlers import load_handler

A = "https://images.example.com/a.jpg"


def new_upload(call_api: Any, tenant: str | None = None) -> dict[str, Any]:
    result = call_api("POST", "/api/uploads", tenant=tenant)
    assert result.status_code == 201
    return dict(result.body)


def send(upload: dict[str, Any], body: bytes) -> requests.Response:
    """The client's upload, as S3 documents a browser-style POST: the fields, then the file
    (moto's S3 answers it in-process)."""
    response = requests.post(
        upload["upload_url"],
        data=upload["upload_fields"],
        files={"file": ("job.json", body, "application/json")},
        timeout=10,
    )
    assert response.status_code in (200, 201, 204), response.text
    return response


def ingest_messages(aws: Any) -> list[dict[str, Any]]:
    messages = aws.sqs.receive_message(QueueUrl=aws.ingest_url, MaxNumberOfMessages=10).get(
        "Messages", []
    )
    return [json.loads(m["Body"]) for m in messages]


def test_an_upload_is_a_presigned_post_that_s3_holds_to_its_key_and_size(aws, call_api):
    upload = new_upload(call_api)

    assert set(upload) == {
        "upload_id",
        "upload_url",
        "upload_method",
        "upload_fields",
        "expires_at",
        "max_bytes",
    }
    assert upload["upload_method"] == "POST"
    assert upload["max_bytes"] == get_settings().upload_max_bytes == 1024**3
    # The policy S3 checks the POST against: only this client's key, at most max_bytes.
    policy = json.loads(base64.b64decode(upload["upload_fields"]["policy"]))
    key = upload["upload_fields"]["key"]
    assert key == f"uploads/default/{upload['upload_id']}"
    assert ["content-length-range", 1, upload["max_bytes"]] in policy["conditions"]
    assert {"key": key} in policy["conditions"]
    assert {"bucket": get_settings().uploads_bucket} in policy["conditions"]
    record = UploadRecord.get(upload["upload_id"])
    assert (record.tenant, record.job_id) == ("default", None)


def test_an_uploaded_job_is_submitted_by_its_id_and_made_at_once(aws, stores, call_api):
    upload = new_upload(call_api)
    send(upload, json.dumps(job(visit("S00339218", [A]))).encode())

    result = call_api("POST", "/api/submit/", body={"upload_id": upload["upload_id"]})

    assert result.status_code == 201
    job_id = result.body["job_id"]
    assert result.headers["Location"] == f"/api/status?jobid={job_id}"
    # Made before a byte is read: ongoing, being ingested, no image yet.
    record = JobRecord.get(job_id, consistent_read=True)
    assert (record.ingesting, record.total, record.upload_id) == (True, 0, upload["upload_id"])
    status = call_api("GET", "/api/status", query={"jobid": job_id})
    assert status.body == {
        "status": "ongoing",
        "job_id": job_id,
        "ingesting": True,
        "progress": {"total": 0, "succeeded": 0, "failed": 0},
    }
    assert ingest_messages(aws) == [{"job_id": job_id, "tenant": "default", "kind": "ingest"}]
    assert aws.receive() == []  # no image message before the ingest reads the upload


def test_one_upload_makes_one_job_however_often_it_is_submitted(aws, stores, call_api):
    upload = new_upload(call_api)
    send(upload, json.dumps(job(visit("S00339218", [A]))).encode())
    body = {"upload_id": upload["upload_id"]}

    first = call_api("POST", "/api/submit/", body=body)
    again = call_api("POST", "/api/submit/", body=body)

    assert first.status_code == again.status_code == 201
    assert again.body == first.body
    assert len(ingest_messages(aws)) == 1


def test_two_submits_of_one_upload_at_the_same_moment_make_one_job(
    aws, stores, call_api, monkeypatch
):
    """Both read the upload unclaimed, then both claim it: the conditional claim lets one
    job through, and the other submit answers that job."""
    upload = new_upload(call_api)
    send(upload, json.dumps(job(visit("S00339218", [A]))).encode())
    from retail_pulse.data import uploads as data_uploads

    both_read = threading.Barrier(2, timeout=30)
    real_head = data_uploads.uploaded_object

    def head_then_wait(found_upload: Any) -> Any:
        found = real_head(found_upload)
        both_read.wait()  # neither claims before both have seen the upload unclaimed
        return found

    answers: list[Any] = []
    load_handler("submit")  # loaded once, before the two threads use it
    monkeypatch.setattr("retail_pulse.jobs.uploads.uploaded_object", head_then_wait)
    threads = [
        threading.Thread(
            target=lambda: answers.append(
                call_api("POST", "/api/submit/", body={"upload_id": upload["upload_id"]})
            )
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [a.status_code for a in answers] == [201, 201]
    assert answers[0].body == answers[1].body
    assert len(ingest_messages(aws)) == 1


def test_another_clients_upload_answers_as_an_unknown_one(aws, stores, call_api):
    upload = new_upload(call_api, tenant="client-a")
    send(upload, json.dumps(job(visit("S00339218", [A]))).encode())

    stranger = call_api(
        "POST", "/api/submit/", body={"upload_id": upload["upload_id"]}, tenant="client-b"
    )
    unknown = call_api("POST", "/api/submit/", body={"upload_id": "no-such-upload"})

    assert stranger.status_code == unknown.status_code == 400
    expected = stranger.body["error"].replace(upload["upload_id"], "no-such-upload")
    assert expected == unknown.body["error"]
    assert "POST /api/uploads" in unknown.body["error"]
    assert UploadRecord.get(upload["upload_id"]).job_id is None
    assert ingest_messages(aws) == []


def test_a_submit_before_the_upload_says_to_upload_first(aws, stores, call_api):
    upload = new_upload(call_api)

    result = call_api("POST", "/api/submit/", body={"upload_id": upload["upload_id"]})

    assert result.status_code == 400
    assert "nothing has been uploaded" in result.body["error"]
    assert "upload_url" in result.body["error"]
    assert UploadRecord.get(upload["upload_id"]).job_id is None


def test_upload_id_and_a_job_body_together_are_refused(aws, stores, call_api):
    body = {**job(visit("S00339218", [A])), "upload_id": "x"}

    result = call_api("POST", "/api/submit/", body=body)

    assert result.status_code == 400
    assert "either upload_id" in result.body["error"]


def test_nothing_logged_carries_the_uploads_signature(aws, call_api, capsys):
    upload = new_upload(call_api)

    logged = capsys.readouterr()
    for secret in (upload["upload_fields"]["x-amz-signature"], upload["upload_fields"]["policy"]):
        assert secret not in logged.out + logged.err


def test_the_object_submit_found_is_the_one_recorded(aws, stores, call_api):
    """The ingest reads exactly what submit found: the version is recorded with the claim."""
    upload = new_upload(call_api)
    send(upload, json.dumps(job(visit("S00339218", [A]))).encode())

    call_api("POST", "/api/submit/", body={"upload_id": upload["upload_id"]})

    record = UploadRecord.get(upload["upload_id"])
    head = boto3.client("s3", region_name="us-east-1").head_object(
        Bucket=get_settings().uploads_bucket, Key=record.key
    )
    assert (record.version_id, record.size) == (head["VersionId"], head["ContentLength"])
