"""The supplier gateway driven by 闲管家's fake buyer: verification, goods, purchases, the
callback through the outbox, order/detail from the database, refund notices."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from sqlalchemy import func, select

from connectors.goofish import protocol as p
from robot import pipeline, report
from robot.clock import utcnow
from robot.schema import audit_log, deliveries, orders, outbox, stock
from robot.states import DeliveryState, OrderState
from robot.vault import mask
from tests.factories import ensure_pool, seed_codes
from tests.goofish.conftest import Xianyu


def _stock(x: Xianyu) -> int:
    with x.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(stock)).scalar_one())


def _order(x: Xianyu, order_no: str) -> dict[str, object]:
    with x.engine.connect() as conn:
        row = conn.execute(select(orders).where(orders.c.platform_order_id == order_no)).one()
    return dict(row._mapping)


def _hand_overs(x: Xianyu) -> list[dict[str, object]]:
    with x.engine.connect() as conn:
        return [json.loads(r.details) for r in conn.execute(
            select(audit_log.c.details).where(audit_log.c.action == "hand_over")
            .order_by(audit_log.c.at, audit_log.c.chain, audit_log.c.seq))]  # oldest first


def test_unsigned_stale_or_foreign_requests_are_refused_without_reading(xianyu: Xianyu) -> None:
    """Wrong sign → 401, stale timestamp → 408, wrong mch_id → 401; nothing is written."""
    x = xianyu
    seed_codes(x.engine, x.vault, "p1", 3)
    payload = x.buyer.purchase_payload("G1001")
    body = json.dumps(payload, separators=(",", ":")).encode()

    async def go() -> list[dict[str, object]]:
        answers = [await x.buyer.call(p.PURCHASE, payload, skew=-301),
                   await x.buyer.call(p.PURCHASE, payload, skew=301)]
        url = x.buyer.signed(p.PURCHASE, body)
        tampered = body.replace(b'"buy_quantity":1', b'"buy_quantity":2')
        answers.append((await x.buyer.http.post(url, content=tampered)).json())
        answers.append((await x.buyer.http.post(url.replace("mch_id=1001", "mch_id=1002"),
                                                content=body)).json())
        answers.append((await x.buyer.http.post(url.split("&sign=")[0], content=body)).json())
        return answers

    answers = x.run(go())
    assert [a["code"] for a in answers] == [408, 408, 401, 401, 401]
    assert all("data" not in a for a in answers)
    assert _stock(x) == 3
    with x.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(orders)).scalar_one() == 0


def test_open_info_user_info_and_goods_with_live_stock(xianyu: Xianyu) -> None:
    """open/info gives the app id as an integer; goods come from the mapping with the pools'
    live stock (a two-code bundle counts half) and prices in fen."""
    x = xianyu
    seed_codes(x.engine, x.vault, "p1", 5)

    async def go() -> tuple[dict[str, object], ...]:
        return (await x.buyer.call(p.OPEN_INFO), await x.buyer.call(p.USER_INFO),
                await x.buyer.call(p.GOODS_LIST, {"page_no": 1, "page_size": 50}),
                await x.buyer.call(p.GOODS_LIST, {"keyword": "会员", "goods_type": 2,
                                                  "page_no": 1, "page_size": 10}),
                await x.buyer.call(p.GOODS_DETAIL, {"goods_type": 2, "goods_no": "G2002"}),
                await x.buyer.call(p.GOODS_DETAIL, {"goods_type": 2, "goods_no": "NOPE"}),
                await x.buyer.call(p.GOODS_LIST, {"page_no": 1, "page_size": 101}))

    info, user, every, found, detail, missing, too_big = x.run(go())
    assert info["data"]["app_id"] == 677859093659717  # type: ignore[index]
    assert isinstance(user["data"]["balance"], int)  # type: ignore[index]
    listed = every["data"]  # type: ignore[index]
    assert listed["count"] == 2
    assert {(g["goods_no"], g["price"], g["stock"], g["goods_type"], g["status"])
            for g in listed["list"]} == {("G1001", 990, 5, 2, 1), ("G2002", 1800, 2, 2, 1)}
    assert [g["goods_no"] for g in found["data"]["list"]] == ["G1001"]  # type: ignore[index]
    assert detail["data"]["stock"] == 2  # type: ignore[index]
    assert missing["code"] == p.GOODS_NOT_FOUND
    assert too_big["code"] == p.BAD_ORDER


def test_purchase_with_stock_answers_the_codes_at_once_shipped_and_audited(
        xianyu: Xianyu) -> None:
    """Stock there: status 20 with the codes in card_items; the order is shipped, its codes
    delivered, the write-back settled, the hand-over audited — and detail says the same."""
    x = xianyu
    plain = seed_codes(x.engine, x.vault, "p1", 4)
    payload = x.buyer.purchase_payload("G1001", 2, max_amount=1980)

    async def go() -> tuple[dict[str, object], dict[str, object]]:
        return await x.buyer.call(p.PURCHASE, payload), await x.buyer.detail(payload["order_no"])

    answer, detail = x.run(go())
    assert answer["code"] == 0
    data = answer["data"]
    assert data["order_status"] == 20 and data["order_amount"] == 1980  # type: ignore[index]
    assert data["out_order_no"] == "RB" + payload["order_no"]  # type: ignore[index]
    cards = [c["card_pwd"] for c in data["card_items"]]  # type: ignore[index]
    assert len(cards) == 2 and set(cards) <= set(plain)
    assert detail["data"] == data  # type: ignore[comparison-overlap]
    row = _order(x, payload["order_no"])
    assert row["state"] == OrderState.SHIPPED
    with x.engine.connect() as conn:
        assert {r.state for r in conn.execute(select(deliveries.c.state))} \
            == {DeliveryState.DELIVERED}
        assert [r.state for r in conn.execute(select(outbox.c.state))] == ["done"]
        actions = [r.action for r in conn.execute(select(audit_log.c.action))]
        details = " ".join(str(r.details) for r in conn.execute(select(audit_log.c.details)))
        seen = {r.seen_at is not None for r in conn.execute(select(deliveries.c.seen_at))}
    assert "hand_over" in actions and "supply_read" in actions
    assert not any(card in details for card in cards)
    # The same hand-over as a ship job's: codes marked seen, audited with the codes masked.
    assert seen == {True}
    assert _hand_overs(x) == [{"shop": "xianyu", "answer": True,
                               "codes": [mask(c) for c in cards]}]
    sales = {r.key: r for r in report.build(x.engine, since=utcnow() - timedelta(hours=1),
                                            by="shop").rows}
    assert (sales["xianyu"].shipped, sales["xianyu"].units,
            sales["xianyu"].revenue_cents) == (1, 2, 1980)


def test_price_above_max_amount_is_refused_and_unknown_goods_too(xianyu: Xianyu) -> None:
    """max_amount below our total → 1202, unknown goods → 1100, bad fields → 1201; nothing
    is taken from stock."""
    x = xianyu
    seed_codes(x.engine, x.vault, "p1", 3)

    async def go() -> list[dict[str, object]]:
        bad = x.buyer.purchase_payload("G1001")
        bad["buy_quantity"] = "1"  # 强校验: an integer, never a string
        return [await x.buyer.purchase("G1001", 2, max_amount=1979),
                await x.buyer.purchase("NOPE", 1),
                await x.buyer.call(p.PURCHASE, bad)]

    assert [a["code"] for a in x.run(go())] == [p.PRICE_ABOVE_MAX, p.GOODS_NOT_FOUND,
                                                 p.BAD_ORDER]
    assert _stock(x) == 3


def test_a_top_up_of_card_goods_is_refused(xianyu: Xianyu) -> None:
    """recharge/create is verified and parsed, then refused for card goods (1201)."""
    x = xianyu
    payload = x.buyer.purchase_payload("G1001")
    payload["biz_content"] = {"account": "13800138000"}
    answer = x.run(x.buyer.call(p.RECHARGE, payload))
    assert answer["code"] == p.BAD_ORDER
    assert "不支持" in str(answer["msg"])


def test_no_stock_answers_processing_then_the_callback_carries_the_codes(
        xianyu: Xianyu) -> None:
    """Without stock: 处理中 (10). Codes arrive, the allocator reserves them, the outbox posts
    the signed callback (retried past two failures) and 闲管家's re-query matches it."""
    x = xianyu
    ensure_pool(x.engine, "p1")
    payload = x.buyer.purchase_payload("G1001")
    first = x.run(x.buyer.call(p.PURCHASE, payload))
    assert first["data"]["order_status"] == 10  # type: ignore[index]
    assert "card_items" not in first["data"]  # type: ignore[operator]
    assert _order(x, payload["order_no"])["state"] == OrderState.WAITING_STOCK

    plain = seed_codes(x.engine, x.vault, "p1", 1)
    pipeline.wake_waiting(x.engine)
    assert pipeline.allocate_next(x.engine) is not None
    x.notify.fail_next = 2
    dispatcher = x.dispatcher(backoff_initial=0.001, backoff_max=0.001)

    async def deliver() -> bool:
        for _ in range(3):
            await dispatcher.run_once(now=_later())
        return await x.buyer.verify_callbacks(payload["order_no"])

    assert x.run(deliver())
    got = x.notify.received(payload["order_no"])
    assert len(got) == 1
    assert got[0]["order_status"] == 20 and got[0]["card_items"] == [{"card_pwd": plain[0]}]
    assert x.notify.refused == ["injected failure", "injected failure"]
    assert _order(x, payload["order_no"])["state"] == OrderState.SHIPPED
    # Each callback attempt is a hand-over of the outbox, audited before it is made.
    assert _hand_overs(x) == [{"shop": "xianyu", "attempt": n, "codes": [mask(plain[0])]}
                              for n in (1, 2, 3)]


