"""How is my job doing? One job read, plus the failures of a failed job only."""

from __future__ import annotations

from retail_pulse.data.jobs import failed_images, get_job
from retail_pulse.domain import FailedImage, JobProgress, JobStatus
from retail_pulse.errors import UnknownJob

# DynamoDB rejects keys over 2 KB; ids we issue are 36 characters.
_MAX_JOB_ID = 256


def job_status(job_id: str) -> JobStatus:
    """The job's status; raises UnknownJob when no such job exists."""
    job = get_job(job_id) if job_id and len(job_id) <= _MAX_JOB_ID else None
    if job is None:
        raise UnknownJob(job_id)
    progress = JobProgress(total=job.total, succeeded=job.succeeded, failed=job.failed)
    if not job.done:
        return JobStatus(status="ongoing", job_id=job_id, progress=progress)
    if job.failed == 0:
        return JobStatus(status="completed", job_id=job_id, progress=progress)
    first_by_store: dict[str, FailedImage] = {}
    for image in failed_images(job_id):
        first_by_store.setdefault(image.store_id, image)
    return JobStatus(
        status="failed", job_id=job_id, progress=progress, error=list(first_by_store.values())
    )
