"""Jobs and their image records in DynamoDB: the only code that reads or writes them.

Takes and returns retail_pulse.domain types; the records stay inside this package.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TypeVar

from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from retail_pulse.data.listing_keys import expiry, listed_as, status_partition
from retail_pulse.data.models import (
    CANCELLED,
    FAILED,
    ONGOING_SHARDS,
    PENDING,
    SUCCEEDED,
    ImageRecord,
    JobRecord,
    OngoingJobsIndex,
    connection,
    ongoing_shard,
)
from retail_pulse.data.transactions import ConditionFailed, transact_write, update_if
from retail_pulse.data.visits import results_partition
from retail_pulse.domain import (
    DEFAULT_TENANT,
    FailedImage,
    Image,
    ImageCancelled,
    ImageResult,
    ImageSuccess,
    Job,
)

# BatchWriteItem takes 25 items; a thread per slice keeps a 10,000-image submit to a few
# seconds (each thread's batch_write retries unprocessed items with backoff).
_WRITE_SLICE = 500
_WRITE_THREADS = 8


def visit_key(visit_time: str, job_id: str, image_index: int) -> str:
    """The visits indexes' sort key: time order first, unique per image."""
    return f"{visit_time}#{job_id}#{image_index:05d}"


def _image_record(image: Image) -> ImageRecord:
    record = ImageRecord(
        job_id=image.job_id,
        image_index=image.image_index,
        store_id=image.store_id,
        area=image.area,
        url=image.url,
        visit_time=image.visit_time,
        visit_key=visit_key(image.visit_time, image.job_id, image.image_index),
        state=image.state,
        expires_at=expiry(),
    )
    if image.state == FAILED:
        record.error = image.error
        record.failed_job_id = image.job_id  # the sparse FailedImages index
    return record


def _write_images(images: Sequence[Image]) -> None:
    with ImageRecord.batch_write() as batch:
        for image in images:
            batch.save(_image_record(image))


def _job(record: JobRecord) -> Job:
    return Job(
        job_id=record.job_id,
        tenant=record.tenant or DEFAULT_TENANT,
        total=int(record.total),
        succeeded=int(record.succeeded),
        failed=int(record.failed),
        visit_count=int(record.visit_count),
        created_at=record.created_at,
        cancelled=int(record.cancelled or 0),
        finished_at=record.finished_at,
        cancelled_at=record.cancelled_at,
        progressed_at=record.progressed_at,
        requeued_at=record.requeued_at,
        retried_at=record.retried_at,
        callback_url=record.callback_url,
        event_id=record.event_id,
        event_pending=bool(record.event_pending),
    )


def create_job(job: Job, images: Sequence[Image]) -> None:
    """Write the job, then its images. The job first: a status query must never miss a job
    whose images exist. An unfinished job joins the OngoingJobs index."""
    JobRecord(
        job_id=job.job_id,
        tenant=job.tenant,
        total=job.total,
        succeeded=job.succeeded,
        failed=job.failed,
        visit_count=job.visit_count,
        created_at=job.created_at,
        ongoing_shard=ongoing_shard(job.job_id),
        tenant_status=status_partition(job.tenant, job.state),
        callback_url=job.callback_url,
        expires_at=expiry(),
    ).save(condition=JobRecord.job_id.does_not_exist())
    slices = [images[i : i + _WRITE_SLICE] for i in range(0, len(images), _WRITE_SLICE)]
    if len(slices) <= 1:
        for part in slices:
            _write_images(part)
        return
    with ThreadPoolExecutor(max_workers=min(_WRITE_THREADS, len(slices))) as pool:
        list(pool.map(_write_images, slices))


def get_job(job_id: str, consistent: bool = True) -> Job | None:
    """The job, read strongly consistent unless `consistent=False` (half the read units,
    for a check that may lag a write by a moment)."""
    try:
        return _job(JobRecord.get(job_id, consistent_read=consistent))
    except JobRecord.DoesNotExist:
        return None


