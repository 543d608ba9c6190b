"""A failed job's failures read a page at a time in store id order (the FailedStores index),
and the paged summary's place and tally kept on the job (jobs/summary.py runs it).

On the job item, while a pass is under way: `summary_pass` (its id), `summary_step` (how
many times its place moved), `summary_state` (the index's cursor, the try, and the tally so
far: failure_summary.FailuresSoFar, compressed JSON, a few hundred bytes to 40 KB) and
`summary_moved_at`. Every move is conditional on the pass and step read, so a page is added
once whichever invocation reads it (a duplicate message, one that died between pages); the
stamp that ends the pass is conditional on them too (data/jobs.py stamp_summarized).
"""

from __future__ import annotations

import json
import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action

from retail_pulse.data.models import JobRecord, connection
from retail_pulse.data.transactions import update_if
from retail_pulse.domain import DEFAULT_TENANT
from retail_pulse.failure_summary import FailedImage, FailuresSoFar
from retail_pulse.settings import get_settings

# Where the next page starts: the last key read (FailedStores' sort key, image index).
Cursor = tuple[str, int]


@dataclass(frozen=True)
class SummaryPass:
    """Where a job's paged summary stands, with what of the job it needs."""

    job_id: str
    tenant: str
    failed: int
    pass_id: str
    step: int
    tries: int
    cursor: Cursor | None
    so_far: FailuresSoFar


def _pack(tries: int, cursor: Cursor | None, so_far: FailuresSoFar) -> bytes:
    document = {
        "tries": tries,
        "cursor": list(cursor) if cursor else None,
        "read": so_far.read,
        "count": so_far.store_count,
        "last": so_far.last_store,
        "stores": [[failure.store_id, failure.error] for failure in so_far.listed],
    }
    return zlib.compress(json.dumps(document, separators=(",", ":")).encode(), 6)


def _unpack(packed: bytes) -> tuple[int, Cursor | None, FailuresSoFar]:
    document = json.loads(zlib.decompress(packed))
    cursor = document["cursor"]
    so_far = FailuresSoFar(
        read=int(document["read"]),
        store_count=int(document["count"]),
        last_store=document["last"],
        listed=tuple(FailedImage(store, error) for store, error in document["stores"]),
    )
    return int(document["tries"]), (str(cursor[0]), int(cursor[1])) if cursor else None, so_far


def begin_actions(now: datetime) -> list[Action]:
    """What starts a job's first pass (data/jobs.py mark_finished, in its conditional write)."""
    return [
        JobRecord.summary_pass.set(str(uuid.uuid4())),
        JobRecord.summary_step.set(0),
        JobRecord.summary_state.set(_pack(1, None, FailuresSoFar())),
        JobRecord.summary_moved_at.set(now),
    ]


def pass_removals() -> list[Action]:
    """What the stamp that ends a pass takes off the job."""
    return [
        JobRecord.summary_pass.remove(),
        JobRecord.summary_step.remove(),
        JobRecord.summary_state.remove(),
        JobRecord.summary_moved_at.remove(),
    ]


def still_at(summary: SummaryPass) -> Condition:
    """True while the pass is where `summary` read it."""
    return (JobRecord.summary_pass == summary.pass_id) & (JobRecord.summary_step == summary.step)


def read_pass(job_id: str) -> SummaryPass | None:
    """The job's pass under way (one strongly consistent read of the job); None if none."""
    try:
        record = JobRecord.get(job_id, consistent_read=True)
    except JobRecord.DoesNotExist:
        return None
    if record.summary_pass is None or record.summary_state is None:
        return None
    tries, cursor, so_far = _unpack(record.summary_state)
    return SummaryPass(
        job_id=job_id,
        tenant=record.tenant or DEFAULT_TENANT,
        failed=int(record.failed),
        pass_id=record.summary_pass,
        step=int(record.summary_step or 0),
        tries=tries,
        cursor=cursor,
        so_far=so_far,
    )


@dataclass(frozen=True)
class FailuresPage:
    """A page of a job's failures in store id order, and where the next starts (None: this
    was the last)."""

    failures: list[FailedImage]
    next: Cursor | None


def failures_page(job_id: str, after: Cursor | None, limit: int) -> FailuresPage:
    """At most `limit` of the job's failures after `after` (from the first if None), in
    store id order, each store's in image order: one Query of FailedStores (eventually
    consistent, as every index read), at most 1 MB whatever the job holds."""
    request: dict[str, Any] = {
        "TableName": get_settings().images_table,
        "IndexName": "FailedStores",
        "KeyConditionExpression": "failed_job_id = :job",
        "ExpressionAttributeValues": {":job": {"S": job_id}},
        "Limit": limit,
    }
    if after is not None:
        request["ExclusiveStartKey"] = {
            "failed_job_id": {"S": job_id},
            "failed_store_key": {"S": after[0]},
            "job_id": {"S": job_id},
            "image_index": {"N": str(after[1])},
        }
    response = connection().client.query(**request)
    failures = [
        FailedImage(item["store_id"]["S"], item.get("error", {}).get("S") or "image failed")
        for item in response.get("Items", [])
    ]
    last = response.get("LastEvaluatedKey")
    cursor = (last["failed_store_key"]["S"], int(last["image_index"]["N"])) if last else None
    return FailuresPage(failures, cursor)


def move_pass(summary: SummaryPass, cursor: Cursor, so_far: FailuresSoFar) -> bool:
    """The page after summary.cursor is added: the pass goes on from `cursor` with
    `so_far`. False if the pass is no longer where it was read (another invocation)."""
    return update_if(
        JobRecord(job_id=summary.job_id),
        [
            JobRecord.summary_step.add(1),
            JobRecord.summary_state.set(_pack(summary.tries, cursor, so_far)),
            JobRecord.summary_moved_at.set(datetime.now(UTC)),
        ],
        still_at(summary),
    )


def begin_again(summary: SummaryPass) -> bool:
    """The pass read a different number of failures than the job counts (the index lags
    its writes): it begins again from the first, its try counted. False if it had moved."""
    return update_if(
        JobRecord(job_id=summary.job_id),
        [
            JobRecord.summary_step.add(1),
            JobRecord.summary_state.set(_pack(summary.tries + 1, None, FailuresSoFar())),
            JobRecord.summary_moved_at.set(datetime.now(UTC)),
        ],
        still_at(summary),
    )
