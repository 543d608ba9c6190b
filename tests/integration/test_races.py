"""The races of issue 23, each forced in the order that breaks it: threads meet at Events
(never sleeps), and the reconciler's clock and time budget are given, not waited for.

1. Jobs whose events can never be published (AWS refuses an entry of 256 KB or more) must
   not starve the reconciler's other work, nor be tried on every pass, nor block a retry.
2. A retry racing the slow emitter of the job's failure: the emitter must not remove the
   retried image's open filing.
3. A cancel racing the last image: once succeeded + failed + cancelled == total the job has
   finished, stamped or not, and a cancel is refused.
4. A submit that answered 5xx, sent again with its Idempotency-Key: one job, never two.
5. A filing closed by the reconciler (which thought its invocation dead) while that
   invocation still writes: the late close finds its filing gone, says so, and the job is
   recounted from its records.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from retail_pulse.data.filing import STALE_FILING_S, Filing, file_outcomes
from retail_pulse.data.jobs import create_job, get_job
from retail_pulse.data.manifest import submitted_images
from retail_pulse.data.models import FAILED, JobRecord, connection
from retail_pulse.data.queue import EnqueueError
from retail_pulse.domain import Image, ImageFailure, ImageSuccess, Job
from retail_pulse.jobs.finish import finish_job
from retail_pulse.jobs.reconcile import reconcile
from retail_pulse.jobs.submit import UNKNOWN_STORE
from retail_pulse.settings import get_settings
from tests.integration.conftest import job, visit
from tests.support.pipeline import age_job, all_job_ids, assert_accounted, open_filings
from tests.support.races import Budget, Bus, job_in_shard, reach

BHARAT = "S00339218"


@pytest.fixture
def bus(monkeypatch: pytest.MonkeyPatch) -> Bus:
    """EventBridge as the tests see it (moto keeps no record of what it was sent)."""
    fake = Bus()
    monkeypatch.setattr("retail_pulse.jobs.finish.publish_job_finished", fake.publish)
    return fake


def urls(count: int) -> list[str]:
    # Never fetched: these tests file each image's result themselves, as process would.
    return [f"http://127.0.0.1:9/{i}.jpg" for i in range(count)]


def submit(call_api: Any, count: int, key: str | None = None) -> Any:
    headers = {"Idempotency-Key": key} if key else None
    return call_api("POST", "/api/submit/", body=job(visit(BHARAT, urls(count))), headers=headers)


def success() -> ImageSuccess:
    return ImageSuccess(perimeter=60, width=20, height=10, store_id=BHARAT, area="710006")


def file(job_id: str, outcomes: dict[int, Any]) -> None:
    """File these images' results in one filing, as one process invocation does."""
    images = submitted_images(job_id)
    filed = file_outcomes(
        job_id, [Filing(images[i], outcome, 1) for i, outcome in outcomes.items()]
    )
    assert sorted(filed.filed) == list(range(len(outcomes)))


def make_job(job_id: str, total: int, unknown: int, created_ago: timedelta) -> None:
    """A job written as submit writes it: `unknown` of its images of stores the master does
    not have (failed at once), the rest pending in its manifest (their messages lost)."""
    now = datetime.now(UTC)
    images = [
        Image(job_id, i, BHARAT, "710006", f"http://127.0.0.1:9/{i}.jpg", "2026-11-28T10:15:00Z")
        for i in range(total)
    ]
    images = [
        Image(
            i.job_id,
            i.image_index,
            "S-NOT-IN-MASTER",
            None,
            i.url,
            i.visit_time,
            FAILED,
            UNKNOWN_STORE,
        )
        if i.image_index < unknown
        else i
        for i in images
    ]
    create_job(
        Job(
            job_id=job_id,
            total=total,
            succeeded=0,
            failed=unknown,
            visit_count=1,
            created_at=now - created_ago,
        ),
        images,
    )


def backdate_finish(job_id: str, ago: timedelta) -> None:
    """The job was stamped finished `ago` (its emitter's grace is over)."""
    JobRecord(job_id=job_id).update(actions=[JobRecord.finished_at.set(datetime.now(UTC) - ago)])


