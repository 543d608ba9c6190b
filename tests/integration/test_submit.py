"""POST /api/submit/: the SPEC's contract, every 400, and what a job leaves behind."""

from __future__ import annotations

import json
import uuid

import pytest

from retail_pulse.data.manifest import submitted_images
from retail_pulse.data.models import FAILED, ImageRecord, JobRecord
from retail_pulse.settings import get_settings
from tests.integration.conftest import job, visit

A = "https://images.example.com/a.jpg"
B = "https://images.example.com/b.jpg"


def filed_records(job_id):
    """The job's image records, in index order: not its manifest (at negative indexes)."""
    records = ImageRecord.query(
        job_id, range_key_condition=ImageRecord.image_index >= 0, consistent_read=True
    )
    return sorted(records, key=lambda i: i.image_index)


def test_accepts_the_spec_example_and_enqueues_one_message_per_image(aws, stores, call_api):
    payload = job(
        visit("S00339218", [A, B], "2026-11-28T10:15:00Z"),
        visit("S01408764", [B], "2026-11-28T11:40:00+05:30"),
    )
    result = call_api("POST", "/api/submit/", body=payload)

    assert result.status_code == 201
    assert set(result.body) == {"job_id"}
    job_id = result.body["job_id"]
    assert uuid.UUID(job_id).version == 4
    record = JobRecord.get(job_id)
    assert (record.total, record.succeeded, record.failed) == (3, 0, 0)
    # The job's manifest holds every image as submitted (+05:30 is stored in UTC) ...
    images = submitted_images(job_id)
    assert [(i.image_index, i.store_id, i.area, i.url, i.visit_time) for i in images] == [
        (0, "S00339218", "710006", A, "2026-11-28T10:15:00Z"),
        (1, "S00339218", "710006", B, "2026-11-28T10:15:00Z"),
        (2, "S01408764", "710006", B, "2026-11-28T06:10:00Z"),
    ]
    # ... and no image has a record until its result is filed: all three are pending.
    assert filed_records(job_id) == []
    bodies = sorted(
        (json.loads(m["Body"]) for m in aws.queued_messages()), key=lambda b: b["image_index"]
    )
    # Each is the image's first attempt: its attempts are counted by the service, not SQS.
    common = {
        "job_id": job_id,
        "area": "710006",
        "tenant": "default",
        "express": False,
        "attempt": 1,
    }
    first, second = "2026-11-28T10:15:00Z", "2026-11-28T06:10:00Z"
    # Each message carries its image whole, visit time too: the process function writes
    # the image's record from it.
    assert bodies == [
        {**common, "image_index": 0, "url": A, "store_id": "S00339218", "visit_time": first},
        {**common, "image_index": 1, "url": B, "store_id": "S00339218", "visit_time": first},
        {**common, "image_index": 2, "url": B, "store_id": "S01408764", "visit_time": second},
    ]


def test_route_without_trailing_slash_is_the_same_route(aws, stores, call_api):
    result = call_api("POST", "/api/submit", body=job(visit("S00339218", [A])))
    assert result.status_code == 201
    assert result.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data"]
)
def test_a_json_body_is_read_as_json_whatever_its_content_type(aws, stores, call_api, content_type):
    """`curl -d` labels JSON as a form; the API speaks only JSON, so it reads it as such."""
    body = json.dumps(job(visit("S00339218", [A])))
    result = call_api("POST", "/api/submit/", body=body, headers={"Content-Type": content_type})
    assert result.status_code == 201, result.body


def test_visit_time_without_offset_is_utc(aws, stores, call_api):
    result = call_api(
        "POST", "/api/submit/", body=job(visit("S00339218", [A], "2026-11-28T10:15:00"))
    )
    (image,) = submitted_images(result.body["job_id"])
    assert image.visit_time == "2026-11-28T10:15:00Z"


def test_unknown_store_is_accepted_recorded_failed_and_never_enqueued(aws, stores, call_api):
    payload = job(visit("S00339218", [A]), visit("S_NOT_A_STORE", [A, B]))
    result = call_api("POST", "/api/submit/", body=payload)

    assert result.status_code == 201
    record = JobRecord.get(result.body["job_id"])
    assert (record.total, record.failed) == (3, 2)
    # The unknown store's images have their failed record at once; the other none yet.
    records = filed_records(record.job_id)
    assert [(i.image_index, i.store_id, i.url, i.state) for i in records] == [
        (1, "S_NOT_A_STORE", A, FAILED),
        (2, "S_NOT_A_STORE", B, FAILED),
    ]
    assert {i.error for i in records} == {"store_id not found in store master"}
    assert [i.store_id for i in submitted_images(record.job_id)] == [
        "S00339218",
        "S_NOT_A_STORE",
        "S_NOT_A_STORE",
    ]
    assert [json.loads(m["Body"])["store_id"] for m in aws.queued_messages()] == ["S00339218"]


