"""Measure one image and file its result exactly once; decide when trouble is worth a retry."""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from urllib.parse import urlsplit

from aws_lambda_powertools.metrics import MetricUnit

from retail_pulse.data.jobs import mark_finished, record_outcome
from retail_pulse.data.queue import delay_message
from retail_pulse.domain import ImageFailure, ImageSuccess
from retail_pulse.imaging.download import fetch
from retail_pulse.imaging.errors import ImageError, TransientImageError
from retail_pulse.imaging.measure import measure_image
from retail_pulse.jobs.messages import ImageMessage
from retail_pulse.observability import (
    DOWNLOAD_BYTES,
    DOWNLOAD_TIME,
    DUPLICATE_DELIVERIES,
    IMAGE_RETRIES,
    IMAGES_SUCCEEDED,
    JOB_DURATION,
    JOBS_COMPLETED,
    JOBS_FAILED,
    MEASURE_TIME,
    QUEUE_AGE,
    count,
    count_failures,
    logger,
    tracer,
)
from retail_pulse.settings import Settings, get_settings

_PREFIX = {
    "download": "image download failed",
    "refused": "image download refused",
    "not_image": "image unreadable",
    "too_large": "image rejected",
    "internal": "image failed",
}


class RetryLater(Exception):
    """Transient trouble with attempts left: the message comes back after `delay_s`."""

    def __init__(self, cause: ImageError, delay_s: int) -> None:
        super().__init__(f"{cause} (retrying in {delay_s} s)")
        self.cause = cause
        self.delay_s = delay_s


def retry_delay(attempt: int, retry_after_s: float | None, settings: Settings) -> int:
    """Exponential backoff with full jitter; a server's Retry-After wins, up to the cap."""
    ceiling = min(settings.retry_max_delay_s, settings.retry_base_delay_s * 2 ** (attempt - 1))
    delay = random.uniform(ceiling / 2, ceiling)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, settings.retry_max_delay_s))
    return max(1, round(delay))


def describe_failure(error: ImageError, url: str, note: str = "") -> str:
    """The error a client reads in the job status: the cause, a note such as "(gave up after
    4 attempts)", and the URL last, unless the cause names it elsewhere. The client's own URL
    is kept whole here (it is theirs); the logs redact it (observability.redact_urls)."""
    text = str(error)
    if error.reason == "refused":
        text = text.removeprefix("refused: ")  # the prefix already says it
    suffix = f" {note}" if note else ""
    for_url = f" for {url}"
    if text.endswith(for_url):
        text = f"{text.removesuffix(for_url)}{suffix}{for_url}"
    elif url in text:
        text = f"{text}{suffix}"
    else:
        text = f"{text}{suffix}{for_url}"
    return f"{_PREFIX.get(error.reason, 'image failed')}: {text}"


def process_image_message(
    body: str,
    receive_count: int,
    receipt_handle: str,
    sent_at: datetime | None = None,
    *,
    finish: bool = True,
) -> None:
    """Process one queue message. Raises to have SQS deliver it again (a batch item failure);
    a transient failure with attempts left first pushes the redelivery out by a backoff.

    `finish=False` leaves the job's end to `finish_jobs`, called once per batch.
    """
    # Records of a batch run on threads of one process and a thread serves many records:
    # keys are per thread, and cleared first so an unreadable body never logs with the
    # previous record's image.
    logger.thread_safe_clear_keys()
    message = ImageMessage.model_validate_json(body)
    if sent_at is not None:
        age = (datetime.now(UTC) - sent_at).total_seconds()
        count(QUEUE_AGE, max(0.0, age), MetricUnit.Seconds)
    settings = get_settings()
    logger.thread_safe_append_keys(
        job_id=message.job_id, image=f"{message.job_id}/{message.image_index}"
    )
    try:
        outcome = measure_url(message, receive_count, settings)
    except RetryLater as retry:
        count(IMAGE_RETRIES)
        logger.info("image retry scheduled", extra={"cause": str(retry.cause)})
        delay_message(receipt_handle, retry.delay_s)
        raise
    recorded = record_outcome(message.job_id, message.image_index, outcome, receive_count)
    if not recorded:
        logger.info("duplicate delivery ignored")
        count(DUPLICATE_DELIVERIES)
    elif isinstance(outcome, ImageSuccess):
        count(IMAGES_SUCCEEDED)
    # Also after a duplicate: the first delivery may have died between its transaction and
    # stamping the job finished.
    if finish:
        finish_job(message.job_id)


