"""The bytes of image bodies an invocation holds at once (IMAGE_BYTES_IN_FLIGHT).

What a download holds is what its body actually needs, as it becomes known: nothing until
its host has answered, then the declared Content-Length, or without one the bytes read so
far, growing (the `hold` of imaging/download.py's fetch, net/body.py). A host that trickles
or says nothing costs a thread, not another image's memory: the budget bounds the process
function's peak memory without letting one client's slow hosts keep another client's images
from starting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from retail_pulse.imaging.errors import TransientImageError
from retail_pulse.net.body import Hold


class NoRoom(TransientImageError):
    """A body that could not be held in the bytes budget: its download had started, so it
    counts as an attempt, and is retried later like any transient trouble."""


class ByteBudget:
    """Bytes of image bodies an invocation may hold at once.

    A download holds nothing until its host has answered; then (through download.fetch's
    `hold`) its declared Content-Length, or without one what it has read so far, growing,
    and gives it all back once its header has been measured. What one body holds is clipped
    to the whole budget, so one image can always run alone. `peak` is the most ever held.

    A body without a declared length is admitted only when the budget could also give it
    what it may grow to (`up_to`, the byte cap): the rest is `promised`, not held, and its
    growth never waits. Admitting such bodies on their first megabyte alone let a batch of
    100 of 20 MB start at once and then wait on each other: 79 of 100 were set aside part
    read, and the function peaked at 765 MB of 512 (bench.process_isolation memory
    --chunked); with the promise, 332 MB and none set aside. A host that has sent nothing,
    or only part of its headers, is promised nothing.

    A body that needs more than is free waits for room, at most until its attempt's
    deadline, and then fails transiently (NoRoom). Should bodies holding bytes all wait for
    more (none can then finish and give any back), the waiter that finds the budget in that
    state gives up at once (NoRoom) and its bytes go back, so the others can go on.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.held = 0
        self.promised = 0
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

    def _grow(
        self, reservation: Reservation, total: int, timeout_s: float, up_to: int | None
    ) -> None:
        total = min(total, self.capacity)
        with self._changed:
            # What was promised is taken without waiting.
            kept = min(max(0, total - reservation.held), reservation.promised)
            reservation.promised -= kept
            self.promised -= kept
            self._add(reservation, kept)
            amount = total - reservation.held
            if amount <= 0:
                return
            ask = amount
            if up_to is not None and reservation.held == 0:
                ask = max(amount, min(up_to, self.capacity))  # its first bytes: admission
            self._wait_for_room(reservation, ask, timeout_s)
            self._add(reservation, amount)
            reservation.promised += ask - amount
            self.promised += ask - amount

    def _wait_for_room(self, reservation: Reservation, ask: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        holding = reservation.held > 0
        if holding:
            self._stuck += 1
        try:
            while self.held + self.promised + ask > self.capacity:
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

    def _add(self, reservation: Reservation, amount: int) -> None:
        if amount <= 0:
            return
        if reservation.held == 0:
            self._holders += 1
        self.held += amount
        reservation.held += amount
        self.peak = max(self.peak, self.held)

    def _release(self, reservation: Reservation) -> None:
        with self._changed:
            if reservation.held or reservation.promised:
                self.held -= reservation.held
                self.promised -= reservation.promised
                if reservation.held:
                    self._holders -= 1
                reservation.held = reservation.promised = 0
                self._changed.notify_all()


class Reservation:
    """Bytes held for one body; `hold` is download.fetch's: the total it needs now."""

    def __init__(self, budget: ByteBudget) -> None:
        self.budget = budget
        self.held = 0
        self.promised = 0

    def hold(self, total: int, timeout_s: float, *, up_to: int | None = None) -> None:
        """Hold `total` bytes (never less than now), waiting at most `timeout_s` for room;
        `up_to` is what a body without a declared length may grow to. Raises NoRoom if
        there is no room by then, or if waiting could never end."""
        self.budget._grow(self, total, timeout_s, up_to)


@contextmanager
def body_memory(budget: ByteBudget | None) -> Iterator[Hold | None]:
    """What a download tells its body's bytes to (download.fetch's `hold`), held in
    `budget` for the block; None without a budget."""
    if budget is None:
        yield None
        return
    with budget.reservation() as reservation:
        yield reservation.hold
