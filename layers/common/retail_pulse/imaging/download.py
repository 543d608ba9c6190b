"""Download one image from a client-supplied URL without letting the URL reach our network.

Image URLs come from clients, so every hop is vetted before any connection is made: the
scheme must be http or https and every address the host resolves to must be public
(no loopback, private, link-local such as the 169.254.169.254 metadata service, ...).
IPv6 forms that carry an IPv4 address (IPv4-mapped, IPv4-compatible, 6to4, NAT64, Teredo)
are unwrapped and the IPv4 inside is vetted too, whatever Python's own address tables say.
The request is then sent to the vetted address itself, so a second DNS answer cannot
swap in a private one (DNS rebinding); TLS still checks the certificate for, and sends SNI
with, the host name of the URL. Redirects are followed by hand so each hop is vetted too.

Each call of `fetch` is one attempt with a wall-clock deadline (`image_deadline_s`) over
all its hops. Socket timeouts only bound each read, so a host that trickles its TLS
handshake, status line, headers, endless `100 Continue`s, chunk sizes, trailers or body a
byte at a time would never trip them. Instead every socket the attempt opens (or reuses
from the pool) is registered with a watchdog thread, which at the deadline shuts the socket
down: whatever read is blocked returns at once, and the attempt fails with "did not finish
within N s". Connecting is bounded by the same deadline through the connect timeout. Name
resolution (getaddrinfo) happens before any socket exists and cannot be interrupted: it
runs on a lookup thread of its own, waited for until the deadline and no longer.

The body is streamed with a byte cap, and must not be content-encoded (no decompression,
so no decompression bombs); malformed framing headers fail the download instead of being
guessed at. A caller holding memory for bodies is told what each body needs as it becomes
known (`hold`): its Content-Length once the headers arrive, or, without one, what has been
read so far, growing; nothing before the host has answered. Whatever the host or the URL
does, `fetch` raises only PermanentImageError or TransientImageError.

`post` sends one POST (a webhook delivery) through the same vetting, pinning and deadline,
with no redirects followed; the receiver's answer is its status, and Retry-After.
"""

from __future__ import annotations

import contextlib
import heapq
import http.client
import ipaddress
import itertools
import queue
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http.cookiejar import DefaultCookiePolicy
from typing import Any, Protocol, cast
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
import urllib3.connection
from requests.adapters import DEFAULT_POOLBLOCK, HTTPAdapter

from retail_pulse.imaging.errors import (
    HostMisconfigured,
    ImageError,
    PermanentImageError,
    TransientImageError,
)
from retail_pulse.settings import Settings, get_settings

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Enough for http->https and a CDN hop or two; more is a loop or someone probing us.
MAX_REDIRECTS = 3
# The most one read takes: the byte cap is checked after each, so a body never overshoots it
# by more. read1 returns what has arrived, so a slow host is not waited on to fill it. Just
# under the process function's MALLOC_MMAP_THRESHOLD_ (128 KiB), so each read's buffer comes
# from the heap and is reused, where a larger one is a fresh mapping to fault in. The
# bench's photos (1.4 MB on average), fetched and measured on 100 threads with the
# function's malloc settings: 3.35 ms of CPU per image in 64 KB reads appended to a growing
# buffer, 3.2 ms in 256 KB reads into one buffer of the declared size, 2.2 ms in 120 KB ones.
_CHUNK_BYTES = 120 * 1024
_MIB = 1024 * 1024
# Content-Length and Retry-After: ASCII digits only (str.isdigit() also accepts "²", which
# int() then rejects), and few enough that int() is cheap and cannot hit Python's
# int-from-string digit limit. 15 digits is about 1 PB, far past any byte cap.
_MAX_DIGITS = 15
_DIGITS = re.compile(r"[0-9]+")
# The client reads errors in the job status, and they are stored on the image record.
_MAX_CAUSE_CHARS = 200
# URLs with control characters are refused before requests or http.client see them.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# IANA's special-purpose address registries (iana.org/assignments/iana-ipv4-special-registry
# and iana-ipv6-special-registry), decided from the address bits: Python's own tables differ
# by version (3.11 calls 192.0.0.8 global; 3.12.4 and later call all of 192.0.0.0/24 private
# but two addresses). The first match names the refusal. A block whose few globally
# reachable addresses are anycast services (192.0.0.9 and .10, 2001:1::1 to ::3, AMT,
# AS112) is refused whole: no image host lives there. Python's tables are still asked after,
# and can only add a refusal.
_SPECIAL_PURPOSE: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.ip_network(network), why)
    for network, why in (
        ("0.0.0.0/32", "an unspecified address"),
        ("0.0.0.0/8", 'a "this network" address (0.0.0.0/8)'),
        ("10.0.0.0/8", "a private address"),
        ("100.64.0.0/10", "in the shared address space 100.64.0.0/10"),
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.0.0/16", "a link-local address"),
        ("172.16.0.0/12", "a private address"),
        ("192.0.0.0/24", "an IETF protocol assignment (192.0.0.0/24)"),
        ("192.0.2.0/24", "a documentation address (192.0.2.0/24)"),
        ("192.88.99.0/24", "a 6to4 relay anycast address (192.88.99.0/24)"),
        ("192.168.0.0/16", "a private address"),
        ("198.18.0.0/15", "a benchmarking address (198.18.0.0/15)"),
        ("198.51.100.0/24", "a documentation address (198.51.100.0/24)"),
        ("203.0.113.0/24", "a documentation address (203.0.113.0/24)"),
        ("224.0.0.0/4", "a multicast address"),
        ("255.255.255.255/32", "the broadcast address"),
        ("240.0.0.0/4", "a reserved address"),
        ("::/128", "an unspecified address"),
        ("::1/128", "a loopback address"),
        ("100::/64", "a discard-only address (100::/64)"),
        ("100:0:0:1::/64", "a dummy address (100:0:0:1::/64)"),
        ("2001::/23", "an IETF protocol assignment (2001::/23)"),
        ("2001:db8::/32", "a documentation address (2001:db8::/32)"),
        ("3fff::/20", "a documentation address (3fff::/20)"),
        ("5f00::/16", "a segment routing address (5f00::/16)"),
        ("fc00::/7", "a unique local address (fc00::/7)"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local address (fec0::/10)"),
        ("ff00::/8", "a multicast address"),
    )
)

