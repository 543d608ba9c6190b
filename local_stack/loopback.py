"""The one HTTP server class for 127.0.0.1: the local stack's API front door, the tests'
image hosts and webhook receivers, and the bench's image host."""

from __future__ import annotations

from http.server import ThreadingHTTPServer


class LoopbackServer(ThreadingHTTPServer):
    """A threaded HTTP server whose listen backlog takes a whole batch of clients at once.

    socketserver's default backlog is 5: a batch's sixth concurrent connection found it full,
    its SYN was dropped, and the client's TCP sent it again only after a second (a batch of
    ten 404s took ~0.7 s instead of ~20 ms; the 3,000-image retry test four minutes)."""

    request_queue_size = 128
    daemon_threads = True
