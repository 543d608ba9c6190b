"""Deliver a job event to its client's callback_url: signed, retried, at least once.

Each receive of a WebhookDelivery from the webhook queue is one attempt: a POST of its
payload (the same bytes every time, with the same event_id, so receivers deduplicate on
it) signed at that moment as Standard Webhooks signs (`webhook-id`, `webhook-timestamp`,
`webhook-signature`; one signature per secret of the client, jobs/webhook_secrets.py), sent
through net's guard (webhooks/post.py: the URL vetted and pinned against SSRF, a wall-clock
deadline, no redirects followed).

- A 2xx ends it.
- A timeout, connection trouble, 429 or 5xx is retried through the queue: the message is
  hidden for an exponential backoff with jitter (the first retry 10 to 20 s later, then
  doubling up to an hour; a longer Retry-After is honoured up to that hour) and its record
  reported failed, so no Lambda sleeps. That goes on for 24 h after the delivery was first
  sent (the message's SentTimestamp); then it is moved to WebhookDeadLetterQueue.
- Any other answer (3xx, 4xx) and a refused or invalid URL end it at once, with a log line:
  the same request would get the same answer.

Log lines show the callback URL without its userinfo or query (observability.redact_url),
and never a secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import ValidationError

from retail_pulse.data.queue import dead_letter_webhook, delay_webhook
from retail_pulse.errors import StorageInterrupted
from retail_pulse.jobs.messages import WebhookDelivery
from retail_pulse.jobs.webhook_secrets import signing_key, signing_secrets
from retail_pulse.net.errors import HostMisconfigured, PermanentRequestError, TransientRequestError
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
from retail_pulse.webhooks.post import post

# Standard Webhooks' headers: the event's id (the body's event_id, the same on every
# attempt: receivers deduplicate on it), the attempt's Unix time, and the signatures.
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
USER_AGENT = "retail-pulse-webhooks/1"
# How long a delivery is retried after it was first sent; then it is dead-lettered.
RETRY_WINDOW_S = 24 * 3600
# The first retry comes 10 to 20 s after the first attempt (a receiver that blinked is
# soon caught up); each retry's ceiling doubles, up to an hour between attempts, so 24 h
# take about 40 attempts, well under WebhookQueue's maxReceiveCount of 100.
FIRST_RETRY_CEILING_S = 20
MAX_RETRY_DELAY_S = 3600

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


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One Standard Webhooks symmetric signature: `v1,` + the base64 of the HMAC-SHA256,
    keyed by `key`, of "<msg_id>.<timestamp>." followed by the raw body. The id and the
    time are signed too, so neither can be changed for a replay."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(
    body: bytes, msg_id: str, timestamp: int, secrets: Sequence[str]
) -> dict[str, str]:
    """The three Standard Webhooks headers of a delivery signed with each of `secrets`
    (`whsec_...`), their signatures space-separated in that order."""
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: " ".join(
            signature(signing_key(secret), msg_id, timestamp, body) for secret in secrets
        ),
    }


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
    url = delivery.callback_url
    try:
        secrets = signing_secrets(delivery.tenant, now)
    except StorageInterrupted:
        # Nothing sent: the client's secret could not be read. Tried again later, as any
        # transient trouble, rather than sent unsigned or signed with anything else.
        detail = "the client's webhook secret could not be read"
        return _retry_or_abandon(detail, None, None, receive_count, first_sent_at, now)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        **signed_headers(body, delivery.event_id, int(time.time()), secrets),
    }
    try:
        response = post(url, body, headers, settings, deadline_s=settings.webhook_deadline_s)
    except (TransientRequestError, HostMisconfigured) as error:
        # A receiver down, or one whose name, certificate or server its operator may fix
        # before the window ends: tried again. A refused address or a malformed URL is not.
        detail = _without_secrets(str(error), url)
        return _retry_or_abandon(detail, None, None, receive_count, first_sent_at, now)
    except PermanentRequestError as error:
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
