"""Request and response bodies of the public API (the SPEC's contract, kept exact)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

from retail_pulse.settings import get_settings

# RFC 3339 needs a full date and time; the offset is optional here (no offset means UTC).
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})?$"
)


def shown(text: str) -> str:
    """`text` fit to quote in an error message: characters UTF-8 cannot carry (lone
    surrogates from a JSON escape) are written as escapes; Pydantic fails on them."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def parse_timestamp(value: str) -> datetime:
    """Parse an RFC 3339 timestamp to an aware UTC datetime; no offset means UTC."""
    text = value.strip()
    if not _RFC3339.match(text):
        raise ValueError(
            f"'{shown(value)}' is not an RFC 3339 timestamp; use a form like 2026-11-28T10:15:00Z"
        )
    text = text.replace("z", "Z").replace("Z", "+00:00")
    fraction = re.search(r"\.(\d+)", text)
    if fraction and len(fraction.group(1)) > 6:  # datetime keeps microseconds only
        text = text.replace(fraction.group(0), "." + fraction.group(1)[:6])
    try:
        parsed = datetime.fromisoformat(text.replace("t", "T"))
    except ValueError as exc:
        raise ValueError(f"'{shown(value)}' is not a valid date and time ({exc})") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with a Z, to the second unless the moment has microseconds."""
    moment = moment.astimezone(UTC)
    spec = "seconds" if moment.microsecond == 0 else "microseconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")


class Visit(BaseModel):
    """One store visit: the store, when it was visited, and the photos taken."""

    model_config = ConfigDict(extra="ignore")

    store_id: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    image_url: Annotated[list[StrictStr], Field(min_length=1)]
    visit_time: StrictStr

    @field_validator("store_id")
    @classmethod
    def _store_id_is_trimmed(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("store_id must not be blank")
        return value

    @field_validator("image_url")
    @classmethod
    def _urls_are_http(cls, urls: list[str]) -> list[str]:
        limits = get_settings()
        if len(urls) > limits.max_urls_per_visit:
            raise ValueError(
                f"a visit may have at most {limits.max_urls_per_visit} image URLs "
                f"(limit MAX_URLS_PER_VISIT); this one has {len(urls)}: split it into more visits"
            )
        for position, url in enumerate(urls):
            if len(url) > limits.max_url_length:
                raise ValueError(
                    f"image_url[{position}] is {len(url)} characters long; the limit is "
                    f"{limits.max_url_length} (MAX_URL_LENGTH)"
                )
            # Unprintable characters include lone surrogates, which no store can encode.
            if any(c.isspace() or not c.isprintable() for c in url):
                raise ValueError(
                    f"image_url[{position}] is not an http or https URL: it contains a space "
                    "or an unprintable character (percent-encode it)"
                )
            if not re.match(r"^https?://[^/?#]+", url, re.IGNORECASE):
                raise ValueError(
                    f"image_url[{position}] '{shown(url[:100])}' is not an http or https URL"
                )
        return urls

    @field_validator("visit_time")
    @classmethod
    def _visit_time_parses(cls, value: str) -> str:
        return format_timestamp(parse_timestamp(value))


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

    count: Annotated[StrictInt, Field(ge=1, description="Number of visits; must equal len(visits)")]
    visits: Annotated[list[Visit], Field(min_length=1)]

    def check_consistency(self) -> None:
        """Cross-field rules, checked after the fields themselves are valid."""
        if self.count != len(self.visits):
            raise ValueError(
                f"count is {self.count} but visits has {len(self.visits)} entries; they must match"
            )
        limit = get_settings().max_images_per_job
        images = self.image_count
        if images > limit:
            raise ValueError(
                f"the job has {images} images; the limit is {limit} per job "
                "(MAX_IMAGES_PER_JOB): split it into several jobs"
            )

    @property
    def image_count(self) -> int:
        return sum(len(visit.image_url) for visit in self.visits)


class SubmitResponse(BaseModel):
    job_id: str


class ErrorBody(BaseModel):
    error: str = Field(description="What was wrong with the request, and what to do")


class UnknownJobBody(BaseModel):
    """The SPEC's body for an unknown job id: exactly `{}`."""

    model_config = ConfigDict(extra="forbid")


class Progress(BaseModel):
    total: int
    succeeded: int
    failed: int


class StoreError(BaseModel):
    store_id: str
    error: str


class StatusResponse(BaseModel):
    status: Literal["ongoing", "completed", "failed"]
    job_id: str
    # Only a failed job has `error`; the SPEC's other bodies have no such key.
    error: list[StoreError] | None = Field(default=None, exclude_if=lambda v: v is None)
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
