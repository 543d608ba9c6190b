"""The only code that talks to the work queues (SQS): images, and webhook deliveries."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from retail_pulse.data import aws
from retail_pulse.domain import DEFAULT_TENANT
from retail_pulse.settings import SettingsError, get_settings

# SendMessageBatch takes 10 messages; batches go out in parallel so 10,000 images
# (1,000 requests) are enqueued in a few seconds.
_SEND_THREADS = 16
_SEND_ATTEMPTS = 5


class EnqueueError(Exception):
    """Some messages could not be enqueued even after retries."""


def delivery_attributes(attributes: Mapping[str, Any]) -> tuple[int, datetime | None]:
    """A Lambda SQS record's receive count (ApproximateReceiveCount, 1 when missing) and
    when its message was sent (SentTimestamp, ms since the epoch; None when missing)."""
    sent = attributes.get("SentTimestamp")
    receive_count = int(attributes.get("ApproximateReceiveCount") or 1)
    return receive_count, datetime.fromtimestamp(int(sent) / 1000, UTC) if sent else None


@lru_cache(maxsize=1)
def _sqs() -> Any:
    return aws.client("sqs", max_pool_connections=_SEND_THREADS)


def _queue_url(express: bool = False) -> str:
    """The image queue, or the express lane's (jobs of at most EXPRESS_MAX_IMAGES images)."""
    settings = get_settings()
    url = settings.express_queue_url if express else settings.image_queue_url
    if not url:
        name = "EXPRESS_QUEUE_URL" if express else "IMAGE_QUEUE_URL"
        raise SettingsError(f"{name} is not set: the image queue's URL is needed")
    return url


def _send_batch(bodies: Sequence[dict[str, Any]], express: bool = False) -> None:
    """Send up to 10 messages, retrying the entries SQS reports as failed.

    Each message's group is its client (tenant): on a standard queue SQS fair queues then
    keep one client's flood from raising the others' dwell time (no FIFO ordering implied).
    """
    entries = {str(i): body for i, body in enumerate(bodies)}
    queue_url = _queue_url(express)
    for attempt in range(_SEND_ATTEMPTS):
        response = _sqs().send_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {
                    "Id": key,
                    "MessageBody": json.dumps(body),
                    "MessageGroupId": str(body.get("tenant") or DEFAULT_TENANT),
                }
                for key, body in entries.items()
            ],
        )
        failed = response.get("Failed", [])
        entries = {f["Id"]: entries[f["Id"]] for f in failed}
        if not entries:
            return
        if any(f.get("SenderFault") for f in failed):
            break
        time.sleep(min(2.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.5))
    raise EnqueueError(f"{len(entries)} messages could not be enqueued: {failed[0]}")


def enqueue_images(bodies: Sequence[dict[str, Any]], express: bool = False) -> None:
    """One message per image, 10 a request, requests in parallel; on the express lane's
    queue when `express`."""
    batches = [bodies[i : i + 10] for i in range(0, len(bodies), 10)]
    if len(batches) <= 1:
        for batch in batches:
            _send_batch(batch, express)
        return
    with ThreadPoolExecutor(max_workers=min(_SEND_THREADS, len(batches))) as pool:
        list(pool.map(lambda batch: _send_batch(batch, express), batches))


# SQS's most for DelaySeconds: 15 minutes.
_MAX_DELAY_S = 900


def send_image_again(body: dict[str, Any], delay_s: int, express: bool = False) -> None:
    """Send an image's message again (a retry, or a record given back unstarted), to be
    delivered after `delay_s` (at most SQS's 15 minutes): its own message, in its client's
    group, so neither SQS's receive count nor a changed visibility carries its attempts."""
    _sqs().send_message(
        QueueUrl=_queue_url(express),
        MessageBody=json.dumps(body),
        DelaySeconds=max(0, min(int(delay_s), _MAX_DELAY_S)),
        MessageGroupId=str(body.get("tenant") or DEFAULT_TENANT),
    )


def delay_message(receipt_handle: str, seconds: int, express: bool = False) -> None:
    """Hide a message for `seconds` so its retry waits without holding a Lambda."""
    _sqs().change_message_visibility(
        QueueUrl=_queue_url(express),
        ReceiptHandle=receipt_handle,
        VisibilityTimeout=max(0, min(int(seconds), 43_200)),
    )


def _webhook_queue_url() -> str:
    url = get_settings().webhook_queue_url
    if not url:
        raise SettingsError("WEBHOOK_QUEUE_URL is not set: the webhook queue's URL is needed")
    return url


def enqueue_webhook(body: dict[str, Any]) -> None:
    """One webhook delivery (jobs.messages.WebhookDelivery), delivered by the webhook
    function at least once.

    Its message group is its client (tenant), as for images: on a standard queue, SQS fair
    queues then serve a quiet client's deliveries ahead of a client with many in flight (one
    whose receivers hang, say), instead of behind them."""
    _sqs().send_message(
        QueueUrl=_webhook_queue_url(),
        MessageBody=json.dumps(body),
        MessageGroupId=str(body.get("tenant") or DEFAULT_TENANT),
    )


def delay_webhook(receipt_handle: str, seconds: int) -> None:
    """Hide a webhook delivery for `seconds`: its next attempt waits without a Lambda."""
    _sqs().change_message_visibility(
        QueueUrl=_webhook_queue_url(),
        ReceiptHandle=receipt_handle,
        VisibilityTimeout=max(0, min(int(seconds), 43_200)),
    )


def dead_letter_webhook(body: str, reason: str) -> None:
    """Move a delivery the webhook function gave up on to WebhookDeadLetterQueue, its body
    unchanged (so it can be redriven as it is); `reason` says why, as a message attribute."""
    url = get_settings().webhook_dead_letter_queue_url
    if not url:
        raise SettingsError(
            "WEBHOOK_DEAD_LETTER_QUEUE_URL is not set: the webhook dead-letter queue is needed"
        )
    _sqs().send_message(
        QueueUrl=url,
        MessageBody=body,
        MessageAttributes={"reason": {"DataType": "String", "StringValue": reason[:1000]}},
    )
