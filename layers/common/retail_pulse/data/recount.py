"""A job's counters set from its image records: the repair of a count a filing lost
(data/jobs.py _filing_gone), JOB_PAGE_IMAGES records at a time, whatever the job's size.

The recount's place is kept on the job item, so a pass out of time (or one that died) is
continued by the next without counting a page twice: `recount_of` (the job's books when
the recount began, and the recount's own id), `recount_next` (the image index of the next
page) and `recount_succeeded/failed/cancelled` (the tally of the pages done). Each page is
added in an update conditional on that id and place. The job's books (its counters, open
filings and last retry) must stay as they were when the recount began: each page is read
between two reads of them, and the counters are set only if the counters and open filings
are still those, in the very write. A job that moved starts its recount again.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import astuple, dataclass
from typing import Any, cast

from retail_pulse.data.filing import _RECOUNT_DUE
from retail_pulse.data.image_records import Tally
from retail_pulse.data.jobs import _raw_job
from retail_pulse.data.models import FILING_PREFIX, PENDING, ImageRecord, connection
from retail_pulse.data.ranges import parse_index_ranges
from retail_pulse.data.transactions import update_item_if
from retail_pulse.domain import ImageState
from retail_pulse.settings import get_settings

_OF, _NEXT = "recount_of", "recount_next"
_FOUND = {
    "succeeded": "recount_succeeded",
    "failed": "recount_failed",
    "cancelled": "recount_cancelled",
}


@dataclass(frozen=True)
class _Place:
    """Where a recount stands: its id (books and uuid), next image index, tally so far."""

    of: str
    next: int
    found: Tally


def _books(item: dict[str, Any]) -> tuple[Tally, dict[str, str]]:
    """A job item's counters and its open filings (each filing's images)."""
    tally = Tally(*(int(item.get(name, {}).get("N", 0)) for name in _FOUND))
    filings = {
        name: value["M"]["images"]["S"]
        for name, value in item.items()
        if name.startswith(FILING_PREFIX)
    }
    return tally, filings


def _fingerprint(item: dict[str, Any]) -> str:
    """The job's books (and its last retry) in a few bytes: equal while nothing moved."""
    counted, filings = _books(item)
    retried = item.get("retried_at", {}).get("S")
    text = json.dumps([astuple(counted), sorted(filings.items()), retried])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def recount_job(job_id: str, out_of_time: Callable[[], bool] = lambda: False) -> int | None:
    """Set the job's counters to what its image records say: every final record counts,
    but those an open filing wrote and has not counted yet (its close will). Returns how
    many images that added (negative if it took some away), or None when it is not over:
    out of time between pages (the next call goes on from its place), or the job moved
    (the next call begins again)."""
    item = _raw_job(job_id)
    if not item:
        return 0
    total = int(item["total"]["N"])
    place = _place(item)
    if place is None:
        place = _begin(job_id, item)
    while place is not None and place.next < total:
        if out_of_time():
            return None
        place = _page(job_id, place, total)
    return None if place is None else _end(job_id, place)


def _place(item: dict[str, Any]) -> _Place | None:
    """The recount under way on the job, if it began on the books the job has now."""
    if _OF not in item or not item[_OF]["S"].startswith(_fingerprint(item) + "/"):
        return None
    found = Tally(*(int(item.get(name, {}).get("N", 0)) for name in _FOUND.values()))
    return _Place(item[_OF]["S"], int(item[_NEXT]["N"]), found)


def _begin(job_id: str, item: dict[str, Any]) -> _Place | None:
    """A recount from the first image, in place of the one read (if any); None if another
    began or moved meanwhile."""
    place = _Place(f"{_fingerprint(item)}/{uuid.uuid4().hex}", 0, Tally())
    read = item.get(_OF, {}).get("S")
    values: dict[str, Any] = {":of": {"S": place.of}, ":zero": {"N": "0"}}
    condition = "attribute_exists(job_id) AND attribute_not_exists(#of)"
    if read is not None:
        condition = "attribute_exists(job_id) AND #of = :read"
        values[":read"] = {"S": read}
    found = ", ".join(f"{name} = :zero" for name in _FOUND.values())
    began = _update(job_id, f"SET #of = :of, {_NEXT} = :zero, {found}", condition, values)
    return place if began else None


