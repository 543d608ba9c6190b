"""What a failed job's status says of its failures, whatever their number and size: at most
100 stores in store id order, each store's first failure, how many stores failed, errors of
at most 512 characters that lose the middle of their URL, and a list under its byte budget
as JSON (escapes included), so status, event and webhook stay under 64 KB."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from retail_pulse.data.record_keys import failed_store_key
from retail_pulse.failure_summary import (
    ELLIPSIS,
    MAX_ERROR_CHARS,
    MAX_LISTED_BYTES,
    MAX_LISTED_STORES,
    FailedImage,
    FailuresSoFar,
    FailureSummary,
    listed_bytes,
    shorten_error,
)

PREFIX = "image download failed: HTTP 403 for "


def presigned(n: int, length: int = 1800) -> str:
    """A URL shaped like an S3 presigned one, `length` characters long."""
    head = f"https://bucket.s3.amazonaws.com/visits/{n:04d}/photo.jpg?X-Amz-Signature="
    return head + ("0123456789abcdef" * length)[: length - len(head)]


def test_a_short_error_is_kept_whole() -> None:
    text = PREFIX + "https://images.example/a.jpg"
    assert shorten_error(text) == text
    exactly = "x" * MAX_ERROR_CHARS
    assert shorten_error(exactly) == exactly


def test_a_long_error_loses_the_middle_of_its_url_and_keeps_the_cause_and_both_ends() -> None:
    url = presigned(7)
    text = PREFIX + url

    short = shorten_error(text)

    assert len(short) == MAX_ERROR_CHARS
    assert short.count(ELLIPSIS) == 1
    head, tail = short.split(ELLIPSIS)
    # The cause and the URL's start (host, path), then the URL's end: nothing else changed.
    assert head.startswith(PREFIX + "https://bucket.s3.amazonaws.com/visits/0007/photo.jpg")
    assert text.startswith(head) and text.endswith(tail)
    assert abs(len(head) - len(PREFIX) - len(tail)) <= 1  # the cut is in the URL's middle


def test_the_longest_url_is_the_one_cut_and_text_after_it_stays() -> None:
    text = f"redirected from https://a.example/x to {presigned(1, 900)} (refused)"

    short = shorten_error(text)

    assert len(short) == MAX_ERROR_CHARS
    assert short.startswith("redirected from https://a.example/x to https://bucket")
    assert short.endswith(" (refused)")


def test_a_long_error_without_a_url_loses_its_own_middle() -> None:
    text = "a" * 400 + "b" * 400

    short = shorten_error(text)

    assert len(short) == MAX_ERROR_CHARS
    assert short.startswith("a" * 255) and short.endswith("b" * 255)
    assert ELLIPSIS in short


def test_stores_in_store_id_order_each_with_its_first_failure_and_how_many_failed() -> None:
    failures = [
        FailedImage("S3", "third store, first image"),
        FailedImage("S1", "first store, first image"),
        FailedImage("S3", "third store, second image"),
        FailedImage("S2", "second store"),
        FailedImage("S1", "first store, second image"),
    ]

    summary = FailureSummary.of(failures)

    assert summary.stores == (
        FailedImage("S1", "first store, first image"),
        FailedImage("S2", "second store"),
        FailedImage("S3", "third store, first image"),
    )
    assert (summary.store_count, summary.truncated) == (3, False)


def test_many_stores_list_the_first_hundred_by_store_id_and_count_them_all() -> None:
    ids = [f"X{n:05d}" for n in range(3000)]
    failures = [FailedImage(store, f"{store} failed") for store in reversed(ids)]

    summary = FailureSummary.of(failures)

    assert [s.store_id for s in summary.stores] == ids[:MAX_LISTED_STORES]
    assert all(s.error == f"{s.store_id} failed" for s in summary.stores)
    assert (summary.store_count, summary.truncated) == (3000, True)


def test_the_longest_plain_list_fits_whole() -> None:
    """100 stores of the longest id (64) with 512-character errors: no store is left out
    and no error is cut below 512."""
    failures = [FailedImage(f"{n:03d}".rjust(64, "S"), PREFIX + presigned(n)) for n in range(150)]

    summary = FailureSummary.of(failures)

    assert len(summary.stores) == MAX_LISTED_STORES
    assert all(len(s.error) == MAX_ERROR_CHARS for s in summary.stores)
    assert listed_bytes(summary.stores) <= MAX_LISTED_BYTES


def test_escaped_characters_cut_errors_shorter_before_any_store_is_left_out() -> None:
    """Non-ASCII is six bytes as a JSON escape: 100 such errors of 512 characters would be
    over 300 KB. The errors get shorter; the hundred stores stay."""
    failures = [
        FailedImage("店舗" * 8 + f"{n:04d}", "取得失敗 " + "https://例え.jp/" + "画" * 900)
        for n in range(100)
    ]

    summary = FailureSummary.of(failures)

    assert len(summary.stores) == 100 and summary.store_count == 100
    assert not summary.truncated
    assert listed_bytes(summary.stores) <= MAX_LISTED_BYTES
    assert all(
        ELLIPSIS in s.error and s.error.startswith("取得失敗 https://例え.jp/画")
        for s in summary.stores
    )


def test_ids_too_large_for_the_budget_leave_stores_out_and_say_so() -> None:
    """64-character ids of characters outside the BMP are 768 bytes each as JSON escapes:
    a hundred of them alone are over the budget. Stores are left out, and the status says
    the list was cut."""
    failures = [FailedImage("\U0001f3ea" * 60 + f"{n:04d}", "failed") for n in range(100)]

    summary = FailureSummary.of(failures)

    assert 0 < len(summary.stores) < 100
    assert (summary.store_count, summary.truncated) == (100, True)
    assert listed_bytes(summary.stores) <= MAX_LISTED_BYTES


failure = st.builds(
    FailedImage,
    store_id=st.text(min_size=1, max_size=64),
    error=st.text(max_size=3000),
)


@given(st.lists(failure, max_size=300))
def test_any_failures_give_a_bounded_summary_in_store_order(failures: list[FailedImage]) -> None:
    summary = FailureSummary.of(failures)

    first: dict[str, str] = {}
    for item in failures:
        first.setdefault(item.store_id, item.error)
    listed = [s.store_id for s in summary.stores]
    assert summary.store_count == len(first)
    assert listed == sorted(first)[: len(listed)]
    assert len(listed) <= MAX_LISTED_STORES
    assert summary.truncated == (len(listed) < len(first))
    assert all(len(s.error) <= MAX_ERROR_CHARS for s in summary.stores)
    assert len(json.dumps([vars(s) for s in summary.stores])) <= MAX_LISTED_BYTES
    for item in summary.stores:
        whole = first[item.store_id]
        assert item.error == whole or ELLIPSIS in item.error


# Store ids as a client may send them: any text (control characters, prefixes of each
# other, non-ASCII), short enough that Hypothesis finds shared prefixes.
store_ids = st.text(
    alphabet=st.sampled_from(["\x00", "\x01", "\x02", "-", "0", "A", "a", "é", "\uffff", "😀"]),
    min_size=1,
    max_size=4,
)


@given(st.lists(st.tuples(store_ids, st.integers(0, 10**9)), min_size=2, max_size=40))
def test_failedstores_keys_sort_by_store_id_then_image_index(images) -> None:
    """FailedStores' sort key, compared as DynamoDB compares strings (UTF-8 bytes), orders
    failures as the summary needs them: by store id as Python compares it, then by index."""
    by_key = sorted(images, key=lambda i: failed_store_key(*i).encode("utf-8"))
    assert by_key == sorted(images)


@given(
    st.lists(
        st.tuples(store_ids, st.sampled_from(["e1", "e2", "x" * 600])), min_size=0, max_size=300
    ),
    st.integers(1, 50),
)
def test_failures_summed_up_in_pages_in_store_order_as_in_one_go(failures, page) -> None:
    """The paged summary (FailuresSoFar fed FailedStores' order, a page at a time) says
    exactly what FailureSummary.of says of the same failures in image order."""
    in_image_order = [FailedImage(store, error) for store, error in failures]
    in_store_order = [
        in_image_order[i] for _, i in sorted((f.store_id, i) for i, f in enumerate(in_image_order))
    ]
    so_far = FailuresSoFar()
    for start in range(0, len(in_store_order), page):
        so_far = so_far.add(in_store_order[start : start + page])

    assert so_far.read == len(failures)
    assert so_far.summary() == FailureSummary.of(in_image_order)
