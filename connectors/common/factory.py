"""The shape every platform's connector factory shares (registered under ``robot.connectors``).

A factory checks that the shop's ``platform_config`` is its own config model and builds the
connector from it. It must stay cheap and side-effect free: no network, no fake server.
"""

from __future__ import annotations

from typing import ClassVar, Generic, TypeVar, cast

from pydantic import BaseModel

from connectors.base import Connector, ShopContext
from connectors.errors import ConfigError

ConfigT = TypeVar("ConfigT", bound=BaseModel)
ConnectorT = TypeVar("ConnectorT", bound=Connector)


class PlatformFactory(Generic[ConfigT, ConnectorT]):
    """Builds a connector from a validated config; subclasses name the model and :meth:`build`."""

    platform: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]

    def create(self, config: BaseModel, context: ShopContext) -> ConnectorT:
        if not isinstance(config, self.config_model):
            raise ConfigError(f"{self.platform} shop {context.shop}: platform_config is not a "
                              f"{self.config_model.__name__}")
        # A ClassVar cannot name a type variable, so the check above cannot narrow to ConfigT;
        # config_model is ConfigT's class in every subclass.
        return self.build(cast("ConfigT", config), context)

    def build(self, config: ConfigT, context: ShopContext) -> ConnectorT:
        raise NotImplementedError