def unannounced(bus: Bus, job_id: str, ago: timedelta = timedelta(minutes=5)) -> None:
    """Finish a job whose every image failed, with its event refused: owed, `ago`."""
    bus.refusing.add(job_id)
    finish_job(job_id)
    record = JobRecord.get(job_id, consistent_read=True)
    assert record.event_pending and record.finished_at is not None
    backdate_finish(job_id, ago)


# -- 1. a job whose event cannot be published ---------------------------------------------


def test_unpublishable_events_do_not_starve_the_other_shards(aws, stores, bus, monkeypatch):
    """Six old jobs of shard 0 owe events EventBridge will never take; a job in each other
    shard lost its messages. A pass with time for four jobs reaches every shard, and repairs
    before it publishes."""
    owed = [job_in_shard("0") for _ in range(6)]
    for job_id in owed:
        make_job(job_id, total=1, unknown=1, created_ago=timedelta(hours=1))
        unannounced(bus, job_id)
    stuck = [job_in_shard(shard) for shard in ("1", "2", "3")]
    for job_id in stuck:
        make_job(job_id, total=2, unknown=0, created_ago=timedelta(minutes=30))
    from retail_pulse.jobs import reconcile as reconcile_module

    requeued: list[str] = []
    real_enqueue = reconcile_module.enqueue_images

    def enqueue(bodies: list[dict[str, Any]], express: bool = False) -> None:
        bus.order.append(("requeue", bodies[0]["job_id"]))
        requeued.append(bodies[0]["job_id"])
        real_enqueue(bodies, express)

    monkeypatch.setattr(reconcile_module, "enqueue_images", enqueue)
    bus.order.clear()

    tight = reconcile(time_left_s=Budget(calls=4))

    assert tight.out_of_time
    assert sorted(requeued) == sorted(stuck), "a shard was left out of the pass"
    assert tight.requeued_images == 6

    # With time for everything, the owed events are tried after every repair of the pass.
    for job_id in stuck:
        age_job(job_id, created_ago=timedelta(hours=1), progressed_ago=timedelta(minutes=20))
        JobRecord(job_id=job_id).update(actions=[JobRecord.requeued_at.remove()])
    bus.order.clear()
    roomy = reconcile(time_left_s=Budget(calls=1000))
    assert not roomy.out_of_time and roomy.requeued_images == 6
    kinds = [kind for kind, _ in bus.order]
    assert kinds[:3] == ["requeue"] * 3 and set(kinds[3:]) <= {"publish"}, bus.order


def test_an_unpublishable_event_is_retried_with_backoff_and_alarmed_once(aws, stores, bus, caplog):
    """Tried on the pass after its grace, then 5, 10, 20 ... minutes apart (not on every
    5-minute pass for its whole retention); after three failed tries the pass reports it
    (the UnannouncedJobs metric, which an alarm watches) and logs why, once."""
    job_id = job_in_shard("2")
    make_job(job_id, total=1, unknown=1, created_ago=timedelta(hours=1))
    unannounced(bus, job_id, ago=timedelta(minutes=2))
    bus.attempts.clear()
    start = datetime.now(UTC)

    tried_at, reports = [], []
    for minute in range(0, 80):
        before = bus.attempts[job_id]
        reports.append(reconcile(now=start + timedelta(minutes=minute)))
        if bus.attempts[job_id] > before:
            tried_at.append(minute)

    assert tried_at == [0, 5, 15, 35, 75]
    alarmed_at = [minute for minute, report in enumerate(reports) if report.unannounced_jobs]
    assert alarmed_at == list(range(15, 80)), "alarmed from the third failed try on"
    why = [r for r in caplog.records if r.getMessage() == "job event cannot be published"]
    assert len(why) == 1 and why[0].levelname == "ERROR"
    assert "256KB" in str(why[0].__dict__.get("reason")), why[0].__dict__
    record = JobRecord.get(job_id, consistent_read=True)
    assert record.event_pending and record.ongoing_shard is not None  # still owed, watched


