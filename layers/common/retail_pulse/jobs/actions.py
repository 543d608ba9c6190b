"""What a client may do to its own job besides reading it: cancel it while it runs, and
re-run the images of a failed job. Another client's job is an unknown job (UnknownJob)."""

from __future__ import annotations

from retail_pulse.data import STORAGE_ERRORS
from retail_pulse.data.images import JobChanged, failed_page, reopen_failed
from retail_pulse.data.jobs import JobBusy, cancel
from retail_pulse.domain import Job, JobStatus
from retail_pulse.errors import StorageInterrupted, WrongJobState
from retail_pulse.jobs.finish import announce, emit_job_finished, finish_job
from retail_pulse.jobs.messages import is_express
from retail_pulse.jobs.retry import enqueue_retried, hand_on, runnable
from retail_pulse.jobs.status import caller_job, status_of
from retail_pulse.observability import logger
from retail_pulse.settings import get_settings


def cancel_job(tenant: str, job_id: str) -> JobStatus:
    """Cancel an ongoing job: `cancelled` at once; its images not yet processed are filed
    `cancelled` without a download as their messages arrive, results already filed stay."""
    job = caller_job(tenant, job_id)
    try:
        cancelled = cancel(job)
    except JobBusy:
        raise WrongJobState(
            "the job's images were being counted too fast to cancel it; "
            "ask for its status, then send the cancel again if it is still ongoing"
        ) from None
    if cancelled is None:
        # Finished: stamped, or every image counted (its stamp on its way). Not cancelled
        # then, or a finished job would turn `cancelled` with nothing cancelled.
        current = caller_job(tenant, job_id)
        if current.state == "cancelled":
            raise WrongJobState(
                "the job is already cancelled; only an ongoing job can be cancelled"
            )
        if current.summarizing:
            raise WrongJobState(
                "every image of the job is done and its failures are being summed up; "
                "only a job with images still to process can be cancelled"
            )
        raise WrongJobState(
            f"the job has already finished (it is {current.state}); "
            "only an ongoing job can be cancelled"
        )
    logger.info("job cancelled", extra={"job_id": job_id, "unprocessed": cancelled.unprocessed})
    announce(cancelled)
    return status_of(cancelled)


def retry_job(tenant: str, job_id: str) -> JobStatus:
    """Re-run a failed job's failed images: back to `pending` and enqueued again, the job
    `ongoing` until they end. Images of stores still missing from the store master stay
    failed (they would fail the same way); a job with nothing to re-run is refused.

    Here, the first page of the job's records (JOB_PAGE_IMAGES); a larger job's other
    pages are handed on to the ingest function (jobs/retry.py)."""
    job = caller_job(tenant, job_id)
    if job.state != "failed":
        raise WrongJobState(f"the job is {job.state}; only a failed job can be retried")
    job = _announced(job)
    if job.finished_at is None:
        raise WrongJobState(
            "the job's failures are being summed up (it is ongoing); "
            "ask for its status, then retry once it says failed"
        )
    page = failed_page(job.job_id, 0, get_settings().job_page_images)
    retried = runnable(page.images)
    if not retried and page.next is None:
        raise WrongJobState(
            "none of the job's failed images can be re-run: their stores are still not in "
            "the store master; import them first (retail-pulse stores import)"
        )
    try:
        reopen_failed(job, retried, after=page.next)
    except JobChanged:
        current = caller_job(tenant, job_id)
        raise WrongJobState(
            f"the job changed while it was being retried (it is {current.state} now); "
            "ask for its status, then retry again if it failed"
        ) from None
    except STORAGE_ERRORS as error:
        raise StorageInterrupted(
            "the job could not be reopened for its retry (storage failed); "
            "send the same retry again"
        ) from error
    paged = page.next is not None
    enqueue_retried(job.tenant, retried, is_express(job.total if paged else len(retried)))
    if paged:
        hand_on(job)
    logger.info(
        "job retried",
        extra={
            "job_id": job_id,
            "images": len(retried),
            "still_unknown_store": len(page.images) - len(retried),
            "more_pages": paged,
        },
    )
    return status_of(caller_job(tenant, job_id))


def _announced(job: Job) -> Job:
    """The failed job with its failure stamped, and announced if it can be: a client may
    retry the moment the counters say `failed`, before the invocation that filed the last
    image got there. The failure's event goes out first when it can (the same event_id if
    its own emitter sends it too); when it cannot (EventBridge refuses it, or is down), the
    retry goes on without it, and the retry's own transition, when the job ends again, is
    announced instead (reopen_failed drops the owed event)."""
    if job.finished_at is None:
        finish_job(job.job_id)  # stamps and announces, unless another caller just did
        job = caller_job(job.tenant, job.job_id)
    if job.event_pending:
        try:
            emit_job_finished(job)
        except Exception:
            logger.warning(
                "job retried with its failure unannounced; its next end is announced",
                extra={"job_id": job.job_id, "event_id": job.event_id},
                exc_info=True,
            )
            return job
        job = caller_job(job.tenant, job.job_id)
    return job
