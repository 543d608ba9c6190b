"""A failed job's retry, page by page, whatever its number of failures.

The retry route reopens the first page of the job's records (JOB_PAGE_IMAGES of them
looked at, the failed ones reopened and enqueued) and answers at once. A job with more
records has the retry's cursor (`retry_next`) on it and an IngestQueue message of kind
"retry": the ingest function goes on from the cursor, page after page while its time
allows, then sends the message again. Each transaction of a page moves the cursor,
conditional on where it stood, so a page is reopened once whichever invocation runs it
(a message delivered twice, an invocation that died between pages and whose message came
back); the job is not done until the last page has moved it off. If a message is lost,
the reconciler sends it again once the cursor has stood still for RECONCILE_AFTER_S.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from retail_pulse.data import STORAGE_ERRORS
from retail_pulse.data.images import JobChanged, end_retry, failed_page, reopen_failed
from retail_pulse.data.ingest import enqueue_ingest
from retail_pulse.data.jobs import get_job
from retail_pulse.data.queue import enqueue_images
from retail_pulse.data.stores import find_stores
from retail_pulse.domain import Image, Job
from retail_pulse.jobs.finish import finish_job
from retail_pulse.jobs.messages import ImageMessage, is_express
from retail_pulse.observability import logger
from retail_pulse.settings import get_settings

RETRY = "retry"


def runnable(failed: list[Image]) -> list[Image]:
    """The failed images that can run again: those whose store is in the store master now
    (with its area as it is now). Images of stores still missing would fail the same way."""
    stores = find_stores({image.store_id for image in failed})
    return [
        replace(image, area=stores[image.store_id].area_code)
        for image in failed
        if image.store_id in stores
    ]


def enqueue_retried(tenant: str, images: list[Image], express: bool) -> None:
    """The reopened images' messages. When they cannot be sent, the images stay pending,
    and the reconciler enqueues a job's pending images once it stops moving."""
    try:
        enqueue_images([ImageMessage.body(image, tenant, express) for image in images], express)
    except STORAGE_ERRORS:
        logger.exception(
            "retried images not enqueued; the reconciler will",
            extra={"job_id": images[0].job_id if images else None, "images": len(images)},
        )


def hand_on(job: Job) -> None:
    """Send the retry's message: the ingest function goes on from the job's cursor. When it
    cannot be sent, the reconciler sends it once the cursor has stood still."""
    try:
        enqueue_ingest({"job_id": job.job_id, "tenant": job.tenant, "kind": RETRY})
    except STORAGE_ERRORS:
        logger.exception("retry not handed on; the reconciler will", extra={"job_id": job.job_id})


def continue_retry(job_id: str, tenant: str, time_left_s: Callable[[], float]) -> int:
    """Reopen and enqueue the retry's pages from the job's cursor on, while this invocation
    has more than INGEST_RESERVE_S left (then hand on); how many images it reopened. The
    job ends here if its images were all done by the time its last page was reopened."""
    settings = get_settings()
    reopened = 0
    while True:
        job = get_job(job_id)
        if job is None or job.tenant != tenant or job.retry_next is None:
            break
        if job.cancelled_at is not None:
            end_retry(job_id)  # cancelled meanwhile: what is left stays failed
            break
        if time_left_s() < settings.ingest_reserve_s:
            hand_on(job)
            return reopened
        start = job.retry_next
        page = failed_page(job_id, start, settings.job_page_images)
        retried = runnable(page.images)
        try:
            reopen_failed(job, retried, start=start, after=page.next)
        except JobChanged:
            current = get_job(job_id)
            if current is None or current.cancelled_at is None:
                logger.info("retry page reopened by another invocation", extra={"job_id": job_id})
                return reopened
            continue  # cancelled: the next turn takes the cursor off
        enqueue_retried(tenant, retried, is_express(job.total))
        reopened += len(retried)
        logger.info(
            "retry page reopened",
            extra={"job_id": job_id, "from": start, "images": len(retried), "next": page.next},
        )
    finish_job(job_id)
    return reopened
