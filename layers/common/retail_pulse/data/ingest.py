"""An upload job's ingest, as its job item records it: the checkpoint that lets a new
invocation go on where the last one stopped, and the lease that keeps one invocation at a
time on a job. The only code that reads or writes these attributes, and the one that
sends the ingest's own messages (IngestQueue).

On the job item, beside `ingesting` (data/models.JobRecord):
- `ingest_phase`: "validate" (the first pass: read and check everything, enqueue nothing)
  or "enqueue" (the second: write the manifest and enqueue the images);
- `ingest_enqueued`: images whose manifest slices are written and whose messages are sent,
  a multiple of the chunk except at the end: where the second pass goes on;
- `ingest_lease`, `ingest_lease_until`: which invocation holds the job, until when; every
  checkpoint renews it and is conditional on it, so an invocation that lost its lease
  (it stalled past it) cannot move the checkpoint any more;
- `ingest_attempts`: invocations that took the lease since the checkpoint last moved: an
  upload that kills every invocation (out of memory, say) fails its job after a few.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Literal

from botocore.exceptions import ClientError

from retail_pulse.data import aws
from retail_pulse.data.image_records import _image_record
from retail_pulse.data.jobs import get_job
from retail_pulse.data.manifest import write_manifest
from retail_pulse.data.models import ImageRecord, JobRecord, connection
from retail_pulse.domain import FAILED, Image, Job
from retail_pulse.settings import SettingsError, get_settings

Phase = Literal["validate", "enqueue"]
VALIDATE: Phase = "validate"
ENQUEUE: Phase = "enqueue"
_INGEST_ATTRIBUTES = (
    "ingesting",
    "ingest_phase",
    "ingest_enqueued",
    "ingest_lease",
    "ingest_lease_until",
    "ingest_attempts",
)


@dataclass(frozen=True)
class IngestState:
    """Where a job's ingest stands, as the invocation holding its lease found it."""

    job: Job
    phase: Phase
    enqueued: int
    attempts: int


class LeaseLost(Exception):
    """Another invocation holds the job's ingest now (this one stalled past its lease),
    or the ingest ended meanwhile: this invocation must stop without writing more."""


def _table() -> str:
    return get_settings().jobs_table


def _update(
    job_id: str, expression: str, condition: str, values: dict[str, Any], **extra: Any
) -> Any:
    names = extra.pop("names", None)
    request: dict[str, Any] = {
        "TableName": _table(),
        "Key": {"job_id": {"S": job_id}},
        "UpdateExpression": expression,
        "ConditionExpression": condition,
        **extra,
    }
    if values:
        request["ExpressionAttributeValues"] = values
    if names:
        request["ExpressionAttributeNames"] = names
    try:
        return connection().client.update_item(**request)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            raise LeaseLost(job_id) from error
        raise


def _moment(at: datetime) -> dict[str, str]:
    """A moment as the lease stores it: epoch seconds, compared as numbers."""
    return {"N": f"{at.timestamp():.3f}"}


def acquire(job_id: str, owner: str, now: datetime, lease_s: float) -> IngestState | None:
    """Take the job's ingest for `owner` until now + lease_s: when no one holds it, its
    holder's lease has run out, or `owner` holds it already. None when another invocation
    holds it, or the job is not being ingested (any more)."""
    try:
        response = _update(
            job_id,
            "SET ingest_lease = :owner, ingest_lease_until = :until ADD ingest_attempts :one",
            "ingesting = :true AND (attribute_not_exists(ingest_lease_until) "
            "OR ingest_lease_until < :now OR ingest_lease = :owner)",
            {
                ":owner": {"S": owner},
                ":until": _moment(now + timedelta(seconds=lease_s)),
                ":now": _moment(now),
                ":one": {"N": "1"},
                ":true": {"BOOL": True},
            },
            ReturnValues="ALL_NEW",
        )
    except LeaseLost:
        return None
    item = response["Attributes"]
    job = get_job_from_item(item)
    return IngestState(
        job=job,
        phase=ENQUEUE if item.get("ingest_phase", {}).get("S") == ENQUEUE else VALIDATE,
        enqueued=int(item.get("ingest_enqueued", {}).get("N", "0")),
        attempts=int(item.get("ingest_attempts", {}).get("N", "1")),
    )


