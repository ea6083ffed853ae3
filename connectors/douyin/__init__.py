"""Douyin shop (抖店) connector package: the factory registered under ``robot.connectors``.

Importing this package must stay cheap and side-effect free (no network, no fake server).
"""

from __future__ import annotations

from connectors.base import ShopContext
from connectors.common.factory import PlatformFactory
from connectors.douyin.client import DouyinConnector
from connectors.douyin.config import DouyinConfig
from connectors.douyin.errors import DouyinRejected, TokenRejected
from connectors.douyin.sign import event_sign, param_json, sign

__all__ = [
    "DouyinConfig",
    "DouyinConnector",
    "DouyinConnectorFactory",
    "DouyinRejected",
    "TokenRejected",
    "event_sign",
    "param_json",
    "sign",
]


class DouyinConnectorFactory(PlatformFactory[DouyinConfig, DouyinConnector]):
    """Builds a :class:`DouyinConnector` from a validated :class:`DouyinConfig`."""

    platform = "douyin"
    fake_target = "connectors.douyin.cli:fake_douyin"
    harness_target = "connectors.douyin.harness:make_harness"
    demo_target = "connectors.douyin.demo:driver"
    config_model = DouyinConfig

    def build(self, config: DouyinConfig, context: ShopContext) -> DouyinConnector:
        return DouyinConnector(config, context)
