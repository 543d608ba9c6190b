"""Jobs and their image records in DynamoDB: the only code that reads or writes them.

Takes and returns retail_pulse.domain types; the records stay inside this package.
"""

from __future__ import annotations

import json
import threading
import uuid
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from botocore.exceptions import ClientError
from pynamodb.exceptions import UpdateError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from retail_pulse.data import STORAGE_ERRORS
from retail_pulse.data.manifest import submitted_images, write_manifest
from retail_pulse.data.models import (
    CANCELLED,
    FAILED,
    ONGOING_SHARDS,
    PENDING,
    SUCCEEDED,
    ImageRecord,
    JobRecord,
    OngoingJobsIndex,
    connection,
    ongoing_shard,
)
from retail_pulse.data.record_keys import expiry, listed_as, status_partition
from retail_pulse.data.transactions import ConditionFailed, transact_write, update_if, write_if
from retail_pulse.data.visits import results_partition
from retail_pulse.domain import (
    DEFAULT_TENANT,
    FailedImage,
    FailureSummary,
    Image,
    ImageCancelled,
    ImageResult,
    ImageState,
    ImageSuccess,
    Job,
)
from retail_pulse.observability import logger
from retail_pulse.settings import get_settings

# BatchWriteItem takes 25 items; a thread per slice keeps a 10,000-image submit to a few
# seconds (each thread's batch_write retries unprocessed items with backoff).
_WRITE_SLICE = 500
_WRITE_THREADS = 8


def visit_key(visit_time: str, job_id: str, image_index: int) -> str:
    """The visits indexes' sort key: time order first, unique per image."""
    return f"{visit_time}#{job_id}#{image_index:05d}"


def _image_record(image: Image) -> ImageRecord:
    record = ImageRecord(
        job_id=image.job_id,
        image_index=image.image_index,
        store_id=image.store_id,
        area=image.area,
        url=image.url,
        visit_time=image.visit_time,
        visit_key=visit_key(image.visit_time, image.job_id, image.image_index),
        state=image.state,
        expires_at=expiry(),
    )
    if image.state == FAILED:
        record.error = image.error
        record.failed_job_id = image.job_id  # the sparse FailedImages index
    return record


def _write_images(images: Sequence[Image]) -> None:
    with ImageRecord.batch_write() as batch:
        for image in images:
            batch.save(_image_record(image))


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


def _identity_actions(image: Image) -> list[Action]:
    """What an image's record says of the image itself (its manifest entry, or the message
    that carried it). A message sent before messages carried visit_time leaves the time and
    visit_key its `pending` record was written with."""
    actions: list[Action] = [
        ImageRecord.store_id.set(image.store_id),
        ImageRecord.url.set(image.url),
        # A record a retry reopened keeps its job's retention; a new one gets its own,
        # from now (within the job's few minutes of processing).
        ImageRecord.expires_at.set(ImageRecord.expires_at | expiry()),
    ]
    if image.area is not None:
        actions.append(ImageRecord.area.set(image.area))
    if image.visit_time:
        actions += [
            ImageRecord.visit_time.set(image.visit_time),
            ImageRecord.visit_key.set(visit_key(image.visit_time, image.job_id, image.image_index)),
        ]
    return actions


def _image_actions(
    image: Image, outcome: ImageResult, attempts: int, now: datetime, filed_by: str | None = None
) -> list[Action]:
    """What filing `outcome` writes on its image record (created by this very update when
    the image has none yet)."""
    common: list[Action] = [
        *_identity_actions(image),
        ImageRecord.attempts.set(attempts),
        ImageRecord.finished_at.set(now),
    ]
    if filed_by is not None:
        common.append(ImageRecord.filed_by.set(filed_by))
    if isinstance(outcome, ImageCancelled):
        return [ImageRecord.state.set(CANCELLED), *common]
    if isinstance(outcome, ImageSuccess):
        actions = [
            ImageRecord.state.set(SUCCEEDED),
            ImageRecord.perimeter.set(outcome.perimeter),
            ImageRecord.width.set(outcome.width),
            ImageRecord.height.set(outcome.height),
            ImageRecord.result_store_id.set(results_partition(outcome.tenant, outcome.store_id)),
            *common,
        ]
        if outcome.area:
            actions.append(
                ImageRecord.result_area.set(results_partition(outcome.tenant, outcome.area))
            )
        return actions
    return [
        ImageRecord.state.set(FAILED),
        ImageRecord.error.set(outcome.error),
        ImageRecord.failed_job_id.set(image.job_id),
        *common,
    ]


