"""Webhook receivers on 127.0.0.1 for the webhook tests: a well-behaved one (http.server)
that answers a script of statuses and keeps every request, and hostile ones on raw sockets
that take the request and then hang (say nothing) or trickle their answer a byte at a
time, so only the sender's deadline can end it. The hostile ones tell, with events, when a
request arrived and when the sender gave up on it (closed its connection)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler

from local_stack.loopback import LoopbackServer


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """Answers each POST with the next (status, headers) of `answers`, then 200 for good."""

    def __init__(
        self,
        *answers: int | tuple[int, dict[str, str]],
        on_request: Callable[[Received], None] | None = None,
    ) -> None:
        self.answers: deque[tuple[int, dict[str, str]]] = deque(
            a if isinstance(a, tuple) else (a, {}) for a in answers
        )
        self.received: list[Received] = []
        # Called with each request as it arrives, before it is answered.
        self.on_request = on_request
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                # Kept before answering: the sender has it by the time it sees the status.
                request = Received("POST", self.path, dict(self.headers.items()), body)
                if receiver.on_request is not None:
                    receiver.on_request(request)
                receiver.received.append(request)
                status, headers = receiver.answers.popleft() if receiver.answers else (200, {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                reply = b'{"ok": true}'
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.server = LoopbackServer(("127.0.0.1", 0), Handler)
        self.host_port = f"127.0.0.1:{self.server.server_address[1]}"
        # A short poll interval: shutdown() waits for the loop to look again.
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str = "/hooks/retail-pulse") -> str:
        return f"http://{self.host_port}{path}"

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()


class TricklingReceiver:
    """Reads the request, then sends its status line a byte every `interval_s` (0.2 s): each
    read of the sender's succeeds, so only a wall-clock deadline ends the attempt.

    `requested` is set when a whole request has arrived, `released` when the sender has
    closed a connection it sent a request on (its deadline passed)."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.host_port = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.stopping = threading.Event()
        self.requested = threading.Event()
        self.released = threading.Event()
        self._connections: list[socket.socket] = []
        self._threads: list[threading.Thread] = []

    def url(self) -> str:
        return f"http://{self.host_port}/slow"

    def start(self) -> TricklingReceiver:
        self._spawn(self._accept)
        return self

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # the listener was closed: the test is over
            self._connections.append(conn)
            self._spawn(self._serve, conn)

    def _read_request(self, conn: socket.socket) -> bool:
        """Read a request's head and its Content-Length of body; False if the sender
        closed first."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            body += chunk
        self.requested.set()
        return True

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):  # the sender giving up is the expected end
            if not self._read_request(conn):
                return
            self._answer(conn)
        if not self.stopping.is_set():
            self.released.set()

    def _answer(self, conn: socket.socket) -> None:
        """Trickle the status line until the sender gives up (a send fails) or the test
        ends."""
        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
            conn.sendall(bytes([byte]))
            if self.stopping.wait(self.interval_s):
                return
        # All sent, and still connected: the sender was too slow to notice the trickle.
        conn.recv(1)

    def stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for conn in self._connections:
            with contextlib.suppress(OSError):
                conn.close()
        for thread in self._threads:
            thread.join()


class HangingReceiver(TricklingReceiver):
    """Reads the request and then says nothing at all: only the sender's deadline ends the
    attempt (an idle socket, as a receiver stuck in its own work leaves it)."""

    def _answer(self, conn: socket.socket) -> None:
        # Returns when the sender closes the connection (b"") or the test stops us.
        while not self.stopping.is_set():
            conn.settimeout(0.2)
            try:
                if not conn.recv(65536):
                    return
            except TimeoutError:
                continue


def closed_port() -> str:
    """A 127.0.0.1 host:port nothing listens on (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"
