"""GET /api/jobs: a client's jobs, newest first, optionally of one status, a page at a time.

The TenantJobs index has one partition per tenant and status (data/job_list.py). With a
status, a page is one Query of that partition; without one, the client's few status
partitions are read side by side and merged newest first. Either way every key read is the
caller's and of the status asked for: nothing is read to be filtered out, only up to one
key per partition beyond the page, to know where the next page starts.

A page ends at a position, (created_at, job_id) of its last job, and the next page starts
after it in every partition: a job that changed status between two pages is not shown
twice (it is at the same position in its new partition).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from retail_pulse import tokens
from retail_pulse.data.job_list import job_refs, jobs_by_id
from retail_pulse.data.record_keys import status_partition
from retail_pulse.data.secrets import page_token_key
from retail_pulse.domain import JOB_STATES, Job, JobRef, JobsPage, JobState
from retail_pulse.errors import InvalidRequest
from retail_pulse.timestamps import format_timestamp, parse_timestamp

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
_KIND = "jobs"
_MAX_JOB_ID = 256

OTHER_QUERY_TOKEN = (
    "the next token belongs to a different query: send it with the same status as the "
    "request that returned it"
)

Fetch = Callable[[str, datetime | None, JobRef | None, int], tuple[list[JobRef], bool]]
"""fetch(partition, not_after, after, count): up to count refs of a partition newest first,
created at or before not_after and after the ref `after`; and whether it holds no more."""


def _order(ref: JobRef) -> tuple[datetime, str]:
    """The list's order, newest first: created_at, then job_id for jobs of the same instant."""
    return (ref.created_at, ref.job_id)


def newest_first(
    partitions: Sequence[str], boundary: JobRef | None, limit: int, fetch: Fetch
) -> tuple[list[JobRef], JobRef | None]:
    """The `limit` newest refs after `boundary` across `partitions`, and the boundary of the
    next page when one has jobs.

    Each partition is read `limit + 1` at a time. A ref is placed only once no unread ref
    of any partition could come before it: unread refs of a partition are never newer than
    the last one read from it (its frontier), so refs strictly newer than every open
    partition's frontier are in their final order. Refs of the same instant as a frontier
    wait for more of that partition (rare: created_at has microseconds).
    """
    not_after = boundary.created_at if boundary else None
    kept: list[JobRef] = []
    last: dict[str, JobRef | None] = dict.fromkeys(partitions)
    open_ = list(partitions)

    def read(partition: str) -> None:
        refs, exhausted = fetch(partition, not_after, last[partition], limit + 1)
        if refs:
            last[partition] = refs[-1]
        if exhausted or not refs:
            open_.remove(partition)
        # Refs of the boundary's instant that the previous page already showed.
        kept.extend(r for r in refs if boundary is None or _order(r) < _order(boundary))

    for partition in partitions:
        read(partition)
    while True:
        frontiers = [ref.created_at for p in open_ if (ref := last[p]) is not None]
        frontier = max(frontiers) if frontiers else None
        candidates = sorted(kept, key=_order, reverse=True)
        placed = (
            candidates if frontier is None else [r for r in candidates if r.created_at > frontier]
        )
        if len(placed) >= limit or not open_:
            page = placed[:limit]
            more = len(candidates) > len(page)
            return page, (page[-1] if more and page else None)
        for partition in [p for p in open_ if (r := last[p]) and r.created_at == frontier]:
            read(partition)


def encode_token(tenant: str, status: JobState | None, boundary: JobRef, key: bytes) -> str:
    """The next page's token: its filter and where it starts, signed for the client."""
    fields = {
        "q": [status],
        "t": format_timestamp(boundary.created_at),
        "j": boundary.job_id,
    }
    return tokens.sign(fields, tenant, key, kind=_KIND)


def decode_token(token: str, tenant: str, status: JobState | None, key: bytes) -> JobRef:
    """Where the page of a token starts, once it is known to be ours, this client's and
    this very query's."""
    payload = tokens.verify(token, tenant, key, kind=_KIND)
    created, job_id = payload.get("t"), payload.get("j")
    if not isinstance(created, str) or not isinstance(job_id, str):
        raise InvalidRequest(tokens.BAD_TOKEN)
    if not job_id or len(job_id) > _MAX_JOB_ID:
        raise InvalidRequest(tokens.BAD_TOKEN)
    try:
        created_at = parse_timestamp(created)
    except ValueError as error:
        raise InvalidRequest(tokens.BAD_TOKEN) from error
    if payload.get("q") != [status]:
        raise InvalidRequest(OTHER_QUERY_TOKEN)
    return JobRef(created_at=created_at, job_id=job_id)


def list_jobs(
    tenant: str,
    status: JobState | None = None,
    limit: int = DEFAULT_LIMIT,
    next_token: str | None = None,
) -> JobsPage:
    """One page of the caller's jobs, newest first. Raises InvalidRequest for a token that
    is not this client's and this query's."""
    key = page_token_key()
    boundary = decode_token(next_token, tenant, status, key) if next_token else None
    states = [status] if status else list(JOB_STATES)
    partitions = [status_partition(tenant, state) for state in states]

    def fetch(
        partition: str, not_after: datetime | None, after: JobRef | None, count: int
    ) -> tuple[list[JobRef], bool]:
        return job_refs(partition, count, not_after=not_after, after=after)

    refs, next_boundary = newest_first(partitions, boundary, limit, fetch)
    found = jobs_by_id(ref.job_id for ref in refs)
    return JobsPage(
        jobs=[
            job for ref in refs if (job := found.get(ref.job_id)) and _shown(job, tenant, states)
        ],
        next=encode_token(tenant, status, next_boundary, key) if next_boundary else None,
    )


def _shown(job: Job, tenant: str, states: Sequence[JobState]) -> bool:
    """The index is eventually consistent: a job read from it that has just changed status
    (or expired) is left out rather than shown under a status it no longer has."""
    return job.tenant == tenant and job.state in states
