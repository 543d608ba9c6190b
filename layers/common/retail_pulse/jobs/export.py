"""A finished job's full results as one file: POST /api/results/export asks for it, GET
polls it, and the export function writes it (ExportWriter).

The file holds exactly the rows GET /api/results gives (the same reads and row shaping,
jobs/results.py), every image once in submit order: CSV under the same header, or JSON
Lines, one row object a line. It is written to S3 as a multipart upload, a page of images
at a time into a buffer that goes up as one part once it holds EXPORT_PART_BYTES (S3 wants
5 MiB at least, but for the last part): memory stays about one part whatever the job.

After each part the checkpoint (data/exports.py) moves: the part's ETag, and the first
image not in a part yet. An invocation short of time gives its lease up and sends the
export's message again; the next one goes on from the checkpoint (the rows it had read past
the last part are read again). One that dies is replaced when its message comes back and
its lease has run out; a part it uploaded but did not record is uploaded again, with the
same number, which replaces it in S3. So no row is skipped or written twice. An export that
cannot be written (the job retried meanwhile, attempts that keep dying) fails, says why,
and its parts are dropped (AbortMultipartUpload).
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict

from retail_pulse.data import exports as store
from retail_pulse.data.jobs import get_job
from retail_pulse.data.results import job_images
from retail_pulse.domain import ExportFormat, ImageReport, Job, ResultsExport
from retail_pulse.errors import NoExport, UnknownJob, WrongJobState
from retail_pulse.jobs.results import CSV_COLUMNS, row_values, to_csv
from retail_pulse.observability import logger
from retail_pulse.settings import get_settings

CONTENT_TYPES: dict[str, str] = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson; charset=utf-8",
}
# Images read per Query of the job's records (as a page of GET /api/results).
PAGE = 1000
# Invocations that took the lease without moving the checkpoint before the export fails:
# a job whose export kills every invocation must not be retried for ever.
MAX_ATTEMPTS = 3
# DynamoDB rejects keys over 2 KB; ids we issue are 36 characters.
_MAX_JOB_ID = 256


class ExportMessage(BaseModel):
    """One message of ExportQueue: write (or go on writing) this export."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    job_id: str
    file_format: ExportFormat
    export_id: str


@dataclass(frozen=True)
class ExportAnswer:
    """What a request about an export answers: the export, and once it is ready a
    presigned GET of its file (`url`, valid `url_expires_s`); while it is written, how
    long a poller should wait."""

    export: ResultsExport
    url: str | None = None
    url_expires_s: int | None = None
    retry_after_s: int | None = None


def poll_path(job_id: str, file_format: str) -> str:
    """Where the export is polled (the 202's Location)."""
    return f"/api/results/export?jobid={job_id}&format={file_format}"


def _callers_job(tenant: str, job_id: str) -> Job:
    job = get_job(job_id) if job_id and len(job_id) <= _MAX_JOB_ID else None
    if job is None or job.tenant != tenant:
        raise UnknownJob(job_id)  # another client's job answers as one that does not exist
    return job


def request_export(tenant: str, job_id: str, file_format: ExportFormat) -> ExportAnswer:
    """The export of the caller's finished job in this format: the one it has already
    (the same request twice answers the same export), or a new one, enqueued for the
    export function. A failed export, or one of a finish before a retry, is replaced."""
    job = _callers_job(tenant, job_id)
    if not job.done or job.finished_at is None:
        raise WrongJobState(
            f"job {job_id} is {job.state}: its results are exported once every image is "
            f"done; poll GET /api/status?jobid={job_id}, then ask again"
        )
    current = store.get_export(job_id, file_format)
    if current is None or current.state == store.FAILED or not _of_this_finish(current, job):
        current = _start(job, file_format)
    elif current.state == store.WRITING and not _held(current):
        # No invocation holds it: its message may be lost (a request that died between
        # recording it and sending it). One more is harmless: the lease lets one write.
        _send(current)
    return _answer(current, job)


def _held(export: ResultsExport) -> bool:
    return export.lease_until is not None and export.lease_until > datetime.now(UTC)


def _send(export: ResultsExport) -> None:
    message = ExportMessage(
        job_id=export.job_id, file_format=export.file_format, export_id=export.export_id
    )
    store.enqueue_export(message.model_dump())


def _start(job: Job, file_format: ExportFormat) -> ResultsExport:
    """A new export of the job's finish, sent to the export function; or the one another
    request recorded at the same moment."""
    assert job.finished_at is not None
    job_id, tenant = job.job_id, job.tenant
    export_id = str(uuid.uuid4())
    new = ResultsExport(
        job_id=job_id,
        file_format=file_format,
        tenant=tenant,
        export_id=export_id,
        key=store.export_key(tenant, job_id, export_id, file_format),
        state="writing",
        job_finished_at=job.finished_at,
        created_at=datetime.now(UTC),
    )
    expires_at = store.job_expiry(job_id) or job.created_at + timedelta(
        days=get_settings().retention_days
    )
    current = store.start_export(new, expires_at)
    if current.export_id == export_id:
        _send(current)
        logger.info("export requested", extra={"job_id": job_id, "format": file_format})
    return current


def export_status(tenant: str, job_id: str, file_format: ExportFormat) -> ExportAnswer:
    """Where the caller's export stands. NoExport when none was asked for, or the job was
    retried since (its results changed: a new export is needed)."""
    job = _callers_job(tenant, job_id)
    current = store.get_export(job_id, file_format)
    if current is None or not _of_this_finish(current, job):
        since = " since the job was retried" if current is not None else ""
        raise NoExport(
            f"job {job_id} has no {file_format} export{since}: POST "
            f"{poll_path(job_id, file_format)} to make one (once the job has finished)"
        )
    return _answer(current, job)


