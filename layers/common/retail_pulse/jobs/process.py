"""Measure the images of an SQS batch and file each result exactly once; decide when
trouble is worth a retry.

A batch's images run at once on a thread pool, bounded by the bytes of image bodies held at
once (ByteBudget, IMAGE_BYTES_IN_FLIGHT) as well as by threads: a body is held from its
download's start to the end of its header's measurement, never through the GPU stand-in's
pause. With FILING=batch the results of one batch that belong to one job are then filed
together: one conditional write per image and one update of the job's counters by their
totals (data/jobs.py file_outcomes), each duplicate delivery told apart and counted once.
With FILING=per_image each image is filed in its own transaction on its own thread as soon
as it is measured (the earlier design).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from aws_lambda_powertools.metrics import MetricUnit

from retail_pulse.data.jobs import Filing, file_outcomes, get_job, image_writers, record_outcome
from retail_pulse.data.queue import delay_message
from retail_pulse.domain import ImageCancelled, ImageFailure, ImageResult, ImageSuccess
from retail_pulse.imaging.download import fetch
from retail_pulse.imaging.errors import ImageError, TransientImageError
from retail_pulse.imaging.measure import measure_image
from retail_pulse.jobs.finish import finish_job
from retail_pulse.jobs.messages import ImageMessage
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


class NotStarted(Exception):
    """The image could not start before the invocation would run out of time (the bytes
    budget was held by slower downloads): its message goes back to the queue untouched."""


class ByteBudget:
    """Bytes of image bodies an invocation may hold at once.

    A download reserves the byte cap (MAX_IMAGE_BYTES) before it starts, shrinks the
    reservation to the body's Content-Length once the headers tell it, and gives it back
    when its header has been measured. A reservation larger than the whole budget is
    clipped to it, so one image can always run alone. `peak` is the most ever reserved.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.held = 0
        self.peak = 0
        self._changed = threading.Condition()

    def acquire(self, amount: int, timeout_s: float | None = None) -> int | None:
        """Wait until `amount` (at most the capacity) fits; the amount held, or None if it
        did not fit within `timeout_s`."""
        amount = max(0, min(amount, self.capacity))
        with self._changed:
            if not self._changed.wait_for(
                lambda: self.held + amount <= self.capacity, timeout=timeout_s
            ):
                return None
            self.held += amount
            self.peak = max(self.peak, self.held)
            return amount

    def release(self, amount: int) -> None:
        with self._changed:
            self.held -= amount
            self._changed.notify_all()

    @contextmanager
    def reserve(self, amount: int, timeout_s: float | None = None) -> Iterator[Reservation]:
        """Hold `amount` bytes for the block; raises NotStarted if they never fit in time."""
        held = self.acquire(amount, timeout_s)
        if held is None:
            raise NotStarted("the batch's other images held the memory until too late")
        reservation = Reservation(self, held)
        try:
            yield reservation
        finally:
            self.release(reservation.held)


class Reservation:
    """Bytes held for one download; `shrink` gives back what the body will not need."""

    def __init__(self, budget: ByteBudget, held: int) -> None:
        self.budget = budget
        self.held = held

    def shrink(self, size: int) -> None:
        if 0 <= size < self.held:
            self.budget.release(self.held - size)
            self.held = size


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
    """A record whose image was measured (or failed for good), its result not yet filed."""

    record: BatchRecord
    message: ImageMessage
    outcome: ImageResult


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
    """Process one queue message and file its result on its own (FILING=per_image, and
    callers outside a batch). Raises to have SQS deliver it again (a batch item failure);
    a transient failure with attempts left first pushes the redelivery out by a backoff.

    `finish=False` leaves the job's end to the caller, checked once per batch.
    """
    record = BatchRecord("", body, receive_count, receipt_handle, sent_at)
    measured = _measure_record(
        record, budget=None, start_by=None, cancelled_jobs=_cancelled_jobs([record])
    )
    _file_one(measured)
    # Also after a duplicate: the first delivery may have died between its transaction and
    # stamping the job finished.
    if finish:
        finish_job(measured.message.job_id)


