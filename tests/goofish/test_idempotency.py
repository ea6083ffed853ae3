"""Idempotency on 闲管家's order number: repeated and concurrent purchases answer one order
with the same codes and take stock once (on every database the environment provides)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from connectors.gateway import Purchase, PurchaseState, PurchaseView
from robot.schema import deliveries, orders, stock
from robot.supply import ShopSupply
from tests.factories import ensure_pool, seed_codes
from tests.goofish.conftest import Xianyu

COPIES = 8


def _counts(x: Xianyu) -> tuple[int, int, int]:
    with x.engine.connect() as conn:
        return tuple(int(conn.execute(select(func.count()).select_from(t)).scalar_one())
                     for t in (orders, deliveries, stock))  # type: ignore[return-value]


def test_concurrent_copies_through_the_gateway_answer_one_order(xianyu: Xianyu) -> None:
    """Eight copies of one purchase at once: every answer is success with the same order
    number and the same codes; one order, two codes taken, the rest still in stock."""
    x = xianyu
    seed_codes(x.engine, x.vault, "p1", 5)
    payload = x.buyer.purchase_payload("G1001", 2)
    answers = x.run(x.buyer.concurrent_purchases(payload, COPIES))
    assert {a["code"] for a in answers} == {0}
    datas = [a["data"] for a in answers]
    assert len({d["out_order_no"] for d in datas}) == 1
    assert len({tuple(c["card_pwd"] for c in d["card_items"]) for d in datas}) == 1
    assert _counts(x) == (1, 2, 3)


def test_repeat_after_a_lost_answer_gets_the_same_codes(xianyu: Xianyu) -> None:
    """闲管家 timed out on the first answer and asks again: the same codes, nothing more taken;
    a repeat with another quantity or a lower max_amount still answers the original order."""
    x = xianyu
    seed_codes(x.engine, x.vault, "p1", 4)
    payload = x.buyer.purchase_payload("G1001", 1)

    async def go() -> list[dict[str, object]]:
        await x.buyer.timed_out_purchase(payload, 30.0)
        again = await x.buyer.call("goofish/order/purchase/create", payload)
        changed = {**payload, "buy_quantity": 3, "max_amount": 1}
        return [again, await x.buyer.call("goofish/order/purchase/create", changed)]

    again, changed = x.run(go())
    assert again["data"] == changed["data"]  # type: ignore[comparison-overlap]
    assert len(again["data"]["card_items"]) == 1  # type: ignore[index]
    assert _counts(x) == (1, 1, 3)


def test_processing_order_repeated_stays_one_order(xianyu: Xianyu) -> None:
    """No stock: every copy answers 处理中 with the same out_order_no; one order waits."""
    x = xianyu
    ensure_pool(x.engine, "p1")
    payload = x.buyer.purchase_payload("G1001")
    answers = x.run(x.buyer.concurrent_purchases(payload, 4))
    assert {a["data"]["order_status"] for a in answers} == {10}  # type: ignore[index]
    assert len({a["data"]["out_order_no"] for a in answers}) == 1  # type: ignore[index]
    assert _counts(x)[0] == 1


def test_threads_racing_one_order_number_take_stock_once(xianyu: Xianyu) -> None:
    """Eight threads, each with its own event loop and connection, released together on one
    order number: one order, its codes claimed once, every thread sees the same codes."""
    x = xianyu
    seed_codes(x.engine, x.vault, "p1", 6)
    supply = ShopSupply(x.engine, x.vault, x.shop)
    purchase = Purchase(platform_order_id="1900000000000000001", goods_no="G1001", quantity=3,
                        max_total_cents=3000, extra={"notify_url": "https://x.test/n/1"})
    gate = threading.Barrier(COPIES)

    def one(_: int) -> PurchaseView:
        gate.wait(timeout=30)
        return asyncio.run(supply.purchase(purchase))

    with ThreadPoolExecutor(COPIES) as pool:
        views = list(pool.map(one, range(COPIES)))
    assert {v.state for v in views} == {PurchaseState.SUCCEEDED}
    assert len({tuple(c.number.reveal() for c in v.codes) for v in views}) == 1
    assert len(views[0].codes) == 3
    assert _counts(x) == (1, 3, 3)
