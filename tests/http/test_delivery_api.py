"""The delivery API: codes for the merchant's backend, per-shop bearer token, audited."""

from __future__ import annotations

import hmac

import httpx
import pytest
from sqlalchemy import Engine, select
from structlog.testing import capture_logs

from robot import pipeline
from robot.http import delivery
from robot.http.ratelimit import Bucket, RateLimits
from robot.schema import audit_log, deliveries
from robot.vault import Vault
from tests.factories import paid_order, seed_codes
from tests.http.conftest import API_TOKEN, Http, TestClient, make_http, shop_config

URL = "/api/v1/shops/mem/orders/{}/delivery"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def test_right_token_gets_the_codes_audited_and_seen(http: Http) -> None:
    """With the shop's token: the plaintext codes, one audit entry, codes marked seen."""
    oid = http.order("D1", quantity=2)
    response = http.client.get(URL.format("D1"), headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert body["state"] == "allocated"
    assert len(body["codes"]) == 2
    assert all(c["card_no"].endswith("-ZZ") and c["password"] is None for c in body["codes"])
    assert response.headers["cache-control"] == "no-store"
    with http.engine.connect() as conn:
        assert all(r.seen_at is not None for r in conn.execute(
            select(deliveries.c.seen_at).where(deliveries.c.order_id == oid)))
        entries = conn.execute(select(audit_log.c.action, audit_log.c.subject, audit_log.c.details)
                               .where(audit_log.c.action == "delivery_api_read")).all()
    assert [(e.action, e.subject) for e in entries] == [("delivery_api_read", f"order:{oid}")]
    assert body["codes"][0]["card_no"] not in entries[0].details


def test_wrong_or_missing_token_is_401_without_detail(http: Http) -> None:
    """Bad credentials: 401, a bare body, nothing read or marked."""
    oid = http.order("D2")
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": API_TOKEN},
                    {"Authorization": f"Basic {API_TOKEN}"}):
        response = http.client.get(URL.format("D2"), headers=headers)
        assert response.status_code == 401
        assert response.json() == {"error": "unauthorized"}
    with http.engine.connect() as conn:
        assert all(r.seen_at is None for r in conn.execute(
            select(deliveries.c.seen_at).where(deliveries.c.order_id == oid)))


def test_unknown_orders_and_pending_orders(http: Http) -> None:
    """Unknown order → 404; an order not yet allocated → 409 with its state."""
    assert http.client.get(URL.format("NOPE"), headers=AUTH).status_code == 404
    pipeline.intake(http.engine, http.shop, paid_order("D3", ("s1", 1)))
    response = http.client.get(URL.format("D3"), headers=AUTH)
    assert response.status_code == 409
    assert response.json() == {"error": "not_ready", "state": "received", "topups": []}


def test_shop_without_token_has_no_api(engine: Engine, vault: Vault) -> None:
    """No ``delivery_api_token`` in the shop file: no token opens the API for that shop
    (401, as for a shop that does not exist)."""
    seed_codes(engine, vault, "p1", 1)
    h = make_http(engine, vault, shop=shop_config(api_token=None))
    h.order("D4")
    with h.client:
        assert h.client.get(URL.format("D4"), headers=AUTH).status_code == 401
        assert h.client.get("/api/v1/shops/other/orders/D4/delivery",
                            headers=AUTH).status_code == 401


def _peer(h: Http, ip: str) -> TestClient:
    """A client of the same app from another address."""
    return TestClient(h.client.app, base_url=h.client.base_url, client=(ip, 4000))


def _answer(response: httpx.Response) -> tuple[int, bytes, tuple[tuple[str, str], ...]]:
    return response.status_code, response.content, tuple(sorted(response.headers.items()))


