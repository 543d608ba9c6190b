"""Reading a job's images back for GET /api/results (jobs/results.py). Reads only.

A job's images are a Query of the Images table by its own keys, in submit order, with its
manifest for those not filed yet; its failed images alone come from the sparse
FailedImages index.
"""

from __future__ import annotations

from typing import Any

from retail_pulse.data.manifest import submitted_images
from retail_pulse.data.models import FAILED, PENDING, FailedImagesIndex, ImageRecord
from retail_pulse.domain import Image, ImageReport, ImageState

# What the results export shows of an image (and its keys): the index attributes and the
# attempt count are not read back.
_IMAGE_ATTRIBUTES = [
    "job_id",
    "image_index",
    "store_id",
    "url",
    "visit_time",
    "state",
    "perimeter",
    "width",
    "height",
    "error",
]


def job_images(
    job_id: str, total: int, count: int, after_index: int | None = None
) -> tuple[list[ImageReport], int]:
    """The images of a job (of `total`) with the `count` indexes after `after_index`, in
    submit order, and the last index the page covers. One Query of the records by the
    table's own keys, plus one of the manifest when some have no record yet (those are
    pending). Strongly consistent, so an export agrees with the status just read."""
    first = 0 if after_index is None else after_index + 1
    last = min(total, first + count) - 1
    if last < first:
        return [], last
    records = {
        int(record.image_index): record
        for record in ImageRecord.query(
            job_id,
            range_key_condition=ImageRecord.image_index.between(first, last),
            consistent_read=True,
            attributes_to_get=_IMAGE_ATTRIBUTES,
        )
    }
    submitted: dict[int, Image] = {}
    if len(records) < last - first + 1:
        submitted = {image.image_index: image for image in submitted_images(job_id, first, last)}
    rows: list[ImageReport] = []
    for index in range(first, last + 1):
        if index in records:
            rows.append(_report(records[index]))
        elif index in submitted:
            image = submitted[index]
            rows.append(ImageReport(index, image.store_id, image.url, image.visit_time, PENDING))
    return rows, last


def filed_images(job_id: str, first: int, last: int, state: ImageState) -> list[ImageReport]:
    """The job's images with first <= index <= last whose record says `state` (succeeded
    or cancelled: a record is how an image gets either), in submit order. One strongly
    consistent Query by the table's keys, filtered by state: DynamoDB bills the range's
    other records too (it reads them to filter them), never the manifest."""
    if last < first:
        return []
    return [
        _report(record)
        for record in ImageRecord.query(
            job_id,
            range_key_condition=ImageRecord.image_index.between(first, last),
            filter_condition=ImageRecord.state == state,
            consistent_read=True,
            attributes_to_get=_IMAGE_ATTRIBUTES,
        )
    ]


def failed_image_reports(
    job_id: str, count: int, after_index: int | None = None
) -> tuple[list[ImageReport], int | None, bool]:
    """Up to `count` failed images of the job after `after_index`, in submit order, the
    last index the page covers (None if none), and whether more exist. The FailedImages
    index holds only failures (its keys say which: one Query of count + 1 entries), and
    BatchGetItem reads their records (URL and visit time are not in the index), 100 keys a
    request: a page of N failures reads about N records, whatever else the job has. The
    index lags a write by a moment; an image a retry reopened since is left out (its record
    is no longer failed)."""
    condition = None if after_index is None else FailedImagesIndex.image_index > after_index
    indexes = [
        int(entry.image_index)
        for entry in ImageRecord.failed_images.query(
            job_id, range_key_condition=condition, limit=count + 1, page_size=count + 1
        )
    ]
    more, indexes = len(indexes) > count, indexes[:count]
    records = ImageRecord.batch_get(
        [(job_id, index) for index in indexes],
        consistent_read=True,
        attributes_to_get=_IMAGE_ATTRIBUTES,
    )
    rows = sorted(
        (_report(record) for record in records if record.state == FAILED),
        key=lambda row: row.image_index,
    )
    return rows, (indexes[-1] if indexes else None), more


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _report(record: ImageRecord) -> ImageReport:
    # An image the reconciler filed for a submit that died part-way has no URL or time.
    return ImageReport(
        image_index=int(record.image_index),
        store_id=record.store_id,
        url=record.url or None,
        visit_time=record.visit_time or None,
        state=record.state,  # type: ignore[arg-type]  # written only as an ImageState
        perimeter=_int(record.perimeter),
        width=_int(record.width),
        height=_int(record.height),
        error=record.error,
    )