def test_job_of_only_unknown_stores_is_failed_at_once(aws, stores, call_api):
    result = call_api("POST", "/api/submit/", body=job(visit("S_NOPE", [A])))
    status = call_api("GET", "/api/status", query={"jobid": result.body["job_id"]})
    assert status.body == {
        "status": "failed",
        "job_id": result.body["job_id"],
        "error": [{"store_id": "S_NOPE", "error": "store_id not found in store master"}],
        "error_count": 1,
        "error_truncated": False,
        "progress": {"total": 1, "succeeded": 0, "failed": 1},
    }
    assert JobRecord.get(result.body["job_id"]).finished_at is not None


GOOD = visit("S00339218", [A])


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("this is not json", ["not valid JSON"]),
        ("", ["body is missing"]),
        (None, ["body is missing"]),
        ("[1, 2]", ["JSON object"]),
        ('"a string"', ["JSON object"]),
        ({"visits": [GOOD]}, ["count", "required"]),
        ({"count": 1}, ["visits", "required"]),
        ({"count": "1", "visits": [GOOD]}, ["count", "integer"]),
        ({"count": True, "visits": [GOOD]}, ["count", "integer"]),
        ({"count": 1.5, "visits": [GOOD]}, ["count", "integer"]),
        ({"count": 2, "visits": [GOOD]}, ["count is 2", "visits has 1"]),
        ({"count": 0, "visits": []}, ["count"]),
        ({"count": 1, "visits": []}, ["visits", "empty"]),
        ({"count": 1, "visits": GOOD}, ["visits", "list"]),
        ({"count": 1, "visits": ["S00339218"]}, ["visits[0]", "object"]),
        (
            {"count": 1, "visits": [{"image_url": [A], "visit_time": "2026-11-28T10:15:00Z"}]},
            ["visits[0].store_id", "required"],
        ),
        (
            {
                "count": 1,
                "visits": [{"store_id": "S00339218", "visit_time": "2026-11-28T10:15:00Z"}],
            },
            ["visits[0].image_url", "required"],
        ),
        (
            {"count": 1, "visits": [{"store_id": "S00339218", "image_url": [A]}]},
            ["visits[0].visit_time", "required"],
        ),
        ({"count": 1, "visits": [visit(339218, [A])]}, ["visits[0].store_id", "string"]),
        ({"count": 1, "visits": [visit("  ", [A])]}, ["store_id", "blank"]),
        ({"count": 1, "visits": [visit("S00339218", A)]}, ["visits[0].image_url", "list"]),
        ({"count": 1, "visits": [visit("S00339218", [])]}, ["visits[0].image_url", "empty"]),
        (
            {"count": 1, "visits": [visit("S00339218", [A, 42])]},
            ["visits[0].image_url[1]", "string"],
        ),
        ({"count": 1, "visits": [visit("S00339218", ["ftp://x/a.jpg"])]}, ["image_url[0]", "http"]),
        ({"count": 1, "visits": [visit("S00339218", ["not a url"])]}, ["image_url[0]", "http"]),
        (
            {"count": 1, "visits": [visit("S00339218", [A], "yesterday")]},
            ["visit_time", "RFC 3339"],
        ),
        (
            {"count": 1, "visits": [visit("S00339218", [A], "2026-11-28")]},
            ["visit_time", "RFC 3339"],
        ),
        ({"count": 1, "visits": [visit("S00339218", [A], "2026-13-45T10:15:00Z")]}, ["visit_time"]),
        ({"count": 1, "visits": [visit("S00339218", [A], 1732788900)]}, ["visit_time", "string"]),
        # Once 500s (tests/unit/test_api_resolver.py has the rest of each kind).
        (
            {"count": 1, "visits": [visit("S00339218", [A], "9999-12-31T23:59:59-01:00")]},
            ["visits[0].visit_time: '9999-12-31T23:59:59-01:00' is out of range"],
        ),
        (
            {"count": 1, "visits": [visit("S00339218", [A, "http://[::1/x.jpg"])]},
            ["visits[0].image_url[1] 'http://[::1/x.jpg' is not a valid URL"],
        ),
        (
            {"count": 1, "visits": [visit("S00339218", ["http://images.example.com:0/a.jpg"])]},
            ["visits[0].image_url[0]", "port must be a number from 1 to 65535"],
        ),
        ('{"count": 1, "visits": ' + "[" * 3000 + "]" * 3000 + "}", ["nested too deeply"]),
        ('{"count": ' + "1" * 5000 + ', "visits": []}', ["a number with more than 4300 digits"]),
    ],
)
def test_bad_requests_get_400_with_a_readable_error(aws, stores, call_api, body, words):
    result = call_api("POST", "/api/submit/", body=body)
    assert result.status_code == 400, result.body
    assert set(result.body) == {"error"}
    for word in words:
        assert word in result.body["error"], result.body["error"]
    assert aws.queued_messages() == []
    assert list(JobRecord.scan()) == []


