"""Risk rules hold 闲管家 orders like any other: 处理中 until a person decides; released, the
codes go out in the callback; rejected, order/detail says 30. No code reaches a log."""

from __future__ import annotations

from datetime import timedelta

import httpx
from structlog.testing import capture_logs

from connectors.goofish import GoofishConnector
from connectors.goofish.fake import make_app
from robot import orders, pipeline, supply
from robot.clock import utcnow
from robot.config import RiskRules
from robot.http.app import build_app
from robot.http.context import HttpContext
from robot.schema import supply_callbacks
from tests.factories import seed_codes
from tests.goofish.conftest import GATEWAY, Xianyu


def _with_risk(x: Xianyu) -> Xianyu:
    """The same robot, its shop holding orders of more than one unit for a person."""
    shop = x.shop.model_copy(update={"risk": RiskRules(max_quantity=1)})
    x.shop = shop
    x.connector = GoofishConnector(shop.platform_config,  # type: ignore[arg-type]
                                   transport=httpx.ASGITransport(make_app(x.notify)))
    ctx = HttpContext(engine=x.engine, vault=x.vault, shops={shop.name: shop},
                      connectors={shop.name: x.connector})
    x.buyer.http = httpx.AsyncClient(transport=httpx.ASGITransport(build_app(ctx)))
    x.buyer.gateway_url = GATEWAY
    return x


def _order_id(x: Xianyu, order_no: str) -> int:
    found = [o for o in orders.list_orders(x.engine, shop=x.shop.name)
             if o["platform_order_id"] == order_no]
    return int(found[0]["id"])


def test_held_order_is_processing_then_released_and_called_back(xianyu: Xianyu) -> None:
    """Held by a risk rule: 10 and no code taken; released, the callback carries the codes
    and 闲管家's re-query agrees; the shop shows up in robot status like any other."""
    x = _with_risk(xianyu)
    plain = seed_codes(x.engine, x.vault, "p1", 3)
    payload = x.buyer.purchase_payload("G1001", 2)
    with capture_logs() as logs:
        first = x.run(x.buyer.call("goofish/order/purchase/create", payload))
        assert first["data"]["order_status"] == 10  # type: ignore[index]
        oid = _order_id(x, payload["order_no"])
        assert orders.release(x.engine, oid, actor="tester") == "received"
        assert pipeline.allocate_next(x.engine) is not None

        async def deliver() -> bool:
            await x.dispatcher().run_once(now=utcnow() + timedelta(seconds=1))
            return await x.buyer.verify_callbacks(payload["order_no"])

        assert x.run(deliver())
    sent = x.notify.received(payload["order_no"])[0]["card_items"]
    assert {c["card_pwd"] for c in sent} <= set(plain) and len(sent) == 2
    assert not any(code in str(entry) for entry in logs for code in plain)
    shops = {s.shop: s.states for s in orders.status(x.engine, [x.shop.name]).shops}
    assert shops[x.shop.name] == {"shipped": 1}


def test_rejected_order_answers_failed(xianyu: Xianyu) -> None:
    """A person rejects the held order: order/detail answers 30 with the reason as remark,
    and no code was taken."""
    x = _with_risk(xianyu)
    seed_codes(x.engine, x.vault, "p1", 3)
    payload = x.buyer.purchase_payload("G1001", 2)
    x.run(x.buyer.call("goofish/order/purchase/create", payload))
    orders.reject(x.engine, _order_id(x, payload["order_no"]), actor="tester",
                  reason="buyer on the watch list")
    detail = x.run(x.buyer.detail(payload["order_no"]))
    assert detail["data"]["order_status"] == 30  # type: ignore[index]
    assert detail["data"]["remark"] == "buyer on the watch list"  # type: ignore[index]
    assert "card_items" not in detail["data"]  # type: ignore[operator]


def test_rejected_order_is_called_back_failed_once(xianyu: Xianyu) -> None:
    """The sweep posts the signed callback with 状态 30 and the reason; once acknowledged it
    is not sent again (audited); a refused one is retried after the pause."""
    x = _with_risk(xianyu)
    seed_codes(x.engine, x.vault, "p1", 3)
    payload = x.buyer.purchase_payload("G1001", 2)
    x.run(x.buyer.call("goofish/order/purchase/create", payload))
    orders.reject(x.engine, _order_id(x, payload["order_no"]), actor="tester",
                  reason="buyer on the watch list")
    connectors = {x.shop.name: x.connector}
    x.notify.fail_next = 1
    assert x.run(supply.notify_failures(x.engine, connectors)) == 0
    assert x.run(supply.notify_failures(x.engine, connectors)) == 0  # not due yet
    with x.engine.begin() as conn:
        conn.execute(supply_callbacks.update().values(due_at=utcnow() - timedelta(1)))
    assert x.run(supply.notify_failures(x.engine, connectors)) == 1
    assert x.run(supply.notify_failures(x.engine, connectors)) == 0
    got = x.notify.received(payload["order_no"])
    assert [(c["order_status"], c["remark"], "card_items" in c) for c in got] == [
        (30, "buyer on the watch list", False)]
    assert x.run(x.buyer.verify_callbacks(payload["order_no"]))
