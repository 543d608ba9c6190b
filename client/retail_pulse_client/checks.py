"""The service's rules for a submit body and for times, restated so the client needs no
service package.

A job file is checked on the desk, before anything is sent, against the same rules the
service applies (retail_pulse.api.models and api.checks, the SPEC's contract): a body that
passes here is not turned away with a 400 later, short of the store ids, which only the
service knows.
Two places state the rules, so tests hold them together: client/tests/test_client_checks.py
gives the same inputs to both and fails when they disagree, and
client/tests/test_client_contract.py checks the constants below against openapi.json.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeGuard
from urllib.parse import urlsplit

# The submit body's fields (openapi.json: SubmitRequest and Visit): the required ones, and
# the optional callback_url (where the service POSTs a signed job.finished webhook).
SUBMIT_FIELDS = ("count", "visits")
OPTIONAL_SUBMIT_FIELDS = ("callback_url",)
VISIT_FIELDS = ("store_id", "image_url", "visit_time")
STORE_ID_MIN_LENGTH = 1
STORE_ID_MAX_LENGTH = 64
MIN_COUNT = 1

# RFC 3339 with a full date and time; the offset may be left out (then the time is UTC).
_TIMESTAMP = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2}:\d{2})"
    r"(?:\.(?P<fraction>\d{1,9}))?(?P<offset>[Zz]|[+-]\d{2}:\d{2})?"
)
OUT_OF_RANGE = "is out of range: times must fall between 0001-01-01 and 9999-12-31 in UTC"
_HTTP_URL = re.compile(r"https?://[^/?#]+", re.IGNORECASE)


@dataclass(frozen=True)
class Limits:
    """The service's size limits; its defaults unless the same variables say otherwise."""

    images_per_job: int = 50_000
    urls_per_visit: int = 1_000
    url_length: int = 2_048
    # A job over either of these goes through an upload (POST /api/uploads), up to
    # images_per_upload_job images.
    body_bytes: int = 6_000_000
    images_per_upload_job: int = 1_000_000

    @classmethod
    def from_env(cls) -> Limits:
        """MAX_IMAGES_PER_JOB, MAX_URLS_PER_VISIT, MAX_URL_LENGTH: set them to match a
        deployment whose limits differ from the defaults."""
        defaults = cls()

        def read(name: str, default: int) -> int:
            raw = os.environ.get(name, "").strip()
            return int(raw) if raw else default

        return cls(
            images_per_job=read("MAX_IMAGES_PER_JOB", defaults.images_per_job),
            urls_per_visit=read("MAX_URLS_PER_VISIT", defaults.urls_per_visit),
            url_length=read("MAX_URL_LENGTH", defaults.url_length),
            body_bytes=read("MAX_BODY_BYTES", defaults.body_bytes),
            images_per_upload_job=read("MAX_IMAGES_PER_UPLOAD_JOB", defaults.images_per_upload_job),
        )


def quoted(text: str) -> str:
    """`text` in quotes, safe to print: lone surrogates (from a JSON escape) become escapes."""
    return "'" + text.encode("utf-8", "backslashreplace").decode("utf-8") + "'"


def parse_timestamp(value: str) -> datetime:
    """An RFC 3339 timestamp as an aware UTC datetime; ValueError says what is wrong."""
    match = _TIMESTAMP.fullmatch(value.strip())
    if match is None:
        raise ValueError(
            f"{quoted(value)} is not an RFC 3339 timestamp; use a form like 2026-11-28T10:15:00Z"
        )
    fraction = match["fraction"]
    offset = match["offset"] or "Z"
    iso = (
        f"{match['date']}T{match['time']}"
        + (f".{fraction[:6]}" if fraction else "")  # datetime keeps microseconds only
        + ("+00:00" if offset in "Zz" else offset)
    )
    try:
        parsed = datetime.fromisoformat(iso)
    except ValueError as error:
        raise ValueError(f"{quoted(value)} is not a valid date and time ({error})") from None
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        # 9999-12-31T23:59:59-01:00 is in year 10000 in UTC, which datetime cannot hold.
        raise ValueError(f"{quoted(value)} {OUT_OF_RANGE}") from None


def url_problem(url: str, limits: Limits) -> str | None:
    """Why the service would refuse `url` as an image URL, or None when it takes it."""
    if len(url) > limits.url_length:
        return f"is {len(url)} characters long; the limit is {limits.url_length} (MAX_URL_LENGTH)"
    if any(c.isspace() or not c.isprintable() for c in url):
        return (
            "is not an http or https URL: it contains a space or an unprintable character "
            "(percent-encode it)"
        )
    if not _HTTP_URL.match(url):
        return f"{quoted(url[:100])} is not an http or https URL"
    # What the service's fetcher does with it: it must split, name a host (IDNA-encodable)
    # and, when it has one, a port of 1 to 65535.
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
        if host:
            host.encode("idna")
    except (ValueError, UnicodeError) as error:
        return f"{quoted(url[:100])} is not a valid URL: {error}"
    if not host:
        return f"{quoted(url[:100])} is not a valid URL: it has no host"
    if port == 0:
        return f"{quoted(url[:100])} is not a valid URL: port 0 cannot be reached"
    return None


