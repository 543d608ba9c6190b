"""How is my job doing? One job read, plus the failures of a failed job only."""

from __future__ import annotations

from retail_pulse.api.models import Progress, StatusResponse, StoreError
from retail_pulse.data.jobs import failed_images, get_job

# DynamoDB rejects keys over 2 KB; ids we issue are 36 characters.
_MAX_JOB_ID = 256


def job_status(job_id: str) -> StatusResponse | None:
    """None when no such job exists."""
    if not job_id or len(job_id) > _MAX_JOB_ID:
        return None
    job = get_job(job_id)
    if job is None:
        return None
    progress = Progress(total=job.total, succeeded=job.succeeded, failed=job.failed)
    if not job.done:
        return StatusResponse(status="ongoing", job_id=job_id, progress=progress)
    if job.failed == 0:
        return StatusResponse(status="completed", job_id=job_id, progress=progress)
    first_error_by_store: dict[str, str] = {}
    for image in failed_images(job_id):
        first_error_by_store.setdefault(image.store_id, image.error)
    errors = [StoreError(store_id=s, error=e) for s, e in first_error_by_store.items()]
    return StatusResponse(status="failed", job_id=job_id, error=errors, progress=progress)
