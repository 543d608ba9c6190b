"""The reconciler's place in a job it goes through page by page (jobs/sweeps.py: a stuck
job's requeue, an expired job's failures, a cancelled job's leftovers), kept on the job's
item so the next invocation goes on where one stopped, whatever the job's size.

On the job item: `sweep_kind` (what is being done), `sweep_next` (the image index the next
page starts at) and `sweep_done` (images acted on so far). Each move is conditional on the
kind and place read, so two passes never both act on one page. A retry's reopening of the
job takes them off (data/images.py), so a sweep of an earlier run is never resumed.
"""

from __future__ import annotations

from dataclasses import dataclass

from retail_pulse.data.models import JobRecord
from retail_pulse.data.transactions import update_if


@dataclass(frozen=True)
class Sweep:
    """Where a job's sweep stands."""

    kind: str
    next: int
    done: int


def read_sweep(job_id: str) -> Sweep | None:
    """The job's sweep under way, if any (one strongly consistent read of its attributes)."""
    try:
        record = JobRecord.get(
            job_id,
            consistent_read=True,
            attributes_to_get=["job_id", "sweep_kind", "sweep_next", "sweep_done"],
        )
    except JobRecord.DoesNotExist:
        return None
    if record.sweep_kind is None or record.sweep_next is None:
        return None
    return Sweep(record.sweep_kind, int(record.sweep_next), int(record.sweep_done or 0))


def start_sweep(job_id: str, kind: str) -> Sweep | None:
    """Begin a sweep of `kind` at the job's first image, in place of any other; None when
    the job is gone."""
    begun = update_if(
        JobRecord(job_id=job_id),
        [JobRecord.sweep_kind.set(kind), JobRecord.sweep_next.set(0), JobRecord.sweep_done.set(0)],
        JobRecord.job_id.exists(),
    )
    return Sweep(kind, 0, 0) if begun else None


def move_sweep(job_id: str, sweep: Sweep, next_start: int, acted: int) -> bool:
    """The page from sweep.next is done (`acted` images acted on): the next starts at
    `next_start`. False if the sweep is no longer where it was read (another pass)."""
    return update_if(
        JobRecord(job_id=job_id),
        [JobRecord.sweep_next.set(next_start), JobRecord.sweep_done.add(acted)],
        (JobRecord.sweep_kind == sweep.kind) & (JobRecord.sweep_next == sweep.next),
    )


def end_sweep(job_id: str, sweep: Sweep) -> bool:
    """The sweep's last page is done: take it off the job. False if it had moved on."""
    return update_if(
        JobRecord(job_id=job_id),
        [
            JobRecord.sweep_kind.remove(),
            JobRecord.sweep_next.remove(),
            JobRecord.sweep_done.remove(),
        ],
        (JobRecord.sweep_kind == sweep.kind) & (JobRecord.sweep_next == sweep.next),
    )
