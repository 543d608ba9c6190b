"""Issue 12: no image host can stall, crash or 500 the service.

Each attack gets its own hostile server on 127.0.0.1, written on raw sockets so it can do
what no well-behaved HTTP server library would: trickle a TLS handshake, a status line,
headers, chunk sizes, trailers or a body a byte at a time, send `100 Continue` forever,
lie in its framing headers. The fetcher runs with a 1 s deadline and socket timeouts far
longer (30 s), so only the deadline can end these attempts; each must end well inside 8 s
with exactly "did not finish within 1 s for <url>". Before the watchdog, every one of
them ran until the host stopped (minutes to hours; see the report of issue 12).

Server threads pace themselves with `Event.wait`, so tearing a server down (the fixture
does, after every test) wakes and ends them at once; teardown fails the test if one is
still alive.
"""

from __future__ import annotations

import contextlib
import gzip
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from retail_pulse.imaging.download import fetch
from retail_pulse.imaging.errors import PermanentImageError, TransientImageError
from retail_pulse.net import addresses, body, deadline, transport
from retail_pulse.settings import Settings, get_settings
from tests.support.fake_dns import FakeDns
from tests.support.image_server import make_image

DEADLINE_S = 1.0
# Generous for 2 shared cores: the point is "ends", against "never ends" before.
ENDS_WITHIN_S = 8.0
JPEG = make_image(20, 10, "jpg")


# --- Hostile servers --------------------------------------------------------------------


