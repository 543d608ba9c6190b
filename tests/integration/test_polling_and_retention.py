"""The polling contract (submit's Location, an ongoing status's Retry-After) and retention
(every job and image record carries the TTL that DynamoDB deletes it by)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3

from retail_pulse.data.models import FAILED, SUCCEEDED, ImageRecord, JobRecord, ManifestRecord
from retail_pulse.domain import ImageSuccess
from retail_pulse.settings import get_settings
from tests.integration.conftest import job, visit
from tests.support.filing import file_result

URL = "https://images.example/a.jpg"
BHARAT = "S00339218"


def submit(call_api: Any, images: int = 1, store: str = BHARAT, **kwargs: Any) -> Any:
    result = call_api("POST", "/api/submit/", body=job(visit(store, [URL] * images)), **kwargs)
    assert result.status_code == 201, result.body
    return result


def success() -> ImageSuccess:
    return ImageSuccess(perimeter=4, width=1, height=1, store_id=BHARAT, area="710006")


def test_submit_answers_201_with_the_location_to_poll(aws, stores, call_api):
    for path in ("/api/submit/", "/api/submit"):
        result = call_api("POST", path, body=job(visit(BHARAT, [URL])))
        job_id = result.body["job_id"]
        assert result.status_code == 201
        assert result.headers["Location"] == f"/api/status?jobid={job_id}"
        followed = call_api("GET", "/api/status", query={"jobid": job_id})
        assert followed.status_code == 200 and followed.body["job_id"] == job_id


def test_an_idempotent_repeat_carries_the_same_location(aws, stores, call_api):
    first = submit(call_api, headers={"Idempotency-Key": "order-7"})
    again = submit(call_api, headers={"Idempotency-Key": "order-7"})
    assert again.headers["Location"] == first.headers["Location"]


def test_an_ongoing_status_carries_retry_after_and_a_finished_one_does_not(
    aws, stores, call_api, monkeypatch
):
    job_id = submit(call_api, images=2).body["job_id"]
    # The status's clock pinned half a second after the submit: the hint then depends on
    # the job's progress only, never on how fast the machine runs this test.
    submitted = JobRecord.get(job_id).created_at

    class Clock(datetime):
        @classmethod
        def now(cls, tz=None):
            return submitted + timedelta(seconds=0.5)

    monkeypatch.setattr("retail_pulse.jobs.status.datetime", Clock)

    unstarted = call_api("GET", "/api/status", query={"jobid": job_id})
    assert unstarted.body["status"] == "ongoing"
    assert unstarted.headers["Retry-After"] == "5"  # nothing done yet: no rate to go by

    # Half done in half a second: the other half is due about as soon.
    file_result(job_id, 0, success(), attempts=1)
    halfway = call_api("GET", "/api/status", query={"jobid": job_id})
    assert halfway.headers["Retry-After"] == "1"

    file_result(job_id, 1, success(), attempts=1)
    done = call_api("GET", "/api/status", query={"jobid": job_id})
    assert done.body["status"] == "completed"
    assert "Retry-After" not in done.headers


def test_retry_after_follows_the_jobs_rate(aws, stores, call_api):
    """1 of 100 images done in 10 s: 99 more at that rate are 990 s, so the most, 60."""
    job_id = submit(call_api, images=100).body["job_id"]
    JobRecord(job_id=job_id).update(
        actions=[JobRecord.created_at.set(datetime.now(UTC) - timedelta(seconds=10))]
    )
    file_result(job_id, 0, success(), attempts=1)

    result = call_api("GET", "/api/status", query={"jobid": job_id})

    assert result.headers["Retry-After"] == "60"


def test_jobs_and_their_images_expire_after_retention_days(aws, stores, call_api, monkeypatch):
    """The job, its manifest, the record of an image failed at submit (unknown store) and
    the record an image's filed result writes all expire RETENTION_DAYS from then."""
    monkeypatch.setenv("RETENTION_DAYS", "30")
    get_settings.cache_clear()
    try:
        body = job(visit(BHARAT, [URL] * 3), visit("S_NOT_A_STORE", [URL]))
        result = call_api("POST", "/api/submit/", body=body)
        assert result.status_code == 201, result.body
        job_id = result.body["job_id"]
        assert file_result(job_id, 0, success(), attempts=1)
    finally:
        monkeypatch.delenv("RETENTION_DAYS")
        get_settings.cache_clear()
    expected = datetime.now(UTC) + timedelta(days=30)

    job_record = JobRecord.get(job_id)
    manifest = list(ManifestRecord.query(job_id, ManifestRecord.image_index < 0))
    images = list(ImageRecord.query(job_id, ImageRecord.image_index >= 0))
    assert len(manifest) == 1  # one slice holds the four images
    assert [(int(i.image_index), i.state) for i in images] == [(0, SUCCEEDED), (3, FAILED)]
    records = [job_record, *manifest, *images]
    for expires_at in (record.expires_at for record in records):
        assert expires_at is not None
        assert abs(expires_at - expected) < timedelta(minutes=1)
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    for table in ("Jobs", "Images"):
        ttl = dynamodb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
        assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}


def test_retention_defaults_to_90_days():
    assert get_settings().retention_days == 90