def get_job_from_item(item: dict[str, Any]) -> Job:
    """The job of a raw item (an update's ALL_NEW answer)."""
    from retail_pulse.data.jobs import _job

    return _job(JobRecord.from_raw_data(item))


def note_read(job_id: str, owner: str, images_read: int, now: datetime, lease_s: float) -> None:
    """The first pass's progress: `total` is the images read so far (what status shows),
    the lease is renewed and the attempts start again (the ingest is moving)."""
    _update(
        job_id,
        "SET #total = :read, ingest_lease_until = :until, ingest_attempts = :zero",
        "ingest_lease = :owner AND ingest_phase = :validate",
        {
            ":read": {"N": str(images_read)},
            ":until": _moment(now + timedelta(seconds=lease_s)),
            ":zero": {"N": "0"},
            ":owner": {"S": owner},
            ":validate": {"S": VALIDATE},
        },
        names={"#total": "total"},
    )


def start_ingest_phase(job_id: str, owner: str) -> None:
    """A fresh ingest begins with its first pass (called once, by the first holder)."""
    _update(
        job_id,
        "SET ingest_phase = :validate, ingest_enqueued = :zero",
        "ingest_lease = :owner AND attribute_not_exists(ingest_phase)",
        {":validate": {"S": VALIDATE}, ":zero": {"N": "0"}, ":owner": {"S": owner}},
    )


def validated(
    job_id: str,
    owner: str,
    total: int,
    visit_count: int,
    callback_url: str | None,
    now: datetime,
    lease_s: float,
) -> None:
    """The first pass is over and the upload is a valid job of `total` images: from now on
    the second pass writes and enqueues them."""
    values: dict[str, Any] = {
        ":total": {"N": str(total)},
        ":visits": {"N": str(visit_count)},
        ":enqueue": {"S": ENQUEUE},
        ":validate": {"S": VALIDATE},
        ":zero": {"N": "0"},
        ":until": _moment(now + timedelta(seconds=lease_s)),
        ":owner": {"S": owner},
    }
    expression = (
        "SET #total = :total, visit_count = :visits, ingest_phase = :enqueue, "
        "ingest_enqueued = :zero, ingest_attempts = :zero, ingest_lease_until = :until"
    )
    if callback_url is not None:
        expression += ", callback_url = :callback"
        values[":callback"] = {"S": callback_url}
    _update(
        job_id,
        expression,
        "ingest_lease = :owner AND ingest_phase = :validate",
        values,
        names={"#total": "total"},
    )


def write_chunk(job_id: str, images: Sequence[Image]) -> None:
    """The manifest slices of a chunk of images (it starts at a slice boundary), and the
    records of those already failed (unknown stores). Rewriting a chunk writes the same
    items again: a resumed ingest may."""
    write_manifest(job_id, images)
    failed = [image for image in images if image.state == FAILED]
    if failed:
        with ImageRecord.batch_write() as batch:
            for image in failed:
                batch.save(_image_record(image))


def chunk_done(
    job_id: str, owner: str, start: int, end: int, failed: int, now: datetime, lease_s: float
) -> None:
    """Images start..end-1 are written and enqueued: move the checkpoint to `end` and count
    the chunk's unknown-store failures, once (the checkpoint must still be at `start`, and
    the lease this invocation's). LeaseLost otherwise."""
    values: dict[str, Any] = {
        ":end": {"N": str(end)},
        ":start": {"N": str(start)},
        ":zero": {"N": "0"},
        ":until": _moment(now + timedelta(seconds=lease_s)),
        ":owner": {"S": owner},
    }
    expression = "SET ingest_enqueued = :end, ingest_attempts = :zero, ingest_lease_until = :until"
    if failed:
        expression += " ADD failed :failed"
        values[":failed"] = {"N": str(failed)}
    _update(
        job_id,
        expression,
        "ingest_lease = :owner AND ingest_enqueued = :start AND attribute_not_exists(cancelled_at)",
        values,
    )


