"""What the interleaving tests share: an EventBridge stand-in that records, refuses or holds
each job.finished event as the test says, a reconciler time budget counted in calls (not
seconds), and job ids that land in a chosen OngoingJobs shard."""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from retail_pulse.data.events import PublishError
from retail_pulse.data.models import ongoing_shard

# How long a test waits for another thread to reach a point it is forced to reach: only a
# bug makes it wait this long (then the test fails saying so), never a slow machine.
REACH_S = 30.0


def reach(event: threading.Event, what: str) -> None:
    """Wait for a thread to get to `what`; fail the test if it never does."""
    assert event.wait(REACH_S), f"never reached: {what}"


@dataclass
class Bus:
    """Stands in for EventBridge's PutEvents (jobs/finish.py publish_job_finished).

    `published` is every event taken, in order; `attempts` counts every call per job (taken
    or refused); a job in `refusing` is refused as AWS refuses an entry it will never take
    (an entry of 256 KB or more); `hold_next()` makes the next call wait until released.
    """

    published: list[dict[str, Any]] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    refusing: set[str] = field(default_factory=set)
    order: list[tuple[str, str]] = field(default_factory=list)
    _held: threading.Event | None = None
    _holding: threading.Event | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, event: dict[str, Any]) -> None:
        job_id = event["job"]["job_id"]
        with self._lock:
            self.attempts[job_id] += 1
            self.order.append(("publish", job_id))
            held, holding = self._held, self._holding
            self._held = self._holding = None
        if held is not None and holding is not None:
            holding.set()
            assert held.wait(REACH_S), "a held publish was never released"
        if job_id in self.refusing:
            raise PublishError("ValidationException: Total size of the entries exceeds 256KB")
        with self._lock:
            self.published.append(event)

    def hold_next(self) -> tuple[threading.Event, threading.Event]:
        """(holding, release): the next publish sets `holding`, then waits for `release`."""
        self._holding, self._held = threading.Event(), threading.Event()
        return self._holding, self._held

    def events_of(self, job_id: str) -> list[dict[str, Any]]:
        return [event for event in self.published if event["job"]["job_id"] == job_id]


@dataclass
class Budget:
    """A reconciler pass's `time_left_s` that allows `calls` checks, then says time is up:
    the pass's budget in visits, the same on any machine."""

    calls: int
    made: int = 0

    def __call__(self) -> float:
        self.made += 1
        return 1000.0 if self.made <= self.calls else 0.0


def job_in_shard(shard: str) -> str:
    """A new job id whose OngoingJobs shard is `shard`."""
    while True:
        job_id = str(uuid.uuid4())
        if ongoing_shard(job_id) == shard:
            return job_id
