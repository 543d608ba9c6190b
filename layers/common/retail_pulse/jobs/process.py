"""Measure the images of an SQS batch and file each result exactly once.

A batch's images run at once on a thread pool, bounded by the bytes of image bodies held at
once (ByteBudget, IMAGE_BYTES_IN_FLIGHT) as well as by threads. A download holds nothing
until its host answers: then its body's Content-Length, or what it has read so far, growing,
until its header has been measured, never through the GPU stand-in's pause. So a host that
trickles or says nothing costs a thread, not another image's memory.

The results of one job in the batch are filed together as soon as that job's images in the
batch are done, not after the batch's slowest image: one conditional write per image and one
update of the job's counters by their totals (data/jobs.py file_outcomes), each duplicate
delivery told apart and counted once.

Attempts are the service's, not SQS's (retry_policy.py): a transient failure with attempts
left is sent again as the next attempt after a backoff, and a record that could not start
in time is sent again with its attempt unchanged; the record itself is then done, and SQS
deletes it. SQS's receive count counts only crashes, timeouts and unfiled results.

Cancellation is read per job through CancelledJobs, at most about a second old, just before
each download starts: an image of a job cancelled meanwhile is filed `cancelled` instead.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

from aws_lambda_powertools.metrics import MetricUnit

from retail_pulse.data.filing import Filing, file_outcomes, image_writers
from retail_pulse.data.image_records import record_outcome
from retail_pulse.data.queue import delay_message, send_image_again
from retail_pulse.domain import ImageCancelled, ImageFailure, ImageResult, ImageSuccess
from retail_pulse.imaging.download import fetch
from retail_pulse.imaging.errors import ImageError, TransientImageError
from retail_pulse.imaging.measure import measure_image
from retail_pulse.jobs.bytes_budget import ByteBudget, body_memory
from retail_pulse.jobs.cancellation import CancelledJobs
from retail_pulse.jobs.finish import finish_job
from retail_pulse.jobs.messages import ImageMessage
from retail_pulse.jobs.retry_policy import RetryLater, attempt_of, describe_failure, retry_delay
from retail_pulse.observability import (
    DOWNLOAD_BYTES,
    DOWNLOAD_TIME,
    DUPLICATE_DELIVERIES,
    IMAGE_RETRIES,
    IMAGES_CANCELLED,
    IMAGES_SUCCEEDED,
    MEASURE_TIME,
    QUEUE_AGE,
    count,
    count_failures,
    logger,
    tracer,
)
from retail_pulse.settings import Settings, get_settings


class NotStarted(Exception):
    """The image could not start before the invocation would run out of time: it is given
    back, its attempt not counted."""


@dataclass(frozen=True)
class BatchRecord:
    """One record of an SQS batch, as the process function needs it."""

    message_id: str
    body: str
    receive_count: int
    receipt_handle: str
    sent_at: datetime | None = None


@dataclass(frozen=True)
class _Measured:
    """A record whose image was measured (or failed for good, or was cancelled), its result
    not yet filed; `attempts` are the downloads of the image that started."""

    record: BatchRecord
    message: ImageMessage
    outcome: ImageResult
    attempts: int


@dataclass(frozen=True)
class _HandedOn:
    """A record whose image goes on in a message sent again (a retry, or a give-back): the
    record itself is done, and SQS deletes it."""

    record: BatchRecord
    message: ImageMessage


def _run_record(
    record: BatchRecord,
    message: ImageMessage,
    budget: ByteBudget | None,
    start_by: float | None,
    cancelled: CancelledJobs,
) -> _Measured | _HandedOn:
    """One record, on a worker thread whose log keys name its image (so does the line of a
    failure, which the thread running the batch could not label): its image measured, or
    filed `cancelled` without a download when its job was cancelled, or handed on in a
    message sent again. Raises what went wrong otherwise; SQS then delivers it again."""
    # Records of a batch run on threads of one process and a thread serves many records:
    # keys are per thread, and cleared first so a line never carries the previous image.
    logger.thread_safe_clear_keys()
    logger.thread_safe_append_keys(
        job_id=message.job_id, image=f"{message.job_id}/{message.image_index}"
    )
    attempt = attempt_of(message, record.receive_count)
    try:
        if record.sent_at is not None:
            age = (datetime.now(UTC) - record.sent_at).total_seconds()
            count(QUEUE_AGE, max(0.0, age), MetricUnit.Seconds)
        if cancelled(message.job_id):
            measured = _Measured(record, message, ImageCancelled(), attempt - 1)
        else:
            if start_by is not None and time.monotonic() > start_by:
                raise NotStarted("the invocation would run out of time")
            outcome = measure_url(message, attempt, get_settings(), budget)
            measured = _Measured(record, message, outcome, attempt)
        return measured
    except RetryLater as retry:
        count(IMAGE_RETRIES)
        logger.info("image retry scheduled", extra={"cause": str(retry.cause), "attempt": attempt})
        return _hand_on(record, message, attempt + 1, retry.delay_s)
    except NotStarted:
        logger.warning("image not started: the invocation would run out of time")
        return _hand_on(record, message, attempt, 0)
    except Exception:
        logger.exception(
            "image message failed; SQS will deliver it again",
            extra={"message_id": record.message_id, "receive_count": record.receive_count},
        )
        raise


def _hand_on(record: BatchRecord, message: ImageMessage, attempt: int, delay_s: int) -> _HandedOn:
    """Send the image's message again as attempt `attempt`, delivered after `delay_s`; the
    record is then done. Sent before the record is deleted (Lambda deletes it after the
    invocation), so an invocation dying in between leaves a duplicate, which is filed once,
    never a lost image. If the send fails, the record is hidden for `delay_s` instead and
    reported failed, as before attempts were carried: SQS delivers it again then (counted
    by its receive count, with the attempt number it had)."""
    try:
        send_image_again(message.again(attempt), delay_s, express=message.express)
    except Exception:
        logger.exception("image message not sent again; SQS will deliver the record again")
        try:
            delay_message(record.receipt_handle, delay_s, express=message.express)
        except Exception:
            logger.exception("image message not hidden either: it comes back at its timeout")
        raise
    return _HandedOn(record, message)


def _file_one(measured: _Measured) -> bool:
    """File one image's result in its own transaction; False for a duplicate delivery."""
    message, outcome = measured.message, measured.outcome
    recorded = record_outcome(message.image(), outcome, measured.attempts)
    if not recorded:
        logger.info(
            "duplicate delivery ignored",
            extra={"job_id": message.job_id, "image": f"{message.job_id}/{message.image_index}"},
        )
        count(DUPLICATE_DELIVERIES)
    elif isinstance(outcome, ImageSuccess):
        count(IMAGES_SUCCEEDED)
    elif isinstance(outcome, ImageCancelled):
        count(IMAGES_CANCELLED)
    return recorded


