"""Settle what the image queue gave up on: the image is recorded failed, so its job ends.

A message reaches the dead-letter queue only when processing it kept failing without an
answer: the function crashed or timed out with it in its batch, or its result could not be
filed, IMAGE_MAX_RECEIVES times in a row. Download trouble never sends it here: a retry or
a record given back unstarted is a new message carrying its attempt number (jobs/process.py),
and transient trouble ends in a recorded failure after MAX_ATTEMPTS downloads. Without this
handler such an image would stay `pending` and its job `ongoing` for good.
"""

from __future__ import annotations

from pydantic import ValidationError

from retail_pulse.data.image_records import record_outcome
from retail_pulse.domain import ImageFailure
from retail_pulse.jobs.finish import finish_job
from retail_pulse.jobs.messages import ImageMessage
from retail_pulse.observability import DEAD_LETTERS_UNREADABLE, count, count_failures, logger
from retail_pulse.settings import get_settings

# Enough of an unreadable body to recognise it in the logs, never a whole 256 KB message.
_LOGGED_BODY_CHARS = 2_000


def settle_dead_letter(body: str) -> None:
    """Record the message's image failed and finish its job; duplicates change nothing.

    The dead-letter record's own receive count counts receives from the dead-letter queue;
    SQS moved it after the image queue's maxReceiveCount (IMAGE_MAX_RECEIVES) deliveries that
    all ended without an answer. The attempts stored are the downloads of it that may have
    started (the message's attempt number; for a message from before attempts were carried,
    those receives).
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
    receives = get_settings().image_max_receives
    attempts = message.attempt if message.attempt is not None else receives
    logger.thread_safe_append_keys(
        job_id=message.job_id, image=f"{message.job_id}/{message.image_index}"
    )
    failure = ImageFailure(dead_letter_error(receives, message.url))
    if record_outcome(message.image(), failure, attempts):
        logger.warning("dead-lettered image recorded failed", extra={"error": failure.error})
        count_failures("dead_letter")
    else:
        # Its result was filed after all (a late success, or the reconciler got there
        # first), or its job is gone (expired): nothing to settle.
        logger.info("dead-lettered image already had a result, or its job is gone")
    finish_job(message.job_id)


def dead_letter_error(receives: int, url: str) -> str:
    """What the client reads: the service failed, not the image or its host, and what to do."""
    return (
        f"processing failed: the service crashed or could not save the result {receives} "
        "times in a row, so the image was set aside and the Retail Pulse team alerted; "
        f"retry the job (POST /api/retry) to try it again, for {url}"
    )
