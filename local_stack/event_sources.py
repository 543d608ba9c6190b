"""Lambda's event sources, emulated: SQS event source mappings and EventBridge schedules.

An SQS poller does what Lambda's does: long-poll the queue, hand the batch to the function
as an `aws:sqs` event, then delete what succeeded. With ReportBatchItemFailures the ids in
`batchItemFailures` stay on the queue; a function error or timeout leaves the whole batch.
Left messages come back after the visibility timeout and, past the queue's maxReceiveCount,
moto moves them to the dead-letter queue on the next receive, as SQS does (moto 5 does
this in server mode; the poller does not reimplement it).

Lambda's pollers are billed as SQS requests to whoever owns the queue: each poller counts
what its client sends (`RequestTally`, served at GET /local/event-source-requests), so the
benchmark can add them to the functions' own requests.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from collections import Counter
from typing import Any

from local_stack.aws import client
from local_stack.model import ScheduleSource, SqsSource
from local_stack.runtime import FunctionRuntime, Invocation, Slot
from local_stack.template import ACCOUNT_ID, REGION

log = logging.getLogger("local_stack")

SQS_MAX_MESSAGES_PER_RECEIVE = 10


def sqs_record(message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    """One record of an SQS event, in the shape Lambda builds from a received message."""
    record = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        "attributes": dict(message.get("Attributes") or {}),
        "messageAttributes": {
            name: {
                "stringValue": value.get("StringValue"),
                "binaryValue": (
                    base64.b64encode(value["BinaryValue"]).decode()
                    if "BinaryValue" in value
                    else None
                ),
                "stringListValues": value.get("StringListValues", []),
                "binaryListValues": [
                    base64.b64encode(v).decode() for v in value.get("BinaryListValues", [])
                ],
                "dataType": value["DataType"],
            }
            for name, value in (message.get("MessageAttributes") or {}).items()
        },
        "md5OfBody": message.get("MD5OfBody"),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }
    for attribute in record["messageAttributes"].values():
        for key in ("stringValue", "binaryValue"):
            if attribute[key] is None:
                del attribute[key]
    if message.get("MD5OfMessageAttributes"):
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def succeeded_ids(
    invocation: Invocation, message_ids: list[str], report_batch_item_failures: bool
) -> list[str]:
    """The message ids Lambda deletes after this invocation."""
    if not invocation.ok:
        return []
    if not report_batch_item_failures:
        return list(message_ids)
    payload = invocation.payload
    failures = payload.get("batchItemFailures") if isinstance(payload, dict) else None
    if not failures:  # None, {}, [] or a null list: the whole batch succeeded
        return list(message_ids)
    failed: set[str] = set()
    for item in failures:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not identifier or identifier not in message_ids:
            # Lambda treats a malformed or unknown identifier as a failure of the whole batch.
            log.warning("invalid batchItemFailures entry %r: keeping the whole batch", item)
            return []
        failed.add(identifier)
    return [mid for mid in message_ids if mid not in failed]


class RequestTally:
    """SQS requests the pollers sent, by "<function>.<event>.<operation>"; thread-safe, and
    never reset: readers take differences between two snapshots."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class SqsPoller(threading.Thread):
    """One of an event source mapping's pollers, with its own execution environment."""

    def __init__(
        self,
        source: SqsSource,
        queue_url: str,
        slot: Slot,
        endpoint_url: str,
        stopping: threading.Event,
        wait_s: int,
        index: int,
        dead_letter_queue: bool = False,
        tally: RequestTally | None = None,
    ) -> None:
        super().__init__(name=f"sqs-{source.function}-{source.event}-{index}", daemon=True)
        self.source = source
        self.queue_url = queue_url
        self.slot = slot
        self.stopping = stopping
        self.wait_s = wait_s
        self.dead_letter_queue = dead_letter_queue
        self._sqs = client(
            "sqs", endpoint_url, read_timeout=wait_s + 10, retries={"max_attempts": 2}
        )
        if tally is not None:
            prefix = f"{source.function}.{source.event}"

            def count(event_name: str, **_: Any) -> None:
                tally.add(f"{prefix}.{event_name.rsplit('.', 1)[-1]}")

            # Once per attempt sent, as SQS bills them.
            self._sqs.meta.events.register("response-received.sqs", count)

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                messages = self._receive_batch()
                if messages:
                    self._process(messages)
            except Exception:
                if self.stopping.is_set():
                    return
                log.exception("%s: poll failed; retrying in 1 s", self.name)
                self.stopping.wait(1)

    def _receive(self, count: int, wait_s: int) -> list[dict[str, Any]]:
        return self._sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=count,
            WaitTimeSeconds=wait_s,
            AttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])

    def _receive_batch(self) -> list[dict[str, Any]]:
        """Up to BatchSize messages, gathering for up to MaximumBatchingWindowInSeconds after
        the first arrives, as Lambda does; SQS hands out at most 10 per request, so a batch of
        99 takes at least 10 receives. While whole seconds of the window remain, the receives
        long-poll (an empty queue costs one request per second, not five)."""
        size = self.source.batch_size
        messages = self._receive(min(size, SQS_MAX_MESSAGES_PER_RECEIVE), self.wait_s)
        deadline = time.monotonic() + self.source.batching_window_s
        while messages and len(messages) < size:
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                break
            count = min(size - len(messages), SQS_MAX_MESSAGES_PER_RECEIVE)
            more = self._receive(count, int(left_s))
            if not more and left_s < 1:
                time.sleep(min(0.2, left_s))
            messages.extend(more)
        return messages

    def _process(self, messages: list[dict[str, Any]]) -> None:
        if self.dead_letter_queue:
            # Rare and always worth a look: name what was dead-lettered before it is consumed.
            log.info(
                "%s: dead-lettered message(s) received: %s",
                self.name,
                ", ".join(m["MessageId"] for m in messages),
            )
        event = {"Records": [sqs_record(m, self.source.queue_arn) for m in messages]}
        invocation = self.slot.invoke(event)
        if not invocation.ok:
            log.warning(
                "%s: batch of %d failed (%s: %s); it stays on the queue",
                self.name,
                len(messages),
                invocation.error.get("errorType"),
                invocation.error.get("errorMessage"),
            )
        ids = [m["MessageId"] for m in messages]
        done = set(succeeded_ids(invocation, ids, self.source.report_batch_item_failures))
        if invocation.ok and len(done) < len(ids):
            log.info(
                "%s: %d of %d records reported failed; they return after the visibility timeout",
                self.name,
                len(ids) - len(done),
                len(ids),
            )
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
            for i, m in enumerate(messages)
            if m["MessageId"] in done
        ]
        for start in range(0, len(entries), SQS_MAX_MESSAGES_PER_RECEIVE):
            chunk = entries[start : start + SQS_MAX_MESSAGES_PER_RECEIVE]
            response = self._sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=chunk)
            for failure in response.get("Failed", []):
                log.warning("%s: delete failed: %s", self.name, failure)


