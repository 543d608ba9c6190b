"""Typed settings, read once per container from the environment that template.yaml declares.

Only endpoints and settings differ between Lambda, `sam local`, the local stack and tests;
every one of them is an environment variable listed here and in template.yaml.

`Settings` has defaults for what has a sensible one, so tools (the store import) and tests
need set only what they use. A function validates `FunctionSettings` at cold start instead
(`load_settings`, called by every handler's module through retail_pulse.entry): there every
resource name is required, so a missing or malformed variable fails the init phase with its
name, never becomes an empty string found later.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class SettingsError(Exception):
    """The environment is missing a variable or holds one that does not parse."""


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    jobs_table: str = Field("Jobs", alias="JOBS_TABLE")
    images_table: str = Field("Images", alias="IMAGES_TABLE")
    stores_table: str = Field("Stores", alias="STORES_TABLE")
    idempotency_table: str = Field("Idempotency", alias="IDEMPOTENCY_TABLE")
    # Each client's webhook signing secrets (data/webhook_secrets.py), encrypted at rest.
    webhook_secrets_table: str = Field("WebhookSecrets", alias="WEBHOOK_SECRETS_TABLE")
    image_queue_url: str | None = Field(None, alias="IMAGE_QUEUE_URL")
    # The express lane: jobs of at most express_max_images images are enqueued here.
    express_queue_url: str | None = Field(None, alias="EXPRESS_QUEUE_URL")
    express_max_images: int = Field(100, alias="EXPRESS_MAX_IMAGES", ge=0)
    # The Secrets Manager secret whose value keys the HMAC of visits page tokens.
    page_token_secret_arn: str | None = Field(None, alias="PAGE_TOKEN_SECRET_ARN")
    # Job events: the queue webhook deliveries wait in, and the EventBridge bus every
    # terminal transition is published to.
    webhook_queue_url: str | None = Field(None, alias="WEBHOOK_QUEUE_URL")
    event_bus_name: str = Field("default", alias="EVENT_BUS_NAME")
    # The webhook function's: where it moves a delivery it gave up on (retried for 24 h),
    # and each POST's wall-clock deadline (a receiver should answer in seconds).
    webhook_dead_letter_queue_url: str | None = Field(None, alias="WEBHOOK_DEAD_LETTER_QUEUE_URL")
    webhook_deadline_s: float = Field(10.0, alias="WEBHOOK_DEADLINE_S", gt=0)
    # Empty in AWS; the local stack and `sam local` point it at moto on loopback.
    endpoint_url: str | None = Field(None, alias="AWS_ENDPOINT_URL")
    # Where DynamoDB is, when not at endpoint_url (botocore's own name for it): the local
    # stack's DynamoDB Local. Empty in AWS.
    dynamodb_endpoint_url: str | None = Field(None, alias="AWS_ENDPOINT_URL_DYNAMODB")
    region: str = Field("us-east-1", alias="AWS_REGION")

    # Request limits: a job sent as a request body must fit MAX_BODY_BYTES (under Lambda's
    # 6 MB payload) and one submit invocation well inside API Gateway's 29 s; with 1 to 2 KB
    # presigned URLs the body is the bound (~3,500 images), with short ones this count is.
    # A larger job is uploaded (POST /api/uploads) and read by the ingest function.
    max_images_per_job: int = Field(50_000, alias="MAX_IMAGES_PER_JOB", ge=1)
    max_urls_per_visit: int = Field(1_000, alias="MAX_URLS_PER_VISIT", ge=1)
    max_url_length: int = Field(2_048, alias="MAX_URL_LENGTH", ge=16)
    max_body_bytes: int = Field(6_000_000, alias="MAX_BODY_BYTES", ge=1)

    # Large jobs: POST /api/uploads gives a presigned S3 POST into the uploads bucket,
    # valid UPLOAD_URL_EXPIRES_S, for a body of at most UPLOAD_MAX_BYTES (S3 refuses more:
    # the POST policy's content-length-range); the ingest function reads it into a job of
    # at most MAX_IMAGES_PER_UPLOAD_JOB images, continuing in a new invocation (through
    # INGEST_QUEUE_URL) when less than INGEST_RESERVE_S of its time is left.
    uploads_table: str = Field("Uploads", alias="UPLOADS_TABLE")
    uploads_bucket: str | None = Field(None, alias="UPLOADS_BUCKET")
    ingest_queue_url: str | None = Field(None, alias="INGEST_QUEUE_URL")
    max_images_per_upload_job: int = Field(1_000_000, alias="MAX_IMAGES_PER_UPLOAD_JOB", ge=1)
    upload_url_expires_s: int = Field(900, alias="UPLOAD_URL_EXPIRES_S", ge=1, le=604_800)
    upload_max_bytes: int = Field(1024**3, alias="UPLOAD_MAX_BYTES", ge=1)
    ingest_reserve_s: float = Field(60.0, alias="INGEST_RESERVE_S", ge=0)

    # Results exports (POST /api/results/export): their records (EXPORTS_TABLE), the export
    # function's queue, the file written to the uploads bucket under exports/ in parts of at
    # least EXPORT_PART_BYTES (S3's multipart minimum is 5 MiB; every part but the last is
    # at least that), handing over to a new invocation with less than EXPORT_RESERVE_S
    # left; a finished file is answered as a presigned GET valid EXPORT_URL_EXPIRES_S.
    exports_table: str = Field("Exports", alias="EXPORTS_TABLE")
    export_queue_url: str | None = Field(None, alias="EXPORT_QUEUE_URL")
    export_part_bytes: int = Field(
        8 * 1024 * 1024, alias="EXPORT_PART_BYTES", ge=5 * 1024 * 1024, le=5 * 1024**3
    )
    export_reserve_s: float = Field(60.0, alias="EXPORT_RESERVE_S", ge=0)
    export_url_expires_s: int = Field(300, alias="EXPORT_URL_EXPIRES_S", ge=1, le=604_800)

    # Image fetching.
    max_image_bytes: int = Field(20 * 1024 * 1024, alias="MAX_IMAGE_BYTES", ge=1)
    connect_timeout_s: float = Field(3.05, alias="CONNECT_TIMEOUT_S", gt=0)
    read_timeout_s: float = Field(10.0, alias="READ_TIMEOUT_S", gt=0)
    image_deadline_s: float = Field(30.0, alias="IMAGE_DEADLINE_S", gt=0)
    # Pillow's own DecompressionBombWarning threshold (PIL.Image.MAX_IMAGE_PIXELS): above it
    # Pillow warns (an error where warnings are errors), so a higher limit would accept
    # images that behave differently depending on the warning filter.
    max_image_pixels: int = Field(89_478_485, alias="MAX_IMAGE_PIXELS", ge=1)
    allowed_private_hosts: frozenset[str] = Field(frozenset(), alias="ALLOWED_PRIVATE_HOSTS")
    # Attempts per image for transient trouble (timeouts, 429, 5xx): downloads of it that
    # started, carried by its message (jobs/process.py), not SQS's receive count.
    max_attempts: int = Field(4, alias="MAX_ATTEMPTS", ge=1)
    retry_base_delay_s: int = Field(2, alias="RETRY_BASE_DELAY_S", ge=1)
    retry_max_delay_s: int = Field(120, alias="RETRY_MAX_DELAY_S", ge=1)
    # The image queue's maxReceiveCount (template.yaml sets both): a dead-lettered message
    # was delivered this many times in a row without an answer (crashes, results not filed),
    # whatever its receive count on the dead-letter queue says.
    image_max_receives: int = Field(6, alias="IMAGE_MAX_RECEIVES", ge=1)

    # The reconciler. A job with no progress for RECONCILE_AFTER_S gets its pending images
    # enqueued again; at JOB_HARD_DEADLINE_S after submit, whatever is still pending fails.
    # The SPEC allows a job an hour, so the hard deadline is two.
    reconcile_after_s: int = Field(900, alias="RECONCILE_AFTER_S", ge=1)
    job_hard_deadline_s: int = Field(7200, alias="JOB_HARD_DEADLINE_S", ge=1)

    # A job's images are read JOB_PAGE_IMAGES at a time wherever a whole job is gone through
    # (a retry's failures, the reconciler's requeue, expiry, cancel and recount): one
    # invocation does as many pages as its time allows and keeps its place on the job, so
    # the next goes on from there (a 1,000,000-image job is 100 pages).
    job_page_images: int = Field(10_000, alias="JOB_PAGE_IMAGES", ge=1)
    # A failed job's failure summary: summed up in the invocation that finishes the job when
    # it has at most SUMMARY_INLINE_FAILURES failures (one Query page of FailedImages: 1,000
    # failures with errors of a few hundred bytes are under its 1 MB), else page by page in
    # the ingest function, SUMMARY_PAGE_FAILURES per Query (jobs/summary.py).
    summary_inline_failures: int = Field(1_000, alias="SUMMARY_INLINE_FAILURES", ge=0)
    summary_page_failures: int = Field(5_000, alias="SUMMARY_PAGE_FAILURES", ge=1)

    # Retention: a job and its images carry a DynamoDB TTL of this many days after submit,
    # after which DynamoDB deletes them (README: "Retention").
    retention_days: int = Field(90, alias="RETENTION_DAYS", ge=1)

    # The stand-in for GPU inference: a uniform pause per image.
    gpu_sleep_min_s: float = Field(0.1, alias="GPU_SLEEP_MIN_S", ge=0)
    gpu_sleep_max_s: float = Field(0.4, alias="GPU_SLEEP_MAX_S", ge=0)

    # The process function. Most images of a batch in flight at once (threads): each mostly
    # waits, on the image host and then on the GPU stand-in, so a whole batch of the event
    # source runs at once.
    image_concurrency: int = Field(100, alias="IMAGE_CONCURRENCY", ge=1)
    # Most bytes of image bodies held at once by one invocation, whatever the batch size:
    # 8 images at MAX_IMAGE_BYTES, each read in place into one buffer of its size: 160 MiB
    # above a ~90 MB runtime, inside 512 MB.
    image_bytes_in_flight: int = Field(160 * 1024 * 1024, alias="IMAGE_BYTES_IN_FLIGHT", ge=1)

    @field_validator("allowed_private_hosts", mode="before")
    @classmethod
    def _host_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return frozenset(h.strip().lower() for h in value.split(",") if h.strip())
        return value

    @property
    def dynamodb_endpoint(self) -> str | None:
        """The endpoint every DynamoDB client uses (None: AWS's own)."""
        return self.dynamodb_endpoint_url or self.endpoint_url

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the variables this model names; a blank one counts as unset."""
        environ = os.environ if environ is None else environ
        values = {k: v.strip() for k, v in environ.items() if v.strip()}
        if "AWS_REGION" not in values and "AWS_DEFAULT_REGION" in values:
            values["AWS_REGION"] = values["AWS_DEFAULT_REGION"]
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
            )
            raise SettingsError(f"the function's environment is not usable: {problems}") from None

    @classmethod
    def variables(cls) -> set[str]:
        """The environment variables this model reads."""
        return {field.alias or name for name, field in cls.model_fields.items()}


class FunctionSettings(Settings):
    """What every function of template.yaml gets from its Globals: no resource name may be
    missing, since a default would point the function at a table that is not its stack's."""

    jobs_table: str = Field(alias="JOBS_TABLE")
    images_table: str = Field(alias="IMAGES_TABLE")
    stores_table: str = Field(alias="STORES_TABLE")
    idempotency_table: str = Field(alias="IDEMPOTENCY_TABLE")
    webhook_secrets_table: str = Field(alias="WEBHOOK_SECRETS_TABLE")
    image_queue_url: str = Field(alias="IMAGE_QUEUE_URL")
    express_queue_url: str = Field(alias="EXPRESS_QUEUE_URL")
    page_token_secret_arn: str = Field(alias="PAGE_TOKEN_SECRET_ARN")
    webhook_queue_url: str = Field(alias="WEBHOOK_QUEUE_URL")
    uploads_table: str = Field(alias="UPLOADS_TABLE")
    uploads_bucket: str = Field(alias="UPLOADS_BUCKET")
    ingest_queue_url: str = Field(alias="INGEST_QUEUE_URL")
    exports_table: str = Field(alias="EXPORTS_TABLE")
    export_queue_url: str = Field(alias="EXPORT_QUEUE_URL")


_settings_class: type[Settings] = Settings


def load_settings(model: type[Settings] = FunctionSettings) -> Settings:
    """Validate the environment as `model` now (the init phase) and serve it from then on;
    raises SettingsError naming every missing or malformed variable."""
    global _settings_class
    _settings_class = model
    get_settings.cache_clear()
    return get_settings()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return _settings_class.from_environment()
