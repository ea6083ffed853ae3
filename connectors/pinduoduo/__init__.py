"""Pinduoduo (POP) connector package: the factory registered under ``robot.connectors``.

Importing this package must stay cheap and side-effect free (no network, no fake server).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.base import ShopContext
from connectors.common.factory import PlatformFactory
from connectors.pinduoduo.client import PinduoduoConnector
from connectors.pinduoduo.config import PinduoduoConfig
from connectors.pinduoduo.errors import AccessTokenExpired, AppRejected, PddRejected
from connectors.pinduoduo.tokens import MemoryShopContext

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    import click

    from connectors.plugin import DemoDriver
    from connectors.testing.harness import ChannelHarness

__all__ = [
    "AccessTokenExpired",
    "AppRejected",
    "MemoryShopContext",
    "PddRejected",
    "PinduoduoConfig",
    "PinduoduoConnector",
    "PinduoduoConnectorFactory",
]


class PinduoduoConnectorFactory(PlatformFactory[PinduoduoConfig, PinduoduoConnector]):
    """Builds a :class:`PinduoduoConnector` from a validated :class:`PinduoduoConfig`."""

    platform = "pinduoduo"
    config_model = PinduoduoConfig

    def build(self, config: PinduoduoConfig, context: ShopContext) -> PinduoduoConnector:
        return PinduoduoConnector(config, context=context)

    def fake_command(self) -> click.Command:
        """``robot fake pinduoduo``: the fake served on loopback (imported only when asked for)."""
        from connectors.pinduoduo.cli import fake_pinduoduo

        return fake_pinduoduo

    def demo_driver(self) -> DemoDriver:
        """The driver ``robot demo`` runs this platform's fake with."""
        from connectors.pinduoduo.demo import driver

        return driver()

    def contract_harness(self) -> AbstractContextManager[ChannelHarness]:
        """The contract suite's harness: the connector wired to the fake."""
        from connectors.pinduoduo.harness import make_harness

        return make_harness()
