"""A failed job's failure summary, page by page, whatever its number of failures (issue 24:
a job of 1,000,000 images that mostly failed must still end, be announced, and be one read
to poll).

A job with more failures than one invocation sums up (SUMMARY_INLINE_FAILURES) is not
stamped by the invocation that counts its last image: that one begins a pass on the job
(data/failure_pass.py) and sends an IngestQueue message of kind "summary" (jobs/finish.py).
The ingest function reads the job's failures from the FailedStores index in store id order,
SUMMARY_PAGE_FAILURES at a time while its time allows (then hands on), and adds each page
to the tally kept on the job, conditional on the pass's step: a page is added once, whichever
invocation reads it (a duplicate message stops at its first move; one that died between
pages is replaced when its message comes back, and goes on from the last move). The tally
is small whatever was read: the last store, how many stores, the first 100 stores' first
errors. When the last page has been read, the job is stamped with its summary, as a smaller
one is (data/jobs.py stamp_summarized), and announced, once. If the index held a different
number of failures than the job counts (it lags writes by a moment), the pass begins again
after a delay; after MAX_TRIES, only when the reconciler sends its message again (it does
for any pass that stood still for RECONCILE_AFTER_S, its message lost or not). Meanwhile the
job's status is `ongoing`, one read of the job, no index read.
"""

from __future__ import annotations

from collections.abc import Callable

from retail_pulse.data.failure_pass import (
    SummaryPass,
    begin_again,
    failures_page,
    move_pass,
    read_pass,
)
from retail_pulse.data.jobs import stamp_summarized
from retail_pulse.failure_summary import FailuresSoFar
from retail_pulse.jobs.finish import finished, hand_on_summary
from retail_pulse.observability import logger
from retail_pulse.settings import get_settings

# Passes that read a different number of failures than the job counts, each after twice
# the delay of the one before (10 s, 20 s, ...), before it waits on the reconciler.
MAX_TRIES = 5
AGAIN_AFTER_S = 10


def continue_summary(job_id: str, tenant: str, time_left_s: Callable[[], float]) -> int:
    """Go on with the job's paged summary from where it stands, while this invocation has
    more than INGEST_RESERVE_S left (then hand on); how many failures it read."""
    settings = get_settings()
    read = 0
    while True:
        summary = read_pass(job_id)
        if summary is None or summary.tenant != tenant:
            return read  # ended (stamped by another), or no such job
        if time_left_s() < settings.ingest_reserve_s:
            hand_on_summary(job_id, tenant)
            return read
        page = failures_page(job_id, summary.cursor, settings.summary_page_failures)
        read += len(page.failures)
        so_far = summary.so_far.add(page.failures)
        if page.next is None:
            _end(summary, so_far)
            return read
        if not move_pass(summary, page.next, so_far):
            logger.info("failure summary page added by another", extra={"job_id": job_id})
            return read


def _end(summary: SummaryPass, so_far: FailuresSoFar) -> None:
    """Every failure read: the job stamped with its summary, or the pass begun again."""
    extra = {"job_id": summary.job_id, "read": so_far.read, "failed": summary.failed}
    if so_far.read != summary.failed:
        _again(summary, extra)
        return
    job = stamp_summarized(summary, so_far.summary())
    if job is None:
        logger.info("failure summary ended by another invocation", extra=extra)
        return
    logger.info("failure summary done", extra={**extra, "stores": so_far.store_count})
    finished(job)


def _again(summary: SummaryPass, extra: dict[str, object]) -> None:
    """The index held a different number of failures than the job counts: never guessed
    at, read again from the first, after a delay (or, after MAX_TRIES, the reconciler's)."""
    if not begin_again(summary):
        return  # another invocation ended or moved the pass
    if summary.tries >= MAX_TRIES:
        logger.error(
            "failure summary: the index still differs from the job's count; the reconciler "
            "sends it again",
            extra={**extra, "tries": summary.tries},
        )
        return
    delay_s = AGAIN_AFTER_S * 2 ** (summary.tries - 1)
    logger.warning(
        "failure summary read a different number of failures than the job counts; again",
        extra={**extra, "tries": summary.tries, "again_after_s": delay_s},
    )
    hand_on_summary(summary.job_id, summary.tenant, delay_s)
