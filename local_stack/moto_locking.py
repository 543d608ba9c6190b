"""Make moto behave like AWS where the service depends on it: atomic DynamoDB requests, and
SQS whose cost per request does not grow with the queue's length.

moto's DynamoDB backend is plain Python without locks: two transactions that both add 1 to
the same job counter at once can both read the old value, and one increment is lost. Real
DynamoDB applies each request atomically, so the service relies on it. Serialising moto's
DynamoDB request handling (SQS, whose long polls must run side by side, is left alone)
restores that guarantee for tests and the local stack.

moto's SendMessage reads the queue's full attribute set, which counts every message in the
queue, and each visibility check converts datetimes: enqueueing a 10,000-image job took
minutes (quadratic). The patches below skip the counts where SendMessage does not use them
and compare epoch milliseconds directly; behaviour is unchanged.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any

_LOCK = threading.RLock()
_PATCHED: set[str] = set()
_sending = threading.local()


def serialize_dynamodb() -> None:
    """Idempotent: wrap moto's DynamoDB request handler in one process-wide lock."""
    if "dynamodb" in _PATCHED:
        return
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.call_action

    @functools.wraps(original)
    def call_action(self: Any) -> Any:
        with _LOCK:
            return original(self)

    DynamoHandler.call_action = call_action  # type: ignore[method-assign]
    _PATCHED.add("dynamodb")


def speed_up_sqs() -> None:
    """Idempotent: keep moto's SQS requests O(1) in the queue's length where AWS's are."""
    if "sqs" in _PATCHED:
        return
    from moto.sqs.models import Message, Queue, SQSBackend

    def visible(self: Message) -> bool:
        return time.time() * 1000.0 > self.visible_at

    def delayed(self: Message) -> bool:
        return time.time() * 1000.0 < self.delayed_until

    Message.visible = property(visible)  # type: ignore[assignment,method-assign]
    Message.delayed = property(delayed)  # type: ignore[assignment,method-assign]

    full_attributes = Queue.attributes.fget  # type: ignore[attr-defined]

    def attributes(self: Queue) -> dict[str, Any]:
        # SendMessage reads only ContentBasedDeduplication, an attribute FIFO queues alone
        # have: a standard queue's answer there is the empty dict, with no queue scan.
        if getattr(_sending, "active", False) and not self.fifo_queue:
            return {}
        return full_attributes(self)

    Queue.attributes = property(attributes)  # type: ignore[assignment,method-assign]

    original_send = SQSBackend.send_message

    @functools.wraps(original_send)
    def send_message(self: SQSBackend, *args: Any, **kwargs: Any) -> Any:
        _sending.active = True
        try:
            return original_send(self, *args, **kwargs)
        finally:
            _sending.active = False

    SQSBackend.send_message = send_message  # type: ignore[method-assign]

    # ReceiveMessage checks each message's retention through the full attribute set (three
    # times per message, each counting the queue): O(queue length) per message received.
    def retained(self: SQSBackend, queue_name: str, message: Message) -> bool:
        # moto sets the queue's attributes with setattr, so its type does not name them.
        retention_s = int(self.get_queue(queue_name).message_retention_period)  # type: ignore[attr-defined]
        return retention_s + int(message.sent_timestamp or 0) / 1000 > time.time()

    SQSBackend.is_message_valid_based_on_retention_period = retained  # type: ignore[method-assign]

    # moto's DeleteMessage rebuilds the queue's message list from a snapshot without a lock:
    # two deletes at once undo one another, and a send during a delete is lost (a
    # 10,000-image job lost 90 messages while four pollers deleted). It also scanned the whole
    # queue twice per message. Under the queue's own lock (the one sends take), one pass that
    # stops at the message: received messages sit near the front.
    from moto.sqs.exceptions import ReceiptHandleIsInvalid

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

    Queue.delete_message = delete_message  # type: ignore[method-assign]
    _PATCHED.add("sqs")


def patch_moto() -> None:
    from local_stack.events import limit_entry_size

    serialize_dynamodb()
    speed_up_sqs()
    limit_entry_size()  # EventBridge's 256 KB, which moto does not enforce