# An image is pending while it has no record, or a record a retry put back to `pending`.
_UNFILED = ImageRecord.job_id.does_not_exist() | (ImageRecord.state == PENDING)


@dataclass(frozen=True)
class Tally:
    """What a filing adds to its job's counters."""

    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0

    @classmethod
    def of(cls, outcomes: Iterable[ImageResult | ImageState]) -> Tally:
        states = [_state(outcome) for outcome in outcomes]
        return cls(states.count(SUCCEEDED), states.count(FAILED), states.count(CANCELLED))


def _state(outcome: ImageResult | ImageState) -> str:
    if isinstance(outcome, str):
        return outcome
    if isinstance(outcome, ImageSuccess):
        return SUCCEEDED
    return CANCELLED if isinstance(outcome, ImageCancelled) else FAILED


def _count_actions(tally: Tally, now: datetime) -> list[Action]:
    """What a filing adds to its job's counters (one update, whatever its number)."""
    actions: list[Action] = [JobRecord.progressed_at.set(now)]
    if tally.succeeded:
        actions.append(JobRecord.succeeded.add(tally.succeeded))
    if tally.failed:
        actions.append(JobRecord.failed.add(tally.failed))
    if tally.cancelled:
        actions.append(JobRecord.cancelled.add(tally.cancelled))
    return actions


def record_outcome(image: Image, outcome: ImageResult, attempts: int) -> bool:
    """File one image's result and count it on its job, in one transaction (FILING=
    per_image, dead letters, the reconciler).

    Returns False when the image had been filed already (a duplicate or late delivery) or
    its job no longer exists: nothing changes then, so a job's counters always equal its
    image records.
    """
    record = ImageRecord(job_id=image.job_id, image_index=image.image_index)
    job = JobRecord(job_id=image.job_id)
    now = datetime.now(UTC)
    image_actions = _image_actions(image, outcome, attempts, now)
    job_actions = _count_actions(Tally.of([outcome]), now)

    def build(transaction: TransactWrite) -> None:
        transaction.update(record, actions=image_actions, condition=_UNFILED)
        transaction.update(job, actions=job_actions, condition=JobRecord.job_id.exists())

    try:
        transact_write(connection(), build)
    except ConditionFailed:
        return False  # the image filed already, or no job to count it on
    return True


@dataclass(frozen=True)
class Filing:
    """One image's result, to be filed: the image, its outcome, its attempts."""

    image: Image
    outcome: ImageResult
    attempts: int


@dataclass(frozen=True)
class Filed:
    """What file_outcomes did with each image, by position in its `filings`: filed now,
    filed before (a duplicate, unchanged), or not known to be filed (its message should
    come again; if its write landed after all, the reconciler counts it)."""

    filed: list[int]
    duplicates: list[int]
    unsettled: list[int]
    # False when the filing is left open (its closing update failed): counted later.
    closed: bool = True


# The process function's writers of image records: eight threads of their own. Not the
# batch's download threads: once those had made requests, the memory of the bodies they
# freed stayed with the process (1.2 GB of 512 MB with 20 MB images, against 274 MB with
# the writes on one thread; docs/capacity.md).
_WRITERS = 8
_writer_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def image_writers() -> ThreadPoolExecutor:
    """The image-record writers, started on first use."""
    global _writer_pool
    with _pool_lock:
        if _writer_pool is None:
            _writer_pool = ThreadPoolExecutor(_WRITERS, thread_name_prefix="image-writer")
        return _writer_pool


# An open filing older than this belongs to an invocation Lambda has ended (ten times the
# process function's 60 s timeout): the reconciler may count it without racing its owner.
STALE_FILING_S = 600
_FILING_PREFIX = "filing_"


