"""Fulu (福禄开放平台) supplier plugin: the factory, entry point ``fulu`` in ``robot.suppliers``.

Top-ups (直充, 话费) and card purchases (卡密采购) through Fulu's single JSON gateway. The
factory also names the plugin's fake command (``robot fake fulu``) and its contract harness.
Importing this package must stay cheap and side-effect free (no network, no fake server).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, ClassVar, cast

from pydantic import BaseModel

from connectors.base import ShopContext
from connectors.common.factory import load_target
from connectors.errors import ConfigError
from connectors.fulu.client import FuluSupplier
from connectors.fulu.config import FuluConfig

if TYPE_CHECKING:
    import click

    from connectors.testing.harness import SupplierHarness


class FuluSupplierFactory:
    """The entry point ``fulu`` in ``robot.suppliers``."""

    supplier: ClassVar[str] = "fulu"
    #: The platform name ``robot fake`` lists the fake command under.
    platform: ClassVar[str] = "fulu"
    config_model: ClassVar[type[BaseModel]] = FuluConfig
    fake_target: ClassVar[str] = "connectors.fulu.cli:fake_fulu"
    harness_target: ClassVar[str] = "connectors.fulu.harness:make_harness"

    def create(self, config: BaseModel, context: ShopContext) -> FuluSupplier:
        if not isinstance(config, FuluConfig):
            raise ConfigError(f"supplier {context.shop}: config is not a FuluConfig")
        return FuluSupplier(config)

    def fake_command(self) -> click.Command:
        """``robot fake fulu``: the fake gateway served on loopback."""
        return cast("click.Command", load_target(self.fake_target))

    def contract_harness(self) -> AbstractContextManager[SupplierHarness]:
        """The supplier contract suite's harness: the client on the fake over loopback."""
        return cast("AbstractContextManager[SupplierHarness]",
                    load_target(self.harness_target)())


__all__ = ["FuluConfig", "FuluSupplier", "FuluSupplierFactory"]
