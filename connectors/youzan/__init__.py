"""Youzan Cloud (有赞云) connector package: the factory registered under ``robot.connectors``.

Importing this package must stay cheap and side-effect free (no network, no fake server).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.base import ShopContext
from connectors.common.factory import PlatformFactory
from connectors.youzan.client import YouzanConnector
from connectors.youzan.config import YouzanConfig
from connectors.youzan.errors import TokenRejected, YouzanRejected
from connectors.youzan.normalize import AUTO_DELIVERED
from connectors.youzan.sign import event_sign

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    import click

    from connectors.plugin import DemoDriver
    from connectors.testing.harness import ChannelHarness

__all__ = [
    "AUTO_DELIVERED",
    "TokenRejected",
    "YouzanConfig",
    "YouzanConnector",
    "YouzanConnectorFactory",
    "YouzanRejected",
    "event_sign",
]


class YouzanConnectorFactory(PlatformFactory[YouzanConfig, YouzanConnector]):
    """Builds a :class:`YouzanConnector` from a validated :class:`YouzanConfig`."""

    platform = "youzan"
    config_model = YouzanConfig

    def build(self, config: YouzanConfig, context: ShopContext) -> YouzanConnector:
        return YouzanConnector(config, context)

    def fake_command(self) -> click.Command:
        """``robot fake youzan``: the fake served on loopback (imported only when asked for)."""
        from connectors.youzan.cli import fake_youzan

        return fake_youzan

    def demo_driver(self) -> DemoDriver:
        """The driver ``robot demo`` runs this platform's fake with."""
        from connectors.youzan.demo import driver

        return driver()

    def contract_harness(self) -> AbstractContextManager[ChannelHarness]:
        """The contract suite's harness: the connector wired to the fake."""
        from connectors.youzan.harness import make_harness

        return make_harness()
