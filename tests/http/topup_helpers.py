"""A pickup-page rig with a top-up SKU: a shop mapping ``t50`` to a memory supplier, orders
whose buyer message carries the account, and the supplier worker to move them along."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

from sqlalchemy import Engine, select

from connectors.memsupplier import MemorySupplier, MemorySupplierBackend
from robot import pipeline
from robot.clock import utcnow
from robot.config import PoolShare, ShopConfig, SkuMapping
from robot.schema import orders
from robot.sourcing import Sourcer, SourcingPolicy
from robot.vault import Vault
from tests.factories import paid_order
from tests.http.conftest import shop_config

SUPPLIER = "acme-topups"  # a name the page must never show
PRODUCT = "topup-mobile-50"
MAX_COST = "49.90"
ACCOUNT = "13812345678"
MASKED = "138****5678"
TOPUP_TITLE = "item t50"


def topup_shop() -> ShopConfig:
    """The ``mem`` shop with a pool SKU (``s1``) and a top-up SKU (``t50``)."""
    shop = shop_config()
    topup = SkuMapping.model_validate({
        "sku_id": "t50", "account": {"source": "buyer_message", "format": "mobile"},
        "face_value": "50",
        "suppliers": [{"supplier": SUPPLIER, "product": PRODUCT, "max_cost": MAX_COST}]})
    return shop.model_copy(update={"items": [SkuMapping(sku_id="s1",
                                                        pools=[PoolShare(pool="p1")]), topup]})


class TopupRig:
    """Orders with top-up lines, bought from an in-memory supplier."""

    def __init__(self, engine: Engine, vault: Vault, shop: ShopConfig) -> None:
        self.engine, self.shop = engine, shop
        self.backend = MemorySupplierBackend()
        self.sourcer = Sourcer(engine, vault, {SUPPLIER: MemorySupplier(self.backend)},
                               SourcingPolicy(query_initial=0.001, query_max=0.001,
                                              price_ttl=0), worker="test")

    def order(self, platform_order_id: str, *lines: tuple[str, int],
              message: str | None = f"请充值到 {ACCOUNT}") -> int:
        """A paid order taken in (its top-ups being bought: ``sourcing``); its id."""
        snap = dataclasses.replace(paid_order(platform_order_id, *lines, buyer="buyer-1234"),
                                   buyer_message=message)
        result = pipeline.intake(self.engine, self.shop, snap, allocate=True)
        assert result.order_id is not None
        return result.order_id

    def work(self, *, settle: bool = True, rounds: int = 3) -> None:
        """The supplier worker's rounds (the supplier finishing between them)."""
        for _ in range(rounds):
            asyncio.run(self.sourcer.run_once(now=utcnow() + timedelta(hours=2)))
            if settle:
                self.backend.settle()

    def state(self, order_id: int) -> str:
        with self.engine.connect() as conn:
            return str(conn.execute(select(orders.c.state)
                                    .where(orders.c.id == order_id)).scalar_one())
