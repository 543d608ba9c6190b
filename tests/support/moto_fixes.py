"""For the in-process `aws` fixture only (tests/conftest.py): moto's mock made to behave as
AWS does where the service relies on it, for the one test that uses it, then undone.

The local stack and the benchmark run no patched library: their DynamoDB is DynamoDB Local
and their SQS MiniStack's, as they ship (local_stack/aws.py). The integration tests keep
moto's in-process mock for speed, and with it these fixes of moto's internals, applied
with pytest's monkeypatch (a test's own fixture, where the project allows it):

- moto's DynamoDB backend is plain Python without locks: two updates that both add 1 to one
  job counter at once can both read the old value. DynamoDB applies each request
  atomically, so the service relies on it: moto's request handling is serialised.
- moto's SendMessage reads the queue's full attribute set, which counts every message, and
  its DeleteMessage rebuilds the message list without a lock (two deletes at once undo one
  another): SendMessage skips the counts it does not use, DeleteMessage runs under the
  queue's own lock in one pass.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any

import pytest

_LOCK = threading.RLock()
_sending = threading.local()


def make_moto_like_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    _serialize_dynamodb(monkeypatch)
    _speed_up_sqs(monkeypatch)


def _serialize_dynamodb(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.call_action

    @functools.wraps(original)
    def call_action(self: Any) -> Any:
        with _LOCK:
            return original(self)

    monkeypatch.setattr(DynamoHandler, "call_action", call_action)


def _speed_up_sqs(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.sqs.exceptions import ReceiptHandleIsInvalid
    from moto.sqs.models import Message, Queue, SQSBackend

    monkeypatch.setattr(Message, "visible", property(lambda m: time.time() * 1000.0 > m.visible_at))
    monkeypatch.setattr(
        Message, "delayed", property(lambda m: time.time() * 1000.0 < m.delayed_until)
    )
    full_attributes = Queue.attributes.fget  # type: ignore[attr-defined]

    def attributes(self: Queue) -> dict[str, Any]:
        # SendMessage reads only ContentBasedDeduplication, which FIFO queues alone have.
        if getattr(_sending, "active", False) and not self.fifo_queue:
            return {}
        return full_attributes(self)

    monkeypatch.setattr(Queue, "attributes", property(attributes))
    original_send = SQSBackend.send_message

    @functools.wraps(original_send)
    def send_message(self: SQSBackend, *args: Any, **kwargs: Any) -> Any:
        _sending.active = True
        try:
            return original_send(self, *args, **kwargs)
        finally:
            _sending.active = False

    monkeypatch.setattr(SQSBackend, "send_message", send_message)

    def retained(self: SQSBackend, queue_name: str, message: Message) -> bool:
        retention_s = int(self.get_queue(queue_name).message_retention_period)  # type: ignore[attr-defined]
        return retention_s + int(message.sent_timestamp or 0) / 1000 > time.time()

    monkeypatch.setattr(SQSBackend, "is_message_valid_based_on_retention_period", retained)

    def delete_message(self: Queue, receipt_handle: str) -> None:
        with self._messages_lock:
            if receipt_handle in self.deleted_messages:
                return  # deleting twice is fine in SQS
            for index, message in enumerate(self._messages):
                if message.had_receipt_handle(receipt_handle):
                    del self._messages[index]
                    self.pending_messages.discard(message)
                    self.deleted_messages.update(
                        h for h in message.all_receipt_handles if h is not None
                    )
                    return
        raise ReceiptHandleIsInvalid()

    monkeypatch.setattr(Queue, "delete_message", delete_message)
