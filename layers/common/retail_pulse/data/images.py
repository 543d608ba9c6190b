"""The reconciler's reads and writes of image records: a stuck job's pending images, and the
records a submit that died part-way never wrote.

Kept apart from data/jobs.py, which serves the hot path; everything here runs a few times
an hour, on the few jobs that went wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from pynamodb.transactions import TransactWrite

from retail_pulse.data.jobs import visit_key
from retail_pulse.data.listing_keys import expiry
from retail_pulse.data.models import FAILED, PENDING, ImageRecord, JobRecord, connection
from retail_pulse.data.transactions import ConditionFailed, transact_write
from retail_pulse.domain import Image


def pending_images(job_id: str) -> Iterator[Image]:
    """The job's images still waiting for a result (one Query, filtered on state)."""
    for record in ImageRecord.query(job_id, filter_condition=ImageRecord.state == PENDING):
        yield Image(
            job_id=record.job_id,
            image_index=int(record.image_index),
            store_id=record.store_id,
            area=record.area,
            url=record.url,
            visit_time=record.visit_time,
        )


def recorded_indexes(job_id: str) -> set[int]:
    """The image indexes of the job that have a record at all."""
    return {
        int(record.image_index)
        for record in ImageRecord.query(job_id, attributes_to_get=["job_id", "image_index"])
    }


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
        visit_key=visit_key("unrecorded", job_id, image_index),
        state=FAILED,
        error=error,
        attempts=0,
        finished_at=now,
        failed_job_id=job_id,
        expires_at=expiry(),  # kept as long as the job's other images
    )
    job = JobRecord(job_id=job_id)

    def build(transaction: TransactWrite) -> None:
        transaction.save(image, condition=ImageRecord.image_index.does_not_exist())
        transaction.update(
            job,
            actions=[JobRecord.failed.add(1), JobRecord.progressed_at.set(now)],
            condition=JobRecord.job_id.exists(),
        )

    try:
        transact_write(connection(), build)
    except ConditionFailed as failed:
        if 0 in failed.failed:
            return False
        raise
    return True
