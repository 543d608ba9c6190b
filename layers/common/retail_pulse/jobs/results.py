"""GET /api/results: every image of one of the caller's jobs, in submit order, a page at a
time, as JSON rows or CSV.

One consistent read of the job (whose is it?) and one Query of its images by the table's
own keys (plus its manifest's slices for images not filed yet): a page of N images reads
about N items, never an index or a scan.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from retail_pulse import tokens
from retail_pulse.data.jobs import get_job
from retail_pulse.data.listing import job_images
from retail_pulse.data.secrets import page_token_key
from retail_pulse.domain import ImageReport, ResultsPage
from retail_pulse.errors import InvalidRequest, UnknownJob

# 1,000 rows of the longest URLs (MAX_URL_LENGTH) and errors are under 3 MB, inside
# Lambda's 6 MB response.
DEFAULT_LIMIT = 1000
MAX_LIMIT = 1000
# DynamoDB rejects keys over 2 KB; ids we issue are 36 characters.
_MAX_JOB_ID = 256
_KIND = "results"

OTHER_JOB_TOKEN = (
    "the next token belongs to a different job: send it with the jobid of the request that "
    "returned it"
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


def encode_token(tenant: str, job_id: str, after_index: int, key: bytes) -> str:
    """The next page's token: the job and the last image shown, signed for the client."""
    return tokens.sign({"q": [job_id], "i": after_index}, tenant, key, kind=_KIND)


def decode_token(token: str, tenant: str, job_id: str, key: bytes) -> int:
    """The image index a token's page starts after, once the token is known to be ours,
    this client's and this job's."""
    payload = tokens.verify(token, tenant, key, kind=_KIND)
    after = payload.get("i")
    if type(after) is not int or not 0 <= after < 10**9:
        raise InvalidRequest(tokens.BAD_TOKEN)
    if payload.get("q") != [job_id]:
        raise InvalidRequest(OTHER_JOB_TOKEN)
    return after


def job_results(
    tenant: str, job_id: str, limit: int = DEFAULT_LIMIT, next_token: str | None = None
) -> ResultsPage:
    """One page of the job's images. Raises UnknownJob when the caller has no such job
    (another client's job answers exactly as one that does not exist), InvalidRequest for a
    token that is not this client's and this job's."""
    job = get_job(job_id) if job_id and len(job_id) <= _MAX_JOB_ID else None
    if job is None or job.tenant != tenant:
        raise UnknownJob(job_id)
    key = page_token_key()
    after = decode_token(next_token, tenant, job_id, key) if next_token else None
    rows, last = job_images(job_id, job.total, limit, after)
    # A token only when images remain beyond this page.
    more = last < job.total - 1
    return ResultsPage(results=rows, next=encode_token(tenant, job_id, last, key) if more else None)


def to_csv(rows: Sequence[ImageReport]) -> str:
    """The rows as CSV (RFC 4180, CRLF line ends) under a header row; empty for None."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(
            [
                row.store_id,
                row.url,
                row.visit_time,
                row.state,
                row.perimeter,
                row.width,
                row.height,
                row.error,
            ]
        )
    return out.getvalue()
