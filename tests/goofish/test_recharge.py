"""Top-up goods (直充) through 闲管家: the account comes from 闲管家's request, the top-up is
bought from the merchant's suppliers (the in-memory supplier here; Fulu over loopback HTTP in
the last test), 处理中 until the supplier's result is committed, then the signed callback with
20 or 30; one 闲管家 order number is one order and one purchase at the supplier, however
often and however concurrently it is sent (on every database the environment provides)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select

from connectors.fulu import FuluSupplierFactory
from connectors.goofish import protocol as p
from connectors.goofish.fake import make_app
from connectors.memsupplier import MemorySupplier, MemorySupplierBackend
from connectors.supplier import Supplier
from robot import orders as order_ops
from robot import pipeline, risk, supply
from robot.clock import utcnow
from robot.config import SkuMapping
from robot.schema import audit_log, orders, outbox, supplier_attempts, supply_callbacks
from robot.sourcing import Sourcer, SourcingPolicy
from robot.states import OrderState
from robot.vault import Vault
from tests.goofish.conftest import Xianyu, goofish_shop, make_xianyu

MOBILE = "13800138000"


def recharge_goods(goods_no: str, product: str, max_cost: str, price: str,
                   account: dict[str, Any] | None = None) -> SkuMapping:
    entry: dict[str, Any] = {
        "goods_no": goods_no, "goods_type": "recharge", "goods_name": f"直充 {goods_no}",
        "price": price, "suppliers": [{"supplier": "memsup", "product": product,
                                       "max_cost": max_cost}]}
    if account is not None:
        entry["account"] = account
    return SkuMapping.model_validate(entry)


TOPUP = recharge_goods("T3003", "topup-mobile-50", "49.90", "49.95")
GAME = recharge_goods("T4004", "topup-game-60", "58.00", "59.00",
                      account={"format": "regex", "pattern": r"[A-Za-z0-9_]{4,20}"})


@pytest.fixture
def mem() -> MemorySupplierBackend:
    return MemorySupplierBackend()


def xianyu_with(engine: Engine, vault: Vault, suppliers: dict[str, Supplier]) -> Xianyu:
    shop = goofish_shop()
    shop = shop.model_copy(update={"items": [*shop.items, TOPUP, GAME]})
    return make_xianyu(engine, vault, shop=shop, suppliers=suppliers)


@pytest.fixture
def topup(engine: Engine, vault: Vault, mem: MemorySupplierBackend) -> Xianyu:
    return xianyu_with(engine, vault, {"memsup": MemorySupplier(mem)})


def _later() -> datetime:
    return utcnow() + timedelta(hours=1)


def sourcer(x: Xianyu, suppliers: dict[str, Supplier]) -> Sourcer:
    return Sourcer(x.engine, x.vault, suppliers,
                   SourcingPolicy(query_initial=0.001, query_max=0.001, price_ttl=0),
                   worker="t")


def source(x: Xianyu, backend: MemorySupplierBackend, rounds: int = 3) -> None:
    """The sourcing worker, letting the supplier finish between rounds."""
    src = sourcer(x, {"memsup": MemorySupplier(backend)})

    async def go() -> None:
        for _ in range(rounds):
            await src.run_once(now=_later())
            backend.settle()
    x.run(go())


def _order(x: Xianyu, order_no: str) -> Any:
    with x.engine.connect() as conn:
        return conn.execute(select(orders).where(orders.c.platform_order_id == order_no)).one()


def _count(x: Xianyu, table: Any) -> int:
    with x.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_a_top_up_is_processing_then_called_back_succeeded(
        topup: Xianyu, mem: MemorySupplierBackend) -> None:
    """recharge/create answers 处理中 (10) with the order sourcing and its key committed; the
    supplier credits the request's account; then order/detail says 20 and the outbox posts
    the signed callback (20, order_type 1, no card_items) past two failures; 闲管家's
    re-query matches it and the order is shipped."""
    x = topup
    payload = x.buyer.recharge_payload("T3003", MOBILE, max_amount=4995)
    first = x.run(x.buyer.call(p.RECHARGE, payload))
    assert first["code"] == p.OK
    data = first["data"]
    assert (data["order_status"], data["order_type"], data["order_amount"]) == (10, 1, 4995)
    assert "card_items" not in data
    row = _order(x, payload["order_no"])
    assert row.state == OrderState.SOURCING
    assert _count(x, supplier_attempts) == 1 and mem.orders == {}

    source(x, mem)
    assert [o.request.account for o in mem.orders.values()] == [MOBILE]
    assert _order(x, payload["order_no"]).state == OrderState.ALLOCATED
    detail = x.run(x.buyer.detail(payload["order_no"], 1))
    assert detail["data"]["order_status"] == 20 and "card_items" not in detail["data"]
    assert x.notify.received(payload["order_no"]) == []  # not before the outbox runs

    x.notify.fail_next = 2
    dispatcher = x.dispatcher(backoff_initial=0.001, backoff_max=0.001)

    async def deliver() -> bool:
        for _ in range(3):
            await dispatcher.run_once(now=_later())
        return await x.buyer.verify_callbacks(payload["order_no"])

    assert x.run(deliver())
    got = x.notify.received(payload["order_no"])
    assert [(c["order_status"], c["order_type"], "card_items" in c) for c in got] == [
        (20, 1, False)]
    assert _order(x, payload["order_no"]).state == OrderState.SHIPPED
    with x.engine.connect() as conn:  # each callback attempt is in the write-back history
        assert conn.execute(select(func.count()).select_from(outbox).where(
            outbox.c.kind == "ship", outbox.c.state == "done")).scalar_one() == 1


def test_concurrent_copies_of_one_top_up_buy_once(
        topup: Xianyu, mem: MemorySupplierBackend) -> None:
    """Eight copies of one recharge at once, then one more after the top-up: one order, one
    attempt, one purchase at the supplier; every answer names the same out_order_no."""
    x = topup
    payload = x.buyer.recharge_payload("T3003", MOBILE)
    answers = x.run(x.buyer.concurrent_purchases(payload, 8))
    assert {a["code"] for a in answers} == {p.OK}
    assert {a["data"]["order_status"] for a in answers} == {10}
    assert len({a["data"]["out_order_no"] for a in answers}) == 1
    source(x, mem)
    again = x.run(x.buyer.call(p.RECHARGE, payload))
    assert again["data"]["order_status"] == 20
    assert (_count(x, orders), _count(x, supplier_attempts), len(mem.orders)) == (1, 1, 1)


def test_every_supplier_failing_is_called_back_failed(
        topup: Xianyu, mem: MemorySupplierBackend) -> None:
    """The supplier takes the top-up, then fails it: the order is failed; order/detail says
    30 and the failure callback (30, order_type 1, a remark naming no supplier) is posted
    once, recorded and audited; 闲管家's re-query matches it."""
    x = topup
    mem.arm("accept_then_fail", "运营商维护")
    payload = x.buyer.recharge_payload("T3003", MOBILE)
    x.run(x.buyer.call(p.RECHARGE, payload))
    source(x, mem)
    assert _order(x, payload["order_no"]).state == OrderState.FAILED
    detail = x.run(x.buyer.detail(payload["order_no"], 1))
    assert detail["data"]["order_status"] == 30
    assert detail["data"]["remark"] == supply.SOURCING_FAILED_REMARK

    connectors = {x.shop.name: x.connector}
    assert x.run(supply.notify_failures(x.engine, connectors)) == 1
    assert x.run(supply.notify_failures(x.engine, connectors)) == 0
    got = x.notify.received(payload["order_no"])
    assert [(c["order_status"], c["order_type"], c["remark"]) for c in got] == [
        (30, 1, supply.SOURCING_FAILED_REMARK)]
    assert "memsup" not in str(got)
    assert x.run(x.buyer.verify_callbacks(payload["order_no"]))
    with x.engine.connect() as conn:
        assert conn.execute(select(supply_callbacks.c.sent_at)).scalar_one() is not None
        assert conn.execute(select(func.count()).select_from(audit_log).where(
            audit_log.c.action == "supply_failure_sent")).scalar_one() == 1
    shown = order_ops.show_order(x.engine, x.vault, int(_order(x, payload["order_no"]).id))
    assert shown["failure_notice"]["attempts"] == 1
    assert shown["failure_notice"]["sent_at"] is not None
    assert "运营商维护" in shown["reason"]  # the supplier's own reason stays with the merchant


