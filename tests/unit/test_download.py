"""fetch: what it refuses, how it classifies trouble, and that limits hold.

Everything is served on 127.0.0.1 by servers started here or by the `image_server`
fixture; host names other than localhost are answered by a patched getaddrinfo.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from local_stack.loopback import LoopbackServer
from retail_pulse.imaging.download import fetch
from retail_pulse.imaging.errors import PermanentImageError, TransientImageError
from retail_pulse.imaging.measure import measure_image
from retail_pulse.net import addresses, body, deadline, guard, transport
from retail_pulse.settings import Settings, get_settings
from tests.support.fake_dns import FakeDns
from tests.support.image_server import ImageServer, make_image

# --- Local servers ----------------------------------------------------------------------


class Listener:
    """A listening socket nobody serves: it only shows whether anyone connected."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/photo.jpg"

    def connections(self) -> int:
        """Connections completed so far (the kernel queues them even if nobody accepts)."""
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1


@pytest.fixture
def listener() -> Iterator[Listener]:
    listener = Listener()
    yield listener
    listener.sock.close()


class ScriptedHandler(BaseHTTPRequestHandler):
    """Misbehaving-server routes the shared image server does not have."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.server.seen_hosts.append(self.headers.get("Host"))  # type: ignore[attr-defined]
        try:
            route = getattr(self, "route_" + parts.path.strip("/").split("/")[0])
        except AttributeError:
            self._send(404, b"no such route")
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            route(parts.path, query)  # a client giving up mid-body is what some tests want

    def _send(self, code: int, body: bytes, **headers: str) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def route_retry(self, path: str, query: dict[str, str]) -> None:
        self._send(int(query["code"]), b"busy", Retry_After=query["after"])

    def route_hop(self, path: str, query: dict[str, str]) -> None:
        hops_left = int(path.rsplit("/", 1)[1])
        if hops_left == 0:
            self._send(200, make_image(550, 404, "jpg"), Content_Type="image/jpeg")
        else:
            self._send(302, b"", Location=f"/hop/{hops_left - 1}")  # relative on purpose

    def route_redirect(self, path: str, query: dict[str, str]) -> None:
        self._send(int(query.get("code", "302")), b"", Location=query["to"])

    def route_endless(self, path: str, query: dict[str, str]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Connection", "close")
        self.end_headers()
        chunk = b"\xff" * 65536
        for _ in range(10_000):  # 640 MB: far past any cap used here
            self.wfile.write(chunk)

    def route_declared(self, path: str, query: dict[str, str]) -> None:
        self.send_response(200)
        self.send_header("Content-Length", query["length"])
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"\xff" * 1024)

    def route_trickle(self, path: str, query: dict[str, str]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Connection", "close")
        self.end_headers()
        for _ in range(200):  # one byte every 50 ms, about 10 s in all
            self.wfile.write(b"\xff")
            self.wfile.flush()
            time.sleep(0.05)

    def route_hang(self, path: str, query: dict[str, str]) -> None:
        time.sleep(float(query.get("s", "3")))
        self._send(200, b"too late")


class ScriptedServer:
    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.httpd = LoopbackServer(("127.0.0.1", 0), ScriptedHandler)
        self.httpd.seen_hosts = []  # type: ignore[attr-defined]
        if ssl_context is not None:
            self.httpd.socket = ssl_context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.host_port = f"127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://{self.host_port}{path}"

    @property
    def seen_hosts(self) -> list[str | None]:
        return self.httpd.seen_hosts  # type: ignore[attr-defined]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    server.stop()


def settings_for(*host_ports: str, **changes: object) -> Settings:
    """Settings with exactly these host:port pairs exempt from the address vetting."""
    return get_settings().model_copy(
        update={"allowed_private_hosts": frozenset(host_ports), **changes}
    )


# --- Success ----------------------------------------------------------------------------


def test_fetches_an_allow_listed_local_image(image_server: ImageServer) -> None:
    data = fetch(image_server.url("/img/550x404.jpg")).data
    assert measure_image(data).perimeter == 1908


def test_host_header_names_the_host_as_written(scripted: ScriptedServer, fake_dns: FakeDns) -> None:
    fake_dns["images.test"] = ["127.0.0.1"]
    url = f"http://images.test:{scripted.port}/hop/0"
    assert fetch(url, settings_for(f"images.test:{scripted.port}")).url == url
    assert scripted.seen_hosts[-1] == f"images.test:{scripted.port}"
    # The name was resolved once, when vetted; the connection used the vetted IP.
    assert fake_dns.queries.count("images.test") == 1


def test_fetching_from_many_threads_at_once(image_server: ImageServer) -> None:
    """The process function fetches from about ten threads; each has its own session."""
    sizes = [(20 + i, 30 + i) for i in range(30)]
    urls = [image_server.url(f"/img/{w}x{h}.png") for w, h in sizes]
    with ThreadPoolExecutor(max_workers=10) as pool:
        perimeters = list(pool.map(lambda url: measure_image(fetch(url).data).perimeter, urls))
    assert perimeters == [2 * (w + h) for w, h in sizes]


def test_three_redirects_are_followed(scripted: ScriptedServer) -> None:
    fetched = fetch(scripted.url("/hop/3"), settings_for(scripted.host_port))
    assert fetched.url == scripted.url("/hop/0")
    assert measure_image(fetched.data).perimeter == 1908


# --- HTTP status classification ---------------------------------------------------------


def test_http_404_is_permanent_and_names_the_url(image_server: ImageServer) -> None:
    url = image_server.url("/status/404")
    with pytest.raises(PermanentImageError) as caught:
        fetch(url)
    assert str(caught.value) == f"HTTP 404 for {url}"
    assert caught.value.reason == "download"
    assert not caught.value.transient


def test_http_503_is_transient(image_server: ImageServer) -> None:
    url = image_server.url("/status/503")
    with pytest.raises(TransientImageError) as caught:
        fetch(url)
    assert str(caught.value) == f"HTTP 503 for {url}"
    assert caught.value.transient
    assert caught.value.retry_after_s is None


@pytest.mark.parametrize("code", [429, 503])
def test_retry_after_seconds_are_parsed(scripted: ScriptedServer, code: int) -> None:
    with pytest.raises(TransientImageError) as caught:
        fetch(scripted.url(f"/retry?code={code}&after=7"), settings_for(scripted.host_port))
    assert caught.value.retry_after_s == 7.0
    assert caught.value.reason == "download"


def test_retry_after_http_date_is_parsed(scripted: ScriptedServer) -> None:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120)
    after = format_datetime(when, usegmt=True).replace(" ", "%20").replace(",", "%2C")
    with pytest.raises(TransientImageError) as caught:
        fetch(scripted.url(f"/retry?code=429&after={after}"), settings_for(scripted.host_port))
    assert caught.value.retry_after_s is not None
    assert 100 <= caught.value.retry_after_s <= 121


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("", None), ("0", 0.0), (" 30 ", 30.0), ("soon", None), ("-5", None)],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert body.parse_retry_after(header) == expected


def test_retry_after_date_in_the_past_means_now() -> None:
    assert body.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


# --- Connection trouble -----------------------------------------------------------------


def test_connection_refused_is_transient() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    # Nothing listens on `port` now.
    url = f"http://127.0.0.1:{port}/a.jpg"
    with pytest.raises(TransientImageError, match="refused") as caught:
        fetch(url, settings_for(f"127.0.0.1:{port}"))
    assert url in str(caught.value)


def test_read_timeout_is_transient(scripted: ScriptedServer) -> None:
    url = scripted.url("/hang?s=3")
    with pytest.raises(TransientImageError) as caught:
        fetch(url, settings_for(scripted.host_port, read_timeout_s=0.2))
    assert url in str(caught.value)


# --- Limits -----------------------------------------------------------------------------


def test_declared_content_length_over_the_cap_fails_before_reading(
    scripted: ScriptedServer,
) -> None:
    url = scripted.url(f"/declared?length={21 * 1024 * 1024}")
    with pytest.raises(PermanentImageError) as caught:
        fetch(url, settings_for(scripted.host_port, max_image_bytes=20 * 1024 * 1024))
    assert str(caught.value) == f"image larger than 20 MB: {url}"
    assert caught.value.reason == "too_large"


def test_streamed_body_without_length_fails_on_the_cap(scripted: ScriptedServer) -> None:
    url = scripted.url("/endless")
    with pytest.raises(PermanentImageError) as caught:
        fetch(url, settings_for(scripted.host_port, max_image_bytes=1024 * 1024))
    assert str(caught.value) == f"image larger than 1 MB: {url}"
    assert caught.value.reason == "too_large"


def test_trickling_body_fails_on_the_deadline(scripted: ScriptedServer) -> None:
    url = scripted.url("/trickle")
    settings = settings_for(scripted.host_port, image_deadline_s=0.5, read_timeout_s=2.0)
    started = time.monotonic()
    with pytest.raises(TransientImageError) as caught:
        fetch(url, settings)
    assert str(caught.value) == f"did not finish within 0.5 s for {url}"
    # Each byte arrives well inside the read timeout: only the deadline can stop it.
    assert time.monotonic() - started < 5


# --- Refused addresses ------------------------------------------------------------------

NO_EXCEPTIONS = settings_for()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1/a.jpg", "refused: 127.0.0.1 is a loopback address"),
        ("http://10.1.2.3/a.jpg", "refused: 10.1.2.3 is a private address"),
        ("http://172.16.0.1/a.jpg", "refused: 172.16.0.1 is a private address"),
        ("http://192.168.1.1/a.jpg", "refused: 192.168.1.1 is a private address"),
        (
            "http://169.254.169.254/latest/meta-data/",
            "refused: 169.254.169.254 is a link-local address",
        ),
        ("http://100.64.0.1/a.jpg", "refused: 100.64.0.1 is in the shared address space"),
        ("http://0.0.0.0/a.jpg", "refused: 0.0.0.0 is an unspecified address"),
        ("http://224.0.0.1/a.jpg", "refused: 224.0.0.1 is a multicast address"),
        ("http://240.0.0.1/a.jpg", "refused: 240.0.0.1 is a reserved address"),
        ("http://[::1]/a.jpg", "refused: ::1 is a loopback address"),
        ("http://[::ffff:127.0.0.1]/a.jpg", "refused: ::ffff:127.0.0.1 is a loopback address"),
        ("http://[fc00::1]/a.jpg", "refused: fc00::1 is a unique local address"),
        ("http://[fe80::1]/a.jpg", "refused: fe80::1 is a link-local address"),
        ("https://[::]/a.jpg", "refused: :: is an unspecified address"),
        # Not an IP literal to Python, but getaddrinfo reads it as one; as a host name, what
        # it resolves to is not echoed.
        ("http://2130706433/a.jpg", "refused: 2130706433 resolves to a loopback address"),
    ],
)
def test_non_public_addresses_are_refused(url: str, message: str) -> None:
    with pytest.raises(PermanentImageError) as caught:
        fetch(url, NO_EXCEPTIONS)
    assert str(caught.value).startswith(message)
    assert caught.value.reason == "refused"
    assert not caught.value.transient


@pytest.mark.parametrize("url", ["ftp://example.com/a.jpg", "file:///etc/passwd", "a.jpg"])
def test_other_schemes_are_refused(url: str) -> None:
    with pytest.raises(PermanentImageError, match="only http and https") as caught:
        fetch(url, NO_EXCEPTIONS)
    assert caught.value.reason == "refused"


def test_refused_address_gets_no_connection(listener: Listener) -> None:
    with pytest.raises(PermanentImageError, match="loopback"):
        fetch(listener.url, NO_EXCEPTIONS)
    assert listener.connections() == 0


def test_listener_counts_connections(listener: Listener) -> None:
    """The check above means something: a real connection is counted."""
    socket.create_connection(("127.0.0.1", listener.port)).close()
    time.sleep(0.05)
    assert listener.connections() == 1


def test_host_name_resolving_to_loopback_is_refused(listener: Listener) -> None:
    with pytest.raises(PermanentImageError) as caught:
        fetch(f"http://localhost:{listener.port}/a.jpg", NO_EXCEPTIONS)
    assert str(caught.value).startswith("refused: localhost resolves to ")
    assert "a loopback address" in str(caught.value)
    assert listener.connections() == 0


def test_any_private_answer_refuses_the_host(fake_dns: FakeDns) -> None:
    fake_dns["mixed.test"] = ["93.184.216.34", "10.0.0.5"]
    with pytest.raises(PermanentImageError) as caught:
        fetch("http://mixed.test/a.jpg", NO_EXCEPTIONS)
    # The private address itself is not told: the error must not map our network.
    assert str(caught.value) == "refused: mixed.test resolves to a private address"


def test_allow_list_exempts_exactly_one_host_and_port(
    image_server: ImageServer, listener: Listener
) -> None:
    settings = settings_for(image_server.host_port)
    assert fetch(image_server.url("/img/10x10.png"), settings).data
    with pytest.raises(PermanentImageError, match="loopback"):
        fetch(listener.url, settings)  # same host, another port
    with pytest.raises(PermanentImageError, match="localhost resolves to"):
        fetch(f"http://localhost:{image_server.port}/img/10x10.png", settings)
    assert listener.connections() == 0


def test_redirect_to_a_refused_address_is_refused(
    scripted: ScriptedServer, listener: Listener
) -> None:
    url = scripted.url(f"/redirect?to={listener.url}")
    with pytest.raises(PermanentImageError, match=r"refused: 127\.0\.0\.1 is a loopback") as caught:
        fetch(url, settings_for(scripted.host_port))
    assert caught.value.reason == "refused"
    assert listener.connections() == 0


@pytest.mark.parametrize(
    "target",
    ["http://169.254.169.254/latest/meta-data/", "file:///etc/passwd", "ftp://example.com/a"],
)
def test_redirect_hops_are_vetted_like_the_first(scripted: ScriptedServer, target: str) -> None:
    with pytest.raises(PermanentImageError, match=r"^refused: ") as caught:
        fetch(scripted.url(f"/redirect?code=301&to={target}"), settings_for(scripted.host_port))
    assert caught.value.reason == "refused"


def test_more_than_three_redirects_are_refused(scripted: ScriptedServer) -> None:
    url = scripted.url("/hop/4")
    with pytest.raises(PermanentImageError) as caught:
        fetch(url, settings_for(scripted.host_port))
    assert str(caught.value) == f"more than 3 redirects from {url}"


# --- Pinning the vetted address while TLS keeps the host name ---------------------------


def _vet(url: str) -> guard.Hop:
    """A hop vetted as an attempt vets it (its name lookup within the attempt's deadline)."""
    return guard.vet(url, NO_EXCEPTIONS.allowed_private_hosts, deadline.Attempt(url, 10))


def test_https_hop_connects_to_the_vetted_ip_with_the_hosts_tls_name(
    fake_dns: FakeDns,
) -> None:
    fake_dns["images.example.com"] = ["93.184.216.34"]
    hop = _vet("https://images.example.com/a/b.jpg?size=l")
    assert hop.connect_url == "https://93.184.216.34:443/a/b.jpg?size=l"
    assert hop.host_header == "images.example.com"

    session = transport.session()
    request = session.prepare_request(
        requests.Request("GET", hop.connect_url, headers={"Host": hop.host_header})
    )
    adapter = session.get_adapter(hop.connect_url)
    assert isinstance(adapter, transport.PinnedAddressAdapter)
    pool = adapter.get_connection_with_tls_context(request, verify=True)
    connection = pool._new_conn()  # built, not connected: no network is touched
    assert (connection.host, connection.port) == ("93.184.216.34", 443)
    assert connection.server_hostname == "images.example.com"
    assert connection.assert_hostname == "images.example.com"
    assert pool.cert_reqs == "CERT_REQUIRED"  # certificates are still verified


def test_non_default_port_and_ipv6_answer(fake_dns: FakeDns) -> None:
    fake_dns["v6.example.com"] = ["2606:2800:220:1:248:1893:25c8:1946"]
    hop = _vet("https://v6.example.com:8443/x.png")
    assert hop.connect_url == "https://[2606:2800:220:1:248:1893:25c8:1946]:8443/x.png"
    assert hop.host_header == "v6.example.com:8443"


def test_ipv4_answer_is_preferred(fake_dns: FakeDns) -> None:
    fake_dns["dual.example.com"] = ["2606:2800:220:1:248:1893:25c8:1946", "93.184.216.34"]
    hop = _vet("http://dual.example.com/x.png")
    assert hop.connect_url == "http://93.184.216.34:80/x.png"


def test_user_info_is_not_forwarded(fake_dns: FakeDns) -> None:
    fake_dns["images.example.com"] = ["93.184.216.34"]
    hop = _vet("http://user:secret@images.example.com/a.jpg#top")
    assert hop.connect_url == "http://93.184.216.34:80/a.jpg"


def test_unknown_host_is_permanent(fake_dns: FakeDns) -> None:
    with pytest.raises(PermanentImageError, match=r"host nowhere\.test not found"):
        fetch("http://nowhere.test/a.jpg", NO_EXCEPTIONS)


# --- Real TLS on loopback: SNI and certificate checks use the URL's host name ------------


def _self_signed(tmp_path: Path, name: str) -> tuple[Path, Path]:
    pytest.importorskip("cryptography")  # installed with moto; only these TLS tests need it
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[ScriptedServer, Path, list[str | None]]]:
    cert_path, key_path = _self_signed(tmp_path, "images.test")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    sni: list[str | None] = []
    context.sni_callback = lambda _sock, name, _ctx: sni.append(name)  # type: ignore[assignment,return-value]
    server = ScriptedServer(context)
    yield server, cert_path, sni
    server.stop()


