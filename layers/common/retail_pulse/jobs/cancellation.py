"""Whether a job was cancelled, as the process function asks it while a batch runs.

A cancel must stop work in flight: each image asks just before its download starts, of an
answer at most about a second old (one strongly consistent read per job and second, not
one per image), so no download of a cancelled job starts more than ~2 s after the cancel
was answered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from retail_pulse.data.jobs import get_job


class CancelledJobs:
    """Whether a job has been cancelled, read at most once per `max_age_s` per job.

    Every image asks just before its download starts, so a job cancelled while its batch
    runs has no download start more than about `max_age_s` after the cancel was answered
    (the read is strongly consistent). One thread reads a job at a time; the others asking
    about that job meanwhile wait for its answer instead of reading too. The clock is
    injected so tests can age the answers without sleeping.
    """

    def __init__(
        self,
        read: Callable[[str], bool] | None = None,
        *,
        max_age_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read or _job_cancelled
        self.max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._answers: dict[str, tuple[float, bool]] = {}  # job id -> (read at, cancelled)
        self._reading: dict[str, threading.Lock] = {}

    def __call__(self, job_id: str) -> bool:
        answer = self._fresh(job_id)
        if answer is not None:
            return answer
        with self._lock:
            reading = self._reading.setdefault(job_id, threading.Lock())
        with reading:
            answer = self._fresh(job_id)  # read by another thread while this one waited
            if answer is not None:
                return answer
            asked_at = self._clock()  # the answer is at least as fresh as this
            cancelled = self._read(job_id)
            with self._lock:
                self._answers[job_id] = (asked_at, cancelled)
                if len(self._answers) > _CANCEL_ANSWERS_KEPT:
                    self._forget_stale()
            return cancelled

    def _forget_stale(self) -> None:
        """Drop answers too old to be used (with the lock held): an environment lives for
        hours and serves many jobs. A reader dropped mid-read costs at most one more read."""
        now = self._clock()
        for job_id, (asked_at, _) in list(self._answers.items()):
            if now - asked_at > self.max_age_s:
                del self._answers[job_id]
                self._reading.pop(job_id, None)

    def _fresh(self, job_id: str) -> bool | None:
        with self._lock:
            entry = self._answers.get(job_id)
        if entry is None or self._clock() - entry[0] > self.max_age_s:
            return None
        return entry[1]


# Answers kept before the stale ones are dropped.
_CANCEL_ANSWERS_KEPT = 256


def _job_cancelled(job_id: str) -> bool:
    """A strongly consistent read (one read unit): a cancel answered a moment ago is seen.
    A job that is gone (expired) is not cancelled: its images fail to file on their own."""
    job = get_job(job_id, consistent=True)
    return job is not None and job.cancelled_at is not None
