"""How is my job doing? One read of the job, whatever its status: a failed job keeps the
summary of its failures (at most 100 stores, and how many failed) from the moment it fails."""

from __future__ import annotations

import math
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from retail_pulse.data import STORAGE_ERRORS
from retail_pulse.data.image_records import summarize_failures
from retail_pulse.data.jobs import get_job, keep_failure_summary
from retail_pulse.domain import Job, JobStatus, UploadFailure
from retail_pulse.errors import UnknownJob
from retail_pulse.failure_summary import FailedImage, FailureSummary
from retail_pulse.observability import logger

# DynamoDB rejects keys over 2 KB; ids we issue are 36 characters.
_MAX_JOB_ID = 256

# Retry-After of an ongoing job, in whole seconds (README: "Polling").
RETRY_AFTER_MIN_S = 1
RETRY_AFTER_MAX_S = 60
RETRY_AFTER_UNSTARTED_S = 5


def retry_after(job: Job, now: datetime) -> int:
    """When an ongoing job is worth asking about again: the time its remaining images take
    at the rate images have finished since submit, clamped to 1..60 s; 5 s while none has
    finished, since there is no rate yet, and while its failures are summed up. A client
    that waits this long polls a short job about once a second and a long one once a
    minute."""
    done = job.succeeded + job.failed
    if done <= 0 or job.done:
        # No rate yet; or every image is done and its failures are being summed up.
        return RETRY_AFTER_UNSTARTED_S
    elapsed = max((now - job.created_at).total_seconds(), 0.001)
    remaining_s = max(job.total - done, 0) * elapsed / done
    return max(RETRY_AFTER_MIN_S, min(RETRY_AFTER_MAX_S, math.ceil(remaining_s)))


def job_status(tenant: str, job_id: str) -> JobStatus:
    """The job's status; raises UnknownJob when the caller has no such job (another
    client's job answers exactly as one that does not exist)."""
    return status_of(caller_job(tenant, job_id))


def caller_job(tenant: str, job_id: str) -> Job:
    """The caller's job; UnknownJob for an id that is not theirs or does not exist."""
    job = get_job(job_id) if job_id and len(job_id) <= _MAX_JOB_ID else None
    if job is None or job.tenant != tenant:
        raise UnknownJob(job_id)
    return job


def status_of(job: Job) -> JobStatus:
    """What GET /api/status answers for this job, as it stands: also the `job` of its
    job.finished event."""
    job_id = job.job_id
    progress = job.progress
    if job.state == "cancelled":
        return JobStatus(status="cancelled", job_id=job_id, progress=progress)
    if job.state == "ongoing":
        return _ongoing(job)
    if job.state == "completed":
        return JobStatus(status="completed", job_id=job_id, progress=progress)
    if job.ingest_error is not None and not job.failed:
        # The upload could not become the job's images: one error, of no store.
        return JobStatus(
            status="failed",
            job_id=job_id,
            progress=progress,
            error=[UploadFailure(job.ingest_error)],
            error_count=1,
            error_truncated=False,
        )
    failures = job.failures if job.failures is not None else _summed_up(job)
    if failures is None:
        # Too many to sum up here: the paged summary (jobs/summary.py) stamps it when done.
        return _ongoing(job)
    upload_error: list[FailedImage | UploadFailure] = (
        [UploadFailure(job.ingest_error)] if job.ingest_error is not None else []
    )
    return JobStatus(
        status="failed",
        job_id=job_id,
        progress=progress,
        error=upload_error + list(failures.stores),
        error_count=failures.store_count + len(upload_error),
        error_truncated=failures.truncated,
    )


def _ongoing(job: Job) -> JobStatus:
    return JobStatus(
        status="ongoing",
        job_id=job.job_id,
        progress=job.progress,
        retry_after_s=retry_after(job, datetime.now(UTC)),
        ingesting=True if job.ingesting else None,
        summarizing=True if job.done else None,
    )


def _summed_up(job: Job) -> FailureSummary | None:
    """The failures of a failed job that does not keep them: one whose counters say failed
    before its finish is stamped (which keeps them), or one that failed before summaries
    were kept. The former only when they are few (SUMMARY_INLINE_FAILURES; None otherwise:
    its paged summary is on its way). The latter keeps it now, so this happens once per job
    (such jobs predate uploads: MAX_IMAGES_PER_JOB images at most)."""
    if job.finished_at is None:
        return summarize_failures(job.job_id, job.failed, job.total)
    summary = summarize_failures(job.job_id, job.failed)
    if summary is not None:
        try:
            keep_failure_summary(job, summary)
        except STORAGE_ERRORS:
            # The answer stands; the next poll sums the failures up again.
            logger.warning("failure summary not kept", extra={"job_id": job.job_id}, exc_info=True)
    return summary


def status_document(status: JobStatus) -> dict[str, Any]:
    """The status as GET /api/status's JSON body has it (api/models.StatusResponse; a test
    holds the two equal): fields without a value left out, the Retry-After hint too."""

    def present(value: Any) -> Any:
        if isinstance(value, dict):  # an upload's error keeps its null store_id
            return {k: present(v) for k, v in value.items() if v is not None or k == "store_id"}
        if isinstance(value, list):
            return [present(v) for v in value]
        return value

    document = present(asdict(status))
    document.pop("retry_after_s", None)
    return dict(document)
