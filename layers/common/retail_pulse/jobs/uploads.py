"""Jobs too large for a request body: an upload of the same JSON body to S3, then a submit
that names it.

`POST /api/uploads` records an upload for the client and presigns a POST of at most
UPLOAD_MAX_BYTES to its own key (S3 enforces both through the POST policy). `POST
/api/submit/` with `{"upload_id"}` makes the job at once, before a byte of the upload is
read: the upload is claimed for one job (a conditional write: the same upload submitted
twice answers the same job), the job is recorded `ongoing` and `ingesting`, and one message
sent to IngestQueue, whose function (jobs/ingest.py) reads the upload as a stream into the
job's manifest and image messages.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from retail_pulse.data.ingest import enqueue_ingest
from retail_pulse.data.uploads import (
    claim_upload,
    get_upload,
    new_upload,
    record_upload_job,
    uploaded_object,
)
from retail_pulse.domain import Job, UploadTicket
from retail_pulse.errors import InvalidRequest
from retail_pulse.jobs.ingest import IngestMessage
from retail_pulse.observability import JOBS_SUBMITTED, count, logger, tracer
from retail_pulse.settings import get_settings
from retail_pulse.timestamps import shown

# Ids we issue are UUIDs (36 characters); anything much longer is not one of ours.
_MAX_UPLOAD_ID = 64


def create_upload(tenant: str) -> UploadTicket:
    """A new upload for `tenant`: where and how to send the job's body, and until when."""
    settings = get_settings()
    ticket = new_upload(
        tenant,
        str(uuid.uuid4()),
        max_bytes=settings.upload_max_bytes,
        expires_in_s=settings.upload_url_expires_s,
        now=datetime.now(UTC),
    )
    # The upload's id only: the URL's fields hold its signature.
    logger.info("upload created", extra={"upload_id": ticket.upload.upload_id})
    return ticket


def submit_upload(tenant: str, upload_id: str) -> str:
    """The job of the caller's upload: a new one, or the one this upload became already
    (recorded now if the submit that claimed the upload died before recording it).

    Another client's upload answers as an unknown one does. Raises InvalidRequest when
    nothing has been uploaded yet, or more than the upload allows."""
    upload = get_upload(upload_id) if 0 < len(upload_id) <= _MAX_UPLOAD_ID else None
    if upload is None or upload.tenant != tenant:
        raise InvalidRequest(
            f"upload_id '{shown(upload_id[:_MAX_UPLOAD_ID])}' is not an upload of yours, or it "
            "has expired: create one with POST /api/uploads, upload the job's body to its "
            "upload_url, then submit its upload_id"
        )
    job_id = upload.job_id
    if job_id is None:
        found = uploaded_object(upload)
        if found is None:
            raise InvalidRequest(
                f"nothing has been uploaded for upload_id '{upload_id}' yet: POST the job's "
                "JSON body to its upload_url (its upload_fields first, then the file), then "
                "submit again"
            )
        if found.size > upload.max_bytes:  # S3 refuses these; an emulator may not
            raise InvalidRequest(
                f"the upload is {found.size} bytes; the limit is {upload.max_bytes} "
                "(UPLOAD_MAX_BYTES): split the job into several uploads"
            )
        job_id = claim_upload(upload_id, str(uuid.uuid4()), found)
    logger.append_keys(job_id=job_id)
    tracer.put_annotation(key="job_id", value=job_id)
    _start(
        Job(
            job_id=job_id,
            tenant=tenant,
            total=0,
            succeeded=0,
            failed=0,
            visit_count=0,
            created_at=datetime.now(UTC),
            upload_id=upload_id,
            ingesting=True,
        )
    )
    return job_id


def _start(job: Job) -> None:
    """Record the job and send its ingest message. A submit that died between claiming the
    upload and this finds the job missing when sent again, and starts it then. One that
    died between recording the job and sending its message leaves a job that is never
    read (issue 24: the reconciler does not send an ingest message again yet)."""
    if not record_upload_job(job):
        return  # a submit of the same upload, sent again or at the same moment, did
    enqueue_ingest(IngestMessage(job_id=job.job_id, tenant=job.tenant).model_dump())
    logger.info("upload job accepted", extra={"job_id": job.job_id, "upload_id": job.upload_id})
    count(JOBS_SUBMITTED)
