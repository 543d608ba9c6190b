"""PynamoDB record models: the only definition of the tables the code uses, and private to
this package (everything outside `retail_pulse.data` works on retail_pulse.domain's types).

Table names, region and endpoint are read from the settings when a model first connects,
not at import: a test or tool may point the models anywhere by changing the environment,
clearing the settings cache and calling `reset_connections()`, in any order of imports.
template.yaml declares the same keys and indexes; tests/unit/test_template.py checks that
the two agree.
"""

from __future__ import annotations

from pynamodb.attributes import (
    BinaryAttribute,
    BooleanAttribute,
    ListAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.connection import Connection
from pynamodb.indexes import (
    AllProjection,
    GlobalSecondaryIndex,
    IncludeProjection,
    KeysOnlyProjection,
)
from pynamodb.models import Model

from retail_pulse.data.aws import watched
from retail_pulse.domain import CANCELLED, FAILED, PENDING, SUCCEEDED
from retail_pulse.settings import get_settings

__all__ = ["CANCELLED", "FAILED", "PENDING", "SUCCEEDED"]


class _FromSettings(type):
    """The metaclass of a model's Meta: PynamoDB reads these when it connects."""

    table_setting: str

    @property
    def table_name(cls) -> str:
        return str(getattr(get_settings(), cls.table_setting))

    @property
    def region(cls) -> str:
        return get_settings().region

    @property
    def host(cls) -> str | None:
        return get_settings().dynamodb_endpoint


class _Meta(metaclass=_FromSettings):
    table_setting = ""
    # The process function runs one thread per record of a batch (IMAGE_CONCURRENCY threads)
    # and files on a pool of writers: a smaller pool would open and discard connections.
    max_pool_connections = 100


# Ongoing jobs spread over this many index partitions; the reconciler queries each.
ONGOING_SHARDS = 4


def ongoing_shard(job_id: str) -> str:
    """A job's partition of the OngoingJobs index, fixed by its id."""
    return str(sum(job_id.encode()) % ONGOING_SHARDS)


class OngoingJobsIndex(GlobalSecondaryIndex["JobRecord"]):
    """Sparse: only unfinished jobs carry `ongoing_shard` (set at submit, removed when the
    job finishes), so the reconciler finds old unfinished jobs without a table scan."""

    class Meta:
        index_name = "OngoingJobs"
        projection = KeysOnlyProjection()

    ongoing_shard = UnicodeAttribute(hash_key=True)
    created_at = UTCDateTimeAttribute(range_key=True)


class TenantJobsIndex(GlobalSecondaryIndex["JobRecord"]):
    """A client's jobs by status, newest first: `tenant_status` is "<tenant>#<status>"
    (data/job_list.py), written at submit and moved when the job's status changes. Keys only:
    the counters change with every batch filed, and a projection of them would be written
    to the index each time; the list reads its page of jobs from the table instead."""

    class Meta:
        index_name = "TenantJobs"
        projection = KeysOnlyProjection()

    tenant_status = UnicodeAttribute(hash_key=True)
    created_at = UTCDateTimeAttribute(range_key=True)


class JobRecord(Model):
    """One submitted job; its counters make status O(1) whatever the job's size."""

    class Meta(_Meta):
        table_setting = "jobs_table"

    job_id = UnicodeAttribute(hash_key=True)
    # Absent on jobs written before tenants existed: those are the default tenant's.
    tenant = UnicodeAttribute(null=True)
    total = NumberAttribute()
    succeeded = NumberAttribute(default=0)
    failed = NumberAttribute(default=0)
    visit_count = NumberAttribute()
    created_at = UTCDateTimeAttribute()
    finished_at = UTCDateTimeAttribute(null=True)
    ongoing_shard = UnicodeAttribute(null=True)
    # When an image of the job last finished: the reconciler leaves a progressing job alone.
    progressed_at = UTCDateTimeAttribute(null=True)
    # When the reconciler last enqueued the job's pending images again.
    requeued_at = UTCDateTimeAttribute(null=True)
    # "<tenant>#<status>": the job's partition of TenantJobs (absent on jobs written before
    # the list existed, until the one-off backfill of data/backfill.py).
    tenant_status = UnicodeAttribute(null=True)
    # DynamoDB deletes the job after this time (RETENTION_DAYS after submit).
    expires_at = TTLAttribute(null=True)
    # Cancel: when, and how many of its images were filed `cancelled` (absent: none).
    cancelled_at = UTCDateTimeAttribute(null=True)
    cancelled = NumberAttribute(null=True)
    callback_url = UnicodeAttribute(null=True)
    # When its failed images were last put back to pending (POST /api/retry).
    retried_at = UTCDateTimeAttribute(null=True)
    # The last terminal transition's event, and whether it is yet to be emitted.
    event_id = UnicodeAttribute(null=True)
    event_pending = BooleanAttribute(null=True)
    # Tries of the reconciler at the pending event that failed, and when it tries next
    # (jobs/reconcile.py backs off; absent: not tried yet, or emitted).
    event_attempts = NumberAttribute(null=True)
    event_retry_at = UTCDateTimeAttribute(null=True)
    # A failed job's failures as its status shows them (data/jobs.py pack_failures): at most
    # 100 stores with bounded errors, compressed JSON, written with the failed stamp and
    # removed by a retry. Absent on jobs that failed before it was kept.
    failures = BinaryAttribute(null=True, legacy_encoding=False)

    # A job submitted as an upload (data/ingest.py): its upload, whether the ingest function
    # is still reading it (absent: no, or not an upload), and why it could not (the job then
    # has no images and fails). The ingest's checkpoint and lease are beside them, read raw.
    upload_id = UnicodeAttribute(null=True)
    ingesting = BooleanAttribute(null=True)
    ingest_error = UnicodeAttribute(null=True)
    # A retry too large for one invocation (jobs/retry.py): the next image index its pages
    # go on from, and when they last moved (absent: no retry under way). The job is not
    # done while it is set, however its counters stand.
    retry_next = NumberAttribute(null=True)
    retry_moved_at = UTCDateTimeAttribute(null=True)
    # The reconciler's page-by-page work on the job under way (data/sweeps.py).
    sweep_kind = UnicodeAttribute(null=True)
    sweep_next = NumberAttribute(null=True)
    sweep_done = NumberAttribute(null=True)
    # A failed job too large to sum up in one invocation (jobs/summary.py): its paged pass
    # over FailedStores under way (absent: none), its try, the step its place is at, the
    # place and tally so far (compressed JSON), and when it last moved. The job is not
    # stamped, and its status is `ongoing`, until the pass ends.
    summary_pass = UnicodeAttribute(null=True)
    summary_step = NumberAttribute(null=True)
    summary_state = BinaryAttribute(null=True, legacy_encoding=False)
    summary_moved_at = UTCDateTimeAttribute(null=True)

    ongoing_jobs = OngoingJobsIndex()
    tenant_jobs = TenantJobsIndex()


class FailedImagesIndex(GlobalSecondaryIndex["ImageRecord"]):
    """Sparse: only failed images carry `failed_job_id`, so a failed job's status reads
    its failures without touching its successes."""

    class Meta:
        index_name = "FailedImages"
        projection = IncludeProjection(["store_id", "error"])

    failed_job_id = UnicodeAttribute(hash_key=True)
    image_index = NumberAttribute(range_key=True)


class FailedStoresIndex(GlobalSecondaryIndex["ImageRecord"]):
    """Sparse like FailedImages, but in store id order, each store's failures in image
    order (`failed_store_key`, record_keys.failed_store_key): a failed job's summary reads
    it a page at a time, needing only the store it is in and the stores so far."""

    class Meta:
        index_name = "FailedStores"
        projection = IncludeProjection(["store_id", "error"])

    failed_job_id = UnicodeAttribute(hash_key=True)
    failed_store_key = UnicodeAttribute(range_key=True)


class StoreVisitsIndex(GlobalSecondaryIndex["ImageRecord"]):
    """Sparse: successful images by store, in visit-time order (the visits API)."""

    class Meta:
        index_name = "StoreVisits"
        projection = AllProjection()

    result_store_id = UnicodeAttribute(hash_key=True)
    visit_key = UnicodeAttribute(range_key=True)


class AreaVisitsIndex(GlobalSecondaryIndex["ImageRecord"]):
    """Sparse: successful images by area code, in visit-time order (the visits API)."""

    class Meta:
        index_name = "AreaVisits"
        projection = AllProjection()

    result_area = UnicodeAttribute(hash_key=True)
    visit_key = UnicodeAttribute(range_key=True)


class ImageRecord(Model):
    """One image of one job, written when its result is filed (submit writes none for an
    image it enqueues: a job's images as submitted are its manifest, ManifestRecord); `state`
    is then succeeded | failed | cancelled, exactly once. A retry puts a failed one back to
    `pending` until it is filed again."""

    class Meta(_Meta):
        table_setting = "images_table"

    job_id = UnicodeAttribute(hash_key=True)
    image_index = NumberAttribute(range_key=True)
    store_id = UnicodeAttribute()
    area = UnicodeAttribute(null=True)
    url = UnicodeAttribute()
    visit_time = UnicodeAttribute()  # RFC 3339, UTC
    # "<visit_time>#<job_id>#<index>": time order first, unique per image.
    visit_key = UnicodeAttribute()
    state = UnicodeAttribute(default=PENDING)
    perimeter = NumberAttribute(null=True)
    width = NumberAttribute(null=True)
    height = NumberAttribute(null=True)
    error = UnicodeAttribute(null=True)
    attempts = NumberAttribute(null=True)
    finished_at = UTCDateTimeAttribute(null=True)
    failed_job_id = UnicodeAttribute(null=True)
    failed_store_key = UnicodeAttribute(null=True)
    result_store_id = UnicodeAttribute(null=True)
    result_area = UnicodeAttribute(null=True)
    # DynamoDB deletes the image after this time (its job's retention, RETENTION_DAYS).
    expires_at = TTLAttribute(null=True)
    # Which filing of a batch wrote the result (data/filing.py file_outcomes): what counts it
    # if that filing's invocation dies before the job's counters are moved.
    filed_by = UnicodeAttribute(null=True)

    failed_images = FailedImagesIndex()
    failed_stores = FailedStoresIndex()
    store_visits = StoreVisitsIndex()
    area_visits = AreaVisitsIndex()


class ManifestRecord(Model):
    """A slice of a job's images as submitted (MANIFEST_SLICE of them, compressed JSON), in
    the Images table at a negative image_index (-1 for the first slice): one write per slice
    at submit instead of one per image, read back only to requeue, cancel, expire or export
    what has no ImageRecord yet. Image records are at indexes >= 0, so the two never meet."""

    class Meta(_Meta):
        table_setting = "images_table"

    job_id = UnicodeAttribute(hash_key=True)
    image_index = NumberAttribute(range_key=True)
    images = BinaryAttribute(legacy_encoding=False)
    expires_at = TTLAttribute(null=True)


class UploadRecord(Model):
    """One upload of a job's body (data/uploads.py): whose it is, where it is, and the one
    job it became (`job_id`, set once by a conditional write at submit)."""

    class Meta(_Meta):
        table_setting = "uploads_table"

    upload_id = UnicodeAttribute(hash_key=True)
    tenant = UnicodeAttribute()
    key = UnicodeAttribute()
    created_at = UTCDateTimeAttribute()
    max_bytes = NumberAttribute()
    job_id = UnicodeAttribute(null=True)
    # The object submit found (size, version, ETag): the ingest reads exactly that one.
    size = NumberAttribute(null=True)
    version_id = UnicodeAttribute(null=True)
    etag = UnicodeAttribute(null=True)
    # DynamoDB deletes the record after this time (UPLOAD_RECORD_DAYS).
    expires_at = TTLAttribute(null=True)


class ExportRecord(Model):
    """One results export of a job in one format (data/exports.py): the file it writes
    (`key`, under exports/), where its writing stands (the multipart upload, its parts'
    ETags in order, the first image not yet in a part), and the lease of the invocation
    writing it. Kept as long as its job (`expires_at` is the job's)."""

    class Meta(_Meta):
        table_setting = "exports_table"

    job_id = UnicodeAttribute(hash_key=True)
    file_format = UnicodeAttribute(range_key=True)
    tenant = UnicodeAttribute()
    export_id = UnicodeAttribute()
    key = UnicodeAttribute()
    # writing | ready | failed (and why, in `error`).
    state = UnicodeAttribute()
    error = UnicodeAttribute(null=True)
    # The finish of the job it exports: a job retried and finished again is a new export.
    job_finished_at = UTCDateTimeAttribute()
    created_at = UTCDateTimeAttribute()
    upload_id = UnicodeAttribute(null=True)
    etags = ListAttribute(of=UnicodeAttribute, default=list)
    next_index = NumberAttribute(default=0)
    rows = NumberAttribute(default=0)
    size = NumberAttribute(default=0)
    lease = UnicodeAttribute(null=True)
    lease_until = UTCDateTimeAttribute(null=True)
    attempts = NumberAttribute(default=0)
    expires_at = TTLAttribute(null=True)


class StoresByAreaIndex(GlobalSecondaryIndex["StoreRecord"]):
    """The stores of an area: answers "does this area exist?" with a one-item query."""

    class Meta:
        index_name = "StoresByArea"
        projection = KeysOnlyProjection()

    area_code = UnicodeAttribute(hash_key=True)
    store_id = UnicodeAttribute(range_key=True)


# The one Stores item that is not a store: the area codes every import has loaded, so the
# visits API can list areas without a scan. "#" never starts a store id of the master.
AREA_REGISTRY_ID = "#areas"


class StoreRecord(Model):
    """One store of the store master (or, at AREA_REGISTRY_ID, the set of known areas)."""

    class Meta(_Meta):
        table_setting = "stores_table"

    store_id = UnicodeAttribute(hash_key=True)
    area_code = UnicodeAttribute()
    store_name = UnicodeAttribute()
    # Only on the area registry item, which has no area_code and so stays out of the index.
    areas = UnicodeSetAttribute(null=True)

    stores_by_area = StoresByAreaIndex()


class WebhookSecretRecord(Model):
    """One client's webhook signing secrets (data/webhook_secrets.py). The table is
    encrypted at rest with a KMS key (template.yaml's SSESpecification)."""

    class Meta(_Meta):
        table_setting = "webhook_secrets_table"

    tenant = UnicodeAttribute(hash_key=True)
    secret = UnicodeAttribute()
    previous_secret = UnicodeAttribute(null=True)
    rotated_at = UTCDateTimeAttribute(null=True)
    rotation_key = UnicodeAttribute(null=True)


ALL_MODELS: tuple[type[Model], ...] = (
    JobRecord,
    ImageRecord,
    ManifestRecord,
    StoreRecord,
    WebhookSecretRecord,
)
# One model per table, the one a test or tool creates the table from (ManifestRecord shares
# the Images table).
TABLE_MODELS: tuple[type[Model], ...] = (JobRecord, ImageRecord, StoreRecord, WebhookSecretRecord)


def connection() -> Connection:
    """The low-level connection the models share (one botocore client per container),
    for multi-item transactions and the raw client calls of data/; its client is shown to
    data/aws.py's watchers, since used directly it sends no PynamoDB signal."""
    shared = JobRecord._get_connection().connection
    watched(shared.client)
    return shared


def connect() -> None:
    """Build the DynamoDB clients of the job and image records now, in the init phase. Each
    model has a connection, and a client, of its own: left to the first batch, each of its
    threads found no client yet and built its own (~0.15 s of CPU apiece, a batch of 100
    writer threads at once for the image records)."""
    _ = connection().client
    _ = ImageRecord._get_connection().connection.client


def reset_connections() -> None:
    """Forget every model's connection, so the next call connects with the current settings
    (endpoint, region): for tests and tools that move between stacks."""
    for model in ALL_MODELS:
        model._connection = None


# A job item's open filings (data/filing.py): one attribute filing_<id> each, naming the
# images that filing is about to write.
FILING_PREFIX = "filing_"