# IPv6 forms with an IPv4 address inside. IPv4-mapped is that IPv4 address (a dual-stack
# socket connects to it over IPv4), so the inner address alone decides. The others are
# transition mechanisms whose traffic goes through relays and gateways we do not control,
# and no image host needs them: they are refused whatever they wrap, after checking the
# inner address so the refusal names the worse problem.
_IPV4_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_IPV4_LOW_32 = 0xFFFF_FFFF


def _in_last_32_bits(bits: int) -> list[int]:
    # For local-use NAT64 this is the /96 layout; other prefix lengths put the IPv4
    # elsewhere, and are refused all the same.
    return [bits & _IPV4_LOW_32]


def _in_6to4(bits: int) -> list[int]:
    return [(bits >> 80) & _IPV4_LOW_32]  # 2002:AABB:CCDD::/48 carries AA.BB.CC.DD


def _in_teredo(bits: int) -> list[int]:
    # 2001:0:SERVER:flags:port:CLIENT, the client's IPv4 inverted on the wire.
    return [(bits >> 64) & _IPV4_LOW_32, ~bits & _IPV4_LOW_32]


_TRANSITION_FORMS: tuple[tuple[ipaddress.IPv6Network, str, Callable[[int], list[int]]], ...] = (
    (ipaddress.IPv6Network("::/96"), "an IPv4-compatible address (::/96)", _in_last_32_bits),
    (
        ipaddress.IPv6Network("::ffff:0:0:0/96"),
        "an IPv4-translated address (::ffff:0:0:0/96)",
        _in_last_32_bits,
    ),
    (ipaddress.IPv6Network("64:ff9b::/96"), "NAT64 (64:ff9b::/96)", _in_last_32_bits),
    (ipaddress.IPv6Network("64:ff9b:1::/48"), "local-use NAT64 (64:ff9b:1::/48)", _in_last_32_bits),
    (ipaddress.IPv6Network("2002::/16"), "6to4 (2002::/16)", _in_6to4),
    (ipaddress.IPv6Network("2001::/32"), "Teredo (2001::/32)", _in_teredo),
)


@dataclass(frozen=True)
class FetchedImage:
    """The body of an image URL, with what the measurer needs to explain a failure."""

    url: str  # the last hop, after redirects
    data: bytes | bytearray  # as read: a bytearray, never copied into bytes
    content_type: str | None  # media type only, e.g. "image/jpeg"; None when not sent


def fetch_image(url: str, settings: Settings | None = None) -> bytes | bytearray:
    """The image's bytes; raises PermanentImageError or TransientImageError."""
    return fetch(url, settings).data


class Hold(Protocol):
    """hold(total, timeout_s, up_to=...): the caller now holds `total` bytes for this body,
    having waited at most `timeout_s` for them; `up_to` (for a body without a declared
    length) is what it may grow to. Raises an ImageError if they cannot be had."""

    def __call__(self, total: int, timeout_s: float, *, up_to: int | None = None) -> None: ...


# A body without a Content-Length is held in steps of this much as it grows: one wait on
# the caller's budget per megabyte, not per read.
HOLD_STEP_BYTES = 1024 * 1024