def file_outcomes(job_id: str, filings: Sequence[Filing], writers: Executor | None = None) -> Filed:
    """File the results of several images of one job (FILING=batch): one plain conditional
    write per image, and one update of the job's counters by their totals. No transaction:
    a transaction's writes cost twice a plain write's, its index entries too.

    Exactly once without one: the job first records this filing as open (which images it
    is about to write; one small update of the job's item). Each image's write succeeds
    only if the image has no result yet, and stamps the filing's id on the record. Closing
    the filing adds what it wrote to the counters and removes it from the job, in one
    conditional update, so it counts once. If the invocation dies before closing, the filing
    stays open on the job and the reconciler closes it (`close_stale_filings`), counting the
    records that carry its id. A duplicate delivery finds the image filed by another filing
    and changes nothing.

    Each image's write is its own request (no batch write takes a condition): they run on
    `writers`, or one by one without.
    """
    indexes = [filing.image.image_index for filing in filings]
    if len(set(indexes)) != len(indexes):
        raise ValueError("one filing names each image once")
    filing_id = uuid.uuid4().hex
    now = datetime.now(UTC)
    attribute = _FILING_PREFIX + filing_id
    if not _open_filing(job_id, attribute, indexes, now):
        # Out of OngoingJobs: every image has its final record, counted (a retry puts the
        # job back in the very write that reopens images). A late or repeated delivery:
        # nothing to write, and no filing left on the ended job that nobody would close.
        return Filed(filed=[], duplicates=list(range(len(filings))), unsettled=[], closed=True)

    def write(filing: Filing) -> str:
        return _file_image(filing, filing_id, now)

    outcomes = list(writers.map(write, filings)) if writers else [write(f) for f in filings]
    filed = [i for i, outcome in enumerate(outcomes) if outcome == "filed"]
    unsettled = [i for i, outcome in enumerate(outcomes) if outcome == "unsettled"]
    tally = Tally.of(filings[i].outcome for i in filed)
    residual = [indexes[i] for i in unsettled]
    closed = True
    try:
        found = _close_filing(job_id, attribute, tally, now, residual)
    except STORAGE_ERRORS:
        # Still open: the reconciler counts its records once its invocation is surely over.
        closed = False
    else:
        if not found and (tally != Tally() or residual):
            _filing_gone(job_id, filing_id, tally, residual)
    return Filed(
        filed=filed,
        duplicates=[i for i, outcome in enumerate(outcomes) if outcome == "duplicate"],
        unsettled=unsettled,
        closed=closed,
    )


def _file_image(filing: Filing, filing_id: str, now: datetime) -> str:
    image = filing.image
    record = ImageRecord(job_id=image.job_id, image_index=image.image_index)
    actions = _image_actions(image, filing.outcome, filing.attempts, now, filed_by=filing_id)
    try:
        write_if(record, actions, _UNFILED)
        return "filed"
    except UpdateError as error:
        if error.cause_response_code != "ConditionalCheckFailedException":
            return "unsettled"  # it may yet have been written: left to the open filing
    except STORAGE_ERRORS:
        return "unsettled"
    # Filed before; by this very filing when a retried request had already been applied.
    try:
        current = ImageRecord.get(
            image.job_id,
            image.image_index,
            consistent_read=True,
            # The keys too: an item read with none of the attributes asked for is "missing".
            attributes_to_get=["job_id", "image_index", "filed_by"],
        )
    except STORAGE_ERRORS:
        return "unsettled"
    return "filed" if current.filed_by == filing_id else "duplicate"


def _open_filing(job_id: str, attribute: str, indexes: Sequence[int], now: datetime) -> bool:
    """Open the filing on a job still in OngoingJobs (where the reconciler finds a filing
    its invocation never closed); False for a job that has left it. Raises for no job."""
    try:
        connection().client.update_item(
            TableName=get_settings().jobs_table,
            Key={"job_id": {"S": job_id}},
            UpdateExpression="SET #filing = :filing",
            ConditionExpression="attribute_exists(job_id) AND attribute_exists(ongoing_shard)",
            ExpressionAttributeNames={"#filing": attribute},
            ExpressionAttributeValues={
                ":filing": {
                    "M": {
                        "at": {"S": now.isoformat()},
                        "images": {"S": index_ranges(indexes)},
                    }
                }
            },
        )
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            raise
        if not _raw_job(job_id):
            raise
        return False
    return True