def test_a_job_whose_failure_cannot_be_announced_can_be_retried(aws, stores, bus, call_api):
    """POST /api/retry answered 503 for as long as the failure's event was owed (for ever,
    for an event EventBridge refuses). The retry is accepted: its own transition's event
    replaces the one that could not go out."""
    job_id = submit(call_api, 2).body["job_id"]
    aws.queued_messages()
    bus.refusing.add(job_id)
    file(job_id, {0: success(), 1: ImageFailure("image failed: HTTP 503")})
    finish_job(job_id)
    assert JobRecord.get(job_id, consistent_read=True).event_pending

    retried = call_api("POST", "/api/retry", query={"jobid": job_id})

    assert retried.status_code == 200, retried.body
    assert retried.body["status"] == "ongoing"
    bus.refusing.clear()
    (message,) = aws.queued_messages()
    assert '"image_index": 1' in message["Body"]
    file(job_id, {1: success()})
    finish_job(job_id)
    assert [e["job"]["status"] for e in bus.events_of(job_id)] == ["completed"]
    later = datetime.now(UTC) + timedelta(hours=1)
    reconcile(now=later)
    assert [e["job"]["status"] for e in bus.events_of(job_id)] == ["completed"]
    record = assert_accounted(job_id)
    assert (record.succeeded, record.failed, record.event_pending) == (2, 0, None)


# -- 2. a retry racing the slow emitter ---------------------------------------------------


def test_a_retry_racing_the_slow_emitter_of_the_failure_loses_no_count(
    aws, stores, bus, call_api, monkeypatch
):
    """The invocation that failed the job publishes slowly. Meanwhile the client retries and
    the retried image is filed; the emitter then marks its event out while that image's
    filing is open. The filing must survive it, and its close count the image."""
    from retail_pulse.data import filing

    job_id = submit(call_api, 2).body["job_id"]
    aws.queued_messages()
    file(job_id, {0: success(), 1: ImageFailure("image failed: HTTP 503")})
    publishing, release_emitter = bus.hold_next()
    emitter = threading.Thread(target=finish_job, args=(job_id,))
    emitter.start()
    reach(publishing, "the emitter publishing the failure")

    retried = call_api("POST", "/api/retry", query={"jobid": job_id})
    assert retried.status_code == 200, retried.body
    assert len(aws.queued_messages()) == 1

    written, close = threading.Event(), threading.Event()
    real_close = filing._close_filing

    def close_later(*args: Any, **kwargs: Any) -> Any:
        written.set()
        assert close.wait(30)
        return real_close(*args, **kwargs)

    monkeypatch.setattr(filing, "_close_filing", close_later)
    retry_delivery = threading.Thread(target=lambda: file(job_id, {1: success()}))
    retry_delivery.start()
    reach(written, "the retried image written, its filing open")
    assert len(open_filings(job_id)) == 1

    release_emitter.set()  # the slow emitter marks the failure's event out now
    emitter.join(30)
    assert len(open_filings(job_id)) == 1, "the emitter removed a filing it did not open"
    close.set()
    retry_delivery.join(30)
    monkeypatch.setattr(filing, "_close_filing", real_close)
    finish_job(job_id)

    record = assert_accounted(job_id)
    assert (record.succeeded, record.failed) == (2, 0)
    statuses = [e["job"]["status"] for e in bus.events_of(job_id)]
    assert statuses[-1] == "completed" and set(statuses) == {"failed", "completed"}
    ids = {e["event_id"] for e in bus.events_of(job_id)}
    assert len(ids) == 2  # one event per transition (a retried publish keeps its id)


# -- 3. a cancel racing the last image ----------------------------------------------------