def fetch(url: str, settings: Settings | None = None, *, hold: Hold | None = None) -> FetchedImage:
    """Download `url` following at most MAX_REDIRECTS redirects, each hop vetted.

    `hold` is told the bytes the body needs before they are read: its Content-Length once
    that is known to be within the byte cap, or (without one) what has been read so far,
    in steps of HOLD_STEP_BYTES as the body grows, never more than the cap. It is given
    the attempt's time left to wait in. Raises PermanentImageError or TransientImageError
    (whatever ImageError `hold` raised among them), and nothing else.
    """
    settings = settings or get_settings()
    with _deadline_attempt(url, settings.image_deadline_s) as attempt:
        try:
            fetched = _follow(url, settings, attempt, hold)
        except MemoryError:
            raise  # not the host's doing, and not safe to carry on from
        except Exception as err:
            error = _attempt_error(err, url, attempt)
            if error is err:
                raise
            raise error from err
        if attempt.expired:
            # A body read until the connection closes ends "cleanly" when the watchdog
            # closes it: what was read may be cut short.
            raise attempt.timed_out()
        return fetched


def _attempt_error(err: Exception, url: str, attempt: _Attempt) -> ImageError:
    """What an attempt that raised `err` failed with, as an image error."""
    # Whatever a shut socket made the libraries raise (EOF, reset, a TLS error, a
    # truncated chunk) and we then classified, the cause is the deadline.
    if attempt.expired or (not isinstance(err, ImageError) and attempt.is_over()):
        return attempt.timed_out()
    if isinstance(err, ImageError):
        return err
    # The last line of defence: nothing the host or URL does escapes unclassified.
    return _classify(err, url, reading=False)


def _follow(url: str, settings: Settings, attempt: _Attempt, hold: Hold | None) -> FetchedImage:
    """The redirect loop of one attempt."""
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        hop = _vet(current, settings, attempt)
        with _send(hop, settings, attempt) as response:
            if response.is_redirect:
                current = _redirect_target(current, response.headers["Location"], settings)
                continue
            _raise_for_status(response, current)
            _refuse_content_encoding(response, current)
            data = _read_body(response, current, settings, attempt, hold)
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
            return FetchedImage(url=current, data=data, content_type=content_type or None)
    raise PermanentImageError(f"more than {MAX_REDIRECTS} redirects from {url}", reason="download")


def _redirect_target(current: str, location: str, settings: Settings) -> str:
    """The next hop's URL; a Location that is not a usable URL fails for good."""
    # The Location is the host's text and may end up in the client's error message.
    if len(location) > settings.max_url_length:
        raise PermanentImageError(
            f"redirect from {current} to a URL longer than {settings.max_url_length} characters",
            reason="download",
        )
    try:
        target = urljoin(current, location)
        _ = urlsplit(target).port  # raises ValueError for a bad port or bracket
    except ValueError as err:
        raise PermanentImageError(
            f"invalid redirect Location from {current}: {err}", reason="download"
        ) from err
    return target


# --- POST: one request to a client's URL, e.g. a webhook delivery ---------------------

# The answer's body means nothing to the sender; reading a little of it lets a receiver
# finish writing, and no receiver can make a delivery read (or hold) more.
MAX_POST_RESPONSE_BYTES = 64 * 1024


@dataclass(frozen=True)
class PostResponse:
    """A receiver's answer to a POST: its status, and Retry-After in seconds when it sent one."""

    status: int
    retry_after_s: float | None


def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    settings: Settings | None = None,
    *,
    deadline_s: float | None = None,
) -> PostResponse:
    """POST `body` to `url`, vetted and pinned as `fetch` vets every hop, in one attempt
    with a wall-clock deadline (`deadline_s`, else image_deadline_s) kept by the watchdog.

    Redirects are not followed: a 3xx is returned like any status, for the caller to treat
    as final (the receiver must give its real URL; a body is never replayed to wherever a
    Location points). At most MAX_POST_RESPONSE_BYTES of the answer are read, and dropped.
    Raises PermanentImageError (refused, invalid URL, TLS certificate, malformed answer) or
    TransientImageError (timeouts, connection trouble), and nothing else.
    """
    settings = settings or get_settings()
    with _deadline_attempt(url, deadline_s or settings.image_deadline_s) as attempt:
        try:
            response = _send(_vet(url, settings, attempt), settings, attempt, "POST", body, headers)
        except MemoryError:
            raise
        except Exception as err:
            error = _attempt_error(err, url, attempt)
            if error is err:
                raise
            raise error from err
        with response:
            _discard_body(response, attempt)
        return PostResponse(
            status=response.status_code,
            retry_after_s=parse_retry_after(response.headers.get("Retry-After")),
        )


def _discard_body(response: requests.Response, attempt: _Attempt) -> None:
    """Read and drop the start of the answer. Its status line and headers have decided the
    outcome already, so a body that trickles, breaks off or outlasts the deadline (the
    watchdog ends the read) changes nothing: whatever reading it raises is ignored."""
    left = MAX_POST_RESPONSE_BYTES
    with contextlib.suppress(Exception):
        while left > 0 and not attempt.is_over():
            chunk = response.raw.read1(min(_CHUNK_BYTES, left), decode_content=False)
            if not chunk:
                return
            left -= len(chunk)


