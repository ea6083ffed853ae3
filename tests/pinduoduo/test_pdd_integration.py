"""The Pinduoduo connector against its fake over real loopback HTTP, through the real
pipeline and outbox, on every supported database."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Literal

from pdd_helpers import FakeSleep, make_connector
from sqlalchemy import Engine, Table, func, select

from connectors.base import Order
from connectors.pinduoduo import PinduoduoConnector
from connectors.pinduoduo.fake import FakeClock, FakePdd
from robot import audit, pipeline, shops
from robot.clock import utcnow
from robot.outbox import Dispatcher, RetryPolicy
from robot.schema import deliveries, orders, outbox, shop_secrets, stock
from robot.shops import DbShopContext
from robot.vault import Vault
from tests.factories import Shop, ensure_pool, seed_codes, sku

SKU = "880001"
POOL = "pdd-pool"
SHOP = Shop(name="pdd-shop", platform="pinduoduo", items=(sku(SKU, (POOL, 1)),))


def _order_on(pdd: FakePdd, quantity: int = 1) -> str:
    return pdd.create_order(items=[{"goods_name": "Card 100", "goods_price": "10.00",
                                    "sku_id": int(SKU), "goods_count": quantity}])


def _connector(pdd: FakePdd, clock: FakeClock, gateway: str, engine: Engine,
               vault: Vault) -> PinduoduoConnector:
    return make_connector(pdd, clock, gateway=gateway,
                          context=DbShopContext(engine, vault, SHOP.name))


async def _poll(engine: Engine, connector: PinduoduoConnector, clock: FakeClock,
                kind: Literal["poll", "refund"] = "poll") -> list[Order]:
    """What the daemon does for one scheduled poll: steps until caught up, cursor saved."""
    cursor = shops.load_cursor(engine, SHOP.name, kind)
    fetch = connector.poll if kind == "poll" else connector.poll_refunds
    seen: list[Order] = []
    while True:
        result = await fetch(cursor, clock.now())
        for order in result.orders:
            pipeline.intake(engine, SHOP, order, actor=f"{kind}:{SHOP.name}")
        seen.extend(result.orders)
        shops.save_poll(engine, SHOP.name, result.cursor, kind=kind)
        cursor = dict(result.cursor)
        if not result.more:
            return seen


def _dispatcher(engine: Engine, vault: Vault, connector: PinduoduoConnector) -> Dispatcher:
    return Dispatcher(engine, vault, {SHOP.name: connector}, {SHOP.name: SHOP},
                      RetryPolicy(max_attempts=5, backoff_initial=0.001, backoff_max=0.001),
                      worker="pdd-test")


async def _drain(engine: Engine, disp: Dispatcher) -> None:
    while pipeline.allocate_next(engine):
        pass
    for _ in range(20):
        if not await disp.run_once(now=utcnow() + timedelta(hours=2)):
            return


def _states(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(select(orders.c.platform_order_id, orders.c.state)
                            .where(orders.c.shop == SHOP.name))
        return {str(r.platform_order_id): str(r.state) for r in rows}


def _count(engine: Engine, table: Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_orders_are_shipped_once_with_codes_from_the_mapped_pool(
    engine: Engine, vault: Vault, pdd: FakePdd, clock: FakeClock, live_gateway: str
) -> None:
    """Polled twice, each paid order is one order, shipped once, with codes from its pool."""
    secrets = seed_codes(engine, vault, POOL, 5)
    shops.ensure_row(engine, SHOP.name)
    sns = [_order_on(pdd), _order_on(pdd, quantity=2)]
    clock.advance(600)

    async def scenario() -> None:
        connector = _connector(pdd, clock, live_gateway, engine, vault)
        try:
            await _poll(engine, connector, clock)
            shops.save_poll(engine, SHOP.name, None, kind="poll")  # no move: same window again
            again = await connector.poll(None, clock.now())  # a second look at the same orders
            for order in again.orders:
                assert pipeline.intake(engine, SHOP, order).action == "duplicate"
            disp = _dispatcher(engine, vault, connector)
            await _drain(engine, disp)
            await _drain(engine, disp)  # nothing left to do: nothing shipped twice
        finally:
            await connector.aclose()

    asyncio.run(scenario())
    assert _states(engine) == dict.fromkeys(sns, "shipped")
    assert [pdd.orders[sn].shipments for sn in sns] == [1, 1]
    pool_id = ensure_pool(engine, POOL)
    with engine.connect() as conn:
        rows = conn.execute(select(deliveries.c.pool_id, deliveries.c.state)).all()
    assert sorted(rows) == [(pool_id, "delivered")] * 3
    assert _count(engine, stock) == 2
    for sn in sns:
        memo = pdd.orders[sn].remark
        assert "****" in memo and not any(code in memo for code in secrets)
    assert audit.verify(engine).ok


def test_token_is_refreshed_transparently_and_kept_encrypted(
    engine: Engine, vault: Vault, pdd: FakePdd, clock: FakeClock, live_gateway: str
) -> None:
    """An expired token is refreshed mid-run; the new one is stored sealed and reused."""
    seed_codes(engine, vault, POOL, 2)
    shops.ensure_row(engine, SHOP.name)
    sn = _order_on(pdd)
    clock.advance(600)

    async def scenario() -> None:
        connector = _connector(pdd, clock, live_gateway, engine, vault)
        try:
            await _poll(engine, connector, clock)
            pdd.expire_access_tokens()
            await _drain(engine, _dispatcher(engine, vault, connector))
        finally:
            await connector.aclose()
        restarted = _connector(pdd, clock, live_gateway, engine, vault)
        try:
            await restarted.fetch_order(sn)
        finally:
            await restarted.aclose()

    asyncio.run(scenario())
    assert _states(engine) == {sn: "shipped"}
    assert pdd.orders[sn].shipments == 1
    assert pdd.refreshes == 1  # the restarted connector reused the stored token
    newest = max(pdd.access_tokens.values(), key=lambda t: t.expires_at).value
    with engine.connect() as conn:
        (blob,) = conn.execute(select(shop_secrets.c.ciphertext)
                               .where(shop_secrets.c.shop == SHOP.name)).one()
    assert newest.encode() not in bytes(blob)
    assert b"refresh" not in bytes(blob)


def test_throttling_and_server_errors_are_survived(
    engine: Engine, vault: Vault, pdd: FakePdd, clock: FakeClock, live_gateway: str
) -> None:
    """Throttled and 5xx answers are retried (inside the connector, then by the outbox)."""
    seed_codes(engine, vault, POOL, 2)
    shops.ensure_row(engine, SHOP.name)
    sn = _order_on(pdd)
    clock.advance(600)
    sleep = FakeSleep(clock)

    async def scenario() -> None:
        connector = make_connector(pdd, clock, gateway=live_gateway, sleep=sleep,
                                   context=DbShopContext(engine, vault, SHOP.name))
        try:
            pdd.set_faults(throttle=2, http_500=1)
            await _poll(engine, connector, clock)
            pdd.set_faults(throttle=20)  # more than the connector retries: the outbox waits
            disp = _dispatcher(engine, vault, connector)
            while pipeline.allocate_next(engine):
                pass
            await disp.run_once(now=utcnow() + timedelta(hours=1))
            assert _states(engine) == {sn: "allocated"}
            pdd.set_faults(throttle=0, unavailable=1)
            await _drain(engine, disp)
        finally:
            await connector.aclose()

    asyncio.run(scenario())
    assert _states(engine) == {sn: "shipped"}
    assert pdd.orders[sn].shipments == 1
    assert sleep.delays  # the connector backed off instead of hammering POP
    with engine.connect() as conn:
        attempts = conn.execute(select(outbox.c.attempts).where(outbox.c.kind == "ship")).scalar()
    assert attempts == 2  # one throttled try counted, then the successful one


def test_refund_before_shipping_cancels_and_returns_codes(
    engine: Engine, vault: Vault, pdd: FakePdd, clock: FakeClock, live_gateway: str
) -> None:
    """A refund completed before shipping cancels the order and puts its codes back."""
    seed_codes(engine, vault, POOL, 2)
    shops.ensure_row(engine, SHOP.name)
    sn = _order_on(pdd, quantity=2)
    clock.advance(600)

    async def scenario() -> None:
        connector = _connector(pdd, clock, live_gateway, engine, vault)
        try:
            await _poll(engine, connector, clock)
            assert pipeline.allocate_next(engine) is not None
            assert _count(engine, stock) == 0
            pdd.request_refund(sn, after_sales_status=10)
            clock.advance(600)
            refunded = await _poll(engine, connector, clock, kind="refund")
            assert {o.platform_order_id for o in refunded} == {sn}  # overlapping windows repeat
            await _drain(engine, _dispatcher(engine, vault, connector))
        finally:
            await connector.aclose()

    asyncio.run(scenario())
    assert _states(engine) == {sn: "cancelled"}
    assert _count(engine, stock) == 2
    assert _count(engine, deliveries) == 0
    assert pdd.orders[sn].shipments == 0


def test_an_outage_of_hours_is_caught_up_with_nothing_missed(
    engine: Engine, vault: Vault, pdd: FakePdd, clock: FakeClock, live_gateway: str
) -> None:
    """Orders paid during 5 hours of downtime are all taken in once and shipped once."""
    seed_codes(engine, vault, POOL, 40)
    shops.ensure_row(engine, SHOP.name)
    before = _order_on(pdd)
    clock.advance(600)

    async def scenario() -> None:
        connector = _connector(pdd, clock, live_gateway, engine, vault)
        try:
            await _poll(engine, connector, clock)
        finally:
            await connector.aclose()
        for _ in range(5 * 60 // 10):  # the robot is down; an order every 10 minutes
            clock.advance(timedelta(minutes=10))
            _order_on(pdd)
        clock.advance(timedelta(minutes=4))
        restarted = _connector(pdd, clock, live_gateway, engine, vault)
        try:
            await _poll(engine, restarted, clock)
            await _drain(engine, _dispatcher(engine, vault, restarted))
        finally:
            await restarted.aclose()

    asyncio.run(scenario())
    states = _states(engine)
    assert set(states) == set(pdd.orders)
    assert before in states
    assert len(states) == 31
    assert set(states.values()) == {"shipped"}
    assert all(order.shipments == 1 for order in pdd.orders.values())
