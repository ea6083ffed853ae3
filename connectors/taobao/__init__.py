"""Taobao/Tmall (TOP) connector package: the factory registered under ``robot.connectors``.

Importing this package must stay cheap and side-effect free (no network, no fake server).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.base import ShopContext
from connectors.common.factory import PlatformFactory
from connectors.taobao.client import TaobaoConnector
from connectors.taobao.config import TaobaoConfig
from connectors.taobao.errors import ClockSkew, SessionExpired, TopRejected

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    import click

    from connectors.plugin import DemoDriver
    from connectors.testing.harness import ChannelHarness

__all__ = [
    "ClockSkew",
    "SessionExpired",
    "TaobaoConfig",
    "TaobaoConnector",
    "TaobaoConnectorFactory",
    "TopRejected",
]


class TaobaoConnectorFactory(PlatformFactory[TaobaoConfig, TaobaoConnector]):
    """Builds a :class:`TaobaoConnector` from a validated :class:`TaobaoConfig`."""

    platform = "taobao"
    config_model = TaobaoConfig

    def build(self, config: TaobaoConfig, context: ShopContext) -> TaobaoConnector:
        return TaobaoConnector(config, shop=context.shop)

    def fake_command(self) -> click.Command:
        """``robot fake taobao``: the fake served on loopback (imported only when asked for)."""
        from connectors.taobao.cli import fake_taobao

        return fake_taobao

    def demo_driver(self) -> DemoDriver:
        """The driver ``robot demo`` runs this platform's fake with."""
        from connectors.taobao.demo import driver

        return driver()

    def contract_harness(self) -> AbstractContextManager[ChannelHarness]:
        """The contract suite's harness: the connector wired to the fake."""
        from connectors.taobao.harness import make_harness

        return make_harness()