def test_a_top_up_from_a_blacklisted_ip_is_held_then_bought_once_released(
        topup: Xianyu, mem: MemorySupplierBackend) -> None:
    """闲管家 names no 闲鱼 buyer id, but a top-up carries the buyer's IP
    (``biz_content.buyer_ip``): one on the blacklist holds the order (处理中, nothing bought,
    the rule named); a person releases it, it is bought once and answered 20."""
    x = topup
    risk.add_blacklist(x.engine, "ip", "113.87.236.130", actor="tester", reason="chargebacks")
    payload = x.buyer.recharge_payload("T3003", MOBILE)
    first = x.run(x.buyer.call(p.RECHARGE, payload))
    assert first["code"] == p.OK and first["data"]["order_status"] == 10
    row = _order(x, payload["order_no"])
    assert row.state == OrderState.HELD and row.buyer_id is None
    assert row.buyer_ip == "113.87.236.130" and "blacklist_ip" in row.reason
    source(x, mem)
    assert (_count(x, supplier_attempts), len(mem.orders)) == (0, 0)
    assert x.run(x.buyer.detail(payload["order_no"], 1))["data"]["order_status"] == 10

    assert order_ops.release(x.engine, int(row.id), actor="tester") == OrderState.RECEIVED
    assert pipeline.allocate_next(x.engine) is not None
    source(x, mem)
    assert [o.request.account for o in mem.orders.values()] == [MOBILE]
    assert x.run(x.buyer.detail(payload["order_no"], 1))["data"]["order_status"] == 20


