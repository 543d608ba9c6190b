"""Visits query building without AWS: dates, key bounds, tokens, paging and grouping."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from retail_pulse.errors import InvalidRequest
from retail_pulse.visits.query import (
    BAD_TOKEN,
    OTHER_QUERY_TOKEN,
    Cursor,
    VisitFilter,
    check_id,
    collect_page,
    decode_token,
    encode_token,
    group_by_store,
    key_bounds,
    parse_filter,
)


@dataclass(frozen=True)
class FakeRow:
    store_id: str
    visit_time: str
    visit_key: str
    perimeter: int
    area: str | None = "710006"


def row(store_id: str, visit_time: str, index: int, perimeter: int = 100) -> FakeRow:
    return FakeRow(store_id, visit_time, f"{visit_time}#job-1#{index:05d}", perimeter)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# -- parameters -------------------------------------------------------------------------


def test_empty_parameters_are_absent_as_in_the_specs_url_template():
    assert parse_filter("", " ", "", None) == VisitFilter()


def test_dates_are_normalised_to_utc():
    query = parse_filter(None, None, "2026-11-28T11:40:00+05:30", "2026-11-28T12:00:00")
    assert query.start == utc(2026, 11, 28, 6, 10)
    assert query.end == utc(2026, 11, 28, 12, 0)


def test_a_bare_date_means_the_whole_utc_day():
    query = parse_filter(None, None, "2026-11-28", "2026-11-28")
    assert query.start == utc(2026, 11, 28)
    assert query.end == datetime(2026, 11, 28, 23, 59, 59, 999999, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "end", "words"),
    [
        ("yesterday", None, "startdate: 'yesterday' is not an RFC 3339 timestamp"),
        (None, "2026-13-01T00:00:00Z", "enddate: '2026-13-01T00:00:00Z' is not a valid date"),
        (None, "2026-02-30", "enddate '2026-02-30' is not a valid date"),
        ("2026-11-29T00:00:00Z", "2026-11-28T00:00:00Z", "is after enddate"),
        # Valid timestamps whose UTC form leaves datetime's range (once an OverflowError).
        ("0001-01-01T00:00:00+01:00", None, "startdate: '0001-01-01T00:00:00\\+01:00' is out"),
        (None, "9999-12-31T23:59:59-01:00", "enddate: '9999-12-31T23:59:59-01:00' is out"),
    ],
)
def test_bad_dates_and_reversed_ranges_are_bad_requests(start, end, words):
    with pytest.raises(InvalidRequest, match=words):
        parse_filter(None, None, start, end)


def test_the_first_and_last_days_of_the_range_are_whole_days():
    query = parse_filter(None, None, "0001-01-01", "9999-12-31")
    assert query.start == utc(1, 1, 1)
    assert query.end == datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert query.contains("0001-01-01T00:00:00Z") and query.contains("9999-12-31T23:59:59Z")


def test_an_instant_range_is_allowed():
    query = parse_filter(None, None, "2026-11-28T10:15:00Z", "2026-11-28T10:15:00Z")
    assert query.contains("2026-11-28T10:15:00Z")
    assert not query.contains("2026-11-28T10:15:00.000001Z")


@pytest.mark.parametrize("value", ["x" * 257, "#areas"])
def test_ids_no_store_master_holds_are_rejected_before_reaching_dynamodb(value):
    with pytest.raises(InvalidRequest, match="is not in the store master"):
        check_id("storeid", value)


# -- key bounds -------------------------------------------------------------------------


def keys_between(lower: str | None, upper: str | None, keys: list[str]) -> list[str]:
    """What DynamoDB's BETWEEN / >= / <= on the sort key would return."""
    return [k for k in keys if (lower is None or k >= lower) and (upper is None or k <= upper)]


def test_key_bounds_cover_whole_seconds_so_fractional_times_are_never_lost():
    keys = sorted(
        [
            "2026-11-28T10:14:59.999999Z#j#00000",
            "2026-11-28T10:15:00Z#j#00001",
            "2026-11-28T10:15:00.5Z#j#00002",  # sorts before ...00Z#, yet is later
            "2026-11-28T10:16:00Z#j#00003",
            "2026-11-28T10:16:00.25Z#j#00004",
            "2026-11-28T10:16:01Z#j#00005",
        ]
    )
    lower, upper = key_bounds(utc(2026, 11, 28, 10, 15), utc(2026, 11, 28, 10, 16))
    assert keys_between(lower, upper, keys) == sorted(keys[1:5])


def test_open_ended_bounds():
    assert key_bounds(None, None) == (None, None)
    lower, upper = key_bounds(utc(2026, 1, 1), None)
    assert (lower, upper) == ("2026-01-01T00:00:00", None)