def _cancelled_jobs(records: Sequence[BatchRecord]) -> frozenset[str]:
    """Which jobs of these records were cancelled: one job read per batch and job, before
    any image is fetched. Eventually consistent (half a read unit): a cancel a moment old
    may be missed, as one arriving during the downloads is; those images count as they
    end. A record that does not parse is left to fail on its own."""
    job_ids: set[str] = set()
    for record in records:
        try:
            job_ids.add(ImageMessage.model_validate_json(record.body).job_id)
        except ValueError:
            continue
    cancelled = set()
    for job_id in job_ids:
        job = get_job(job_id, consistent=False)
        if job is not None and job.cancelled_at is not None:
            cancelled.add(job_id)
    return frozenset(cancelled)


def _measure_record(
    record: BatchRecord,
    budget: ByteBudget | None,
    start_by: float | None,
    cancelled_jobs: frozenset[str] = frozenset(),
) -> _Measured:
    """Parse and measure one record's image (not for a cancelled job: that image is filed
    `cancelled`, never downloaded). Raises RetryLater (its redelivery already pushed out by
    a backoff), NotStarted (already made visible again) or what went wrong."""
    # Records of a batch run on threads of one process and a thread serves many records:
    # keys are per thread, and cleared first so an unreadable body never logs with the
    # previous record's image.
    logger.thread_safe_clear_keys()
    message = ImageMessage.model_validate_json(record.body)
    if record.sent_at is not None:
        age = (datetime.now(UTC) - record.sent_at).total_seconds()
        count(QUEUE_AGE, max(0.0, age), MetricUnit.Seconds)
    settings = get_settings()
    logger.thread_safe_append_keys(
        job_id=message.job_id, image=f"{message.job_id}/{message.image_index}"
    )
    if message.job_id in cancelled_jobs:
        return _Measured(record, message, ImageCancelled())
    try:
        outcome = measure_url(message, record.receive_count, settings, budget, start_by)
    except RetryLater as retry:
        count(IMAGE_RETRIES)
        logger.info("image retry scheduled", extra={"cause": str(retry.cause)})
        delay_message(record.receipt_handle, retry.delay_s, express=message.express)
        raise
    except NotStarted:
        logger.warning("image not started: the invocation would run out of time")
        # Visible again at once, for the next invocation, not after the visibility timeout.
        delay_message(record.receipt_handle, 0, express=message.express)
        raise
    return _Measured(record, message, outcome)


def _file_one(measured: _Measured) -> bool:
    """File one image's result in its own transaction; False for a duplicate delivery."""
    message, outcome = measured.message, measured.outcome
    recorded = record_outcome(message.image(), outcome, measured.record.receive_count)
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
    start_by: float | None = None,
) -> ImageSuccess | ImageFailure:
    """Download and measure one image, then pause for the GPU stand-in. With a `budget`,
    the image's bytes are reserved in it first, waiting at most until `start_by`
    (time.monotonic()); NotStarted if they never fit by then."""
    try:
        with _image_memory(budget, settings, start_by) as reservation:
            started = time.perf_counter()
            with tracer.provider.in_subsegment("download") as subsegment:
                subsegment.put_annotation("job_id", message.job_id)
                image = fetch(message.url, settings, size_known=reservation)
            measured = time.perf_counter()
            with tracer.provider.in_subsegment("measure"):
                size = measure_image(image.data, settings, content_type=image.content_type)
            body_bytes = len(image.data)
            # The body goes with its reservation: nothing may keep it through the pause.
            del image
        count(DOWNLOAD_TIME, (measured - started) * 1000, MetricUnit.Milliseconds)
        count(MEASURE_TIME, (time.perf_counter() - measured) * 1000, MetricUnit.Milliseconds)
        count(DOWNLOAD_BYTES, body_bytes, MetricUnit.Bytes)
    except NotStarted:
        raise  # not the image's failure: it was never tried
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


