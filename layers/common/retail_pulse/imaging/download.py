"""Download one image from a client-supplied URL without letting the URL reach our network.

Image URLs come from clients, so every hop is vetted before any connection is made: the
scheme must be http or https and every address the host resolves to must be public
(no loopback, private, link-local such as the 169.254.169.254 metadata service, ...).
The request is then sent to the vetted address itself, so a second DNS answer cannot
swap in a private one (DNS rebinding); TLS still checks the certificate for, and sends SNI
with, the host name of the URL. Redirects are followed by hand so each hop is vetted too.

The body is streamed with a byte cap and an overall deadline, so an endless or trickling
body fails on a limit instead of on memory or the Lambda timeout.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http.cookiejar import DefaultCookiePolicy
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from retail_pulse.imaging.errors import PermanentImageError, TransientImageError
from retail_pulse.settings import Settings, get_settings

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Enough for http->https and a CDN hop or two; more is a loop or someone probing us.
MAX_REDIRECTS = 3
# Small reads keep the deadline check frequent while a body trickles in.
_CHUNK_BYTES = 64 * 1024
_MIB = 1024 * 1024

_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")


@dataclass(frozen=True)
class FetchedImage:
    """The body of an image URL, with what the measurer needs to explain a failure."""

    url: str  # the last hop, after redirects
    data: bytes
    content_type: str | None  # media type only, e.g. "image/jpeg"; None when not sent


def fetch_image(url: str, settings: Settings | None = None) -> bytes:
    """The image's bytes; raises PermanentImageError or TransientImageError."""
    return fetch(url, settings).data


def fetch(url: str, settings: Settings | None = None) -> FetchedImage:
    """Download `url` following at most MAX_REDIRECTS redirects, each hop vetted."""
    settings = settings or get_settings()
    deadline = time.monotonic() + settings.image_deadline_s
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        hop = _vet(current, settings)
        with _get(hop, settings, deadline) as response:
            if response.is_redirect:
                current = urljoin(current, response.headers["Location"])
                continue
            _raise_for_status(response, current)
            data = _read_body(response, current, settings, deadline)
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
            return FetchedImage(url=current, data=data, content_type=content_type or None)
    raise PermanentImageError(f"more than {MAX_REDIRECTS} redirects from {url}", reason="download")


# --- Vetting: which URLs may be fetched, and at which address -------------------------


@dataclass(frozen=True)
class _Hop:
    """One request, vetted: `connect_url` names the vetted IP, `host_header` the real host."""

    url: str
    connect_url: str
    host_header: str


