"""The suppliers' part of ``robot demo``: a top-up SKU, a supplier-bought card SKU and a pool
that refills itself (restock), served by the installed supplier plugins' fakes (Fulu and Juhe,
through their entry points) with faults armed, and the figures the summary reports
(``per_supplier``, ``double_supplier_orders``, ``restocked``).

A top-up order carries its account in the buyer's message to the seller (留言), in each
platform's own field, and is bought at once; one in :data:`WITHOUT_ACCOUNT_EVERY` carries no
message and waits ``held`` ("top-up account missing") until the demo's customer service gives
the account, as a person would with ``robot orders release ID --account …``; 闲管家 sends the
account with its order, so its top-ups (recharge goods) go straight to the suppliers.
``double_supplier_orders`` is counted from the suppliers' own answers: every key the robot
ever used is queried, and a unit with two successful supplier orders is a double.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

from sqlalchemy import Engine, case, func, select

from connectors.supplier import NoSuchPurchase, Outcome, Supplier
from robot.registry import discover_suppliers
from robot.schema import restock_purchases, supplier_attempts
from robot.states import RestockState, SupplierAttemptState

#: Which supplier plugins the demo runs, in the order a top-up tries them.
PLUGINS = ("juhe", "fulu")
SKU_TOPUP = "SKU-TOPUP-50"
SKU_CARD = "SKU-CARD-BOUGHT"
POOL_BOUGHT = "bought-cards"  # stays empty: every card of SKU_CARD is bought
#: A pool that refills itself (the robot file's restock:): it starts empty, its orders wait
#: for stock, and the robot buys codes from the card supplier whenever it runs low.
POOL_RESTOCK = "restocked-cards"
SKU_RESTOCKED = "SKU-RESTOCKED"
RESTOCK_BELOW = 5
RESTOCK_QUANTITY = 10
#: The account of the demo's top-ups (a made-up number): in the buyer's message, given by the
#: demo's customer service for those held without one, or named by 闲管家 with its order.
DEMO_ACCOUNT = "13800000000"
#: What 闲管家 pays for the demo's top-up goods (yuan).
RECHARGE_PRICE = "55.00"
#: What the demo's buyers write to the seller on a top-up order.
DEMO_MESSAGE = f"充值号码 {DEMO_ACCOUNT}，谢谢"
#: One top-up order in this many carries no message (the held path stays demonstrated).
WITHOUT_ACCOUNT_EVERY = 4


def topup_message(placed: int) -> str | None:
    """The buyer's message of the demo's ``placed``-th top-up order (0-based): the account,
    except for one in :data:`WITHOUT_ACCOUNT_EVERY`."""
    return None if placed % WITHOUT_ACCOUNT_EVERY == WITHOUT_ACCOUNT_EVERY - 1 else DEMO_MESSAGE


class SupplierDemo:
    """The supplier fakes of one demo run."""

    def __init__(self) -> None:
        self.harnesses: dict[str, Any] = {}

    def start(self, stack: contextlib.ExitStack) -> None:
        """Serve each installed supplier plugin's fake on loopback (those that can say how
        the robot file configures them)."""
        factories, _problems = discover_suppliers()
        for name in PLUGINS:
            factory = factories.get(name)
            make = getattr(factory, "contract_harness", None)
            if make is None:
                continue
            harness = stack.enter_context(make())
            if callable(getattr(harness, "config_values", None)):
                self.harnesses[name] = harness

    def fund(self, cents: int) -> None:
        """Give every supplier fake's account at least ``cents`` (a long chaos run buys more
        than a fake starts with: its purchases must not fail for want of balance)."""
        for harness in self.harnesses.values():
            fund = getattr(harness, "fund", None)
            if callable(fund):
                fund(cents)

    def robot_file(self) -> dict[str, Any]:
        """The robot file's ``suppliers:`` section."""
        return {name: {"plugin": name, "config": h.config_values()}
                for name, h in self.harnesses.items()}

    async def items(self, sku_key: str, *, gateway: bool = False) -> list[dict[str, Any]]:
        """The shop mappings of the supplier SKUs, max cost at each product's price;
        ``gateway``: for a platform that buys from the robot (闲管家), the top-up only, as
        recharge goods (the account comes with each order) with the price it pays."""
        topup = [{"supplier": name, "product": h.topup_product,
                  "max_cost": await _price(h, h.topup_product)}
                 for name, h in self.harnesses.items()]
        if gateway:
            return [{sku_key: SKU_TOPUP, "goods_type": "recharge", "price": RECHARGE_PRICE,
                     "suppliers": topup}] if topup else []
        items: list[dict[str, Any]] = []
        if topup:
            items.append({sku_key: SKU_TOPUP, "suppliers": topup, "face_value": "50",
                          "account": {"source": "buyer_message", "format": "mobile"}})
        cards = [{"supplier": name, "product": h.card_product,
                  "max_cost": await _price(h, h.card_product)}
                 for name, h in self.harnesses.items() if h.card_product]
        if cards:
            items.append({sku_key: SKU_CARD, "pool": POOL_BOUGHT, "suppliers": cards})
        return items

    def restock_items(self, sku_key: str) -> list[dict[str, Any]]:
        """The mapping of the SKU sold from the pool that refills itself (a plain pool
        mapping: the pool's rule buys, not the order)."""
        return [{sku_key: SKU_RESTOCKED, "pool": POOL_RESTOCK}] if self.sells_cards else []

    async def restock_rules(self) -> dict[str, Any]:
        """The robot file's ``restock:``: the refilling pool buys from the first supplier
        selling cards, at its price, within a budget of many purchases."""
        for name, h in self.harnesses.items():
            if h.card_product:
                price = await _price(h, h.card_product)
                budget = str(int(float(price) * RESTOCK_QUANTITY * 100))
                return {POOL_RESTOCK: {"supplier": name, "product": h.card_product,
                                       "below": RESTOCK_BELOW, "quantity": RESTOCK_QUANTITY,
                                       "max_cost": price, "daily_budget": budget,
                                       "monthly_budget": budget}}
        return {}

    @property
    def sells_cards(self) -> bool:
        return any(h.card_product for h in self.harnesses.values())

    def inject_faults(self) -> int:
        """A top-up accepted then failed (the next supplier takes it), an answer lost after
        the order was placed, a "system busy"."""
        armed = 0
        first = next(iter(self.harnesses.values()), None)
        if first is not None and len(self.harnesses) > 1:
            first.fail_next_after_accept("运营商维护")
            armed += 1
        for h in list(self.harnesses.values())[1:]:
            h.lose_next_answer()
            armed += 1
        if first is not None:
            first.busy_next()
            armed += 1
        return armed

    def settle(self) -> None:
        """The suppliers finish what they are processing (time passing at the supplier)."""
        for h in self.harnesses.values():
            h.settle()

    async def double_orders(self, engine: Engine) -> int:
        """Units with more than one successful supplier order, by the suppliers' answers."""
        with engine.connect() as conn:
            rows = conn.execute(select(supplier_attempts.c.supplier, supplier_attempts.c.key,
                                       supplier_attempts.c.order_id, supplier_attempts.c.line_no,
                                       supplier_attempts.c.unit)).all()
        won: Counter[tuple[int, int, int]] = Counter()
        clients: dict[str, Supplier] = {n: h.supplier() for n, h in self.harnesses.items()}
        try:
            for r in rows:
                client = clients.get(str(r.supplier))
                if client is None:
                    continue
                with contextlib.suppress(NoSuchPurchase):
                    if (await client.query(str(r.key))).outcome is Outcome.SUCCEEDED:
                        won[(int(r.order_id), int(r.line_no), int(r.unit))] += 1
        finally:
            for client in clients.values():
                await client.aclose()
        return sum(1 for n in won.values() if n > 1)