def test_key_bounds_of_years_before_1000_have_four_digits():
    """strftime("%Y") writes year 5 as "5" on Linux, which sorts after "2026-...": the
    bound must be "0005-..." like the visit keys it is compared with."""
    keys = ["0001-01-01T00:00:00Z#j#00000", "0999-06-01T00:00:00Z#j#00001"]
    lower, upper = key_bounds(utc(1, 1, 1), utc(999, 12, 31))
    assert (lower, upper) == ("0001-01-01T00:00:00", "0999-12-31T00:00:00~")
    assert keys_between(lower, upper, keys) == keys
    lower, _ = key_bounds(utc(5, 1, 1), None)
    assert keys_between(lower, None, ["2026-11-28T10:15:00Z#j#00000"]) != []


# -- tokens -----------------------------------------------------------------------------

QUERY = VisitFilter(area="710006", start=utc(2026, 11, 1))
CURSOR = Cursor("710006", "2026-11-28T10:15:00Z#job-1#00003")


KEY = b"the deployment's page token key"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def signed(raw: bytes, tenant: str = "default", key: bytes = KEY) -> str:
    """A token of these bytes with a valid HMAC: what a forger with the key could make, so
    the checks behind the signature are exercised too."""
    mac = hmac.new(key, tenant.encode() + b"\n" + raw, hashlib.sha256).digest()
    return f"{_b64(raw)}.{_b64(mac)}"


def forge(payload: dict) -> str:
    return signed(json.dumps(payload).encode())


def test_token_round_trip_is_url_safe():
    token = encode_token(QUERY, CURSOR, KEY)
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert decode_token(token, QUERY, ["710006"], KEY) == CURSOR


def test_a_token_altered_or_signed_otherwise_is_refused_before_it_is_read():
    token = encode_token(QUERY, CURSOR, KEY)
    body, mac = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["k"] = "2026-11-29T00:00:00Z#other-job#00001"  # jump elsewhere in the index
    altered = f"{_b64(json.dumps(payload).encode())}.{mac}"
    for bad in (altered, body, signed(base64.urlsafe_b64decode(body + "==="), key=b"other")):
        with pytest.raises(InvalidRequest) as caught:
            decode_token(bad, QUERY, ["710006"], KEY)
        assert str(caught.value) == BAD_TOKEN


def test_a_token_made_for_one_client_is_refused_for_another():
    mine = VisitFilter(area="710006", start=utc(2026, 11, 28), tenant="client-a")
    theirs = VisitFilter(area="710006", start=utc(2026, 11, 28), tenant="client-b")
    token = encode_token(mine, CURSOR, KEY)
    assert decode_token(token, mine, ["710006"], KEY) == CURSOR
    with pytest.raises(InvalidRequest) as caught:
        decode_token(token, theirs, ["710006"], KEY)
    assert str(caught.value) == BAD_TOKEN


@pytest.mark.parametrize(
    "token",
    [
        "not a token!",
        "e30",  # {} : no version
        "bm90IGpzb24",  # "not json"
        forge({"v": 1, "q": QUERY.fingerprint(), "p": "710006", "k": "no-hashes"}),
        forge({"v": 1, "q": QUERY.fingerprint(), "p": 7, "k": CURSOR.after}),
        forge({"v": 2, "q": QUERY.fingerprint(), "p": "710006", "k": CURSOR.after}),
        "A" * 5000,
        # Crafted: each once raised out of decode_token (RecursionError) or slipped through.
        signed(b"[" * 1500),
        forge({"v": True, "q": QUERY.fingerprint(), "p": "710006", "k": CURSOR.after}),
        forge({"v": int("9" * 3000)}),
        signed(b"\xff\xfe\xfd"),
        signed(json.dumps({"v": 1}).encode("utf-16")),
    ],
)
def test_malformed_tokens_are_bad_requests(token):
    with pytest.raises(InvalidRequest, match="not valid") as caught:
        decode_token(token, QUERY, ["710006"], KEY)
    assert str(caught.value) == BAD_TOKEN


@pytest.mark.parametrize(
    ("issued_for", "asked", "partitions"),
    [
        (QUERY, VisitFilter(area="700029", start=utc(2026, 11, 1)), ["700029"]),
        (QUERY, VisitFilter(area="710006"), ["710006"]),
        (
            QUERY,
            VisitFilter(area="710006", start=utc(2026, 11, 1), end=utc(2026, 12, 1)),
            ["710006"],
        ),
        # Same filters, but the partition is not one this query reads (any more).
        (QUERY, QUERY, ["700029"]),
        # Same filters, but the key lies before the range: DynamoDB would refuse it.
        (
            VisitFilter(area="710006", start=utc(2026, 11, 29)),
            VisitFilter(area="710006", start=utc(2026, 11, 29)),
            ["710006"],
        ),
    ],
)
def test_a_token_of_another_query_is_a_bad_request(issued_for, asked, partitions):
    token = encode_token(issued_for, CURSOR, KEY)
    with pytest.raises(InvalidRequest) as caught:
        decode_token(token, asked, partitions, KEY)
    assert str(caught.value) == OTHER_QUERY_TOKEN


