"""Webhook receivers on 127.0.0.1 for the webhook tests: a well-behaved one (http.server)
that answers a script of statuses and keeps every request, and a hostile one on raw sockets
that trickles its answer a byte at a time, so only the sender's deadline can end it."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """Answers each POST with the next (status, headers) of `answers`, then 200 for good."""

    def __init__(self, *answers: int | tuple[int, dict[str, str]]) -> None:
        self.answers: deque[tuple[int, dict[str, str]]] = deque(
            a if isinstance(a, tuple) else (a, {}) for a in answers
        )
        self.received: list[Received] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                # Kept before answering: the sender has it by the time it sees the status.
                receiver.received.append(
                    Received("POST", self.path, dict(self.headers.items()), body)
                )
                status, headers = receiver.answers.popleft() if receiver.answers else (200, {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                reply = b'{"ok": true}'
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
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
    """Reads the request, then sends its status line a byte every 0.2 s: each read of the
    sender's succeeds, so only a wall-clock deadline ends the attempt."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.host_port = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.stopping = threading.Event()
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

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):  # the sender giving up is the expected end
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
                conn.sendall(bytes([byte]))
                if self.stopping.wait(0.2):
                    return

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


def closed_port() -> str:
    """A 127.0.0.1 host:port nothing listens on (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"
