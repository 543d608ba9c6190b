"""The service's own types: what a job, an image, a store and a result are, as plain frozen
values. Data access (retail_pulse.data) takes and returns these; the business logic (jobs/,
visits/, stores/) works on them and never sees a table record or an AWS response."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal, get_args

from retail_pulse.failure_summary import FailedImage, FailureSummary

# A client is an API key of the API's usage plan; its key's id is the tenant every job,
# image and result belongs to. Without API keys every request is this one tenant, and so
# is every record written before tenants existed.
DEFAULT_TENANT = "default"

ImageState = Literal["pending", "succeeded", "failed", "cancelled"]
PENDING: ImageState = "pending"
SUCCEEDED: ImageState = "succeeded"
FAILED: ImageState = "failed"
# An image of a cancelled job that was never processed: its record leaves `pending` for this.
CANCELLED: ImageState = "cancelled"


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
    tenant: str = DEFAULT_TENANT
    # Images of a cancelled job filed `cancelled` (never processed) so far.
    cancelled: int = 0
    # When the job reached its terminal status (for a cancelled job, when it was cancelled:
    # its unprocessed images may still be on their way to `cancelled`).
    finished_at: datetime | None = None
    cancelled_at: datetime | None = None
    # When an image of the job last finished: the reconciler leaves a progressing job alone.
    progressed_at: datetime | None = None
    # When the reconciler last enqueued the job's pending images again.
    requeued_at: datetime | None = None
    # When a client last re-ran its failed images: the hard deadline counts from then.
    retried_at: datetime | None = None
    # Where the job.finished webhook goes (None: no webhook, EventBridge only).
    callback_url: str | None = None
    # The event of the job's last terminal transition, and whether it still has to be
    # emitted (set in the very update that made the job terminal, cleared once emitted).
    event_id: str | None = None
    event_pending: bool = False
    # The reconciler's failed tries at the pending event, and when it may try again.
    event_attempts: int = 0
    event_retry_at: datetime | None = None
    # A failed job's failures as its status shows them, kept when it failed (None before,
    # and for a job that failed before the summary was kept).
    failures: FailureSummary | None = None

    # A job submitted as an upload (jobs/uploads.py): its upload, and whether the ingest
    # function is still reading it (`total` then counts the images read so far), and why
    # the upload could not become the job's images (the job then has none, and fails).
    upload_id: str | None = None
    ingesting: bool = False
    ingest_error: str | None = None
    # A retry's pages are still being reopened (jobs/retry.py): the image index the next
    # page starts at, and when the last one was (the job is not done meanwhile).
    retry_next: int | None = None
    retry_moved_at: datetime | None = None
    # A failed job whose failures are summed up page by page (jobs/summary.py) before it is
    # stamped, and when that last moved: `ongoing` meanwhile, though done.
    summarizing: bool = False
    summary_moved_at: datetime | None = None

    @property
    def done(self) -> bool:
        """Every image has its final record (succeeded, failed or cancelled), and the job
        has all its images (its upload is read, its retry's pages reopened)."""
        if self.ingesting or self.retry_next is not None:
            return False
        return self.succeeded + self.failed + self.cancelled >= self.total

    @property
    def state(self) -> JobState:
        """The SPEC's status: the one rule that status, the job list and its index agree on.
        A cancelled job is `cancelled` from the moment it was cancelled."""
        if self.cancelled_at is not None:
            return "cancelled"
        if not self.done or self.summarizing:
            return "ongoing"
        return "failed" if self.failed or self.ingest_error else "completed"

    @property
    def progress(self) -> JobProgress:
        """The counts a client sees. For a cancelled job every image not (yet) succeeded or
        failed counts as cancelled: the three add up to total even while an image that was
        in flight at the cancel is being filed."""
        progress = JobProgress(total=self.total, succeeded=self.succeeded, failed=self.failed)
        if self.state == "cancelled":
            return replace(progress, cancelled=self.total - self.succeeded - self.failed)
        return progress

    @property
    def unprocessed(self) -> int:
        """Images without a final record yet; for a cancelled job, the ones that will be
        filed `cancelled` (or, if already in flight, succeeded or failed)."""
        return max(self.total - self.succeeded - self.failed - self.cancelled, 0)


@dataclass(frozen=True)
class JobRef:
    """Where a job sits in its client's list: newest first by created_at, then job_id."""

    created_at: datetime
    job_id: str


@dataclass(frozen=True)
class JobsPage:
    """One page of a client's jobs, newest first; `next` when more exist."""

    jobs: list[Job]
    next: str | None = None


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
    tenant: str = DEFAULT_TENANT  # whose results index it is filed in


@dataclass(frozen=True)
class ImageFailure:
    """An image that could not be measured; `error` is what the client reads."""

    error: str


@dataclass(frozen=True)
class ImageCancelled:
    """An image of a cancelled job, filed without being downloaded."""


ImageResult = ImageSuccess | ImageFailure | ImageCancelled


@dataclass(frozen=True)
class UploadFailure:
    """What a failed job's status shows when its upload could not become its images: the
    error of no store (`store_id` null), saying what was wrong and where."""

    error: str
    store_id: None = None


@dataclass(frozen=True)
class Upload:
    """A client's upload of a job's body (POST /api/uploads), into the uploads bucket under
    its key; `job_id` once submitted (one upload makes at most one job). `size`, `version_id`
    and `etag` are the object submit found, so the ingest reads exactly that object."""

    upload_id: str
    tenant: str
    key: str
    created_at: datetime
    max_bytes: int
    job_id: str | None = None
    size: int | None = None
    version_id: str | None = None
    etag: str | None = None


@dataclass(frozen=True)
class UploadedObject:
    """What is in the bucket under an upload's key: its size, version and ETag."""

    size: int
    etag: str
    version_id: str | None = None


@dataclass(frozen=True)
class UploadTicket:
    """A new upload and how to send it: a presigned S3 POST to `url` with `fields` (form
    fields sent before the file; they hold the policy's signature, so repr leaves them out
    and nothing logs them), valid until `expires_at`."""

    upload: Upload
    url: str
    fields: dict[str, str] = field(repr=False)
    expires_at: datetime | None = None


ExportFormat = Literal["csv", "jsonl"]
ExportState = Literal["writing", "ready", "failed"]


@dataclass(frozen=True)
class ResultsExport:
    """A finished job's results as one file in one format (POST /api/results/export): the
    object `key` it is written to, its state, and where its writing stands: the multipart
    upload, its parts' ETags in order, and `next_index`, the first image not yet in a part
    (rows and bytes so far). One per job and format; `job_finished_at` is the finish it
    exports (a job retried and finished again needs a new one)."""

    job_id: str
    file_format: ExportFormat
    tenant: str
    export_id: str
    key: str
    state: ExportState
    job_finished_at: datetime
    created_at: datetime
    error: str | None = None
    upload_id: str | None = None
    etags: tuple[str, ...] = ()
    next_index: int = 0
    rows: int = 0
    size: int = 0
    attempts: int = 0
    # Until when an invocation holds its writing (None: none does).
    lease_until: datetime | None = None


JobState = Literal["ongoing", "completed", "failed", "cancelled"]
# Every status a job can have, in one place: the job list's `status` filter accepts these,
# and its index has one partition per client and status. A new status goes in JobState.
JOB_STATES: tuple[JobState, ...] = get_args(JobState)


@dataclass(frozen=True)
class JobProgress:
    total: int
    succeeded: int
    failed: int
    # Only for a cancelled job: every image not succeeded or failed, so the three add up to
    # total at every moment (an image in flight at the cancel moves from here when filed).
    cancelled: int | None = None


@dataclass(frozen=True)
class JobStatus:
    """How a job is doing: the SPEC's status, and if it failed one error per failed store
    (at most MAX_LISTED_STORES of them) and how many stores failed."""

    status: JobState
    job_id: str
    progress: JobProgress
    error: list[FailedImage | UploadFailure] | None = None
    # Only a failed job's: how many stores failed, and whether `error` leaves some out.
    error_count: int | None = None
    error_truncated: bool | None = None
    # Only while ongoing: how long a client polling the status should wait (Retry-After).
    retry_after_s: int | None = None
    # Only while an uploaded job's body is still being read (`progress.total` grows).
    ingesting: bool | None = None
    # Only while a done job's failures are summed up page by page, before its stamp.
    summarizing: bool | None = None


@dataclass(frozen=True)
class ImageReport:
    """One image of a job as the results export shows it, whatever its state; None where
    the image has no such value (a pending image has no perimeter, a success no error)."""

    image_index: int
    store_id: str
    url: str | None
    visit_time: str | None
    state: ImageState
    perimeter: int | None = None
    width: int | None = None
    height: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class ResultsPage:
    """One page of a job's images in submit order; `next` when more exist."""

    results: list[ImageReport]
    next: str | None = None


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
    """A job as submitted, validated by the API: its visits in order, and whose it is."""

    visits: tuple[VisitRequest, ...]
    tenant: str = DEFAULT_TENANT
    callback_url: str | None = None


@dataclass(frozen=True)
class UsagePlan:
    """An API Gateway usage plan: the throttle and quota every key on it gets, per key, and
    the APIs (id, stage) whose requests it accepts those keys for."""

    plan_id: str
    name: str | None
    api_stages: tuple[tuple[str, str], ...]  # (api id, stage name)
    rate_limit: float | None = None  # requests per second, steady
    burst_limit: int | None = None
    quota_limit: int | None = None
    quota_period: str | None = None  # DAY, WEEK or MONTH

    def covers(self, api_id: str) -> bool:
        """A key on this plan is accepted by (some stage of) this API."""
        return any(api == api_id for api, _ in self.api_stages)


@dataclass(frozen=True)
class Tenant:
    """One client of the API: an API key on one of its usage plans. The key's id is the
    tenant: API Gateway puts it in requestContext.identity.apiKeyId of every request, and
    the service's records are keyed by it."""

    name: str
    key_id: str
    plan_id: str
    created_at: datetime | None
    enabled: bool

    @property
    def tenant_id(self) -> str:
        return self.key_id


@dataclass(frozen=True)
class NewTenant:
    """A client just created, with its key's value: shown to the person once, never kept
    or logged (repr leaves it out, so a traceback or a debug print does not leak it)."""

    tenant: Tenant
    plan: UsagePlan
    api_key: str = field(repr=False)


@dataclass(frozen=True)
class WebhookSecrets:
    """A client's webhook signing secrets: `current` signs every delivery; `previous`, the
    one the last rotation replaced, signs them too until a day after `rotated_at`
    (retail_pulse.jobs.webhook_secrets). `rotation_key` is the Idempotency-Key of that rotation,
    so the same request sent again does not rotate twice. repr leaves the secrets out."""

    tenant: str
    current: str = field(repr=False)
    previous: str | None = field(default=None, repr=False)
    rotated_at: datetime | None = None
    rotation_key: str | None = None
