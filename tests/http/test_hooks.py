"""Push intake: verified pushes become orders exactly once; anything else writes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from connectors.base import PushBatch, PushEvent
from connectors.memory import TEST_PUSH_SECRET, MemoryConnector, order_to_json, sign_push
from robot.schema import orders, push_seen
from robot.vault import Vault
from tests.factories import paid_order, seed_codes
from tests.http.conftest import Http, make_http, snapshot


def signed(body: bytes) -> dict[str, str]:
    return {"X-Memory-Sign": sign_push(TEST_PUSH_SECRET, body), "Content-Type": "application/json"}


def message(order_id: str, message_id: str = "m-1") -> bytes:
    return json.dumps({"message_id": message_id,
                       "order": order_to_json(paid_order(order_id, ("s1", 1)))}).encode()


def order_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(orders)).scalar_one())


def test_good_push_creates_the_order_and_wakes_the_allocator(http: Http) -> None:
    """A correctly signed push is committed as an order before the platform's reply."""
    body = message("P1")
    response = http.client.post("/hooks/mem", content=body, headers=signed(body))
    assert response.status_code == 200
    assert response.content == b'{"ok":true}'
    with http.engine.connect() as conn:
        row = conn.execute(select(orders.c.platform_order_id, orders.c.state)).one()
        seen = conn.execute(select(push_seen.c.shop, push_seen.c.message_id)).all()
    assert tuple(row) == ("P1", "received")
    assert [tuple(s) for s in seen] == [("mem", "m-1")]
    assert http.woken


def test_forged_push_is_401_and_writes_nothing(http: Http) -> None:
    """A bad signature is refused with 401 and no table changes at all."""
    before = snapshot(http.engine)
    body = message("P2")
    for headers in ({"X-Memory-Sign": "0" * 64}, {}, signed(b"another body")):
        response = http.client.post("/hooks/mem", content=body, headers=headers)
        assert response.status_code == 401
    assert snapshot(http.engine) == before
    assert not http.woken


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


def test_oversized_push_is_413(http: Http) -> None:
    """Bodies over 1 MiB are refused, declared or streamed without a length."""
    big = b"x" * (1024 * 1024 + 1)
    response = http.client.post("/hooks/mem", content=big, headers=signed(big))
    assert response.status_code == 413

    def chunks() -> Iterator[bytes]:
        for _ in range(17):
            yield b"y" * 65536

    response = http.client.post("/hooks/mem", content=chunks(), headers={"X-Memory-Sign": "x"})
    assert response.status_code == 413
    assert order_count(http.engine) == 0


def test_unknown_shop_is_404(http: Http) -> None:
    """Pushes for a shop that is not configured are 404."""
    body = message("P4")
    assert http.client.post("/hooks/nope", content=body, headers=signed(body)).status_code == 404
    assert order_count(http.engine) == 0


def test_signed_invalid_json_is_400(http: Http) -> None:
    """A verified body that is not a message is a 400, never a 500."""
    for body in (b"{not json", b"[]", b'{"message_id": 1}', b"\xff\xfe"):
        response = http.client.post("/hooks/mem", content=body, headers=signed(body))
        assert response.status_code == 400, body
    assert order_count(http.engine) == 0


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


def test_shop_without_push_is_404(engine: Engine, vault: Vault) -> None:
    """A connector that takes no pushes has no webhook."""

    class NoPush(MemoryConnector):
        receives_push = False

    h = make_http(engine, vault)
    h.ctx.connectors = {"mem": NoPush(h.platform)}  # type: ignore[misc]
    body = message("N1")
    with h.client:
        assert h.client.post("/hooks/mem", content=body, headers=signed(body)).status_code == 404


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=4),
    max_leaves=12,
)
bodies = (st.binary(max_size=512)
          | json_values.map(lambda v: json.dumps(v).encode())
          | st.fixed_dictionaries({"message_id": json_values, "order": json_values})
          .map(lambda v: json.dumps(v).encode()))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, sign=st.booleans())
def test_random_bodies_never_500_nor_write(http: Http, body: bytes, sign: bool) -> None:
    """Whatever arrives, signed or not: 400/401 and nothing written, never a 5xx."""
    before = snapshot(http.engine)
    headers = signed(body) if sign else {"X-Memory-Sign": "f" * 64}
    response = http.client.post("/hooks/mem", content=body, headers=headers)
    assert response.status_code in (400, 401)
    assert snapshot(http.engine) == before
