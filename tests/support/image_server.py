"""A local image host on 127.0.0.1 for tests and benchmarks: no test touches the internet.

Routes:
  /img/<W>x<H>.<jpg|png|webp|gif|bmp|tiff>  an image of that size (generated once, cached)
  /status/<code>                           that HTTP status with a text body
  /text                                     an HTML page (not an image)
  /flaky/<key>/<n>/<W>x<H>.jpg              503 for the first n requests of <key>, then the image
  /always/<code>                            always that status (for retry exhaustion)
  /trickle/<key>/<n>/<W>x<H>.jpg            a hostile host for the first n requests of <key>
                                            (its status line, then a header byte a second),
                                            then the image
  POST /hook/<key>/<n>                      a webhook receiver: 500 for the first n
                                            deliveries, then 204; each one is recorded in
                                            `deliveries[key]` (headers and raw body)
"""

from __future__ import annotations

import io
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from http.server import BaseHTTPRequestHandler

from PIL import Image

from local_stack.loopback import LoopbackServer

# A trickle stops on its own after this long, so no server thread outlives its test for good.
TRICKLE_MAX_S = 300

_FORMATS = {
    "jpg": ("JPEG", "image/jpeg"),
    "png": ("PNG", "image/png"),
    "webp": ("WEBP", "image/webp"),
    "gif": ("GIF", "image/gif"),
    "bmp": ("BMP", "image/bmp"),
    "tiff": ("TIFF", "image/tiff"),
}


@lru_cache(maxsize=64)
def make_image(width: int, height: int, ext: str) -> bytes:
    """A real encoded image of the given size (gradient-free, so large ones stay small)."""
    pil_format, _ = _FORMATS[ext]
    buffer = io.BytesIO()
    mode = "P" if ext == "gif" else "RGB"
    Image.new(mode, (width, height), color=(200 if mode == "RGB" else 3)).save(
        buffer, format=pil_format
    )
    return buffer.getvalue()


@dataclass(frozen=True)
class HookDelivery:
    """One POST a webhook receiver got, and what it answered."""

    headers: dict[str, str]
    body: bytes
    answered: int


class ImageServer:
    def __init__(self, port: int = 0) -> None:
        """On `port` of 127.0.0.1, or a free one (0)."""
        self.requests: Counter[str] = Counter()
        self.deliveries: defaultdict[str, list[HookDelivery]] = defaultdict(list)
        self.delivered = threading.Condition()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                with server._lock:
                    server.requests[self.path] += 1
                    seen = server.requests[self.path]
                self._route(seen)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                m = re.fullmatch(r"/hook/([\w-]+)/(\d+)", self.path.split("?", 1)[0])
                if not m:
                    self._send(404, b"no such receiver", "text/plain")
                    return
                with server.delivered:
                    seen = len(server.deliveries[m[1]])
                    code = 500 if seen < int(m[2]) else 204
                    server.deliveries[m[1]].append(HookDelivery(dict(self.headers), body, code))
                    server.delivered.notify_all()
                self._send(code, b"" if code == 204 else b"receiver down", "text/plain")

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _trickle(self) -> None:
                """A hostile host: the status line, then one header byte a second, for as
                long as the client listens (at most TRICKLE_MAX_S, so the thread ends)."""
                try:
                    self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                    for _ in range(TRICKLE_MAX_S):
                        time.sleep(1)
                        self.wfile.write(b"X")
                except OSError:
                    pass  # the client gave up: what the test wants
                self.close_connection = True

            def _route(self, seen: int) -> None:
                path = self.path.split("?", 1)[0]
                if m := re.fullmatch(r"/img/(\d+)x(\d+)\.(\w+)", path):
                    width, height, ext = int(m[1]), int(m[2]), m[3]
                    if ext in _FORMATS:
                        self._send(200, make_image(width, height, ext), _FORMATS[ext][1])
                        return
                if m := re.fullmatch(r"/flaky/[\w-]+/(\d+)/(\d+)x(\d+)\.jpg", path):
                    if seen <= int(m[1]):
                        self._send(503, b"try later", "text/plain")
                    else:
                        self._send(200, make_image(int(m[2]), int(m[3]), "jpg"), "image/jpeg")
                    return
                if m := re.fullmatch(r"/trickle/[\w-]+/(\d+)/(\d+)x(\d+)\.jpg", path):
                    if seen <= int(m[1]):
                        self._trickle()
                    else:
                        self._send(200, make_image(int(m[2]), int(m[3]), "jpg"), "image/jpeg")
                    return
                if m := re.fullmatch(r"/(?:status|always)/(\d{3})", path):
                    self._send(int(m[1]), b"status page", "text/plain")
                    return
                if path == "/text":
                    self._send(200, b"<html><body>not an image</body></html>", "text/html")
                    return
                self._send(404, b"no such image", "text/plain")

        self._httpd = LoopbackServer(("127.0.0.1", port), Handler)
        self.port = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.host_port = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return self.base_url + path

    def wait_for_deliveries(self, key: str, count: int, timeout_s: float) -> list[HookDelivery]:
        """Block until receiver `key` got `count` deliveries (woken by each one); then all
        it got. Fails the caller's test with what arrived if they do not come in time."""
        with self.delivered:
            arrived = self.delivered.wait_for(
                lambda: len(self.deliveries[key]) >= count, timeout=timeout_s
            )
            got = list(self.deliveries[key])
        assert arrived, f"receiver {key} got {len(got)} of {count} deliveries: {got}"
        return got

    def start(self) -> ImageServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@contextmanager
def serve_images() -> Iterator[ImageServer]:
    server = ImageServer().start()
    try:
        yield server
    finally:
        server.stop()
