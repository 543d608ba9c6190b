"""Reading a client's jobs and a job's images back (GET /api/jobs, GET /api/results). Reads
only: data/listing_keys.py has what the writers put on the records for these reads.

A client's jobs come from the TenantJobs index of the Jobs table (keys only), one partition
per client and status ("<tenant>#<status>"), newest first: a filtered list reads only jobs
of that status, and the unfiltered list merges the few status partitions of its client
(jobs/listing.py). The page's jobs themselves are one BatchGetItem. A job's images are a
Query of the Images table by its own keys, in submit order.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pynamodb.expressions.condition import Condition

from retail_pulse.data.jobs import _job as job_from_record
from retail_pulse.data.models import ImageRecord, JobRecord, TenantJobsIndex
from retail_pulse.domain import ImageReport, Job, JobRef

# What the results export shows of an image (and its keys): the index attributes and the
# attempt count are not read back.
_IMAGE_ATTRIBUTES = [
    "job_id",
    "image_index",
    "store_id",
    "url",
    "visit_time",
    "state",
    "perimeter",
    "width",
    "height",
    "error",
]


def job_refs(
    partition: str, count: int, *, not_after: datetime | None, after: JobRef | None
) -> tuple[list[JobRef], bool]:
    """Up to `count` jobs of one TenantJobs partition, newest first, created at or before
    `not_after`, resuming after the job `after` (one this request read, never a client's
    value); and whether the partition is known to hold no more."""
    condition: Condition | None = None
    if not_after is not None:
        condition = TenantJobsIndex.created_at <= not_after
    start: dict[str, Any] | None = None
    if after is not None:
        start = {
            "tenant_status": {"S": partition},
            "created_at": {"S": JobRecord.created_at.serialize(after.created_at)},
            "job_id": {"S": after.job_id},
        }
    records = JobRecord.tenant_jobs.query(
        partition,
        range_key_condition=condition,
        scan_index_forward=False,
        limit=count,
        page_size=count,
        last_evaluated_key=start,
    )
    refs = [JobRef(created_at=record.created_at, job_id=record.job_id) for record in records]
    return refs, len(refs) < count


def jobs_by_id(job_ids: Iterable[str]) -> dict[str, Job]:
    """The jobs with these ids that still exist, by id: one BatchGetItem per 100, strongly
    consistent so a listed status agrees with GET /api/status."""
    ids = list(dict.fromkeys(job_ids))
    if not ids:
        return {}
    return {
        record.job_id: job_from_record(record)
        for record in JobRecord.batch_get(ids, consistent_read=True)
    }


def job_images(job_id: str, count: int, after_index: int | None = None) -> list[ImageReport]:
    """Up to `count` images of a job in submit order (image_index), after `after_index`: one
    Query of the table by its own keys. Strongly consistent, so an export agrees with the
    status the client just read."""
    condition = ImageRecord.image_index > after_index if after_index is not None else None
    records = ImageRecord.query(
        job_id,
        range_key_condition=condition,
        consistent_read=True,
        limit=count,
        page_size=count,
        attributes_to_get=_IMAGE_ATTRIBUTES,
    )
    return [_report(record) for record in records]


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _report(record: ImageRecord) -> ImageReport:
    # An image the reconciler filed for a submit that died part-way has no URL or time.
    return ImageReport(
        image_index=int(record.image_index),
        store_id=record.store_id,
        url=record.url or None,
        visit_time=record.visit_time or None,
        state=record.state,  # type: ignore[arg-type]  # written only as an ImageState
        perimeter=_int(record.perimeter),
        width=_int(record.width),
        height=_int(record.height),
        error=record.error,
    )