# -- paging -----------------------------------------------------------------------------


class FakeIndex:
    """fetch() over in-memory partitions, counting reads."""

    def __init__(self, partitions: dict[str, list[FakeRow]]) -> None:
        self.partitions = {
            p: sorted(rows, key=lambda r: r.visit_key) for p, rows in partitions.items()
        }
        self.calls: list[tuple[str, str | None, int]] = []

    def fetch(self, partition: str, after: str | None, count: int) -> list[FakeRow]:
        self.calls.append((partition, after, count))
        rows = [r for r in self.partitions[partition] if after is None or r.visit_key > after]
        return rows[:count]


def walk(index: FakeIndex, partitions: list[str], limit: int, keep=lambda r: True):
    pages, cursor = [], None
    while True:
        page, cursor = collect_page(partitions, cursor, limit, index.fetch, keep)
        pages.append(page)
        if cursor is None:
            return pages
        assert len(pages) < 100, "paging does not end"


AREA_A = [row(f"S{i % 3}", f"2026-11-2{i % 9}T10:00:0{i % 10}Z", i) for i in range(10)]
AREA_B = [row(f"T{i % 2}", f"2026-11-2{i % 9}T11:00:0{i % 10}Z", 100 + i) for i in range(7)]


@pytest.mark.parametrize("limit", [1, 2, 3, 6, 10, 16, 17, 18, 1000])
def test_pages_across_partitions_have_no_gaps_no_duplicates_and_no_empty_last_page(limit):
    index = FakeIndex({"A": AREA_A, "B": AREA_B, "C": []})
    pages = walk(index, ["A", "B", "C"], limit)

    keys = [r.visit_key for page in pages for r in page]
    expected = [r.visit_key for r in index.partitions["A"] + index.partitions["B"]]
    assert keys == expected
    assert all(len(page) == limit for page in pages[:-1])
    assert 1 <= len(pages[-1]) <= limit


def test_an_exact_fit_has_no_next_page():
    index = FakeIndex({"A": AREA_A})
    page, cursor = collect_page(["A"], None, len(AREA_A), index.fetch, lambda r: True)
    assert len(page) == len(AREA_A) and cursor is None


def test_rows_dropped_by_the_exact_range_do_not_end_the_page_early():
    index = FakeIndex({"A": AREA_A})
    odd = lambda r: int(r.visit_key[-1]) % 2 == 1  # noqa: E731
    pages = walk(index, ["A"], 2, keep=odd)
    assert [r.visit_key for p in pages for r in p] == [
        r.visit_key for r in index.partitions["A"] if odd(r)
    ]
    assert [len(p) for p in pages] == [2, 2, 1]


def test_no_partitions_is_an_empty_page():
    assert collect_page([], None, 10, FakeIndex({}).fetch, lambda r: True) == ([], None)


# -- grouping ---------------------------------------------------------------------------


def test_results_are_grouped_by_store_in_store_id_order_oldest_first():
    rows = [
        row("S2", "2026-11-28T10:15:00.5Z", 0, 30),
        row("S1", "2026-11-28T10:15:00Z", 1, 10),
        row("S2", "2026-11-28T10:15:00Z", 2, 20),
        row("S9", "2026-11-27T00:00:00Z", 3, 90),
    ]
    stores = {"S1": ("710006", "One"), "S2": ("700029", "Two")}
    results = [dataclasses.asdict(r) for r in group_by_store(rows, stores)]
    assert results == [
        {
            "store_id": "S1",
            "area": "710006",
            "store_name": "One",
            "data": [{"date": "2026-11-28T10:15:00Z", "perimeter": 10}],
        },
        {
            "store_id": "S2",
            "area": "700029",
            "store_name": "Two",
            "data": [
                {"date": "2026-11-28T10:15:00Z", "perimeter": 20},
                {"date": "2026-11-28T10:15:00.5Z", "perimeter": 30},
            ],
        },
        # No longer in the store master: still shown, under the area it was recorded with.
        {
            "store_id": "S9",
            "area": "710006",
            "store_name": "",
            "data": [{"date": "2026-11-27T00:00:00Z", "perimeter": 90}],
        },
    ]
