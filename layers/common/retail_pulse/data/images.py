"""The reads and writes of image records that go through a job rather than one image, a page
at a time whatever the job's size: a stuck job's pending images (its manifest's images with
no result yet) and the images a submit that died part-way never wrote (the reconciler), and
a retry's failed images back to pending (jobs/retry.py).

Kept apart from data/image_records.py and data/filing.py, which serve the hot path;
everything here runs a few times an hour, on the few jobs that went wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from retail_pulse.data.image_records import visit_key
from retail_pulse.data.manifest import submitted_images
from retail_pulse.data.models import (
    FAILED,
    PENDING,
    ImageRecord,
    JobRecord,
    connection,
    ongoing_shard,
)
from retail_pulse.data.record_keys import expiry, failed_store_key, listed_as
from retail_pulse.data.transactions import (
    ConditionFailed,
    transact_write,
    transaction_chunks,
    update_if,
)
from retail_pulse.domain import Image, ImageState, Job
from retail_pulse.settings import get_settings


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


@dataclass(frozen=True)
class PendingPage:
    """A page of a job's images: those still waiting for a result, and the indexes submit
    wrote down (in its manifest, or with a record; any other it counted but never wrote)."""

    pending: list[Image]
    known: set[int]


def pending_page(job_id: str, first: int, last: int) -> PendingPage:
    """The job's images first..last still waiting for a result: those of its manifest with
    no record, and those a retry put back to `pending` (as the retry left them). One Query
    of the records' keys and states, one of the manifest slices, both of this page only."""
    states = {
        int(record.image_index): record.state
        for record in ImageRecord.query(
            job_id,
            range_key_condition=ImageRecord.image_index.between(first, last),
            consistent_read=True,
            attributes_to_get=["job_id", "image_index", "state"],
        )
    }
    reopened = [index for index, state in states.items() if state == PENDING]
    reopened_images = {image.image_index: image for image in _images(job_id, reopened)}
    pending: list[Image] = []
    known = set(states)
    for image in submitted_images(job_id, first, last):
        known.add(image.image_index)
        if image.image_index not in states:
            pending.append(image)
        elif image.image_index in reopened_images:
            pending.append(reopened_images[image.image_index])
    return PendingPage(pending, known)


def _images(job_id: str, indexes: Sequence[int]) -> list[Image]:
    if not indexes:
        return []
    return [
        _image(record)
        for record in ImageRecord.batch_get([(job_id, i) for i in indexes], consistent_read=True)
    ]


@dataclass(frozen=True)
class FailedPage:
    """One page of a job's failed images: those among at most `limit` records from an
    image index on, and where the next page starts (None: no record is left to look at)."""

    images: list[Image]
    next: int | None


def failed_page(job_id: str, start: int, limit: int) -> FailedPage:
    """The failed images, whole (a retry re-enqueues them), among the job's records from
    image index `start`, reading at most `limit` records (one strongly consistent Query,
    filtered: its work is bounded whatever the job holds)."""
    response = connection().client.query(
        TableName=get_settings().images_table,
        KeyConditionExpression="job_id = :job AND image_index >= :start",
        FilterExpression="#state = :failed",
        ExpressionAttributeNames={"#state": "state"},
        ExpressionAttributeValues={
            ":job": {"S": job_id},
            ":start": {"N": str(start)},
            ":failed": {"S": FAILED},
        },
        ConsistentRead=True,
        Limit=limit,
    )
    images = [_image(ImageRecord.from_raw_data(item)) for item in response.get("Items", [])]
    last = response.get("LastEvaluatedKey")
    return FailedPage(images, int(last["image_index"]["N"]) + 1 if last else None)


