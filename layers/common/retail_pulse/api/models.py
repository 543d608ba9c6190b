"""Request and response bodies of the public API (the SPEC's contract, kept exact)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler.openapi.types import (
    OpenAPIResponse,
)
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictInt,
    StrictStr,
    Tag,
    field_validator,
    model_validator,
)

from retail_pulse.api.checks import FetchableUrl, too_many_images
from retail_pulse.domain import ImageReport, ImageState, Job, JobRequest, JobState, VisitRequest
from retail_pulse.settings import get_settings
from retail_pulse.timestamps import OUT_OF_RANGE, format_timestamp, parse_timestamp, shown

__all__ = ["OUT_OF_RANGE", "format_timestamp", "parse_timestamp", "shown"]


class Visit(BaseModel):
    """One store visit: the store, when it was visited, and the photos taken."""

    model_config = ConfigDict(extra="ignore")

    store_id: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    image_url: Annotated[list[FetchableUrl], Field(min_length=1)]
    visit_time: StrictStr

    @field_validator("store_id")
    @classmethod
    def _store_id_is_trimmed(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("store_id must not be blank")
        return value

    @field_validator("image_url", mode="before")
    @classmethod
    def _at_most_max_urls(cls, urls: Any) -> Any:
        # Before the URLs are checked one by one: a list far over the limit is refused
        # without building an error per bad item.
        limit = get_settings().max_urls_per_visit
        if isinstance(urls, list) and len(urls) > limit:
            raise ValueError(
                f"a visit may have at most {limit} image URLs "
                f"(limit MAX_URLS_PER_VISIT); this one has {len(urls)}: split it into more visits"
            )
        return urls

    @field_validator("visit_time")
    @classmethod
    def _visit_time_parses(cls, value: str) -> str:
        return format_timestamp(parse_timestamp(value))


Count = Annotated[StrictInt, Field(ge=1, description="Number of visits; must equal len(visits)")]
CallbackUrl = Annotated[
    FetchableUrl | None,
    Field(
        description="Optional http(s) URL that receives the signed job.finished event "
        "(README: Webhooks) when the job ends; fetched through the same guard as images"
    ),
]


class JobFields(BaseModel):
    """A submit body's fields other than its visits, by the same rules: what the ingest
    function checks of an uploaded body (its visits one by one, as Visit)."""

    model_config = ConfigDict(extra="ignore")

    count: Count
    callback_url: CallbackUrl = None


class SubmitRequest(BaseModel):
    """The body of POST /api/submit/."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "count": 1,
                    "visits": [
                        {
                            "store_id": "S00339218",
                            "image_url": ["https://www.gstatic.com/webp/gallery/2.jpg"],
                            "visit_time": "2026-11-28T10:15:00Z",
                        }
                    ],
                }
            ]
        },
    )

    count: Count
    visits: Annotated[list[Visit], Field(min_length=1)]
    callback_url: CallbackUrl = None

    @model_validator(mode="before")
    @classmethod
    def _within_the_job_limit(cls, data: Any) -> Any:
        """MAX_IMAGES_PER_JOB, checked before any visit is validated: a 6 MB body holds
        millions of bad items, and an error built and worded for each took minutes."""
        if not isinstance(data, dict) or not isinstance(visits := data.get("visits"), list):
            return data
        limit = get_settings().max_images_per_job
        if len(visits) > limit:
            raise ValueError(
                f"the job has {len(visits)} visits; the limit is {limit} images per job "
                "(MAX_IMAGES_PER_JOB) and each visit has at least one: split it into several jobs"
            )
        images = sum(
            len(urls)
            for visit in visits
            if isinstance(visit, dict) and isinstance(urls := visit.get("image_url"), list)
        )
        if images > limit:
            raise ValueError(too_many_images(images, limit))
        return data

    def check_consistency(self) -> None:
        """Cross-field rules, checked after the fields themselves are valid."""
        if self.count != len(self.visits):
            raise ValueError(
                f"count is {self.count} but visits has {len(self.visits)} entries; they must match"
            )
        limit = get_settings().max_images_per_job
        if self.image_count > limit:  # _within_the_job_limit has seen to it; kept as the rule
            raise ValueError(too_many_images(self.image_count, limit))

    def to_job_request(self, tenant: str) -> JobRequest:
        """The job as the submit use case takes it, for the client that sent it."""
        return JobRequest(
            visits=tuple(
                VisitRequest(
                    store_id=v.store_id, image_url=tuple(v.image_url), visit_time=v.visit_time
                )
                for v in self.visits
            ),
            tenant=tenant,
            callback_url=self.callback_url,
        )

    @property
    def image_count(self) -> int:
        return sum(len(visit.image_url) for visit in self.visits)