@pytest.fixture
def small_limits(monkeypatch):
    monkeypatch.setenv("MAX_IMAGES_PER_JOB", "3")
    monkeypatch.setenv("MAX_URLS_PER_VISIT", "2")
    monkeypatch.setenv("MAX_URL_LENGTH", "40")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("visits", "words"),
    [
        (
            [visit("S00339218", [A, A]), visit("S00339218", [A, A])],
            ["4 images", "MAX_IMAGES_PER_JOB"],
        ),
        ([visit("S00339218", [A, A, A])], ["at most 2 image URLs", "MAX_URLS_PER_VISIT"]),
        ([visit("S00339218", ["https://images.example.com/" + "x" * 30])], ["MAX_URL_LENGTH"]),
    ],
)
def test_limits_are_400s_that_name_the_limit(aws, stores, call_api, small_limits, visits, words):
    result = call_api("POST", "/api/submit/", body={"count": len(visits), "visits": visits})
    assert result.status_code == 400
    for word in words:
        assert word in result.body["error"], result.body["error"]


@pytest.mark.parametrize(
    ("callback_url", "words"),
    [
        (
            "ftp://hooks.example.com/x",
            "callback_url 'ftp://hooks.example.com/x' is not an http or https URL",
        ),
        ("http://[::1/hook", "callback_url 'http://[::1/hook' is not a valid URL"),
        ("https:///hook", "callback_url 'https:///hook' is not an http or https URL"),
        (42, "callback_url must be a string"),
        ("https://hooks.example.com/" + "x" * 3000, "callback_url"),
    ],
)
def test_a_bad_callback_url_is_a_400_that_names_it(aws, stores, call_api, callback_url, words):
    body = job(visit("S00339218", [A])) | {"callback_url": callback_url}

    result = call_api("POST", "/api/submit/", body=body)

    assert result.status_code == 400, result.body
    assert words in result.body["error"]
    assert aws.queued_messages() == []  # nothing was recorded or enqueued


def test_a_callback_url_is_kept_with_the_job(aws, stores, call_api):
    hook = "https://hooks.example.com/retail-pulse?client=7"
    result = call_api(
        "POST", "/api/submit/", body=job(visit("S00339218", [A])) | {"callback_url": hook}
    )

    assert result.status_code == 201, result.body
    assert JobRecord.get(result.body["job_id"]).callback_url == hook


def test_a_manifest_slice_of_the_longest_urls_stays_inside_an_item(aws, stores, call_api):
    """A full manifest slice of incompressible URLs at MAX_URL_LENGTH must stay under
    DynamoDB's 400 KB item limit, and read back exactly."""
    import random
    import string

    from retail_pulse.data.manifest import MANIFEST_SLICE
    from retail_pulse.data.models import ManifestRecord

    limit = get_settings().max_url_length
    rng = random.Random(7)
    prefix = "http://images.example.com/"
    urls = [
        prefix + "".join(rng.choices(string.ascii_letters + string.digits, k=limit - len(prefix)))
        for _ in range(MANIFEST_SLICE)
    ]
    result = call_api("POST", "/api/submit/", body=job(visit("S00339218", urls)))
    assert result.status_code == 201, result.body
    job_id = result.body["job_id"]

    (slice_record,) = ManifestRecord.query(job_id, ManifestRecord.image_index < 0)
    assert len(slice_record.images) < 400 * 1024
    assert [image.url for image in submitted_images(job_id)] == urls