def scheduled_event(stack_name: str, source: ScheduleSource) -> Any:
    """What EventBridge sends for a schedule rule: its Input if set, else a Scheduled Event."""
    if source.input is not None:
        return json.loads(source.input)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": REGION,
        "resources": [
            f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/"
            f"{stack_name}-{source.function}{source.event}"
        ],
        "detail": {},
    }


class Schedule(threading.Thread):
    """Invokes a function every `period_s` (not the rate(...) itself: locally, minutes of
    waiting help no one; LOCAL_SCHEDULE_PERIOD_S sets it)."""

    def __init__(
        self,
        source: ScheduleSource,
        function: FunctionRuntime,
        stack_name: str,
        period_s: float,
        stopping: threading.Event,
    ) -> None:
        super().__init__(name=f"schedule-{source.function}-{source.event}", daemon=True)
        self.source = source
        self.function = function
        self.stack_name = stack_name
        self.period_s = period_s
        self.stopping = stopping

    def run(self) -> None:
        while not self.stopping.wait(self.period_s):
            invocation = self.function.invoke(scheduled_event(self.stack_name, self.source))
            if not invocation.ok:
                log.warning(
                    "%s: %s: %s",
                    self.name,
                    invocation.error.get("errorType"),
                    invocation.error.get("errorMessage"),
                )