# --- Vetting: which URLs may be fetched, and at which address -------------------------


@dataclass(frozen=True)
class _Hop:
    """One request, vetted: `connect_url` names the vetted IP, `host_header` the real host."""

    url: str
    connect_url: str
    host_header: str


def _vet(url: str, settings: Settings, attempt: _Attempt) -> _Hop:
    """Refuse what must not be fetched, and pin the address the request will go to."""
    try:
        parts = urlsplit(url)
    except ValueError as err:  # e.g. "http://[::1/x.jpg": an unclosed or bad bracket
        raise PermanentImageError(f"invalid URL {url}: {err}", reason="download") from err
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise PermanentImageError(
            f"refused: only http and https URLs are fetched, not {url}", reason="refused"
        )
    if _CONTROL.search(url):
        # http.client would refuse them mid-request with a bare ValueError.
        raise PermanentImageError(
            f"invalid URL {url!r}: it contains control characters", reason="download"
        )
    try:
        host = parts.hostname
        port = parts.port
        ascii_host = (host or "").encode("idna").decode("ascii")
    except (ValueError, UnicodeError) as err:
        raise PermanentImageError(f"invalid URL {url}: {err}", reason="download") from err
    if not host:
        raise PermanentImageError(f"invalid URL {url}: no host", reason="download")
    if port == 0:  # urlsplit accepts it; `port or default` would quietly make it 80
        raise PermanentImageError(f"invalid URL {url}: port 0", reason="download")
    port = port or _DEFAULT_PORTS[scheme]

    is_literal = _is_ip(host)
    written_host = f"[{host}]" if is_literal and ":" in host else ascii_host
    addresses = _resolve(ascii_host, port, url, attempt)
    # The allow-list names exact host:port pairs (local stack, tests); anything else on
    # the same host stays refused.
    if f"{written_host}:{port}" not in settings.allowed_private_hosts:
        for address in addresses:
            if why := _blocked_because(address):
                # A literal is the client's own text; what a name resolved to is not told,
                # so the service cannot be used to map private DNS.
                subject = f"{host} is" if is_literal else f"{host} resolves to"
                raise PermanentImageError(f"refused: {subject} {why}", reason="refused")

    # Lambda has no IPv6 egress unless its VPC is dual-stack, so prefer IPv4.
    address = min(addresses, key=lambda a: a.version)
    ip_netloc = f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
    default_port = port == _DEFAULT_PORTS[scheme]
    return _Hop(
        url=url,
        # User info is dropped on purpose: it would become a Basic auth header.
        connect_url=parts._replace(scheme=scheme, netloc=ip_netloc, fragment="").geturl(),
        host_header=written_host if default_port else f"{written_host}:{port}",
    )


