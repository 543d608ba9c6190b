"""Amazon SQS fair queues, for the local stack's SQS event sources (no emulator has them).

What AWS documents (Amazon SQS Developer Guide, "How Amazon SQS fair queues work"): on a
standard queue, the messages of one MessageGroupId are one tenant's, and a message without
one is a tenant of its own. SQS marks a tenant noisy when it holds a disproportionate share
of the queue's consumers: more than 10 % of the messages in flight and at least 30 of its
own (or a large share of recent processing time). While a quiet tenant's message is
waiting, a consumer's receive gets that message first; a noisy tenant's messages are
neither dropped nor throttled, they are received as usual when no quiet tenant's message
waits, the noisy tenant with the fewest in flight first. Quiet tenants are served in
arrival order (not a round robin), and the queue's throughput does not change.

An emulator's SQS (MiniStack's, moto's) hands out a standard queue's messages oldest first
whatever their group, so a quiet client's messages would wait behind a flood. The local
event source therefore receives the queue ahead of its pollers into a FairPool (up to
`capacity` messages waiting, held invisible on the queue) and its pollers take their
batches from the pool in the order above. "In flight" here is what AWS counts for an event
source: handed to an invocation and not yet finished by it. Not emulated: the processing-
time share (a tenant with few but slow messages), and how long a tenant stays noisy: AWS
keeps it so until its backlog has drained or it has sent nothing for 5 minutes, here it is
quiet again as soon as its count in flight falls under the thresholds.

`FairPool(fair=False)` hands messages over in the order the queue delivered them, as the
event source did before it emulated fair queues (LOCAL_FAIR_QUEUES=0): the comparison that
shows what fairness buys.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# AWS's thresholds for the concurrency share (approximate there too).
NOISY_MIN_IN_FLIGHT = 30
NOISY_SHARE = 0.10


def message_group(message: dict[str, Any]) -> str | None:
    """A received message's MessageGroupId (asked for with MessageSystemAttributeNames)."""
    return (message.get("Attributes") or {}).get("MessageGroupId") or None


@dataclass(eq=False)
class Waiting:
    """A message received from the queue and not yet handed to an invocation."""

    seq: int  # arrival order in the pool
    message: dict[str, Any]  # as ReceiveMessage returned it
    group: str | None
    visible_at: float  # when the queue shows it again unless its visibility changes


