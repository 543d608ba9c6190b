"""Which URLs may be requested, and at which address: the SSRF guard.

URLs come from clients, so every hop is vetted before any connection is made: the scheme
must be http or https and every address the host resolves to must be public (no loopback,
private, link-local such as the 169.254.169.254 metadata service, ...; see addresses.py).
The request is then sent to the vetted address itself (`Hop.connect_url`), so a second DNS
answer cannot swap in a private one (DNS rebinding); TLS still checks the certificate for,
and sends SNI with, the host name of the URL (transport.py).
"""

from __future__ import annotations

import ipaddress
import queue
import re
import socket
import threading
from collections.abc import Collection
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from retail_pulse.net.addresses import IpAddress, blocked_because, is_ip
from retail_pulse.net.deadline import Attempt
from retail_pulse.net.errors import (
    HostMisconfigured,
    PermanentRequestError,
    Refused,
    TransientRequestError,
)

DEFAULT_PORTS = {"http": 80, "https": 443}
# URLs with control characters are refused before requests or http.client see them.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Hop:
    """One request, vetted: `connect_url` names the vetted IP, `host_header` the real host."""

    url: str
    connect_url: str
    host_header: str


def vet(url: str, allowed_private_hosts: Collection[str], attempt: Attempt) -> Hop:
    """Refuse what must not be requested, and pin the address the request will go to."""
    try:
        parts = urlsplit(url)
    except ValueError as err:  # e.g. "http://[::1/x.jpg": an unclosed or bad bracket
        raise PermanentRequestError(f"invalid URL {url}: {err}") from err
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise Refused(f"refused: only http and https URLs are fetched, not {url}")
    if _CONTROL.search(url):
        # http.client would refuse them mid-request with a bare ValueError.
        raise PermanentRequestError(f"invalid URL {url!r}: it contains control characters")
    try:
        host = parts.hostname
        port = parts.port
        ascii_host = (host or "").encode("idna").decode("ascii")
    except (ValueError, UnicodeError) as err:
        raise PermanentRequestError(f"invalid URL {url}: {err}") from err
    if not host:
        raise PermanentRequestError(f"invalid URL {url}: no host")
    if port == 0:  # urlsplit accepts it; `port or default` would quietly make it 80
        raise PermanentRequestError(f"invalid URL {url}: port 0")
    port = port or DEFAULT_PORTS[scheme]

    is_literal = is_ip(host)
    written_host = f"[{host}]" if is_literal and ":" in host else ascii_host
    addresses = _resolve(ascii_host, port, url, attempt)
    # The allow-list names exact host:port pairs (local stack, tests); anything else on
    # the same host stays refused.
    if f"{written_host}:{port}" not in allowed_private_hosts:
        for address in addresses:
            if why := blocked_because(address):
                # A literal is the client's own text; what a name resolved to is not told,
                # so the service cannot be used to map private DNS.
                subject = f"{host} is" if is_literal else f"{host} resolves to"
                raise Refused(f"refused: {subject} {why}")

    # Lambda has no IPv6 egress unless its VPC is dual-stack, so prefer IPv4.
    address = min(addresses, key=lambda a: a.version)
    ip_netloc = f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
    default_port = port == DEFAULT_PORTS[scheme]
    return Hop(
        url=url,
        # User info is dropped on purpose: it would become a Basic auth header.
        connect_url=parts._replace(scheme=scheme, netloc=ip_netloc, fragment="").geturl(),
        host_header=written_host if default_port else f"{written_host}:{port}",
    )


def _resolve(ascii_host: str, port: int, url: str, attempt: Attempt) -> list[IpAddress]:
    """Every address the host resolves to: all are vetted, so no answer can sneak past.

    The lookup runs on a thread of _LOOKUPS and is waited for at most until the attempt's
    deadline: getaddrinfo cannot be interrupted, and a resolver that never answers (a
    client's own name server, say) would otherwise hold the caller's thread for as long as
    it likes. A lookup given up on finishes on its own thread, which nothing waits for.
    """
    try:
        if is_ip(ascii_host):  # nothing to look up: answered at once, on this thread
            infos = socket.getaddrinfo(ascii_host, port, type=socket.SOCK_STREAM)
        else:
            infos = _LOOKUPS.getaddrinfo(ascii_host, port, attempt.remaining())
    except TimeoutError as err:
        raise attempt.timed_out() from err
    except socket.gaierror as err:
        if err.errno == socket.EAI_NONAME:
            raise HostMisconfigured(f"host {ascii_host} not found for {url}") from err
        raise TransientRequestError(
            f"could not resolve {ascii_host} for {url}: {err.strerror}"
        ) from err
    except (ValueError, UnicodeError) as err:  # e.g. an embedded NUL or an overlong name
        raise PermanentRequestError(f"invalid URL {url}: {err}") from err
    addresses: list[IpAddress] = []
    for info in infos:
        try:
            addresses.append(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
        except ValueError:
            continue  # not an IP family (nothing to connect to over TCP/IP)
    if not addresses:
        raise TransientRequestError(f"could not resolve {ascii_host} for {url}: no addresses")
    return list(dict.fromkeys(addresses))


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
