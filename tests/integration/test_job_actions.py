"""Cancel and retry, and the one event each terminal transition emits: what an integrator
relies on. Cancel: `cancelled` at once, no unprocessed image is downloaded, results already
filed stay, and succeeded + failed + cancelled == total at every moment. Retry: a failed
job's failed images run again and it can end `completed`. Each terminal transition is
announced once (one event id, on EventBridge and to the callback_url's queue), whichever
invocation made it; the reconciler emits an event whose emitter died."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from retail_pulse.data import events as event_bus
from retail_pulse.data.models import CANCELLED, ImageRecord, JobRecord
from retail_pulse.jobs.reconcile import reconcile
from tests.integration.conftest import job, visit
from tests.support.pipeline import Pipeline, age_job, assert_accounted

A, B = "keyidaaaa1", "keyidbbbb2"
BHARAT = "S00339218"
NEW_STORE = "S99999999"


def submit(call_api: Any, body: dict[str, Any], tenant: str | None = None) -> str:
    result = call_api("POST", "/api/submit/", body=body, tenant=tenant)
    assert result.status_code == 201, result.body
    return str(result.body["job_id"])


def act(call_api: Any, action: str, job_id: str, tenant: str | None = None) -> Any:
    return call_api("POST", f"/api/{action}", query={"jobid": job_id}, tenant=tenant)


def status(call_api: Any, job_id: str, tenant: str | None = None) -> dict[str, Any]:
    result = call_api("GET", "/api/status", query={"jobid": job_id}, tenant=tenant)
    assert result.status_code == 200, result.body
    return dict(result.body)


def webhook_deliveries(aws: Any) -> list[dict[str, Any]]:
    """Every webhook delivery enqueued so far (received, then left for the next look)."""
    found = []
    while batch := aws.sqs.receive_message(
        QueueUrl=aws.webhook_url, MaxNumberOfMessages=10, VisibilityTimeout=0
    ).get("Messages"):
        for message in batch:
            found.append(json.loads(message["Body"]))
            aws.sqs.delete_message(QueueUrl=aws.webhook_url, ReceiptHandle=message["ReceiptHandle"])
    return found


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What went to EventBridge (moto keeps no record to read back)."""
    sent: list[dict[str, Any]] = []
    real = event_bus.publish_job_finished

    def record(event: dict[str, Any]) -> None:
        real(event)
        sent.append(event)

    monkeypatch.setattr("retail_pulse.jobs.finish.publish_job_finished", record)
    return sent


def images_of(image_server: Any, n: int, prefix: str = "img") -> list[str]:
    return [image_server.url(f"/{prefix}/{100 + i}x50.jpg") for i in range(n)]


def test_cancel_files_unprocessed_images_cancelled_without_a_download(
    aws, stores, call_api, image_server, published
):
    urls = images_of(image_server, 12)
    job_id = submit(
        call_api, job(visit(BHARAT, urls)) | {"callback_url": image_server.url("/hook")}
    )
    pipeline = Pipeline(aws)
    queued = pipeline.receive()
    # Four images are processed before the cancel: their results stay.
    pipeline.drain(queued[:4])
    before = sum(image_server.requests.values())

    result = act(call_api, "cancel", job_id)

    assert result.status_code == 200, result.body
    assert result.body == {
        "status": "cancelled",
        "job_id": job_id,
        "progress": {"total": 12, "succeeded": 4, "failed": 0, "cancelled": 8},
    }
    pipeline.drain(queued[4:])
    assert sum(image_server.requests.values()) == before  # nothing more was downloaded
    records = ImageRecord.query(
        job_id, range_key_condition=ImageRecord.image_index >= 0, consistent_read=True
    )
    states = [r.state for r in records]
    assert len(states) == 12 and states.count(CANCELLED) == 8
    record = assert_accounted(job_id)  # counters equal records; out of OngoingJobs
    assert record.cancelled == 8
    assert status(call_api, job_id) == result.body
    # One event for the one terminal transition, on both channels, with the cancel's body.
    assert [event["job"] for event in published] == [result.body]
    (delivery,) = webhook_deliveries(aws)
    assert delivery["event_id"] == published[0]["event_id"]
    assert json.loads(delivery["payload"]) == published[0]


def test_a_terminal_or_foreign_job_cannot_be_cancelled(aws, stores, call_api, image_server):
    job_id = submit(call_api, job(visit(BHARAT, images_of(image_server, 1))), tenant=A)
    Pipeline(aws).drain()
    assert status(call_api, job_id, A)["status"] == "completed"

    refused = act(call_api, "cancel", job_id, A)
    assert refused.status_code == 409
    assert refused.body == {
        "error": "the job has already finished (it is completed); "
        "only an ongoing job can be cancelled"
    }
    # Another client's job answers exactly as one that does not exist.
    assert act(call_api, "cancel", job_id, B).body == {}
    assert act(call_api, "cancel", job_id, B).status_code == 400
    assert act(call_api, "cancel", "no-such-job", A).body == {}