@pytest.fixture
def trust(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], None]:
    """Trust a test CA in this thread's session only, for the length of one test."""

    def use(ca_path: Path) -> None:
        monkeypatch.setattr(transport.session(), "verify", str(ca_path))

    return use


def test_tls_to_the_pinned_ip_sends_sni_and_verifies_the_host_name(
    tls_server: tuple[ScriptedServer, Path, list[str | None]],
    fake_dns: FakeDns,
    trust: Callable[[Path], None],
) -> None:
    server, ca_path, sni = tls_server
    trust(ca_path)
    fake_dns["images.test"] = ["127.0.0.1"]
    url = f"https://images.test:{server.port}/hop/0"
    data = fetch(url, settings_for(f"images.test:{server.port}")).data
    assert measure_image(data).perimeter == 1908
    assert sni == ["images.test"]
    assert server.seen_hosts[-1] == f"images.test:{server.port}"


def test_tls_certificate_for_another_name_fails_permanently(
    tls_server: tuple[ScriptedServer, Path, list[str | None]],
    fake_dns: FakeDns,
    trust: Callable[[Path], None],
) -> None:
    server, ca_path, _ = tls_server
    trust(ca_path)
    fake_dns["impostor.test"] = ["127.0.0.1"]
    url = f"https://impostor.test:{server.port}/hop/0"
    with pytest.raises(PermanentImageError, match=f"TLS failed for {url}") as caught:
        fetch(url, settings_for(f"impostor.test:{server.port}"))
    assert caught.value.reason == "download"


def test_address_classifier_examples() -> None:
    """The classifier's answers for one example of each class, in one place."""
    examples = {
        "127.0.0.1": "a loopback address",
        "10.0.0.1": "a private address",
        "169.254.169.254": "a link-local address",
        "100.64.0.1": "in the shared address space 100.64.0.0/10",
        "::ffff:10.0.0.1": "a private address",
        "fd12:3456::1": "a unique local address (fc00::/7)",
        "93.184.216.34": None,
        "2606:2800:220:1:248:1893:25c8:1946": None,
    }
    for address, why in examples.items():
        assert addresses.blocked_because(ipaddress.ip_address(address)) == why, address
