"""Taobao end to end on every database: the real connector against the fake TOP over
loopback HTTP, through the real intake, allocation and write-back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import Engine, func, select

from connectors.taobao import TaobaoConnector
from connectors.taobao.fake import FakeClock, FakeTop
from robot import orders, pipeline, poller, shops
from robot.clock import utcnow
from robot.outbox import Dispatcher, RetryPolicy, resume_shop
from robot.schema import deliveries, stock
from robot.schema import orders as orders_t
from robot.vault import Vault
from tests.factories import Shop, seed_codes, sku
from tests.taobao.taobao_helpers import make_config, serve

SKU = "5000000000077"
SHOP = Shop(name="tb", platform="taobao", items=(sku(SKU, ("cards", 1)),))


@dataclass
class Rig:
    engine: Engine
    vault: Vault
    top: FakeTop
    clock: FakeClock
    gateway: str

    def connector(self) -> TaobaoConnector:
        transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))
        config = make_config(gateway=self.gateway, lag_seconds=30, overlap_seconds=120,
                             initial_lookback_minutes=10)
        return TaobaoConnector(config, shop=SHOP.name, transport=transport, clock=self.clock.now)

    def trade(self, num: int = 1) -> int:
        return self.top.create_trade(items=[{"title": "点卡 card", "price": "10.00", "num": num,
                                             "sku_id": SKU}])

    def poll(self, kind: str = "poll") -> poller.PollOutcome:
        async def run() -> poller.PollOutcome:
            connector = self.connector()
            try:
                return await poller.poll_shop(self.engine, SHOP, connector, kind,
                                              now=self.clock.now)
            finally:
                await connector.aclose()
        return asyncio.run(run())

    def ship_all(self, rounds: int = 12) -> None:
        async def run() -> None:
            connector = self.connector()
            disp = Dispatcher(self.engine, self.vault, {SHOP.name: connector}, {SHOP.name: SHOP},
                              RetryPolicy(max_attempts=6, backoff_initial=0.001,
                                          backoff_max=0.001), worker="it")
            try:
                for i in range(rounds):
                    while pipeline.allocate_next(self.engine):
                        pass
                    # retries become due as (real) time moves on; the fake's clock is separate
                    later = utcnow() + timedelta(hours=i + 1)
                    if not await disp.run_once(now=later):
                        break
            finally:
                await connector.aclose()
        asyncio.run(run())

    def states(self) -> dict[str, str]:
        with self.engine.connect() as conn:
            return {r.platform_order_id: r.state for r in conn.execute(
                select(orders_t.c.platform_order_id, orders_t.c.state))}


@pytest.fixture
def rig(engine: Engine, vault: Vault) -> Iterator[Rig]:
    clock = FakeClock()
    top = FakeTop(clock=clock.now)
    seed_codes(engine, vault, "cards", 30)
    shops.ensure_row(engine, SHOP.name)
    with serve(top) as gateway:
        yield Rig(engine, vault, top, clock, gateway)
        top.release_hangs()


def test_paid_trades_ship_once_with_codes_from_the_mapped_pool(rig: Rig) -> None:
    """Three paid trades are taken in once (polled twice), allocated from 'cards', shipped once."""
    tids = [rig.trade(), rig.trade(num=2), rig.trade()]
    rig.clock.advance(timedelta(minutes=2))
    first = rig.poll()
    second = rig.poll()  # overlapping window: the same trades again
    assert first.created == 3 and second.created == 0
    rig.ship_all()
    assert rig.states() == {str(t): "shipped" for t in tids}
    assert [rig.top.trades[t].shipments for t in tids] == [1, 1, 1]
    with rig.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(deliveries)).scalar_one() == 4
    assert all("****" in (rig.top.trades[t].seller_memo or "") for t in tids)


def test_throttling_and_5xx_are_survived(rig: Rig) -> None:
    """TOP's code 7 bans and HTML 500 pages delay but do not lose or double an order."""
    tid = rig.trade()
    rig.clock.advance(timedelta(minutes=2))
    rig.top.set_faults(http_500=1)
    assert not rig.poll().ok
    rig.top.set_faults(throttle=1, ban_seconds=1)
    assert not rig.poll().ok
    assert rig.poll().created == 1
    rig.top.set_faults(http_500=2, throttle=1)
    rig.ship_all()
    assert rig.states() == {str(tid): "shipped"}
    assert rig.top.trades[tid].shipments == 1


def test_expired_session_pauses_shop_until_reauthorized(rig: Rig) -> None:
    """An expired session pauses the shop; after re-authorization and resume it ships."""
    tid = rig.trade()
    rig.clock.advance(timedelta(minutes=2))
    rig.top.set_faults(expire_session=True)
    outcome = rig.poll()
    assert outcome.paused
    assert orders.status(rig.engine).shops[0].paused
    rig.top.set_faults(expire_session=False)  # the merchant re-authorized the app
    resume_shop(rig.engine, SHOP.name, actor="test")
    assert rig.poll().created == 1
    rig.ship_all()
    assert rig.states() == {str(tid): "shipped"}


def test_refund_before_shipping_cancels_and_returns_unseen_codes(rig: Rig, engine: Engine) -> None:
    """A refund seen before shipping cancels the order and puts its codes back on sale."""
    tid = rig.trade(num=2)
    rig.clock.advance(timedelta(minutes=2))
    rig.poll()
    assert rig.states() == {str(tid): "allocated"}  # claimed in the intake's transaction
    with engine.connect() as conn:
        before = conn.execute(select(func.count()).select_from(stock)).scalar_one()
    rig.top.request_refund(tid, status="SUCCESS")
    rig.clock.advance(timedelta(minutes=2))
    assert rig.poll("refund").seen == 1
    assert rig.states() == {str(tid): "cancelled"}
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(stock)).scalar_one() == before + 2
    rig.ship_all()
    assert rig.top.trades[tid].shipments == 0


def test_three_hour_outage_is_caught_up_with_nothing_missed(rig: Rig) -> None:
    """Trades paid during three hours of downtime are all taken in, window by window, once."""
    seed_codes(rig.engine, rig.vault, "cards", 10)  # 40 codes for 36 trades
    rig.poll()  # the robot was running: the cursor is current
    tids = []
    for _ in range(36):  # one trade every five minutes while the robot is down
        tids.append(rig.trade())
        rig.clock.advance(timedelta(minutes=5))
    outcome = rig.poll()
    assert outcome.ok
    assert outcome.created == 36
    assert outcome.steps >= 6  # 30-minute windows at most
    rig.ship_all(rounds=20)
    assert rig.states() == {str(t): "shipped" for t in tids}
    assert all(rig.top.trades[t].shipments == 1 for t in tids)


def test_tmc_messages_are_applied_then_confirmed(rig: Rig) -> None:
    """TMC's paid messages become one order each (with polling too), confirmed only after."""
    tid = rig.trade()

    async def pull() -> int:
        connector = rig.connector()
        try:
            return await poller.consume_messages(rig.engine, SHOP, connector, connector)
        finally:
            await connector.aclose()

    assert asyncio.run(pull()) >= 1
    rig.clock.advance(timedelta(minutes=2))
    assert rig.poll().created == 0  # already in through TMC
    assert rig.states() == {str(tid): "allocated"}
    assert asyncio.run(pull()) == 0  # everything was confirmed: nothing redelivered
