"""A platform's clock running ahead of or behind ours loses no order, and the reconciliation
sweep takes in what polling missed.

Each polled platform's real connector talks to its fake over loopback HTTP; the fake's clock
runs ``offset`` seconds from ours (its order times, windows and ``Date`` header follow it).
Orders are polled the way the daemon polls them (``poller.poll_shop`` once a minute, one
long-lived connector), on every supported database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from connectors.base import Connector
from connectors.fakekit import FakeClock
from connectors.pinduoduo import PinduoduoConfig, PinduoduoConnector
from connectors.pinduoduo.fake import FakePdd
from connectors.pinduoduo.fake import create_app as pdd_app
from connectors.pinduoduo.limiter import RateLimiter
from connectors.taobao import TaobaoConfig, TaobaoConnector
from connectors.taobao.fake import FakeTop
from connectors.taobao.fake import create_app as top_app
from connectors.testing.loopback import serve_in_thread
from connectors.youzan import YouzanConfig, YouzanConnector
from connectors.youzan.fake import FakeYouzan
from connectors.youzan.fake import create_app as youzan_app
from robot import poller, shops
from robot.schema import orders
from robot.shops import DbShopContext
from robot.vault import Vault
from tests.factories import Shop, seed_codes, sku

SKU = "7000001"
POOL = "skew-cards"
PLATFORMS = ("taobao", "pinduoduo", "youzan")


@dataclass
class Rig:
    """One platform's fake on loopback, its connector factory and an order maker."""

    shop: Shop
    clock: FakeClock
    fake: Any
    make_connector: Callable[[], Connector]
    make_order: Callable[[], str]  # a paid order awaiting shipment, created now (its time)


def _no_keepalive() -> httpx.AsyncHTTPTransport:
    # One connector is driven from successive event loops; a pooled connection cannot be.
    return httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))


@contextmanager
def rig_for(platform: str, offset: float, engine: Engine, vault: Vault) -> Iterator[Rig]:
    clock = FakeClock()
    shop = Shop(name=f"{platform}-skew", platform=platform, items=(sku(SKU, (POOL, 1)),))
    shops.ensure_row(engine, shop.name)
    context = DbShopContext(engine, vault, shop.name)
    if platform == "taobao":
        top = FakeTop(clock=clock.now, clock_offset=offset)
        with serve_in_thread(top_app(top), before_stop=top.release_hangs) as url:
            config = TaobaoConfig(app_key="12345678", app_secret="testsecret",
                                  session="test-session", gateway=f"{url}/router/rest")
            yield Rig(shop, clock, top,
                      lambda: TaobaoConnector(config, shop=shop.name, transport=_no_keepalive(),
                                              clock=clock.now),
                      lambda: str(top.create_trade(items=[{"title": "card", "price": "10.00",
                                                           "sku_id": SKU}])))
    elif platform == "pinduoduo":
        pdd = FakePdd(clock=clock.now, clock_offset=offset)

        async def no_wait(seconds: float) -> None:
            clock.advance(seconds)

        with serve_in_thread(pdd_app(pdd), before_stop=pdd.release_hangs) as url:
            pconfig = PinduoduoConfig(
                client_id="test-client", client_secret="testsecret",
                access_token="test-access-token", refresh_token="test-refresh-token",
                gateway=f"{url}/api/router", logistics_id=3, backoff_seconds=0.5)
            yield Rig(shop, clock, pdd,
                      lambda: PinduoduoConnector(
                          pconfig, context=context, transport=_no_keepalive(), clock=clock.now,
                          sleep=no_wait,
                          limiter=RateLimiter(clock=lambda: clock.now().timestamp(),
                                              sleep=no_wait)),
                      lambda: pdd.create_order(items=[{"goods_name": "card",
                                                       "goods_price": "10.00",
                                                       "sku_id": int(SKU)}]))
    else:
        yz = FakeYouzan(client_id="fake-client-id", client_secret="fake-client-secret",
                        kdt_id="56232", clock=clock.now, clock_offset=offset)
        with serve_in_thread(youzan_app(yz)) as url:
            yconfig = YouzanConfig(client_id="fake-client-id",
                                   client_secret="fake-client-secret", grant_id="56232",
                                   base_url=url)
            yield Rig(shop, clock, yz,
                      lambda: YouzanConnector(yconfig, context, transport=_no_keepalive(),
                                              clock=clock.now),
                      lambda: yz.create_trade(items=[{"title": "card", "price": "10.00",
                                                      "sku_id": int(SKU)}]))


def _taken_in(engine: Engine, shop: str) -> set[str]:
    with engine.connect() as conn:
        return {str(r[0]) for r in conn.execute(
            select(orders.c.platform_order_id).where(orders.c.shop == shop))}