@contextmanager
def _image_memory(
    budget: ByteBudget | None, settings: Settings, start_by: float | None
) -> Iterator[Callable[[int], None] | None]:
    """The image's bytes held in `budget` (the byte cap, until the size is known) for the
    block; yields what to tell the size to, or None without a budget."""
    if budget is None:
        yield None
        return
    timeout_s = None if start_by is None else max(0.0, start_by - time.monotonic())
    with budget.reserve(settings.max_image_bytes, timeout_s) as reservation:
        yield reservation.shrink


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
) -> list[str]:
    """Measure a batch's images at once on `pool`, file their results (FILING), and check
    each of its jobs once for its end. Returns the message ids to report as batch item
    failures: SQS delivers those again, and deletes the rest.

    A record fails when its message is unreadable, its image has transient trouble with
    attempts left (RetryLater), it could not start in time, or its result could not be
    filed; never a record whose result is filed. An error checking a job's end fails that
    job's records: their redelivery finds them filed (duplicates) and checks again.
    """
    settings = get_settings()
    per_image = settings.filing == "per_image"
    start_by = None
    if time_left_s is not None:
        # An image started later could run into the function's timeout, and an invocation
        # that times out has its whole batch delivered again, filed images included.
        margin_s = settings.image_deadline_s + settings.gpu_sleep_max_s + _FILING_RESERVE_S
        start_by = time.monotonic() + time_left_s() - margin_s
    cancelled = _cancelled_jobs(records)
    futures = [
        pool.submit(_run_record, record, budget, start_by, per_image, cancelled)
        for record in records
    ]
    failed: set[str] = set()
    measured: list[_Measured] = []
    for record, future in zip(records, futures, strict=True):
        try:
            result = future.result()
        except Exception:
            failed.add(record.message_id)  # logged on its thread, with its image
            continue
        measured.append(result)
    if not per_image:
        failed |= _file_by_job(measured, image_writers())
    filed = [m for m in measured if m.record.message_id not in failed]
    failed |= _finish_jobs(filed)
    return [record.message_id for record in records if record.message_id in failed]


# An invocation keeps this long, after its last image's deadline and pause, to file results.
_FILING_RESERVE_S = 5.0


def _run_record(
    record: BatchRecord,
    budget: ByteBudget,
    start_by: float | None,
    file_now: bool,
    cancelled_jobs: frozenset[str],
) -> _Measured:
    """One record on a worker thread, whose log keys name its image: so does the line of a
    failure, which the thread running the batch could not label."""
    try:
        measured = _measure_record(record, budget, start_by, cancelled_jobs)
        if file_now:
            _file_one(measured)
        return measured
    except (RetryLater, NotStarted):
        raise  # already logged, and its redelivery is scheduled
    except Exception:
        logger.exception(
            "image message failed; SQS will deliver it again",
            extra={"message_id": record.message_id, "receive_count": record.receive_count},
        )
        raise


def _file_by_job(measured: Sequence[_Measured], writers: Executor) -> set[str]:
    """File each job's results of the batch together; the message ids that failed."""
    by_job: dict[str, list[_Measured]] = {}
    seen: set[tuple[str, int]] = set()
    repeats: list[_Measured] = []
    for item in measured:
        key = (item.message.job_id, item.message.image_index)
        # SQS may deliver one message twice in one batch: the second copy is filed on its
        # own afterwards (a duplicate, then).
        if key in seen:
            repeats.append(item)
            continue
        seen.add(key)
        by_job.setdefault(item.message.job_id, []).append(item)
    failed: set[str] = set()
    for job_id, images in by_job.items():
        failed |= _file_job(job_id, images, writers)
    failed |= _file_each(repeats)
    return failed


def _file_job(job_id: str, items: Sequence[_Measured], writers: Executor) -> set[str]:
    filings = [Filing(m.message.image(), m.outcome, m.record.receive_count) for m in items]
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
    """Image by image, as FILING=per_image does; the message ids that could not be filed."""
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


def _finish_jobs(filed: Sequence[_Measured]) -> set[str]:
    """Check each job of a batch once for its end, after all its records are filed: one
    consistent read per job and batch instead of one per image. If the invocation dies
    first, the batch comes back and its duplicates get here again; if the check fails, the
    job's records are reported failed and come back for it."""
    failed: set[str] = set()
    for job_id in dict.fromkeys(m.message.job_id for m in filed):
        try:
            finish_job(job_id)
        except Exception:
            logger.exception(
                "job end check failed; its records will be delivered again",
                extra={"job_id": job_id},
            )
            failed |= {m.record.message_id for m in filed if m.message.job_id == job_id}
    return failed
