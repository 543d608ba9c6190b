"""The only code that reads and writes jobs and their image records in DynamoDB."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from pynamodb.exceptions import TransactWriteError, UpdateError
from pynamodb.transactions import TransactWrite

from retail_pulse.data.models import FAILED, PENDING, SUCCEEDED, ImageRecord, JobRecord

# BatchWriteItem takes 25 items; a thread per slice keeps a 10,000-image submit to a few
# seconds (each thread's batch_write retries unprocessed items with backoff).
_WRITE_SLICE = 500
_WRITE_THREADS = 8
_TRANSACTION_ATTEMPTS = 8


def _write_images(images: Sequence[ImageRecord]) -> None:
    with ImageRecord.batch_write() as batch:
        for image in images:
            batch.save(image)


def create_job(job: JobRecord, images: Sequence[ImageRecord]) -> None:
    """Write the job, then its images. The job first: a status query must never miss a job
    whose images exist."""
    job.save(condition=JobRecord.job_id.does_not_exist())
    slices = [images[i : i + _WRITE_SLICE] for i in range(0, len(images), _WRITE_SLICE)]
    if len(slices) <= 1:
        for part in slices:
            _write_images(part)
        return
    with ThreadPoolExecutor(max_workers=min(_WRITE_THREADS, len(slices))) as pool:
        list(pool.map(_write_images, slices))


def get_job(job_id: str) -> JobRecord | None:
    try:
        return JobRecord.get(job_id, consistent_read=True)
    except JobRecord.DoesNotExist:
        return None


@dataclass(frozen=True)
class ImageSuccess:
    perimeter: int
    width: int
    height: int
    store_id: str
    area: str | None


@dataclass(frozen=True)
class ImageFailure:
    error: str


def connect() -> None:
    """Build the DynamoDB client now, in the init phase: left to the first batch, each of
    its ten threads found no client yet and built its own (about 0.5 s of CPU apiece)."""
    _ = JobRecord._get_connection().connection.client


def _transaction() -> TransactWrite:
    """A transaction on the models' own cached connection: a new Connection per call built a
    new botocore client each time (loading DynamoDB's service model from JSON), which was
    most of the process function's CPU per image (see docs/capacity.md)."""
    return TransactWrite(connection=JobRecord._get_connection().connection)


def record_outcome(
    job_id: str, image_index: int, outcome: ImageSuccess | ImageFailure, attempts: int
) -> bool:
    """Move one image out of `pending` and count it on its job, in one transaction.

    Returns False when the image had already left `pending` (a duplicate or late delivery):
    nothing changes then, so a job's counters always equal its image records.
    """
    image = ImageRecord(job_id=job_id, image_index=image_index)
    job = JobRecord(job_id=job_id)
    now = datetime.now(UTC)
    common = [ImageRecord.attempts.set(attempts), ImageRecord.finished_at.set(now)]
    if isinstance(outcome, ImageSuccess):
        image_actions = [
            ImageRecord.state.set(SUCCEEDED),
            ImageRecord.perimeter.set(outcome.perimeter),
            ImageRecord.width.set(outcome.width),
            ImageRecord.height.set(outcome.height),
            ImageRecord.result_store_id.set(outcome.store_id),
            *common,
        ]
        if outcome.area:
            image_actions.append(ImageRecord.result_area.set(outcome.area))
        job_actions = [JobRecord.succeeded.add(1), JobRecord.progressed_at.set(now)]
    else:
        image_actions = [
            ImageRecord.state.set(FAILED),
            ImageRecord.error.set(outcome.error),
            ImageRecord.failed_job_id.set(job_id),
            *common,
        ]
        job_actions = [JobRecord.failed.add(1), JobRecord.progressed_at.set(now)]
    for attempt in range(_TRANSACTION_ATTEMPTS):
        try:
            with _transaction() as transaction:
                transaction.update(
                    image, actions=image_actions, condition=ImageRecord.state == PENDING
                )
                transaction.update(job, actions=job_actions, condition=JobRecord.job_id.exists())
            return True
        except TransactWriteError as error:
            codes = [r.code if r is not None else None for r in error.cancellation_reasons or []]
            if codes and codes[0] == "ConditionalCheckFailed":
                return False
            # Images of one job finishing together contend for the job item; DynamoDB
            # cancels one side with TransactionConflict, which is safe to try again.
            retryable = "TransactionConflict" in codes or error.cause_response_code in (
                "TransactionConflictException",
                "ThrottlingException",
                "ProvisionedThroughputExceededException",
                "InternalServerError",
            )
            if not retryable or attempt == _TRANSACTION_ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0, min(1.0, 0.02 * 2**attempt)))
    return False  # not reached: the loop returns or raises


def mark_finished(job_id: str) -> JobRecord | None:
    """Stamp `finished_at` on a job whose images are all done, exactly once.

    Returns the job only to the one caller that stamped it, so the job's terminal log line
    and duration metric are emitted once, whichever invocation finished it.
    """
    job = get_job(job_id)
    if job is None or not job.done or job.finished_at is not None:
        return None
    try:
        job.update(
            # Leaving OngoingJobs: the reconciler never looks at a finished job again.
            actions=[
                JobRecord.finished_at.set(datetime.now(UTC)),
                JobRecord.ongoing_shard.remove(),
            ],
            condition=JobRecord.finished_at.does_not_exist(),
        )
    except UpdateError as error:
        if error.cause_response_code == "ConditionalCheckFailedException":
            return None
        raise
    return job


def failed_images(job_id: str) -> Iterator[ImageRecord]:
    """A failed job's failures only, through the sparse FailedImages index."""
    return ImageRecord.failed_images.query(job_id)