def test_an_image_in_flight_at_the_cancel_is_counted_once(aws, stores, call_api, image_server):
    job_id = submit(call_api, job(visit(BHARAT, images_of(image_server, 3))))
    pipeline = Pipeline(aws)
    queued = pipeline.receive()
    act(call_api, "cancel", job_id)
    # The reconciler files the unprocessed images `cancelled` first; a delivery that was
    # already in flight then finds its image filed, and nothing is counted twice.
    age_job(job_id, created_ago=timedelta(hours=1))
    report = reconcile()
    assert report.cancelled_images == 3
    pipeline.drain(queued)
    record = assert_accounted(job_id)
    assert (record.succeeded, record.cancelled) == (0, 3)
    assert status(call_api, job_id)["progress"] == {
        "total": 3,
        "succeeded": 0,
        "failed": 0,
        "cancelled": 3,
    }


def test_retry_reruns_failed_images_once_their_host_recovers(
    aws, stores, call_api, image_server, published
):
    # Fails twice per attempt budget: MAX_ATTEMPTS is 4, the host answers 503 six times.
    flaky = image_server.url("/flaky/retry-recovers/6/64x48.jpg")
    good = image_server.url("/img/80x60.jpg")
    job_id = submit(call_api, job(visit(BHARAT, [good, flaky])))
    pipeline = Pipeline(aws)
    pipeline.drain()
    failed = status(call_api, job_id)
    assert failed["status"] == "failed"
    assert failed["progress"] == {"total": 2, "succeeded": 1, "failed": 1}

    result = act(call_api, "retry", job_id)

    assert result.status_code == 200, result.body
    assert result.body["status"] == "ongoing"
    assert result.body["progress"] == {"total": 2, "succeeded": 1, "failed": 0}
    assert JobRecord.get(job_id).finished_at is None
    pipeline.drain()
    done = status(call_api, job_id)
    assert done == {
        "status": "completed",
        "job_id": job_id,
        "progress": {"total": 2, "succeeded": 2, "failed": 0},
    }
    assert_accounted(job_id)
    # Two terminal transitions, two events with their own ids and bodies.
    assert [event["job"]["status"] for event in published] == ["failed", "completed"]
    assert published[0]["event_id"] != published[1]["event_id"]
    assert published[1]["job"] == done


def test_retry_rechecks_unknown_stores_and_refuses_what_cannot_run(aws, stores, call_api):
    from retail_pulse.data.models import StoreRecord

    job_id = submit(call_api, job(visit(NEW_STORE, ["https://images.example/1.jpg"])))
    assert status(call_api, job_id)["status"] == "failed"

    still_unknown = act(call_api, "retry", job_id)
    assert still_unknown.status_code == 409
    assert "still not in the store master" in still_unknown.body["error"]

    StoreRecord(store_id=NEW_STORE, area_code="A1", store_name="New").save()
    rerun = act(call_api, "retry", job_id)
    assert rerun.status_code == 200, rerun.body
    assert rerun.body["progress"] == {"total": 1, "succeeded": 0, "failed": 0}
    (message,) = [json.loads(m["Body"]) for m in aws.queued_messages()]
    assert (message["job_id"], message["area"]) == (job_id, "A1")
    # Now ongoing: neither retried again nor refused as unknown.
    again = act(call_api, "retry", job_id)
    assert again.status_code == 409
    assert again.body == {"error": "the job is ongoing; only a failed job can be retried"}
    assert act(call_api, "retry", job_id, tenant=B).body == {}


def test_an_event_whose_emitter_died_is_emitted_by_the_reconciler(
    aws, stores, call_api, image_server, published, monkeypatch
):
    hook = image_server.url("/hook")
    job_id = submit(
        call_api, job(visit(BHARAT, images_of(image_server, 2))) | {"callback_url": hook}
    )

    def down(event: dict[str, Any]) -> None:
        raise event_bus.PublishError("ServiceUnavailable: EventBridge is down")

    monkeypatch.setattr("retail_pulse.jobs.finish.publish_job_finished", down)
    Pipeline(aws).drain()
    record = JobRecord.get(job_id, consistent_read=True)
    assert record.event_pending and record.ongoing_shard is not None  # not lost: still owed
    assert webhook_deliveries(aws) == []
    # A duplicate delivery does not emit it again: only the transition's maker does.
    monkeypatch.undo()
    monkeypatch.setattr(
        "retail_pulse.jobs.finish.publish_job_finished", lambda event: published.append(event)
    )
    age_job(job_id, created_ago=timedelta(hours=1))
    JobRecord(job_id=job_id).update(
        actions=[JobRecord.finished_at.set(record.finished_at - timedelta(minutes=5))]
    )

    assert reconcile().events_emitted == 1

    assert [event["event_id"] for event in published] == [record.event_id]
    (delivery,) = webhook_deliveries(aws)
    assert delivery["event_id"] == record.event_id
    assert_accounted(job_id)
    assert reconcile().events_emitted == 0  # emitted once


