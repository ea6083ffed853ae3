"""Taobao/Tmall (TOP) connector package: the factory registered under ``robot.connectors``.

Importing this package must stay cheap and side-effect free (no network, no fake server).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from connectors.base import ShopContext
from connectors.taobao.client import TaobaoConnector
from connectors.taobao.config import TaobaoConfig
from connectors.taobao.errors import ClockSkew, SessionExpired, TopRejected
from robot.errors import ConfigError

__all__ = [
    "ClockSkew",
    "SessionExpired",
    "TaobaoConfig",
    "TaobaoConnector",
    "TaobaoConnectorFactory",
    "TopRejected",
]


class TaobaoConnectorFactory:
    """Builds a :class:`TaobaoConnector` from a validated :class:`TaobaoConfig`."""

    platform: ClassVar[str] = "taobao"
    config_model: ClassVar[type[BaseModel]] = TaobaoConfig

    def create(self, config: BaseModel, context: ShopContext) -> TaobaoConnector:
        if not isinstance(config, TaobaoConfig):
            raise ConfigError(f"taobao shop {context.shop}: platform_config is not a TaobaoConfig")
        return TaobaoConnector(config, shop=context.shop)
