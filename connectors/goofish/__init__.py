"""闲管家 (Goofish, the 闲鱼 ERP) as a buyer of our goods: the robot serves as a 自研虚拟货源
(virtual-goods supplier) under 闲管家's 虚拟货源标准接口 (entry point ``goofish`` in
``robot.connectors``).

:mod:`connectors.goofish.sign` signs and verifies, :mod:`connectors.goofish.protocol` holds
the paths, fields, envelope and codes, :mod:`connectors.goofish.connector` is the gateway and
its callbacks, :mod:`connectors.goofish.fake` is a faithful fake of 闲管家 (``robot fake
goofish``).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from connectors.base import ShopContext
from connectors.common.factory import PlatformFactory
from connectors.goofish.config import GoofishConfig
from connectors.goofish.connector import GoofishConnector

__all__ = ["GoofishConfig", "GoofishConnector", "GoofishConnectorFactory"]


class GoofishConnectorFactory(PlatformFactory[GoofishConfig, GoofishConnector]):
    """The entry point ``goofish`` in ``robot.connectors``."""

    platform: ClassVar[str] = "goofish"
    config_model: ClassVar[type[BaseModel]] = GoofishConfig
    fake_target: ClassVar[str | None] = "connectors.goofish.cli:goofish_fake"
    demo_target: ClassVar[str | None] = "connectors.goofish.demo:driver"
    #: Each of the shop's ``items:`` is goods 闲管家 buys from us: ``goods_no`` and ``price``.
    priced_items: ClassVar[bool] = True

    def build(self, config: GoofishConfig, context: ShopContext) -> GoofishConnector:
        return GoofishConnector(config)