def test_the_job_list_shows_a_cancelled_job_under_its_status(aws, stores, call_api, image_server):
    job_id = submit(call_api, job(visit(BHARAT, images_of(image_server, 2))), tenant=A)
    act(call_api, "cancel", job_id, A)

    listed = call_api("GET", "/api/jobs", query={"status": "cancelled"}, tenant=A)
    assert listed.status_code == 200, listed.body
    (summary,) = listed.body["jobs"]
    assert (summary["job_id"], summary["status"]) == (job_id, "cancelled")
    assert summary["finished_at"] is not None
    assert summary["progress"] == {"total": 2, "succeeded": 0, "failed": 0, "cancelled": 2}
    assert call_api("GET", "/api/jobs", query={"status": "ongoing"}, tenant=A).body["jobs"] == []
    assert call_api("GET", "/api/jobs", query={"status": "cancelled"}, tenant=B).body["jobs"] == []


@pytest.mark.parametrize("ending", ["ongoing", "completed", "failed", "cancelled"])
def test_the_event_carries_exactly_the_status_body(aws, stores, call_api, image_server, ending):
    """jobs/status.status_document (what an event's `job` is) equals what GET /api/status
    answers (api/models.StatusResponse), for every status."""
    from retail_pulse.data.jobs import get_job
    from retail_pulse.jobs.status import status_document, status_of

    urls = [image_server.url("/img/40x30.jpg"), image_server.url("/status/404")]
    job_id = submit(call_api, job(visit(BHARAT, urls[:1] if ending == "completed" else urls)))
    if ending == "cancelled":
        act(call_api, "cancel", job_id)
    elif ending != "ongoing":
        Pipeline(aws).drain()
    found = get_job(job_id)
    assert found is not None and found.state == ending

    assert status_document(status_of(found)) == status(call_api, job_id)


def test_a_retried_old_job_gets_a_whole_deadline_again(aws, stores, call_api):
    """The hard deadline (JOB_HARD_DEADLINE_S, 2 h) counts from the retry, not the submit:
    a job failed and retried three hours after its submit is not failed again at once."""
    from retail_pulse.data.models import StoreRecord

    job_id = submit(call_api, job(visit(NEW_STORE, ["https://images.example/1.jpg"])))
    StoreRecord(store_id=NEW_STORE, area_code="A1", store_name="New").save()
    age_job(job_id, created_ago=timedelta(hours=3), progressed_ago=timedelta(hours=3))
    assert act(call_api, "retry", job_id).status_code == 200
    aws.queued_messages()  # its message is lost: only the reconciler can bring it back

    report = reconcile()

    assert report.expired_jobs == 0
    assert status(call_api, job_id)["status"] == "ongoing"
    # Still watched: once the retry is older than the soft deadline, its image is requeued.
    JobRecord(job_id=job_id).update(
        actions=[
            JobRecord.retried_at.set(JobRecord.get(job_id).retried_at - timedelta(minutes=20)),
            JobRecord.progressed_at.set(
                JobRecord.get(job_id).progressed_at - timedelta(minutes=20)
            ),
        ]
    )
    assert reconcile().requeued_images == 1


def test_an_event_that_cannot_be_emitted_does_not_stop_the_reconciler(
    aws, stores, call_api, image_server, monkeypatch
):
    owed = submit(call_api, job(visit(BHARAT, images_of(image_server, 1))))
    stuck = submit(call_api, job(visit(BHARAT, [image_server.url("/img/50x50.jpg")])))

    def down(event: dict[str, Any]) -> None:
        raise event_bus.PublishError("ServiceUnavailable: EventBridge is down")

    monkeypatch.setattr("retail_pulse.jobs.finish.publish_job_finished", down)
    pipeline = Pipeline(aws)
    queued = pipeline.receive()
    pipeline.drain([d for d in queued if json.loads(d.body)["job_id"] == owed])
    for job_id in (owed, stuck):  # `stuck` lost its message: only a requeue brings it back
        age_job(job_id, created_ago=timedelta(hours=1), progressed_ago=timedelta(hours=1))
    record = JobRecord.get(owed, consistent_read=True)
    JobRecord(job_id=owed).update(
        actions=[JobRecord.finished_at.set(record.finished_at - timedelta(minutes=5))]
    )

    report = reconcile()

    assert (report.events_emitted, report.requeued_images) == (0, 1)
    assert JobRecord.get(owed, consistent_read=True).event_pending  # still owed
