"""Image records: written with their job, their result filed in one transaction with its
job's counters (record_outcome: dead letters, the reconciler, a message repeated within one
batch), and read back failed (a small failed job's summary: summarize_failures)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from retail_pulse.data.models import (
    CANCELLED,
    FAILED,
    PENDING,
    SUCCEEDED,
    ImageRecord,
    JobRecord,
    connection,
)
from retail_pulse.data.record_keys import expiry, failed_store_key
from retail_pulse.data.transactions import ConditionFailed, transact_write
from retail_pulse.data.visits import results_partition
from retail_pulse.domain import Image, ImageCancelled, ImageResult, ImageState, ImageSuccess
from retail_pulse.failure_summary import FailedImage, FailureSummary
from retail_pulse.settings import get_settings


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
        # The sparse FailedImages and FailedStores indexes.
        record.failed_job_id = image.job_id
        record.failed_store_key = failed_store_key(image.store_id, image.image_index)
    return record


def _write_images(images: Sequence[Image]) -> None:
    with ImageRecord.batch_write() as batch:
        for image in images:
            batch.save(_image_record(image))


def _identity_actions(image: Image) -> list[Action]:
    """What an image's record says of the image itself (its manifest entry, or the message
    that carried it). A message sent before messages carried visit_time leaves the time and
    visit_key its `pending` record was written with."""
    actions: list[Action] = [
        ImageRecord.store_id.set(image.store_id),
        ImageRecord.url.set(image.url),
        # A record a retry reopened keeps its job's retention; a new one gets its own,
        # from now (within the job's few minutes of processing).
        ImageRecord.expires_at.set(ImageRecord.expires_at | expiry()),
    ]
    if image.area is not None:
        actions.append(ImageRecord.area.set(image.area))
    if image.visit_time:
        actions += [
            ImageRecord.visit_time.set(image.visit_time),
            ImageRecord.visit_key.set(visit_key(image.visit_time, image.job_id, image.image_index)),
        ]
    return actions


def _image_actions(
    image: Image, outcome: ImageResult, attempts: int, now: datetime, filed_by: str | None = None
) -> list[Action]:
    """What filing `outcome` writes on its image record (created by this very update when
    the image has none yet)."""
    common: list[Action] = [
        *_identity_actions(image),
        ImageRecord.attempts.set(attempts),
        ImageRecord.finished_at.set(now),
    ]
    if filed_by is not None:
        common.append(ImageRecord.filed_by.set(filed_by))
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
        ImageRecord.failed_job_id.set(image.job_id),
        ImageRecord.failed_store_key.set(failed_store_key(image.store_id, image.image_index)),
        *common,
    ]


# An image is pending while it has no record, or a record a retry put back to `pending`.
_UNFILED = ImageRecord.job_id.does_not_exist() | (ImageRecord.state == PENDING)


@dataclass(frozen=True)
class Tally:
    """What a filing adds to its job's counters."""

    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0

    @classmethod
    def of(cls, outcomes: Iterable[ImageResult | ImageState]) -> Tally:
        states = [_state(outcome) for outcome in outcomes]
        return cls(states.count(SUCCEEDED), states.count(FAILED), states.count(CANCELLED))


def _state(outcome: ImageResult | ImageState) -> str:
    if isinstance(outcome, str):
        return outcome
    if isinstance(outcome, ImageSuccess):
        return SUCCEEDED
    return CANCELLED if isinstance(outcome, ImageCancelled) else FAILED


def _count_actions(tally: Tally, now: datetime) -> list[Action]:
    """What a filing adds to its job's counters (one update, whatever its number)."""
    actions: list[Action] = [JobRecord.progressed_at.set(now)]
    if tally.succeeded:
        actions.append(JobRecord.succeeded.add(tally.succeeded))
    if tally.failed:
        actions.append(JobRecord.failed.add(tally.failed))
    if tally.cancelled:
        actions.append(JobRecord.cancelled.add(tally.cancelled))
    return actions


def record_outcome(image: Image, outcome: ImageResult, attempts: int) -> bool:
    """File one image's result and count it on its job, in one transaction (dead letters,
    the reconciler, a message repeated within one batch).

    Returns False when the image had been filed already (a duplicate or late delivery) or
    its job no longer exists: nothing changes then, so a job's counters always equal its
    image records.
    """
    record = ImageRecord(job_id=image.job_id, image_index=image.image_index)
    job = JobRecord(job_id=image.job_id)
    now = datetime.now(UTC)
    image_actions = _image_actions(image, outcome, attempts, now)
    job_actions = _count_actions(Tally.of([outcome]), now)

    def build(transaction: TransactWrite) -> None:
        transaction.update(record, actions=image_actions, condition=_UNFILED)
        transaction.update(job, actions=job_actions, condition=JobRecord.job_id.exists())

    try:
        transact_write(connection(), build)
    except ConditionFailed:
        return False  # the image filed already, or no job to count it on
    return True


def failed_images(job_id: str) -> Iterator[FailedImage]:
    """A failed job's failures only, in image order, through the sparse FailedImages index
    (eventually consistent: a failure filed a moment ago may not be there yet)."""
    for record in ImageRecord.failed_images.query(job_id):
        yield FailedImage(store_id=record.store_id, error=record.error or "image failed")


def _failed_records(job_id: str) -> Iterator[FailedImage]:
    """The job's failures, in image order, from its own records (strongly consistent):
    every record of the job is read, the failed ones kept."""
    for record in ImageRecord.query(
        job_id,
        range_key_condition=ImageRecord.image_index >= 0,
        filter_condition=ImageRecord.state == FAILED,
        consistent_read=True,
        attributes_to_get=["job_id", "image_index", "store_id", "error"],
    ):
        yield FailedImage(store_id=record.store_id, error=record.error or "image failed")


def summarize_failures(
    job_id: str, failed: int, records: int | None = None
) -> FailureSummary | None:
    """The summary of a job's `failed` failures (its counter), read from the FailedImages
    index, which holds only failures: None when there are more than SUMMARY_INLINE_FAILURES.
    When the index does not hold exactly that many yet (it lags writes by a moment, and may
    still list an image a retry reopened), from the job's own records instead, which are
    exact: only when it has at most JOB_PAGE_IMAGES of them (its `records`; None: any
    number), else None."""
    settings = get_settings()
    if records is not None and failed > settings.summary_inline_failures:
        return None
    read = 0

    def counted(failures: Iterator[FailedImage]) -> Iterator[FailedImage]:
        nonlocal read
        for failure in failures:
            read += 1
            if read > failed:
                return  # more than the job counts: no need to read on
            yield failure

    summary = FailureSummary.of(counted(failed_images(job_id)))
    if read == failed:
        return summary
    if records is not None and records > settings.job_page_images:
        return None
    return FailureSummary.of(_failed_records(job_id))
