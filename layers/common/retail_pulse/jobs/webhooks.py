"""Deliver a job event to its client's callback_url: signed, retried, at least once.

Each receive of a WebhookDelivery from the webhook queue is one attempt: a POST of its
payload (the same bytes every time, with the same event_id, so receivers deduplicate on
it) signed at that moment, sent through the image fetcher's guard (imaging/download.post:
the URL vetted and pinned against SSRF, a wall-clock deadline, no redirects followed).

- A 2xx ends it.
- A timeout, connection trouble, 429 or 5xx is retried through the queue: the message is
  hidden for an exponential backoff with jitter (the first retry 10 to 20 s later, then
  doubling up to an hour; a longer Retry-After is honoured up to that hour) and its record
  reported failed, so no Lambda sleeps. That goes on for 24 h after the delivery was first
  sent (the message's SentTimestamp); then it is moved to WebhookDeadLetterQueue.
- Any other answer (3xx, 4xx) and a refused or invalid URL end it at once, with a log line:
  the same request would get the same answer.

Log lines show the callback URL without its userinfo or query (observability.redact_url).
"""

from __future__ import annotations

import hashlib
import hmac
import random
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import ValidationError

from retail_pulse.data.queue import dead_letter_webhook, delay_webhook
from retail_pulse.data.secrets import webhook_signing_key
from retail_pulse.imaging.download import post
from retail_pulse.imaging.errors import (
    HostMisconfigured,
    PermanentImageError,
    TransientImageError,
)
from retail_pulse.jobs.messages import WebhookDelivery
from retail_pulse.observability import (
    WEBHOOK_RETRIES,
    WEBHOOKS_ABANDONED,
    WEBHOOKS_DELIVERED,
    WEBHOOKS_REJECTED,
    count,
    logger,
    redact_url,
)
from retail_pulse.settings import get_settings

SIGNATURE_HEADER = "Retail-Pulse-Signature"
EVENT_ID_HEADER = "Retail-Pulse-Event-Id"
USER_AGENT = "retail-pulse-webhooks/1"
# A receiver accepts a signature made at most this long ago (or ahead, for clock skew):
# enough for a slow network, too little to replay a captured request much later.
DEFAULT_TOLERANCE_S = 300
# How long a delivery is retried after it was first sent; then it is dead-lettered.
RETRY_WINDOW_S = 24 * 3600
# The first retry comes 10 to 20 s after the first attempt (a receiver that blinked is
# soon caught up); each retry's ceiling doubles, up to an hour between attempts, so 24 h
# take about 40 attempts, well under WebhookQueue's maxReceiveCount of 100.
FIRST_RETRY_CEILING_S = 20
MAX_RETRY_DELAY_S = 3600
# t: Unix seconds, few enough digits that int() is cheap whatever a header holds.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")

Verdict = Literal["delivered", "retry", "rejected", "abandoned"]


class RetryScheduled(Exception):
    """The delivery's next attempt is scheduled (its message hidden for the backoff): raised
    so the batch reports the record failed and SQS keeps the message."""


@dataclass(frozen=True)
class DeliveryOutcome:
    """What one attempt came to, and what happens next. `detail` is for the log line."""

    verdict: Verdict
    detail: str
    status: int | None = None  # the receiver's HTTP status, when it answered
    delay_s: int | None = None  # "retry": seconds until the next attempt


# --- Signing ---------------------------------------------------------------------------


def _digest(body: bytes, key: bytes, timestamp: int) -> str:
    return hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(body: bytes, key: bytes, timestamp: int) -> str:
    """The Retail-Pulse-Signature of `body` sent at `timestamp` (Unix seconds):
    `t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>." + body>`. The time is signed too,
    so an old request cannot be replayed with a new `t`."""
    return f"t={timestamp},v1={_digest(body, key, timestamp)}"


def verify_signature(
    body: bytes,
    header: str,
    key: bytes,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """Whether `header` (a Retail-Pulse-Signature) signs the raw `body` with `key` and was
    made within `tolerance_s` of `now`. What a receiver checks before trusting a delivery;
    any v1 may match (a receiver mid key rotation may be sent several)."""
    timestamps: list[str] = []
    signatures: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            timestamps.append(value)
        elif name == "v1":
            signatures.append(value)
    if len(timestamps) != 1 or not _TIMESTAMP.fullmatch(timestamps[0]) or not signatures:
        return False
    timestamp = int(timestamps[0])
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = _digest(body, key, timestamp).encode()
    # Bytes, so a signature with non-ASCII text compares (unequal) instead of raising.
    return any(hmac.compare_digest(expected, s.encode()) for s in signatures)


# --- One attempt -----------------------------------------------------------------------


def retry_delay(attempt: int, retry_after_s: float | None = None) -> int:
    """Seconds before the attempt after `attempt` (1 for the first): exponential backoff
    with jitter, at least the receiver's Retry-After, never more than MAX_RETRY_DELAY_S."""
    ceiling = min(MAX_RETRY_DELAY_S, FIRST_RETRY_CEILING_S * 2 ** min(max(attempt, 1) - 1, 20))
    delay = random.uniform(ceiling / 2, ceiling)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, MAX_RETRY_DELAY_S))
    return max(1, round(delay))


