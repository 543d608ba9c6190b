"""Results exports: their records (the Exports table), their files (the uploads bucket,
under exports/) and the export function's queue. The only code that talks to S3 or the
Exports table about exports.

An export's file is `exports/<tenant>/<job_id>/<export_id>.<format>`, written with an S3
multipart upload a part at a time (jobs/export.py); its record is its checkpoint: the
upload's id, the parts' ETags in order and the first image not yet in a part, moved only by
the invocation holding the record's lease, and only from where that invocation found it. A
presigned URL's signature is a credential: nothing here logs the URLs it makes.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, BinaryIO

from botocore.exceptions import ClientError
from pynamodb.exceptions import PutError, UpdateError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action

from retail_pulse.data import aws
from retail_pulse.data.models import ExportRecord, JobRecord
from retail_pulse.data.uploads import _s3, bucket
from retail_pulse.domain import ExportFormat, ResultsExport
from retail_pulse.settings import SettingsError, get_settings

EXPORTS_PREFIX = "exports"
WRITING, READY, FAILED = "writing", "ready", "failed"


class LeaseLost(Exception):
    """Another invocation writes the export now (this one stalled past its lease), or it
    ended or was replaced meanwhile: this invocation must stop without writing more."""


def export_key(tenant: str, job_id: str, export_id: str, file_format: str) -> str:
    """Where an export's file lives: under its client's and its job's prefix."""
    return f"{EXPORTS_PREFIX}/{tenant}/{job_id}/{export_id}.{file_format}"


def _export(record: ExportRecord) -> ResultsExport:
    return ResultsExport(
        job_id=record.job_id,
        file_format=record.file_format,  # type: ignore[arg-type]  # written as one
        tenant=record.tenant,
        export_id=record.export_id,
        key=record.key,
        state=record.state,  # type: ignore[arg-type]  # written as one
        job_finished_at=record.job_finished_at,
        created_at=record.created_at,
        error=record.error,
        upload_id=record.upload_id,
        etags=tuple(str(etag) for etag in record.etags or ()),
        next_index=int(record.next_index or 0),
        rows=int(record.rows or 0),
        size=int(record.size or 0),
        attempts=int(record.attempts or 0),
        lease_until=record.lease_until,
    )


def get_export(job_id: str, file_format: ExportFormat) -> ResultsExport | None:
    """The job's export in this format, read strongly consistent; None if there is none."""
    try:
        return _export(ExportRecord.get(job_id, file_format, consistent_read=True))
    except ExportRecord.DoesNotExist:
        return None


def job_expiry(job_id: str) -> datetime | None:
    """When DynamoDB deletes the job (its TTL): its export's record goes with it."""
    try:
        record = JobRecord.get(job_id, consistent_read=True, attributes_to_get=["expires_at"])
    except JobRecord.DoesNotExist:
        return None
    return record.expires_at


def start_export(export: ResultsExport, expires_at: datetime | None) -> ResultsExport:
    """Record a new export unless the job has one in this format already that is not
    failed and is of the same finish: of two requests at once, both get the first's."""
    record = ExportRecord(
        job_id=export.job_id,
        file_format=export.file_format,
        tenant=export.tenant,
        export_id=export.export_id,
        key=export.key,
        state=WRITING,
        job_finished_at=export.job_finished_at,
        created_at=export.created_at,
        expires_at=expires_at,
    )
    replaceable = (
        ExportRecord.job_id.does_not_exist()
        | (ExportRecord.state == FAILED)
        | (ExportRecord.job_finished_at != export.job_finished_at)
    )
    try:
        record.save(condition=replaceable)
    except PutError as error:
        if error.cause_response_code != "ConditionalCheckFailedException":
            raise
        winner = get_export(export.job_id, export.file_format)
        if winner is None:  # pragma: no cover - records are deleted only by their TTL
            raise RuntimeError(f"export of {export.job_id} vanished after a refused put") from None
        return winner
    return export


def _update(
    export: ResultsExport | tuple[str, str, str],
    actions: Sequence[Action],
    condition: Condition,
) -> ResultsExport:
    """One conditional update of the export's record (or of (job_id, format, export_id)),
    only while it is still that export; LeaseLost when the condition fails."""
    if isinstance(export, ResultsExport):
        export = (export.job_id, export.file_format, export.export_id)
    job_id, file_format, export_id = export
    record = ExportRecord(job_id=job_id, file_format=file_format)
    try:
        record.update(
            actions=list(actions), condition=condition & (ExportRecord.export_id == export_id)
        )
    except UpdateError as error:
        if error.cause_response_code == "ConditionalCheckFailedException":
            raise LeaseLost(job_id) from error
        raise
    return _export(record)


def acquire(
    job_id: str, file_format: str, export_id: str, owner: str, now: datetime, lease_s: float
) -> ResultsExport | None:
    """Take the export's writing for `owner` until now + lease_s: when no one holds it, its
    holder's lease ran out, or `owner` holds it already. None when another invocation holds
    it, or the export is written, failed or replaced."""
    free = (
        ExportRecord.lease_until.does_not_exist()
        | (ExportRecord.lease_until < now)
        | (ExportRecord.lease == owner)
    )
    try:
        return _update(
            (job_id, file_format, export_id),
            [
                ExportRecord.lease.set(owner),
                ExportRecord.lease_until.set(now + timedelta(seconds=lease_s)),
                ExportRecord.attempts.add(1),
            ],
            (ExportRecord.state == WRITING) & free,
        )
    except LeaseLost:
        return None