class SubmitResponse(BaseModel):
    job_id: str


class UploadSubmitRequest(BaseModel):
    """The body of POST /api/submit/ for a job uploaded with POST /api/uploads."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={"examples": [{"upload_id": "5b0a1b8e-2f7c-4c35-9d59-0c3f1d2e7a41"}]},
    )

    upload_id: Annotated[
        StrictStr,
        Field(min_length=1, max_length=64, description="The upload_id POST /api/uploads gave"),
    ]

    @model_validator(mode="before")
    @classmethod
    def _upload_id_alone(cls, data: Any) -> Any:
        if isinstance(data, dict) and {"count", "visits"} & set(data):
            raise ValueError(
                "send either upload_id (a job uploaded with POST /api/uploads) or count and "
                "visits, not both"
            )
        return data


def _submit_kind(data: Any) -> str:
    return "<upload>" if isinstance(data, dict) and "upload_id" in data else "<body>"


# Either body; the tags never show in an error's path (api/errors.py drops "<...>").
SubmitBody = Annotated[
    Annotated[SubmitRequest, Tag("<body>")] | Annotated[UploadSubmitRequest, Tag("<upload>")],
    Discriminator(_submit_kind),
]


class UploadResponse(BaseModel):
    """The body of POST /api/uploads (201): a presigned S3 POST of the job's body."""

    upload_id: str = Field(description="Submit it once uploaded: POST /api/submit/ {upload_id}")
    upload_url: str = Field(
        description="Where to send the job's JSON body (count, visits, optional callback_url, "
        "as for POST /api/submit/): a multipart/form-data POST of upload_fields, then the "
        "file as the last field (`file`)"
    )
    upload_method: Literal["POST"] = Field(description="The HTTP method of the upload")
    upload_fields: dict[str, str] = Field(
        description="The form fields to send before the file, as they are (S3's POST policy "
        "and its signature: keep them as secret as a password)"
    )
    expires_at: str = Field(description="Until when upload_url accepts it, RFC 3339 in UTC")
    max_bytes: int = Field(description="The largest body S3 accepts for this upload")


class ErrorBody(BaseModel):
    error: str = Field(description="What was wrong with the request, and what to do")


class InternalErrorBody(BaseModel):
    error: str = Field(description="Says the error was logged, with the request id")
    request_id: str = Field(description="The Lambda request id every log line carries")


# Every route may answer this: a bug of ours, logged with its traceback, still in JSON.
INTERNAL_ERROR: dict[int, OpenAPIResponse] = {
    500: {
        "description": "An unexpected error of the service; it is logged under the request id",
        "content": {"application/json": {"model": InternalErrorBody}},
    }
}


class GatewayMessageBody(BaseModel):
    """API Gateway's own answers (no key, throttled, a body over 10 MB): they never reach a
    function, so their body is the gateway's `{"message": ...}`, not `{"error": ...}`."""

    message: str = Field(description="API Gateway's reason, e.g. Forbidden")


class UnknownJobBody(BaseModel):
    """The SPEC's body for an unknown job id: exactly `{}`."""

    model_config = ConfigDict(extra="forbid")


class Progress(BaseModel):
    total: int
    succeeded: int
    failed: int
    # Only a cancelled job's: succeeded + failed + cancelled == total, at every moment.
    cancelled: int | None = Field(default=None, exclude_if=lambda v: v is None)


class StoreError(BaseModel):
    store_id: str | None = Field(
        description="The failed store; null for an uploaded job whose body could not "
        "become its images (the error says what and where)"
    )
    error: str


