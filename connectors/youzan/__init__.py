"""Youzan Cloud (有赞云) connector package: the factory registered under ``robot.connectors``.

Importing this package must stay cheap and side-effect free (no network, no fake server).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from connectors.base import ShopContext
from connectors.youzan.client import YouzanConnector
from connectors.youzan.config import YouzanConfig
from connectors.youzan.errors import TokenRejected, YouzanRejected
from connectors.youzan.normalize import AUTO_DELIVERED
from connectors.youzan.sign import event_sign
from robot.errors import ConfigError

__all__ = [
    "AUTO_DELIVERED",
    "TokenRejected",
    "YouzanConfig",
    "YouzanConnector",
    "YouzanConnectorFactory",
    "YouzanRejected",
    "event_sign",
]


class YouzanConnectorFactory:
    """Builds a :class:`YouzanConnector` from a validated :class:`YouzanConfig`."""

    platform: ClassVar[str] = "youzan"
    config_model: ClassVar[type[BaseModel]] = YouzanConfig

    def create(self, config: BaseModel, context: ShopContext) -> YouzanConnector:
        if not isinstance(config, YouzanConfig):
            raise ConfigError(f"youzan shop {context.shop}: platform_config is not a YouzanConfig")
        return YouzanConnector(config, context)
