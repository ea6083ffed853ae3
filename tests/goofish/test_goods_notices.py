"""Goods-change subscriptions (自动调价): kept per token, listed, cancelled; a change of stock
is sent as the signed goods callback until 闲管家 acknowledges it, and only once."""

from __future__ import annotations

from datetime import timedelta

from connectors.goofish import protocol as p
from robot import supply
from robot.clock import utcnow
from robot.schema import supply_subscriptions
from tests.factories import seed_codes
from tests.goofish.conftest import Xianyu


def _sweep(x: Xianyu) -> int:
    return x.run(supply.notify_goods_changes(x.engine, x.vault, {x.shop.name: x.shop},
                                             {x.shop.name: x.connector}))


def test_subscribe_list_and_unsubscribe(xianyu: Xianyu) -> None:
    """A subscription is listed with its token and address; unknown goods → 1100; after
    unsubscribing the list is empty; open/info says goods notices are supported."""
    x = xianyu

    async def go() -> tuple[dict[str, object], ...]:
        info = await x.buyer.call(p.OPEN_INFO)
        ok = await x.buyer.subscribe("G1001")
        again = await x.buyer.subscribe("G1001")
        missing = await x.buyer.subscribe("NOPE")
        listed = await x.buyer.call(p.SUBSCRIBE_LIST, {"goods_type": "", "goods_no": "",
                                                       "page_no": 1, "page_size": 100})
        token = listed["data"]["list"][0]["token"]  # type: ignore[index]
        gone = await x.buyer.call(p.UNSUBSCRIBE, {"goods_type": 2, "goods_no": "G1001",
                                                  "token": token})
        after = await x.buyer.call(p.SUBSCRIBE_LIST, {"page_no": 1, "page_size": 100})
        return info, ok, again, missing, listed, gone, after

    info, ok, again, missing, listed, gone, after = x.run(go())
    assert info["data"]["features"]["is_support_goods_notify"] is True  # type: ignore[index]
    assert ok["code"] == again["code"] == gone["code"] == 0
    assert missing["code"] == p.GOODS_NOT_FOUND
    assert listed["data"]["count"] == 2  # type: ignore[index]
    first = listed["data"]["list"][0]  # type: ignore[index]
    assert first["goods_no"] == "G1001" and first["goods_type"] == 2
    assert first["notify_url"].endswith(first["token"])
    assert after["data"]["count"] == 1  # type: ignore[index]


def test_stock_changes_are_sent_until_acknowledged_and_only_once(xianyu: Xianyu) -> None:
    """First sweep sends the current stock; nothing changed → nothing sent; a sale changes
    the stock → sent; a refused notice is kept due and sent again later."""
    x = xianyu
    seed_codes(x.engine, x.vault, "p1", 4)
    x.run(x.buyer.subscribe("G1001"))
    assert _sweep(x) == 1
    assert [(n["goods_no"], n["stock"], n["price"], n["status"]) for n in x.notify.goods_notices] \
        == [("G1001", 4, 990, 1)]
    assert _sweep(x) == 0

    x.run(x.buyer.purchase("G1001", 1))
    original = x.notify.check
    x.notify.check = lambda *a: "down for maintenance"  # type: ignore[method-assign]
    assert _sweep(x) == 0
    x.notify.check = original  # type: ignore[method-assign]
    assert _sweep(x) == 0  # not due yet: retried after GOODS_NOTICE_RETRY
    with x.engine.begin() as conn:
        conn.execute(supply_subscriptions.update().values(due_at=utcnow() - timedelta(1)))
    assert _sweep(x) == 1
    assert [n["stock"] for n in x.notify.goods_notices] == [4, 3]