def measure_url(
    message: ImageMessage,
    attempt: int,
    settings: Settings,
    budget: ByteBudget | None = None,
) -> ImageSuccess | ImageFailure:
    """Download and measure one image (attempt number `attempt`), then pause for the GPU
    stand-in. With a `budget`, the body's bytes are held in it from when the host has told
    them to the end of the measurement. Raises RetryLater for transient trouble with
    attempts left."""
    try:
        with body_memory(budget) as hold:
            started = time.perf_counter()
            with tracer.provider.in_subsegment("download") as subsegment:
                subsegment.put_annotation("job_id", message.job_id)
                image = fetch(message.url, settings, hold=hold)
            measured = time.perf_counter()
            with tracer.provider.in_subsegment("measure"):
                size = measure_image(image.data, settings, content_type=image.content_type)
            body_bytes = len(image.data)
            # The body goes with its reservation: nothing may keep it through the pause.
            del image
        count(DOWNLOAD_TIME, (measured - started) * 1000, MetricUnit.Milliseconds)
        count(MEASURE_TIME, (time.perf_counter() - measured) * 1000, MetricUnit.Milliseconds)
        count(DOWNLOAD_BYTES, body_bytes, MetricUnit.Bytes)
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
        tenant=message.tenant,
    )


def image_host(url: str) -> str:
    """host[:port] of an image URL, never its userinfo: the key "top failing image hosts"
    groups by, and a credential must not reach the logs."""
    return urlsplit(url).netloc.rpartition("@")[2].lower()


def _log_failure(reason: str, error: str, url: str) -> None:
    logger.info("image failed", extra={"reason": reason, "error": error, "host": image_host(url)})
    count_failures(reason)


