"""The shape every platform's connector factory shares (registered under ``robot.connectors``).

A factory checks that the shop's ``platform_config`` is its own config model and builds the
connector from it. It names what else the plugin brings (its fake command, demo driver and
contract harness, see :mod:`connectors.plugin`) as ``"module:attribute"`` targets, imported
only when asked for. It must stay cheap and side-effect free: no network, no fake server.
"""

from __future__ import annotations

import importlib
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

from pydantic import BaseModel

from connectors.base import Connector, ShopContext

if TYPE_CHECKING:
    import click

    from connectors.plugin import DemoDriver
    from connectors.testing.harness import ChannelHarness
from connectors.errors import ConfigError

ConfigT = TypeVar("ConfigT", bound=BaseModel)
ConnectorT = TypeVar("ConnectorT", bound=Connector)


class PlatformFactory(Generic[ConfigT, ConnectorT]):
    """Builds a connector from a validated config; subclasses name the model and :meth:`build`."""

    platform: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]
    #: ``"module:attribute"``: the fake's click command (None: the plugin has no fake).
    fake_target: ClassVar[str | None] = None
    #: ``"module:attribute"``: a callable returning the demo driver (None: no demo).
    demo_target: ClassVar[str | None] = None
    #: ``"module:attribute"``: a callable returning the contract harness's context manager.
    harness_target: ClassVar[str | None] = None

    def fake_command(self) -> click.Command | None:
        """``robot fake <platform>``: the fake served on loopback."""
        return cast("click.Command", load_target(self.fake_target)) if self.fake_target else None

    def demo_driver(self) -> DemoDriver | None:
        """The driver ``robot demo`` runs this platform's fake with."""
        return cast("DemoDriver", load_target(self.demo_target)()) if self.demo_target else None

    def contract_harness(self) -> AbstractContextManager[ChannelHarness] | None:
        """The contract suite's harness: the connector wired to the fake."""
        if not self.harness_target:
            return None
        return cast("AbstractContextManager[ChannelHarness]", load_target(self.harness_target)())

    def create(self, config: BaseModel, context: ShopContext) -> ConnectorT:
        if not isinstance(config, self.config_model):
            raise ConfigError(f"{self.platform} shop {context.shop}: platform_config is not a "
                              f"{self.config_model.__name__}")
        # A ClassVar cannot name a type variable, so the check above cannot narrow to ConfigT;
        # config_model is ConfigT's class in every subclass.
        return self.build(cast("ConfigT", config), context)

    def build(self, config: ConfigT, context: ShopContext) -> ConnectorT:
        raise NotImplementedError


def load_target(target: str) -> Any:
    """The attribute a ``"module:attribute"`` target names (imported now)."""
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)