def _vet(url: str, settings: Settings) -> _Hop:
    """Refuse what must not be fetched, and pin the address the request will go to."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise PermanentImageError(
            f"refused: only http and https URLs are fetched, not {url}", reason="refused"
        )
    try:
        host = parts.hostname
        port = parts.port or _DEFAULT_PORTS[scheme]
        ascii_host = (host or "").encode("idna").decode("ascii")
    except (ValueError, UnicodeError) as err:
        raise PermanentImageError(f"invalid URL {url}: {err}", reason="download") from err
    if not host:
        raise PermanentImageError(f"invalid URL {url}: no host", reason="download")

    is_literal = _is_ip(host)
    written_host = f"[{host}]" if is_literal and ":" in host else ascii_host
    addresses = _resolve(ascii_host, port, url)
    # The allow-list names exact host:port pairs (local stack, tests); anything else on
    # the same host stays refused.
    if f"{written_host}:{port}" not in settings.allowed_private_hosts:
        for address in addresses:
            if why := _blocked_because(address):
                subject = f"{host} is" if is_literal else f"{host} resolves to {address},"
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
    """A literal address is named alone in a refusal; a host name also shows what it hit."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _resolve(ascii_host: str, port: int, url: str) -> list[IpAddress]:
    """Every address the host resolves to: all are vetted, so no answer can sneak past."""
    try:
        infos = socket.getaddrinfo(ascii_host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        if err.errno == socket.EAI_NONAME:
            raise PermanentImageError(
                f"host {ascii_host} not found for {url}", reason="download"
            ) from err
        raise TransientImageError(
            f"could not resolve {ascii_host} for {url}: {err.strerror}"
        ) from err
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    return list(dict.fromkeys(addresses))


def _blocked_because(address: IpAddress) -> str | None:
    """Why an address is not on the public internet, or None when it is."""
    ip = address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip in _SHARED_ADDRESS_SPACE:
        return "in the shared address space 100.64.0.0/10"
    if ip in _UNIQUE_LOCAL:
        return "a unique local address (fc00::/7)"
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "not a public address"
    return None


# --- Transport: send to the pinned address, speak TLS for the real host ---------------


class PinnedAddressAdapter(HTTPAdapter):
    """Connects to the IP in the request URL; TLS uses the name in the Host header.

    The URL names the vetted IP, so urllib3 connects there without resolving anything.
    For https, SNI and certificate verification use `server_hostname`/`assert_hostname`,
    set here from the Host header; they are part of urllib3's pool key, so pools for
    different host names on one IP never share a connection.
    """

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        if host_params["scheme"] == "https":
            name = urlsplit("//" + request.headers["Host"]).hostname
            pool_kwargs["server_hostname"] = name
            pool_kwargs["assert_hostname"] = name
        return host_params, pool_kwargs


_local = threading.local()


def _session() -> requests.Session:
    """One session per thread: the process function fetches from several threads at once,
    and a Session's cookie jar and adapter bookkeeping are not meant to be shared."""
    session: requests.Session | None = getattr(_local, "session", None)
    if session is None:
        session = requests.Session()
        # No proxies or .netrc from the environment: the request goes to the vetted IP.
        session.trust_env = False
        # Each image is fetched statelessly; a cookie from one URL never reaches another.
        session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        session.headers["User-Agent"] = "retail-pulse-image-fetcher"
        # Images are already compressed; this also rules out gzip bombs.
        session.headers["Accept-Encoding"] = "identity"
        adapter = PinnedAddressAdapter()
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        _local.session = session
    return session


def _get(hop: _Hop, settings: Settings, deadline: float) -> requests.Response:
    """Send one GET and return the streamed response (headers read, body not yet)."""
    remaining = _remaining(deadline, hop.url, settings)
    timeout = (min(settings.connect_timeout_s, remaining), min(settings.read_timeout_s, remaining))
    try:
        return _session().get(
            hop.connect_url,
            headers={"Host": hop.host_header},
            stream=True,
            allow_redirects=False,
            timeout=timeout,
        )
    except requests.exceptions.SSLError as err:
        # A certificate that does not match or is not trusted will not fix itself.
        raise PermanentImageError(
            f"TLS failed for {hop.url}: {_root_cause(err)}", reason="download"
        ) from err
    except requests.exceptions.ConnectTimeout as err:
        raise TransientImageError(f"connect timed out for {hop.url}") from err
    except requests.exceptions.ReadTimeout as err:
        raise TransientImageError(f"no response in time from {hop.url}") from err
    except requests.RequestException as err:
        raise TransientImageError(f"could not connect for {hop.url}: {_root_cause(err)}") from err


def _remaining(deadline: float, url: str, settings: Settings) -> float:
    """Seconds left for this image; past the deadline, retrying later is the only hope."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TransientImageError(
            f"download of {url} took longer than {settings.image_deadline_s:g} s"
        )
    return remaining


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


def _read_body(response: requests.Response, url: str, settings: Settings, deadline: float) -> bytes:
    """The body, failing on the byte cap or the deadline, whichever comes first."""
    cap = settings.max_image_bytes
    too_large = f"image larger than {_format_bytes(cap)}: {url}"
    declared = response.headers.get("Content-Length", "").strip()
    if declared.isdigit() and int(declared) > cap:
        raise PermanentImageError(too_large, reason="too_large")

    body = bytearray()
    try:
        # read1 returns whatever has arrived, so a trickle still reaches the deadline check.
        while chunk := response.raw.read1(_CHUNK_BYTES, decode_content=True):
            body += chunk
            if len(body) > cap:
                raise PermanentImageError(too_large, reason="too_large")
            _remaining(deadline, url, settings)
    except urllib3.exceptions.ReadTimeoutError as err:
        raise TransientImageError(f"reading {url} timed out") from err
    except (urllib3.exceptions.HTTPError, OSError) as err:
        raise TransientImageError(f"reading {url} failed: {_root_cause(err)}") from err
    return bytes(body)


# --- Small helpers ---------------------------------------------------------------------


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date), or None."""
    if not value or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


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
    return str(current) or type(current).__name__
