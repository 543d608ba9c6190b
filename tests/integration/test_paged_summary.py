"""A failed job with more failures than one invocation sums up (issue 24: "a job with
thousands of failures must still end, be announced and stay cheap to poll"): its summary is
read from FailedStores page by page in the ingest function, its place and tally kept on the
job, and the job is stamped failed, and announced, once, when the last page is read. Here
the inline limit is 10 failures and pages are 4, on DynamoDB Local: the summary is exact
(how many stores, the first 100 by store id, each with its first error in image order)
also when an invocation dies between pages, a message comes twice, the index lags, or the
message is lost; status meanwhile is `ongoing`, one read of the job."""

from __future__ import annotations

import contextlib
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retail_pulse.data.models import ImageRecord, JobRecord, StoreRecord
from retail_pulse.data.record_keys import failed_store_key
from retail_pulse.domain import ImageFailure, ImageSuccess
from retail_pulse.failure_summary import FailedImage, FailureSummary
from retail_pulse.jobs import summary as summary_use_case
from retail_pulse.jobs.finish import finish_job
from retail_pulse.jobs.reconcile import reconcile
from retail_pulse.jobs.submit import UNKNOWN_STORE
from retail_pulse.jobs.summary import continue_summary
from retail_pulse.settings import get_settings
from retail_pulse_admin.backfill_failed_stores import backfill_failed_stores
from tests.integration.conftest import job, visit
from tests.integration.test_bounded_failures import dynamodb_requests, published, status
from tests.integration.test_paged_jobs import (
    SOFT,
    DiesAfter,
    DiesAt,
    InvocationDied,
    deliver_ingest_queue,
)
from tests.support.dynamodb_local import backend  # noqa: F401
from tests.support.filing import file_result

INLINE = 10
PAGE = 4
STORES = 130  # more than the 100 a status lists

pytestmark = [
    pytest.mark.usefixtures("backend", "small_summaries"),
    pytest.mark.parametrize("backend", ["dynamodb-local"], indirect=True),
]
__all__ = ["published"]  # a fixture of test_bounded_failures, used here


