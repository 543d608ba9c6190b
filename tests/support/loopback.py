"""The tests' HTTP servers on 127.0.0.1 (images, webhook receivers, scripted hosts)."""

from __future__ import annotations

from http.server import ThreadingHTTPServer


class LoopbackServer(ThreadingHTTPServer):
    """A threaded HTTP server whose listen backlog takes a whole batch of clients at once.

    socketserver's default backlog is 5: a batch's sixth concurrent download found it full,
    its SYN was dropped, and the client's TCP sent it again only after a second. A batch of
    ten 404s took ~0.7 s instead of ~20 ms, and the 3,000-image retry test four minutes."""

    request_queue_size = 128
    daemon_threads = True
