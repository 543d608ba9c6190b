"""No job stays `ongoing` forever: find jobs that stopped moving and push them to an end.

Runs on a schedule. A job is *stuck* when it was submitted more than RECONCILE_AFTER_S ago
and nothing has happened to it (no image finished, no requeue) for as long: its pending
images are enqueued again (exactly-once accounting makes a duplicate harmless). A job past
JOB_HARD_DEADLINE_S since submit has every still-pending image recorded failed, and so ends.
A job whose images are all done but that was never stamped finished is finished.

First, for every job it visits: a batch's filing whose invocation died before counting it
(data/jobs.py file_outcomes) is counted, once it is STALE_FILING_S old; and a job whose
counters may have missed a filing (one was gone when it closed, or the job is stuck with
nothing pending) is recounted from its records.

A terminal job stays in OngoingJobs until nothing is left to do for it: an event its
emitter never marked emitted is emitted (the same event_id), and a cancelled job's
unprocessed images are filed `cancelled` here if their messages have not done it.

Fair and bounded, whatever some jobs hold: the shards are taken in turn (a pass cut short
by its time budget has reached every shard), and owed events are published last, after
every repair the pass has time for, fewest failed tries first. An event that fails is tried
again with backoff (5, 10, 20 ... minutes, at most an hour apart; its tries and next time
kept on the job), and from its ALARM_AFTER_TRIES-th failed try on the job is counted in the
UnannouncedJobs metric, which an alarm watches; why it fails is logged once, then.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from retail_pulse.data import STORAGE_ERRORS
from retail_pulse.data.filing import STALE_FILING_S, close_stale_filings
from retail_pulse.data.image_records import record_outcome
from retail_pulse.data.images import PendingPage, end_retry, record_unwritten_image
from retail_pulse.data.ingest import enqueue_ingest, ingest_lease_held
from retail_pulse.data.jobs import (
    event_failed,
    get_job,
    mark_finished,
    note_requeued,
    settle,
    unfinished_jobs,
)
from retail_pulse.data.queue import enqueue_images
from retail_pulse.data.recount import recount_job
from retail_pulse.domain import Image, ImageCancelled, ImageFailure, ImageResult, Job
from retail_pulse.jobs.finish import emit_job_finished, finish_job, hand_on_summary
from retail_pulse.jobs.messages import ImageMessage, is_express
from retail_pulse.jobs.retry import hand_on
from retail_pulse.jobs.sweeps import CANCEL, EXPIRE, REQUEUE, step, under_way
from retail_pulse.observability import (
    IMAGES_REQUEUED,
    JOBS_EXPIRED,
    JOBS_RECOUNTED,
    STUCK_JOBS,
    UNANNOUNCED_JOBS,
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
# After a failed try at an owed event: wait a pass (the schedule's 5 minutes), then twice
# as long after each further failure, up to an hour.
_EMIT_BACKOFF_S = 300
_EMIT_BACKOFF_MAX_S = 3600
# From this many failed tries on, a job's event is reported as unannounceable.
ALARM_AFTER_TRIES = 3
# A pass's first shard moves on with the schedule, so no shard is always first.
_PASS_S = 300

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
    # Jobs whose counters were set from their records, and what that added to them.
    recounted_jobs: int = 0
    recount_correction: int = 0
    # Owed events tried and refused this pass; jobs with ALARM_AFTER_TRIES failures or more.
    events_failed: int = 0
    unannounced_jobs: int = 0
    # Uploads whose ingest stopped, retries whose pages stopped, failure summaries that
    # stopped: their message sent again.
    ingests_resent: int = 0
    retries_resent: int = 0
    summaries_resent: int = 0
    # Jobs whose sweep (requeue, expiry, cancel) has pages left for the next pass.
    sweeps_left: int = 0
    out_of_time: bool = False


@dataclass
class _Pass:
    """One pass's moment, cutoffs and report, and the sweeps it goes on with."""

    now: datetime
    soft_cutoff: datetime
    hard_cutoff: datetime
    report: ReconcileReport
    out_of_time: Callable[[], bool]
    sweeps: list[tuple[Job, str, int]] = field(default_factory=list)


