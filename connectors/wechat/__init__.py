"""WeChat mini-program connector package: the factory registered under ``robot.connectors``.

Importing this package must stay cheap and side-effect free (no network, no fake server).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from connectors.base import ShopContext
from connectors.wechat.client import WechatConnector
from connectors.wechat.config import SkuRule, WechatConfig
from connectors.wechat.crypto import backend_signature
from connectors.wechat.errors import TokenRejected, WechatRejected
from robot.errors import ConfigError

__all__ = [
    "SkuRule",
    "TokenRejected",
    "WechatConfig",
    "WechatConnector",
    "WechatConnectorFactory",
    "WechatRejected",
    "backend_signature",
]


class WechatConnectorFactory:
    """Builds a :class:`WechatConnector` from a validated :class:`WechatConfig`."""

    platform: ClassVar[str] = "wechat"
    config_model: ClassVar[type[BaseModel]] = WechatConfig

    def create(self, config: BaseModel, context: ShopContext) -> WechatConnector:
        if not isinstance(config, WechatConfig):
            raise ConfigError(f"wechat shop {context.shop}: platform_config is not a "
                              f"WechatConfig")
        return WechatConnector(config, context)