def _poll_every_minute(engine: Engine, rig: Rig, minutes: int) -> list[str]:
    """Create one order a minute on the platform and poll after each, as the daemon does;
    then let the platform's indexing lag pass. Returns the ids created."""
    created: list[str] = []

    async def run() -> None:
        connector = rig.make_connector()
        try:
            for _ in range(minutes):
                created.append(rig.make_order())
                rig.clock.advance(60)
                outcome = await poller.poll_shop(engine, rig.shop, connector, "poll",
                                                 now=rig.clock.now)
                assert outcome.ok, outcome.error
            for _ in range(2):  # the last orders wait out the window's lag (60 s by default)
                rig.clock.advance(60)
                outcome = await poller.poll_shop(engine, rig.shop, connector, "poll",
                                                 now=rig.clock.now)
                assert outcome.ok, outcome.error
        finally:
            await connector.aclose()

    asyncio.run(run())
    return created


@pytest.mark.parametrize("offset", [-600, 600])
@pytest.mark.parametrize("platform", PLATFORMS)
def test_no_order_is_lost_when_the_platform_clock_is_ten_minutes_off(
        engine: Engine, vault: Vault, platform: str, offset: int) -> None:
    """With the platform's clock 10 minutes behind or ahead, every order polled in a
    20-minute run is taken in within two polls after the window lag."""
    seed_codes(engine, vault, POOL, 40)
    with rig_for(platform, offset, engine, vault) as rig:
        created = _poll_every_minute(engine, rig, minutes=20)
        connector = rig.make_connector()
        try:
            assert set(created) <= _taken_in(engine, rig.shop.name), (
                f"lost: {sorted(set(created) - _taken_in(engine, rig.shop.name))}")
        finally:
            asyncio.run(connector.aclose())


@pytest.mark.parametrize("platform", PLATFORMS)
def test_the_measured_offset_follows_the_platform_and_windows_stay_in_its_time(
        engine: Engine, vault: Vault, platform: str) -> None:
    """The connector reports the platform's offset (median of its answers' Date headers),
    and the stored cursor never runs ahead of the platform's clock."""
    with rig_for(platform, -600, engine, vault) as rig:
        _poll_every_minute(engine, rig, minutes=3)
        connector = rig.make_connector()

        async def read() -> float | None:
            try:
                await poller.poll_shop(engine, rig.shop, connector, "poll", now=rig.clock.now)
                reading = connector.clock_reading()  # type: ignore[attr-defined]
                return None if reading is None else float(reading.offset_seconds)
            finally:
                await connector.aclose()

        assert asyncio.run(read()) == -600
        cursor = shops.load_cursor(engine, rig.shop.name)
        assert cursor is not None
        assert datetime.fromisoformat(cursor["end"]) <= rig.fake.now()


@pytest.mark.parametrize("platform", PLATFORMS)
def test_sweep_takes_in_orders_the_cursor_already_passed_and_moves_no_cursor(
        engine: Engine, vault: Vault, platform: str) -> None:
    """Orders behind a cursor that already moved past them are taken in by the
    reconciliation sweep (ids only, full reads for the missing ones); the cursor stays."""
    seed_codes(engine, vault, POOL, 10)
    with rig_for(platform, 0, engine, vault) as rig:
        _poll_every_minute(engine, rig, minutes=1)
        missed = [rig.make_order() for _ in range(3)]
        # The cursor moves past them without seeing them (a clock that was wrong, a bug).
        ahead = rig.fake.now() + timedelta(minutes=30)
        shops.save_poll(engine, rig.shop.name, {"end": ahead.isoformat()})
        rig.clock.advance(120)
        _poll_every_minute(engine, rig, minutes=0)
        assert not set(missed) & _taken_in(engine, rig.shop.name)

        calls: list[tuple[str, str]] = []
        if platform == "taobao":
            rig.fake.on_call = lambda method, params: calls.append(
                (method, params.get("fields", "")))

        async def sweep() -> tuple[poller.SweepOutcome, poller.SweepOutcome]:
            connector = rig.make_connector()
            try:
                first = await poller.reconcile_shop(engine, rig.shop, connector,
                                                    now=rig.clock.now(),
                                                    period=timedelta(hours=24))
                again = await poller.reconcile_shop(engine, rig.shop, connector,
                                                    now=rig.clock.now(),
                                                    period=timedelta(hours=24))
                return first, again
            finally:
                await connector.aclose()

        first, again = asyncio.run(sweep())
        assert first.ok and first.created == 3 and first.missing == 3
        assert set(missed) <= _taken_in(engine, rig.shop.name)
        assert again.ok and again.missing == 0 and again.created == 0
        assert shops.load_cursor(engine, rig.shop.name) == {"end": ahead.isoformat()}
        if platform == "taobao":
            listed = [fields for method, fields in calls
                      if method == "taobao.trades.sold.increment.get"]
            assert listed and set(listed) == {"tid,modified"}  # ids and times only
            reads = [m for m, _ in calls if m == "taobao.trade.fullinfo.get"]
            assert len(reads) == 3  # only the missing trades are read in full