class StatusResponse(BaseModel):
    status: Literal["ongoing", "completed", "failed", "cancelled"]
    job_id: str
    # Only a failed job has `error` and the two fields after it; the SPEC's other bodies
    # have no such keys.
    error: list[StoreError] | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="Only when failed: the first failure of each failed store, at most 100 "
        "stores in store id order; an error over 512 characters loses the middle of its URL "
        "(…). Every failure is in GET /api/results?status=failed",
    )
    error_count: int | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="Only when failed: how many stores failed",
    )
    error_truncated: bool | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="Only when failed: true when `error` leaves failed stores out "
        "(error_count > its length)",
    )
    ingesting: bool | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="Only while an uploaded job's body is still being read: true, and "
        "progress.total counts the images read so far",
    )
    summarizing: bool | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="Only while every image is done and the job's many failures are being "
        "summed up before it is stamped failed: true (progress counts every image)",
    )
    progress: Progress


class VisitData(BaseModel):
    """One successfully measured image."""

    date: str = Field(description="The visit's time, RFC 3339 in UTC")
    perimeter: int = Field(description="2 * (width + height) of the image, in pixels")


class StoreVisits(BaseModel):
    store_id: str
    area: str = Field(description="The store's area code in the store master")
    store_name: str
    data: list[VisitData] = Field(description="One entry per measured image, oldest first")


class VisitsResponse(BaseModel):
    """The body of GET /api/visits: stores in store-id order."""

    results: list[StoreVisits]
    # Only when more results exist: the SPEC's body has no such key.
    next: str | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="Present when more results exist: pass it back as `next` for the next page",
    )


class JobSummary(BaseModel):
    """One job of the caller's list."""

    job_id: str
    status: JobState
    created_at: str = Field(description="When the job was submitted, RFC 3339 in UTC")
    finished_at: str | None = Field(
        description="When the job reached its terminal status, RFC 3339 in UTC; null before"
    )
    progress: Progress

    @classmethod
    def of(cls, job: Job) -> JobSummary:
        return cls(
            job_id=job.job_id,
            status=job.state,
            created_at=format_timestamp(job.created_at),
            finished_at=format_timestamp(job.finished_at) if job.finished_at else None,
            progress=Progress.model_validate(job.progress, from_attributes=True),
        )


class JobsResponse(BaseModel):
    """The body of GET /api/jobs: the caller's jobs, newest first."""

    jobs: list[JobSummary]
    next: str | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="Present when more jobs exist: pass it back as `next` for the next page",
    )


class ResultRow(BaseModel):
    """One image of a job; null where the image has no such value yet or at all."""

    store_id: str
    image_url: str | None = Field(description="The URL as submitted")
    visit_time: str | None = Field(description="The visit's time, RFC 3339 in UTC")
    status: ImageState = Field(description="pending until the image is processed")
    perimeter: int | None = Field(description="2 * (width + height), when measured")
    width: int | None
    height: int | None
    error: str | None = Field(description="Why the image failed, when it did")

    @classmethod
    def of(cls, row: ImageReport) -> ResultRow:
        return cls(
            store_id=row.store_id,
            image_url=row.url,
            visit_time=row.visit_time,
            status=row.state,
            perimeter=row.perimeter,
            width=row.width,
            height=row.height,
            error=row.error,
        )


class ResultsResponse(BaseModel):
    """The body of GET /api/results: one row per image, in submit order."""

    results: list[ResultRow]
    next: str | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="Present when more images exist: pass it back as `next` for the next page",
    )


class ExportResponse(BaseModel):
    """The body of POST and GET /api/results/export: where the job's export stands."""

    job_id: str
    format: Literal["csv", "jsonl"]
    state: Literal["writing", "ready", "failed"] = Field(
        description="writing: poll the Location again after Retry-After; ready: the file is "
        "at the 303's Location; failed: `error` says why (POST again for a new export)"
    )
    rows: int = Field(description="Rows in the file so far (every image once it is ready)")
    bytes: int = Field(description="Bytes of the file so far")
    error: str | None = Field(
        default=None, exclude_if=lambda v: v is None, description="Why the export failed"
    )
    url_expires_in: int | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="Only when ready: seconds the presigned URL of the 303's Location is valid",
    )


class WebhookSecretResponse(BaseModel):
    """The body of GET /api/webhook-secret and POST /api/webhook-secret/rotate."""

    secret: str = Field(
        description="The caller's webhook signing secret, Standard Webhooks' `whsec_` and "
        "base64 form: verify each delivery with it (README: Webhooks)",
        pattern=r"^whsec_[A-Za-z0-9+/]+={0,2}$",
    )
