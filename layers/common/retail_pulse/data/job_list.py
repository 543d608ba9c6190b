"""Reading a tenant's jobs back for GET /api/jobs (jobs/job_list.py). Reads only:
data/record_keys.py has what the writers put on the records for these reads.

A tenant's jobs come from the TenantJobs index of the Jobs table (keys only), one partition
per tenant and status ("<tenant>#<status>"), newest first: a filtered list reads only jobs
of that status, and the unfiltered list merges the few status partitions of its tenant.
The page's jobs themselves are one BatchGetItem.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pynamodb.expressions.condition import Condition

from retail_pulse.data.jobs import _job as job_from_record
from retail_pulse.data.models import JobRecord, TenantJobsIndex
from retail_pulse.domain import Job, JobRef


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
