"""The reconciler's reads and writes of image records: a stuck job's pending images (its
manifest's images with no result yet), and the images a submit that died part-way never
wrote.

Kept apart from data/jobs.py, which serves the hot path; everything here runs a few times
an hour, on the few jobs that went wrong.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import cast

from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from retail_pulse.data.jobs import transaction_chunks, visit_key
from retail_pulse.data.listing_keys import expiry, listed_as
from retail_pulse.data.manifest import submitted_images
from retail_pulse.data.models import (
    FAILED,
    PENDING,
    ImageRecord,
    JobRecord,
    connection,
    ongoing_shard,
)
from retail_pulse.data.transactions import ConditionFailed, transact_write
from retail_pulse.domain import Image, ImageState, Job


def _image(record: ImageRecord) -> Image:
    return Image(
        job_id=record.job_id,
        image_index=int(record.image_index),
        store_id=record.store_id,
        area=record.area,
        url=record.url,
        visit_time=record.visit_time,
        state=cast(ImageState, record.state),
        error=record.error,
    )


def pending_images(job_id: str) -> Iterator[Image]:
    """The job's images still waiting for a result: those of its manifest with no record,
    and those a retry put back to `pending` (as the retry left them). One Query of the
    records' keys and states, one of the manifest."""
    states = {
        int(record.image_index): record
        for record in ImageRecord.query(
            job_id,
            range_key_condition=ImageRecord.image_index >= 0,
            attributes_to_get=["job_id", "image_index", "state"],
        )
    }
    reopened = [index for index, record in states.items() if record.state == PENDING]
    reopened_images = {image.image_index: image for image in _images(job_id, reopened)}
    for image in submitted_images(job_id):
        if image.image_index not in states:
            yield image
        elif image.image_index in reopened_images:
            yield reopened_images[image.image_index]


def _images(job_id: str, indexes: Sequence[int]) -> list[Image]:
    if not indexes:
        return []
    return [
        _image(record)
        for record in ImageRecord.batch_get([(job_id, i) for i in indexes], consistent_read=True)
    ]


def failed_images(job_id: str) -> Iterator[Image]:
    """The job's failed images, whole (a retry re-enqueues them): one Query, filtered."""
    for record in ImageRecord.query(
        job_id,
        range_key_condition=ImageRecord.image_index >= 0,
        filter_condition=ImageRecord.state == FAILED,
    ):
        yield _image(record)


def reopen_failed(job: Job, images: Sequence[Image]) -> int:
    """Put failed images back to `pending` (with their store's area as it is now) and take
    them off the job's failed count, in transactions of up to 99 images and the job. The
    first also reopens the job: no longer finished, without its failure summary, `ongoing`
    in its client's list, back in OngoingJobs (so the reconciler watches it again). Returns
    how many were reopened.

    Raises JobChanged when the job is no longer the failed job it was read as (a retry or
    a finish raced this one); images that had left `failed` meanwhile are skipped.
    """
    reopened = 0
    now = datetime.now(UTC)
    for number, chunk in enumerate(transaction_chunks(images)):
        job_actions: list[Action] = [JobRecord.failed.add(-len(chunk))]
        condition = JobRecord.job_id.exists() & JobRecord.finished_at.does_not_exist()
        if number == 0:
            job_actions += [
                JobRecord.finished_at.remove(),
                JobRecord.event_id.remove(),
                # An event still owed for the failure is replaced by the retry's own.
                JobRecord.event_pending.remove(),
                JobRecord.event_attempts.remove(),
                JobRecord.event_retry_at.remove(),
                # Summed up again when the job ends again (mark_finished).
                JobRecord.failures.remove(),
                JobRecord.ongoing_shard.set(ongoing_shard(job.job_id)),
                JobRecord.progressed_at.set(now),
                JobRecord.retried_at.set(now),
                *listed_as(job.tenant, "ongoing"),
            ]
            # The failed job read, unchanged: the same transition, not cancelled.
            same_event = (
                JobRecord.event_id.does_not_exist()
                if job.event_id is None
                else JobRecord.event_id == job.event_id
            )
            condition = (
                (JobRecord.finished_at == job.finished_at)
                & same_event
                & JobRecord.cancelled_at.does_not_exist()
            )

        def build(
            transaction: TransactWrite,
            chunk: Sequence[Image] = chunk,
            job_actions: list[Action] = job_actions,
            condition: Condition = condition,
        ) -> None:
            for image in chunk:
                actions: list[Action] = [
                    ImageRecord.state.set(PENDING),
                    ImageRecord.error.remove(),
                    ImageRecord.failed_job_id.remove(),
                    ImageRecord.finished_at.remove(),
                    ImageRecord.attempts.remove(),
                    ImageRecord.filed_by.remove(),
                ]
                if image.area is not None:
                    actions.append(ImageRecord.area.set(image.area))
                transaction.update(
                    ImageRecord(job_id=job.job_id, image_index=image.image_index),
                    actions=actions,
                    condition=ImageRecord.state == FAILED,
                )
            transaction.update(
                JobRecord(job_id=job.job_id), actions=job_actions, condition=condition
            )

        try:
            transact_write(connection(), build)
        except ConditionFailed as error:
            raise JobChanged(job.job_id) from error
        reopened += len(chunk)
    return reopened


class JobChanged(Exception):
    """The job changed between its read and a write that assumed it had not."""


def recorded_indexes(job_id: str) -> set[int]:
    """The image indexes of the job that submit wrote down: in its manifest, or with a
    record."""
    recorded = {image.image_index for image in submitted_images(job_id)}
    return recorded | {
        int(record.image_index)
        for record in ImageRecord.query(
            job_id,
            range_key_condition=ImageRecord.image_index >= 0,
            attributes_to_get=["job_id", "image_index"],
        )
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
