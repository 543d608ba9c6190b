"""The job list's merge of status partitions, its tokens, the results tokens and the
Retry-After rule: pure logic, no AWS."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from retail_pulse import tokens
from retail_pulse.domain import JOB_STATES, Job, JobRef
from retail_pulse.errors import InvalidRequest
from retail_pulse.jobs import job_list, results
from retail_pulse.jobs.status import retry_after

KEY = b"the deployment's page token key"
T0 = datetime(2026, 11, 28, 10, 15, tzinfo=UTC)


class FakeIndex:
    """fetch() over in-memory partitions in DynamoDB's order (newest first; refs of one
    instant in an order that is not the list's), counting reads."""

    def __init__(self, partitions: dict[str, list[JobRef]], seed: int = 0) -> None:
        shuffle = random.Random(seed)
        self.partitions = {}
        for name, refs in partitions.items():
            ordered = sorted(refs, key=lambda r: (r.created_at, shuffle.random()), reverse=True)
            self.partitions[name] = ordered
        self.reads = 0
        self.items_read = 0

    def fetch(
        self, partition: str, not_after: datetime | None, after: JobRef | None, count: int
    ) -> tuple[list[JobRef], bool]:
        self.reads += 1
        refs = [
            r for r in self.partitions[partition] if not_after is None or r.created_at <= not_after
        ]
        if after is not None:
            refs = refs[refs.index(after) + 1 :]
        page = refs[:count]
        self.items_read += len(page)
        return page, len(page) < count


def every_page(index: FakeIndex, partitions: list[str], limit: int) -> list[list[JobRef]]:
    pages, boundary = [], None
    while True:
        page, boundary = job_list.newest_first(partitions, boundary, limit, index.fetch)
        pages.append(page)
        if boundary is None:
            return pages


def expected_order(partitions: dict[str, list[JobRef]]) -> list[JobRef]:
    refs = [r for refs in partitions.values() for r in refs]
    return sorted(refs, key=lambda r: (r.created_at, r.job_id), reverse=True)


def ref(seconds: float, job_id: str) -> JobRef:
    return JobRef(created_at=T0 + timedelta(seconds=seconds), job_id=job_id)


def test_one_partition_is_one_read_per_page_of_limit_plus_one():
    jobs = [ref(i, f"j{i:02d}") for i in range(10)]
    index = FakeIndex({"a#ongoing": jobs})

    page, boundary = job_list.newest_first(["a#ongoing"], None, 4, index.fetch)

    assert page == jobs[::-1][:4] and boundary == page[-1]
    assert (index.reads, index.items_read) == (1, 5)


def test_partitions_are_merged_newest_first():
    parts = {
        "a#ongoing": [ref(9, "o1"), ref(8.5, "o2")],
        "a#completed": [ref(i, f"c{i}") for i in range(8)],
        "a#failed": [ref(7.5, "f1"), ref(0.5, "f2")],
    }
    index = FakeIndex(parts)

    pages = every_page(index, list(parts), limit=3)

    assert [r for page in pages for r in page] == expected_order(parts)
    assert [len(page) for page in pages] == [3, 3, 3, 3]


@pytest.mark.parametrize("seed", range(40))
def test_any_mix_of_partitions_ties_and_limits_pages_every_job_exactly_once(seed):
    rng = random.Random(seed)
    parts = {
        name: [ref(rng.randint(0, 12), f"{name}-{n}") for n in range(rng.randint(0, 25))]
        for name in ("ongoing", "completed", "failed", "cancelled")
    }
    index = FakeIndex(parts, seed)
    limit = rng.choice([1, 2, 3, 5, 20])

    pages = every_page(index, list(parts), limit)

    assert [r for page in pages for r in page] == expected_order(parts)
    assert all(len(page) == limit for page in pages[:-1])
    assert pages[-1] or len(pages) == 1  # a token never leads to an empty page


def test_a_token_carries_its_query_and_client():
    boundary = ref(1.000001, "job-1")
    token = job_list.encode_token("client-a", "failed", boundary, KEY)

    assert job_list.decode_token(token, "client-a", "failed", KEY) == boundary
    with pytest.raises(InvalidRequest, match="not valid"):
        job_list.decode_token(token, "client-b", "failed", KEY)
    with pytest.raises(InvalidRequest, match="different query"):
        job_list.decode_token(token, "client-a", None, KEY)
    with pytest.raises(InvalidRequest, match="not valid"):  # a results token is no jobs token
        job_list.decode_token(results.encode_token("client-a", "j", 3, KEY), "client-a", None, KEY)


@pytest.mark.parametrize(
    "fields",
    [
        {"q": [None], "t": "yesterday", "j": "job-1"},
        {"q": [None], "t": "2026-11-28T10:15:00Z", "j": 7},
        {"q": [None], "t": "2026-11-28T10:15:00Z", "j": ""},
        {"q": [None], "j": "job-1"},
    ],
)
def test_a_signed_but_malformed_jobs_token_is_a_bad_request(fields):
    token = tokens.sign(fields, "default", KEY, kind="jobs")
    with pytest.raises(InvalidRequest) as caught:
        job_list.decode_token(token, "default", None, KEY)
    assert str(caught.value) == tokens.BAD_TOKEN


@pytest.mark.parametrize("after", [-1, True, "3", 10**9, None])
def test_a_signed_but_malformed_results_token_is_a_bad_request(after):
    token = tokens.sign({"q": ["job-1"], "i": after}, "default", KEY, kind="results")
    with pytest.raises(InvalidRequest) as caught:
        results.decode_token(token, "default", "job-1", KEY)
    assert str(caught.value) == tokens.BAD_TOKEN


def test_results_tokens_are_bound_to_the_job():
    token = results.encode_token("default", "job-1", 41, KEY)
    assert results.decode_token(token, "default", "job-1", KEY) == 41
    with pytest.raises(InvalidRequest, match="different job"):
        results.decode_token(token, "default", "job-2", KEY)


def test_the_status_filter_knows_every_status_from_one_place():
    assert JOB_STATES == ("ongoing", "completed", "failed", "cancelled")


def job(total: int, done: int, age_s: float, failed: int = 0) -> Job:
    return Job(
        job_id="j",
        total=total,
        succeeded=done - failed,
        failed=failed,
        visit_count=1,
        created_at=T0 - timedelta(seconds=age_s),
    )


@pytest.mark.parametrize(
    ("total", "done", "age_s", "expected"),
    [
        (10, 0, 30, 5),  # nothing done yet: no rate, 5 s
        (10, 5, 10, 10),  # 5 left at 0.5/s
        (10, 9, 9, 1),  # 1 left at 1/s
        (100, 99, 0.5, 1),  # under a second left: 1, never 0
        (1000, 10, 10, 60),  # 990 s left: at most 60
        (10, 3, 2.5, 6),  # 7 left at 1.2/s: 5.83 s, rounded up
    ],
)
def test_retry_after_is_the_time_left_at_the_rate_so_far_within_1_to_60(
    total, done, age_s, expected
):
    assert retry_after(job(total, done, age_s), T0) == expected
