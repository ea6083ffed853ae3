"""Who is asking: the one place that turns a request into its client's address.

The address is the TCP peer, unless the peer is one of the reverse proxies named in
``http.trusted_proxies``: then ``X-Forwarded-For`` is walked from the right, skipping
addresses of trusted proxies, and the first address that is not a trusted proxy is the
client. Anything left of it was written by the client itself and is never believed; an
``X-Forwarded-For`` from an untrusted peer is ignored whole. With no trusted proxies (the
default) the peer is the client, whatever the headers say.

Rate limits key on :attr:`Client.network`: IPv6 addresses grouped by their /64 (one
customer line gets a /64 or more, so single addresses are free to mint) and IPv4-mapped
IPv6 addresses taken as the IPv4 address they are.

The pickup page, the lookup form, the delivery API and the view log all get the address
from :func:`client_of`. This module must never log an address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from starlette.requests import Request

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

IPV6_GROUP = 64  # prefix length that counts as one client for rate limits
MAX_HOPS = 32  # X-Forwarded-For entries looked at (a longer chain is someone's invention)
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Client:
    """A client's address (for the view log) and the network its rate limits count on."""

    address: str
    network: str


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Networks from CIDR strings (a bare address is a /32 or /128); ValueError if bad."""
    return tuple(ipaddress.ip_network(v, strict=True) for v in values)


def parse_ip(text: str) -> IPAddress | None:
    """An address as a proxy writes it (``203.0.113.7``, ``2001:db8::1``, ``[2001:db8::1]``,
    ``[2001:db8::1]:443``, ``203.0.113.7:443``), IPv4-mapped IPv6 unwrapped; None if not one."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.partition(":")[0]
    text = text.partition("%")[0]  # an IPv6 zone (fe80::1%eth0) names no other client
    if not text or len(text) > 45:
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _trusted(ip: IPAddress, proxies: Sequence[IPNetwork]) -> bool:
    return any(ip.version == net.version and ip in net for net in proxies)


def _forwarded(request: Request) -> list[str]:
    """The X-Forwarded-For entries, every header line joined, in order (nearest last)."""
    entries = [e for line in request.headers.getlist("x-forwarded-for")
               for e in line.split(",")]
    return entries[-MAX_HOPS:]


def client_address(request: Request, proxies: Sequence[IPNetwork]) -> IPAddress | None:
    """The client's address as described above; None when the peer is no IP (a unix socket,
    a test client)."""
    peer = parse_ip(request.client.host) if request.client else None
    if peer is None or not _trusted(peer, proxies):
        return peer
    client = peer
    for entry in reversed(_forwarded(request)):
        ip = parse_ip(entry)
        if ip is None:
            # A trusted proxy wrote something that is no address: believe nothing further
            # left, and count the request against the nearest proxy known.
            return client
        client = ip
        if not _trusted(ip, proxies):
            return ip
    return client  # every hop was a trusted proxy: the leftmost is as far as we can see


def network_of(ip: IPAddress) -> str:
    """The rate-limit key of an address: itself for IPv4, its /64 for IPv6."""
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, IPV6_GROUP), strict=False))
    return str(ip)


def client_of(request: Request) -> Client:
    """The request's client, with the trusted proxies of the app's context."""
    proxies: Sequence[IPNetwork] = getattr(request.app.state.ctx, "trusted_proxies", ())
    ip = client_address(request, proxies)
    if ip is None:
        host = request.client.host if request.client else UNKNOWN
        return Client(host, host)
    return Client(str(ip), network_of(ip))
