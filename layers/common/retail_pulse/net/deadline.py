"""One wall-clock deadline per attempt, over all its hops, kept by a watchdog.

Socket timeouts only bound each read, so a host that trickles its status line, headers,
endless `100 Continue`s, chunk sizes, trailers or body a byte at a time would never trip
them. Instead every socket an attempt opens (or reuses from the pool) is registered with a
watchdog thread, which at the deadline shuts the socket down: whatever read is blocked
returns at once, and the attempt fails with "did not finish within N s". Connecting, TLS
handshake included, is bounded by the connect timeout, which the caller never lets outlast
the deadline (CPython bounds a whole handshake by the socket's timeout). Name resolution
(getaddrinfo) happens before any socket exists and cannot be interrupted: guard.py runs it
on a lookup thread of its own, waited for until the deadline and no longer.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from retail_pulse.net.classify import classify
from retail_pulse.net.errors import RequestError, TransientRequestError


class Watched(Protocol):
    """A pooled connection the watchdog may shut: marked, so the pool drops it."""

    watched_by: Attempt | None
    shut_by_watchdog: bool


class Attempt:
    """One attempt at a request (its redirects included): its deadline and the sockets it
    has used so far.

    Sockets are watched through a duplicate of their file descriptor. shutdown() acts on
    the socket, not the descriptor, so shutting the duplicate interrupts reads on the
    original; and holding our own descriptor means a number the connection closed and the
    kernel reused can never be shut by mistake.
    """

    def __init__(self, url: str, deadline_s: float) -> None:
        self.url = url
        self.deadline_s = deadline_s
        self.deadline = time.monotonic() + deadline_s
        self.expired = False  # set by the watchdog, before any socket is shut
        self.finished = False
        self._lock = threading.Lock()
        self._watched: list[tuple[Watched, socket.socket]] = []

    def remaining(self) -> float:
        """Seconds left; past the deadline, retrying later is the only hope."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0 or self.expired:
            raise self.timed_out()
        return remaining

    def is_over(self) -> bool:
        return self.expired or time.monotonic() >= self.deadline

    def timed_out(self) -> TransientRequestError:
        return TransientRequestError(f"did not finish within {self.deadline_s:g} s for {self.url}")

    def watch(self, connection: Watched, sock: socket.socket) -> None:
        """Shut `sock` at the deadline (at once if that has passed)."""
        duplicate = socket.fromfd(sock.fileno(), sock.family, sock.type)
        with self._lock:
            if self.finished:
                duplicate.close()
                return
            self._watched.append((connection, duplicate))
            connection.watched_by = self
            if self.expired:
                _shut(connection, duplicate)

    def expire(self) -> None:
        """Called by the watchdog at the deadline."""
        with self._lock:
            if self.finished:
                return
            self.expired = True
            for connection, duplicate in self._watched:
                _shut(connection, duplicate)

    def finish(self) -> None:
        """The attempt is over: its sockets are no longer ours to shut."""
        with self._lock:
            self.finished = True
            for _, duplicate in self._watched:
                duplicate.close()
            self._watched.clear()


def _shut(connection: Watched, duplicate: socket.socket) -> None:
    connection.shut_by_watchdog = True  # the pool must not hand it out again
    # OSError: already closed by the peer, so nothing is blocked on it.
    with contextlib.suppress(OSError):
        duplicate.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread for the whole process, sleeping until the earliest deadline.

    A heap keeps deadlines in order; a finished attempt is not removed (that would cost a
    search) but skipped when it comes up, so the heap holds at most the attempts started
    in the last deadline's length. A thread per attempt (threading.Timer) would work too,
    at the cost of a thread start for every request.
    """

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._heap: list[tuple[float, int, Attempt]] = []
        self._order = itertools.count()  # ties on the deadline never compare attempts
        self._thread: threading.Thread | None = None

    def arm(self, attempt: Attempt) -> None:
        with self._wake:
            heapq.heappush(self._heap, (attempt.deadline, next(self._order), attempt))
            if self._thread is None or not self._thread.is_alive():  # also after a fork
                self._thread = threading.Thread(
                    target=self._run, name="request-deadline-watchdog", daemon=True
                )
                self._thread.start()
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while True:
                    while self._heap and self._heap[0][2].finished:
                        heapq.heappop(self._heap)
                    if not self._heap:
                        self._wake.wait()
                        continue
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        break
                    self._wake.wait(wait)
                _, _, attempt = heapq.heappop(self._heap)
            attempt.expire()  # outside the heap's lock: arm() never waits on a shutdown


_WATCHDOG = _Watchdog()
# The current attempt of each thread, which its connections register their sockets with.
_local = threading.local()


@contextmanager
def deadline(
    url: str, deadline_s: float, *, passthrough: tuple[type[Exception], ...] = ()
) -> Iterator[Attempt]:
    """Make a new attempt this thread's current one, watched until the block ends.

    Whatever the block raises leaves it as a RequestError: the deadline's if the attempt ran
    out of time, else classified. MemoryError (not the host's doing, and not safe to carry
    on from) and the caller's own `passthrough` errors (say, from a hold) leave unchanged,
    unless the watchdog has fired: then the cause is the deadline.
    """
    attempt = Attempt(url, deadline_s)
    previous: Attempt | None = getattr(_local, "attempt", None)
    _local.attempt = attempt
    _WATCHDOG.arm(attempt)
    try:
        yield attempt
    except MemoryError:
        raise
    except Exception as err:
        error = _attempt_error(err, attempt, passthrough)
        if error is err:
            raise
        raise error from err
    finally:
        _local.attempt = previous
        attempt.finish()


def _attempt_error(
    err: Exception, attempt: Attempt, passthrough: tuple[type[Exception], ...]
) -> Exception:
    """What an attempt that raised `err` failed with."""
    ours: tuple[type[Exception], ...] = (RequestError, *passthrough)
    # Whatever a shut socket made the libraries raise (EOF, reset, a TLS error, a
    # truncated chunk) and we then classified, the cause is the deadline.
    if attempt.expired or (not isinstance(err, ours) and attempt.is_over()):
        return attempt.timed_out()
    if isinstance(err, ours):
        return err
    # The last line of defence: nothing the host or URL does escapes unclassified.
    return classify(err, attempt.url, reading=False)


def watch_for_current_attempt(connection: Watched, sock: socket.socket) -> None:
    """Register `sock` with this thread's attempt, unless that attempt watches it already."""
    # Sockets used outside an attempt (none today) have no deadline to keep.
    attempt: Attempt | None = getattr(_local, "attempt", None)
    if attempt is not None and connection.watched_by is not attempt:
        attempt.watch(connection, sock)