def finish(job_id: str, owner: str) -> None:
    """Every image is written and enqueued: the job is no longer being ingested, and ends
    when its images do."""
    _update(
        job_id,
        "REMOVE " + ", ".join(_INGEST_ATTRIBUTES),
        "ingest_lease = :owner",
        {":owner": {"S": owner}},
    )


def fail(job_id: str, owner: str, error: str, total: int) -> None:
    """The upload is not a job it can run (or could not be read): the job keeps `error`
    and `total` images (those already enqueued: none when the first pass found it), and is
    no longer being ingested."""
    _update(
        job_id,
        "SET ingest_error = :error, #total = :total REMOVE " + ", ".join(_INGEST_ATTRIBUTES),
        "ingest_lease = :owner",
        {":error": {"S": error}, ":total": {"N": str(total)}, ":owner": {"S": owner}},
        names={"#total": "total"},
    )


def stop_cancelled(job_id: str, owner: str, enqueued: int) -> None:
    """The client cancelled the job while it was being ingested: it has the images enqueued
    so far (filed `cancelled` as their messages arrive), and no more are read."""
    _update(
        job_id,
        "SET #total = :total REMOVE " + ", ".join(_INGEST_ATTRIBUTES),
        "ingest_lease = :owner AND attribute_exists(cancelled_at)",
        {":total": {"N": str(enqueued)}, ":owner": {"S": owner}},
        names={"#total": "total"},
    )


def release(job_id: str, owner: str) -> None:
    """Give the lease up (this invocation is out of time; the next one goes on at once)."""
    with contextlib.suppress(LeaseLost):
        _update(
            job_id,
            "REMOVE ingest_lease, ingest_lease_until",
            "ingest_lease = :owner",
            {":owner": {"S": owner}},
        )


def ingest_lease_held(job_id: str, now: datetime) -> bool:
    """Whether an invocation holds the job's ingest now (its lease has not run out)."""
    item = (
        connection()
        .client.get_item(
            TableName=_table(),
            Key={"job_id": {"S": job_id}},
            ConsistentRead=True,
            ProjectionExpression="ingest_lease_until",
        )
        .get("Item", {})
    )
    until = item.get("ingest_lease_until", {}).get("N")
    return until is not None and float(until) >= now.timestamp()


def ingest_job(job_id: str) -> Job | None:
    """The job, read strongly consistent."""
    return get_job(job_id)


# -- the ingest queue ----------------------------------------------------------------------


@lru_cache(maxsize=1)
def _sqs() -> Any:
    return aws.client("sqs")


def _ingest_queue_url() -> str:
    url = get_settings().ingest_queue_url
    if not url:
        raise SettingsError("INGEST_QUEUE_URL is not set: the ingest queue's URL is needed")
    return url


def enqueue_ingest(body: dict[str, Any], delay_s: int = 0) -> None:
    """One ingest message (jobs.ingest.IngestMessage): the ingest function reads the job's
    upload, or goes on reading it, when it arrives."""
    _sqs().send_message(
        QueueUrl=_ingest_queue_url(),
        MessageBody=json.dumps(body),
        DelaySeconds=max(0, min(int(delay_s), 900)),
    )


def hold_ingest_message(receipt_handle: str, seconds: int) -> None:
    """Keep the ingest message this invocation works on hidden for `seconds` more, so no
    other invocation receives it while this one is still reading."""
    _sqs().change_message_visibility(
        QueueUrl=_ingest_queue_url(),
        ReceiptHandle=receipt_handle,
        VisibilityTimeout=max(0, min(int(seconds), 43_200)),
    )
