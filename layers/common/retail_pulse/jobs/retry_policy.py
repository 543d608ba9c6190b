"""When trouble is worth another attempt, and what an image's attempt is.

Attempts are the service's, not SQS's: an image's attempt number is the downloads of it
that started, plus one, carried in its message (jobs/messages.py ImageMessage.attempt). A
transient failure with attempts left (MAX_ATTEMPTS) is tried again in a message of its own,
after a backoff; a record given back unstarted keeps its number. SQS's receive count only
counts deliveries that ended without an answer (crashes), which is what its redrive to the
dead-letter queue is for.
"""

from __future__ import annotations

import random

from retail_pulse.imaging.errors import ImageError
from retail_pulse.jobs.messages import ImageMessage
from retail_pulse.settings import Settings

_PREFIX = {
    "download": "image download failed",
    "refused": "image download refused",
    "not_image": "image unreadable",
    "too_large": "image rejected",
    "internal": "image failed",
}


class RetryLater(Exception):
    """Transient trouble with attempts left: the image is tried again after `delay_s`."""

    def __init__(self, cause: ImageError, delay_s: int) -> None:
        super().__init__(f"{cause} (retrying in {delay_s} s)")
        self.cause = cause
        self.delay_s = delay_s


def attempt_of(message: ImageMessage, receive_count: int) -> int:
    """This delivery's attempt number, should its download start: carried by the message;
    for a message sent before attempts were carried, its receive count as it was then."""
    return message.attempt if message.attempt is not None else max(1, receive_count)


def retry_delay(attempt: int, retry_after_s: float | None, settings: Settings) -> int:
    """Exponential backoff with full jitter; a server's Retry-After wins, up to the cap."""
    ceiling = min(settings.retry_max_delay_s, settings.retry_base_delay_s * 2 ** (attempt - 1))
    delay = random.uniform(ceiling / 2, ceiling)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, settings.retry_max_delay_s))
    return max(1, round(delay))


def describe_failure(error: ImageError, url: str, note: str = "") -> str:
    """The error a client reads in the job status: the cause, a note such as "(gave up after
    4 attempts)", and the URL last, unless the cause names it elsewhere. The client's own URL
    is kept whole here (it is theirs); the logs redact it (observability.redact_urls)."""
    text = str(error)
    if error.reason == "refused":
        text = text.removeprefix("refused: ")  # the prefix already says it
    suffix = f" {note}" if note else ""
    for_url = f" for {url}"
    if text.endswith(for_url):
        text = f"{text.removesuffix(for_url)}{suffix}{for_url}"
    elif url in text:
        text = f"{text}{suffix}"
    else:
        text = f"{text}{suffix}{for_url}"
    return f"{_PREFIX.get(error.reason, 'image failed')}: {text}"