def _image_actions(job_id: str, outcome: ImageResult, attempts: int, now: datetime) -> list[Action]:
    """What filing `outcome` writes on its image record."""
    common: list[Action] = [ImageRecord.attempts.set(attempts), ImageRecord.finished_at.set(now)]
    if isinstance(outcome, ImageCancelled):
        return [ImageRecord.state.set(CANCELLED), *common]
    if isinstance(outcome, ImageSuccess):
        actions = [
            ImageRecord.state.set(SUCCEEDED),
            ImageRecord.perimeter.set(outcome.perimeter),
            ImageRecord.width.set(outcome.width),
            ImageRecord.height.set(outcome.height),
            ImageRecord.result_store_id.set(results_partition(outcome.tenant, outcome.store_id)),
            *common,
        ]
        if outcome.area:
            actions.append(
                ImageRecord.result_area.set(results_partition(outcome.tenant, outcome.area))
            )
        return actions
    return [
        ImageRecord.state.set(FAILED),
        ImageRecord.error.set(outcome.error),
        ImageRecord.failed_job_id.set(job_id),
        *common,
    ]


def _count_actions(outcomes: Sequence[ImageResult], now: datetime) -> list[Action]:
    """What filing `outcomes` adds to their job's counters (one update, whatever their number)."""
    succeeded = sum(isinstance(outcome, ImageSuccess) for outcome in outcomes)
    cancelled = sum(isinstance(outcome, ImageCancelled) for outcome in outcomes)
    failed = len(outcomes) - succeeded - cancelled
    actions: list[Action] = [JobRecord.progressed_at.set(now)]
    if succeeded:
        actions.append(JobRecord.succeeded.add(succeeded))
    if failed:
        actions.append(JobRecord.failed.add(failed))
    if cancelled:
        actions.append(JobRecord.cancelled.add(cancelled))
    return actions


def record_outcome(job_id: str, image_index: int, outcome: ImageResult, attempts: int) -> bool:
    """Move one image out of `pending` and count it on its job, in one transaction.

    Returns False when the image had already left `pending` (a duplicate or late delivery):
    nothing changes then, so a job's counters always equal its image records.
    """
    image = ImageRecord(job_id=job_id, image_index=image_index)
    job = JobRecord(job_id=job_id)
    now = datetime.now(UTC)
    image_actions = _image_actions(job_id, outcome, attempts, now)
    job_actions = _count_actions([outcome], now)

    def build(transaction: TransactWrite) -> None:
        transaction.update(image, actions=image_actions, condition=ImageRecord.state == PENDING)
        transaction.update(job, actions=job_actions, condition=JobRecord.job_id.exists())

    try:
        transact_write(connection(), build)
    except ConditionFailed as error:
        if 0 in error.failed:
            return False
        raise
    return True


T = TypeVar("T")

# TransactWriteItems takes at most 100 items; one of them is the job's counter.
MAX_TRANSACTION_ITEMS = 100
IMAGES_PER_TRANSACTION = MAX_TRANSACTION_ITEMS - 1


@dataclass(frozen=True)
class Filing:
    """One image's result, to be filed: its index in its job, its outcome, its attempts."""

    image_index: int
    outcome: ImageResult
    attempts: int


class AlreadyFiled(Exception):
    """Some images of a transaction had already left `pending` (a duplicate or late
    delivery): the transaction was cancelled and wrote nothing. `positions` are theirs."""

    def __init__(self, positions: list[int]) -> None:
        super().__init__(f"images at positions {positions} had already left pending")
        self.positions = positions


