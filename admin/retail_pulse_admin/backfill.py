"""One-off, run once after deploying the job list and retention: give the records written
before them what submit now writes, so the old jobs are listed and expire too.

- A job without `tenant_status` joins its client's TenantJobs partition for its status
  (a job without `tenant` is the default client's, as everywhere, and gets it written).
- A job and its images without `expires_at` are kept RETENTION_DAYS from the backfill on.

A Scan of the Jobs table, filtered to the jobs missing either attribute, and a Query of each
such job's images: an operator's command, never a function's path. Every write is
conditional, so it is safe to run again, or while the service runs: a job whose status
moved meanwhile keeps the key its own update gave it. A job's images get their expiry
before the job does, so a run that stops part-way is finished by the next one.

    JOBS_TABLE=<name> IMAGES_TABLE=<name> RETENTION_DAYS=90 \\
        python -m retail_pulse_admin.backfill
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from retail_pulse.data.jobs import _job as job_from_record
from retail_pulse.data.models import ImageRecord, JobRecord
from retail_pulse.data.record_keys import expiry, listed_as
from retail_pulse.data.transactions import update_if
from retail_pulse.domain import DEFAULT_TENANT


@dataclass
class BackfillReport:
    jobs_listed: int = 0
    jobs_expiring: int = 0
    images_expiring: int = 0


def backfill() -> BackfillReport:
    """List and expire every job (and its images) written before the list and TTL."""
    report = BackfillReport()
    missing = JobRecord.tenant_status.does_not_exist() | JobRecord.expires_at.does_not_exist()
    for record in JobRecord.scan(filter_condition=missing):
        if record.expires_at is None:
            report.images_expiring += _expire_images(record.job_id)
            if update_if(
                JobRecord(job_id=record.job_id),
                [JobRecord.expires_at.set(expiry())],
                JobRecord.job_id.exists() & JobRecord.expires_at.does_not_exist(),
            ):
                report.jobs_expiring += 1
        if record.tenant_status is None:
            job = job_from_record(record)
            actions = listed_as(job.tenant, job.state)
            if record.tenant is None:
                actions.append(JobRecord.tenant.set(DEFAULT_TENANT))
            condition = JobRecord.job_id.exists() & JobRecord.tenant_status.does_not_exist()
            if update_if(JobRecord(job_id=record.job_id), actions, condition):
                report.jobs_listed += 1
    return report


def _expire_images(job_id: str) -> int:
    images = ImageRecord.query(
        job_id,
        filter_condition=ImageRecord.expires_at.does_not_exist(),
        attributes_to_get=["job_id", "image_index"],
    )
    return sum(
        update_if(
            ImageRecord(job_id=job_id, image_index=image.image_index),
            [ImageRecord.expires_at.set(expiry())],
            ImageRecord.job_id.exists() & ImageRecord.expires_at.does_not_exist(),
        )
        for image in images
    )


def main() -> int:
    report = backfill()
    print(
        f"listed {report.jobs_listed} jobs; {report.jobs_expiring} jobs and "
        f"{report.images_expiring} images now expire in RETENTION_DAYS",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