def callback_problem(url: str, limits: Limits) -> str | None:
    """Why the service would refuse `url` as a job's callback_url, or None when it takes it:
    the same rule as an image URL (an http or https URL with a host, within the length
    limit), since the service checks both alike."""
    return url_problem(url, limits)


def field_problems(body: Mapping[str, Any], limits: Limits) -> list[str]:
    """Every field of a submit body the service would reject, one sentence each naming
    the field; empty when every field is right (then see `job_problem`)."""
    problems: list[str] = []
    count = body.get("count")
    if "count" not in body:
        problems.append("count is required")
    elif not _is_int(count):
        problems.append("count must be an integer")
    elif count < MIN_COUNT:
        problems.append(f"count must be at least {MIN_COUNT}")
    visits = body.get("visits")
    if "visits" not in body:
        problems.append("visits is required")
    elif not isinstance(visits, list):
        problems.append("visits must be a list")
    elif not visits:
        problems.append("visits must not be empty")
    else:
        for index, visit in enumerate(visits):
            problems.extend(_visit_problems(f"visits[{index}]", visit, limits))
    callback = body.get("callback_url")
    if callback is not None:  # optional; null is the same as leaving it out
        if not isinstance(callback, str):
            problems.append("callback_url must be a string")
        elif (problem := callback_problem(callback, limits)) is not None:
            problems.append(f"callback_url {problem}")
    return problems


def job_problem(body: Mapping[str, Any], limits: Limits) -> str | None:
    """The whole-job rules, for a body whose fields are all right: count matches, and the
    job is within the image limit."""
    visits = body["visits"]
    if body["count"] != len(visits):
        return f"count is {body['count']} but visits has {len(visits)} entries; they must match"
    images = sum(len(visit["image_url"]) for visit in visits)
    if images > limits.images_per_job:
        return (
            f"the job has {images} images; the limit is {limits.images_per_job} per job "
            "(MAX_IMAGES_PER_JOB): split it into several jobs"
        )
    return None


def _is_int(value: object) -> TypeGuard[int]:
    """A JSON integer; true and false are not numbers to the service."""
    return isinstance(value, int) and not isinstance(value, bool)


def _visit_problems(where: str, visit: object, limits: Limits) -> list[str]:
    if not isinstance(visit, dict):
        return [f"{where} must be a JSON object"]
    problems = [f"{where}.{name} is required" for name in VISIT_FIELDS if name not in visit]
    store_id = visit.get("store_id")
    if "store_id" in visit:
        if not isinstance(store_id, str):
            problems.append(f"{where}.store_id must be a string")
        elif len(store_id) < STORE_ID_MIN_LENGTH:
            problems.append(f"{where}.store_id must not be empty")
        elif len(store_id) > STORE_ID_MAX_LENGTH:
            problems.append(f"{where}.store_id must be at most {STORE_ID_MAX_LENGTH} characters")
        elif not store_id.strip():
            problems.append(f"{where}.store_id must not be blank")
    urls = visit.get("image_url")
    if "image_url" in visit:
        if not isinstance(urls, list):
            problems.append(f"{where}.image_url must be a list")
        elif not urls:
            problems.append(f"{where}.image_url must not be empty")
        else:
            problems.extend(_url_list_problems(f"{where}.image_url", urls, limits))
    visit_time = visit.get("visit_time")
    if "visit_time" in visit:
        if not isinstance(visit_time, str):
            problems.append(f"{where}.visit_time must be a string")
        else:
            try:
                parse_timestamp(visit_time)
            except ValueError as error:
                problems.append(f"{where}.visit_time: {error}")
    return problems


def _url_list_problems(where: str, urls: list[Any], limits: Limits) -> list[str]:
    not_text = [
        f"{where}[{i}] must be a string" for i, url in enumerate(urls) if not isinstance(url, str)
    ]
    if not_text:
        return not_text
    if len(urls) > limits.urls_per_visit:
        return [
            f"{where}: a visit may have at most {limits.urls_per_visit} image URLs "
            f"(limit MAX_URLS_PER_VISIT); this one has {len(urls)}: split it into more visits"
        ]
    return [
        f"{where}[{i}] {problem}"
        for i, url in enumerate(urls)
        if (problem := url_problem(url, limits)) is not None
    ]
