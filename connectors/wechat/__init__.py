"""WeChat mini-program connector package: the factory registered under ``robot.connectors``.

Importing this package must stay cheap and side-effect free (no network, no fake server).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.base import ShopContext
from connectors.common.factory import PlatformFactory
from connectors.wechat.client import WechatConnector
from connectors.wechat.config import SkuRule, WechatConfig
from connectors.wechat.crypto import backend_signature
from connectors.wechat.errors import TokenRejected, WechatRejected

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    import click

    from connectors.plugin import DemoDriver
    from connectors.testing.harness import ChannelHarness

__all__ = [
    "SkuRule",
    "TokenRejected",
    "WechatConfig",
    "WechatConnector",
    "WechatConnectorFactory",
    "WechatRejected",
    "backend_signature",
]


class WechatConnectorFactory(PlatformFactory[WechatConfig, WechatConnector]):
    """Builds a :class:`WechatConnector` from a validated :class:`WechatConfig`."""

    platform = "wechat"
    config_model = WechatConfig

    def build(self, config: WechatConfig, context: ShopContext) -> WechatConnector:
        return WechatConnector(config, context)

    def fake_command(self) -> click.Command:
        """``robot fake wechat``: the fake served on loopback (imported only when asked for)."""
        from connectors.wechat.cli import fake_wechat

        return fake_wechat

    def demo_driver(self) -> DemoDriver:
        """The driver ``robot demo`` runs this platform's fake with."""
        from connectors.wechat.demo import driver

        return driver()

    def contract_harness(self) -> AbstractContextManager[ChannelHarness]:
        """The contract suite's harness: the connector wired to the fake."""
        from connectors.wechat.harness import make_harness

        return make_harness()