def reopen_failed(
    job: Job, images: Sequence[Image], start: int | None = None, after: int | None = None
) -> int:
    """Put failed images back to `pending` (with their store's area as it is now) and take
    them off the job's failed count, in transactions of up to 99 images and the job.
    Returns how many were reopened.

    `start` None: the retry's first page, whose first transaction also reopens the job: no
    longer finished, without its failure summary, `ongoing` in its client's list, back in
    OngoingJobs (so the reconciler watches it again). Otherwise a later page of a retry
    whose cursor (`retry_next`) stands at `start`. `after` is where the next page starts
    (None: this is the last). While pages or transactions remain the cursor is on the job,
    moved by each transaction, conditional on where it stood: a page is reopened once,
    whichever invocation runs it, and the job is not done before the last one.

    Raises JobChanged when the job is no longer what the page was read from (a retry or a
    finish raced the first page, a cancel or another invocation a later one).
    """
    reopened = 0
    now = datetime.now(UTC)
    chunks: list[Sequence[Image]] = list(transaction_chunks(images)) or [[]]
    cursor = start
    for number, chunk in enumerate(chunks):
        last = number == len(chunks) - 1
        moved_to = after if last else chunk[-1].image_index + 1
        job_actions = _cursor_actions(moved_to, now)
        if chunk:
            job_actions.append(JobRecord.failed.add(-len(chunk)))
        if cursor is None and number == 0:
            job_actions += _reopen_actions(job, now)
            condition = _still_failed(job)
        else:
            condition = (
                (JobRecord.retry_next == cursor) & JobRecord.cancelled_at.does_not_exist()
                if cursor is not None
                else JobRecord.job_id.exists() & JobRecord.finished_at.does_not_exist()
            )
        _reopen_chunk(job.job_id, chunk, job_actions, condition)
        reopened += len(chunk)
        cursor = moved_to
    return reopened


def _cursor_actions(moved_to: int | None, now: datetime) -> list[Action]:
    if moved_to is None:
        return [JobRecord.retry_next.remove(), JobRecord.retry_moved_at.remove()]
    return [JobRecord.retry_next.set(moved_to), JobRecord.retry_moved_at.set(now)]


def _reopen_actions(job: Job, now: datetime) -> list[Action]:
    return [
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
        # A sweep of the run before (data/sweeps.py) is never resumed on this one.
        JobRecord.sweep_kind.remove(),
        JobRecord.sweep_next.remove(),
        JobRecord.sweep_done.remove(),
        *listed_as(job.tenant, "ongoing"),
    ]


def _still_failed(job: Job) -> Condition:
    """The failed job read, unchanged: the same transition, not cancelled, no retry on."""
    same_event = (
        JobRecord.event_id.does_not_exist()
        if job.event_id is None
        else JobRecord.event_id == job.event_id
    )
    return (
        (JobRecord.finished_at == job.finished_at)
        & same_event
        & JobRecord.cancelled_at.does_not_exist()
        & JobRecord.retry_next.does_not_exist()
    )


def _reopen_chunk(
    job_id: str, chunk: Sequence[Image], job_actions: list[Action], condition: Condition
) -> None:
    """One transaction: the chunk's images back to `pending`, and the job's update."""

    def build(transaction: TransactWrite) -> None:
        for image in chunk:
            actions: list[Action] = [
                ImageRecord.state.set(PENDING),
                ImageRecord.error.remove(),
                ImageRecord.failed_job_id.remove(),
                ImageRecord.failed_store_key.remove(),
                ImageRecord.finished_at.remove(),
                ImageRecord.attempts.remove(),
                ImageRecord.filed_by.remove(),
            ]
            if image.area is not None:
                actions.append(ImageRecord.area.set(image.area))
            transaction.update(
                ImageRecord(job_id=job_id, image_index=image.image_index),
                actions=actions,
                condition=ImageRecord.state == FAILED,
            )
        transaction.update(JobRecord(job_id=job_id), actions=job_actions, condition=condition)

    try:
        transact_write(connection(), build)
    except ConditionFailed as error:
        raise JobChanged(job_id) from error


def end_retry(job_id: str) -> bool:
    """Take the retry's cursor off a job that was cancelled while its pages were reopened
    (the rest of its failures stay failed); False if there is none to take off."""
    return update_if(
        JobRecord(job_id=job_id),
        _cursor_actions(None, datetime.now(UTC)),
        JobRecord.retry_next.exists() & JobRecord.cancelled_at.exists(),
    )


class JobChanged(Exception):
    """The job changed between its read and a write that assumed it had not."""


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
        failed_store_key=failed_store_key("unknown", image_index),
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