@pytest.fixture
def small_summaries(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("SUMMARY_INLINE_FAILURES", str(INLINE))
    monkeypatch.setenv("SUMMARY_PAGE_FAILURES", str(PAGE))
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def submit(call_api: Any, body: dict[str, Any]) -> str:
    result = call_api("POST", "/api/submit/", body=body)
    assert result.status_code == 201, result.body
    return str(result.body["job_id"])


class FailedJob:
    """A job of STORES stores in the store master, 1 to 3 images each, submitted in an
    order unlike store id order, whose images fail with an error naming the image (a few
    succeed: their stores fail only by their other images, or not at all)."""

    def __init__(self, call_api: Any) -> None:
        run = uuid.uuid4().hex[:6]
        rng = random.Random(run)
        stores = [f"ST-{run}-{n:03d}" for n in range(STORES)]
        with StoreRecord.batch_write() as batch:
            for store in stores:
                batch.save(StoreRecord(store_id=store, area_code="710006", store_name=store))
        order = stores[:]
        rng.shuffle(order)
        self.images: list[str] = []  # the store of each image, in image order
        visits = []
        for store in order:
            count = rng.randint(1, 3)
            visits.append(
                visit(store, [f"https://i.example/{store}/{i}.jpg" for i in range(count)])
            )
            self.images += [store] * count
        self.job_id = submit(call_api, job(*visits))
        self.succeeded = set(rng.sample(range(len(self.images)), 12))
        for index, store in enumerate(self.images):
            if index in self.succeeded:
                outcome: Any = ImageSuccess(
                    perimeter=4, width=1, height=1, store_id=store, area="710006"
                )
            else:
                outcome = ImageFailure(f"image {index} of {store} failed")
            assert file_result(self.job_id, index, outcome)

    def expected(self) -> dict[str, Any]:
        """Its status once stamped, from what was submitted and filed."""
        failures = [
            FailedImage(store, f"image {index} of {store} failed")
            for index, store in enumerate(self.images)
            if index not in self.succeeded
        ]
        summary = FailureSummary.of(failures)
        return {
            "status": "failed",
            "job_id": self.job_id,
            "error": [{"store_id": s.store_id, "error": s.error} for s in summary.stores],
            "error_count": summary.store_count,
            "error_truncated": True,
            "progress": {
                "total": len(self.images),
                "succeeded": len(self.succeeded),
                "failed": len(failures),
            },
        }


def assert_summing_up(call_api: Any, job_id: str, progress: dict[str, int]) -> None:
    """Status while the summary is under way: ongoing, every image counted, saying why
    (`summarizing`), one read."""
    answer = status(call_api, job_id)
    assert answer.body == {
        "status": "ongoing",
        "job_id": job_id,
        "summarizing": True,
        "progress": progress,
    }
    assert answer.headers["Retry-After"] == "5"
    assert dynamodb_requests() == {"dynamodb.GetItem": 1}


def test_a_large_failed_job_is_summed_up_page_by_page_exactly_and_announced_once(
    aws, call_api, published
):
    failed = FailedJob(call_api)
    expected = failed.expected()
    assert expected["progress"]["failed"] > INLINE

    # Every image counted, not stamped yet: too many failures to sum up in a poll.
    assert_summing_up(call_api, failed.job_id, expected["progress"])
    # A retry now finds it failed by its counters: it begins the summary (as the invocation
    # that counted the last image is about to) and is refused until the stamp.
    early = call_api("POST", "/api/retry", query={"jobid": failed.job_id})
    assert early.status_code == 409 and "summed up" in early.body["error"]
    finish_job(failed.job_id)  # the invocation that filed its last image: begun already

    record = JobRecord.get(failed.job_id, consistent_read=True)
    assert record.finished_at is None and record.summary_pass is not None
    assert_summing_up(call_api, failed.job_id, expected["progress"])
    assert published == []
    # Neither cancelled (every image is done) nor retried (not failed yet) meanwhile.
    cancel = call_api("POST", "/api/cancel", query={"jobid": failed.job_id})
    assert cancel.status_code == 409 and "summed up" in cancel.body["error"]
    retry = call_api("POST", "/api/retry", query={"jobid": failed.job_id})
    assert retry.status_code == 409 and "ongoing" in retry.body["error"]

    assert deliver_ingest_queue(aws, DiesAfter()) == ["summary"]

    answer = status(call_api, failed.job_id)
    assert answer.body == expected
    assert dynamodb_requests() == {"dynamodb.GetItem": 1}
    record = JobRecord.get(failed.job_id, consistent_read=True)
    assert record.summary_pass is None and record.summary_state is None
    assert [event["job"] for event in published] == [expected]
    # Its event is out, and it has left OngoingJobs: nothing is owed on it.
    assert not record.event_pending and record.ongoing_shard is None
    # Nothing is left to do: a duplicate of the message reads nothing.
    finish_job(failed.job_id)
    assert deliver_ingest_queue(aws, DiesAfter()) == []
    # And the retry a failed job allows is taken now.
    assert call_api("POST", "/api/retry", query={"jobid": failed.job_id}).status_code == 200


def test_an_invocation_that_dies_between_pages_is_gone_on_from_without_counting_twice(
    aws, call_api, published
):
    failed = FailedJob(call_api)
    finish_job(failed.job_id)

    # Two pages added, then the invocation dies at its third look at the clock.
    assert deliver_ingest_queue(aws, DiesAfter(checks=3)) == ["summary"]
    record = JobRecord.get(failed.job_id, consistent_read=True)
    assert record.summary_step == 2 and record.finished_at is None
    assert_summing_up(call_api, failed.job_id, failed.expected()["progress"])
    # Its message comes back: the pass goes on from the third page.
    assert deliver_ingest_queue(aws, DiesAfter()) == ["summary"]

    assert status(call_api, failed.job_id).body == failed.expected()
    assert len(published) == 1


def test_a_lost_summary_message_is_sent_again_by_the_reconciler(aws, call_api, published):
    failed = FailedJob(call_api)
    finish_job(failed.job_id)
    assert deliver_ingest_queue(aws, DiesAfter(checks=2)) == ["summary"]  # one page, dies
    aws.sqs.purge_queue(QueueUrl=aws.ingest_url)  # and its message is lost

    assert reconcile().summaries_resent == 0  # the pass moved a moment ago
    later = reconcile(now=datetime.now(UTC) + SOFT)

    assert later.summaries_resent == 1
    assert deliver_ingest_queue(aws, DiesAfter()) == ["summary"]
    assert status(call_api, failed.job_id).body == failed.expected()
    assert len(published) == 1


def test_a_pass_that_reads_fewer_failures_than_counted_begins_again_never_guesses(
    aws, call_api, published, monkeypatch
):
    failed = FailedJob(call_api)
    lagging = min(i for i in range(len(failed.images)) if i not in failed.succeeded)
    # Image `lagging`'s failure is not in FailedStores yet (the index lags its write).
    ImageRecord(job_id=failed.job_id, image_index=lagging).update(
        actions=[ImageRecord.failed_store_key.remove()]
    )
    monkeypatch.setattr(summary_use_case, "AGAIN_AFTER_S", 0)  # SQS delays its message
    finish_job(failed.job_id)

    assert deliver_ingest_queue(aws, DiesAfter()) == ["summary"]

    record = JobRecord.get(failed.job_id, consistent_read=True)
    assert record.finished_at is None and record.summary_pass is not None
    assert_summing_up(call_api, failed.job_id, failed.expected()["progress"])
    # The index catches up; the pass, begun again, reads it whole.
    store = failed.images[lagging]
    ImageRecord(job_id=failed.job_id, image_index=lagging).update(
        actions=[ImageRecord.failed_store_key.set(failed_store_key(store, lagging))]
    )
    assert deliver_ingest_queue(aws, DiesAfter()) == ["summary"]
    assert status(call_api, failed.job_id).body == failed.expected()
    assert len(published) == 1


def test_failures_filed_before_failedstores_are_summed_up_once_the_backfill_runs(
    aws, call_api, published, monkeypatch
):
    """Records failed before this version have no place in FailedStores: the pass reads
    fewer failures than the job counts and never guesses; the one-off backfill puts them
    there, and the pass's next try ends it."""
    failed = FailedJob(call_api)
    failures = [i for i in range(len(failed.images)) if i not in failed.succeeded]
    for index in failures:  # as filed before FailedStores existed
        ImageRecord(job_id=failed.job_id, image_index=index).update(
            actions=[ImageRecord.failed_store_key.remove()]
        )
    monkeypatch.setattr(summary_use_case, "AGAIN_AFTER_S", 0)
    finish_job(failed.job_id)
    assert deliver_ingest_queue(aws, DiesAfter()) == ["summary"]
    assert JobRecord.get(failed.job_id, consistent_read=True).finished_at is None

    assert backfill_failed_stores() == len(failures)

    assert deliver_ingest_queue(aws, DiesAfter()) == ["summary"]
    assert status(call_api, failed.job_id).body == failed.expected()
    assert len(published) == 1
    assert backfill_failed_stores() == 0  # nothing left: safe to run again


def unknown_stores_job(call_api: Any, images: int) -> str:
    """A job whose every store is unknown: it fails at submit, its summary handed on."""
    run = uuid.uuid4().hex[:6]
    body = job(*(visit(f"U-{run}-{n % 5}", [f"https://i.example/{n}.jpg"]) for n in range(images)))
    return submit(call_api, body)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    first_dies_at=st.integers(1, 6),
    second_runs_at=st.integers(1, 6),
    second_dies_at=st.one_of(st.none(), st.integers(1, 6)),
)
def test_two_invocations_of_one_summary_interleaved_end_it_once_and_exactly(
    aws, call_api, published, first_dies_at, second_runs_at, second_dies_at
):
    """A duplicate message run while the first invocation is between two pages (at its
    `second_runs_at`-th look at the clock), either dying at some look: whatever the order,
    the job ends once, with every failure counted once. (Each move writes the cursor and
    the tally together, so a stale one cannot count a page twice; its condition keeps a
    stale invocation from moving the pass back, or writing onto the job once it ended.)"""
    job_id = unknown_stores_job(call_api, 3 * PAGE + 1)
    published.clear()
    second = DiesAt(second_dies_at)

    class First(DiesAt):
        def __call__(self) -> float:
            if self.looked + 1 == second_runs_at:
                with contextlib.suppress(InvocationDied):
                    continue_summary(job_id, "default", second)
            return super().__call__()

    with contextlib.suppress(InvocationDied):
        continue_summary(job_id, "default", First(first_dies_at))
    continue_summary(job_id, "default", DiesAt())  # the message that came back

    answer = status(call_api, job_id).body
    assert answer["status"] == "failed"
    assert answer["error_count"] == 5
    assert {entry["error"] for entry in answer["error"]} == {UNKNOWN_STORE}
    assert [event["job"] for event in published] == [answer]
    # No invocation wrote its place after the end: the job keeps nothing of the pass.
    record = JobRecord.get(job_id, consistent_read=True)
    assert (record.summary_pass, record.summary_step, record.summary_state) == (None, None, None)
