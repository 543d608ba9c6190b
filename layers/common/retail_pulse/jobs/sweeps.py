"""The reconciler's work that goes through all of a job's images (a stuck job's requeue, an
expired job's failures, a cancelled job's leftovers), JOB_PAGE_IMAGES image indexes at a
time: each page is one Query of its records and one of its manifest slices, whatever the
job's size, and the sweep's place is kept on the job (data/sweeps.py). A pass does a page
of every job it visits first, then goes round the jobs with pages left while its time
lasts; the next pass goes on from where this one stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from retail_pulse.data.images import PendingPage, pending_page
from retail_pulse.data.sweeps import end_sweep, move_sweep, read_sweep, start_sweep
from retail_pulse.domain import Job
from retail_pulse.settings import get_settings

REQUEUE = "requeue"
EXPIRE = "expire"
CANCEL = "cancel"

# What a page's images get: (job, its page, first index, last index) -> images acted on.
PageAction = Callable[[Job, PendingPage, int, int], int]


@dataclass(frozen=True)
class Step:
    """One page of a sweep: images acted on, whether pages remain, and, when this page
    ended the sweep, the images it acted on in all (None otherwise)."""

    acted: int
    more: bool
    total: int | None = None


def under_way(job_id: str, kind: str) -> bool:
    """Whether the job has a sweep of `kind` that has pages left."""
    sweep = read_sweep(job_id)
    return sweep is not None and sweep.kind == kind


def step(job: Job, kind: str, act: PageAction) -> Step:
    """The next page of the job's sweep of `kind`, begun here when none of that kind is
    under way. A page another pass moved past meanwhile is not acted on twice: its move
    fails, and this pass leaves the sweep to that one."""
    sweep = read_sweep(job.job_id)
    if sweep is None or sweep.kind != kind:
        sweep = start_sweep(job.job_id, kind)
        if sweep is None:
            return Step(0, more=False)  # the job is gone
    first = sweep.next
    last = min(first + get_settings().job_page_images, job.total) - 1
    acted = act(job, pending_page(job.job_id, first, last), first, last) if first <= last else 0
    if last + 1 >= job.total:
        ended = end_sweep(job.job_id, sweep)
        return Step(acted, more=False, total=sweep.done + acted if ended else None)
    return Step(acted, more=move_sweep(job.job_id, sweep, last + 1, acted))