def transaction_chunks(items: Sequence[T]) -> list[Sequence[T]]:
    """The images of one job cut into as few transactions as fit, of nearly equal sizes
    (100 images are 50 + 50, not 99 + 1: the two then take about as long)."""
    if not items:
        return []
    count = -(-len(items) // IMAGES_PER_TRANSACTION)
    size = -(-len(items) // count)
    return [items[i : i + size] for i in range(0, len(items), size)]


def record_outcomes(job_id: str, filings: Sequence[Filing]) -> None:
    """File the results of several images of one job in one transaction: each image's
    conditional move out of `pending`, and one update of the job's counters by their totals.

    All or nothing: raises AlreadyFiled when some image had already left `pending` (the
    caller then files image by image, so each duplicate is told apart and counted once),
    and any other failure with nothing written.
    """
    if not 0 < len(filings) <= IMAGES_PER_TRANSACTION:
        raise ValueError(f"{len(filings)} images: one transaction files 1 to 99")
    now = datetime.now(UTC)
    updates = [
        (
            ImageRecord(job_id=job_id, image_index=filing.image_index),
            _image_actions(job_id, filing.outcome, filing.attempts, now),
        )
        for filing in filings
    ]
    job_actions = _count_actions([filing.outcome for filing in filings], now)

    def build(transaction: TransactWrite) -> None:
        for image, actions in updates:
            transaction.update(image, actions=actions, condition=ImageRecord.state == PENDING)
        # Last, so its position is len(filings) in the cancellation reasons.
        transaction.update(
            JobRecord(job_id=job_id), actions=job_actions, condition=JobRecord.job_id.exists()
        )

    try:
        transact_write(connection(), build)
    except ConditionFailed as error:
        images = [position for position in error.failed if position < len(filings)]
        if images:
            raise AlreadyFiled(images) from error
        raise  # the job itself is missing: no use filing image by image


def _terminal_actions(job: Job, now: datetime) -> list[Action]:
    """What every terminal transition writes: when, its event (to be emitted), and the
    job's place in its client's list."""
    return [
        JobRecord.finished_at.set(now),
        JobRecord.event_id.set(str(uuid.uuid4())),
        JobRecord.event_pending.set(True),
        *listed_as(job.tenant, job.state),
    ]


def mark_finished(job_id: str) -> Job | None:
    """Stamp `finished_at` on a job whose images are all done, exactly once, with the
    event of that transition still to be emitted.

    Returns the job only to the one caller that stamped it, so the job's event, log line
    and duration metric are emitted once, whichever invocation finished it. The job stays
    in OngoingJobs until its event is out (`event_emitted`), so the reconciler emits it if
    this caller dies first.
    """
    try:
        record = JobRecord.get(job_id, consistent_read=True)
    except JobRecord.DoesNotExist:
        return None
    job = _job(record)
    if job.finished_at is not None and job.cancelled_at is not None:
        # A cancelled job ends early; its last images were being filed `cancelled`.
        _settle(job)
    if not job.done or job.finished_at is not None:
        return None
    stamped = update_if(
        record,
        _terminal_actions(job, datetime.now(UTC)),
        JobRecord.finished_at.does_not_exist(),
    )
    return _job(record) if stamped else None


def cancel(job: Job) -> Job | None:
    """Make an unfinished job `cancelled` now, with its event to be emitted; None when it
    has reached a terminal status meanwhile (or no longer exists). Its unprocessed images
    are filed `cancelled` as their messages arrive (the process function reads the job
    first)."""
    now = datetime.now(UTC)
    record = JobRecord(job_id=job.job_id)
    actions = [
        JobRecord.cancelled_at.set(now),
        *_terminal_actions(replace(job, cancelled_at=now), now),
    ]
    condition = JobRecord.job_id.exists() & JobRecord.finished_at.does_not_exist()
    return _job(record) if update_if(record, actions, condition) else None


def event_emitted(job: Job) -> None:
    """The job's event is out: forget it, unless a later transition replaced it; and, when
    every image has its final record, take the job out of OngoingJobs in the same update."""
    actions: list[Action] = [JobRecord.event_pending.remove()]
    if job.done:
        actions.append(JobRecord.ongoing_shard.remove())
    update_if(JobRecord(job_id=job.job_id), actions, JobRecord.event_id == job.event_id)


def settle(job_id: str) -> bool:
    """Take a terminal job out of OngoingJobs once nothing is left to do for it: its event
    is out and every image has its final record. True when it is (or already was) out."""
    job = get_job(job_id)
    return True if job is None else _settle(job)


def _settle(job: Job) -> bool:
    if job.finished_at is None or job.event_pending or not job.done:
        return False
    return update_if(
        JobRecord(job_id=job.job_id),
        [JobRecord.ongoing_shard.remove()],
        (JobRecord.finished_at == job.finished_at) & JobRecord.event_pending.does_not_exist(),
    )


def failed_images(job_id: str) -> Iterator[FailedImage]:
    """A failed job's failures only, through the sparse FailedImages index."""
    for record in ImageRecord.failed_images.query(job_id):
        yield FailedImage(store_id=record.store_id, error=record.error or "image failed")


def unfinished_jobs(created_before: datetime) -> Iterator[str]:
    """Ids of jobs submitted before `created_before` that have not finished, oldest first
    within each shard: a Query per shard of the sparse OngoingJobs index, never a scan."""
    for shard in range(ONGOING_SHARDS):
        for record in JobRecord.ongoing_jobs.query(
            str(shard), OngoingJobsIndex.created_at < created_before
        ):
            yield record.job_id


def note_requeued(job_id: str) -> None:
    """Remember when the job's images were last enqueued again, so the next run waits a
    whole soft deadline before doing it again."""
    JobRecord(job_id=job_id).update(
        actions=[JobRecord.requeued_at.set(datetime.now(UTC))],
        condition=JobRecord.job_id.exists(),
    )