def test_a_cancel_after_the_last_image_but_before_the_stamp_is_refused(
    aws, stores, bus, call_api, monkeypatch
):
    """Every image is counted; the invocation that filed the last one has not stamped the
    job yet. The job has finished: the cancel is refused, and the job ends `completed`."""
    from retail_pulse.jobs import finish

    job_id = submit(call_api, 2).body["job_id"]
    aws.queued_messages()
    counted, stamp = threading.Event(), threading.Event()
    real_mark = finish.mark_finished

    def mark_later(job_id: str) -> Any:
        counted.set()
        assert stamp.wait(30)
        return real_mark(job_id)

    monkeypatch.setattr(finish, "mark_finished", mark_later)
    last_delivery = threading.Thread(
        target=lambda: (file(job_id, {0: success(), 1: success()}), finish_job(job_id))
    )
    last_delivery.start()
    reach(counted, "both images counted, the stamp not yet written")

    refused = call_api("POST", "/api/cancel", query={"jobid": job_id})

    stamp.set()
    last_delivery.join(30)
    assert refused.status_code == 409, refused.body
    assert "the job has already finished" in refused.body["error"]
    status = call_api("GET", "/api/status", query={"jobid": job_id}).body
    assert status["status"] == "completed"
    record = assert_accounted(job_id)
    assert (record.succeeded, record.cancelled, record.cancelled_at) == (2, None, None)
    assert [e["job"]["status"] for e in bus.events_of(job_id)] == ["completed"]


def test_a_cancel_that_read_the_job_before_its_last_image_is_refused(
    aws, stores, bus, call_api, monkeypatch
):
    """The cancel reads the job one image short; the last image is counted before the
    cancel writes. Its write must see the counters complete and refuse."""
    from retail_pulse.jobs import actions

    job_id = submit(call_api, 2).body["job_id"]
    aws.queued_messages()
    file(job_id, {0: success()})
    read, write = threading.Event(), threading.Event()
    real_read = actions.caller_job
    first = [True]

    def read_then_wait(tenant: str, job_id: str) -> Any:
        found = real_read(tenant, job_id)
        if first[0]:
            first[0] = False
            read.set()
            assert write.wait(30)
        return found

    monkeypatch.setattr(actions, "caller_job", read_then_wait)
    answers: list[Any] = []
    cancel = threading.Thread(
        target=lambda: answers.append(call_api("POST", "/api/cancel", query={"jobid": job_id}))
    )
    cancel.start()
    reach(read, "the cancel's read of the job, one image short")
    file(job_id, {1: success()})  # the last image, counted between the read and the write
    write.set()
    cancel.join(30)

    (refused,) = answers
    assert refused.status_code == 409, refused.body
    assert "the job has already finished" in refused.body["error"]
    finish_job(job_id)  # the last image's invocation stamps it
    assert call_api("GET", "/api/status", query={"jobid": job_id}).body["status"] == "completed"
    assert [e["job"]["status"] for e in bus.events_of(job_id)] == ["completed"]
    assert assert_accounted(job_id).cancelled_at is None


# -- 4. an Idempotency-Key sent again after a 5xx -----------------------------------------


def test_a_key_whose_submit_failed_after_writing_the_job_answers_that_job(
    aws, stores, call_api, monkeypatch
):
    """The job and its manifest were written, then enqueueing failed: a 503. The same
    request with the same key gets that job (never a second one), and it runs whole."""
    from retail_pulse.jobs import submit as submit_module

    real_enqueue = submit_module.enqueue_images

    def enqueue_half(bodies: list[dict[str, Any]], express: bool = False) -> None:
        real_enqueue(bodies[:3], express)
        raise EnqueueError("3 messages could not be enqueued: ServiceUnavailable")

    with monkeypatch.context() as patch:
        patch.setattr(submit_module, "enqueue_images", enqueue_half)
        failed = submit(call_api, 6, key="order-9")
    assert failed.status_code == 503, failed.body
    (first_job,) = all_job_ids()

    resent = submit(call_api, 6, key="order-9")

    assert resent.status_code == 201, resent.body
    assert resent.body["job_id"] == first_job
    assert all_job_ids() == [first_job]
    queued = {m["Body"] for m in aws.queued_messages()}
    indexes = sorted(int(b.split('"image_index": ')[1].split(",")[0]) for b in queued)
    assert sorted(set(indexes)) == list(range(6)), "every image is on its way"
    assert submit(call_api, 6, key="order-9").body == resent.body
    assert aws.queued_messages() == []  # a repeat of a whole submit sends nothing again


