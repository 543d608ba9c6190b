"""The EventBridge events the functions publish, shown in the stack's log; and EventBridge's
size limit, which moto does not have.

In AWS a rule sends them on to whatever subscribes; locally nothing does, so at start a rule
on the default bus matching the service's source sends them to a queue of the stack's own,
and a thread prints each one as `[EventBridge] <detail-type> <detail JSON>`. moto delivers
PutEvents to SQS targets itself, so what is shown is what a rule in AWS would have matched.

AWS refuses a PutEvents request whose entries total 256 KB or more (`limit_entry_size`,
applied to moto by local_stack.moto_locking.patch_moto, in the stack and in the tests): an
event that grows with its job fails here as it would in AWS, not first in production.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from local_stack.aws import client
from local_stack.runtime import LogSink

log = logging.getLogger("local_stack")

# The `source` of every event the service publishes.
EVENT_SOURCE = "retail-pulse"
EVENT_BUS = "default"


class EventLog(threading.Thread):
    """Create the rule and its queue in moto (`create`), then print what arrives until
    `stopping` is set."""

    def __init__(
        self, endpoint_url: str, stack_name: str, sink: LogSink, stopping: threading.Event
    ) -> None:
        super().__init__(name="eventbridge-log", daemon=True)
        self.stack_name = stack_name
        self.sink = sink
        self.stopping = stopping
        self._sqs = client("sqs", endpoint_url, read_timeout=15, retries={"max_attempts": 2})
        self._events = client("events", endpoint_url)
        self.queue_url = ""

    def create(self) -> EventLog:
        name = f"{self.stack_name}-event-log"
        self.queue_url = self._sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = self._sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self._events.put_rule(
            Name=name,
            EventBusName=EVENT_BUS,
            EventPattern=json.dumps({"source": [EVENT_SOURCE]}),
        )
        self._events.put_targets(
            Rule=name, EventBusName=EVENT_BUS, Targets=[{"Id": "event-log", "Arn": arn}]
        )
        log.info("EventBridge: events of %s on bus %s are shown here", EVENT_SOURCE, EVENT_BUS)
        return self

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                messages = self._sqs.receive_message(
                    QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
                ).get("Messages", [])
                for message in messages:
                    self.sink.raw(describe(message.get("Body", "")))
                    self._sqs.delete_message(
                        QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"]
                    )
            except Exception:
                if self.stopping.is_set():
                    return
                log.exception("EventBridge log: poll failed; retrying in 1 s")
                self.stopping.wait(1)


def describe(body: str) -> str:
    """One event, as the log shows it."""
    try:
        event: Any = json.loads(body)
        detail_type, detail = event["detail-type"], event.get("detail")
    except (ValueError, KeyError, TypeError):
        return f"[EventBridge] (unreadable) {body[:500]}"
    return f"[EventBridge] {detail_type} {json.dumps(detail, separators=(',', ':'))}"


# "The total entry size must be less than 256KB" (EventBridge User Guide, "Calculating
# PutEvents event entry size"); AWS answers a request at or over it with a ValidationException.
MAX_ENTRIES_BYTES = 256 * 1024
TOO_LARGE = "Total size of the entries in the request is over the limit."
_TIME_BYTES = 14  # an entry's Time counts 14 bytes, whatever its value


def entry_size(entry: Mapping[str, Any]) -> int:
    """One PutEvents entry's size as EventBridge computes it: Time 14 bytes if present;
    Source, DetailType, Detail and each of Resources their UTF-8 bytes."""
    size = _TIME_BYTES if entry.get("Time") is not None else 0
    for name in ("Source", "DetailType", "Detail"):
        size += len(str(entry.get(name) or "").encode())
    size += sum(len(str(resource).encode()) for resource in entry.get("Resources") or ())
    return size


def entries_size(entries: Iterable[Mapping[str, Any]]) -> int:
    return sum(entry_size(entry) for entry in entries)


_limited = False


def limit_entry_size() -> None:
    """Idempotent: make moto's PutEvents refuse entries of 256 KB or more in all, as AWS
    does, with AWS's error (ValidationException, nothing published)."""
    global _limited
    if _limited:
        return
    from moto.events.exceptions import ValidationException
    from moto.events.models import EventsBackend

    original = EventsBackend.put_events

    @functools.wraps(original)
    def put_events(self: EventsBackend, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if entries_size(events) >= MAX_ENTRIES_BYTES:
            raise ValidationException(TOO_LARGE)
        return original(self, events)

    EventsBackend.put_events = put_events  # type: ignore[method-assign]
    _limited = True
