"""The job repository in DynamoDB: a job's record created, read, finished, cancelled and
settled, its failure summary kept. Takes and returns retail_pulse.domain types; the records
stay inside this package. An image's record is image_records.py's; a batch's results are
filed by filing.py."""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action

from retail_pulse.data.failure_pass import SummaryPass, begin_actions, pass_removals, still_at
from retail_pulse.data.image_records import _write_images, summarize_failures
from retail_pulse.data.manifest import submitted_images, write_manifest
from retail_pulse.data.models import (
    FAILED,
    FILING_PREFIX,
    ONGOING_SHARDS,
    ImageRecord,
    JobRecord,
    OngoingJobsIndex,
    connection,
    ongoing_shard,
)
from retail_pulse.data.record_keys import expiry, listed_as, status_partition
from retail_pulse.data.transactions import update_if, update_item_if
from retail_pulse.domain import DEFAULT_TENANT, Image, Job
from retail_pulse.failure_summary import FailedImage, FailureSummary
from retail_pulse.settings import get_settings

# BatchWriteItem takes 25 items; a thread per slice keeps a 10,000-image submit to a few
# seconds (each thread's batch_write retries unprocessed items with backoff).
_WRITE_SLICE = 500


_WRITE_THREADS = 8


def _job(record: JobRecord) -> Job:
    return Job(
        job_id=record.job_id,
        tenant=record.tenant or DEFAULT_TENANT,
        total=int(record.total),
        succeeded=int(record.succeeded),
        failed=int(record.failed),
        visit_count=int(record.visit_count),
        created_at=record.created_at,
        cancelled=int(record.cancelled or 0),
        finished_at=record.finished_at,
        cancelled_at=record.cancelled_at,
        progressed_at=record.progressed_at,
        requeued_at=record.requeued_at,
        retried_at=record.retried_at,
        callback_url=record.callback_url,
        event_id=record.event_id,
        event_pending=bool(record.event_pending),
        upload_id=record.upload_id,
        ingesting=bool(record.ingesting),
        ingest_error=record.ingest_error,
        retry_next=None if record.retry_next is None else int(record.retry_next),
        retry_moved_at=record.retry_moved_at,
        event_attempts=int(record.event_attempts or 0),
        event_retry_at=record.event_retry_at,
        failures=unpack_failures(record.failures) if record.failures else None,
        summarizing=record.summary_pass is not None,
        summary_moved_at=record.summary_moved_at,
    )


def pack_failures(summary: FailureSummary) -> bytes:
    """A failure summary as the job keeps it: compressed JSON (100 stores' errors of one
    kind compress to a few hundred bytes; 100 of the longest, 512 characters of presigned
    URL each, to under 40 KB), so reading the job stays one or a few read units."""
    document = {
        "count": summary.store_count,
        "stores": [[failure.store_id, failure.error] for failure in summary.stores],
    }
    return zlib.compress(json.dumps(document, separators=(",", ":")).encode(), 6)


def unpack_failures(packed: bytes) -> FailureSummary:
    """The summary pack_failures kept."""
    document = json.loads(zlib.decompress(packed))
    stores = tuple(FailedImage(store_id, error) for store_id, error in document["stores"])
    return FailureSummary(stores=stores, store_count=int(document["count"]))


def create_job(job: Job, images: Sequence[Image]) -> None:
    """Write the job, then its manifest (every image as submitted), then a record for each
    image that is failed already (its store unknown). The job first: a status query must
    never miss a job whose images exist. An unfinished job joins the OngoingJobs index.

    An image to be processed gets its record only when its result is filed (file_outcomes):
    until then the manifest is all there is of it, and it is `pending`.
    """
    JobRecord(
        job_id=job.job_id,
        tenant=job.tenant,
        total=job.total,
        succeeded=job.succeeded,
        failed=job.failed,
        visit_count=job.visit_count,
        created_at=job.created_at,
        ongoing_shard=ongoing_shard(job.job_id),
        tenant_status=status_partition(job.tenant, job.state),
        callback_url=job.callback_url,
        expires_at=expiry(),
        upload_id=job.upload_id,
        ingesting=job.ingesting or None,
    ).save(condition=JobRecord.job_id.does_not_exist())
    write_manifest(job.job_id, images)
    failed = [image for image in images if image.state == FAILED]
    slices = [failed[i : i + _WRITE_SLICE] for i in range(0, len(failed), _WRITE_SLICE)]
    if len(slices) <= 1:
        for part in slices:
            _write_images(part)
        return
    with ThreadPoolExecutor(max_workers=min(_WRITE_THREADS, len(slices))) as pool:
        list(pool.map(_write_images, slices))