def _held(owner: str) -> Condition:
    return (ExportRecord.lease == owner) & (ExportRecord.state == WRITING)


def note_upload(export: ResultsExport, owner: str, upload_id: str) -> ResultsExport:
    """The multipart upload the export's parts go to, once."""
    return _update(
        export,
        [ExportRecord.upload_id.set(upload_id)],
        _held(owner) & ExportRecord.upload_id.does_not_exist(),
    )


def part_done(
    export: ResultsExport,
    owner: str,
    etag: str,
    next_index: int,
    rows: int,
    size: int,
    now: datetime,
    lease_s: float,
) -> ResultsExport:
    """Part number len(export.etags) + 1 is uploaded with `etag` and holds the images up to
    next_index - 1: move the checkpoint past it, if it is still where `export` had it."""
    return _update(
        export,
        [
            ExportRecord.etags.set(ExportRecord.etags.append([etag])),
            ExportRecord.next_index.set(next_index),
            ExportRecord.rows.set(rows),
            ExportRecord.size.set(size),
            ExportRecord.attempts.set(0),
            ExportRecord.lease_until.set(now + timedelta(seconds=lease_s)),
        ],
        _held(owner) & (ExportRecord.next_index == export.next_index),
    )


def finish(export: ResultsExport, owner: str) -> ResultsExport:
    """The file is complete: the export is ready, and held by no one."""
    return _update(
        export,
        [
            ExportRecord.state.set(READY),
            ExportRecord.lease.remove(),
            ExportRecord.lease_until.remove(),
        ],
        _held(owner),
    )


def fail(export: ResultsExport, owner: str, error: str) -> ResultsExport:
    """The export cannot be written: it says why, and a new request starts another."""
    return _update(
        export,
        [
            ExportRecord.state.set(FAILED),
            ExportRecord.error.set(error),
            ExportRecord.lease.remove(),
            ExportRecord.lease_until.remove(),
        ],
        _held(owner),
    )


def release(export: ResultsExport, owner: str) -> None:
    """Give the lease up (this invocation is out of time; the next one goes on at once)."""
    with contextlib.suppress(LeaseLost):
        _update(
            export,
            [ExportRecord.lease.remove(), ExportRecord.lease_until.remove()],
            _held(owner),
        )


# -- the file ------------------------------------------------------------------------------


def create_upload(key: str, content_type: str, filename: str) -> str:
    """A new multipart upload to `key`; the file's type and name are the object's own, so
    every download gets them."""
    response = _s3().create_multipart_upload(
        Bucket=bucket(),
        Key=key,
        ContentType=content_type,
        ContentDisposition=f'attachment; filename="{filename}"',
    )
    return str(response["UploadId"])


def upload_part(key: str, upload_id: str, number: int, body: BinaryIO) -> str:
    """Part `number` (from 1) of the upload; its ETag. Sending a part again replaces it."""
    response = _s3().upload_part(
        Bucket=bucket(), Key=key, UploadId=upload_id, PartNumber=number, Body=body
    )
    return str(response["ETag"])


def complete_upload(key: str, upload_id: str, etags: Sequence[str]) -> None:
    """Join the parts into the file. An upload completed already (by an invocation that
    died before recording it) counts as completed when its object is there."""
    parts = [{"PartNumber": n, "ETag": etag} for n, etag in enumerate(etags, start=1)]
    try:
        _s3().complete_multipart_upload(
            Bucket=bucket(), Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    except ClientError as error:
        if _code(error) != "NoSuchUpload" or not _exists(key):
            raise


def abort_upload(key: str, upload_id: str) -> None:
    """Drop an upload's parts (an export that failed); one gone already is fine."""
    try:
        _s3().abort_multipart_upload(Bucket=bucket(), Key=key, UploadId=upload_id)
    except ClientError as error:
        if _code(error) != "NoSuchUpload":
            raise


def _exists(key: str) -> bool:
    try:
        _s3().head_object(Bucket=bucket(), Key=key)
    except ClientError as error:
        if _code(error) in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def download_url(key: str, expires_in_s: int) -> str:
    """A presigned GET of the file, valid `expires_in_s` seconds. A credential: never log it."""
    return str(
        _s3().generate_presigned_url(
            "get_object", Params={"Bucket": bucket(), "Key": key}, ExpiresIn=expires_in_s
        )
    )


# -- the export queue ----------------------------------------------------------------------


@lru_cache(maxsize=1)
def _sqs() -> Any:
    return aws.client("sqs")


def enqueue_export(body: dict[str, Any]) -> None:
    """One export message (jobs.export.ExportMessage): the export function writes the file,
    or goes on writing it, when it arrives."""
    url = get_settings().export_queue_url
    if not url:
        raise SettingsError("EXPORT_QUEUE_URL is not set: the export queue's URL is needed")
    _sqs().send_message(QueueUrl=url, MessageBody=json.dumps(body))
