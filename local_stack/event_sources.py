"""Lambda's event sources, emulated: SQS event source mappings and EventBridge schedules.

The local stack's own because no emulator gives them: batches of up to 100 gathered for a
window, ReportBatchItemFailures, bounded pollers per function, fair-queue order per tenant
and a request count per poller (MiniStack's event source mappings have none of these, and
run functions its own way). The queues themselves are MiniStack's SQS, as it ships.

An SQS event source does what Lambda's does: receive the queue, hand a batch to the
function as an `aws:sqs` event, then delete what succeeded. With ReportBatchItemFailures the
ids in `batchItemFailures` stay on the queue; a function error or timeout leaves the whole
batch. Left messages come back after the visibility timeout and, past the queue's
maxReceiveCount, MiniStack's SQS moves them to the dead-letter queue, as SQS does (the
event source does not reimplement it).

The queues are SQS fair queues, as in AWS: each source's feeder receives ahead of its
pollers into a fair pool, and a tenant (MessageGroupId) with more than its share of
messages in flight is served after the quiet ones (local_stack/fair_queue.py).

Lambda's pollers are billed as SQS requests to whoever owns the queue: each source counts
the receives and deletes its client sends (`RequestTally`, served at GET
/local/event-source-requests), so the benchmark can add them to the functions' own requests.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from local_stack.aws import client
from local_stack.fair_queue import FairPool, Waiting
from local_stack.model import ScheduleSource, SqsSource
from local_stack.runtime import FunctionRuntime, Invocation, Slot
from local_stack.template import ACCOUNT_ID, REGION

log = logging.getLogger("local_stack")

SQS_MAX_MESSAGES_PER_RECEIVE = 10
# What SQS answers for a receipt handle of a message it no longer has.
GONE = "ReceiptHandleIsInvalid"
# Messages an event source receives ahead of its pollers, so it sees the tenants behind a
# backlog: a 10,000-image job (the most one job has) and then some.
LOOKAHEAD_MESSAGES = 10_000
# A waiting message is hidden this long at a time (a few requests per message and hour).
HOLD_S = 300
# ...before the queue would show it again: the feeder's next pass comes sooner than this.
HOLD_MARGIN_S = 2.0


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


class SqsEventSource:
    """One SQS event source mapping: its queue, its fair pool and the clients its feeder and
    pollers share.

    The feeder receives the queue ahead of the pollers into the pool (up to `lookahead`
    messages waiting), and each poller takes its batch from the pool in fair-queue order
    (local_stack/fair_queue.py), so one tenant's backlog does not stand in front of another
    tenant's messages, as with SQS fair queues in AWS. A message the pool holds longer than
    the queue's visibility timeout allows is hidden for HOLD_S meanwhile, and handed over
    with the queue's timeout again, so an invocation has the time Lambda gives it. Those
    visibility changes are the emulation's (AWS reorders inside SQS, for free): they go
    through a client of their own that the request tally does not count.
    """

    def __init__(
        self,
        source: SqsSource,
        queue_url: str,
        endpoint_url: str,
        wait_s: int,
        dead_letter_queue: bool = False,
        tally: RequestTally | None = None,
        lookahead: int = LOOKAHEAD_MESSAGES,
        clock: Callable[[], float] = time.monotonic,
        fair: bool = True,
    ) -> None:
        self.source = source
        self.queue_url = queue_url
        self.wait_s = wait_s
        self.dead_letter_queue = dead_letter_queue
        self.name = f"sqs-{source.function}-{source.event}"
        self.pool = FairPool(lookahead, fair)
        self.clock = clock
        self.visibility_timeout_s: float | None = None
        self._visibility = threading.Lock()
        # boto3 clients are thread-safe: the feeder and every poller share these.
        self._sqs = client(
            "sqs", endpoint_url, read_timeout=wait_s + 10, retries={"max_attempts": 2}
        )
        self._control = client("sqs", endpoint_url, retries={"max_attempts": 2})
        if tally is not None:
            prefix = f"{source.function}.{source.event}"

            def count(event_name: str, **_: Any) -> None:
                tally.add(f"{prefix}.{event_name.rsplit('.', 1)[-1]}")

            # Once per attempt sent, as SQS bills them.
            self._sqs.meta.events.register("response-received.sqs", count)

    @property
    def visibility_s(self) -> float:
        if self.visibility_timeout_s is None:
            attributes = self._control.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=["VisibilityTimeout"]
            )["Attributes"]
            self.visibility_timeout_s = float(attributes["VisibilityTimeout"])
        return self.visibility_timeout_s

    # -- the feeder's side ---------------------------------------------------------------

    def fill(self) -> int:
        """One receive into the pool (a long poll of `wait_s` when the queue is empty);
        with the pool full, wait a second for room instead. The number received."""
        room = self.pool.room()
        if room <= 0:
            self.pool.wait_for_room(1.0)
            return 0
        visibility_s = self.visibility_s
        sent = self.clock()
        messages = self._sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=min(room, SQS_MAX_MESSAGES_PER_RECEIVE),
            WaitTimeSeconds=self.wait_s,
            AttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if messages:
            self.pool.add(messages, sent + visibility_s)
        return len(messages)

    def hold_expiring(self) -> int:
        """Hide for HOLD_S the waiting messages the queue would show again before the
        feeder's next pass. The number held."""
        expiring = self.pool.expiring(self.clock() + self.wait_s + HOLD_MARGIN_S)
        held = 0
        for start in range(0, len(expiring), SQS_MAX_MESSAGES_PER_RECEIVE):
            # Under the lock, only what no poller has taken: a poller that takes one of
            # these meanwhile waits for the lock, then sees it held and sets it back.
            with self._visibility:
                chunk = self.pool.still_waiting(
                    expiring[start : start + SQS_MAX_MESSAGES_PER_RECEIVE]
                )
                changed, gone = self._change_visibility(chunk, HOLD_S)
                held += changed
                self.pool.discard(gone)
        return held

    # -- the pollers' side ---------------------------------------------------------------

    def next_batch(self) -> list[Waiting]:
        """A batch as Lambda gathers one (BatchSize, MaximumBatchingWindowInSeconds), in
        fair order; every message in it visible again about one visibility timeout from
        now, as if just received (at least half of it, at most what the queue gives). A
        message the queue no longer has is left out, as SQS would not deliver it."""
        taken = self.pool.take(
            self.source.batch_size, self.source.batching_window_s, float(self.wait_s)
        )
        if not taken:
            return taken
        visibility_s = self.visibility_s
        slack_s = max(self.source.batching_window_s + 1, visibility_s / 10)
        gone: list[Waiting] = []
        with self._visibility:  # after any hold of these the feeder has under way
            now = self.clock()
            # Held (hidden for longer than the queue's timeout), or with less than half of
            # it left: set. Each change is a request, so a message with
            # most of its timeout left keeps it (a failure comes back a little early).
            held = [
                w
                for w in taken
                if not visibility_s / 2 <= w.visible_at - now <= visibility_s + slack_s
            ]
            for start in range(0, len(held), SQS_MAX_MESSAGES_PER_RECEIVE):
                chunk = held[start : start + SQS_MAX_MESSAGES_PER_RECEIVE]
                gone += self._change_visibility(chunk, visibility_s)[1]
        if gone:
            self.pool.finished(gone)
            taken = [w for w in taken if w not in gone]
        return taken

    def finish(self, taken: list[Waiting], invocation: Invocation) -> None:
        """Delete what the invocation succeeded with (Lambda's rules); the rest stays on the
        queue and comes back after its visibility timeout (or the delay the function set)."""
        try:
            ids = [w.message["MessageId"] for w in taken]
            done = set(succeeded_ids(invocation, ids, self.source.report_batch_item_failures))
            if invocation.ok and len(done) < len(ids):
                log.info(
                    "%s: %d of %d records reported failed; they return after the visibility "
                    "timeout",
                    self.name,
                    len(ids) - len(done),
                    len(ids),
                )
            entries = [
                {"Id": str(i), "ReceiptHandle": w.message["ReceiptHandle"]}
                for i, w in enumerate(taken)
                if w.message["MessageId"] in done
            ]
            for start in range(0, len(entries), SQS_MAX_MESSAGES_PER_RECEIVE):
                chunk = entries[start : start + SQS_MAX_MESSAGES_PER_RECEIVE]
                response = self._sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=chunk)
                for failure in response.get("Failed", []):
                    log.warning("%s: delete failed: %s", self.name, failure)
        finally:
            self.pool.finished(taken)

    def _change_visibility(self, chunk: list[Waiting], seconds: float) -> tuple[int, list[Waiting]]:
        """ChangeMessageVisibilityBatch for up to ten messages (the caller holds the
        visibility lock). The number changed, and the messages the queue no longer has: an
        invocation deleted them while a second delivery of them waited here (their
        visibility ran out while the first was processed), or they were dead-lettered."""
        if not chunk:
            return 0, []
        sent = self.clock()
        response = self._control.change_message_visibility_batch(
            QueueUrl=self.queue_url,
            Entries=[
                {
                    "Id": str(i),
                    "ReceiptHandle": w.message["ReceiptHandle"],
                    "VisibilityTimeout": int(seconds),
                }
                for i, w in enumerate(chunk)
            ],
        )
        failed = {f["Id"]: f for f in response.get("Failed", [])}
        gone = [w for i, w in enumerate(chunk) if failed.get(str(i), {}).get("Code") == GONE]
        for failure in failed.values():
            if failure.get("Code") != GONE:
                log.warning("%s: visibility change failed: %s", self.name, failure)
        if gone:
            log.info("%s: %d message(s) no longer on the queue, dropped", self.name, len(gone))
        for i, waiting in enumerate(chunk):
            if str(i) not in failed:
                waiting.visible_at = sent + int(seconds)
        return len(chunk) - len(failed), gone


