"""Pinduoduo (POP) connector package: the factory registered under ``robot.connectors``.

Importing this package must stay cheap and side-effect free (no network, no fake server).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from connectors.base import ShopContext
from connectors.pinduoduo.client import PinduoduoConnector
from connectors.pinduoduo.config import PinduoduoConfig
from connectors.pinduoduo.errors import AccessTokenExpired, AppRejected, PddRejected
from connectors.pinduoduo.tokens import MemoryShopContext
from robot.errors import ConfigError

__all__ = [
    "AccessTokenExpired",
    "AppRejected",
    "MemoryShopContext",
    "PddRejected",
    "PinduoduoConfig",
    "PinduoduoConnector",
    "PinduoduoConnectorFactory",
]


class PinduoduoConnectorFactory:
    """Builds a :class:`PinduoduoConnector` from a validated :class:`PinduoduoConfig`."""

    platform: ClassVar[str] = "pinduoduo"
    config_model: ClassVar[type[BaseModel]] = PinduoduoConfig

    def create(self, config: BaseModel, context: ShopContext) -> PinduoduoConnector:
        if not isinstance(config, PinduoduoConfig):
            raise ConfigError(
                f"pinduoduo shop {context.shop}: platform_config is not a PinduoduoConfig")
        return PinduoduoConnector(config, context=context)
