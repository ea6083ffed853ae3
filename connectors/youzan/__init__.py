"""Youzan Cloud (有赞云) connector package: the factory registered under ``robot.connectors``.

Importing this package must stay cheap and side-effect free (no network, no fake server).
"""

from __future__ import annotations

from connectors.base import ShopContext
from connectors.common.factory import PlatformFactory
from connectors.youzan.client import YouzanConnector
from connectors.youzan.config import YouzanConfig
from connectors.youzan.errors import TokenRejected, YouzanRejected
from connectors.youzan.normalize import AUTO_DELIVERED
from connectors.youzan.sign import event_sign

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
    fake_target = "connectors.youzan.cli:fake_youzan"
    demo_target = "connectors.youzan.demo:driver"
    harness_target = "connectors.youzan.harness:make_harness"
    config_model = YouzanConfig

    def build(self, config: YouzanConfig, context: ShopContext) -> YouzanConnector:
        return YouzanConnector(config, context)
