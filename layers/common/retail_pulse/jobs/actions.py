"""What a client may do to its own job besides reading it: cancel it while it runs, and
re-run the images of a failed job. Another client's job is an unknown job (UnknownJob)."""

from __future__ import annotations

from dataclasses import replace

from retail_pulse.data import STORAGE_ERRORS
from retail_pulse.data.images import JobChanged, failed_images, reopen_failed
from retail_pulse.data.jobs import JobBusy, cancel
from retail_pulse.data.queue import enqueue_images
from retail_pulse.data.stores import find_stores
from retail_pulse.domain import Image, Job, JobStatus
from retail_pulse.errors import StorageInterrupted, WrongJobState
from retail_pulse.jobs.finish import announce, emit_job_finished, finish_job
from retail_pulse.jobs.messages import ImageMessage, is_express
from retail_pulse.jobs.status import caller_job, status_of
from retail_pulse.jobs.submit import UNKNOWN_STORE
from retail_pulse.observability import logger


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
    failed (they would fail the same way); a job with nothing to re-run is refused."""
    job = caller_job(tenant, job_id)
    if job.state != "failed":
        raise WrongJobState(f"the job is {job.state}; only a failed job can be retried")
    job = _announced(job)
    failed = list(failed_images(job.job_id))
    stores = find_stores({image.store_id for image in failed})
    retried = [
        replace(image, area=stores[image.store_id].area_code)
        for image in failed
        if image.store_id in stores
    ]
    if not retried:
        raise WrongJobState(
            "none of the job's failed images can be re-run: their stores are still not in "
            "the store master; import them first (retail-pulse stores import)"
        )
    try:
        reopen_failed(job, retried)
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
    try:
        _enqueue(job.tenant, retried)
    except STORAGE_ERRORS:
        # Reopened: its images are pending, and the reconciler enqueues a job's pending
        # images once it stops moving. The retry stands.
        logger.exception(
            "retried images not enqueued; the reconciler will", extra={"job_id": job_id}
        )
    logger.info(
        "job retried",
        extra={
            "job_id": job_id,
            "images": len(retried),
            "still_unknown_store": sum(image.error == UNKNOWN_STORE for image in failed)
            - sum(image.error == UNKNOWN_STORE for image in retried),
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


def _enqueue(tenant: str, images: list[Image]) -> None:
    express = is_express(len(images))
    enqueue_images([ImageMessage.body(image, tenant, express) for image in images], express)
