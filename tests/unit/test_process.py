"""The process function's bound on bytes in flight, its per-job filing and its cancel checks.

Image bodies held at once never exceed IMAGE_BYTES_IN_FLIGHT, yet a download holds only what
its body needs (nothing before its host answers), so waiting costs nothing; each job's
results are filed as soon as that job's images are done; a record that cannot start in time
is given back with its attempt unchanged; a job cancelled mid-batch has no download started
once its cancel is seen. Downloads, measurement and filing are stand-ins here; waits are on
events only.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import pytest

from retail_pulse.data.filing import Filed, Filing
from retail_pulse.domain import ImageCancelled, ImageSuccess
from retail_pulse.imaging.download import FetchedImage
from retail_pulse.jobs import process
from retail_pulse.jobs.bytes_budget import ByteBudget, NoRoom
from retail_pulse.jobs.cancellation import CancelledJobs
from retail_pulse.jobs.process import BatchRecord
from retail_pulse.net.body import Hold
from retail_pulse.settings import get_settings

WAIT_S = 30  # only ever reached when something is broken


# --- The budget ---------------------------------------------------------------------------


def test_a_body_holds_nothing_until_told_and_waits_for_the_room_a_release_makes() -> None:
    budget = ByteBudget(100)
    got: list[int] = []
    asking = threading.Event()
    with budget.reservation() as first:
        assert budget.held == 0  # a download whose host has said nothing holds nothing
        first.hold(60, WAIT_S)
        first.hold(40, WAIT_S)  # never less than it holds
        assert budget.held == 60

        def second_body() -> None:
            with budget.reservation() as second:
                asking.set()
                second.hold(60, WAIT_S)  # 120 would not fit: waits for the release
                got.append(budget.held)

        thread = threading.Thread(target=second_body)
        thread.start()
        assert asking.wait(WAIT_S)
    thread.join(WAIT_S)
    assert got == [60]
    assert budget.peak == 60 and budget.held == 0


def test_a_body_larger_than_the_budget_runs_alone_and_no_room_in_time_is_no_room() -> None:
    budget = ByteBudget(100)
    with budget.reservation() as alone:
        alone.hold(1_000, WAIT_S)  # clipped: one image may always run
        assert budget.held == 100
        with budget.reservation() as other, pytest.raises(NoRoom, match="deadline"):
            other.hold(1, 0)
    assert budget.held == 0


def test_growing_bodies_that_wait_on_each_other_do_not_wait_for_good() -> None:
    """Two bodies without a Content-Length hold 60 and 30 of 100, and each needs 20 more:
    neither could finish. Whichever asks second is set aside (NoRoom, its bytes given back)
    and the other goes on, whatever the order the threads run in."""
    budget = ByteBudget(100)
    both_hold = threading.Barrier(2, timeout=WAIT_S)
    outcomes: dict[str, str] = {}

    def body(name: str, first: int, then: int) -> None:
        with budget.reservation() as reservation:
            reservation.hold(first, WAIT_S)
            both_hold.wait()
            try:
                reservation.hold(then, WAIT_S)
            except NoRoom as no_room:
                outcomes[name] = f"set aside: {no_room}"
            else:
                outcomes[name] = "read"

    threads = [
        threading.Thread(target=body, args=("big", 60, 80)),
        threading.Thread(target=body, args=("small", 30, 50)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert sorted(outcome.split(":")[0] for outcome in outcomes.values()) == ["read", "set aside"]
    assert budget.held == 0 and budget.peak <= 100


def test_a_body_without_a_length_is_admitted_against_what_it_may_grow_to() -> None:
    """It holds what it has read; the rest of the cap is promised, so its growth never waits
    and bodies admitted together can always finish (no body is set aside part read)."""
    budget = ByteBudget(100)
    with budget.reservation() as growing:
        growing.hold(10, WAIT_S, up_to=60)
        assert (budget.held, budget.promised) == (10, 50)
        with budget.reservation() as other, pytest.raises(NoRoom, match="deadline"):
            other.hold(10, 0, up_to=60)  # 10 + 50 + 60 would not fit: not admitted
        with budget.reservation() as declared:
            declared.hold(40, 0)  # a declared body fits beside the promise
            growing.hold(60, 0)  # grows into its promise at once
            assert (budget.held, budget.promised) == (100, 0)
    assert (budget.held, budget.promised) == (0, 0)


# --- Batches, with stand-in downloads --------------------------------------------------------


@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A 100-byte cap per image and no GPU pause."""
    monkeypatch.setenv("MAX_IMAGE_BYTES", "100")
    monkeypatch.setenv("GPU_SLEEP_MIN_S", "0")
    monkeypatch.setenv("GPU_SLEEP_MAX_S", "0")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


