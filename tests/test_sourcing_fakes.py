"""The sourcing worker against the Fulu and Juhe plugins and their fakes over loopback HTTP, on
every backend: faults injected at the supplier, successes counted from the fakes' own
records (never two for one unit), card codes decrypted from Fulu into the vault."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from connectors.base import Order
from connectors.fulu import FuluSupplierFactory
from connectors.juhe import JuheFactory
from connectors.juhe import protocol as juhe_protocol
from robot import orders, pipeline
from robot.clock import utcnow
from robot.config import SkuMapping
from robot.schema import orders as orders_t
from robot.sourcing import Sourcer, SourcingPolicy
from robot.vault import Vault
from tests.factories import Shop, paid_order

LATER = timedelta(hours=2)


@pytest.fixture
def fakes() -> Iterator[dict[str, Any]]:
    with ExitStack() as stack:
        yield {"fulu": stack.enter_context(FuluSupplierFactory().contract_harness()),
               "juhe": stack.enter_context(JuheFactory().contract_harness())}


def successes(fakes: dict[str, Any]) -> Counter[str]:
    """Successful supplier orders per (our order, line, unit), from the fakes' own books."""
    fakes["fulu"].settle()
    fakes["juhe"].settle()
    keys = [k for k, o in fakes["fulu"].fake.orders.items() if o.state == "success"]
    keys += [k for k, o in fakes["juhe"].state.orders.items()
             if o.state == juhe_protocol.GAME_SUCCESS]
    return Counter(k.rsplit("A", 1)[0] for k in keys)


def price_yuan(harness: Any, product: str) -> str:
    async def read() -> int:
        client = harness.supplier()
        try:
            return next(p.price_cents for p in await client.catalogue()
                        if p.product_id == product)
        finally:
            await client.aclose()
    cents = asyncio.run(read())
    return f"{cents / 100:.2f}"


def topup_shop(fakes: dict[str, Any], order: list[str]) -> Shop:
    routes = [{"supplier": name, "product": fakes[name].topup_product,
               "max_cost": price_yuan(fakes[name], fakes[name].topup_product)}
              for name in order]
    mapping = SkuMapping.model_validate({"sku_id": "t50", "suppliers": routes,
                                         "account": {"source": "extra.charge_account"}})
    return Shop(items=(mapping,))  # type: ignore[arg-type]


def topup_order(oid: str) -> Order:
    return dataclasses.replace(paid_order(oid, ("t50", 1)),
                               extra={"charge_account": "13812345678"})


def state_of(engine: Engine, order_id: int) -> str:
    with engine.connect() as conn:
        return str(conn.execute(select(orders_t.c.state)
                                .where(orders_t.c.id == order_id)).scalar_one())


def drive(engine: Engine, vault: Vault, fakes: dict[str, Any], order_id: int,
          before_each: Callable[[], None] = lambda: None, rounds: int = 6) -> str:
    """Run the worker (one loop, real HTTP), letting the suppliers finish between rounds."""
    async def go() -> None:
        clients = {name: h.supplier() for name, h in fakes.items()}
        src = Sourcer(engine, vault, clients, SourcingPolicy(query_initial=0.001,
                                                             query_max=0.001, price_ttl=0),
                      worker="t")
        try:
            for _ in range(rounds):
                before_each()
                await src.run_once(now=utcnow() + LATER)
                for h in fakes.values():
                    h.settle()
                if await asyncio.to_thread(state_of, engine, order_id) != "sourcing":
                    return
        finally:
            for client in clients.values():
                await client.aclose()
    asyncio.run(go())
    return state_of(engine, order_id)


@pytest.mark.parametrize("name", ["fulu", "juhe"])
def test_a_lost_answer_is_queried_and_the_topup_made_once(
        engine: Engine, vault: Vault, fakes: dict[str, Any], name: str) -> None:
    """Over HTTP: the supplier took the order but the answer was lost; the worker finds it by
    its key, the order is allocated, the fake holds one success for the unit."""
    shop = topup_shop(fakes, [name])
    fakes[name].lose_next_answer()
    result = pipeline.intake(engine, shop, topup_order(f"H-{name}"), allocate=True)
    assert result.state == "sourcing" and result.order_id is not None
    assert drive(engine, vault, fakes, result.order_id) == "allocated"
    assert successes(fakes) == Counter({f"RB{result.order_id}L0U0": 1})


@pytest.mark.parametrize("name", ["fulu", "juhe"])
def test_busy_then_accepted_is_bought_once(engine: Engine, vault: Vault,
                                           fakes: dict[str, Any], name: str) -> None:
    """"System busy" (Juhe's 10014 rule; a 5xx at Fulu) is never a failure: the same key is
    asked again, the second supplier never hears of it."""
    other = "juhe" if name == "fulu" else "fulu"
    shop = topup_shop(fakes, [name, other])
    fakes[name].busy_next()
    result = pipeline.intake(engine, shop, topup_order(f"B-{name}"), allocate=True)
    assert result.order_id is not None
    assert drive(engine, vault, fakes, result.order_id) == "allocated"
    assert successes(fakes) == Counter({f"RB{result.order_id}L0U0": 1})
    books = fakes[other].fake.orders if other == "fulu" else fakes[other].state.orders
    assert books == {}


def test_fulu_failing_after_accept_moves_to_juhe_under_a_new_key(
        engine: Engine, vault: Vault, fakes: dict[str, Any]) -> None:
    """Accepted then failed at Fulu (refunded there): Juhe is tried under a new key; one
    success in all, and the order says nothing failed."""
    shop = topup_shop(fakes, ["fulu", "juhe"])
    fakes["fulu"].fail_next_after_accept("充值失败")
    result = pipeline.intake(engine, shop, topup_order("F1"), allocate=True)
    assert result.order_id is not None
    assert drive(engine, vault, fakes, result.order_id) == "allocated"
    oid = result.order_id
    [juhe_key] = fakes["juhe"].state.orders
    assert juhe_key.startswith(f"RB{oid}L0U0A1X")
    assert successes(fakes) == Counter({f"RB{oid}L0U0": 1})


def test_fulu_cards_are_decrypted_into_the_vault_for_the_order(
        engine: Engine, vault: Vault, fakes: dict[str, Any]) -> None:
    """A Fulu card bought for an empty pool: its AES-encrypted code is decrypted by the plugin
    and stored encrypted by the vault; reveal gives back what the fake sold."""
    h = fakes["fulu"]
    mapping = SkuMapping.model_validate({
        "sku_id": "c1", "pool": "fulu-cards",
        "suppliers": [{"supplier": "fulu", "product": h.card_product,
                       "max_cost": price_yuan(h, h.card_product)}]})
    from tests.factories import ensure_pool

    ensure_pool(engine, "fulu-cards")
    shop = Shop(items=(mapping,))  # type: ignore[arg-type]
    result = pipeline.intake(engine, shop, paid_order("K1", ("c1", 1)), allocate=True)
    assert result.order_id is not None and result.state == "sourcing"
    assert drive(engine, vault, fakes, result.order_id) == "allocated"
    [sold] = [o.cards for k, o in h.fake.orders.items()
              if k.startswith(f"RB{result.order_id}L0U0A0X")]
    shown = orders.reveal(engine, vault, result.order_id, actor="test")
    assert [(r.card_no, r.pin) for r in shown] == sold
