"""The transport: a requests session per thread whose connections go to the pinned address
(guard.Hop) and register their sockets with the attempt's deadline (deadline.py).

Only public extension points are used: requests' HTTPAdapter (its pool manager's pool
classes, and the pool key's TLS host name), and subclasses of urllib3's connection classes
that override their public `connect` and `request`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from http.cookiejar import DefaultCookiePolicy
from typing import Any, cast
from urllib.parse import urlsplit

import requests
import urllib3
import urllib3.connection
from requests.adapters import DEFAULT_POOLBLOCK, HTTPAdapter

from retail_pulse.net.classify import classify
from retail_pulse.net.deadline import Attempt, watch_for_current_attempt
from retail_pulse.net.guard import Hop


class WatchedHTTPConnection(urllib3.connection.HTTPConnection):
    """A connection whose socket is registered with the current attempt's deadline, both
    once it has connected and each time the pool hands it out again for a new request.

    Connecting itself (TLS handshake included) is bounded by the connect timeout, which
    `send` never lets outlast the deadline."""

    watched_by: Attempt | None = None
    shut_by_watchdog = False

    def connect(self) -> None:
        self.shut_by_watchdog = False
        self.watched_by = None
        super().connect()
        if self.sock is None:
            return
        try:
            watch_for_current_attempt(self, self.sock)
        except OSError:
            self.close()  # e.g. out of descriptors: unwatched, it could outlive the deadline
            raise

    def request(self, *args: Any, **kwargs: Any) -> None:
        if self.sock is not None:  # reused from the pool: opened by an earlier attempt
            watch_for_current_attempt(self, self.sock)
        super().request(*args, **kwargs)

    @property
    def is_connected(self) -> bool:
        # The pool asks this before reusing a connection; a shut one is dropped instead.
        return not self.shut_by_watchdog and super().is_connected


class WatchedHTTPSConnection(WatchedHTTPConnection, urllib3.connection.HTTPSConnection):
    """HTTPS: `connect` is HTTPSConnection's (TCP, then TLS), watched once it returns."""


class _WatchedHTTPConnectionPool(urllib3.HTTPConnectionPool):
    ConnectionCls = WatchedHTTPConnection


class _WatchedHTTPSConnectionPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = WatchedHTTPSConnection


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


_local = threading.local()  # each thread's session


def session() -> requests.Session:
    """One session per thread: the process function fetches from several threads at once,
    and a Session's cookie jar and adapter bookkeeping are not meant to be shared."""
    current: requests.Session | None = getattr(_local, "session", None)
    if current is None:
        current = _NoRedirectsSession()
        # No proxies or .netrc from the environment: the request goes to the vetted IP.
        current.trust_env = False
        # Each request is stateless: a cookie from one URL never reaches another.
        current.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        current.headers["User-Agent"] = "retail-pulse-image-fetcher"
        # Images are already compressed; an encoded image is refused anyway (no gzip bombs).
        current.headers["Accept-Encoding"] = "identity"
        adapter = PinnedAddressAdapter()
        current.mount("http://", adapter)
        current.mount("https://", adapter)
        _local.session = current
    return current


def send(
    hop: Hop,
    attempt: Attempt,
    timeouts: tuple[float, float],
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> requests.Response:
    """Send one request and return the streamed response (headers read, body not yet).
    `timeouts` are the connect and read timeouts, each cut to the attempt's time left."""
    remaining = attempt.remaining()
    # The connect timeout never outlasts the deadline: connect() is one blocking call on a
    # socket the watchdog does not know yet.
    connect_timeout_s, read_timeout_s = timeouts
    timeout = (min(connect_timeout_s, remaining), min(read_timeout_s, remaining))
    try:
        return session().request(
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
        raise classify(err, hop.url, reading=False) from err
