"""The connector against the fake TOP served by uvicorn on a real loopback socket."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from connectors.base import PlatformStatus, Shipment, ShipOutcome
from connectors.taobao import TaobaoConnector
from connectors.taobao.fake import FakeClock, FakeTop
from robot.errors import Unavailable
from tests.taobao.taobao_helpers import make_config


def test_poll_ship_and_memo_over_loopback(
    live_gateway: str, top: FakeTop, clock: FakeClock
) -> None:
    """Over real HTTP: a paid trade is polled, shipped once, memo written; state shows it."""
    tid = top.create_trade()
    clock.advance(120)

    async def scenario() -> tuple[ShipOutcome, ShipOutcome]:
        config = make_config(gateway=live_gateway, initial_lookback_minutes=10, sign_method="md5")
        connector = TaobaoConnector(config, clock=clock.now)
        try:
            result = await connector.poll(None, clock.now())
            (order,) = result.orders
            assert order.status is PlatformStatus.PAID
            shipment = Shipment(order=order, line_ids=(), memo="m", item_desc="d")
            first = await connector.ship(shipment)
            await connector.write_memo(order, "[robot] AB****12")
            return first, await connector.ship(shipment)
        finally:
            await connector.aclose()

    assert asyncio.run(scenario()) == (ShipOutcome.SHIPPED, ShipOutcome.ALREADY_SHIPPED)
    state = httpx.get(live_gateway.replace("/router/rest", "/__fake__/state")).json()
    assert state["trades"][str(tid)]["shipments"] == 1
    assert state["trades"][str(tid)]["memo"] == "[robot] AB****12"


def test_hanging_gateway_times_out_as_unavailable(
    live_gateway: str, top: FakeTop, clock: FakeClock
) -> None:
    """A gateway that never answers becomes Unavailable after timeout_seconds."""
    top.set_faults(hang=1)

    async def scenario() -> None:
        config = make_config(gateway=live_gateway, timeout_seconds=0.3)
        connector = TaobaoConnector(config, clock=clock.now)
        try:
            await connector.fetch_order("1")
        finally:
            await connector.aclose()

    with pytest.raises(Unavailable, match="timed out"):
        asyncio.run(scenario())


def test_unreachable_gateway_is_unavailable(clock: FakeClock) -> None:
    """Connection refused (nothing listening) is Unavailable, not a crash."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again on exit: nothing listens there

    async def scenario() -> None:
        config = make_config(gateway=f"http://127.0.0.1:{port}/router/rest", timeout_seconds=2)
        connector = TaobaoConnector(config, clock=clock.now)
        try:
            await connector.fetch_order("1")
        finally:
            await connector.aclose()

    with pytest.raises(Unavailable, match="cannot reach"):
        asyncio.run(scenario())
