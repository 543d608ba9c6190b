"""Which addresses are on the public internet, decided from the address bits.

IPv6 forms that carry an IPv4 address (IPv4-mapped, IPv4-compatible, 6to4, NAT64, Teredo)
are unwrapped and the IPv4 inside is vetted too, whatever Python's own address tables say.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

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


def is_ip(host: str) -> bool:
    """A literal address is named in a refusal (it is the client's own text); for a host
    name only the kind of address it resolved to is told."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def blocked_because(address: IpAddress) -> str | None:
    """Why an address is not on the public internet, or None when it is."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in _IPV4_MAPPED:  # ::ffff:127.0.0.1 is 127.0.0.1
            return blocked_because(ipaddress.IPv4Address(int(address) & _IPV4_LOW_32))
        if transition := _transition_form(address):
            form, inner = transition
            for ipv4 in inner:
                if why := blocked_because(ipv4):
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
