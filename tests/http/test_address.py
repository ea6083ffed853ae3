"""Who the client is: X-Forwarded-For believed only from trusted proxies, IPv6 by /64."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
from types import SimpleNamespace

import httpx
from sqlalchemy import Engine, select
from starlette.requests import Request

from robot.http.address import client_address, client_of, network_of, parse_ip, parse_networks
from robot.http.app import build_app
from robot.http.links import derive_key
from robot.http.ratelimit import Bucket, RateLimits
from robot.http.server import HttpServer
from robot.schema import pickup_views
from robot.vault import Vault
from tests.factories import seed_codes
from tests.http.conftest import TestClient, make_http
from tests.http.test_pickup import link_for

TRUSTED = parse_networks(["10.0.0.0/8", "2001:db8:ffff::/48"])


def request(peer: str, *forwarded: str, proxies: tuple[str, ...] = ()) -> Request:
    app = SimpleNamespace(state=SimpleNamespace(
        ctx=SimpleNamespace(trusted_proxies=parse_networks(proxies))))
    return Request({"type": "http", "client": (peer, 40000), "app": app,
                    "headers": [(b"x-forwarded-for", f.encode()) for f in forwarded]})


def test_forged_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    """With no trusted proxies (the default), or from a peer that is not one, the TCP peer
    is the client whatever X-Forwarded-For says."""
    assert client_of(request("198.51.100.7", "1.2.3.4")).address == "198.51.100.7"
    assert client_of(request("198.51.100.7", "1.2.3.4", proxies=("10.0.0.0/8",))).address \
        == "198.51.100.7"
    assert client_of(request("127.0.0.1", "1.2.3.4")).address == "127.0.0.1"


def test_the_chain_is_walked_from_the_right_past_trusted_proxies_only() -> None:
    """Behind trusted proxies the first untrusted address from the right is the client; what
    the client wrote further left is never believed."""
    r = request("10.0.0.2", "6.6.6.6, 198.51.100.7", "10.0.0.1")
    assert client_address(r, TRUSTED) == parse_ip("198.51.100.7")
    # every hop a trusted proxy: the leftmost is as far as anyone can see
    assert client_address(request("10.0.0.2", "10.0.0.9, 10.0.0.1"), TRUSTED) \
        == parse_ip("10.0.0.9")
    # garbage written next to a proxy: nothing further left is believed
    assert client_address(request("10.0.0.2", "6.6.6.6, not-an-ip"), TRUSTED) \
        == parse_ip("10.0.0.2")
    # ports and brackets as some proxies write them
    assert client_address(request("10.0.0.2", "[2001:db8::5]:443"), TRUSTED) \
        == parse_ip("2001:db8::5")
    assert client_address(request("10.0.0.2", "198.51.100.7:5555"), TRUSTED) \
        == parse_ip("198.51.100.7")
    # no header from a trusted proxy: the proxy itself
    assert client_address(request("10.0.0.2"), TRUSTED) == parse_ip("10.0.0.2")


def test_ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() -> None:
    """Every address of one /64 is one client for rate limits; ::ffff:a.b.c.d is a.b.c.d."""
    a = client_of(request("2001:db8:1:2::1"))
    b = client_of(request("2001:db8:1:2:ffff:ffff:ffff:fffe"))
    c = client_of(request("2001:db8:1:3::1"))
    assert a.network == b.network == "2001:db8:1:2::/64" != c.network
    assert a.address != b.address  # the view log keeps the address itself (hashed)
    mapped = client_of(request("::ffff:198.51.100.7"))
    assert (mapped.address, mapped.network) == ("198.51.100.7", "198.51.100.7")
    assert network_of(parse_ip("fe80::1%eth0")) == "fe80::/64"  # type: ignore[arg-type]


def test_a_64_gets_one_pickup_bucket_not_one_per_address(engine: Engine, vault: Vault) -> None:
    """Pickup requests from many addresses of one IPv6 /64 spend one per-IP budget."""
    seed_codes(engine, vault, "p1", 1)
    h = make_http(engine, vault, limits=RateLimits(per_ip=Bucket(3, 0.0001),
                                                   per_order=Bucket(1000, 1000)))
    statuses = []
    for i in range(1, 6):
        with TestClient(h.client.app, base_url=h.client.base_url,
                        client=(f"2001:db8:7:7::{i:x}", 4000)) as client:
            statuses.append(client.get(f"/p/{'A' * 31}{i}").status_code)
    assert statuses == [404, 404, 404, 429, 429]
    with TestClient(h.client.app, base_url=h.client.base_url,
                    client=("2001:db8:7:8::1", 4000)) as other:
        assert other.get("/p/" + "B" * 32).status_code == 404  # the next /64 is someone else


def _served_view_hash(engine: Engine, vault: Vault, proxies: tuple[str, ...]) -> str:
    """The hashed IP the real server logs for a page view from 127.0.0.1 that claims to be
    forwarded for 203.0.113.50."""
    seed_codes(engine, vault, "p1", 1)
    h = make_http(engine, vault, trusted_proxies=parse_networks(proxies))
    token = link_for(h, h.order("X1"), ttl=None)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = HttpServer(build_app(h.ctx), sock)

    async def scenario() -> int:
        stop = asyncio.Event()
        serving = asyncio.create_task(server.serve(stop))
        while not server.started:
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            response = await client.get(f"/p/{token}",
                                        headers={"X-Forwarded-For": "203.0.113.50"})
        stop.set()
        await serving
        return response.status_code

    assert asyncio.run(scenario()) == 200
    with engine.connect() as conn:
        return str(conn.execute(select(pickup_views.c.ip_hash)).scalar_one())


def _hash(vault: Vault, ip: str) -> str:
    """The view log's hash of ``ip`` (robot.http.pickup.ip_hash)."""
    return hmac.new(derive_key(vault, "ip-hash"), ip.encode(), hashlib.sha256).hexdigest()


def test_the_server_believes_forwarded_for_only_from_trusted_proxies(
        engine: Engine, vault: Vault) -> None:
    """Through uvicorn: a loopback peer's X-Forwarded-For is ignored unless loopback is
    named in http.trusted_proxies (uvicorn's own default trusted loopback silently)."""
    assert _served_view_hash(engine, vault, ()) == _hash(vault, "127.0.0.1")


def test_the_server_takes_the_client_from_a_trusted_proxy(engine: Engine, vault: Vault) -> None:
    """Through uvicorn, with 127.0.0.1 a trusted proxy: the forwarded address is the client."""
    assert _served_view_hash(engine, vault, ("127.0.0.1/32",)) == _hash(vault, "203.0.113.50")
