"""The delivery API: codes for the merchant's backend, per-shop bearer token, audited."""

from __future__ import annotations

from sqlalchemy import Engine, select

from robot import pipeline
from robot.schema import audit_log, deliveries
from robot.vault import Vault
from tests.factories import paid_order, seed_codes
from tests.http.conftest import API_TOKEN, Http, make_http, shop_config

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
    assert response.json() == {"error": "not_ready", "state": "received"}


def test_shop_without_token_has_no_api(engine: Engine, vault: Vault) -> None:
    """No ``delivery_api_token`` in the shop file: the API is 404 for that shop."""
    seed_codes(engine, vault, "p1", 1)
    h = make_http(engine, vault, shop=shop_config(api_token=None))
    h.order("D4")
    with h.client:
        assert h.client.get(URL.format("D4"), headers=AUTH).status_code == 404
        assert h.client.get("/api/v1/shops/other/orders/D4/delivery",
                            headers=AUTH).status_code == 404