def _close_filing(
    job_id: str, attribute: str, tally: Tally, now: datetime, residual: Sequence[int] = ()
) -> bool:
    """Count a filing on its job and remove it (or keep only its `residual` images open),
    once: False when the filing is gone (its close applied already, by a request that was
    sent again; or it was closed by another, which its caller must not take lightly)."""
    names = {"#filing": attribute}
    values: dict[str, Any] = {}
    sets, adds = [], []
    if tally.succeeded or tally.failed or tally.cancelled:
        sets.append("progressed_at = :now")
        values[":now"] = {"S": JobRecord.progressed_at.serialize(now)}
    for name, amount in (
        ("succeeded", tally.succeeded),
        ("failed", tally.failed),
        ("cancelled", tally.cancelled),
    ):
        if amount:
            adds.append(f"{name} :{name}")
            values[f":{name}"] = {"N": str(amount)}
    if residual:
        sets.append("#filing.images = :residual")
        values[":residual"] = {"S": index_ranges(residual)}
    clauses = []
    if sets:
        clauses.append("SET " + ", ".join(sets))
    if adds:
        clauses.append("ADD " + ", ".join(adds))
    if not residual:
        clauses.append("REMOVE #filing")
    expression = " ".join(clauses)
    optional: dict[str, Any] = {"ExpressionAttributeValues": values} if values else {}
    try:
        connection().client.update_item(
            TableName=get_settings().jobs_table,
            Key={"job_id": {"S": job_id}},
            UpdateExpression=expression,
            ConditionExpression="attribute_exists(#filing)",
            ExpressionAttributeNames=names,
            **optional,
        )
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            return False
        raise
    return True


def _filing_gone(job_id: str, filing_id: str, tally: Tally, residual: Sequence[int]) -> None:
    """A filing that wrote records found itself gone when it closed: its count may be lost
    (or its close was applied once already, by a request sent again). Never ignored: said,
    and the job marked for the reconciler to recount from its records."""
    logger.error(
        "results filing was gone when it was closed; the reconciler recounts the job",
        extra={
            "job_id": job_id,
            "filing": filing_id,
            "images": tally.succeeded + tally.failed + tally.cancelled,
            "unsettled": len(residual),
        },
    )
    try:
        connection().client.update_item(
            TableName=get_settings().jobs_table,
            Key={"job_id": {"S": job_id}},
            UpdateExpression="SET #due = :now",
            ConditionExpression="attribute_exists(job_id)",
            ExpressionAttributeNames={"#due": _RECOUNT_DUE},
            ExpressionAttributeValues={":now": {"S": datetime.now(UTC).isoformat()}},
        )
    except STORAGE_ERRORS:
        # Then the job looks stuck with nothing pending, which the reconciler recounts too.
        logger.exception("job not marked for a recount", extra={"job_id": job_id})


# Set on a job whose counters may have missed a filing (_filing_gone): data/recount.py clears it.
_RECOUNT_DUE = "recount_due"


@dataclass(frozen=True)
class Upkeep:
    """What close_stale_filings found and did on one job."""

    job: Job | None  # as it stands after (None: no such job)
    counted: int = 0  # images of dead invocations' filings, counted now
    open_filings: int = 0  # filings left open on it (their invocations may still run)
    recount_due: bool = False  # a filing was gone when it closed: recount it (data/recount.py)


def close_stale_filings(job_id: str, opened_before: datetime) -> Upkeep:
    """Close the job's filings opened before `opened_before` whose invocations died before
    closing them: count the records each wrote (they carry its id) and remove it. Returns
    the job as it stands then (from the same read when nothing was closed), how many images
    that counted, how many filings stay open, and whether the job awaits a recount."""
    item = _raw_job(job_id)
    counted = closed = still_open = 0
    for attribute, value in item.items():
        if not attribute.startswith(_FILING_PREFIX):
            continue
        opened = datetime.fromisoformat(value["M"]["at"]["S"])
        if opened >= opened_before:
            still_open += 1
            continue
        filing_id = attribute[len(_FILING_PREFIX) :]
        indexes = parse_index_ranges(value["M"]["images"]["S"])
        states = [
            record.state
            for record in ImageRecord.batch_get(
                [(job_id, index) for index in indexes],
                consistent_read=True,
                attributes_to_get=["job_id", "image_index", "state", "filed_by"],
            )
            if record.filed_by == filing_id and record.state != PENDING
        ]
        tally = Tally.of(cast(list[ImageState], states))
        if _close_filing(job_id, attribute, tally, datetime.now(UTC)):
            counted += len(states)
            closed += 1
        else:
            # Its invocation closed it after all, past STALE_FILING_S: its own count stands.
            logger.warning(
                "stale filing closed by its own invocation meanwhile",
                extra={"job_id": job_id, "filing": filing_id},
            )
    due = _RECOUNT_DUE in item
    if closed:
        return Upkeep(get_job(job_id), counted, still_open, due)
    return Upkeep(_job(JobRecord.from_raw_data(item)) if item else None, counted, still_open, due)


