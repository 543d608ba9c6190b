"""Name lookups for fetcher tests: answered from a dict, never by a real resolver."""

from __future__ import annotations

import ipaddress
import socket

import pytest


class FakeDns(dict[str, list[str]]):
    """Host names answered from this dict, IP literals passed through, every query noted."""

    def __init__(self) -> None:
        super().__init__()
        self.queries: list[str] = []

    def getaddrinfo(self, host: str, port: int, *args: object, **kwargs: object) -> list[tuple]:
        self.queries.append(host)
        try:
            ips = [str(ipaddress.ip_address(host))]
        except ValueError:
            if host not in self:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
            ips = self[host]
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (ip, port, 0, 0))
            if ":" in ip
            else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))
            for ip in ips
        ]


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> FakeDns:
    """Name lookups never reach a real resolver (or the internet)."""
    dns = FakeDns()
    monkeypatch.setattr(socket, "getaddrinfo", dns.getaddrinfo)
    return dns
