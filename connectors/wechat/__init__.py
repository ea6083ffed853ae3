"""WeChat mini-program connector package: the factory registered under ``robot.connectors``.

Importing this package must stay cheap and side-effect free (no network, no fake server).
"""

from __future__ import annotations

from connectors.base import ShopContext
from connectors.common.factory import PlatformFactory
from connectors.wechat.client import WechatConnector
from connectors.wechat.config import SkuRule, WechatConfig
from connectors.wechat.crypto import backend_signature
from connectors.wechat.errors import TokenRejected, WechatRejected

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
    fake_target = "connectors.wechat.cli:fake_wechat"
    demo_target = "connectors.wechat.demo:driver"
    harness_target = "connectors.wechat.harness:make_harness"
    config_model = WechatConfig

    def build(self, config: WechatConfig, context: ShopContext) -> WechatConnector:
        return WechatConnector(config, context)
