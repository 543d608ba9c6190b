"""The reconciler: a job that stopped moving is requeued, a job past its deadline ends failed,
and a job nobody stamped finished is finished. On moto and on DynamoDB Local."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from retail_pulse.data.jobs import create_job
from retail_pulse.data.models import (
    FAILED,
    ImageRecord,
    JobRecord,
    OngoingJobsIndex,
    ongoing_shard,
)
from retail_pulse.domain import ImageSuccess, Job
from retail_pulse.jobs.reconcile import reconcile
from tests.integration.conftest import job, visit
from tests.support.dynamodb_local import backend, backend_stores  # noqa: F401
from tests.support.filing import file_result
from tests.support.handlers import FakeContext, load_handler
from tests.support.pipeline import (
    Pipeline,
    age_job,
    assert_accounted,
)

# Every test runs on moto and on DynamoDB Local, with the known stores and no GPU pause.
pytestmark = pytest.mark.usefixtures("backend_stores", "no_gpu_pause")

SOFT = timedelta(seconds=900 + 60)
HARD = timedelta(hours=2, minutes=1)


def submit(call_api, image_server, count=3):
    urls = [image_server.url(f"/img/{100 + i}x50.jpg") for i in range(count)]
    result = call_api("POST", "/api/submit/", body=job(visit("S00339218", urls)))
    assert result.status_code == 201
    return result.body["job_id"]


def lose_messages(aws):
    """The queue loses the job's messages (or a poller dropped them): delete them unseen."""
    return aws.queued_messages()


def test_a_job_whose_messages_were_lost_is_requeued_and_completes(aws, call_api, image_server):
    job_id = submit(call_api, image_server, count=3)
    assert len(lose_messages(aws)) == 3
    age_job(job_id, created_ago=SOFT)

    report = reconcile()

    assert (report.stuck_jobs, report.requeued_images) == (1, 3)
    Pipeline(aws).drain()
    job_record = assert_accounted(job_id)
    assert (job_record.succeeded, job_record.failed) == (3, 0)
    status = call_api("GET", "/api/status", query={"jobid": job_id}).body
    assert status["status"] == "completed"


def test_young_and_progressing_jobs_are_left_alone(aws, call_api, image_server):
    young = submit(call_api, image_server)
    moving = submit(call_api, image_server)
    age_job(moving, created_ago=timedelta(minutes=40), progressed_ago=timedelta(minutes=1))
    queued = len(lose_messages(aws))

    report = reconcile()

    assert (report.stuck_jobs, report.requeued_images) == (0, 0)
    assert queued == 6 and aws.receive() == []
    assert_accounted(young, terminal=False)
    assert_accounted(moving, terminal=False)


def test_a_requeued_job_is_not_requeued_again_within_the_soft_deadline(aws, call_api, image_server):
    job_id = submit(call_api, image_server, count=2)
    lose_messages(aws)
    age_job(job_id, created_ago=SOFT)

    assert reconcile().requeued_images == 2
    assert reconcile().requeued_images == 0
    assert len(aws.receive()) == 2


def test_past_the_hard_deadline_pending_images_fail_and_the_job_ends(aws, call_api, image_server):
    job_id = submit(call_api, image_server, count=3)
    deliveries = Pipeline(aws).receive()
    Pipeline(aws).drain(deliveries[:1])  # one image made it; two messages were lost
    age_job(job_id, created_ago=HARD)

    report = reconcile()

    assert (report.expired_jobs, report.expired_images) == (1, 2)
    job_record = assert_accounted(job_id)
    assert (job_record.succeeded, job_record.failed) == (1, 2)
    status = call_api("GET", "/api/status", query={"jobid": job_id}).body
    assert status["status"] == "failed"
    assert status["error"] == [
        {"store_id": "S00339218", "error": "processing did not finish within 120 minutes"}
    ]
    # Finished jobs leave the sparse index: the next run does not even read them.
    assert list(JobRecord.ongoing_jobs.query(ongoing_shard(job_id))) == []
    assert reconcile().stuck_jobs == 0


def test_a_job_done_but_never_stamped_finished_is_finished(aws, call_api, image_server):
    job_id = submit(call_api, image_server, count=2)
    lose_messages(aws)
    # Both results were filed, then the invocation died before stamping the job finished.
    for index in range(2):
        outcome = ImageSuccess(perimeter=300, width=100, height=50, store_id="S00339218", area=None)
        assert file_result(job_id, index, outcome, 1)
    age_job(job_id, created_ago=SOFT)

    report = reconcile()

    assert (report.finished_jobs, report.stuck_jobs) == (1, 0)
    assert_accounted(job_id)


def test_a_submit_that_died_before_writing_its_images_still_ends(aws):
    """Submit counted three images in the job, then died before writing any of them."""
    job_id = "3f1c2a9e-8d4b-4c61-9a57-0f2e6b1d7c55"
    record = Job(
        job_id=job_id,
        total=3,
        succeeded=0,
        failed=0,
        visit_count=1,
        created_at=datetime.now(UTC) - HARD,
    )
    create_job(record, [])  # the job was written; its images never were

    report = reconcile()

    assert report.expired_images == 3
    job_record = assert_accounted(job_id)
    assert job_record.failed == 3
    images = list(ImageRecord.query(job_id))
    assert {i.state for i in images} == {FAILED}
    assert all("never recorded" in i.error for i in images)


def test_the_stuck_jobs_query_reads_only_unfinished_jobs_older_than_the_cutoff(
    aws, call_api, image_server
):
    finished = submit(call_api, image_server, count=1)
    Pipeline(aws).drain()
    assert_accounted(finished)
    old = submit(call_api, image_server, count=1)
    age_job(old, created_ago=SOFT)
    submit(call_api, image_server, count=1)  # young

    cutoff = datetime.now(UTC) - timedelta(minutes=15)
    found = [
        j.job_id
        for shard in ("0", "1", "2", "3")
        for j in JobRecord.ongoing_jobs.query(shard, OngoingJobsIndex.created_at < cutoff)
    ]
    assert found == [old]


def test_the_scheduled_function_runs_a_pass_and_reports_it(aws, call_api, image_server):
    job_id = submit(call_api, image_server, count=2)
    lose_messages(aws)
    age_job(job_id, created_ago=SOFT)
    event = {"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}}

    report = load_handler("reconciler").lambda_handler(event, FakeContext())

    assert report["stuck_jobs"] == 1 and report["requeued_images"] == 2
    assert len(aws.receive()) == 2
