"""The bytes of image bodies an invocation holds at once (IMAGE_BYTES_IN_FLIGHT).

What a download holds is what its body actually needs, as it becomes known: nothing until
its host has answered, then the declared Content-Length, or without one the bytes read so
far, growing (imaging/download.py fetch's `hold`). A host that trickles or says nothing
costs a thread, not another image's memory: the budget bounds the process function's peak
memory without letting one client's slow hosts keep another client's images from starting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from retail_pulse.imaging.errors import TransientImageError


class NoRoom(TransientImageError):
    """A body that could not be held in the bytes budget: its download had started, so it
    counts as an attempt, and is retried later like any transient trouble."""


class ByteBudget:
    """Bytes of image bodies an invocation may hold at once.

    A download holds nothing until its host has answered; then (through download.fetch's
    `hold`) its declared Content-Length, or without one what it has read so far, growing,
    and gives it all back once its header has been measured. What one body holds is clipped
    to the whole budget, so one image can always run alone. `peak` is the most ever held.

    A body that needs more than is free waits for room, at most until its attempt's
    deadline, and then fails transiently (NoRoom). Bodies that grow could otherwise wait on
    each other for good: if every body holding bytes is itself waiting for more, none can
    finish and none will give any back. The waiter that finds the budget in that state
    gives up at once (NoRoom) and its bytes go back, so the others can go on.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.held = 0
        self.peak = 0
        self._changed = threading.Condition()
        self._holders = 0  # reservations holding bytes
        self._stuck = 0  # of those, how many are waiting for more

    @contextmanager
    def reservation(self) -> Iterator[Reservation]:
        """Bytes held for one body, as its download asks for them; all given back after."""
        reservation = Reservation(self)
        try:
            yield reservation
        finally:
            self._release(reservation)

    def _grow(self, reservation: Reservation, total: int, timeout_s: float) -> None:
        amount = min(total, self.capacity) - reservation.held
        if amount <= 0:
            return
        deadline = time.monotonic() + timeout_s
        with self._changed:
            holding = reservation.held > 0
            if holding:
                self._stuck += 1
            try:
                while self.held + amount > self.capacity:
                    if holding and self._stuck == self._holders:
                        raise NoRoom(
                            "not read: every image being read was waiting for memory that "
                            "another held, and this one was set aside to free its share"
                        )
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise NoRoom(
                            "not read: no memory came free for its body before the deadline "
                            "(other images' bodies held it)"
                        )
                    self._changed.wait(left)
            finally:
                if holding:
                    self._stuck -= 1
            if not holding:
                self._holders += 1
            self.held += amount
            reservation.held += amount
            self.peak = max(self.peak, self.held)

    def _release(self, reservation: Reservation) -> None:
        with self._changed:
            if reservation.held:
                self.held -= reservation.held
                reservation.held = 0
                self._holders -= 1
                self._changed.notify_all()


class Reservation:
    """Bytes held for one body; `hold` is download.fetch's: the total it needs now."""

    def __init__(self, budget: ByteBudget) -> None:
        self.budget = budget
        self.held = 0

    def hold(self, total: int, timeout_s: float) -> None:
        """Hold `total` bytes (never less than now), waiting at most `timeout_s` for room;
        raises NoRoom if there is none by then, or if waiting could never end."""
        self.budget._grow(self, total, timeout_s)


@contextmanager
def body_memory(budget: ByteBudget | None) -> Iterator[Callable[[int, float], None] | None]:
    """What a download tells its body's bytes to (download.fetch's `hold`), held in
    `budget` for the block; None without a budget."""
    if budget is None:
        yield None
        return
    with budget.reservation() as reservation:
        yield reservation.hold