def _page(job_id: str, place: _Place, total: int) -> _Place | None:
    """Count the page from place.next, read while the job's books stay those the recount
    began on, and add it to the tally on the job; None if the job or the recount moved."""
    last = min(place.next + get_settings().job_page_images, total) - 1
    before = _raw_job(job_id)
    records = list(
        ImageRecord.query(
            job_id,
            range_key_condition=ImageRecord.image_index.between(place.next, last),
            consistent_read=True,
            attributes_to_get=["job_id", "image_index", "state", "filed_by"],
        )
    )
    after = _raw_job(job_id)
    if _place(before) != place or _place(after) != place:
        return None
    waiting = {
        (name[len(FILING_PREFIX) :], index)
        for name, images in _books(after)[1].items()
        for index in parse_index_ranges(images)
    }
    page = Tally.of(
        cast(ImageState, record.state)
        for record in records
        if record.state != PENDING and (record.filed_by, int(record.image_index)) not in waiting
    )
    values = {f":{field}": {"N": str(getattr(page, field))} for field in _FOUND}
    values |= {":of": {"S": place.of}, ":at": {"N": str(place.next)}, ":next": {"N": str(last + 1)}}
    adds = ", ".join(f"{name} :{field}" for field, name in _FOUND.items())
    moved = _update(
        job_id, f"SET {_NEXT} = :next ADD {adds}", f"#of = :of AND {_NEXT} = :at", values
    )
    if not moved:
        return None
    found = Tally(*(a + b for a, b in zip(astuple(place.found), astuple(page), strict=True)))
    return _Place(place.of, last + 1, found)


def _end(job_id: str, place: _Place) -> int | None:
    """Every page counted: set the counters to the tally (and take the recount and its
    mark off) if the counters and open filings are still those the recount began on."""
    item = _raw_job(job_id)
    if _place(item) != place:
        return None
    counted, filings = _books(item)
    names = {"#due": _RECOUNT_DUE}
    values: dict[str, Any] = {":of": {"S": place.of}}
    conditions = [f"#of = :of AND {_NEXT} = :at"]
    values[":at"] = {"N": str(place.next)}
    for field in _FOUND:
        now_n, was_n = getattr(place.found, field), getattr(counted, field)
        values[f":{field}"] = {"N": str(now_n)}
        values[f":{field}_was"] = {"N": str(was_n)}
        was = f"{field} = :{field}_was"
        conditions.append(f"({was} OR attribute_not_exists({field}))" if not was_n else was)
    for i, (name, images) in enumerate(filings.items()):
        names[f"#f{i}"] = name
        values[f":f{i}"] = {"S": images}
        conditions.append(f"#f{i}.images = :f{i}")
    setting = "SET succeeded = :succeeded, failed = :failed, cancelled = :cancelled "
    removing = f"REMOVE #due, #of, {_NEXT}, " + ", ".join(_FOUND.values())
    if not _update(job_id, setting + removing, " AND ".join(conditions), values, names):
        return None
    return sum(astuple(place.found)) - sum(astuple(counted))


def _update(
    job_id: str,
    expression: str,
    condition: str,
    values: dict[str, Any],
    names: dict[str, str] | None = None,
) -> bool:
    """One conditional update of the job's item; False if its condition failed."""
    return update_item_if(
        connection().client,
        TableName=get_settings().jobs_table,
        Key={"job_id": {"S": job_id}},
        UpdateExpression=expression,
        ConditionExpression=condition,
        ExpressionAttributeNames={"#of": _OF, **(names or {})},
        ExpressionAttributeValues=values,
    )