def _later() -> datetime:
    return utcnow() + timedelta(hours=1)


def test_refund_notice_flags_delivered_codes_for_review(xianyu: Xianyu) -> None:
    """A refund after the codes were handed over: acknowledged as the standard wants, the
    order refunded, its codes stay delivered-but-flagged (review), the notice audited."""
    x = xianyu
    seed_codes(x.engine, x.vault, "p1", 2)
    payload = x.buyer.purchase_payload("G1001")

    async def go() -> tuple[dict[str, object], dict[str, object]]:
        await x.buyer.call(p.PURCHASE, payload)
        return (await x.buyer.refund(payload["order_no"], 990),
                await x.buyer.refund("1234567890123456789"))

    ack, unknown = x.run(go())
    assert ack == {"result": "success", "msg": "接收成功"} == unknown
    assert _order(x, payload["order_no"])["state"] == OrderState.REFUNDED
    with x.engine.connect() as conn:
        assert {r.state for r in conn.execute(select(deliveries.c.state))} \
            == {DeliveryState.REVIEW}
        actions = [r.action for r in conn.execute(select(audit_log.c.action))]
    assert "supply_refund_notice" in actions and "refund" in actions
    assert _stock(x) == 1


def test_refund_application_cancels_what_was_not_served(xianyu: Xianyu) -> None:
    """订单退款申请: always agreed; an order still waiting for stock is cancelled first (so
    no code goes out later); a served one stays shipped until the refund notice; an unknown
    order is 1200."""
    x = xianyu
    ensure_pool(x.engine, "p1")
    waiting = x.buyer.purchase_payload("G1001")

    def apply(order_no: str) -> dict[str, object]:
        return x.run(x.buyer.call("goofish/order/refund/apply", {
            "order_no": order_no, "order_type": 2, "refund_type": 1, "refund_amount": 990,
            "refund_reason": "买家不想要了", "refund_scene": "buyer_refund",
            "apply_time": 1781104505, "notify_url": "https://open.goofish.pro/r/1"}))

    x.run(x.buyer.call(p.PURCHASE, waiting))
    answer = apply(waiting["order_no"])
    assert answer["code"] == 0
    assert answer["data"]["result"] == "agree"  # type: ignore[index]
    assert _order(x, waiting["order_no"])["state"] == OrderState.CANCELLED

    seed_codes(x.engine, x.vault, "p1", 1)
    served = x.buyer.purchase_payload("G1001")
    x.run(x.buyer.call(p.PURCHASE, served))
    assert apply(served["order_no"])["data"]["result"] == "agree"  # type: ignore[index]
    assert _order(x, served["order_no"])["state"] == OrderState.SHIPPED
    assert apply("1234567890123456789")["code"] == p.ORDER_NOT_FOUND