class SqsFeeder(threading.Thread):
    """Receives an event source's queue into its fair pool, ahead of the pollers."""

    def __init__(self, source: SqsEventSource, stopping: threading.Event) -> None:
        super().__init__(name=f"{source.name}-feeder", daemon=True)
        self.source = source
        self.stopping = stopping

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.source.hold_expiring()
                self.source.fill()
            except Exception:
                if self.stopping.is_set():
                    return
                log.exception("%s: receive failed; retrying in 1 s", self.name)
                self.stopping.wait(1)


class SqsPoller(threading.Thread):
    """One of an event source mapping's pollers, with its own execution environment."""

    def __init__(
        self, source: SqsEventSource, slot: Slot, stopping: threading.Event, index: int
    ) -> None:
        super().__init__(name=f"{source.name}-{index}", daemon=True)
        self.source = source
        self.slot = slot
        self.stopping = stopping

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                taken = self.source.next_batch()
                if taken:
                    self._process(taken)
            except Exception:
                if self.stopping.is_set():
                    return
                log.exception("%s: poll failed; retrying in 1 s", self.name)
                self.stopping.wait(1)

    def _process(self, taken: list[Waiting]) -> None:
        messages = [w.message for w in taken]
        if self.source.dead_letter_queue:
            # Rare and always worth a look: name what was dead-lettered before it is consumed.
            log.info(
                "%s: dead-lettered message(s) received: %s",
                self.name,
                ", ".join(m["MessageId"] for m in messages),
            )
        invocation: Invocation | None = None
        try:
            event = {"Records": [sqs_record(m, self.source.source.queue_arn) for m in messages]}
            invocation = self.slot.invoke(event)
            if not invocation.ok:
                log.warning(
                    "%s: batch of %d failed (%s: %s); it stays on the queue",
                    self.name,
                    len(messages),
                    invocation.error.get("errorType"),
                    invocation.error.get("errorMessage"),
                )
        finally:
            # Whatever happened, the batch is no longer in flight; an invocation that never
            # ran deletes nothing.
            self.source.finish(taken, invocation or Invocation("", False, None))


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
