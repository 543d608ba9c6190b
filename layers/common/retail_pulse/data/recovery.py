"""The reconciler's reads and writes: unfinished old jobs, their pending images, and the
image records a submit that died part-way never wrote.

Kept apart from data/jobs.py, which serves the hot path; everything here runs a few times
an hour, on the few jobs that went wrong.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from pynamodb.exceptions import TransactWriteError

from retail_pulse.data.jobs import _transaction
from retail_pulse.data.models import (
    FAILED,
    ONGOING_SHARDS,
    PENDING,
    ImageRecord,
    JobRecord,
    OngoingJobsIndex,
)

_TRANSACTION_ATTEMPTS = 8


def unfinished_jobs(created_before: datetime) -> Iterator[str]:
    """Ids of jobs submitted before `created_before` that have not finished, oldest first
    within each shard: a Query per shard of the sparse OngoingJobs index, never a scan."""
    for shard in range(ONGOING_SHARDS):
        for job in JobRecord.ongoing_jobs.query(
            str(shard), OngoingJobsIndex.created_at < created_before
        ):
            yield job.job_id


def pending_images(job_id: str) -> Iterator[ImageRecord]:
    """The job's images still waiting for a result (one Query, filtered on state)."""
    return ImageRecord.query(job_id, filter_condition=ImageRecord.state == PENDING)


def recorded_indexes(job_id: str) -> set[int]:
    """The image indexes of the job that have a record at all."""
    return {
        image.image_index
        for image in ImageRecord.query(job_id, attributes_to_get=["job_id", "image_index"])
    }


def note_requeued(job_id: str) -> None:
    """Remember when the job's images were last enqueued again, so the next run waits a
    whole soft deadline before doing it again."""
    JobRecord(job_id=job_id).update(
        actions=[JobRecord.requeued_at.set(datetime.now(UTC))],
        condition=JobRecord.job_id.exists(),
    )


def record_unwritten_image(job_id: str, image_index: int, error: str) -> bool:
    """File an image that submit counted in the job's total but died before writing, as
    failed, and count it, in one transaction; False if it exists by now."""
    now = datetime.now(UTC)
    image = ImageRecord(
        job_id=job_id,
        image_index=image_index,
        # Submit died before writing what the client sent for this image: nothing is known.
        store_id="unknown",
        url="",
        visit_time="",
        visit_key=f"unrecorded#{job_id}#{image_index:05d}",
        state=FAILED,
        error=error,
        attempts=0,
        finished_at=now,
        failed_job_id=job_id,
    )
    job = JobRecord(job_id=job_id)
    for attempt in range(_TRANSACTION_ATTEMPTS):
        try:
            with _transaction() as transaction:
                transaction.save(image, condition=ImageRecord.image_index.does_not_exist())
                transaction.update(
                    job,
                    actions=[JobRecord.failed.add(1), JobRecord.progressed_at.set(now)],
                    condition=JobRecord.job_id.exists(),
                )
            return True
        except TransactWriteError as error:
            codes = [r.code if r is not None else None for r in error.cancellation_reasons or []]
            if codes and codes[0] == "ConditionalCheckFailed":
                return False
            if "TransactionConflict" not in codes or attempt == _TRANSACTION_ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0, min(1.0, 0.02 * 2**attempt)))
    return False  # not reached: the loop returns or raises