def resume_job(job_id: str, images: Sequence[Image]) -> set[int]:
    """Finish the writes of a job whose submit failed part-way, from `images` as the first
    attempt classified them (the caller merges what its manifest holds): the manifest
    whole, if a slice of it is missing, and a record for each image failed at submit that
    has none yet (its count is in the job already). Returns the indexes of the images that
    have a record now: the others still need their messages."""
    if len(submitted_images(job_id)) < len(images):
        write_manifest(job_id, images)
    recorded = {
        int(record.image_index)
        for record in ImageRecord.query(
            job_id,
            range_key_condition=ImageRecord.image_index >= 0,
            consistent_read=True,
            attributes_to_get=["job_id", "image_index"],
        )
    }
    missing = [i for i in images if i.state == FAILED and i.image_index not in recorded]
    for start in range(0, len(missing), _WRITE_SLICE):
        _write_images(missing[start : start + _WRITE_SLICE])
    return recorded | {image.image_index for image in missing}


def get_job(job_id: str, consistent: bool = True) -> Job | None:
    """The job, read strongly consistent unless `consistent=False` (half the read units,
    for a check that may lag a write by a moment)."""
    try:
        return _job(JobRecord.get(job_id, consistent_read=consistent))
    except JobRecord.DoesNotExist:
        return None


def _terminal_actions(job: Job, now: datetime) -> list[Action]:
    """What every terminal transition writes: when, its event (to be emitted), and the
    job's place in its client's list."""
    return [
        JobRecord.finished_at.set(now),
        JobRecord.event_id.set(str(uuid.uuid4())),
        JobRecord.event_pending.set(True),
        *listed_as(job.tenant, job.state),
    ]


def mark_finished(job_id: str) -> Job | None:
    """Stamp `finished_at` on a job whose images are all done, exactly once, with the
    event of that transition still to be emitted.

    Returns the job only to the one caller that stamped it, so the job's event, log line
    and duration metric are emitted once, whichever invocation finished it. The job stays
    in OngoingJobs until its event is out (`event_emitted`), so the reconciler emits it if
    this caller dies first.

    A failed job with more failures than this invocation sums up (SUMMARY_INLINE_FAILURES)
    is not stamped: its paged summary begins instead (data/failure_pass.py), and the job is
    returned, `summarizing` and unstamped, to the one caller that began it, which hands the
    pass on (jobs/finish.py); the pass stamps it when it ends (stamp_summarized).
    """
    try:
        record = JobRecord.get(job_id, consistent_read=True)
    except JobRecord.DoesNotExist:
        return None
    job = _job(record)
    if job.finished_at is not None and job.cancelled_at is not None:
        # A cancelled job ends early; its last images were being filed `cancelled`.
        _settle(job)
    if not job.done or job.finished_at is not None or job.summarizing:
        return None
    now = datetime.now(UTC)
    actions = _terminal_actions(job, now)
    if job.state == "failed":
        # Its failures summed up once, here: every status poll and its event read only this.
        summary = summarize_failures(job_id, job.failed, job.total)
        if summary is None:
            begun = update_if(record, begin_actions(now), _UNSTAMPED & _NO_PASS)
            return _job(record) if begun else None
        actions.append(JobRecord.failures.set(pack_failures(summary)))
    stamped = update_if(record, actions, _UNSTAMPED & _NO_PASS)
    return _job(record) if stamped else None


_UNSTAMPED = JobRecord.finished_at.does_not_exist()
_NO_PASS = JobRecord.summary_pass.does_not_exist()