class Peer:
    """One accepted connection, from the hostile server's side."""

    def __init__(self, conn: socket.socket, stopping: threading.Event) -> None:
        self.conn = conn
        self.stopping = stopping

    def read_request(self) -> bytes:
        """Everything up to the end of the request's headers (our GETs have no body)."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.conn.recv(65536)
            if not chunk:
                raise ConnectionError("client went away")
            data += chunk
        return data

    def send(self, data: bytes) -> None:
        self.conn.sendall(data)

    def trickle(self, data: bytes, every_s: float = 0.3) -> None:
        """`data` one byte at a time, each well inside any read timeout."""
        for i in range(len(data)):
            self.conn.sendall(data[i : i + 1])
            if self.stopping.wait(every_s):
                return

    def hold(self) -> None:
        """Keep the connection open, silent, until the test ends."""
        self.stopping.wait()


Script = Callable[[Peer], None]


class HostileServer:
    """Accepts connections on 127.0.0.1 and runs `script` on each, on its own thread."""

    def __init__(self, script: Script, *, backlog: int = 16) -> None:
        self.script = script
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=backlog)
        self.port: int = self.listener.getsockname()[1]
        self.host_port = f"127.0.0.1:{self.port}"
        self.stopping = threading.Event()
        self.accepted = 0
        self._lock = threading.Lock()
        self._connections: list[socket.socket] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> HostileServer:
        self._spawn(self._accept_loop)
        return self

    def url(self, path: str = "/photo.jpg", scheme: str = "http") -> str:
        return f"{scheme}://{self.host_port}{path}"

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # the listener was shut down: the test is over
            with self._lock:
                if self.stopping.is_set():
                    conn.close()
                    return
                self.accepted += 1
                self._connections.append(conn)
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):  # the client giving up is the expected end
            self.script(Peer(conn, self.stopping))
        # A script that returns hangs up (one that must not, holds).
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.stopping.set()
        # shutdown() wakes a thread blocked in accept(); close() alone does not on Linux.
        for sock in [self.listener, *self._connections]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(timeout=10)
        stuck = [t for t in self._threads if t.is_alive()]
        assert not stuck, f"{len(stuck)} hostile server threads did not stop"


@pytest.fixture
def hostile() -> Iterator[Callable[..., HostileServer]]:
    """A factory of hostile servers, every one closed (and its threads joined) after the test."""
    servers: list[HostileServer] = []

    def start(script: Script, **kwargs: int) -> HostileServer:
        server = HostileServer(script, **kwargs)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.close()


def settings_for(server: HostileServer, **changes: object) -> Settings:
    """Only `server` is exempt from the address vetting; only the deadline is short."""
    values: dict[str, object] = {
        "allowed_private_hosts": frozenset({server.host_port}),
        "image_deadline_s": DEADLINE_S,
        "connect_timeout_s": 30.0,
        "read_timeout_s": 30.0,
    }
    values.update(changes)
    return get_settings().model_copy(update=values)


def ends_on_the_deadline(url: str, settings: Settings) -> float:
    """Fetch `url`, which must fail on the deadline; the wall time it took."""
    started = time.monotonic()
    with pytest.raises(TransientImageError) as caught:
        fetch(url, settings)
    elapsed = time.monotonic() - started
    assert str(caught.value) == f"did not finish within {settings.image_deadline_s:g} s for {url}"
    assert caught.value.reason == "download"
    assert settings.image_deadline_s * 0.9 <= elapsed < ENDS_WITHIN_S
    return elapsed


OK_HEADERS = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n"
CHUNKED = OK_HEADERS + b"Transfer-Encoding: chunked\r\n\r\n"
ENDLESS = b"0" * 60_000  # far longer than the test; each server stops at teardown


def image_response(body: bytes = JPEG, *extra: bytes) -> bytes:
    head = OK_HEADERS + b"Content-Length: %d\r\n" % len(body) + b"".join(extra)
    return head + b"\r\n" + body


# --- The deadline holds whatever the host does ------------------------------------------


def test_trickled_status_line(hostile: Callable[..., HostileServer]) -> None:
    def script(peer: Peer) -> None:
        peer.read_request()
        peer.trickle(b"HTTP/1.1 200 " + b"O" * 60_000)

    server = hostile(script)
    ends_on_the_deadline(server.url(), settings_for(server))


def test_headers_one_byte_every_half_second(hostile: Callable[..., HostileServer]) -> None:
    def script(peer: Peer) -> None:
        peer.read_request()
        peer.send(b"HTTP/1.1 200 OK\r\n")
        peer.trickle(b"X-Slow: " + b"a" * 60_000, every_s=0.5)

    server = hostile(script)
    ends_on_the_deadline(server.url(), settings_for(server))


def test_endless_100_continue(hostile: Callable[..., HostileServer]) -> None:
    """http.client skips interim responses in a loop of its own: each arrives in time."""

    def script(peer: Peer) -> None:
        peer.read_request()
        while not peer.stopping.wait(0.01):
            peer.send(b"HTTP/1.1 100 Continue\r\n\r\n")

    server = hostile(script)
    ends_on_the_deadline(server.url(), settings_for(server))


def test_trickled_chunk_size(hostile: Callable[..., HostileServer]) -> None:
    def script(peer: Peer) -> None:
        peer.read_request()
        peer.send(CHUNKED + b"5\r\nhello\r\n")
        peer.trickle(ENDLESS)  # the next chunk-size line: leading zeros, no end

    server = hostile(script)
    ends_on_the_deadline(server.url(), settings_for(server))


def test_trickled_trailers(hostile: Callable[..., HostileServer]) -> None:
    def script(peer: Peer) -> None:
        peer.read_request()
        peer.send(CHUNKED + b"5\r\nhello\r\n0\r\n")
        peer.trickle(b"X-Trailer: " + ENDLESS)

    server = hostile(script)
    ends_on_the_deadline(server.url(), settings_for(server))


def test_trickled_body(hostile: Callable[..., HostileServer]) -> None:
    def script(peer: Peer) -> None:
        peer.read_request()
        peer.send(OK_HEADERS + b"Content-Length: 100000\r\n\r\n")
        peer.trickle(b"\xff" * 100_000)

    server = hostile(script)
    ends_on_the_deadline(server.url(), settings_for(server))


def test_body_that_stalls_in_one_read(hostile: Callable[..., HostileServer]) -> None:
    """No byte arrives to return to the loop between reads: only the watchdog ends this."""

    def script(peer: Peer) -> None:
        peer.read_request()
        peer.send(OK_HEADERS + b"Content-Length: 100000\r\n\r\n\xff")
        peer.hold()

    server = hostile(script)
    ends_on_the_deadline(server.url(), settings_for(server))


def test_body_until_close_cut_by_the_deadline_is_not_returned(
    hostile: Callable[..., HostileServer],
) -> None:
    """No length, no chunks: the body ends when the connection does. The watchdog ending
    it must not look like a complete (truncated) image."""

    def script(peer: Peer) -> None:
        peer.read_request()
        peer.send(OK_HEADERS + b"Connection: close\r\n\r\n" + JPEG[:100])
        peer.hold()

    server = hostile(script)
    ends_on_the_deadline(server.url(), settings_for(server))


def test_trickled_tls_handshake(hostile: Callable[..., HostileServer]) -> None:
    """A server that answers the ClientHello with a record header promising 16 KB of
    handshake, then sends it a byte every 0.3 s: the handshake never completes."""

    def script(peer: Peer) -> None:
        peer.conn.recv(65536)  # the ClientHello
        peer.trickle(b"\x16\x03\x03\x40\x00" + b"\x00" * 16_384)

    server = hostile(script)
    ends_on_the_deadline(server.url(scheme="https"), settings_for(server))


def test_connect_that_never_completes(hostile: Callable[..., HostileServer]) -> None:
    """A listener whose accept queue is full drops SYNs: connect() just waits. The connect
    timeout is 30 s here; the deadline still ends the attempt."""
    server = HostileServer(lambda peer: None, backlog=0)  # never accepts
    try:
        # One connection fills a backlog of 0; the kernel drops the SYNs after it.
        with socket.create_connection(("127.0.0.1", server.port), timeout=5):
            ends_on_the_deadline(server.url(), settings_for(server))
    finally:
        server.close()


def test_deadline_covers_all_redirect_hops_together(
    hostile: Callable[..., HostileServer],
) -> None:
    """Each hop answers in 0.4 s, inside any per-hop limit; three of them are not."""

    def script(peer: Peer) -> None:
        request = peer.read_request()
        hops = request.split(b" ", 2)[1].count(b"/again")
        if peer.stopping.wait(0.4):
            return
        location = b"/again" * (hops + 1)
        peer.send(b"HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n" % location)
        peer.hold()

    server = hostile(script)
    ends_on_the_deadline(server.url("/start"), settings_for(server))


def test_reused_connection_is_watched_too(hostile: Callable[..., HostileServer]) -> None:
    """A pooled keep-alive connection was registered by the attempt that opened it; the
    next attempt that reuses it must register it again."""

    def script(peer: Peer) -> None:
        peer.read_request()
        peer.send(image_response())
        peer.read_request()  # the second fetch, on the same connection
        peer.send(OK_HEADERS + b"Content-Length: 100000\r\n\r\n")
        peer.hold()

    server = hostile(script)
    settings = settings_for(server)
    assert fetch(server.url("/first.jpg"), settings).data == JPEG
    ends_on_the_deadline(server.url("/second.jpg"), settings)
    assert server.accepted == 1  # the second request really did reuse the connection


def test_a_connection_the_watchdog_shut_is_not_reused(
    hostile: Callable[..., HostileServer],
) -> None:
    """The deadline can fire just after a body ends and its connection went back to the
    pool; that connection is marked, and the pool opens a new one instead."""

    def script(peer: Peer) -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                peer.read_request()
                peer.send(image_response())

    server = hostile(script)
    settings = settings_for(server)
    assert fetch(server.url("/a.jpg"), settings).data == JPEG
    pools = transport.session().get_adapter(server.url()).poolmanager.pools
    # urllib3's RecentlyUsedContainer refuses iteration; keys() is its way.
    ours = [pools[key] for key in pools.keys() if key.key_port == server.port]  # noqa: SIM118
    pooled = [conn for pool in ours for conn in pool.pool.queue if conn is not None]
    assert len(pooled) == 1
    pooled[0].shut_by_watchdog = True  # as _shut() leaves it
    assert fetch(server.url("/b.jpg"), settings).data == JPEG
    assert server.accepted == 2


def test_many_threads_each_keep_their_own_deadline(
    hostile: Callable[..., HostileServer],
) -> None:
    """Fetches run on about ten threads at once: a stalled one on each of four threads ends
    on its own deadline, while a healthy fetch with a long deadline is left alone."""

    def stall(peer: Peer) -> None:
        peer.read_request()
        peer.send(OK_HEADERS + b"Content-Length: 100000\r\n\r\n")
        peer.hold()

    release = threading.Event()

    def slow_but_fine(peer: Peer) -> None:
        peer.read_request()
        peer.send(OK_HEADERS + b"Content-Length: %d\r\n\r\n" % len(JPEG) + JPEG[:10])
        release.wait(timeout=10)  # until the stalled ones are over, past their deadline
        peer.send(JPEG[10:])

    stalled, healthy = hostile(stall), hostile(slow_but_fine)
    errors: list[BaseException] = []
    results: dict[str, bytes] = {}

    def run(body: Callable[[], object]) -> None:
        try:
            body()
        except BaseException as err:
            errors.append(err)

    def stalled_fetch() -> None:
        ends_on_the_deadline(stalled.url(), settings_for(stalled))

    def healthy_fetch() -> None:
        results["healthy"] = fetch(healthy.url(), settings_for(healthy, image_deadline_s=30)).data

    threads = [threading.Thread(target=run, args=(stalled_fetch,)) for _ in range(4)]
    healthy_thread = threading.Thread(target=run, args=(healthy_fetch,))
    for thread in [*threads, healthy_thread]:
        thread.start()
    for thread in threads:
        thread.join(timeout=ENDS_WITHIN_S + 2)
    release.set()
    healthy_thread.join(timeout=ENDS_WITHIN_S + 2)
    assert not any(t.is_alive() for t in [*threads, healthy_thread])
    assert not errors, errors
    assert results["healthy"] == JPEG


def test_watchdog_shuts_an_attempts_socket_at_its_deadline() -> None:
    """The mechanism alone: a read blocked on a registered socket returns at the deadline."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        connection = transport.WatchedHTTPConnection("127.0.0.1", 1)
        returned = threading.Event()

        def blocked_read() -> None:
            with contextlib.suppress(OSError):
                ours.recv(1)
            returned.set()

        with deadline.deadline("http://example.test/a.jpg", 0.3) as attempt:
            attempt.watch(connection, ours)
            reader = threading.Thread(target=blocked_read, daemon=True)
            reader.start()
            assert returned.wait(timeout=ENDS_WITHIN_S)
            assert attempt.expired
        assert connection.shut_by_watchdog
        assert not connection.is_connected
        reader.join(timeout=5)