def measure_url(
    message: ImageMessage, attempt: int, settings: Settings
) -> ImageSuccess | ImageFailure:
    try:
        started = time.perf_counter()
        with tracer.provider.in_subsegment("download") as subsegment:
            subsegment.put_annotation("job_id", message.job_id)
            image = fetch(message.url, settings)
        measured = time.perf_counter()
        with tracer.provider.in_subsegment("measure"):
            size = measure_image(image.data, settings, content_type=image.content_type)
        count(DOWNLOAD_TIME, (measured - started) * 1000, MetricUnit.Milliseconds)
        count(MEASURE_TIME, (time.perf_counter() - measured) * 1000, MetricUnit.Milliseconds)
        count(DOWNLOAD_BYTES, len(image.data), MetricUnit.Bytes)
    except TransientImageError as error:
        if attempt < settings.max_attempts:
            raise RetryLater(error, retry_delay(attempt, error.retry_after_s, settings)) from error
        note = f"(gave up after {attempt} attempts)"
        failure = ImageFailure(describe_failure(error, message.url, note))
        _log_failure("retries_exhausted", failure.error, message.url)
        return failure
    except ImageError as error:
        failure = ImageFailure(describe_failure(error, message.url))
        _log_failure(error.reason, failure.error, message.url)
        return failure
    except Exception as error:
        # A bug of ours, met on this image's bytes or URL: it would fail the same way on
        # every delivery, so it is this image's permanent failure, not a record failure for
        # SQS to redeliver six times into the dead-letter queue. The traceback is logged once.
        logger.exception("unexpected error while fetching or measuring an image")
        internal = ImageError(
            f"unexpected error ({type(error).__name__}) while downloading or measuring; "
            "it has been logged for the Retail Pulse team",
            reason="internal",
        )
        failure = ImageFailure(describe_failure(internal, message.url))
        _log_failure("internal", failure.error, message.url)
        return failure
    # Stands in for GPU inference: the pipeline must treat each image as slow.
    time.sleep(random.uniform(settings.gpu_sleep_min_s, settings.gpu_sleep_max_s))
    return ImageSuccess(
        perimeter=size.perimeter,
        width=size.width,
        height=size.height,
        store_id=message.store_id,
        area=message.area,
    )


def image_host(url: str) -> str:
    """host[:port] of an image URL, never its userinfo: the key "top failing image hosts"
    groups by, and a credential must not reach the logs."""
    return urlsplit(url).netloc.rpartition("@")[2].lower()


def _log_failure(reason: str, error: str, url: str) -> None:
    logger.info("image failed", extra={"reason": reason, "error": error, "host": image_host(url)})
    count_failures(reason)


def finish_jobs(bodies: Iterable[str]) -> None:
    """Check each job of a batch once for its end, after all its records are filed: one
    consistent read per job and batch instead of one per image (a batch is usually ten
    images of one job). If the invocation dies first, the batch comes back and its
    duplicates get here again. An error here fails the invocation, so the whole batch is
    redelivered and the check runs again (its records are filed already: duplicates)."""
    for job_id in dict.fromkeys(ImageMessage.model_validate_json(b).job_id for b in bodies):
        finish_job(job_id)


def finish_job(job_id: str) -> None:
    """Log a job's end once, from whichever invocation filed its last image."""
    job = mark_finished(job_id)
    if job is None:
        return
    duration = (datetime.now(UTC) - job.created_at).total_seconds()
    outcome = "failed" if job.failed else "completed"
    logger.info(
        "job finished",
        extra={
            "job_id": job_id,
            "outcome": outcome,
            "duration_s": round(duration, 3),
            "succeeded": job.succeeded,
            "failed": job.failed,
        },
    )
    count(JOB_DURATION, duration, MetricUnit.Seconds)
    count(JOBS_FAILED if job.failed else JOBS_COMPLETED)
