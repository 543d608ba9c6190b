"""An open filing names its images as compact ranges on its job's item: what it writes must
read back as exactly the images it named, in any order and with any gaps."""

from __future__ import annotations

import random

import pytest

from retail_pulse.data.ranges import index_ranges, parse_index_ranges


@pytest.mark.parametrize(
    ("indexes", "text"),
    [
        ([], ""),
        ([7], "7"),
        (list(range(99)), "0-98"),
        ([0, 1, 2, 5, 7, 8, 9999], "0-2,5,7-8,9999"),
        ([9, 3, 4, 3], "3-4,9"),
    ],
)
def test_ranges_are_compact_and_read_back(indexes: list[int], text: str) -> None:
    assert index_ranges(indexes) == text
    assert parse_index_ranges(text) == sorted(set(indexes))


def test_any_set_of_indexes_reads_back_exactly() -> None:
    generator = random.Random(17)
    for _ in range(500):
        indexes = generator.sample(range(10_000), generator.randint(1, 99))
        assert parse_index_ranges(index_ranges(indexes)) == sorted(indexes)
