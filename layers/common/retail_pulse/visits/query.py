"""Turning a visits request into index lookups, and pages into tokens: pure functions only.

Every image record carries `visit_key` = "<visit_time>#<job_id>#<image_index:05d>", so a
time range is a key range of the StoreVisits or AreaVisits index. One catch: visit times
are written to the second ("...:00Z") unless they have a fraction ("...:00.5Z"), and "."
sorts before "Z", so key order and time order can differ inside one second. The key bounds
therefore cover whole seconds, and each row is checked against the exact range.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Protocol

from retail_pulse import tokens
from retail_pulse.domain import DEFAULT_TENANT, Measurement, StoreResults
from retail_pulse.errors import InvalidRequest, NotInStoreMaster
from retail_pulse.timestamps import format_timestamp, parse_timestamp
from retail_pulse.tokens import BAD_TOKEN

# A page holds at most this many data entries (images): about 70 KB of JSON, far inside
# Lambda's 6 MB response, and a few DynamoDB reads.
DEFAULT_LIMIT = 1000
MAX_LIMIT = 1000
# Longer than any store id or area code the store master accepts (master.MAX_FIELD_LENGTH);
# far below DynamoDB's key limit, so a huge value is a 400, never a DynamoDB error.
MAX_ID_LENGTH = 256
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_VISIT_KEY = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z#[^#]{1,256}#\d{1,9}$")
# Sorts after every character a visit key can hold at that position ("Z", ".", "#").
_AFTER_SECOND = "~"

OTHER_QUERY_TOKEN = (
    "the next token belongs to a different query: send it with the same area, storeid, "
    "startdate and enddate as the request that returned it"
)


@dataclass(frozen=True)
class VisitFilter:
    """A visits request, validated: empty parameters are absent, dates are UTC."""

    area: str | None = None
    store_id: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    # Whose results: only the caller's are read, and a token is bound to its client.
    tenant: str = DEFAULT_TENANT

    def fingerprint(self) -> list[str | None]:
        """What a token must have been issued for (the limit may change between pages)."""
        return [
            self.area,
            self.store_id,
            format_timestamp(self.start) if self.start else None,
            format_timestamp(self.end) if self.end else None,
        ]

    def contains(self, visit_time: str) -> bool:
        """Whether a stored visit time is inside the (inclusive) range."""
        if self.start is None and self.end is None:
            return True
        moment = parse_timestamp(visit_time)
        return (self.start is None or self.start <= moment) and (
            self.end is None or moment <= self.end
        )


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: after image `after` (a visit_key) of `partition`."""

    partition: str
    after: str


class Row(Protocol):
    """What paging and grouping need of a result (data.visits.VisitRow fits)."""

    @property
    def store_id(self) -> str: ...

    @property
    def area(self) -> str | None: ...

    @property
    def visit_time(self) -> str: ...

    @property
    def visit_key(self) -> str: ...

    @property
    def perimeter(self) -> int: ...


Fetch = Callable[[str, str | None, int], Sequence[Row]]
"""fetch(partition, after, count): up to count rows in key order; fewer means no more."""


def parse_filter(
    area: str | None,
    store_id: str | None,
    startdate: str | None,
    enddate: str | None,
    tenant: str = DEFAULT_TENANT,
) -> VisitFilter:
    """Validate the query parameters that do not need the database."""
    area = (area or "").strip() or None
    store_id = (store_id or "").strip() or None
    start = parse_bound("startdate", startdate, end_of_day=False)
    end = parse_bound("enddate", enddate, end_of_day=True)
    if start and end and start > end:
        raise InvalidRequest(
            f"startdate {format_timestamp(start)} is after enddate {format_timestamp(end)}; "
            "the range is inclusive, so send startdate <= enddate"
        )
    return VisitFilter(area=area, store_id=store_id, start=start, end=end, tenant=tenant)


def parse_bound(name: str, value: str | None, *, end_of_day: bool) -> datetime | None:
    """An RFC 3339 timestamp (no offset means UTC); a bare date means that whole UTC day,
    so startdate=2026-11-28&enddate=2026-11-28 is the 28th."""
    text = (value or "").strip()
    if not text:
        return None
    if _DATE_ONLY.match(text):
        try:
            day = date.fromisoformat(text)
        except ValueError as error:
            raise InvalidRequest(f"{name} '{text}' is not a valid date ({error})") from error
        # time.max, not the next midnight minus a microsecond: 9999-12-31 has no next day.
        return datetime.combine(day, time.max if end_of_day else time.min, tzinfo=UTC)
    try:
        return parse_timestamp(text)
    except ValueError as error:
        raise InvalidRequest(f"{name}: {error}") from error


