"""Uploads of large jobs: their records (the Uploads table) and their objects (the uploads
bucket, S3). The only code that talks to S3 about uploads.

An upload is `uploads/<tenant>/<upload_id>` in the bucket: each client's objects under a
prefix of its own. The client sends it with a presigned POST whose policy S3 enforces (the
exact key, and a `content-length-range` up to the upload's max_bytes), so nothing larger
and nothing elsewhere can be written with it. A presigned URL's signature is a credential:
nothing here logs the fields or the URLs it makes.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, BinaryIO, cast

from botocore.exceptions import ClientError
from pynamodb.exceptions import PutError, UpdateError

from retail_pulse.data import aws
from retail_pulse.data.jobs import create_job, get_job
from retail_pulse.data.models import UploadRecord
from retail_pulse.domain import Job, Upload, UploadedObject, UploadTicket
from retail_pulse.settings import SettingsError, get_settings

UPLOADS_PREFIX = "uploads"
# An upload's record outlives its object (deleted a day after upload by the bucket's
# lifecycle rule) by a day: a submit sent again in that time still answers its job.
UPLOAD_RECORD_DAYS = 2
# GetObject reads the body in pieces of this size: the ingest's memory stays flat.
READ_CHUNK = 256 * 1024


@lru_cache(maxsize=1)
def _s3() -> Any:
    """S3, signing with SigV4 (presigned POSTs included)."""
    return aws.client("s3", signature_version="s3v4")


def bucket() -> str:
    name = get_settings().uploads_bucket
    if not name:
        raise SettingsError("UPLOADS_BUCKET is not set: the uploads bucket is needed")
    return name


def upload_key(tenant: str, upload_id: str) -> str:
    """Where a client's upload lives: under a prefix of its own."""
    return f"{UPLOADS_PREFIX}/{tenant}/{upload_id}"


def _upload(record: UploadRecord) -> Upload:
    return Upload(
        upload_id=record.upload_id,
        tenant=record.tenant,
        key=record.key,
        created_at=record.created_at,
        max_bytes=int(record.max_bytes),
        job_id=record.job_id,
        size=int(record.size) if record.size is not None else None,
        version_id=record.version_id,
        etag=record.etag,
    )


def new_upload(
    tenant: str, upload_id: str, max_bytes: int, expires_in_s: int, now: datetime
) -> UploadTicket:
    """Record a new upload of `tenant` and presign its POST: only its key, at most
    `max_bytes`, for `expires_in_s` seconds."""
    key = upload_key(tenant, upload_id)
    record = UploadRecord(
        upload_id=upload_id,
        tenant=tenant,
        key=key,
        created_at=now,
        max_bytes=max_bytes,
        expires_at=now + timedelta(days=UPLOAD_RECORD_DAYS),
    )
    record.save(condition=UploadRecord.upload_id.does_not_exist())
    post = _s3().generate_presigned_post(
        Bucket=bucket(),
        Key=key,
        Conditions=[["content-length-range", 1, max_bytes]],
        ExpiresIn=expires_in_s,
    )
    return UploadTicket(
        upload=_upload(record),
        url=post["url"],
        fields=dict(post["fields"]),
        expires_at=now + timedelta(seconds=expires_in_s),
    )


def get_upload(upload_id: str) -> Upload | None:
    """The upload, read strongly consistent; None if there is none (or it expired)."""
    try:
        return _upload(UploadRecord.get(upload_id, consistent_read=True))
    except UploadRecord.DoesNotExist:
        return None


def uploaded_object(upload: Upload) -> UploadedObject | None:
    """What the client uploaded under the upload's key, or None when nothing is there yet."""
    try:
        head = _s3().head_object(Bucket=bucket(), Key=upload.key)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return UploadedObject(
        size=int(head["ContentLength"]),
        etag=str(head["ETag"]),
        version_id=head.get("VersionId") or None,
    )


def claim_upload(upload_id: str, job_id: str, found: UploadedObject) -> str:
    """Make `job_id` the upload's one job, with the object it will read: a conditional
    write, so of two submits of one upload the second gets the first's job. Returns the
    upload's job id, this one or the one that won."""
    record = UploadRecord(upload_id=upload_id)
    try:
        record.update(
            actions=[
                UploadRecord.job_id.set(job_id),
                UploadRecord.size.set(found.size),
                UploadRecord.etag.set(found.etag),
                *([UploadRecord.version_id.set(found.version_id)] if found.version_id else []),
            ],
            condition=UploadRecord.upload_id.exists() & UploadRecord.job_id.does_not_exist(),
        )
        return job_id
    except UpdateError as error:
        if error.cause_response_code != "ConditionalCheckFailedException":
            raise
    winner = get_upload(upload_id)
    if winner is None or winner.job_id is None:  # pragma: no cover - records are never undone
        raise RuntimeError(f"upload {upload_id} has no job after a refused claim")
    return winner.job_id


def record_upload_job(job: Job) -> bool:
    """Record the job of a claimed upload (no images yet: the ingest writes them), once:
    False when it is recorded already (a submit of the same upload, sent again or at the
    same moment, did it)."""
    if get_job(job.job_id) is not None:
        return False
    try:
        create_job(job, [])
    except PutError as error:
        if error.cause_response_code == "ConditionalCheckFailedException":
            return False
        raise
    return True


class UploadChanged(Exception):
    """The object under the upload's key is no longer the one submit found."""


def read_upload(upload: Upload, chunk: int = READ_CHUNK) -> BinaryIO:
    """The uploaded body as a stream, read from S3 as it is consumed: exactly the object
    submit found (its version, else its ETag), UploadChanged if it is gone or replaced."""
    extra: dict[str, str] = {}
    if upload.version_id:
        extra["VersionId"] = upload.version_id
    elif upload.etag:
        extra["IfMatch"] = upload.etag
    try:
        response = _s3().get_object(Bucket=bucket(), Key=upload.key, **extra)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code")
        if code in ("404", "NoSuchKey", "NoSuchVersion", "PreconditionFailed", "412"):
            raise UploadChanged(code) from error
        raise
    return cast(BinaryIO, _Chunked(response["Body"], chunk))


class _Chunked:
    """botocore's StreamingBody read in pieces of at most `chunk` bytes, whatever size the
    parser asks for: its memory is bounded by the chunk, not by the request."""

    def __init__(self, body: Any, chunk: int) -> None:
        self._body = body
        self._chunk = chunk
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        wanted = self._chunk if size is None or size < 0 else min(size, self._chunk)
        data = self._body.read(wanted)
        self.bytes_read += len(data)
        return bytes(data)

    def close(self) -> None:
        self._body.close()

    def __iter__(self) -> Iterator[bytes]:  # pragma: no cover - ijson reads with read()
        while data := self.read():
            yield data
