"""GET /api/results: every image of one of the caller's jobs, in submit order, a page at a
time, as JSON rows or CSV; or only its images of one status.

One consistent read of the job (whose is it?) and one Query of its images by the table's
own keys (plus its manifest's slices for images not filed yet): a page of N images reads
about N items, never a scan. With a status:
- failed: the sparse FailedImages index (failures only) and one BatchGetItem of the page's
  records: about one read unit per failure shown, whatever else the job has;
- succeeded, cancelled: the job's records by key, filtered by state (the range's other
  records are read too, never the manifest), a window of images at a time;
- pending: the records and the manifest of a window (a pending image has no record);
and none of it when the job's counters say it has no image of that status (no failure
counted, never cancelled, nothing pending once every image is done).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from retail_pulse import tokens
from retail_pulse.data.jobs import get_job
from retail_pulse.data.results import failed_image_reports, filed_images, job_images
from retail_pulse.data.secrets import page_token_key
from retail_pulse.domain import (
    CANCELLED,
    FAILED,
    PENDING,
    ImageReport,
    ImageState,
    Job,
    ResultsPage,
)
from retail_pulse.errors import InvalidRequest, UnknownJob

# 1,000 rows of the longest URLs (MAX_URL_LENGTH) and errors are under 3 MB, inside
# Lambda's 6 MB response.
DEFAULT_LIMIT = 1000
MAX_LIMIT = 1000
# DynamoDB rejects keys over 2 KB; ids we issue are 36 characters.
_MAX_JOB_ID = 256
_KIND = "results"
# A status other than failed is looked for this many images at a time, and over at most
# SCAN_BUDGET images per request (a page may then hold fewer rows than asked, even none,
# and a token to go on from there): a request reads a bounded number of records.
SCAN_WINDOW = 1000
SCAN_BUDGET = 10_000

OTHER_JOB_TOKEN = (
    "the next token belongs to a different job: send it with the jobid of the request that "
    "returned it"
)
OTHER_STATUS_TOKEN = (
    "the next token belongs to a different status filter: send it with the status (or none) "
    "of the request that returned it"
)
CSV_COLUMNS = (
    "store_id",
    "image_url",
    "visit_time",
    "status",
    "perimeter",
    "width",
    "height",
    "error",
)


def _query(job_id: str, status: ImageState | None) -> list[str]:
    """What a token is bound to: the job, and the status filter when there is one (a
    token of the whole export stays as it was before the filter existed)."""
    return [job_id] if status is None else [job_id, status]


def encode_token(
    tenant: str, job_id: str, after_index: int, key: bytes, status: ImageState | None = None
) -> str:
    """The next page's token: the query and the last image covered, signed for the client."""
    payload = {"q": _query(job_id, status), "i": after_index}
    return tokens.sign(payload, tenant, key, kind=_KIND)


def decode_token(
    token: str, tenant: str, job_id: str, key: bytes, status: ImageState | None = None
) -> int:
    """The image index a token's page starts after, once the token is known to be ours,
    this client's, this job's and this status filter's."""
    payload = tokens.verify(token, tenant, key, kind=_KIND)
    after = payload.get("i")
    if type(after) is not int or not 0 <= after < 10**9:
        raise InvalidRequest(tokens.BAD_TOKEN)
    query = payload.get("q")
    if not isinstance(query, list) or not query or query[0] != job_id:
        raise InvalidRequest(OTHER_JOB_TOKEN)
    if query != _query(job_id, status):
        raise InvalidRequest(OTHER_STATUS_TOKEN)
    return after


def job_results(
    tenant: str,
    job_id: str,
    limit: int = DEFAULT_LIMIT,
    next_token: str | None = None,
    status: ImageState | None = None,
) -> ResultsPage:
    """One page of the job's images, only those of `status` when given. Raises UnknownJob
    when the caller has no such job (another client's job answers exactly as one that does
    not exist), InvalidRequest for a token that is not this client's and this query's."""
    job = get_job(job_id) if job_id and len(job_id) <= _MAX_JOB_ID else None
    if job is None or job.tenant != tenant:
        raise UnknownJob(job_id)
    key = page_token_key()
    after = decode_token(next_token, tenant, job_id, key, status) if next_token else None
    if status is None:
        rows, last = job_images(job_id, job.total, limit, after)
        # A token only when images remain beyond this page.
        more = last < job.total - 1
    else:
        rows, last, more = _in_status(job, status, limit, after)
    token = encode_token(tenant, job_id, last, key, status) if more else None
    return ResultsPage(results=rows, next=token)


def _may_have(job: Job, status: ImageState) -> bool:
    """Whether the job's counters allow an image of `status` (if not, nothing is read)."""
    if status == FAILED:
        return job.failed > 0
    if status == CANCELLED:
        return job.cancelled_at is not None
    if status == PENDING:
        return not job.done
    return job.succeeded > 0


def _in_status(
    job: Job, status: ImageState, limit: int, after: int | None
) -> tuple[list[ImageReport], int, bool]:
    """One page of the job's images of `status` after `after`: its rows, the last image
    index it covers, and whether images beyond it remain to be looked at."""
    if not _may_have(job, status):
        return [], -1, False
    if status == FAILED:
        failures, covered, more = failed_image_reports(job.job_id, limit, after)
        return failures, (covered if covered is not None else -1), more
    first = 0 if after is None else after + 1
    end = min(job.total, first + SCAN_BUDGET)  # one past the last image this request reads
    rows: list[ImageReport] = []
    looked = first - 1
    while looked + 1 < end and len(rows) < limit:
        low, high = looked + 1, min(end, looked + 1 + SCAN_WINDOW) - 1
        if status == PENDING:
            window, _ = job_images(job.job_id, job.total, high - low + 1, low - 1)
            rows += [row for row in window if row.state == PENDING]
        else:
            rows += filed_images(job.job_id, low, high, status)
        looked = high
    if len(rows) > limit:
        rows = rows[:limit]
        looked = rows[-1].image_index
    return rows, looked, looked < job.total - 1


def row_values(row: ImageReport) -> tuple[str | int | None, ...]:
    """An image's values in CSV_COLUMNS order: the CSV's cells, and the JSON row's values
    (whose keys are CSV_COLUMNS too)."""
    return (
        row.store_id,
        row.url,
        row.visit_time,
        row.state,
        row.perimeter,
        row.width,
        row.height,
        row.error,
    )


def to_csv(rows: Sequence[ImageReport], header: bool = True) -> str:
    """The rows as CSV (RFC 4180, CRLF line ends) under a header row; empty for None."""
    out = io.StringIO()
    writer = csv.writer(out)
    if header:
        writer.writerow(CSV_COLUMNS)
    writer.writerows(row_values(row) for row in rows)
    return out.getvalue()
