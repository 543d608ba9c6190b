"""What a failed job's status says of its failures, bounded whatever their number (a status,
the job.finished event and its webhook stay under 64 KB): which stores failed, with their
first error shortened. Domain types like domain.py's, depending on nothing else of ours."""

from __future__ import annotations

import heapq
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class FailedImage:
    """What a failed job's status shows of one failure."""

    store_id: str
    error: str


# A failed job's status lists this many failed stores at most, in store id order...
MAX_LISTED_STORES = 100


# ...each error at most this many characters (a longer one loses the middle of its URL)...
MAX_ERROR_CHARS = 512


# ...and the list at most this many bytes as JSON (escapes included), so the status, the
# job.finished event and its webhook stay under 64 KB whatever the job: 100 stores of 64
# characters with 512-character errors are 60,700 bytes. Only a list of escaped characters
# (quotes, non-ASCII) goes over; its errors are then cut shorter, down to MIN_ERROR_CHARS,
# before any store is left out.
MAX_LISTED_BYTES = 61_440


MIN_ERROR_CHARS = 64


ELLIPSIS = "\u2026"


_URL = re.compile(r"https?://\S+", re.IGNORECASE)


def shorten_error(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """`text` in at most `limit` characters: a longer one loses the middle of its (longest)
    URL, replaced by an ellipsis, so the cause and both ends of the URL (host, file) stay
    readable; a text whose URL cannot absorb the cut loses its own middle."""
    if len(text) <= limit:
        return text
    cut = len(text) - limit + len(ELLIPSIS)
    urls = sorted(_URL.finditer(text), key=lambda m: m.end() - m.start(), reverse=True)
    if urls and urls[0].end() - urls[0].start() - cut >= 2:
        start, end = urls[0].span()
        return _cut_middle(text, start, end, cut)
    return _cut_middle(text, 0, len(text), cut)


def _cut_middle(text: str, start: int, end: int, cut: int) -> str:
    """`text` without `cut` characters from the middle of text[start:end], then an ellipsis
    where they were (whose own character is part of the cut)."""
    kept = (end - start) - cut
    head = start + kept - kept // 2
    tail = end - kept // 2
    return text[:head] + ELLIPSIS + text[tail:]


def listed_bytes(stores: Iterable[FailedImage]) -> int:
    """The size of `error` as JSON at its largest (ASCII escapes, spaces after separators:
    how EventBridge's Detail is written)."""
    return len(json.dumps([{"store_id": s.store_id, "error": s.error} for s in stores]))


@dataclass(frozen=True)
class FailureSummary:
    """What a failed job's status says of its failures, bounded whatever their number: the
    first failure of each of at most MAX_LISTED_STORES stores, in store id order (errors
    shortened), and how many stores failed. Kept with the job when it fails, so a status
    poll reads only the job."""

    stores: tuple[FailedImage, ...]
    store_count: int

    @property
    def truncated(self) -> bool:
        """Stores that failed are left out of the list."""
        return self.store_count > len(self.stores)

    @classmethod
    def of(cls, failures: Iterable[FailedImage]) -> FailureSummary:
        """The summary of a job's failures, given in image order (a store's first failure
        is the one shown). Holds the store ids and MAX_LISTED_STORES errors, never every
        error."""
        seen: set[str] = set()
        # The smallest store ids so far, the largest on top (negated keys: heapq is a min-heap).
        smallest: list[tuple[_Descending, str]] = []
        for failure in failures:
            if failure.store_id in seen:
                continue
            seen.add(failure.store_id)
            entry = (_Descending(failure.store_id), shorten_error(failure.error))
            if len(smallest) < MAX_LISTED_STORES:
                heapq.heappush(smallest, entry)
            elif failure.store_id < smallest[0][0].value:
                heapq.heapreplace(smallest, entry)
        listed = sorted((key.value, error) for key, error in smallest)
        stores = _within_bytes([FailedImage(store_id, error) for store_id, error in listed])
        return cls(stores=tuple(stores), store_count=len(seen))


@dataclass(frozen=True, order=False)
class _Descending:
    """A store id that sorts in reverse, for the max-heap of FailureSummary.of."""

    value: str

    def __lt__(self, other: _Descending) -> bool:
        return self.value > other.value


def _within_bytes(stores: list[FailedImage]) -> list[FailedImage]:
    """The list, under MAX_LISTED_BYTES as JSON: errors cut shorter (the longest limit that
    fits, not below MIN_ERROR_CHARS), and only then stores left out from the end."""
    if listed_bytes(stores) <= MAX_LISTED_BYTES:
        return stores

    def shortened(limit: int) -> list[FailedImage]:
        return [FailedImage(s.store_id, shorten_error(s.error, limit)) for s in stores]

    low, high = MIN_ERROR_CHARS, MAX_ERROR_CHARS
    while low < high:  # the longest error limit whose list fits
        middle = (low + high + 1) // 2
        if listed_bytes(shortened(middle)) <= MAX_LISTED_BYTES:
            low = middle
        else:
            high = middle - 1
    fitted = shortened(low)
    while fitted and listed_bytes(fitted) > MAX_LISTED_BYTES:
        fitted.pop()
    return fitted


@dataclass(frozen=True)
class FailuresSoFar:
    """A failed job's failures summed up part of the way, read in store id order (each
    store's in image order, data/failure_pass.py): how many were read, how many stores,
    the last store read and the first failure of each of the first MAX_LISTED_STORES
    stores. All a paged pass carries from page to page, whatever the number read."""

    read: int = 0
    store_count: int = 0
    last_store: str | None = None
    listed: tuple[FailedImage, ...] = ()

    def add(self, failures: Iterable[FailedImage]) -> FailuresSoFar:
        """These, the next failures in store id order, added (a store's first is listed)."""
        read, count, last, listed = self.read, self.store_count, self.last_store, list(self.listed)
        for failure in failures:
            read += 1
            if failure.store_id == last:
                continue
            count, last = count + 1, failure.store_id
            if len(listed) < MAX_LISTED_STORES:
                listed.append(FailedImage(failure.store_id, shorten_error(failure.error)))
        return FailuresSoFar(read, count, last, tuple(listed))

    def summary(self) -> FailureSummary:
        """The summary, once every failure is added: as FailureSummary.of sums them up."""
        stores = _within_bytes(list(self.listed))
        return FailureSummary(stores=tuple(stores), store_count=self.store_count)