class Bodies:
    """Stand-in downloads of 80-byte bodies that count the bytes held from their size's
    telling to the end of their measurement, as the process function holds them."""

    def __init__(self, together: int) -> None:
        self.lock = threading.Lock()
        self.held = 0
        self.peak = 0
        self.measured = 0
        # The first `together` downloads wait for each other: images do run side by side.
        self.side_by_side = threading.Barrier(together, timeout=WAIT_S)
        self.waited = 0

    def fetch(self, url: str, settings: Any, *, hold: Hold) -> Any:
        hold(80, WAIT_S)
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


def _records(count: int, job_id: str = "job", first: int = 0) -> list[BatchRecord]:
    return [
        BatchRecord(
            message_id=f"{job_id}-m{i}",
            body=json.dumps(
                {
                    "job_id": job_id,
                    "image_index": i,
                    "url": f"http://h/{job_id}/{i}",
                    "store_id": "S1",
                    "attempt": 1,
                }
            ),
            receive_count=1,
            receipt_handle=f"r{i}",
        )
        for i in range(first, first + count)
    ]


class Filings:
    """Stand-in for data/jobs.py file_outcomes: what was filed, per job, in order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.filed: list[tuple[str, list[int], list[Any]]] = []
        self.by_job: dict[str, threading.Event] = {}

    def event(self, job_id: str) -> threading.Event:
        return self.by_job.setdefault(job_id, threading.Event())

    def __call__(self, job_id: str, filings: list[Filing], writers: Any = None) -> Filed:
        with self.lock:
            ordered = sorted(filings, key=lambda f: f.image.image_index)
            self.filed.append(
                (job_id, [f.image.image_index for f in ordered], [f.outcome for f in ordered])
            )
        self.event(job_id).set()
        return Filed(filed=list(range(len(filings))), duplicates=[], unsettled=[])


def _not_cancelled() -> CancelledJobs:
    return CancelledJobs(read=lambda job_id: False)


@pytest.mark.usefixtures("small_limits")
def test_bytes_in_flight_never_exceed_the_budget_whatever_the_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Room for three bodies of 80 would be 240: only two fit in 200.
    budget = ByteBudget(200)
    bodies = Bodies(together=2)
    filings = Filings()
    monkeypatch.setattr(process, "fetch", bodies.fetch)
    monkeypatch.setattr(process, "measure_image", bodies.measure)
    monkeypatch.setattr(process, "file_outcomes", filings)
    monkeypatch.setattr(process, "finish_job", lambda job_id: None)

    with ThreadPoolExecutor(max_workers=99) as pool:
        failed = process.process_batch(_records(99), pool, budget, lambda: 60.0, _not_cancelled())

    assert failed == []
    assert bodies.measured == 99
    assert [(job, indexes) for job, indexes, _ in filings.filed] == [("job", list(range(99)))]
    assert 160 == bodies.peak <= budget.capacity  # two at once, never three
    assert budget.peak <= budget.capacity and budget.held == 0


@pytest.mark.usefixtures("small_limits")
def test_an_image_that_cannot_start_in_time_is_given_back_with_its_attempt_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[tuple[dict[str, Any], int]] = []
    monkeypatch.setattr(
        process,
        "send_image_again",
        lambda body, delay_s, express=False: sent.append((body, delay_s)),
    )
    monkeypatch.setattr(process, "delay_message", lambda *args, **kw: pytest.fail("hidden"))
    monkeypatch.setattr(process, "fetch", lambda *args, **kw: pytest.fail("downloaded"))
    monkeypatch.setattr(process, "file_outcomes", lambda *args: pytest.fail("filed"))
    monkeypatch.setattr(process, "record_outcome", lambda *args: pytest.fail("filed"))
    records = _records(2)
    # A message sent before attempts were carried: its receive count stands for it.
    legacy = json.loads(records[1].body)
    del legacy["attempt"]
    records[1] = BatchRecord("old", json.dumps(legacy), 3, "r-old")

    with ThreadPoolExecutor(max_workers=2) as pool:
        # No time left past the image's own deadline: nothing may start.
        failed = process.process_batch(
            records, pool, ByteBudget(100), lambda: 1.0, _not_cancelled()
        )

    # Both records are done with: each image goes on in a message sent again, visible at
    # once, its attempt not counted (its download never started).
    assert failed == []
    assert sorted((body["image_index"], body["attempt"], delay) for body, delay in sent) == [
        (0, 1, 0),
        (1, 3, 0),
    ]


@pytest.mark.usefixtures("small_limits")
def test_a_jobs_results_are_filed_while_another_jobs_image_is_still_downloading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slow_started, slow_may_end = threading.Event(), threading.Event()
    filings = Filings()

    def fetch(url: str, settings: Any, *, hold: Hold) -> Any:
        if "/slow/" in url:
            slow_started.set()
            assert slow_may_end.wait(WAIT_S)
        hold(10, WAIT_S)
        return FetchedImage(url=url, data=b"x" * 10, content_type="image/jpeg")

    monkeypatch.setattr(process, "fetch", fetch)
    monkeypatch.setattr(
        process, "measure_image", lambda *a, **k: SimpleNamespace(width=3, height=2, perimeter=10)
    )
    monkeypatch.setattr(process, "file_outcomes", filings)
    monkeypatch.setattr(process, "finish_job", lambda job_id: None)
    records = [*_records(1, "slow"), *_records(3, "quick", first=1)]

    with ThreadPoolExecutor(max_workers=4) as pool, ThreadPoolExecutor(1) as runner:
        batch = runner.submit(
            process.process_batch, records, pool, ByteBudget(1_000), lambda: 60.0, _not_cancelled()
        )
        assert slow_started.wait(WAIT_S)
        # The quick job's images are filed while the slow job's one is still downloading.
        assert filings.event("quick").wait(WAIT_S)
        assert not filings.event("slow").is_set()
        slow_may_end.set()
        assert batch.result(WAIT_S) == []

    assert [(job, indexes) for job, indexes, _ in filings.filed] == [
        ("quick", [1, 2, 3]),
        ("slow", [0]),
    ]


@pytest.mark.usefixtures("small_limits")
def test_no_download_starts_once_a_cancel_mid_batch_is_seen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One worker runs the job's five images in turn; the job is cancelled while the first
    downloads, and a second passes (the cached answer's age): the other four are filed
    cancelled, never downloaded."""
    now = [0.0]
    cancelled_at: list[float] = []
    reads: list[float] = []

    def read(job_id: str) -> bool:
        reads.append(now[0])
        return bool(cancelled_at)

    first_started, cancel_answered = threading.Event(), threading.Event()
    fetched: list[str] = []

    def fetch(url: str, settings: Any, *, hold: Hold) -> Any:
        fetched.append(url)
        if len(fetched) == 1:
            first_started.set()
            assert cancel_answered.wait(WAIT_S)
        return FetchedImage(url=url, data=b"x" * 10, content_type="image/jpeg")

    filings = Filings()
    monkeypatch.setattr(process, "fetch", fetch)
    monkeypatch.setattr(
        process, "measure_image", lambda *a, **k: SimpleNamespace(width=3, height=2, perimeter=10)
    )
    monkeypatch.setattr(process, "file_outcomes", filings)
    monkeypatch.setattr(process, "finish_job", lambda job_id: None)
    cancelled = CancelledJobs(read=read, max_age_s=1.0, clock=lambda: now[0])

    with ThreadPoolExecutor(max_workers=1) as pool, ThreadPoolExecutor(1) as runner:
        batch = runner.submit(
            process.process_batch, _records(5), pool, ByteBudget(1_000), lambda: 60.0, cancelled
        )
        assert first_started.wait(WAIT_S)
        cancelled_at.append(now[0])  # the cancel is answered ...
        now[0] += 1.01  # ... and the answer read before it is now too old
        cancel_answered.set()
        assert batch.result(WAIT_S) == []

    assert fetched == ["http://h/job/0"]
    ((job_id, indexes, outcomes),) = filings.filed
    assert (job_id, indexes) == ("job", [0, 1, 2, 3, 4])
    assert isinstance(outcomes[0], ImageSuccess)
    assert all(isinstance(outcome, ImageCancelled) for outcome in outcomes[1:])
    assert reads == [0.0, 1.01]  # one read per job and second, not one per image


def test_cancelled_answers_are_at_most_max_age_old_and_read_once_per_job() -> None:
    now = [100.0]
    reads: list[str] = []
    state = {"a": False, "b": False}

    def read(job_id: str) -> bool:
        reads.append(job_id)
        return state[job_id]

    cancelled = CancelledJobs(read=read, max_age_s=1.0, clock=lambda: now[0])
    assert (cancelled("a"), cancelled("a"), cancelled("b")) == (False, False, False)
    state["a"] = True
    now[0] += 1.0
    assert cancelled("a") is False  # a second old: still used
    now[0] += 0.01
    assert cancelled("a") is True  # older: read again
    assert reads == ["a", "b", "a"]
