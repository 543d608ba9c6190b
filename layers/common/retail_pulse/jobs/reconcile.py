"""No job stays `ongoing` forever: find jobs that stopped moving and push them to an end.

Runs on a schedule. A job is *stuck* when it was submitted more than RECONCILE_AFTER_S ago
and nothing has happened to it (no image finished, no requeue) for as long: its pending
images are enqueued again (exactly-once accounting makes a duplicate harmless). A job past
JOB_HARD_DEADLINE_S since submit has every still-pending image recorded failed, and so ends.
A job whose images are all done but that was never stamped finished is finished.

First, for every job it visits: a batch's filing whose invocation died before counting it
(data/jobs.py file_outcomes) is counted, once it is STALE_FILING_S old.

A terminal job stays in OngoingJobs until nothing is left to do for it: an event its
emitter never marked emitted is emitted (the same event_id), and a cancelled job's
unprocessed images are filed `cancelled` here if their messages have not done it.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from retail_pulse.data import STORAGE_ERRORS
from retail_pulse.data.images import pending_images, record_unwritten_image, recorded_indexes
from retail_pulse.data.jobs import (
    STALE_FILING_S,
    close_stale_filings,
    get_job,
    mark_finished,
    note_requeued,
    record_outcome,
    settle,
    unfinished_jobs,
)
from retail_pulse.data.queue import enqueue_images
from retail_pulse.domain import ImageCancelled, ImageFailure, ImageResult, Job
from retail_pulse.jobs.finish import emit_job_finished, finish_job
from retail_pulse.jobs.messages import ImageMessage, is_express
from retail_pulse.observability import (
    IMAGES_REQUEUED,
    JOBS_EXPIRED,
    STUCK_JOBS,
    count,
    count_failures,
    logger,
)
from retail_pulse.settings import get_settings

# Failing a 10,000-image job is 10,000 transactions: done in parallel, they fit one run.
_FAIL_THREADS = 8
# Stop starting new jobs when the invocation has less than this left; the next run goes on.
_RESERVE_S = 30.0
# A terminal job's event this long after the transition was not emitted by its emitter.
_EMIT_GRACE_S = 60

UNWRITTEN = "job submission did not complete; this image was never recorded"


@dataclass
class ReconcileReport:
    """What one run found and did (logged, and returned for tests)."""

    stuck_jobs: int = 0
    requeued_images: int = 0
    expired_jobs: int = 0
    expired_images: int = 0
    finished_jobs: int = 0
    events_emitted: int = 0
    cancelled_images: int = 0
    # Images of filings whose invocations died before counting them, counted now.
    recounted_images: int = 0
    out_of_time: bool = False


def reconcile(
    now: datetime | None = None, time_left_s: Callable[[], float] | None = None
) -> ReconcileReport:
    """One pass over the unfinished jobs older than the soft deadline."""
    settings = get_settings()
    now = now or datetime.now(UTC)
    soft_cutoff = now - timedelta(seconds=settings.reconcile_after_s)
    hard_cutoff = now - timedelta(seconds=settings.job_hard_deadline_s)
    report = ReconcileReport()
    for job_id in unfinished_jobs(created_before=soft_cutoff):
        if time_left_s is not None and time_left_s() < _RESERVE_S:
            report.out_of_time = True
            break
        try:
            job, recounted = close_stale_filings(job_id, now - timedelta(seconds=STALE_FILING_S))
        except STORAGE_ERRORS:
            # Still open: the next pass closes it. The other jobs of this pass go on.
            logger.exception("stale filing not closed", extra={"job_id": job_id})
            continue
        report.recounted_images += recounted
        if recounted:
            logger.warning("stale filing counted", extra={"job_id": job_id, "images": recounted})
        if job is None:
            continue
        if job.finished_at is not None:
            _tidy_terminal(job, now, report)
            continue
        if job.done:
            # The last image's invocation died between its transaction and the stamp.
            finish_job(job_id)
            report.finished_jobs += 1
        elif _started(job) <= hard_cutoff:
            report.stuck_jobs += 1
            report.expired_jobs += 1
            report.expired_images += _expire(job, settings.job_hard_deadline_s)
            report.finished_jobs += 1
        elif _last_activity(job) <= soft_cutoff:
            report.stuck_jobs += 1
            report.requeued_images += _requeue(job)
    _publish(report)
    return report


def _tidy_terminal(job: Job, now: datetime, report: ReconcileReport) -> None:
    """What a terminal job still in OngoingJobs needs: its event, its cancelled images."""
    assert job.finished_at is not None
    if job.event_pending:
        if (now - job.finished_at).total_seconds() < _EMIT_GRACE_S:
            return
        try:
            emit_job_finished(job)
        except Exception:
            # Still owed, and still in OngoingJobs: the next pass tries again. The other
            # jobs of this pass must not wait for EventBridge or the webhook queue.
            logger.exception("job event still not emitted", extra={"job_id": job.job_id})
            return
        report.events_emitted += 1
        logger.warning("job event emitted late", extra={"job_id": job.job_id})
        return
    if job.cancelled_at is not None and not job.done:
        report.cancelled_images += _file_pending(job.job_id, ImageCancelled())
        mark_finished(job.job_id)  # takes the cancelled job out of OngoingJobs when done
        return
    settle(job.job_id)


def _file_pending(job_id: str, outcome: ImageResult) -> int:
    """File every still-pending image of the job with `outcome`; how many it filed."""
    images = list(pending_images(job_id))
    with ThreadPoolExecutor(max_workers=_FAIL_THREADS) as pool:
        return sum(pool.map(lambda image: record_outcome(image, outcome, 0), images))


def _started(job: Job) -> datetime:
    """When the job's current run began: its submit, or the client's last retry."""
    return max(moment for moment in (job.created_at, job.retried_at) if moment is not None)


def _last_activity(job: Job) -> datetime:
    moments = [job.created_at, job.progressed_at, job.requeued_at, job.retried_at]
    return max(moment for moment in moments if moment is not None)


def _requeue(job: Job) -> int:
    job_id = job.job_id
    express = is_express(job.total)  # back on the lane submit chose
    messages = [ImageMessage.body(image, job.tenant, express) for image in pending_images(job_id)]
    enqueue_images(messages, express)
    note_requeued(job_id)
    logger.warning("stuck job requeued", extra={"job_id": job_id, "images": len(messages)})
    return len(messages)


def _expire(job: Job, deadline_s: int) -> int:
    """Fail what is still pending, file what submit never wrote, and finish the job."""
    minutes = round(deadline_s / 60)
    failure = ImageFailure(f"processing did not finish within {minutes} minutes")
    failed = _file_pending(job.job_id, failure)
    current = get_job(job.job_id)
    if current is not None and not current.done:
        recorded = recorded_indexes(job.job_id)
        missing = [i for i in range(current.total) if i not in recorded]
        failed += sum(record_unwritten_image(job.job_id, i, UNWRITTEN) for i in missing)
    count_failures("deadline", failed)
    finish_job(job.job_id)
    logger.warning(
        "job expired: pending images recorded failed",
        extra={"job_id": job.job_id, "images": failed, "deadline_minutes": minutes},
    )
    return failed


def _publish(report: ReconcileReport) -> None:
    # Zeros too: the StuckJobs alarm then sees data on every run, not a gap.
    count(STUCK_JOBS, report.stuck_jobs)
    count(IMAGES_REQUEUED, report.requeued_images)
    count(JOBS_EXPIRED, report.expired_jobs)
    logger.info("reconcile pass done", extra=dict(report.__dict__))
