"""Jobs and their image records in DynamoDB: the only code that reads or writes them.

Takes and returns retail_pulse.domain types; the records stay inside this package.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from pynamodb.exceptions import UpdateError
from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from retail_pulse.data.models import (
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
from retail_pulse.data.transactions import ConditionFailed, transact_write
from retail_pulse.domain import FailedImage, Image, ImageResult, ImageSuccess, Job

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
        total=int(record.total),
        succeeded=int(record.succeeded),
        failed=int(record.failed),
        visit_count=int(record.visit_count),
        created_at=record.created_at,
        finished_at=record.finished_at,
        progressed_at=record.progressed_at,
        requeued_at=record.requeued_at,
    )


def create_job(job: Job, images: Sequence[Image]) -> None:
    """Write the job, then its images. The job first: a status query must never miss a job
    whose images exist. An unfinished job joins the OngoingJobs index."""
    JobRecord(
        job_id=job.job_id,
        total=job.total,
        succeeded=job.succeeded,
        failed=job.failed,
        visit_count=job.visit_count,
        created_at=job.created_at,
        ongoing_shard=ongoing_shard(job.job_id),
    ).save(condition=JobRecord.job_id.does_not_exist())
    slices = [images[i : i + _WRITE_SLICE] for i in range(0, len(images), _WRITE_SLICE)]
    if len(slices) <= 1:
        for part in slices:
            _write_images(part)
        return
    with ThreadPoolExecutor(max_workers=min(_WRITE_THREADS, len(slices))) as pool:
        list(pool.map(_write_images, slices))


def get_job(job_id: str) -> Job | None:
    try:
        return _job(JobRecord.get(job_id, consistent_read=True))
    except JobRecord.DoesNotExist:
        return None


def record_outcome(job_id: str, image_index: int, outcome: ImageResult, attempts: int) -> bool:
    """Move one image out of `pending` and count it on its job, in one transaction.

    Returns False when the image had already left `pending` (a duplicate or late delivery):
    nothing changes then, so a job's counters always equal its image records.
    """
    image = ImageRecord(job_id=job_id, image_index=image_index)
    job = JobRecord(job_id=job_id)
    now = datetime.now(UTC)
    common: list[Action] = [ImageRecord.attempts.set(attempts), ImageRecord.finished_at.set(now)]
    image_actions: list[Action]
    job_actions: list[Action]
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


def mark_finished(job_id: str) -> Job | None:
    """Stamp `finished_at` on a job whose images are all done, exactly once.

    Returns the job only to the one caller that stamped it, so the job's terminal log line
    and duration metric are emitted once, whichever invocation finished it.
    """
    try:
        record = JobRecord.get(job_id, consistent_read=True)
    except JobRecord.DoesNotExist:
        return None
    job = _job(record)
    if not job.done or job.finished_at is not None:
        return None
    try:
        record.update(
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
