"""Push intake: verified pushes become orders exactly once; anything else writes nothing."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import Engine, func, select

from connectors.base import PushBatch, PushEvent
from connectors.memory import TEST_PUSH_SECRET, MemoryConnector, order_to_json, sign_push
from robot.schema import deliveries, orders, push_seen
from robot.vault import Vault
from tests.factories import paid_order, seed_codes
from tests.http.conftest import Http, make_http


def signed(body: bytes) -> dict[str, str]:
    return {"X-Memory-Sign": sign_push(TEST_PUSH_SECRET, body), "Content-Type": "application/json"}


def message(order_id: str, message_id: str = "m-1") -> bytes:
    return json.dumps({"message_id": message_id,
                       "order": order_to_json(paid_order(order_id, ("s1", 1)))}).encode()


def order_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(orders)).scalar_one())


def test_good_push_creates_the_order_and_wakes_the_allocator(http: Http) -> None:
    """A correctly signed push is committed as an order, with its codes claimed in the same
    transaction, before the platform's reply."""
    body = message("P1")
    response = http.client.post("/hooks/mem", content=body, headers=signed(body))
    assert response.status_code == 200
    assert response.content == b'{"ok":true}'
    with http.engine.connect() as conn:
        row = conn.execute(select(orders.c.platform_order_id, orders.c.state)).one()
        seen = conn.execute(select(push_seen.c.shop, push_seen.c.message_id)).all()
    assert tuple(row) == ("P1", "allocated")
    assert [tuple(s) for s in seen] == [("mem", "m-1")]
    with http.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(deliveries)).scalar_one() == 1
    assert http.woken


def test_replayed_push_makes_one_order(http: Http) -> None:
    """The same message twice, or the same order under a new message id, is one order."""
    body = message("P3", "m-3")
    for _ in range(3):
        assert http.client.post("/hooks/mem", content=body, headers=signed(body)).status_code == 200
    again = message("P3", "m-3-bis")
    assert http.client.post("/hooks/mem", content=again, headers=signed(again)).status_code == 200
    assert order_count(http.engine) == 1
    with http.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(push_seen)).scalar_one() == 2


class ThinConnector(MemoryConnector):
    """Pushes that carry only the order id (the core must fetch the order)."""

    def parse_push(self, headers: Mapping[str, str], body: bytes, now: datetime) -> PushBatch:
        batch = super().parse_push(headers, body, now)
        return PushBatch(events=tuple(PushEvent(e.kind, e.platform_order_id, e.message_id)
                                      for e in batch.events), reply_body=b"success",
                         reply_content_type="text/plain")


def test_thin_push_fetches_the_order_and_platform_failure_is_503(engine: Engine,
                                                                 vault: Vault) -> None:
    """A thin message is completed from the platform; if that fails, 503 and no order."""
    seed_codes(engine, vault, "p1", 2)
    h = make_http(engine, vault)
    h.ctx.connectors = {"mem": ThinConnector(h.platform)}  # type: ignore[misc]
    h.platform.put_order(paid_order("T1", ("s1", 1)))
    body = message("T1", "thin-1")
    h.platform.inject("fetch", "unavailable")
    with h.client:
        assert h.client.post("/hooks/mem", content=body, headers=signed(body)).status_code == 503
        assert order_count(engine) == 0
        response = h.client.post("/hooks/mem", content=body, headers=signed(body))
    assert response.status_code == 200
    assert response.text == "success"
    assert order_count(engine) == 1
