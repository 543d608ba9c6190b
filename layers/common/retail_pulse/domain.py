"""The service's own types: what a job, an image, a store and a result are, as plain frozen
values. Data access (retail_pulse.data) takes and returns these; the business logic (jobs/,
visits/, stores/) works on them and never sees a table record or an AWS response."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

ImageState = Literal["pending", "succeeded", "failed"]
PENDING: ImageState = "pending"
SUCCEEDED: ImageState = "succeeded"
FAILED: ImageState = "failed"


@dataclass(frozen=True)
class Store:
    """One store of the store master: shared reference data."""

    store_id: str
    area_code: str
    store_name: str


@dataclass(frozen=True)
class Job:
    """One submitted job; its counters make status O(1) whatever the job's size."""

    job_id: str
    total: int
    succeeded: int
    failed: int
    visit_count: int
    created_at: datetime
    finished_at: datetime | None = None
    # When an image of the job last finished: the reconciler leaves a progressing job alone.
    progressed_at: datetime | None = None
    # When the reconciler last enqueued the job's pending images again.
    requeued_at: datetime | None = None

    @property
    def done(self) -> bool:
        return self.succeeded + self.failed >= self.total


@dataclass(frozen=True)
class Image:
    """One image of one job, as submitted; `state` moves pending -> succeeded | failed once.
    An image of a store the master does not know is submitted already failed."""

    job_id: str
    image_index: int
    store_id: str
    area: str | None
    url: str
    visit_time: str  # RFC 3339, UTC
    state: ImageState = PENDING
    error: str | None = None


@dataclass(frozen=True)
class ImageSuccess:
    """A measured image: what its record keeps, and what the visits indexes are keyed by."""

    perimeter: int
    width: int
    height: int
    store_id: str
    area: str | None


@dataclass(frozen=True)
class ImageFailure:
    """An image that could not be measured; `error` is what the client reads."""

    error: str


ImageResult = ImageSuccess | ImageFailure


@dataclass(frozen=True)
class FailedImage:
    """What a failed job's status shows of one failure."""

    store_id: str
    error: str
