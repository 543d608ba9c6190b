"""The process function's bound on bytes in flight: however many images a batch holds, the
image bodies held at once never exceed IMAGE_BYTES_IN_FLIGHT, and images still run side by
side. Downloads, measurement and filing are stand-ins here; waits are on events only."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import pytest

from retail_pulse.data.jobs import Filed, Filing
from retail_pulse.imaging.download import FetchedImage
from retail_pulse.jobs import process
from retail_pulse.jobs.process import BatchRecord, ByteBudget, NotStarted
from retail_pulse.settings import get_settings

WAIT_S = 30  # only ever reached when something is broken


def test_reservations_wait_for_room_and_are_woken_by_a_release() -> None:
    budget = ByteBudget(100)
    assert budget.acquire(60) == 60
    assert budget.acquire(60, timeout_s=0) is None  # 120 would not fit
    got: list[int | None] = []
    started = threading.Event()

    def waiter() -> None:
        started.set()
        got.append(budget.acquire(60, timeout_s=WAIT_S))

    thread = threading.Thread(target=waiter)
    thread.start()
    started.wait(WAIT_S)
    budget.release(60)
    thread.join(WAIT_S)
    assert got == [60]
    assert budget.peak == 60 and budget.held == 60


def test_a_reservation_larger_than_the_budget_runs_alone_and_shrinks_to_its_size() -> None:
    budget = ByteBudget(100)
    with budget.reserve(1_000) as reservation:  # clipped: one image may always run
        assert budget.held == 100
        reservation.shrink(30)
        assert budget.held == 30
        reservation.shrink(50)  # never grows
        assert budget.held == 30
    assert budget.held == 0
    with budget.reserve(100), pytest.raises(NotStarted), budget.reserve(1, timeout_s=0):
        pass


@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A 100-byte cap per image and no GPU pause."""
    monkeypatch.setenv("MAX_IMAGE_BYTES", "100")
    monkeypatch.setenv("GPU_SLEEP_MIN_S", "0")
    monkeypatch.setenv("GPU_SLEEP_MAX_S", "0")
    monkeypatch.setenv("FILING", "batch")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


class Bodies:
    """Stand-in downloads of 80-byte bodies that count the bytes held from a download's
    start to the end of its measurement, as the process function holds them."""

    def __init__(self, together: int) -> None:
        self.lock = threading.Lock()
        self.held = 0
        self.peak = 0
        self.measured = 0
        # The first `together` downloads wait for each other: images do run side by side.
        self.side_by_side = threading.Barrier(together, timeout=WAIT_S)
        self.waited = 0

    def fetch(self, url: str, settings: Any, *, size_known: Callable[[int], None]) -> Any:
        size_known(80)
        with self.lock:
            self.held += 80
            self.peak = max(self.peak, self.held)
            wait = self.waited < self.side_by_side.parties
            self.waited += 1
        if wait:
            self.side_by_side.wait()
        return FetchedImage(url=url, data=b"x" * 80, content_type="image/jpeg")

    def measure(self, data: bytes, settings: Any, content_type: str | None = None) -> Any:
        with self.lock:
            self.held -= len(data)
            self.measured += 1
        return SimpleNamespace(width=30, height=10, perimeter=80)


def _records(count: int) -> list[BatchRecord]:
    return [
        BatchRecord(
            message_id=f"m{i}",
            body=json.dumps(
                {"job_id": "job", "image_index": i, "url": f"http://h/{i}", "store_id": "S1"}
            ),
            receive_count=1,
            receipt_handle=f"r{i}",
        )
        for i in range(count)
    ]


@pytest.mark.usefixtures("small_limits")
def test_bytes_in_flight_never_exceed_the_budget_whatever_the_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Room for two caps at once (200 of 250), not three: two bodies of 80 at most.
    budget = ByteBudget(250)
    bodies = Bodies(together=2)
    filed: list[list[int]] = []

    def file_outcomes(job_id: str, filings: list[Filing], writers: Any = None) -> Filed:
        filed.append([filing.image.image_index for filing in filings])
        return Filed(filed=list(range(len(filings))), duplicates=[], unsettled=[])

    monkeypatch.setattr(process, "fetch", bodies.fetch)
    monkeypatch.setattr(process, "measure_image", bodies.measure)
    monkeypatch.setattr(process, "file_outcomes", file_outcomes)
    monkeypatch.setattr(process, "finish_job", lambda job_id: None)
    monkeypatch.setattr(process, "get_job", lambda job_id, consistent=True: None)  # none cancelled

    with ThreadPoolExecutor(max_workers=99) as pool:
        failed = process.process_batch(_records(99), pool, budget, lambda: 60.0)

    assert failed == []
    assert bodies.measured == 99
    assert filed == [list(range(99))]  # one filing for the job's 99 images
    assert 160 == bodies.peak <= budget.capacity  # two at once, never three
    assert budget.peak <= budget.capacity and budget.held == 0


@pytest.mark.usefixtures("small_limits")
def test_an_image_that_cannot_start_in_time_goes_back_untouched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    budget = ByteBudget(100)
    budget.acquire(100)  # held by a download that does not end in time
    delayed: list[tuple[str, int]] = []
    monkeypatch.setattr(
        process, "delay_message", lambda r, s, express=False: delayed.append((r, s))
    )
    monkeypatch.setattr(process, "file_outcomes", lambda *args: pytest.fail("filed"))
    monkeypatch.setattr(process, "record_outcome", lambda *args: pytest.fail("filed"))
    monkeypatch.setattr(process, "get_job", lambda job_id, consistent=True: None)  # none cancelled

    with ThreadPoolExecutor(max_workers=2) as pool:
        # No time left past the image's own deadline: nothing may start.
        failed = process.process_batch(_records(2), pool, budget, lambda: 1.0)

    assert failed == ["m0", "m1"]
    assert sorted(delayed) == [("r0", 0), ("r1", 0)]  # visible again at once