def stamp_summarized(summary: SummaryPass, failures: FailureSummary) -> Job | None:
    """Stamp a job whose paged summary has ended, as mark_finished stamps one, with its
    failures kept and the pass taken off, conditional on the pass being where it was read.
    Returns the job only to the one caller that stamped it."""
    try:
        record = JobRecord.get(summary.job_id, consistent_read=True)
    except JobRecord.DoesNotExist:
        return None
    job = replace(_job(record), summarizing=False)
    actions = [
        *_terminal_actions(job, datetime.now(UTC)),
        JobRecord.failures.set(pack_failures(failures)),
        *pass_removals(),
    ]
    stamped = update_if(record, actions, _UNSTAMPED & still_at(summary))
    return _job(record) if stamped else None


# A cancel that keeps finding the job moved on (images counted between its read and its
# write) reads it again this many times before it gives up (JobBusy).
_CANCEL_TRIES = 10


class JobBusy(Exception):
    """The job kept changing under a write that needs it to stand still for a moment."""


def _still_short(job: Job) -> Condition:
    """True while the job, as read, is still short of its total: its counters have not
    grown by the images it lacked. DynamoDB cannot add counters up in a condition, so each
    may grow by its share of the images lacking, less one: filings that leave the job
    unfinished do not fail the write, and no growth that completes it passes."""
    lacking = job.total - job.succeeded - job.failed - job.cancelled
    room = max(lacking - 1, 0)
    cancelled = JobRecord.cancelled <= job.cancelled
    if not job.cancelled:
        cancelled = JobRecord.cancelled.does_not_exist() | cancelled
    return (
        (JobRecord.succeeded <= job.succeeded + room // 2)
        & (JobRecord.failed <= job.failed + room - room // 2)
        & cancelled
    )


def cancel(job: Job) -> Job | None:
    """Make an unfinished job `cancelled` now, with its event to be emitted; None when it
    has finished meanwhile (or no longer exists): stamped, or its counters complete (its
    last image counted; the stamp is on its way), which a condition on the counters checks
    in the very write. Its unprocessed images are filed `cancelled` as their messages
    arrive (the process function reads the job first).

    Raises JobBusy when the job kept moving for _CANCEL_TRIES reads and writes.
    """
    for _ in range(_CANCEL_TRIES):
        if job.finished_at is not None or job.done:
            return None
        now = datetime.now(UTC)
        record = JobRecord(job_id=job.job_id)
        actions = [
            JobRecord.cancelled_at.set(now),
            *_terminal_actions(replace(job, cancelled_at=now), now),
        ]
        condition = (
            JobRecord.job_id.exists() & JobRecord.finished_at.does_not_exist() & _still_short(job)
        )
        if update_if(record, actions, condition):
            return _job(record)
        current = get_job(job.job_id)
        if current is None:
            return None
        job = current
    raise JobBusy(job.job_id)


def event_emitted(job: Job) -> None:
    """The job's event is out: forget it and the failed tries at it, unless a later
    transition replaced it (a retry; the condition is on the transition's event id). When
    every image had its final record, the job leaves OngoingJobs in the same update, with
    the filings left open on it from before that transition (_leftovers)."""
    removals = ["event_pending", "event_attempts", "event_retry_at"]
    if job.done:
        leftovers = _leftovers(job)
        if leftovers is not None:
            removals += ["ongoing_shard", *leftovers]
    _remove_if_transition(job, removals, pending=None)


def _leftovers(job: Job) -> list[str] | None:
    """The filings still open on a job that was done when its transition was stamped,
    which that job may take out of OngoingJobs with it; None while one opened since is open.

    A filing opened before the stamp holds no uncounted record: the counters were complete
    at the stamp and only a filing's own close counts its records, so one of them uncounted
    would have kept the job short. It was left open by an image write or an open whose
    answer was lost. It is removed only in an update conditional on the transition (its
    event id): a retry since (which reopens images, and may be filing them under new
    filings) fails that condition, and nothing is removed. A filing opened after the stamp
    is left to its owner, or to the reconciler once it is stale (close_stale_filings, which
    counts its records); the job stays in OngoingJobs until then.
    """
    assert job.finished_at is not None
    leftovers = []
    for name, value in _raw_job(job.job_id).items():
        if not name.startswith(FILING_PREFIX):
            continue
        if datetime.fromisoformat(value["M"]["at"]["S"]) >= job.finished_at:
            return None
        leftovers.append(name)
    return leftovers


def _remove_if_transition(job: Job, attributes: Sequence[str], pending: bool | None) -> bool:
    """REMOVE `attributes` from the job's item if it is still in the transition `job` was
    read in (same stamp and event id; with `pending` False, its event out); False if not."""
    names = {f"#r{i}": name for i, name in enumerate(attributes)}
    values: dict[str, Any] = {}
    conditions = []
    if job.event_id is None:
        conditions.append("attribute_not_exists(event_id)")
    else:
        conditions.append("event_id = :event")
        values[":event"] = {"S": job.event_id}
    if job.finished_at is not None:
        conditions.append("finished_at = :finished")
        values[":finished"] = {"S": JobRecord.finished_at.serialize(job.finished_at)}
    if pending is False:
        conditions.append("attribute_not_exists(event_pending)")
    optional: dict[str, Any] = {"ExpressionAttributeValues": values} if values else {}
    return update_item_if(
        connection().client,
        TableName=get_settings().jobs_table,
        Key={"job_id": {"S": job.job_id}},
        UpdateExpression="REMOVE " + ", ".join(names),
        ConditionExpression="attribute_exists(job_id) AND " + " AND ".join(conditions),
        ExpressionAttributeNames=names,
        **optional,
    )


def event_failed(job: Job, retry_at: datetime) -> int | None:
    """Note one more failed try at the job's pending event, and when to try next: the
    number of tries so far, or None if the event is no longer pending (emitted by another,
    or replaced by a retry's transition)."""
    record = JobRecord(job_id=job.job_id)
    tried = update_if(
        record,
        [JobRecord.event_attempts.add(1), JobRecord.event_retry_at.set(retry_at)],
        (JobRecord.event_id == job.event_id) & JobRecord.event_pending.exists(),
    )
    return int(record.event_attempts) if tried else None


def _raw_job(job_id: str) -> dict[str, Any]:
    """The job's item as stored, open filings included (the model does not map them)."""
    response = connection().client.get_item(
        TableName=get_settings().jobs_table, Key={"job_id": {"S": job_id}}, ConsistentRead=True
    )
    return dict(response.get("Item", {}))


def settle(job_id: str) -> bool:
    """Take a terminal job out of OngoingJobs once nothing is left to do for it: its event
    is out and every image has its final record. True when it is (or already was) out."""
    job = get_job(job_id)
    return True if job is None else _settle(job)


def _settle(job: Job) -> bool:
    if job.finished_at is None or job.event_pending or not job.done:
        return False
    leftovers = _leftovers(job)
    if leftovers is None:
        return False
    return _remove_if_transition(job, ["ongoing_shard", *leftovers], pending=False)


def keep_failure_summary(job: Job, summary: FailureSummary) -> bool:
    """Keep the summary on a job that failed before summaries were kept (so its next status
    is one read), unless the job changed since it was read (a retry); True if kept."""
    return update_if(
        JobRecord(job_id=job.job_id),
        [JobRecord.failures.set(pack_failures(summary))],
        (JobRecord.finished_at == job.finished_at)
        & JobRecord.failures.does_not_exist()
        & (JobRecord.failed == job.failed),
    )


def unfinished_jobs(created_before: datetime, rotation: int = 0) -> Iterator[str]:
    """Ids of jobs submitted before `created_before` that have not finished: a Query per
    shard of the sparse OngoingJobs index, never a scan, the shards taken in turn (one job
    of each, starting with shard `rotation` modulo their number), oldest first within each.
    A pass cut short by its time budget has then reached every shard, whatever one holds."""
    order = [(rotation + i) % ONGOING_SHARDS for i in range(ONGOING_SHARDS)]
    queries = [
        iter(JobRecord.ongoing_jobs.query(str(shard), OngoingJobsIndex.created_at < created_before))
        for shard in order
    ]
    while queries:
        for query in list(queries):
            record = next(query, None)
            if record is None:
                queries.remove(query)
            else:
                yield record.job_id


def note_requeued(job_id: str) -> None:
    """Remember when the job's images were last enqueued again, so the next run waits a
    whole soft deadline before doing it again."""
    JobRecord(job_id=job_id).update(
        actions=[JobRecord.requeued_at.set(datetime.now(UTC))],
        condition=JobRecord.job_id.exists(),
    )
