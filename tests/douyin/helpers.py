"""The Douyin connector through the real pipeline: a shop of two card SKUs (one pool of plain
codes, one of card number / PIN pairs), push intake, allocation and the outbox."""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta
from pathlib import Path

import httpx
from sqlalchemy import Engine

from connectors.douyin.client import DouyinConnector
from connectors.douyin.harness import DouyinHarness, make_config
from robot import pipeline, pools
from robot.clock import utcnow
from robot.outbox import Dispatcher, RetryPolicy
from robot.shops import DbShopContext, ensure_row
from robot.vault import Vault
from tests.factories import Shop, sku

SKU_CODE = "1750000101"  # one plain code per unit
SKU_PAIR = "1750000202"  # one card number / PIN pair per unit
SHOP = Shop(name="dy", platform="douyin",
            items=(sku(SKU_CODE, ("dy-codes", 1)), sku(SKU_PAIR, ("dy-pairs", 1))))


def stock_pools(engine: Engine, vault: Vault, directory: Path, count: int = 6
                ) -> tuple[list[str], list[tuple[str, str]]]:
    """Both pools, filled through the importer; returns the plain codes and the pairs."""
    tag = secrets.token_hex(3).upper()
    codes = [f"DYCODE{tag}{i:04d}" for i in range(count)]
    pairs = [(f"DYCARD{tag}{i:04d}", f"DYPIN{tag}{i:04d}") for i in range(count)]
    for pool, text in (("dy-codes", "code\n" + "\n".join(codes)),
                       ("dy-pairs", "card_no,password\n"
                        + "\n".join(f"{c},{p}" for c, p in pairs))):
        pools.create_pool(engine, pool, actor="test")
        path = directory / f"{pool}.csv"
        path.write_text(text + "\n", encoding="utf-8")
        pools.import_codes(engine, vault, pool, path, actor="test")
    return codes, pairs


def two_line_order(harness: DouyinHarness) -> str:
    """A paid order of two sub-orders: two plain codes, then one pair."""
    return harness.fake.create_order(items=[
        {"sku_id": SKU_CODE, "product_name": "card A", "price": "20.00", "num": 2},
        {"sku_id": SKU_PAIR, "product_name": "card B", "price": "50.00", "num": 1}])


def shop_connector(engine: Engine, vault: Vault, harness: DouyinHarness) -> DouyinConnector:
    ensure_row(engine, SHOP.name)
    transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))
    return DouyinConnector(make_config(harness.base_url, lag_seconds=0,
                                       initial_lookback_minutes=10),
                           DbShopContext(engine, vault, SHOP.name), transport=transport,
                           clock=harness.clock.now)


async def take_in_by_push(engine: Engine, connector: DouyinConnector,
                          harness: DouyinHarness, oid: str) -> None:
    """What the webhook does: verify the push, read the order, take it in."""
    headers, body = harness.fake.signed_push(oid)
    batch = connector.parse_push(headers, body, utcnow())
    for event in batch.events:
        order = event.order or await connector.fetch_order(event.platform_order_id)
        await asyncio.to_thread(pipeline.intake, engine, SHOP, order, actor="push:dy")


async def deliver(engine: Engine, vault: Vault, connector: DouyinConnector) -> None:
    """Allocate everything due, then run the outbox until it is empty."""
    while await asyncio.to_thread(pipeline.allocate_next, engine) is not None:
        pass
    dispatcher = Dispatcher(engine, vault, {SHOP.name: connector}, {SHOP.name: SHOP},
                            RetryPolicy(max_attempts=5, backoff_initial=0.01, backoff_max=0.05),
                            worker="test")
    for _ in range(30):
        if not await dispatcher.run_once(now=utcnow() + timedelta(hours=2)):
            return
    raise AssertionError("the outbox did not drain")
