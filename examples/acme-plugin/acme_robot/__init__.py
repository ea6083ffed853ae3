"""The Acme platform plugin: its factory, registered under the ``robot.connectors`` entry point.

Built only on the robot's ground floor. Importing it stays cheap: the fake, the fake command
and the harness are imported only when the robot asks for them.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from acme_robot.client import AcmeConnector
from acme_robot.config import AcmeConfig
from connectors.base import ShopContext
from connectors.common.factory import PlatformFactory

if TYPE_CHECKING:
    import click

    from connectors.testing.harness import ChannelHarness


__all__ = ["AcmeConfig", "AcmeConnector", "AcmeConnectorFactory"]


class AcmeConnectorFactory(PlatformFactory[AcmeConfig, AcmeConnector]):
    """Builds an :class:`~acme_robot.client.AcmeConnector` from a validated config."""

    platform = "acme"
    config_model = AcmeConfig

    def build(self, config: AcmeConfig, context: ShopContext) -> AcmeConnector:

        return AcmeConnector(config, shop=context.shop)

    def fake_command(self) -> click.Command:
        """``robot fake acme``."""
        from acme_robot.cli import fake_acme

        return fake_acme

    def contract_harness(self) -> AbstractContextManager[ChannelHarness]:
        """The channel contract suite's harness: the connector on the fake."""
        from acme_robot.harness import make_harness

        return make_harness()
