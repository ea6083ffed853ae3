"""The connector over a real loopback socket (no database), the registry entry point and
the ``robot fake pinduoduo`` command."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
from click.testing import CliRunner
from pdd_helpers import make_connector

from connectors.base import PlatformStatus, Shipment, ShipOutcome
from connectors.common.context import MemoryContext
from connectors.pinduoduo import PinduoduoConfig, PinduoduoConnector
from connectors.pinduoduo.fake import FakeClock, FakePdd
from robot.cli import commands
from robot.errors import Unavailable
from robot.registry import discover


@pytest.mark.parametrize("request_format", ["json", "form"])
def test_poll_ship_and_memo_over_loopback(
    live_gateway: str, pdd: FakePdd, clock: FakeClock, request_format: str
) -> None:
    """Over real HTTP: an order is polled, shipped once, memo written; state shows it."""
    sn = pdd.create_order()
    clock.advance(600)

    async def scenario() -> tuple[ShipOutcome, ShipOutcome]:
        connector = make_connector(pdd, clock, gateway=live_gateway,
                                   request_format=request_format, initial_lookback_minutes=30)
        try:
            (order,) = (await connector.poll(None, clock.now())).orders
            assert order.status is PlatformStatus.PAID
            shipment = Shipment(order=order, line_ids=(), memo="m", item_desc="d")
            first = await connector.ship(shipment)
            await connector.write_memo(order, "[robot] AB****12")
            return first, await connector.ship(shipment)
        finally:
            await connector.aclose()

    assert asyncio.run(scenario()) == (ShipOutcome.SHIPPED, ShipOutcome.ALREADY_SHIPPED)
    state = httpx.get(live_gateway.replace("/api/router", "/__fake__/state")).json()
    assert state["orders"][sn]["shipments"] == 1
    assert state["orders"][sn]["memo"] == "[robot] AB****12"


def test_hanging_gateway_times_out_as_unavailable(
    live_gateway: str, pdd: FakePdd, clock: FakeClock
) -> None:
    """A gateway that never answers becomes Unavailable after timeout_seconds."""
    pdd.set_faults(hang=1)

    async def scenario() -> None:
        connector = make_connector(pdd, clock, gateway=live_gateway, timeout_seconds=0.3)
        try:
            await connector.fetch_order("240102-1")
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
        connector = make_connector(FakePdd(clock=clock.now), clock, max_retries=0,
                                   gateway=f"http://127.0.0.1:{port}/api/router")
        try:
            await connector.fetch_order("240102-1")
        finally:
            await connector.aclose()

    with pytest.raises(Unavailable, match="cannot reach"):
        asyncio.run(scenario())


def test_factory_is_registered_and_validates_the_shop_section() -> None:
    """The ``pinduoduo`` entry point builds a connector from a shop file's platform_config."""
    found = discover()
    factory = found.factories["pinduoduo"]
    config = factory.config_model.model_validate({
        "client_id": 12345, "client_secret": "s", "code": "c", "logistics_id": "3"})
    assert isinstance(config, PinduoduoConfig)
    assert config.client_id == "12345"
    connector = factory.create(config, MemoryContext("shop-x"))
    assert isinstance(connector, PinduoduoConnector)
    assert connector.shop == "shop-x"
    asyncio.run(connector.aclose())
    with pytest.raises(ValueError, match="Extra inputs"):
        factory.config_model.model_validate({
            "client_id": "1", "client_secret": "s", "code": "c", "logistics_id": 3, "typo": 1})


def test_fake_command_options_and_loopback_rule() -> None:
    """``robot fake pinduoduo`` offers its options and refuses a non-loopback host."""
    (fake,) = [command for command in commands.ALL if command.name == "fake"]
    result = CliRunner().invoke(fake, ["pinduoduo", "--help"])
    assert result.exit_code == 0
    for option in ("--port", "--host", "--client-id", "--client-secret", "--access-token",
                   "--refresh-token", "--seed-orders"):
        assert option in result.output
    refused = CliRunner().invoke(fake, ["pinduoduo", "--host", "0.0.0.0"])
    assert refused.exit_code == 2
    assert "loopback" in refused.output
