"""Taobao/Tmall (TOP) connector package: the factory registered under ``robot.connectors``.

Importing this package must stay cheap and side-effect free (no network, no fake server).
"""

from __future__ import annotations

from connectors.base import ShopContext
from connectors.common.factory import PlatformFactory
from connectors.taobao.client import TaobaoConnector
from connectors.taobao.config import TaobaoConfig
from connectors.taobao.errors import ClockSkew, SessionExpired, TopRejected

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
    fake_target = "connectors.taobao.cli:fake_taobao"
    demo_target = "connectors.taobao.demo:driver"
    harness_target = "connectors.taobao.harness:make_harness"
    config_model = TaobaoConfig

    def build(self, config: TaobaoConfig, context: ShopContext) -> TaobaoConnector:
        return TaobaoConnector(config, shop=context.shop)