def test_a_resend_during_a_failing_first_attempt_waits_then_gets_its_job(
    aws, stores, call_api, monkeypatch
):
    """The resend arrives while the first attempt is still enqueueing (409: still being
    processed); the first attempt then fails (503); the next resend gets its job."""
    from retail_pulse.jobs import submit as submit_module

    enqueueing, fail = threading.Event(), threading.Event()

    def enqueue_then_fail(bodies: list[dict[str, Any]], express: bool = False) -> None:
        enqueueing.set()
        assert fail.wait(30)
        raise EnqueueError("10 messages could not be enqueued: ServiceUnavailable")

    answers: list[Any] = []
    with monkeypatch.context() as patch:
        patch.setattr(submit_module, "enqueue_images", enqueue_then_fail)
        first = threading.Thread(target=lambda: answers.append(submit(call_api, 2, key="k-7")))
        first.start()
        reach(enqueueing, "the first attempt enqueueing")
        during = submit(call_api, 2, key="k-7")
        fail.set()
        first.join(30)
    assert during.status_code == 409 and "still being processed" in during.body["error"]
    assert answers[0].status_code == 503
    (first_job,) = all_job_ids()

    after = submit(call_api, 2, key="k-7")

    assert (after.status_code, after.body) == (201, {"job_id": first_job})
    assert all_job_ids() == [first_job]
    assert len(aws.queued_messages()) == 2


# -- 5. closing a filing that is gone -----------------------------------------------------


def test_a_filing_closed_under_its_invocation_is_reported_and_recounted(
    aws, stores, bus, call_api, monkeypatch, caplog
):
    """The reconciler closes a filing it takes for dead (its clock says STALE_FILING_S
    passed) between the invocation's first and second image write. The invocation then
    writes the second image and closes: the filing is gone, its count would be lost. The
    close says so, and the next pass recounts the job from its records."""
    from retail_pulse.data import filing

    job_id = submit(call_api, 2).body["job_id"]
    aws.queued_messages()
    age_job(job_id, created_ago=timedelta(minutes=30))
    images = submitted_images(job_id)
    first_written, second = threading.Event(), threading.Event()
    real_write = filing._file_image

    def write(filing: Filing, *args: Any) -> str:
        if filing.image.image_index == 1:
            first_written.set()
            assert second.wait(30)
        return real_write(filing, *args)

    monkeypatch.setattr(filing, "_file_image", write)
    delivery = threading.Thread(
        target=lambda: file_outcomes(job_id, [Filing(images[i], success(), 1) for i in (0, 1)])
    )
    delivery.start()
    reach(first_written, "image 0 written, image 1 not yet")
    (filing,) = open_filings(job_id)
    item = connection().client.get_item(
        TableName=get_settings().jobs_table, Key={"job_id": {"S": job_id}}, ConsistentRead=True
    )["Item"]
    opened = datetime.fromisoformat(item[filing]["M"]["at"]["S"])

    early = reconcile(now=opened + timedelta(seconds=STALE_FILING_S + 1))
    assert early.recounted_images == 1 and open_filings(job_id) == []
    second.set()
    delivery.join(30)
    finish_job(job_id)

    gone = [r for r in caplog.records if "gone" in r.getMessage()]
    assert gone and gone[0].levelname == "ERROR", [r.getMessage() for r in caplog.records]
    job_now = get_job(job_id)
    assert job_now is not None and job_now.succeeded == 1  # the lost count, before repair

    reconcile(now=opened + timedelta(seconds=STALE_FILING_S + 400))

    record = assert_accounted(job_id)
    assert (record.succeeded, record.failed) == (2, 0)
    assert [e["job"]["status"] for e in bus.events_of(job_id)] == ["completed"]
