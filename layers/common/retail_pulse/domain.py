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


JobState = Literal["ongoing", "completed", "failed"]


@dataclass(frozen=True)
class JobProgress:
    total: int
    succeeded: int
    failed: int


@dataclass(frozen=True)
class JobStatus:
    """How a job is doing: the SPEC's status, and one error per failed store if it failed."""

    status: JobState
    job_id: str
    progress: JobProgress
    error: list[FailedImage] | None = None


@dataclass(frozen=True)
class Measurement:
    """One successfully measured image, as a visits page shows it."""

    date: str  # the visit's time, RFC 3339 in UTC
    perimeter: int


@dataclass(frozen=True)
class StoreResults:
    store_id: str
    area: str
    store_name: str
    data: list[Measurement]


@dataclass(frozen=True)
class VisitsPage:
    """One page of results, stores in store-id order; `next` when more exist."""

    results: list[StoreResults]
    next: str | None = None


@dataclass(frozen=True)
class VisitRequest:
    """One store visit of a submitted job, validated: the store, when, and its photos."""

    store_id: str
    image_url: tuple[str, ...]
    visit_time: str  # RFC 3339, UTC


@dataclass(frozen=True)
class JobRequest:
    """A job as submitted, validated by the API: its visits in order."""

    visits: tuple[VisitRequest, ...]