def _of_this_finish(export: ResultsExport, job: Job) -> bool:
    return export.job_finished_at == job.finished_at


def _answer(export: ResultsExport, job: Job) -> ExportAnswer:
    if export.state == "ready":
        expires_s = get_settings().export_url_expires_s
        return ExportAnswer(export, store.download_url(export.key, expires_s), expires_s)
    if export.state == "writing":
        # About 2 s for a job of up to 100,000 images; a million take a minute or more.
        return ExportAnswer(export, retry_after_s=2 if job.total <= 100_000 else 10)
    return ExportAnswer(export)


def render(rows: Sequence[ImageReport], file_format: str) -> bytes:
    """The rows as the file holds them: CSV lines (no header), or one JSON object a line
    with GET /api/results's keys."""
    if file_format == "csv":
        return to_csv(rows, header=False).encode()
    lines = (
        json.dumps(dict(zip(CSV_COLUMNS, row_values(row), strict=True)), ensure_ascii=False)
        for row in rows
    )
    return "".join(f"{line}\n" for line in lines).encode()


def header(file_format: str) -> bytes:
    """What the file starts with: the CSV header row of GET /api/results?format=csv."""
    return to_csv([]).encode() if file_format == "csv" else b""


class OutOfTime(Exception):
    """Less than EXPORT_RESERVE_S of the invocation is left: hand over to a new one."""


class ExportWriter:
    """One invocation's work on one export, holding its lease as `owner`."""

    def __init__(
        self, message: ExportMessage, owner: str, time_left_s: Callable[[], float]
    ) -> None:
        self.message = message
        self.owner = owner
        self.time_left_s = time_left_s
        settings = get_settings()
        self.part_bytes = settings.export_part_bytes
        self.reserve_s = settings.export_reserve_s

    def lease_s(self) -> float:
        return self.time_left_s() + 60.0

    def check_time(self) -> None:
        if self.time_left_s() < self.reserve_s:
            raise OutOfTime

    def run(self) -> None:
        message = self.message
        export = store.acquire(
            message.job_id,
            message.file_format,
            message.export_id,
            self.owner,
            datetime.now(UTC),
            self.lease_s(),
        )
        if export is None:
            return  # another invocation holds it, or it is written, failed or replaced
        logger.append_keys(job_id=export.job_id)
        if export.attempts > MAX_ATTEMPTS:
            self._fail(export, f"{MAX_ATTEMPTS} attempts died writing it: export again")
            return
        job = get_job(export.job_id)
        if job is None or not _of_this_finish(export, job):
            self._fail(
                export,
                "the job was retried while it was exported: export again once it has finished",
            )
            return
        try:
            self._write(export, job)
        except OutOfTime:
            store.release(export, self.owner)
            store.enqueue_export(message.model_dump())
            logger.info("export handed over to a new invocation")
        except store.LeaseLost:
            logger.warning("export lease lost; another invocation goes on")

    def _write(self, export: ResultsExport, job: Job) -> None:
        """From the checkpoint to the end of the job: part after part, then the file."""
        fmt = export.file_format
        if export.upload_id is None:
            upload_id = store.create_upload(export.key, CONTENT_TYPES[fmt], f"{job.job_id}.{fmt}")
            try:
                export = store.note_upload(export, self.owner, upload_id)
            except store.LeaseLost:
                store.abort_upload(export.key, upload_id)
                raise
        buffer = io.BytesIO(header(fmt) if export.next_index == 0 else b"")
        buffer.seek(0, io.SEEK_END)
        index, rows = export.next_index, export.rows
        while index < job.total:
            self.check_time()
            page, last = job_images(job.job_id, job.total, PAGE, index - 1 if index else None)
            buffer.write(render(page, fmt))
            index, rows = last + 1, rows + len(page)
            if buffer.tell() >= self.part_bytes:
                export = self._upload(export, buffer, index, rows)
                buffer = io.BytesIO()
        if buffer.tell() or not export.etags:  # the last part (a file has one at least)
            export = self._upload(export, buffer, index, rows)
        assert export.upload_id is not None
        store.complete_upload(export.key, export.upload_id, export.etags)
        store.finish(export, self.owner)
        logger.info(
            "export written",
            extra={"rows": export.rows, "bytes": export.size, "parts": len(export.etags)},
        )

    def _upload(
        self, export: ResultsExport, buffer: io.BytesIO, next_index: int, rows: int
    ) -> ResultsExport:
        """One part: uploaded, then recorded with the images it ends before."""
        assert export.upload_id is not None
        size = buffer.tell()
        buffer.seek(0)
        number = len(export.etags) + 1
        etag = store.upload_part(export.key, export.upload_id, number, buffer)
        return store.part_done(
            export,
            self.owner,
            etag,
            next_index,
            rows,
            export.size + size,
            datetime.now(UTC),
            self.lease_s(),
        )

    def _fail(self, export: ResultsExport, error: str) -> None:
        """The export ends with `error`; its parts are dropped."""
        store.fail(export, self.owner, error)
        if export.upload_id is not None:
            store.abort_upload(export.key, export.upload_id)
        logger.info("export failed", extra={"error": error})


def write_export(message: ExportMessage, owner: str, time_left_s: Callable[[], float]) -> None:
    """Write the export, or go on writing it, as far as this invocation's time goes."""
    ExportWriter(message, owner, time_left_s).run()