def test_refusals_write_nothing_and_buy_nothing(
        topup: Xianyu, mem: MemorySupplierBackend) -> None:
    """Above max_amount (1202), an account not of the goods' form or none (1201), a top-up of
    card goods or a card order of top-up goods (1201): refused, nothing stored or bought."""
    x = topup

    async def go() -> list[Any]:
        no_account = x.buyer.recharge_payload("T3003", MOBILE)
        no_account["biz_content"] = {"game_area": "A区"}
        return [await x.buyer.recharge("T3003", MOBILE, max_amount=4994),
                await x.buyer.recharge("T3003", "12345"),
                await x.buyer.recharge("T4004", "bad account!"),
                await x.buyer.call(p.RECHARGE, no_account),
                await x.buyer.recharge("G1001", MOBILE),
                await x.buyer.purchase("T3003")]

    answers = x.run(go())
    assert [a["code"] for a in answers] == [p.PRICE_ABOVE_MAX] + [p.BAD_ORDER] * 5
    assert answers[1]["msg"] == answers[2]["msg"] == "充值账号格式错误"
    source(x, mem)
    assert (_count(x, orders), _count(x, supplier_attempts), len(mem.orders)) == (0, 0, 0)


def test_game_area_server_name_and_role_reach_the_supplier(
        topup: Xianyu, mem: MemorySupplierBackend) -> None:
    """A game top-up's account (checked against the goods' pattern), area, server, game
    name and role come from biz_content and are what the supplier is asked to credit."""
    x = topup
    payload = x.buyer.recharge_payload("T4004", "player_42", game_area="A区",
                                       game_server="国服", game_name="王者荣耀",
                                       game_role="夜行者")
    assert x.run(x.buyer.call(p.RECHARGE, payload))["data"]["order_status"] == 10
    source(x, mem)
    [order] = mem.orders.values()
    r = order.request
    assert (r.account, r.area, r.server, r.game, r.role) == (
        "player_42", "A区", "国服", "王者荣耀", "夜行者")
    assert _order(x, payload["order_no"]).state == OrderState.ALLOCATED