def key_bounds(start: datetime | None, end: datetime | None) -> tuple[str | None, str | None]:
    """visit_key bounds covering every key of the seconds of start and end (see above)."""
    lower = _second(start) if start else None
    upper = _second(end) + _AFTER_SECOND if end else None
    return lower, upper


def _second(moment: datetime) -> str:
    # isoformat, not strftime("%Y..."): glibc writes year 5 as "5", not "0005", and the
    # bound "5-01-01..." sorts after "2026-...", so startdate=0005-01-01 found nothing.
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds")


def check_id(kind: str, value: str) -> None:
    """A value no store master holds: reject it before it reaches a DynamoDB key."""
    if len(value) > MAX_ID_LENGTH or value.startswith("#"):
        shown = value if len(value) <= 40 else value[:37] + "..."
        raise NotInStoreMaster(f"{kind} '{shown}' is not in the store master")


def encode_token(query: VisitFilter, cursor: Cursor, key: bytes) -> str:
    """Opaque to clients: the query it belongs to and the index position, signed for the
    client (retail_pulse.tokens)."""
    fields = {"q": query.fingerprint(), "p": cursor.partition, "k": cursor.after}
    return tokens.sign(fields, query.tenant, key)


def decode_token(token: str, query: VisitFilter, partitions: Sequence[str], key: bytes) -> Cursor:
    """The cursor in a token, after checking it is ours and this client's (its HMAC), well
    formed, issued for this very query, and inside its key range (DynamoDB would refuse
    anything else)."""
    payload = tokens.verify(token, query.tenant, key)
    partition, after = payload.get("p"), payload.get("k")
    if not isinstance(partition, str) or not isinstance(after, str) or not _VISIT_KEY.match(after):
        raise InvalidRequest(BAD_TOKEN)
    if payload.get("q") != query.fingerprint() or partition not in partitions:
        raise InvalidRequest(OTHER_QUERY_TOKEN)
    lower, upper = key_bounds(query.start, query.end)
    if (lower is not None and after < lower) or (upper is not None and after > upper):
        raise InvalidRequest(OTHER_QUERY_TOKEN)
    return Cursor(partition=partition, after=after)


def collect_page(
    partitions: Sequence[str],
    cursor: Cursor | None,
    limit: int,
    fetch: Fetch,
    keep: Callable[[Row], bool],
) -> tuple[list[Row], Cursor | None]:
    """Up to `limit` kept rows, partition after partition, and the cursor of the next page.

    One row beyond the limit is read, so a cursor is returned only when a next page really
    has rows: a client never follows a token to an empty page.
    """
    start = partitions.index(cursor.partition) if cursor else 0
    after = cursor.after if cursor else None
    page: list[tuple[str, Row]] = []
    for partition in partitions[start:]:
        while True:
            wanted = limit + 1 - len(page)
            rows = fetch(partition, after, wanted)
            page.extend((partition, row) for row in rows if keep(row))
            if len(page) > limit:
                last_partition, last = page[limit - 1]
                return [row for _, row in page[:limit]], Cursor(last_partition, last.visit_key)
            if len(rows) < wanted:
                break
            after = rows[-1].visit_key  # rows outside the exact range were dropped: read on
        after = None
    return [row for _, row in page], None


def group_by_store(rows: Sequence[Row], stores: dict[str, tuple[str, str]]) -> list[StoreResults]:
    """One entry per store, in store-id order, its images oldest first.

    `stores` maps a store id to (area, name) from the store master; a store missing from
    it still shows its results, under the area its images were recorded with.
    """
    by_store: dict[str, list[Row]] = {}
    for row in rows:
        by_store.setdefault(row.store_id, []).append(row)
    results = []
    for store_id in sorted(by_store):
        store_rows = sorted(
            by_store[store_id], key=lambda r: (parse_timestamp(r.visit_time), r.visit_key)
        )
        area, name = stores.get(store_id, (store_rows[0].area or "", ""))
        results.append(
            StoreResults(
                store_id=store_id,
                area=area,
                store_name=name,
                data=[Measurement(date=r.visit_time, perimeter=r.perimeter) for r in store_rows],
            )
        )
    return results
