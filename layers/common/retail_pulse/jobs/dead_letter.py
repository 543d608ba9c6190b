"""Settle what the image queue gave up on: the image is recorded failed, so its job ends.

A message reaches the dead-letter queue only when processing itself kept crashing (transient
download trouble ends earlier, in a recorded failure, see jobs/process.py). Without this
handler such an image would stay `pending` and its job `ongoing` for good.
"""

from __future__ import annotations

from pydantic import ValidationError

from retail_pulse.data.jobs import record_outcome
from retail_pulse.domain import ImageFailure
from retail_pulse.jobs.finish import finish_job
from retail_pulse.jobs.messages import ImageMessage
from retail_pulse.observability import DEAD_LETTERS_UNREADABLE, count, count_failures, logger
from retail_pulse.settings import get_settings

# Enough of an unreadable body to recognise it in the logs, never a whole 256 KB message.
_LOGGED_BODY_CHARS = 2_000


def settle_dead_letter(body: str) -> None:
    """Record the message's image failed and finish its job; duplicates change nothing.

    The dead-letter record's own receive count counts receives from the dead-letter queue,
    so the attempts reported are the image queue's maxReceiveCount (IMAGE_MAX_RECEIVES):
    SQS moves a message only after that many receives.
    """
    logger.thread_safe_clear_keys()  # records of a batch share threads: no stale image keys
    try:
        message = ImageMessage.model_validate_json(body)
    except ValidationError as error:
        # Nothing names an image to mark; keeping it would only bring it back forever.
        logger.error(
            "dead-lettered message is not an image message; dropped",
            extra={"body": body[:_LOGGED_BODY_CHARS], "problem": str(error)[:500]},
        )
        count(DEAD_LETTERS_UNREADABLE)
        return
    attempts = get_settings().image_max_receives
    logger.thread_safe_append_keys(
        job_id=message.job_id, image=f"{message.job_id}/{message.image_index}"
    )
    failure = ImageFailure(f"processing failed after {attempts} attempts for {message.url}")
    if record_outcome(message.image(), failure, attempts):
        logger.warning("dead-lettered image recorded failed", extra={"error": failure.error})
        count_failures("dead_letter")
    else:
        # Its result was filed after all (a late success, or the reconciler got there
        # first), or its job is gone (expired): nothing to settle.
        logger.info("dead-lettered image already had a result, or its job is gone")
    finish_job(message.job_id)