def test_finished_attempt_is_never_shut() -> None:
    """A healthy fetch leaves nothing armed: its sockets are safe after it returns."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        connection = transport.WatchedHTTPConnection("127.0.0.1", 1)
        with deadline.deadline("http://example.test/a.jpg", 0.2) as attempt:
            attempt.watch(connection, ours)
        attempt.expire()  # what the watchdog would do, late
        assert not attempt.expired
        assert not connection.shut_by_watchdog
        theirs.sendall(b"x")
        assert ours.recv(1) == b"x"


# --- Framing headers: strict digits, nothing escapes as ValueError ----------------------


# Header bytes arrive decoded as latin-1, so "²" (0xb2) is what a host can send; isdigit()
# says yes to it and int() no.
@pytest.mark.parametrize("length", ["²", "1²", "1_0", "+5", "-1", "5, 5", "0x10", " "])
def test_malformed_content_length_is_permanent(
    hostile: Callable[..., HostileServer], length: str
) -> None:
    """Refused rather than ignored: http.client reads these with a lenient int() (or not
    at all) and a body whose end the two of us disagree on is not worth guessing at."""

    def script(peer: Peer) -> None:
        peer.read_request()
        peer.send(OK_HEADERS + b"Content-Length: " + length.encode("latin-1"))
        peer.send(b"\r\nConnection: close\r\n\r\n" + JPEG)

    server = hostile(script)
    url = server.url()
    with pytest.raises(PermanentImageError) as caught:
        fetch(url, settings_for(server))
    assert str(caught.value) == f"invalid Content-Length header from {url}"
    assert caught.value.reason == "download"


def test_content_length_of_thousands_of_digits_is_too_large(
    hostile: Callable[..., HostileServer],
) -> None:
    """int() of 5000 digits raises ValueError (Python's digit limit); it is never called."""

    def script(peer: Peer) -> None:
        peer.read_request()
        peer.send(OK_HEADERS + b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n" + JPEG)
        peer.hold()

    server = hostile(script)
    url = server.url()
    with pytest.raises(PermanentImageError) as caught:
        fetch(url, settings_for(server))
    assert caught.value.reason == "too_large"
    assert str(caught.value).startswith("image larger than")


@pytest.mark.parametrize("after", ["²", "1_0", "+5", "9" * 5000, "Wed, 21 Oct 99999 07:28:00"])
def test_malformed_retry_after_is_ignored(
    hostile: Callable[..., HostileServer], after: str
) -> None:
    def script(peer: Peer) -> None:
        peer.read_request()
        peer.send(b"HTTP/1.1 503 Busy\r\nRetry-After: " + after.encode("latin-1") + b"\r\n")
        peer.send(b"Content-Length: 0\r\n\r\n")

    server = hostile(script)
    url = server.url()
    with pytest.raises(TransientImageError) as caught:
        fetch(url, settings_for(server))
    assert str(caught.value) == f"HTTP 503 for {url}"
    assert caught.value.retry_after_s is None


@pytest.mark.parametrize("value", ["²", "1_0", "+5", "\u0665", "9" * 16, "9" * 5000, "1e3", "NaN"])
def test_parse_retry_after_accepts_only_ascii_digits(value: str) -> None:
    assert body.parse_retry_after(value) is None


def test_parse_retry_after_still_reads_plain_seconds() -> None:
    assert body.parse_retry_after("120") == 120.0
    assert body.parse_retry_after("9" * 15) == float("9" * 15)


# --- Malformed responses are permanent, and never a raw exception -----------------------


@pytest.mark.parametrize(
    ("response", "why"),
    [
        (
            b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n",
            "got more than 65536 bytes when reading header line",
        ),
        (
            b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(101)) + b"\r\n",
            "got more than 100 headers",
        ),
        (b"HTTP/1.1 " + b"2" * 70_000 + b"\r\n\r\n", "got more than 65536 bytes"),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "an invalid status line"),
        (b"HTTP/1.1 abc OK\r\n\r\n", "an invalid status line"),
        (b"HTTP/3.0 200 OK\r\n\r\n", "an unknown HTTP version"),
        (CHUNKED + b"zz\r\n", "an invalid chunk size"),
        (OK_HEADERS + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello", "an invalid header"),
    ],
)
def test_malformed_responses_are_permanent(
    hostile: Callable[..., HostileServer], response: bytes, why: str
) -> None:
    def script(peer: Peer) -> None:
        peer.read_request()
        peer.send(response)
        peer.hold()

    server = hostile(script)
    url = server.url()
    with pytest.raises(PermanentImageError) as caught:
        fetch(url, settings_for(server))
    assert str(caught.value).startswith(f"malformed response from {url}: {why}")
    assert caught.value.reason == "download"


def test_connection_closed_before_any_answer_is_transient(
    hostile: Callable[..., HostileServer],
) -> None:
    def script(peer: Peer) -> None:
        peer.read_request()  # then close without a word

    server = hostile(script)
    with pytest.raises(TransientImageError, match="could not connect for"):
        fetch(server.url(), settings_for(server))


def test_tls_server_that_hangs_up_mid_handshake_is_transient(
    hostile: Callable[..., HostileServer],
) -> None:
    def script(peer: Peer) -> None:
        peer.conn.recv(65536)
        peer.send(b"\x16\x03\x03\x00\x10")  # half a record, then gone

    server = hostile(script)
    with pytest.raises(TransientImageError):
        fetch(server.url(scheme="https"), settings_for(server))


# --- Content-Encoding: asked for identity, anything else is refused ---------------------


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate", "zstd", "identity, gzip", "GZIP"])
def test_encoded_answer_is_refused(hostile: Callable[..., HostileServer], encoding: str) -> None:
    body = gzip.compress(b"\0" * 1_000_000)  # 1 MB of zeros in about 1 KB

    def script(peer: Peer) -> None:
        peer.read_request()
        peer.send(image_response(body, b"Content-Encoding: " + encoding.encode() + b"\r\n"))
        peer.hold()

    server = hostile(script)
    url = server.url()
    with pytest.raises(PermanentImageError) as caught:
        fetch(url, settings_for(server))
    assert str(caught.value) == (
        f"served with Content-Encoding {encoding}; only unencoded images are accepted: {url}"
    )
    assert caught.value.reason == "download"


def test_identity_encoding_is_fine(hostile: Callable[..., HostileServer]) -> None:
    def script(peer: Peer) -> None:
        peer.read_request()
        peer.send(image_response(JPEG, b"Content-Encoding: identity\r\n"))
        peer.hold()

    server = hostile(script)
    assert fetch(server.url(), settings_for(server)).data == JPEG


def test_encoding_header_that_is_not_plain_text_is_not_echoed(
    hostile: Callable[..., HostileServer],
) -> None:
    def script(peer: Peer) -> None:
        peer.read_request()
        peer.send(image_response(JPEG, b"Content-Encoding: x" + b"\x7f" * 3 + b"y" * 100 + b"\r\n"))
        peer.hold()

    server = hostile(script)
    url = server.url()
    with pytest.raises(PermanentImageError) as caught:
        fetch(url, settings_for(server))
    assert str(caught.value) == (
        f"served with Content-Encoding (unreadable); only unencoded images are accepted: {url}"
    )


# --- Every URL problem is a PermanentImageError ------------------------------------------

NO_EXCEPTIONS = get_settings().model_copy(update={"allowed_private_hosts": frozenset()})


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://[::1/x.jpg", "invalid URL http://[::1/x.jpg: Invalid IPv6 URL"),
        ("http://[example.com]/x.jpg", "invalid URL http://[example.com]/x.jpg: "),
        ("http://example.com:0/x.jpg", "invalid URL http://example.com:0/x.jpg: port 0"),
        ("http://example.com:99999/x.jpg", "invalid URL http://example.com:99999/x.jpg: Port"),
        ("http://example.com:8o/x.jpg", "invalid URL http://example.com:8o/x.jpg: Port"),
        ("http://exa\x00mple.com/x.jpg", "invalid URL 'http://exa\\x00mple.com/x.jpg'"),
        ("http://example.com/a\x01b.jpg", "invalid URL 'http://example.com/a\\x01b.jpg'"),
        ("http://a..b/x.jpg", "invalid URL http://a..b/x.jpg: "),
        ("http://" + "a" * 64 + ".com/x.jpg", "invalid URL http://"),
        ("http:///x.jpg", "invalid URL http:///x.jpg: no host"),
    ],
)
def test_bad_urls_are_permanent(url: str, message: str) -> None:
    with pytest.raises(PermanentImageError) as caught:
        fetch(url, NO_EXCEPTIONS)
    assert str(caught.value).startswith(message)
    assert caught.value.reason == "download"


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("http://[::1/x.jpg", "invalid redirect Location from {url}: Invalid IPv6 URL"),
        ("http://[example.com]/x.jpg", "invalid redirect Location from {url}: "),
        ("http://127.0.0.1:99999/x.jpg", "invalid redirect Location from {url}: Port"),
        ("/" + "a" * 3000, "redirect from {url} to a URL longer than 2048 characters"),
        ("http://127.0.0.1:0/x.jpg", "invalid URL http://127.0.0.1:0/x.jpg: port 0"),
    ],
)
def test_unusable_redirect_location_is_permanent(
    hostile: Callable[..., HostileServer], location: str, message: str
) -> None:
    def script(peer: Peer) -> None:
        peer.read_request()
        peer.send(b"HTTP/1.1 302 Found\r\nLocation: " + location.encode() + b"\r\n")
        peer.send(b"Content-Length: 0\r\n\r\n")
        peer.hold()

    server = hostile(script)
    url = server.url()
    with pytest.raises(PermanentImageError) as caught:
        fetch(url, settings_for(server, max_url_length=2048))
    assert str(caught.value).startswith(message.format(url=url))