def test_unknown_shop_shop_without_api_and_wrong_token_answer_alike(
        engine: Engine, vault: Vault) -> None:
    """Status, body and headers are identical for a shop that does not exist, a shop without
    a token and a wrong token, so the API does not tell which shops have one."""
    seed_codes(engine, vault, "p1", 1)
    h = make_http(engine, vault)
    h.ctx.shops = {"mem": h.shop, "noapi": shop_config("noapi", api_token=None)}  # type: ignore[misc]
    h.order("D5")
    wrong = {"Authorization": "Bearer " + "w" * 43}
    with h.client:
        answers = {_answer(h.client.get(f"/api/v1/shops/{shop}/orders/D5/delivery", headers=hd))
                   for shop, hd in (("mem", wrong), ("noapi", wrong), ("nosuchshop", wrong),
                                    ("noapi", AUTH), ("nosuchshop", AUTH), ("mem", {}))}
    assert len(answers) == 1
    status, body, _ = answers.pop()
    assert (status, body) == (401, b'{"error":"unauthorized"}')


def test_failed_tokens_are_limited_per_client_without_locking_out_others(
        engine: Engine, vault: Vault) -> None:
    """A client guessing tokens gets 429 after its failures run out (even with the right
    token); the merchant's backend elsewhere still gets its codes."""
    seed_codes(engine, vault, "p1", 1)
    h = make_http(engine, vault, limits=RateLimits(
        per_ip=Bucket(1000, 1000), per_order=Bucket(1000, 1000),
        api_failures_per_client=Bucket(5, 0.0001), api_failures_per_shop=Bucket(1000, 0.0001)))
    h.order("D6")
    wrong = {"Authorization": "Bearer " + "w" * 43}
    with _peer(h, "2001:db8:66::1") as attacker, _peer(h, "198.51.100.20") as backend:
        statuses = [attacker.get(URL.format("D6"), headers=wrong).status_code for _ in range(8)]
        assert statuses == [401] * 5 + [429] * 3
        refused = attacker.get(URL.format("D6"), headers=AUTH)
        assert (refused.status_code, refused.headers["retry-after"]) == (429, "60")
        with _peer(h, "2001:db8:66::beef") as same_64:  # a new address in the same /64
            assert same_64.get(URL.format("D6"), headers=wrong).status_code == 429
        assert backend.get(URL.format("D6"), headers=AUTH).status_code == 200


def test_a_shop_under_attack_still_serves_the_right_token(engine: Engine, vault: Vault) -> None:
    """Wrong tokens for one shop from many clients run out the shop's failures (429), and
    a shop name that does not exist does the same; the right token is still served."""
    seed_codes(engine, vault, "p1", 1)
    h = make_http(engine, vault, limits=RateLimits(
        per_ip=Bucket(1000, 1000), per_order=Bucket(1000, 1000),
        api_failures_per_client=Bucket(2, 0.0001), api_failures_per_shop=Bucket(6, 0.0001)))
    h.order("D7")
    wrong = {"Authorization": "Bearer " + "w" * 43}
    with capture_logs() as logs:
        for shop in ("mem", "ghost"):
            statuses = []
            for i in range(8):
                with _peer(h, f"203.0.113.{i + 1}") as c:
                    statuses.append(c.get(f"/api/v1/shops/{shop}/orders/D7/delivery",
                                          headers=wrong).status_code)
            assert statuses == [401] * 6 + [429] * 2, shop
    assert [e.get("shop") for e in logs if e["event"] == "delivery_api_failures_limited"] \
        == ["mem", None]
    with _peer(h, "203.0.113.200") as merchant:
        assert merchant.get(URL.format("D7"), headers=AUTH).status_code == 200


def test_tokens_are_compared_as_digests_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison is hmac.compare_digest over two SHA-256 digests (equal lengths), also
    when the shop has no token."""
    seen: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(delivery.hmac, "compare_digest", spy)
    assert delivery.authorized(f"Bearer {API_TOKEN}", API_TOKEN)
    assert not delivery.authorized("Bearer short", API_TOKEN)
    assert not delivery.authorized(f"Bearer {API_TOKEN}", None)
    assert not delivery.authorized(f"Basic {API_TOKEN}", API_TOKEN)
    assert seen == [(32, 32)] * 4