def deliver_webhook(
    delivery: WebhookDelivery,
    receive_count: int,
    first_sent_at: datetime,
    *,
    now: datetime | None = None,
) -> DeliveryOutcome:
    """Make the `receive_count`th attempt at `delivery` and say what comes next. Changes
    nothing on the queue: handle_delivery acts on the outcome."""
    settings = get_settings()
    now = now or datetime.now(UTC)
    body = delivery.payload.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_ID_HEADER: delivery.event_id,
        SIGNATURE_HEADER: sign(body, webhook_signing_key(), int(time.time())),
    }
    url = delivery.callback_url
    try:
        response = post(url, body, headers, settings, deadline_s=settings.webhook_deadline_s)
    except (TransientImageError, HostMisconfigured) as error:
        # A receiver down, or one whose name, certificate or server its operator may fix
        # before the window ends: tried again. A refused address or a malformed URL is not.
        detail = _without_secrets(str(error), url)
        return _retry_or_abandon(detail, None, None, receive_count, first_sent_at, now)
    except PermanentImageError as error:
        return DeliveryOutcome("rejected", _without_secrets(str(error), url))
    status = response.status
    if 200 <= status < 300:
        return DeliveryOutcome("delivered", f"HTTP {status}", status)
    if status == 429 or status >= 500:
        return _retry_or_abandon(
            f"HTTP {status}", response.retry_after_s, status, receive_count, first_sent_at, now
        )
    if 300 <= status < 400:
        note = " (redirects are not followed: callback_url must be the receiver's own)"
        return DeliveryOutcome("rejected", f"HTTP {status}{note}", status)
    return DeliveryOutcome("rejected", f"HTTP {status}", status)


def _retry_or_abandon(
    detail: str,
    retry_after_s: float | None,
    status: int | None,
    receive_count: int,
    first_sent_at: datetime,
    now: datetime,
) -> DeliveryOutcome:
    """Retry after the backoff, unless the next attempt would come past the retry window.
    Checked only after an attempt, so a delivery redriven from the dead-letter queue after
    the window still gets one more try."""
    delay = retry_delay(receive_count, retry_after_s)
    if (now - first_sent_at).total_seconds() + delay > RETRY_WINDOW_S:
        hours = RETRY_WINDOW_S // 3600
        return DeliveryOutcome(
            "abandoned", f"{detail}; still failing {hours} h after it was first sent", status
        )
    return DeliveryOutcome("retry", detail, status, delay)


def _without_secrets(text: str, url: str) -> str:
    """`text` with the callback URL in it redacted: the log formatter redacts URLs too,
    but a URL with quotes in its userinfo would slip past its pattern."""
    return text.replace(url, redact_url(url))


# --- One queue message -----------------------------------------------------------------


def handle_delivery(
    body: str, receive_count: int, sent_at: datetime | None, receipt_handle: str
) -> None:
    """Attempt one webhook-queue message and settle it: return to have it deleted
    (delivered, ended, or moved to the dead-letter queue); raise RetryScheduled, its next
    attempt already scheduled, to keep it."""
    logger.thread_safe_clear_keys()  # no keys of the batch's previous record
    try:
        delivery = WebhookDelivery.model_validate_json(body)
    except ValidationError as error:
        # Nothing to deliver, ever; the dead-letter queue keeps it for a person to look at.
        logger.error(
            "webhook message is not a delivery; moved to the dead-letter queue",
            extra={"problem": str(error)[:500]},
        )
        dead_letter_webhook(body, "not a webhook delivery")
        count(WEBHOOKS_ABANDONED)
        return
    logger.thread_safe_append_keys(
        job_id=delivery.job_id,
        event_id=delivery.event_id,
        tenant=delivery.tenant,
        callback_url=redact_url(delivery.callback_url),
        attempt=receive_count,
    )
    outcome = deliver_webhook(delivery, receive_count, sent_at or datetime.now(UTC))
    extra = {"status": outcome.status, "detail": outcome.detail}
    if outcome.verdict == "delivered":
        logger.info("webhook delivered", extra=extra)
        count(WEBHOOKS_DELIVERED)
    elif outcome.verdict == "retry":
        delay_s = outcome.delay_s or 1
        logger.warning("webhook delivery failed; retrying", extra={**extra, "retry_in_s": delay_s})
        count(WEBHOOK_RETRIES)
        delay_webhook(receipt_handle, delay_s)
        raise RetryScheduled(f"webhook delivery retried in {delay_s} s")
    elif outcome.verdict == "rejected":
        logger.warning("webhook delivery ended without retry", extra=extra)
        count(WEBHOOKS_REJECTED)
    else:
        dead_letter_webhook(body, outcome.detail)
        logger.error("webhook delivery given up; moved to the dead-letter queue", extra=extra)
        count(WEBHOOKS_ABANDONED)