def index_ranges(indexes: Iterable[int]) -> str:
    """Image indexes as compact ranges ("0-40,42,50-98"): a batch's images of one job are
    mostly consecutive, so an open filing stays a few bytes of its job's item."""
    ordered = sorted(set(indexes))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def parse_index_ranges(text: str) -> list[int]:
    """The indexes `index_ranges` wrote."""
    indexes: list[int] = []
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        indexes.extend(range(int(first), int(last or first) + 1))
    return indexes


T = TypeVar("T")

# TransactWriteItems takes at most 100 items; one of them is the job's counter.
MAX_TRANSACTION_ITEMS = 100
IMAGES_PER_TRANSACTION = MAX_TRANSACTION_ITEMS - 1


def transaction_chunks(items: Sequence[T]) -> list[Sequence[T]]:
    """Images of one job cut into as few transactions as fit, of nearly equal sizes
    (100 images are 50 + 50, not 99 + 1: the two then take about as long)."""
    if not items:
        return []
    count = -(-len(items) // IMAGES_PER_TRANSACTION)
    size = -(-len(items) // count)
    return [items[i : i + size] for i in range(0, len(items), size)]


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
    """
    try:
        record = JobRecord.get(job_id, consistent_read=True)
    except JobRecord.DoesNotExist:
        return None
    job = _job(record)
    if job.finished_at is not None and job.cancelled_at is not None:
        # A cancelled job ends early; its last images were being filed `cancelled`.
        _settle(job)
    if not job.done or job.finished_at is not None:
        return None
    actions = _terminal_actions(job, datetime.now(UTC))
    if job.state == "failed":
        # Its failures summed up once, here: every status poll and its event read only this.
        summary = summarize_failures(job_id, job.failed)
        actions.append(JobRecord.failures.set(pack_failures(summary)))
    stamped = update_if(record, actions, JobRecord.finished_at.does_not_exist())
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
        if not name.startswith(_FILING_PREFIX):
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
    try:
        connection().client.update_item(
            TableName=get_settings().jobs_table,
            Key={"job_id": {"S": job.job_id}},
            UpdateExpression="REMOVE " + ", ".join(names),
            ConditionExpression="attribute_exists(job_id) AND " + " AND ".join(conditions),
            ExpressionAttributeNames=names,
            **optional,
        )
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            return False
        raise
    return True


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


def failed_images(job_id: str) -> Iterator[FailedImage]:
    """A failed job's failures only, in image order, through the sparse FailedImages index
    (eventually consistent: a failure filed a moment ago may not be there yet)."""
    for record in ImageRecord.failed_images.query(job_id):
        yield FailedImage(store_id=record.store_id, error=record.error or "image failed")


def _failed_records(job_id: str) -> Iterator[FailedImage]:
    """The job's failures, in image order, from its own records (strongly consistent):
    every record of the job is read, the failed ones kept."""
    for record in ImageRecord.query(
        job_id,
        range_key_condition=ImageRecord.image_index >= 0,
        filter_condition=ImageRecord.state == FAILED,
        consistent_read=True,
        attributes_to_get=["job_id", "image_index", "store_id", "error"],
    ):
        yield FailedImage(store_id=record.store_id, error=record.error or "image failed")


def summarize_failures(job_id: str, failed: int) -> FailureSummary:
    """The summary of a job's `failed` failures (its counter): read from the FailedImages
    index, which holds only failures; when the index does not hold exactly that many yet
    (it lags writes by a moment, and may still list an image a retry reopened), from the
    job's own records instead, which are exact."""
    read = 0

    def counted(failures: Iterator[FailedImage]) -> Iterator[FailedImage]:
        nonlocal read
        for failure in failures:
            read += 1
            yield failure

    summary = FailureSummary.of(counted(failed_images(job_id)))
    if read != failed:
        summary = FailureSummary.of(_failed_records(job_id))
    return summary


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
