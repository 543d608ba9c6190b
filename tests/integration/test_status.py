"""GET /api/status: the SPEC's three states, its exact 400s, and progress counts."""

from __future__ import annotations

from retail_pulse.domain import ImageFailure, ImageSuccess
from tests.integration.conftest import job, visit
from tests.support.filing import file_result

A = "https://images.example.com/a.jpg"


def submit(call_api, *visits):
    return call_api("POST", "/api/submit/", body=job(*visits)).body["job_id"]


def success(store_id="S00339218"):
    return ImageSuccess(perimeter=1908, width=550, height=404, store_id=store_id, area="710006")


def test_unknown_job_is_400_with_exactly_an_empty_object(aws, call_api):
    result = call_api("GET", "/api/status", query={"jobid": "no-such-job"})
    assert result.status_code == 400
    assert result.raw["body"] == "{}"


def test_empty_and_oversized_job_ids_are_unknown_jobs(aws, call_api):
    for jobid in ("", "x" * 5000):
        result = call_api("GET", "/api/status", query={"jobid": jobid})
        assert (result.status_code, result.body) == (400, {})


def test_missing_jobid_is_400_that_names_the_parameter(aws, call_api):
    result = call_api("GET", "/api/status")
    assert result.status_code == 400
    assert "jobid" in result.body["error"]


def test_ongoing_then_completed(aws, stores, call_api):
    job_id = submit(call_api, visit("S00339218", [A, A]))
    result = call_api("GET", "/api/status", query={"jobid": job_id})
    assert result.status_code == 200
    assert result.body == {
        "status": "ongoing",
        "job_id": job_id,
        "progress": {"total": 2, "succeeded": 0, "failed": 0},
    }
    file_result(job_id, 0, success(), attempts=1)
    assert call_api("GET", "/api/status", query={"jobid": job_id}).body["status"] == "ongoing"
    file_result(job_id, 1, success(), attempts=1)
    assert call_api("GET", "/api/status", query={"jobid": job_id}).body == {
        "status": "completed",
        "job_id": job_id,
        "progress": {"total": 2, "succeeded": 2, "failed": 0},
    }


def test_failed_job_lists_one_error_per_failed_store_only(aws, stores, call_api):
    job_id = submit(
        call_api,
        visit("S00339218", [A, A]),
        visit("S01408764", [A]),
        visit("S90000001", [A]),
    )
    file_result(job_id, 0, ImageFailure("image download failed: HTTP 404 for x"), attempts=1)
    file_result(job_id, 1, ImageFailure("image unreadable: not an image"), attempts=1)
    file_result(job_id, 2, success("S01408764"), attempts=1)
    # Still one image pending: failures do not end a job early.
    assert call_api("GET", "/api/status", query={"jobid": job_id}).body["status"] == "ongoing"
    file_result(job_id, 3, ImageFailure("image download failed: HTTP 500 for y"), attempts=4)

    result = call_api("GET", "/api/status", query={"jobid": job_id})
    assert result.status_code == 200
    assert result.body["status"] == "failed"
    assert result.body["progress"] == {"total": 4, "succeeded": 1, "failed": 3}
    assert sorted(result.body["error"], key=lambda e: e["store_id"]) == [
        {"store_id": "S00339218", "error": "image download failed: HTTP 404 for x"},
        {"store_id": "S90000001", "error": "image download failed: HTTP 500 for y"},
    ]


def test_a_second_outcome_for_the_same_image_changes_nothing(aws, stores, call_api):
    job_id = submit(call_api, visit("S00339218", [A]))
    assert file_result(job_id, 0, success(), attempts=1) is True
    assert file_result(job_id, 0, ImageFailure("late failure"), attempts=2) is False
    assert file_result(job_id, 0, success(), attempts=2) is False
    assert call_api("GET", "/api/status", query={"jobid": job_id}).body["progress"] == {
        "total": 1,
        "succeeded": 1,
        "failed": 0,
    }
