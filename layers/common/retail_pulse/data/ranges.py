"""A compact text of a set of image indexes ("0-3,7,9-10"), as a filing lists the images it
is about to write on the job's item."""

from __future__ import annotations

from collections.abc import Iterable


def index_ranges(indexes: Iterable[int]) -> str:
    """Image indexes as compact ranges ("0-40,42,50-98"): a batch's images of one job are
    mostly consecutive, so an open filing stays a few bytes of its job's item."""
    ordered = sorted(set(indexes))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def parse_index_ranges(text: str) -> list[int]:
    """The indexes `index_ranges` wrote."""
    indexes: list[int] = []
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        indexes.extend(range(int(first), int(last or first) + 1))
    return indexes
