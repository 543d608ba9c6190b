"""A hostile image host for floods, on raw sockets on 127.0.0.1: every request gets a status
line and then one header byte every `every_s`, for as long as the client listens. One
thread serves any number of connections (a selector), so thousands of trickling downloads
cost the test a socket each, not a thread each.

`requests` counts the requests whose head arrived, by the first segment of their path
(`/main/7.jpg` counts under "main"); `open` is how many connections are trickling now.
`wait_for(predicate)` blocks until the counts satisfy it (woken by each change, never by a
timer), so a test can wait for a flood to be in flight.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable

STATUS_LINE = b"HTTP/1.1 200 OK\r\n"
# A request head larger than this is not a client the host cares to hear out.
MAX_HEAD_BYTES = 16_384


class TrickleHost:
    def __init__(self, every_s: float = 0.5, backlog: int = 4096) -> None:
        self.every_s = every_s
        self.requests: Counter[str] = Counter()
        self.open = 0
        self.changed = threading.Condition()
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=backlog)
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self.host_port = f"127.0.0.1:{self.port}"
        self._selector = selectors.DefaultSelector()
        self._heads: dict[socket.socket, bytes] = {}
        self._trickling: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="trickle-host", daemon=True)

    def url(self, path: str) -> str:
        return f"http://{self.host_port}{path}"

    def start(self) -> TrickleHost:
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Hang up on every connection and stop listening; a second call does nothing."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._thread.join(timeout=10)
        for sock in [*self._heads, *self._trickling]:
            with contextlib.suppress(OSError):
                sock.close()
        self._selector.close()
        self._listener.close()

    def wait_for(self, predicate: Callable[[TrickleHost], bool], timeout_s: float) -> bool:
        """True once `predicate(self)` holds; False if it did not within `timeout_s`."""
        with self.changed:
            return self.changed.wait_for(lambda: predicate(self), timeout=timeout_s)

    def _serve(self) -> None:
        next_byte = time.monotonic() + self.every_s
        while not self._stopping.is_set():
            for key, _ in self._selector.select(timeout=max(0.0, next_byte - time.monotonic())):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    self._accept()
                else:
                    self._read(sock)
            if time.monotonic() >= next_byte:
                next_byte = time.monotonic() + self.every_s
                for sock in list(self._trickling):
                    self._send(sock, b"X")

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(False)
            self._heads[sock] = b""
            self._selector.register(sock, selectors.EVENT_READ)

    def _read(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client gave up (its deadline): what a flood test wants
            self._drop(sock)
            return
        if sock not in self._heads:
            return  # bytes after the head: nothing a trickling host listens to
        head = self._heads[sock] + data
        if b"\r\n\r\n" not in head:
            if len(head) > MAX_HEAD_BYTES:
                self._drop(sock)
            else:
                self._heads[sock] = head
            return
        del self._heads[sock]
        self._trickling.add(sock)
        path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b"/"
        with self.changed:
            self.requests[path.lstrip(b"/").split(b"/", 1)[0].decode(errors="replace")] += 1
            self.open += 1
            self.changed.notify_all()
        self._send(sock, STATUS_LINE)

    def _send(self, sock: socket.socket, data: bytes) -> None:
        try:
            sock.send(data)
        except (BlockingIOError, InterruptedError):
            pass  # its buffer is full: the next byte will do
        except OSError:
            self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        self._heads.pop(sock, None)
        if sock in self._trickling:
            self._trickling.discard(sock)
            with self.changed:
                self.open -= 1
                self.changed.notify_all()
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)
        with contextlib.suppress(OSError):
            sock.close()


class GatedImageHost:
    """A raw-socket image host on 127.0.0.1 that holds each request until the test lets it
    go: `arrived` lists the paths asked for, in order; a request waits for `release` (set by
    the test) before its image is sent, and `asked` is set as the first one arrives. One
    thread per connection: for a handful of requests."""

    def __init__(self, image: bytes) -> None:
        self.image = image
        self.arrived: list[str] = []
        self.asked = threading.Event()
        self.release = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host_port = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._stopping = threading.Event()
        threading.Thread(target=self._accept, name="gated-host", daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://{self.host_port}{path}"

    def stop(self) -> None:
        self._stopping.set()
        self.release.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < MAX_HEAD_BYTES:
                data = sock.recv(4096)
                if not data:
                    return
                head += data
            path = head.split(b" ", 2)[1].decode(errors="replace")
            self.arrived.append(path)
            self.asked.set()
            self.release.wait()
            with contextlib.suppress(OSError):
                sock.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close\r\n"
                    + f"Content-Length: {len(self.image)}\r\n\r\n".encode()
                    + self.image
                )