def reconcile(
    now: datetime | None = None, time_left_s: Callable[[], float] | None = None
) -> ReconcileReport:
    """One pass over the unfinished jobs older than the soft deadline: the repairs first,
    every shard in turn, then the owed events."""
    settings = get_settings()
    now = now or datetime.now(UTC)
    soft_cutoff = now - timedelta(seconds=settings.reconcile_after_s)
    hard_cutoff = now - timedelta(seconds=settings.job_hard_deadline_s)
    report = ReconcileReport()
    owed: list[Job] = []

    def out_of_time() -> bool:
        if time_left_s is not None and time_left_s() < _RESERVE_S:
            report.out_of_time = True
        return report.out_of_time

    run = _Pass(now, soft_cutoff, hard_cutoff, report, out_of_time)

    rotation = int(now.timestamp() // _PASS_S)
    for job_id in unfinished_jobs(created_before=soft_cutoff, rotation=rotation):
        if out_of_time():
            break
        try:
            job = _visit(job_id, run)
        except STORAGE_ERRORS:
            # Left as it is: the next pass tries again. The other jobs of this pass go on.
            logger.exception("job not reconciled", extra={"job_id": job_id})
            continue
        if job is not None:
            owed.append(job)
    _go_on_sweeping(run, out_of_time)
    _emit_owed(owed, now, out_of_time, report)
    _publish(report)
    return report


def _visit(job_id: str, run: _Pass) -> Job | None:
    """Repair one job; the job back if it owes an event (published after the repairs)."""
    report = run.report
    upkeep = close_stale_filings(job_id, run.now - timedelta(seconds=STALE_FILING_S))
    report.recounted_images += upkeep.counted
    if upkeep.counted:
        logger.warning("stale filing counted", extra={"job_id": job_id, "images": upkeep.counted})
    job = upkeep.job
    if upkeep.recount_due:
        job = _recount(job_id, "a filing was gone when it closed", run) or job
    if job is None:
        return None
    if job.finished_at is not None:
        if job.event_pending:
            return job if (run.now - job.finished_at).total_seconds() >= _EMIT_GRACE_S else None
        _tidy_terminal(job, run)
        return None
    if job.ingesting:
        _resend_lost_ingest(job, run)
        return None
    if job.retry_next is not None and (job.retry_moved_at or job.created_at) <= run.soft_cutoff:
        hand_on(job)  # the retry's pages stopped: its message was lost
        report.retries_resent += 1
    if job.summarizing:
        _resend_lost_summary(job, run)
        return None
    if job.done:
        # The last image's invocation died between its transaction and the stamp.
        finish_job(job_id)
        report.finished_jobs += 1
    elif _started(job) <= run.hard_cutoff:
        report.stuck_jobs += 1
        _sweep(run, job, EXPIRE, upkeep.open_filings)
    elif _last_activity(job) <= run.soft_cutoff or under_way(job_id, REQUEUE):
        report.stuck_jobs += 1
        _sweep(run, job, REQUEUE, upkeep.open_filings)
    return None


def _resend_lost_ingest(job: Job, run: _Pass) -> None:
    """An upload still being read whose ingest stopped: no invocation holds its lease and
    nothing has happened to the job for RECONCILE_AFTER_S (its message was lost, or
    dead-lettered). Its message is sent again: the ingest goes on from its checkpoint
    (a message that was only late is harmless: one invocation at a time holds the lease)."""
    if ingest_lease_held(job.job_id, run.now) or _last_activity(job) > run.soft_cutoff:
        return
    enqueue_ingest({"job_id": job.job_id, "tenant": job.tenant})
    note_requeued(job.job_id)  # the next resend waits a whole soft deadline
    run.report.ingests_resent += 1
    logger.warning("stopped ingest sent again", extra={"job_id": job.job_id})


def _resend_lost_summary(job: Job, run: _Pass) -> None:
    """A failed job's paged summary that stood still for RECONCILE_AFTER_S (its message
    lost, or its tries at an index that lagged used up): its message is sent again; the
    pass goes on from its place (one that was only late is harmless: its moves are
    conditional)."""
    if (job.summary_moved_at or job.created_at) > run.soft_cutoff:
        return
    hand_on_summary(job.job_id, job.tenant)
    run.report.summaries_resent += 1
    logger.warning("stopped failure summary sent again", extra={"job_id": job.job_id})


def _sweep(run: _Pass, job: Job, kind: str, open_filings: int = 0) -> None:
    """One page of the job's sweep of `kind` now; the rest after every job's first."""
    if _sweep_step(run, job, kind, open_filings):
        run.sweeps.append((job, kind, open_filings))


def _go_on_sweeping(run: _Pass, out_of_time: Callable[[], bool]) -> None:
    """The sweeps with pages left, a page of each in turn, while time is left; the next
    pass goes on from where each stopped."""
    while run.sweeps:
        for entry in list(run.sweeps):
            if out_of_time():
                run.report.sweeps_left = len(run.sweeps)
                return
            try:
                more = _sweep_step(run, *entry)
            except STORAGE_ERRORS:
                logger.exception("job sweep stopped", extra={"job_id": entry[0].job_id})
                more = False
            if not more:
                run.sweeps.remove(entry)


def _sweep_step(run: _Pass, job: Job, kind: str, open_filings: int) -> bool:
    """A page of the sweep, counted; its end when it was the last. True if pages remain."""
    report = run.report
    if kind == REQUEUE:
        done = step(job, kind, _requeue_page)
        report.requeued_images += done.acted
        if done.total is not None:
            _requeued(job, done.total, open_filings, run)
    elif kind == EXPIRE:
        done = step(job, kind, _expire_page)
        report.expired_images += done.acted
        count_failures("deadline", done.acted)
        if done.total is not None:
            _expired(job, done.total, report)
    else:
        done = step(job, kind, _cancel_page)
        report.cancelled_images += done.acted
        if done.total is not None:
            mark_finished(job.job_id)  # takes the cancelled job out of OngoingJobs when done
    return done.more


def _recount(job_id: str, why: str, run: _Pass) -> Job | None:
    """Set the job's counters from its records, page by page while the pass has time; the
    job as it stands then, or None if the recount is not over (the job moved meanwhile, or
    the time ran out: the next pass begins again, or goes on from its place)."""
    report = run.report
    correction = recount_job(job_id, run.out_of_time)
    if correction is None:
        logger.info("job recount not over: moving, or out of time", extra={"job_id": job_id})
        return None
    if correction:
        report.recounted_jobs += 1
        report.recount_correction += correction
        logger.error(
            "job recounted from its records",
            extra={"job_id": job_id, "why": why, "images": correction},
        )
    job = get_job(job_id)
    if job is not None and job.done and job.finished_at is None:
        finish_job(job_id)
        report.finished_jobs += 1
        job = get_job(job_id)
    return job


def _due(job: Job, now: datetime) -> bool:
    return job.event_retry_at is None or job.event_retry_at <= now


def _emit_owed(
    owed: list[Job], now: datetime, out_of_time: Callable[[], bool], report: ReconcileReport
) -> None:
    """Publish the events owed, after the pass's repairs: fewest failed tries first, each
    only when its backoff is over, while time is left."""
    report.unannounced_jobs += sum(
        1 for job in owed if not _due(job, now) and job.event_attempts >= ALARM_AFTER_TRIES
    )
    due = sorted(
        (job for job in owed if _due(job, now)),
        key=lambda job: (job.event_attempts, job.finished_at),
    )
    for job in due:
        if out_of_time():
            report.unannounced_jobs += sum(
                1 for rest in due[due.index(job) :] if rest.event_attempts >= ALARM_AFTER_TRIES
            )
            return
        try:
            emit_job_finished(job)
        except Exception as error:
            report.events_failed += 1
            _event_not_emitted(job, now, error, report)
            continue
        report.events_emitted += 1
        logger.warning(
            "job event emitted late",
            extra={"job_id": job.job_id, "tries_before": job.event_attempts},
        )


def _event_not_emitted(job: Job, now: datetime, error: Exception, report: ReconcileReport) -> None:
    """Back off from an event that failed (EventBridge or the webhook queue refused it or
    is down), and say why once, when the job starts to be reported."""
    wait_s = min(_EMIT_BACKOFF_S * 2**job.event_attempts, _EMIT_BACKOFF_MAX_S)
    retry_at = now + timedelta(seconds=wait_s)
    try:
        tries = event_failed(job, retry_at)
    except STORAGE_ERRORS:
        logger.exception("failed try at a job event not noted", extra={"job_id": job.job_id})
        tries = job.event_attempts + 1
    if tries is None:
        return  # emitted by another meanwhile, or replaced by a retry
    if tries >= ALARM_AFTER_TRIES:
        report.unannounced_jobs += 1
    details = {
        "job_id": job.job_id,
        "event_id": job.event_id,
        "tries": tries,
        "next_try_at": retry_at.isoformat(),
    }
    if tries == ALARM_AFTER_TRIES:
        logger.error(
            "job event cannot be published",
            extra={**details, "reason": f"{type(error).__name__}: {error}"},
        )
    else:
        logger.info("job event not emitted yet; tried again later", extra=details)


def _tidy_terminal(job: Job, run: _Pass) -> None:
    """What a terminal job with its event out, still in OngoingJobs, needs: its cancelled
    images filed (a retry cancelled between its pages: its cursor taken off first), then
    to leave."""
    if job.cancelled_at is not None and job.retry_next is not None:
        end_retry(job.job_id)
        job = get_job(job.job_id) or job
    if job.cancelled_at is not None and not job.done:
        _sweep(run, job, CANCEL)
        return
    settle(job.job_id)


def _file_all(images: list[Image], outcome: ImageResult) -> int:
    """File each of `images` with `outcome` (unless filed meanwhile); how many it filed."""
    with ThreadPoolExecutor(max_workers=_FAIL_THREADS) as pool:
        return sum(pool.map(lambda image: record_outcome(image, outcome, 0), images))


def _cancel_page(job: Job, page: PendingPage, first: int, last: int) -> int:
    return _file_all(page.pending, ImageCancelled())


def _started(job: Job) -> datetime:
    """When the job's current run began: its submit, or the client's last retry."""
    return max(moment for moment in (job.created_at, job.retried_at) if moment is not None)


def _last_activity(job: Job) -> datetime:
    moments = [job.created_at, job.progressed_at, job.requeued_at, job.retried_at]
    return max(moment for moment in moments if moment is not None)


def _requeue_page(job: Job, page: PendingPage, first: int, last: int) -> int:
    express = is_express(job.total)  # back on the lane submit chose
    enqueue_images(
        [ImageMessage.body(image, job.tenant, express) for image in page.pending], express
    )
    return len(page.pending)


def _requeued(job: Job, images: int, open_filings: int, run: _Pass) -> None:
    """A stuck job's requeue is over, all its pages: the next waits a whole soft deadline.
    Short of its total with nothing pending and nothing open: a count was lost."""
    note_requeued(job.job_id)
    logger.warning("stuck job requeued", extra={"job_id": job.job_id, "images": images})
    if not images and not open_filings:
        _recount(job.job_id, "stuck with no image pending", run)


def _expire_page(job: Job, page: PendingPage, first: int, last: int) -> int:
    """Fail the page's pending images, and file those submit counted but never wrote."""
    minutes = round(get_settings().job_hard_deadline_s / 60)
    failed = _file_all(
        page.pending, ImageFailure(f"processing did not finish within {minutes} minutes")
    )
    unwritten = [index for index in range(first, last + 1) if index not in page.known]
    return failed + sum(record_unwritten_image(job.job_id, i, UNWRITTEN) for i in unwritten)


def _expired(job: Job, images: int, report: ReconcileReport) -> None:
    finish_job(job.job_id)
    report.expired_jobs += 1
    report.finished_jobs += 1
    logger.warning(
        "job expired: pending images recorded failed",
        extra={
            "job_id": job.job_id,
            "images": images,
            "deadline_minutes": round(get_settings().job_hard_deadline_s / 60),
        },
    )


def _publish(report: ReconcileReport) -> None:
    # Zeros too: the StuckJobs and UnannouncedJobs alarms see data on every run, not a gap.
    count(STUCK_JOBS, report.stuck_jobs)
    count(IMAGES_REQUEUED, report.requeued_images)
    count(JOBS_EXPIRED, report.expired_jobs)
    count(UNANNOUNCED_JOBS, report.unannounced_jobs)
    count(JOBS_RECOUNTED, report.recounted_jobs)
    logger.info("reconcile pass done", extra=dict(report.__dict__))