def process_batch(
    records: Sequence[BatchRecord],
    pool: Executor,
    budget: ByteBudget,
    time_left_s: Callable[[], float] | None = None,
    cancelled: CancelledJobs | None = None,
) -> list[str]:
    """Measure a batch's images at once on `pool` and file each job's results together as
    soon as that job's images in the batch are done, then check that job for its end.
    Returns the message ids to report as batch item failures: SQS delivers those again, and
    deletes the rest. `cancelled` answers whether a job was cancelled: a fresh one per batch
    by default, so a cancel answered before the batch started is seen by all its images.

    A record fails when its message is unreadable, it could not be handed on (its retry or
    give-back could not be sent), or its result could not be filed; never a record whose
    result is filed. An error checking a job's end fails that job's records: their
    redelivery finds them filed (duplicates) and checks again.
    """
    settings = get_settings()
    cancelled = cancelled or CancelledJobs()
    start_by = None
    if time_left_s is not None:
        # An image started later could run into the function's timeout, and an invocation
        # that times out has its whole batch delivered again, filed images included.
        margin_s = settings.image_deadline_s + settings.gpu_sleep_max_s + _FILING_RESERVE_S
        start_by = time.monotonic() + time_left_s() - margin_s
    failed: set[str] = set()
    jobs: dict[str, _JobInBatch] = {}
    running: dict[Future[_Measured | _HandedOn], tuple[BatchRecord, str]] = {}
    for record in records:
        try:
            message = ImageMessage.model_validate_json(record.body)
        except ValueError:
            logger.exception(
                "image message unreadable; SQS will deliver it again",
                extra={"message_id": record.message_id, "receive_count": record.receive_count},
            )
            failed.add(record.message_id)
            continue
        jobs.setdefault(message.job_id, _JobInBatch()).running += 1
        future = pool.submit(_run_record, record, message, budget, start_by, cancelled)
        running[future] = (record, message.job_id)
    for future in as_completed(running):
        record, job_id = running[future]
        job = jobs[job_id]
        try:
            result = future.result()
        except Exception:
            failed.add(record.message_id)  # logged on its thread, with its image
        else:
            if isinstance(result, _Measured):
                job.measured.append(result)
        job.running -= 1
        if job.running == 0:
            # The job's last image of the batch is done: its results wait for no other's.
            failed |= _file_and_finish(job_id, job.measured)
    return [record.message_id for record in records if record.message_id in failed]


# An invocation keeps this long, after its last image's deadline and pause, to file results.
_FILING_RESERVE_S = 5.0


@dataclass
class _JobInBatch:
    """One job's records in a batch: how many still run, and those measured so far."""

    running: int = 0
    measured: list[_Measured] = field(default_factory=list)


def _file_and_finish(job_id: str, measured: Sequence[_Measured]) -> set[str]:
    """File a job's results of the batch, then check
    the job once for its end: one consistent read per job and batch instead of one per
    image. If the invocation dies first, the records come back and their duplicates get
    here again; if the check fails, the job's records are reported failed and come back
    for it. The message ids that failed."""
    failed = _file_by_job(job_id, measured, image_writers())
    filed = [m for m in measured if m.record.message_id not in failed]
    if not filed:
        return failed
    try:
        finish_job(job_id)
    except Exception:
        logger.exception(
            "job end check failed; its records will be delivered again",
            extra={"job_id": job_id},
        )
        failed |= {m.record.message_id for m in filed}
    return failed


def _file_by_job(job_id: str, measured: Sequence[_Measured], writers: Executor) -> set[str]:
    """File one job's results of the batch together; the message ids that failed."""
    first: list[_Measured] = []
    seen: set[int] = set()
    repeats: list[_Measured] = []
    for item in measured:
        # SQS may deliver one message twice in one batch: the second copy is filed on its
        # own afterwards (a duplicate, then).
        if item.message.image_index in seen:
            repeats.append(item)
            continue
        seen.add(item.message.image_index)
        first.append(item)
    failed = _file_job(job_id, first, writers) if first else set()
    return failed | _file_each(repeats)


def _file_job(job_id: str, items: Sequence[_Measured], writers: Executor) -> set[str]:
    filings = [Filing(m.message.image(), m.outcome, m.attempts) for m in items]
    try:
        filed = file_outcomes(job_id, filings, writers)
    except Exception:
        logger.exception(
            "results not filed; SQS will deliver their messages again",
            extra={"job_id": job_id, "images": len(items)},
        )
        return {m.record.message_id for m in items}
    if filed.duplicates:
        logger.info(
            "duplicate deliveries ignored",
            extra={"job_id": job_id, "duplicates": len(filed.duplicates)},
        )
        count(DUPLICATE_DELIVERIES, len(filed.duplicates))
    if filed.unsettled or not filed.closed:
        logger.warning(
            "results filing left open; the reconciler will count it",
            extra={"job_id": job_id, "unsettled": len(filed.unsettled)},
        )
    outcomes = [items[i].outcome for i in filed.filed]
    succeeded = sum(isinstance(outcome, ImageSuccess) for outcome in outcomes)
    if succeeded:
        count(IMAGES_SUCCEEDED, succeeded)
    cancelled = sum(isinstance(outcome, ImageCancelled) for outcome in outcomes)
    if cancelled:
        count(IMAGES_CANCELLED, cancelled)
    # An image not known to be filed comes again: filed by then, it is a duplicate.
    return {items[i].record.message_id for i in filed.unsettled}


def _file_each(items: Sequence[_Measured]) -> set[str]:
    """Image by image, each in its own transaction; the message ids that could not be filed."""
    failed: set[str] = set()
    for item in items:
        try:
            _file_one(item)
        except Exception:
            logger.exception(
                "result not filed; SQS will deliver its message again",
                extra={
                    "job_id": item.message.job_id,
                    "image": f"{item.message.job_id}/{item.message.image_index}",
                },
            )
            failed.add(item.record.message_id)
    return failed