def _is_ip(host: str) -> bool:
    """A literal address is named in a refusal (it is the client's own text); for a host
    name only the kind of address it resolved to is told."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _resolve(ascii_host: str, port: int, url: str, attempt: _Attempt) -> list[IpAddress]:
    """Every address the host resolves to: all are vetted, so no answer can sneak past.

    The lookup runs on a thread of _LOOKUPS and is waited for at most until the attempt's
    deadline: getaddrinfo cannot be interrupted, and a resolver that never answers (a
    client's own name server, say) would otherwise hold the image's thread for as long as
    it likes. A lookup given up on finishes on its own thread, which nothing waits for.
    """
    try:
        if _is_ip(ascii_host):  # nothing to look up: answered at once, on this thread
            infos = socket.getaddrinfo(ascii_host, port, type=socket.SOCK_STREAM)
        else:
            infos = _LOOKUPS.getaddrinfo(ascii_host, port, attempt.remaining())
    except TimeoutError as err:
        raise attempt.timed_out() from err
    except socket.gaierror as err:
        if err.errno == socket.EAI_NONAME:
            raise HostMisconfigured(
                f"host {ascii_host} not found for {url}", reason="download"
            ) from err
        raise TransientImageError(
            f"could not resolve {ascii_host} for {url}: {err.strerror}"
        ) from err
    except (ValueError, UnicodeError) as err:  # e.g. an embedded NUL or an overlong name
        raise PermanentImageError(f"invalid URL {url}: {err}", reason="download") from err
    addresses: list[IpAddress] = []
    for info in infos:
        try:
            addresses.append(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
        except ValueError:
            continue  # not an IP family (nothing to connect to over TCP/IP)
    if not addresses:
        raise TransientImageError(f"could not resolve {ascii_host} for {url}: no addresses")
    return list(dict.fromkeys(addresses))


def _blocked_because(address: IpAddress) -> str | None:
    """Why an address is not on the public internet, or None when it is."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in _IPV4_MAPPED:  # ::ffff:127.0.0.1 is 127.0.0.1
            return _blocked_because(ipaddress.IPv4Address(int(address) & _IPV4_LOW_32))
        if transition := _transition_form(address):
            form, inner = transition
            for ipv4 in inner:
                if why := _blocked_because(ipv4):
                    return f"{why} wrapped in {form}"
            return f"an IPv4 address wrapped in {form}; transition addresses are not fetched"
    ip = address
    for network, why in _SPECIAL_PURPOSE:
        if ip.version == network.version and ip in network:
            return why
    # Nothing above matched; a version's tables may still know better.
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "not a public address"
    return None


def _transition_form(ip: ipaddress.IPv6Address) -> tuple[str, list[ipaddress.IPv4Address]] | None:
    """The transition form `ip` is in and the IPv4 addresses it carries, or None.

    Computed from the bits, so the answer does not depend on the Python version's tables
    (3.11 calls 2002:7f00:1:: global, though it is 6to4 of 127.0.0.1).
    """
    bits = int(ip)
    if bits <= 1:  # :: and ::1 are IPv6's own unspecified and loopback addresses
        return None
    for network, form, carried in _TRANSITION_FORMS:
        if ip in network:
            return form, [ipaddress.IPv4Address(i) for i in carried(bits)]
    return None


class _Lookups:
    """getaddrinfo on threads of their own, so that a caller waits for an answer at most
    until its deadline (`getaddrinfo(..., timeout_s)` raises TimeoutError after that).

    Threads are reused: a lookup takes an idle one, or starts one when none is idle, so a
    lookup that hangs never queues another behind it (one client's silent name server
    cannot hold up another client's lookups). A thread idle for IDLE_S ends. They are
    daemon threads: a lookup still hanging never holds up the process's exit.
    """

    IDLE_S = 60.0

    def __init__(self) -> None:
        self._work: queue.SimpleQueue[tuple[Future[list[Any]], str, int]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for work that no lookup has claimed yet

    def getaddrinfo(self, host: str, port: int, timeout_s: float) -> list[Any]:
        future: Future[list[Any]] = Future()
        with self._lock:
            start = self._idle == 0
            if not start:
                self._idle -= 1  # claimed: that thread takes this lookup (or one like it)
        self._work.put((future, host, port))
        if start:
            threading.Thread(target=self._serve, name="name-lookup", daemon=True).start()
        try:
            return future.result(timeout=max(0.0, timeout_s))
        except FutureTimeout:
            future.cancel()
            raise TimeoutError(f"no answer for {host} within {timeout_s:.3g} s") from None

    def _serve(self) -> None:
        while True:
            try:
                future, host, port = self._work.get(timeout=self.IDLE_S)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:  # nobody claimed this thread: it may end
                        self._idle -= 1
                        return
                continue  # claimed just now: its lookup is on its way
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
                except BaseException as err:  # handed to the caller, whatever it is
                    future.set_exception(err)
            with self._lock:
                self._idle += 1


_LOOKUPS = _Lookups()


# --- Transport: send to the pinned address, speak TLS for the real host ---------------


class PinnedAddressAdapter(HTTPAdapter):
    """Connects to the IP in the request URL; TLS uses the name in the Host header.

    The URL names the vetted IP, so urllib3 connects there without resolving anything.
    For https, SNI and certificate verification use `server_hostname`/`assert_hostname`,
    set here from the Host header; they are part of urllib3's pool key, so pools for
    different host names on one IP never share a connection. Its pools build watched
    connections, whose sockets the deadline watchdog can shut.
    """

    def init_poolmanager(
        self,
        connections: int,
        maxsize: int,
        block: bool = DEFAULT_POOLBLOCK,
        **pool_kwargs: Any,
    ) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _WatchedHTTPConnectionPool,
            "https": _WatchedHTTPSConnectionPool,
        }

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[Any, Any]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        if host_params["scheme"] == "https":
            name = urlsplit("//" + request.headers["Host"]).hostname
            # urllib3's pool arguments; the stubs' TypedDict names only requests' own.
            extra = cast(dict[str, Any], pool_kwargs)
            extra["server_hostname"] = name
            extra["assert_hostname"] = name
        return host_params, pool_kwargs


class _NoRedirectsSession(requests.Session):
    """A Session that never works out a redirect's target.

    Redirects are followed by hand, each hop vetted; yet even with allow_redirects=False
    requests parses the Location to offer `response.next`, and a Location such as
    "http://[::1/" makes it raise a bare ValueError from inside `get`.
    """

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        return None


_local = threading.local()


def _session() -> requests.Session:
    """One session per thread: the process function fetches from several threads at once,
    and a Session's cookie jar and adapter bookkeeping are not meant to be shared."""
    session: requests.Session | None = getattr(_local, "session", None)
    if session is None:
        session = _NoRedirectsSession()
        # No proxies or .netrc from the environment: the request goes to the vetted IP.
        session.trust_env = False
        # Each image is fetched statelessly; a cookie from one URL never reaches another.
        session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        session.headers["User-Agent"] = "retail-pulse-image-fetcher"
        # Images are already compressed; an encoded answer anyway is refused (no gzip bombs).
        session.headers["Accept-Encoding"] = "identity"
        adapter = PinnedAddressAdapter()
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        _local.session = session
    return session


def _send(
    hop: _Hop,
    settings: Settings,
    attempt: _Attempt,
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> requests.Response:
    """Send one request and return the streamed response (headers read, body not yet)."""
    remaining = attempt.remaining()
    # The connect timeout never outlasts the deadline: connect() is one blocking call on a
    # socket the watchdog does not know yet.
    timeout = (min(settings.connect_timeout_s, remaining), min(settings.read_timeout_s, remaining))
    try:
        return _session().request(
            method,
            hop.connect_url,
            data=body,
            headers={**(headers or {}), "Host": hop.host_header},
            stream=True,
            allow_redirects=False,
            timeout=timeout,
        )
    except Exception as err:
        if attempt.is_over():
            raise attempt.timed_out() from err
        raise _classify(err, hop.url, reading=False) from err


def _raise_for_status(response: requests.Response, url: str) -> None:
    """429 and 5xx may pass (honour Retry-After); any other non-2xx will not."""
    status = response.status_code
    if status == 429 or status >= 500:
        raise TransientImageError(
            f"HTTP {status} for {url}",
            retry_after_s=parse_retry_after(response.headers.get("Retry-After")),
        )
    if not 200 <= status < 300:
        raise PermanentImageError(f"HTTP {status} for {url}", reason="download")


def _refuse_content_encoding(response: requests.Response, url: str) -> None:
    """We asked for identity; decoding anything else would let a small body expand without
    bound (a gzip or brotli bomb), so an encoded answer is refused instead."""
    encoding = response.headers.get("Content-Encoding", "").strip()
    codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
    if any(c != "identity" for c in codings):
        # The header is the host's text: show it only when it is short and plain.
        shown = encoding if len(encoding) <= 64 and encoding.isascii() else "(unreadable)"
        shown = shown if shown.isprintable() else "(unreadable)"
        raise PermanentImageError(
            f"served with Content-Encoding {shown}; only unencoded images are accepted: {url}",
            reason="download",
        )


def _read_body(
    response: requests.Response,
    url: str,
    settings: Settings,
    attempt: _Attempt,
    hold: Hold | None = None,
) -> bytearray:
    """The body, failing on the byte cap or the deadline, whichever comes first."""
    cap = settings.max_image_bytes
    too_large = f"image larger than {_format_bytes(cap)}: {url}"
    declared = response.headers.get("Content-Length")
    held = 0  # what `hold` was last told
    if declared is not None:
        # http.client reads the length with int(), which also takes "1_0", "+5" and
        # Arabic-Indic digits: a length it reads one way and we another is a framing
        # disagreement, so it is refused rather than guessed at.
        declared = declared.strip(" \t")
        if not _DIGITS.fullmatch(declared):
            raise PermanentImageError(
                f"invalid Content-Length header from {url}", reason="download"
            )
        if len(declared) > _MAX_DIGITS or int(declared) > cap:
            raise PermanentImageError(too_large, reason="too_large")
        if hold is not None:
            held = int(declared)
            hold(held, attempt.remaining())

    # The body is read into one buffer of the declared size, in place: growing a buffer
    # chunk by chunk and copying it into bytes at the end mapped, faulted in and copied
    # each body two or three times over (see _CHUNK_BYTES). Without a declared size, or
    # past it, the buffer grows, and so does what is held for it.
    body = bytearray(int(declared) if declared is not None else 0)
    filled = 0
    try:
        # read1 returns whatever has arrived. Not decoded: _refuse_content_encoding let
        # only identity through, and nothing here should ever inflate a body.
        while chunk := response.raw.read1(_CHUNK_BYTES, decode_content=False):
            end = filled + len(chunk)
            if end > cap:
                raise PermanentImageError(too_large, reason="too_large")
            if hold is not None and end > held:
                held = min(cap, max(end, held + HOLD_STEP_BYTES))
                hold(held, attempt.remaining(), up_to=None if declared is not None else cap)
            if end <= len(body):
                body[filled:end] = chunk
            else:
                del body[filled:]
                body += chunk
            filled = end
            attempt.remaining()
    except ImageError:
        raise
    except Exception as err:
        if attempt.is_over():
            raise attempt.timed_out() from err
        raise _classify(err, url, reading=True) from err
    del body[filled:]  # a body shorter than declared (urllib3 raises on one first)
    return body


# --- The deadline: a watchdog that shuts an attempt's sockets --------------------------


class _Attempt:
    """One call of `fetch`: its deadline and the sockets it has used so far.

    Sockets are watched through a duplicate of their file descriptor. shutdown() acts on
    the socket, not the descriptor, so shutting the duplicate interrupts reads on the
    original; and unlike the original it stays valid while TLS wraps (and detaches) the
    plain socket mid-handshake. Holding our own descriptor also means a number the
    connection closed and the kernel reused can never be shut by mistake.
    """

    def __init__(self, url: str, deadline_s: float) -> None:
        self.url = url
        self.deadline_s = deadline_s
        self.deadline = time.monotonic() + deadline_s
        self.expired = False  # set by the watchdog, before any socket is shut
        self.finished = False
        self._lock = threading.Lock()
        self._watched: list[tuple[_WatchedHTTPConnection, socket.socket]] = []

    def remaining(self) -> float:
        """Seconds left; past the deadline, retrying later is the only hope."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0 or self.expired:
            raise self.timed_out()
        return remaining

    def is_over(self) -> bool:
        return self.expired or time.monotonic() >= self.deadline

    def timed_out(self) -> TransientImageError:
        return TransientImageError(f"did not finish within {self.deadline_s:g} s for {self.url}")

    def watch(self, connection: _WatchedHTTPConnection, sock: socket.socket) -> None:
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


def _shut(connection: _WatchedHTTPConnection, duplicate: socket.socket) -> None:
    connection.shut_by_watchdog = True  # the pool must not hand it out again
    # OSError: already closed by the peer, so nothing is blocked on it.
    with contextlib.suppress(OSError):
        duplicate.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread for the whole process, sleeping until the earliest deadline.

    A heap keeps deadlines in order; a finished attempt is not removed (that would cost a
    search) but skipped when it comes up, so the heap holds at most the attempts started
    in the last `image_deadline_s`. A thread per attempt (threading.Timer) would work too,
    at the cost of a thread start for every image.
    """

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._heap: list[tuple[float, int, _Attempt]] = []
        self._order = itertools.count()  # ties on the deadline never compare attempts
        self._thread: threading.Thread | None = None

    def arm(self, attempt: _Attempt) -> None:
        with self._wake:
            heapq.heappush(self._heap, (attempt.deadline, next(self._order), attempt))
            if self._thread is None or not self._thread.is_alive():  # also after a fork
                self._thread = threading.Thread(
                    target=self._run, name="image-deadline-watchdog", daemon=True
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


@contextmanager
def _deadline_attempt(url: str, deadline_s: float) -> Iterator[_Attempt]:
    """Make a new attempt this thread's current one, watched until the block ends."""
    attempt = _Attempt(url, deadline_s)
    previous: _Attempt | None = getattr(_local, "attempt", None)
    _local.attempt = attempt
    _WATCHDOG.arm(attempt)
    try:
        yield attempt
    finally:
        _local.attempt = previous
        attempt.finish()


def _watch_for_current_attempt(connection: _WatchedHTTPConnection, sock: socket.socket) -> None:
    # Sockets used outside `fetch` (none today) have no deadline to keep.
    attempt: _Attempt | None = getattr(_local, "attempt", None)
    if attempt is not None and connection.watched_by is not attempt:
        attempt.watch(connection, sock)


class _WatchedHTTPConnection(urllib3.connection.HTTPConnection):
    """A connection whose socket is registered with the current attempt's deadline, both
    when it is opened and each time the pool hands it out again for a new request."""

    watched_by: _Attempt | None = None
    shut_by_watchdog = False

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        self.shut_by_watchdog = False
        self.watched_by = None
        try:
            _watch_for_current_attempt(self, sock)
        except OSError:
            sock.close()  # e.g. out of descriptors: unwatched, it could outlive the deadline
            raise
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        if self.sock is not None:  # reused from the pool: opened by an earlier attempt
            _watch_for_current_attempt(self, self.sock)
        super().request(*args, **kwargs)

    @property
    def is_connected(self) -> bool:
        # The pool asks this before reusing a connection; a shut one is dropped instead.
        return not self.shut_by_watchdog and super().is_connected


class _WatchedHTTPSConnection(_WatchedHTTPConnection, urllib3.connection.HTTPSConnection):
    """HTTPSConnection.connect opens its socket through _new_conn, so TLS is watched too,
    handshake included."""


class _WatchedHTTPConnectionPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSConnectionPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


# --- Classifying what the libraries raise ----------------------------------------------

# Connection trouble that can clear up on its own, although it looks like a TLS error.
_TLS_CUT_SHORT = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)
_INVALID_URL = (
    requests.exceptions.InvalidURL,
    requests.exceptions.InvalidSchema,
    requests.exceptions.MissingSchema,
    urllib3.exceptions.LocationValueError,
    http.client.InvalidURL,
)
_NETWORK_ERRORS = (
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
)


def _classify(err: BaseException, url: str, *, reading: bool) -> ImageError:
    """What requests, urllib3, http.client or ssl raised, as an image error for `url`.

    Malformed responses are permanent: a host that sends a 70 KB header line, 101
    headers or a status line that is not HTTP will do so next time too. Timeouts and
    connections cut short are transient.
    """
    if isinstance(err, ImageError):
        return err
    chain = _chain(err)
    if malformed := _malformed_because(chain):
        return HostMisconfigured(f"malformed response from {url}: {malformed}", reason="download")
    if any(isinstance(e, _INVALID_URL) for e in chain):
        return PermanentImageError(f"invalid URL {url}", reason="download")
    tls = [e for e in chain if isinstance(e, (ssl.SSLError, ssl.CertificateError))]
    if tls or isinstance(err, requests.exceptions.SSLError):
        if any(isinstance(e, _TLS_CUT_SHORT) for e in tls):
            return TransientImageError(f"TLS connection cut short for {url}")
        # A certificate that does not match or is not trusted will not fix itself.
        return HostMisconfigured(f"TLS failed for {url}: {_root_cause(err)}", reason="download")
    if isinstance(err, requests.exceptions.ConnectTimeout):
        return TransientImageError(f"connect timed out for {url}")
    timed_out = isinstance(err, requests.exceptions.ReadTimeout) or any(
        isinstance(e, (urllib3.exceptions.ReadTimeoutError, TimeoutError)) for e in chain
    )
    if timed_out:
        return TransientImageError(
            f"reading {url} timed out" if reading else f"no response in time from {url}"
        )
    if not isinstance(err, _NETWORK_ERRORS):
        # Not a network failure we know: likely a bug (ours or a library's) that this
        # host's answer triggered. Transient, so a retry may tell; the type says what.
        return TransientImageError(f"unexpected {type(err).__name__} while fetching {url}")
    if reading:
        return TransientImageError(f"reading {url} failed: {_root_cause(err)}")
    return TransientImageError(f"could not connect for {url}: {_root_cause(err)}")


def _malformed_because(chain: list[BaseException]) -> str | None:
    """Why the response cannot be HTTP, in our words: the exceptions' own text often
    quotes the host's bytes."""
    for e in chain:
        if isinstance(e, http.client.RemoteDisconnected):
            continue  # a BadStatusLine, but only a closed connection
        if isinstance(e, http.client.LineTooLong):
            return str(e)  # "got more than 65536 bytes when reading header line"
        if isinstance(e, http.client.UnknownProtocol):
            return "an unknown HTTP version"
        if isinstance(e, http.client.BadStatusLine):
            return "an invalid status line"
        if type(e) is http.client.HTTPException and "headers" in str(e):
            return str(e)  # "got more than 100 headers"
        if isinstance(e, urllib3.exceptions.InvalidChunkLength) and e.length:
            return "an invalid chunk size"  # (an empty one is the connection closing)
        if isinstance(e, http.client.IncompleteRead) and isinstance(e.__context__, ValueError):
            return "an invalid chunk size"  # http.client's own chunked reader, via read1
        if isinstance(e, (urllib3.exceptions.InvalidHeader, requests.exceptions.InvalidHeader)):
            return "an invalid header"
    return None


def _chain(err: BaseException) -> list[BaseException]:
    """`err` and every exception it wraps, outermost first (requests nests urllib3 nests
    http.client, through causes, contexts, `reason` and arguments)."""
    found: list[BaseException] = []
    seen: set[int] = set()
    pending = [err]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        found.append(current)
        nested = (current.__cause__, getattr(current, "reason", None), *current.args)
        pending.extend(e for e in (*nested, current.__context__) if isinstance(e, BaseException))
    return found


# --- Small helpers ---------------------------------------------------------------------


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date), or None.

    Anything else, including digits that are not ASCII, is ignored: the caller's own
    backoff applies.
    """
    if not value or not value.strip():
        return None
    value = value.strip()
    if _DIGITS.fullmatch(value):
        return float(value) if len(value) <= _MAX_DIGITS else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    except OverflowError:
        return None


def _format_bytes(n: int) -> str:
    """The cap as people read it: "20 MB" (1 MB = 2**20 bytes, like MAX_IMAGE_BYTES)."""
    return f"{n / _MIB:g} MB" if n >= _MIB else f"{n:,} bytes"


def _root_cause(err: BaseException) -> str:
    """The innermost cause, e.g. "Connection refused", instead of requests' long chain."""
    seen: set[int] = set()
    current: BaseException = err
    while id(current) not in seen:
        seen.add(id(current))
        reason = getattr(current, "reason", None)
        first_arg = current.args[0] if current.args else None
        nxt = next(
            (
                e
                for e in (current.__cause__, reason, first_arg, current.__context__)
                if isinstance(e, BaseException)
            ),
            None,
        )
        if nxt is None:
            break
        current = nxt
    if isinstance(current, OSError) and current.strerror:
        return current.strerror
    # Library messages can quote the host's bytes: never let one grow the error much.
    text = str(current) or type(current).__name__
    return text if len(text) <= _MAX_CAUSE_CHARS else text[:_MAX_CAUSE_CHARS] + "..."
