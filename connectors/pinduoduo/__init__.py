"""Pinduoduo (POP) connector package: the factory registered under ``robot.connectors``.

Importing this package must stay cheap and side-effect free (no network, no fake server).
"""

from __future__ import annotations

from connectors.base import ShopContext
from connectors.common.factory import PlatformFactory
from connectors.pinduoduo.client import PinduoduoConnector
from connectors.pinduoduo.config import PinduoduoConfig
from connectors.pinduoduo.errors import AccessTokenExpired, AppRejected, PddRejected

__all__ = [
    "AccessTokenExpired",
    "AppRejected",
    "PddRejected",
    "PinduoduoConfig",
    "PinduoduoConnector",
    "PinduoduoConnectorFactory",
]


class PinduoduoConnectorFactory(PlatformFactory[PinduoduoConfig, PinduoduoConnector]):
    """Builds a :class:`PinduoduoConnector` from a validated :class:`PinduoduoConfig`."""

    platform = "pinduoduo"
    fake_target = "connectors.pinduoduo.cli:fake_pinduoduo"
    demo_target = "connectors.pinduoduo.demo:driver"
    harness_target = "connectors.pinduoduo.harness:make_harness"
    config_model = PinduoduoConfig

    def build(self, config: PinduoduoConfig, context: ShopContext) -> PinduoduoConnector:
        return PinduoduoConnector(config, context=context)