def test_goods_list_shows_top_ups_on_sale_while_a_supplier_runs(
        engine: Engine, vault: Vault, topup: Xianyu) -> None:
    """goods/list and goods/detail show the top-up goods (goods_type 1, our price, stock)
    while its supplier runs; without it they are off the shelf (stock 0) and refused."""
    x = topup

    async def go(buyer: Any) -> list[Any]:
        return [await buyer.call(p.GOODS_LIST, {"goods_type": 1}),
                await buyer.call(p.GOODS_DETAIL, {"goods_type": 1, "goods_no": "T3003"}),
                await buyer.recharge("T3003", MOBILE)]

    listed, detail, _placed = x.run(go(x.buyer))
    assert [(g["goods_no"], g["goods_type"], g["price"], g["stock"], g["status"])
            for g in listed["data"]["list"]] == [("T3003", 1, 4995, supply.RECHARGE_STOCK, 1),
                                                 ("T4004", 1, 5900, supply.RECHARGE_STOCK, 1)]
    assert detail["data"]["goods_name"] == "直充 T3003"

    off = xianyu_with(engine, vault, {})
    listed, detail, refused = off.run(go(off.buyer))
    assert {(g["stock"], g["status"]) for g in listed["data"]["list"]} == {(0, 2)}
    assert refused["code"] == p.GOODS_NOT_FOUND
    assert _count(x, orders) == 1


def test_a_refund_during_a_top_up_lets_it_finish_and_flags_review(
        topup: Xianyu, mem: MemorySupplierBackend) -> None:
    """While the top-up is being bought: 闲管家's refund request is refused (the supplier
    cannot be stopped); its refund notice is acknowledged; the top-up completes once, and the
    order ends cancelled for review with no callback owed."""
    x = topup
    payload = x.buyer.recharge_payload("T3003", MOBILE)
    order_no = payload["order_no"]
    x.run(x.buyer.call(p.RECHARGE, payload))
    src = sourcer(x, {"memsup": MemorySupplier(mem)})
    x.run(src.run_once(now=_later()))  # placed, not settled yet
    assert _order(x, order_no).state == OrderState.SOURCING

    async def refund() -> tuple[Any, Any]:
        asked = await x.buyer.call(p.REFUND_APPLY, {"order_no": order_no, "order_type": 1,
                                                    "refund_amount": 4995})
        return asked, await x.buyer.refund(order_no, 4995)

    asked, notice = x.run(refund())
    assert asked["data"]["result"] == "refuse"
    assert notice == {"result": "success", "msg": "接收成功"}
    assert _order(x, order_no).state == OrderState.SOURCING
    source(x, mem)
    row = _order(x, order_no)
    assert row.state == OrderState.CANCELLED and row.reason.startswith("review:")
    assert len(mem.orders) == 1 and mem.charged_cents() == 4950
    assert x.run(supply.notify_failures(x.engine, {x.shop.name: x.connector})) == 0
    assert x.notify.callbacks == []