async def _price(harness: Any, product: str) -> str:
    client = harness.supplier()
    try:
        cents = next(p.price_cents for p in await client.catalogue()
                     if p.product_id == product)
    finally:
        await client.aclose()
    return f"{cents // 100}.{cents % 100:02d}"


def restocked(engine: Engine) -> dict[str, int]:
    """The refilling pool's purchases: made, succeeded, codes bought, their cost (cents)."""
    rp = restock_purchases
    ok = rp.c.state == RestockState.SUCCEEDED
    with engine.connect() as conn:
        r = conn.execute(select(
            func.count().label("n"), func.sum(case((ok, 1), else_=0)).label("ok"),
            func.sum(case((ok, func.coalesce(rp.c.codes, 0)), else_=0)).label("codes"),
            func.sum(case((ok, func.coalesce(rp.c.cost_cents, 0)), else_=0)).label("cost"))
            ).one()
    return {"purchases": int(r.n or 0), "succeeded": int(r.ok or 0),
            "codes": int(r.codes or 0), "cost": int(r.cost or 0)}


def per_supplier(engine: Engine) -> dict[str, dict[str, int]]:
    """Per supplier: top-ups and cards bought, purchases failed, cost (cents)."""
    a = supplier_attempts
    ok = a.c.state == SupplierAttemptState.SUCCEEDED
    with engine.connect() as conn:
        rows = conn.execute(select(
            a.c.supplier,
            func.sum(case((ok & (a.c.kind == "topup"), 1), else_=0)).label("topups"),
            func.sum(case((ok & (a.c.kind == "card"), 1), else_=0)).label("cards"),
            func.sum(case((a.c.state == SupplierAttemptState.FAILED, 1), else_=0))
            .label("failed"),
            func.sum(case((ok, func.coalesce(a.c.cost_cents, 0)), else_=0)).label("cost"))
            .group_by(a.c.supplier)).all()
    return {str(r.supplier): {"topups": int(r.topups or 0), "cards": int(r.cards or 0),
                              "failed": int(r.failed or 0), "cost": int(r.cost or 0)}
            for r in sorted(rows, key=lambda r: str(r.supplier))}
