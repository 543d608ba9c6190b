"""The EventBridge events the functions publish, shown in the stack's console.

In AWS a rule sends them on to whatever subscribes; locally nothing does, so at start a rule
on the default bus matching the service's source sends them to a queue of the stack's own,
and a thread prints each one as `[EventBridge] <detail-type> <detail JSON>`. MiniStack's
EventBridge delivers PutEvents to SQS targets itself, so what is shown is what a rule in AWS
would have matched. (EventBridge's 256 KB limit on a request's entries, which no emulator
enforces, is checked by the service's own publish code: retail_pulse/data/events.py.)
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from local_stack.aws import client
from local_stack.runtime import LogSink

log = logging.getLogger("local_stack")

# The `source` of every event the service publishes.
EVENT_SOURCE = "retail-pulse"
EVENT_BUS = "default"


class EventLog(threading.Thread):
    """Create the rule and its queue in MiniStack (`create`), then print what arrives until
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
