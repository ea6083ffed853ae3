"""The Acme platform plugin: its factory, registered under the ``robot.connectors`` entry point.

Built only on the robot's ground floor. Importing it stays cheap: the fake command and the
contract harness are named as targets, imported only when the robot asks for them.
"""

from __future__ import annotations

from acme_robot.client import AcmeConnector
from acme_robot.config import AcmeConfig
from connectors.base import ShopContext
from connectors.common.factory import PlatformFactory

__all__ = ["AcmeConfig", "AcmeConnector", "AcmeConnectorFactory"]


class AcmeConnectorFactory(PlatformFactory[AcmeConfig, AcmeConnector]):
    """Builds an :class:`~acme_robot.client.AcmeConnector` from a validated config."""

    platform = "acme"
    config_model = AcmeConfig
    #: What the plugin brings besides its connector, imported only when the robot asks.
    fake_target = "acme_robot.cli:fake_acme"
    harness_target = "acme_robot.harness:make_harness"

    def build(self, config: AcmeConfig, context: ShopContext) -> AcmeConnector:
        return AcmeConnector(config, shop=context.shop)