# --- Refusals: embedded IPv4 unwrapped, resolved addresses never echoed ------------------


def _wrap(form: str, ipv4: str) -> str:
    """`ipv4` inside the IPv6 transition form `form`."""
    v4 = int(ipaddress.IPv4Address(ipv4))
    public_server = int(ipaddress.IPv4Address("8.8.4.4"))
    bits = {
        "mapped": 0xFFFF << 32 | v4,
        "compatible": v4,
        "translated": 0xFFFF << 48 | v4,
        "nat64": 0x64_FF9B << 96 | v4,
        "nat64-local": 0x64_FF9B_0001 << 80 | v4,
        "6to4": 0x2002 << 112 | v4 << 80 | 1,
        "teredo-client": 0x2001_0000 << 96 | public_server << 64 | (~v4 & 0xFFFF_FFFF),
        "teredo-server": 0x2001_0000 << 96 | v4 << 64 | (~public_server & 0xFFFF_FFFF),
    }[form]
    return str(ipaddress.IPv6Address(bits))


FORMS = [
    "mapped",
    "compatible",
    "translated",
    "nat64",
    "nat64-local",
    "6to4",
    "teredo-client",
    "teredo-server",
]
INNER_WHY = {
    "127.0.0.1": "a loopback address",
    "10.0.0.1": "a private address",
    "169.254.169.254": "a link-local address",
}


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("inner", sorted(INNER_WHY))
def test_embedded_non_public_ipv4_is_refused(fake_dns: FakeDns, form: str, inner: str) -> None:
    address = _wrap(form, inner)
    why = addresses.blocked_because(ipaddress.ip_address(address))
    assert why is not None
    assert why.startswith(INNER_WHY[inner])  # the inner address's reason, not "reserved"
    url = f"http://[{address}]/a.jpg"
    with pytest.raises(PermanentImageError) as caught:
        fetch(url, NO_EXCEPTIONS)
    assert str(caught.value) == f"refused: {address} is {why}"
    assert caught.value.reason == "refused"