def test_a_top_up_bought_from_the_fulu_fake_over_http(engine: Engine, vault: Vault) -> None:
    """The same path against Fulu's fake over loopback HTTP: 处理中, the top-up made once at
    Fulu for the request's account, the order then answered 20."""
    with FuluSupplierFactory().contract_harness() as fulu:
        client = fulu.supplier()
        product = fulu.topup_product
        price = asyncio.run(client.catalogue())
        cost = next(c.price_cents for c in price if c.product_id == product)
        goods = SkuMapping.model_validate({
            "goods_no": "F5005", "goods_type": "recharge", "price": f"{cost / 100 + 1:.2f}",
            "suppliers": [{"supplier": "fulu", "product": product,
                           "max_cost": f"{cost / 100:.2f}"}]})
        shop = goofish_shop().model_copy(update={"items": [goods]})
        x = make_xianyu(engine, vault, shop=shop, suppliers={"fulu": client})
        payload = x.buyer.recharge_payload("F5005", MOBILE)
        assert x.run(x.buyer.call(p.RECHARGE, payload))["data"]["order_status"] == 10

        async def go() -> None:
            live = fulu.supplier()
            src = Sourcer(engine, vault, {"fulu": live},
                          SourcingPolicy(query_initial=0.001, query_max=0.001, price_ttl=0),
                          worker="t")
            try:
                for _ in range(4):
                    await src.run_once(now=_later())
                    fulu.settle()
            finally:
                await live.aclose()
        asyncio.run(go())
        done = [o for o in fulu.fake.orders.values() if o.state == "success"]
        assert len(done) == 1
        assert _order(x, payload["order_no"]).state == OrderState.ALLOCATED
        assert x.run(x.buyer.detail(payload["order_no"], 1))["data"]["order_status"] == 20
        asyncio.run(client.aclose())


def test_the_fake_places_a_top_up_on_demand(topup: Xianyu,
                                             mem: MemorySupplierBackend) -> None:
    """``POST /__fake__/purchase`` with an account places a top-up (twice at once here):
    both answered 处理中, one order holding that account."""
    x = topup

    async def go() -> Any:
        app = make_app(x.notify, x.buyer)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                     base_url="http://fake.test") as client:
            return (await client.post("/__fake__/purchase", json={
                "goods_no": "T3003", "account": MOBILE, "copies": 2})).json()

    answer = x.run(go())
    assert answer["codes"] == [0, 0] and answer["order_status"] == [10, 10]
    source(x, mem)
    assert [o.request.account for o in mem.orders.values()] == [MOBILE]


def test_a_subscribed_top_up_goods_is_noticed_on_and_off_the_shelf(topup: Xianyu) -> None:
    """A subscription to top-up goods (goods_type 1): the sweep sends it on sale with the
    fixed stock while its supplier runs, and off the shelf (stock 0) once it does not."""
    x = topup
    assert x.run(x.buyer.subscribe("T3003", goods_type=1))["code"] == p.OK

    def sweep(running: tuple[str, ...]) -> int:
        return x.run(supply.notify_goods_changes(x.engine, x.vault, {x.shop.name: x.shop},
                                                 {x.shop.name: x.connector},
                                                 suppliers=running))

    assert sweep(("memsup",)) == 1
    assert sweep(("memsup",)) == 0
    assert sweep(()) == 1
    assert [(n["goods_no"], n["goods_type"], n["stock"], n["status"])
            for n in x.notify.goods_notices] == [("T3003", 1, supply.RECHARGE_STOCK, 1),
                                                  ("T3003", 1, 0, 2)]


@pytest.mark.parametrize("content", [None, "13800138000", {"account": 13800138000},
                                     {"account": MOBILE, "game_area": 7},
                                     {"account": " "}])
def test_a_malformed_biz_content_is_refused_with_nothing_written(
        topup: Xianyu, content: Any) -> None:
    """biz_content missing or not an object, the account not a string or blank, an area not
    a string (闲管家's fields are strictly typed): 1201, no order."""
    x = topup
    payload = x.buyer.recharge_payload("T3003", MOBILE)
    if content is None:
        del payload["biz_content"]
    else:
        payload["biz_content"] = content
    assert x.run(x.buyer.call(p.RECHARGE, payload))["code"] == p.BAD_ORDER
    assert _count(x, orders) == 0
