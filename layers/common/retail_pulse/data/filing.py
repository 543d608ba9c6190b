"""The filing protocol: the results of several images of one job filed at once, without a
transaction. A filing is opened on the job's item (which images it is about to write), each
image written by a plain conditional write, then closed by moving the job's counters once
by what it wrote; a filing left open (its invocation died) is closed by the reconciler,
which counts the records carrying its id."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from botocore.exceptions import ClientError
from pynamodb.exceptions import UpdateError

from retail_pulse.data import STORAGE_ERRORS
from retail_pulse.data.image_records import _UNFILED, Tally, _image_actions
from retail_pulse.data.jobs import _job, _raw_job, get_job
from retail_pulse.data.models import (
    FILING_PREFIX,
    PENDING,
    ImageRecord,
    JobRecord,
    connection,
)
from retail_pulse.data.ranges import index_ranges, parse_index_ranges
from retail_pulse.data.transactions import update_item_if, write_if
from retail_pulse.domain import (
    Image,
    ImageResult,
    ImageState,
    Job,
)
from retail_pulse.observability import logger
from retail_pulse.settings import get_settings


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


def file_outcomes(job_id: str, filings: Sequence[Filing], writers: Executor | None = None) -> Filed:
    """File the results of several images of one job (a batch's): one plain conditional
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
    attribute = FILING_PREFIX + filing_id
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
    return update_item_if(
        connection().client,
        TableName=get_settings().jobs_table,
        Key={"job_id": {"S": job_id}},
        UpdateExpression=expression,
        ConditionExpression="attribute_exists(#filing)",
        ExpressionAttributeNames=names,
        **optional,
    )


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
        if not attribute.startswith(FILING_PREFIX):
            continue
        opened = datetime.fromisoformat(value["M"]["at"]["S"])
        if opened >= opened_before:
            still_open += 1
            continue
        filing_id = attribute[len(FILING_PREFIX) :]
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