def test_python_311s_blind_spot_is_covered() -> None:
    """3.11's tables call 6to4 of 127.0.0.1 global; the guard does not ask them."""
    six_to_four = ipaddress.ip_address("2002:7f00:1::")
    assert (
        addresses.blocked_because(six_to_four) == "a loopback address wrapped in 6to4 (2002::/16)"
    )


@pytest.mark.parametrize("form", [f for f in FORMS if f != "mapped"])
def test_transition_forms_are_refused_even_around_a_public_ipv4(form: str) -> None:
    """Decided: the transition ranges are refused whatever they wrap. Their traffic goes
    through relays and gateways we do not control, and no image host needs them."""
    why = addresses.blocked_because(ipaddress.ip_address(_wrap(form, "8.8.8.8")))
    assert why is not None
    assert why.startswith("an IPv4 address wrapped in ")
    assert why.endswith("; transition addresses are not fetched")


def test_ipv4_mapped_public_address_is_that_address() -> None:
    """::ffff:8.8.8.8 is 8.8.8.8 (a dual-stack socket connects over IPv4): allowed."""
    assert addresses.blocked_because(ipaddress.ip_address(_wrap("mapped", "8.8.8.8"))) is None


@pytest.mark.parametrize("address", ["::", "::1", "2606:2800:220:1:248:1893:25c8:1946"])
def test_plain_ipv6_is_not_mistaken_for_a_wrapper(address: str) -> None:
    expected = {"::": "an unspecified address", "::1": "a loopback address"}.get(address)
    assert addresses.blocked_because(ipaddress.ip_address(address)) == expected


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ("10.0.0.5", "a private address"),
        ("127.0.0.1", "a loopback address"),
        ("169.254.169.254", "a link-local address"),
        ("2002:a00:5::", "a private address wrapped in 6to4 (2002::/16)"),
        ("::ffff:10.0.0.5", "a private address"),
    ],
)
def test_refusal_does_not_echo_what_a_name_resolved_to(
    fake_dns: FakeDns, answer: str, why: str
) -> None:
    fake_dns["evil.example"] = ["93.184.216.34", answer]
    with pytest.raises(PermanentImageError) as caught:
        fetch("http://evil.example/a.jpg", NO_EXCEPTIONS)
    assert str(caught.value) == f"refused: evil.example resolves to {why}"
    assert answer not in str(caught.value)
    assert "10.0.0" not in str(caught.value)


def test_a_literal_address_is_still_named(fake_dns: FakeDns) -> None:
    """The client wrote it: naming it tells them nothing new."""
    with pytest.raises(PermanentImageError) as caught:
        fetch("http://127.0.0.1/a.jpg", NO_EXCEPTIONS)
    assert str(caught.value) == "refused: 127.0.0.1 is a loopback address"
