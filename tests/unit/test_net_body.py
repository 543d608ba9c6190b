"""What a download tells its caller to hold for its body, the name lookup inside its deadline,
and addresses refused from their bits whatever Python's version says.

Hosts are raw sockets on 127.0.0.1 driven by the test through events; names are answered by
a patched getaddrinfo. No wait here is a timer: a deadline is the code under test's own.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from retail_pulse.imaging.download import fetch
from retail_pulse.imaging.errors import PermanentImageError, TransientImageError
from retail_pulse.net import addresses
from retail_pulse.net.body import HOLD_STEP_BYTES
from retail_pulse.settings import Settings, get_settings
from tests.support.fake_dns import FakeDns
from tests.support.image_server import make_image

WAIT_S = 30  # only ever reached when something is broken
MIB = 1024 * 1024


def settings_for(*host_ports: str, **changes: object) -> Settings:
    return get_settings().model_copy(
        update={"allowed_private_hosts": frozenset(host_ports), **changes}
    )


class HeldHost:
    """One raw-socket host on 127.0.0.1 that answers one request when told: `asked` is set
    once the request's head has arrived; after `answer` it sends `head` and then the body,
    in `pieces`, each after the test sets the piece's event."""

    def __init__(self, head: bytes, pieces: list[bytes]) -> None:
        self.head, self.pieces = head, pieces
        self.asked, self.answer = threading.Event(), threading.Event()
        self.may_send = [threading.Event() for _ in pieces]
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.host_port = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            self.asked.set()
            if not self.answer.wait(WAIT_S):
                return
            conn.sendall(self.head)
            for piece, may_send in zip(self.pieces, self.may_send, strict=True):
                if not may_send.wait(WAIT_S):
                    return
                conn.sendall(piece)

    def close(self) -> None:
        self.answer.set()
        for event in self.may_send:
            event.set()
        self.thread.join(WAIT_S)
        self.sock.close()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool


def test_a_body_without_a_length_is_held_as_it_grows_and_nothing_before_the_host_answers(
    pool: ThreadPoolExecutor,
) -> None:
    image = make_image(64, 48, "png")
    # 2.5 MiB in all: the image, then padding Pillow never reads; sent in three pieces.
    body = image + b"\0" * (int(2.5 * MIB) - len(image))
    pieces = [body[: MIB // 2], body[MIB // 2 : 2 * MIB], body[2 * MIB :]]
    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close\r\n\r\n"
    host = HeldHost(head, pieces)
    totals: list[int] = []  # what the body asked to hold, in turn
    grows_to: set[int | None] = set()

    def hold(total: int, timeout_s: float, *, up_to: int | None = None) -> None:
        totals.append(total)
        grows_to.add(up_to)

    try:
        fetched = pool.submit(
            fetch, f"http://{host.host_port}/a.png", settings_for(host.host_port), hold=hold
        )
        assert host.asked.wait(WAIT_S)
        assert totals == []  # asked, not answered: it holds nothing
        host.answer.set()
        for may_send in host.may_send:
            may_send.set()
        data = fetched.result(WAIT_S).data
    finally:
        host.close()

    assert bytes(data) == body
    # Held in steps as it grows, never more than the body needs plus one step, and never the
    # whole cap up front.
    assert totals == sorted(totals) and len(totals) == len(set(totals))
    assert len(body) <= totals[-1] < len(body) + HOLD_STEP_BYTES
    assert totals[0] <= HOLD_STEP_BYTES < get_settings().max_image_bytes
    assert len(totals) >= 3
    assert grows_to == {get_settings().max_image_bytes}  # what it may grow to: the cap


def test_a_declared_length_is_held_once_before_the_body_is_read(pool: ThreadPoolExecutor) -> None:
    image = make_image(64, 48, "png")
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n"
        + f"Content-Length: {len(image)}\r\nConnection: close\r\n\r\n".encode()
    )
    host = HeldHost(head, [image])
    holds: list[tuple[int, int | None]] = []

    def hold(total: int, timeout_s: float, *, up_to: int | None = None) -> None:
        holds.append((total, up_to))

    try:
        fetched = pool.submit(
            fetch, f"http://{host.host_port}/a.png", settings_for(host.host_port), hold=hold
        )
        host.answer.set()
        host.may_send[0].set()
        assert bytes(fetched.result(WAIT_S).data) == image
    finally:
        host.close()
    assert holds == [(len(image), None)]  # its size, and it will not grow


def test_a_name_that_is_never_answered_fails_on_the_download_deadline(
    fake_dns: FakeDns, monkeypatch: pytest.MonkeyPatch, pool: ThreadPoolExecutor
) -> None:
    """getaddrinfo cannot be interrupted: a client's silent name server must not hold the
    image's thread past its deadline (before, the lookup was outside it, for good)."""
    never = threading.Event()
    looking_up = threading.Event()
    answer_names = fake_dns.getaddrinfo

    def silent(host: str, port: int, *args: object, **kwargs: object) -> list[tuple]:
        if host == "silent.example":
            looking_up.set()
            never.wait(WAIT_S)
        return answer_names(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", silent)
    url = "http://silent.example/a.jpg"
    try:
        attempt = pool.submit(fetch, url, settings_for(image_deadline_s=0.5))
        with pytest.raises(TransientImageError) as caught:
            attempt.result(WAIT_S)
        assert looking_up.is_set()
    finally:
        never.set()
    assert str(caught.value) == f"did not finish within 0.5 s for {url}"


# Addresses Python 3.11's tables call global (3.12.4 and later agree they are not, or they are
# anycast services no image lives on): refused from the address bits on every version.
NOT_IMAGE_HOSTS = {
    "192.0.0.8": "an IETF protocol assignment (192.0.0.0/24)",
    "192.0.0.9": "an IETF protocol assignment (192.0.0.0/24)",
    "192.0.0.170": "an IETF protocol assignment (192.0.0.0/24)",
    "198.18.0.1": "a benchmarking address (198.18.0.0/15)",
    "2001:2::1": "an IETF protocol assignment (2001::/23)",
    "3fff::1": "a documentation address (3fff::/20)",
    "5f00::1": "a segment routing address (5f00::/16)",
}


@pytest.mark.parametrize("address", sorted(NOT_IMAGE_HOSTS))
def test_special_purpose_addresses_are_refused_whatever_pythons_tables_say(address: str) -> None:
    assert addresses.blocked_because(ipaddress.ip_address(address)) == NOT_IMAGE_HOSTS[address]
    literal = f"[{address}]" if ":" in address else address
    with pytest.raises(PermanentImageError) as caught:
        fetch(f"http://{literal}/a.jpg", settings_for())
    assert str(caught.value) == f"refused: {address} is {NOT_IMAGE_HOSTS[address]}"
    assert caught.value.reason == "refused"


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass_the_guard(address: str) -> None:
    assert addresses.blocked_because(ipaddress.ip_address(address)) is None
