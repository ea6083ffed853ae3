"""What a plugin's factory may bring besides its connector: its fake, its demo driver and its
contract-test harness (each optional; a factory without one simply has none).

The robot finds them on the factory an entry point names (``robot.connectors``), like the
connector itself, so a third party adds a platform with all its tools without touching the
robot:

* ``fake_command()`` returns the click command that serves the platform's fake; the robot's
  ``robot fake`` group lists it under the factory's platform name (build it on
  :mod:`connectors.fakecli`: loopback only, the shared options);
* ``demo_driver()`` returns a :class:`DemoDriver`, which ``robot demo`` drives like a busy shop;
* ``contract_harness()`` returns a context manager yielding a
  :class:`connectors.testing.harness.ChannelHarness`, which the contract suite
  (:mod:`connectors.testing.channel`) runs against.

Each returns None when the plugin brings no such thing, and must import its platform's fake
lazily, inside the method, so that loading a factory stays cheap and side-effect free
(:class:`connectors.common.factory.PlatformFactory` does both from ``"module:attribute"``
targets). This module is part of the ground floor: it imports nothing
from the robot.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

#: SKU properties as ``(name, value)`` pairs (a demo order's custom fields).
Props = tuple[tuple[str, str], ...]

if TYPE_CHECKING:
    import click

    from connectors.testing.harness import ChannelHarness


class DemoDriver(Protocol):
    """A platform's fake, driven like a busy shop (``robot demo``, the chaos runs)."""

    platform: str
    #: True when the platform pushes orders to the robot's webhook
    pushes: bool
    #: which key of a shop's ``items:`` matches the SKU the driver puts on its orders
    sku_key: str

    async def start(self, robot_url: str) -> dict[str, Any]:
        """Start the fake on loopback (pushing to ``robot_url``'s webhook if the platform
        pushes); return the shop's ``platform_config`` for it."""
        ...

    def create_paid_order(self, sku: str, quantity: int, buyer: str, *,
                          message: str | None = None, properties: Props = ()) -> str:
        """A buyer pays for ``quantity`` of the item whose merchant code (outer id) is ``sku``,
        with ``message`` to the seller (留言) and the SKU ``properties`` carried in the
        platform's own fields where it has them; returns the platform order id."""
        ...

    def refund(self, platform_order_id: str) -> None:
        """The buyer is refunded before shipping (order closed on the platform)."""
        ...

    def inject_faults(self) -> int:
        """Make the platform misbehave a little (5xx, throttling...); returns faults armed."""
        ...

    def shipments(self) -> dict[str, int]:
        """Shipments the platform applied, per order."""
        ...

    async def stop(self) -> None: ...


@runtime_checkable
class HasFake(Protocol):
    """A factory that brings its platform's fake as a ``robot fake`` sub-command."""

    def fake_command(self) -> click.Command | None: ...


@runtime_checkable
class HasDemo(Protocol):
    """A factory that brings a demo driver for ``robot demo``."""

    def demo_driver(self) -> DemoDriver | None: ...


@runtime_checkable
class HasHarness(Protocol):
    """A factory that brings its contract-test harness."""

    def contract_harness(self) -> AbstractContextManager[ChannelHarness] | None: ...