class FairPool:
    """The messages of one event source's queue that wait for a poller, and the counts of
    those in flight, by tenant. Thread-safe: one feeder adds, any number of pollers take."""

    def __init__(self, capacity: int, fair: bool = True) -> None:
        self.capacity = capacity
        self.fair = fair
        self._changed = threading.Condition()
        self._groups: dict[str, deque[Waiting]] = {}
        self._ungrouped: deque[Waiting] = deque()
        self._by_id: dict[str, Waiting] = {}
        self._in_flight: Counter[str] = Counter()
        self._ungrouped_in_flight = 0
        self._seq = itertools.count()

    # -- the feeder's side ---------------------------------------------------------------

    def add(self, messages: Iterable[dict[str, Any]], visible_at: float) -> None:
        """Messages just received, visible again at `visible_at`. A message still waiting
        here that the queue delivered again (its hold ran out) keeps its place and takes
        the new receipt: one entry per message, never two."""
        with self._changed:
            for message in messages:
                known = self._by_id.get(message["MessageId"])
                if known is not None:
                    known.message, known.visible_at = message, visible_at
                    continue
                waiting = Waiting(next(self._seq), message, message_group(message), visible_at)
                self._by_id[message["MessageId"]] = waiting
                if waiting.group is None:
                    self._ungrouped.append(waiting)
                else:
                    self._groups.setdefault(waiting.group, deque()).append(waiting)
            self._changed.notify_all()

    def room(self) -> int:
        with self._changed:
            return max(0, self.capacity - len(self._by_id))

    def wait_for_room(self, timeout_s: float) -> bool:
        with self._changed:
            return self._changed.wait_for(
                lambda: len(self._by_id) < self.capacity, timeout=timeout_s
            )

    def expiring(self, before: float) -> list[Waiting]:
        """The waiting messages the queue would show again before `before`."""
        with self._changed:
            return [w for w in self._by_id.values() if w.visible_at < before]

    def still_waiting(self, entries: Iterable[Waiting]) -> list[Waiting]:
        with self._changed:
            return [w for w in entries if self._by_id.get(w.message["MessageId"]) is w]

    def discard(self, entries: Iterable[Waiting]) -> int:
        """Forget these waiting messages (the queue no longer has them: deleted after a
        duplicate delivery, or moved to the dead-letter queue). The number forgotten."""
        with self._changed:
            gone = 0
            for waiting in entries:
                if self._by_id.get(waiting.message["MessageId"]) is not waiting:
                    continue
                del self._by_id[waiting.message["MessageId"]]
                queue = self._ungrouped if waiting.group is None else self._groups[waiting.group]
                queue.remove(waiting)
                if waiting.group is not None and not queue:
                    del self._groups[waiting.group]
                gone += 1
            self._changed.notify_all()
            return gone

    # -- the pollers' side ---------------------------------------------------------------

    def take(self, count: int, window_s: float = 0.0, wait_s: float = 0.0) -> list[Waiting]:
        """Up to `count` messages in fair order, now in flight: waits up to `wait_s` for a
        first one, then up to `window_s` for `count` (Lambda's batching window)."""
        with self._changed:
            if not self._changed.wait_for(lambda: bool(self._by_id), timeout=wait_s):
                return []
            if window_s > 0:
                self._changed.wait_for(lambda: len(self._by_id) >= count, timeout=window_s)
            taken = [self._pick() for _ in range(min(count, len(self._by_id)))]
            self._changed.notify_all()  # room for the feeder
            return taken

    def finished(self, taken: Iterable[Waiting]) -> None:
        """The invocation that had these is over: they are no longer in flight."""
        with self._changed:
            for waiting in taken:
                if waiting.group is None:
                    self._ungrouped_in_flight -= 1
                else:
                    self._in_flight[waiting.group] -= 1
                    if self._in_flight[waiting.group] <= 0:
                        del self._in_flight[waiting.group]
            self._changed.notify_all()

    # -- what it knows -------------------------------------------------------------------

    def waiting(self) -> int:
        with self._changed:
            return len(self._by_id)

    def in_flight(self) -> dict[str, int]:
        with self._changed:
            return dict(self._in_flight)

    def noisy(self) -> set[str]:
        with self._changed:
            total = self._total_in_flight()
            return {group for group in self._in_flight if self._is_noisy(group, total)}

    def _total_in_flight(self) -> int:
        return sum(self._in_flight.values()) + self._ungrouped_in_flight

    def _is_noisy(self, group: str, total: int) -> bool:
        count = self._in_flight[group]
        return count >= NOISY_MIN_IN_FLIGHT and count > NOISY_SHARE * total

    def _pick(self) -> Waiting:
        """The next message (the caller holds the lock and knows one waits): the oldest of
        the quiet tenants' (a message without a group is always quiet); with none, the
        oldest of the noisy tenant that has the fewest in flight. Unfair: the oldest."""
        total = self._total_in_flight()
        best: tuple[int, int, int] | None = None
        chosen: deque[Waiting] | None = None
        if self._ungrouped:
            best, chosen = (0, 0, self._ungrouped[0].seq), self._ungrouped
        for group, queue in self._groups.items():
            key = (
                (1, self._in_flight[group], queue[0].seq)
                if self.fair and self._is_noisy(group, total)
                else (0, 0, queue[0].seq)
            )
            if best is None or key < best:
                best, chosen = key, queue
        assert chosen is not None
        waiting = chosen.popleft()
        del self._by_id[waiting.message["MessageId"]]
        if waiting.group is None:
            self._ungrouped_in_flight += 1
        else:
            self._in_flight[waiting.group] += 1
            if not chosen:
                del self._groups[waiting.group]
        return waiting
