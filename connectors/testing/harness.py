"""What each channel plugin provides to the contract suite (:mod:`connectors.testing.channel`).

A harness runs the platform's fake (over loopback HTTP for real platforms) and gives the
suite a connector wired to it, plus the platform-side actions a buyer or the platform would
take. A plugin's factory returns it from ``contract_harness()`` (a context manager yielding
a :class:`ChannelHarness`), which is how the robot's own tests find every installed one.
This module imports neither pytest nor the robot.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import httpx

from connectors.base import Connector
from connectors.supplier import Supplier


@runtime_checkable
class ChannelHarness(Protocol):
    platform: str
    #: the SKU id that paid orders created by ``create_paid_order`` carry on their line
    sku_id: str

    def connector(self) -> Connector:
        """A connector for one shop on the fake, with valid credentials."""
        ...

    def create_paid_order(self, quantity: int = 1) -> str:
        """A new paid, unshipped order of ``quantity`` units of ``sku_id``; its platform id."""
        ...

    def close_order(self, platform_order_id: str) -> None:
        """The buyer is refunded / the order is closed before shipping."""
        ...

    def shipments(self, platform_order_id: str) -> int:
        """How many shipments the platform applied to this order."""
        ...

    def memo(self, platform_order_id: str) -> str | None:
        """The seller memo the platform holds for this order (None when the platform has
        no memo and the connector writes none)."""
        ...

    def expire_credentials(self) -> None:
        """From now on the shop's authorization is expired / revoked on the platform."""
        ...

    def signed_push(self, platform_order_id: str) -> tuple[Mapping[str, str], bytes] | None:
        """Headers and raw body of a genuine push announcing this paid order, or None when
        the platform does not push over HTTP."""
        ...


@runtime_checkable
class WireHarness(ChannelHarness, Protocol):
    """A platform whose fake speaks the wire protocol over loopback HTTP (every real
    platform; not the in-memory one, whose "calls" are Python calls)."""

    def write_backs(self, platform_order_id: str) -> list[dict[str, Any]]:
        """The ship and memo calls the fake recorded for this order, as its
        ``/__fake__/state`` serves them (what the chaos harness reads)."""
        ...


def served_write_backs(fake_root: str, platform_order_id: str) -> list[dict[str, Any]]:
    """The ``write_backs`` of a fake's ``/__fake__/state`` for one order, over HTTP."""
    state = httpx.get(f"{fake_root.rstrip('/')}/__fake__/state", timeout=10).json()
    return [c for c in state["write_backs"] if c["order_id"] == platform_order_id]


@runtime_checkable
class SupplierHarness(Protocol):
    """What a supplier plugin provides to the supplier contract suite
    (:mod:`connectors.testing.supplier`): a client on the supplier's fake, and the
    supplier-side actions and faults. Returned by the factory's ``contract_harness()``."""

    #: a top-up product needing an account only (no area, no server)
    topup_product: str

    @property
    def card_product(self) -> str | None:
        """A card product; None when the supplier sells top-ups only."""
        ...

    def supplier(self) -> Supplier:
        """A client of the fake with valid credentials."""
        ...

    def settle(self) -> None:
        """The supplier finishes every order it is processing (success or armed failure)."""
        ...

    def charged_cents(self) -> int:
        """What the supplier holds for our orders in all (charged and not refunded)."""
        ...

    def lose_next_answer(self) -> None:
        """The next placement is made, but its answer never reaches us (a timeout)."""
        ...

    def lose_next_request(self) -> None:
        """The next placement never reaches the supplier (a timeout)."""
        ...

    def busy_next(self) -> None:
        """The next placement is answered "system busy" (or a 5xx) and not made."""
        ...

    def fail_next_after_accept(self, reason: str) -> None:
        """The next placement is accepted, then fails with ``reason`` (and is refunded)."""
        ...

    def duplicate_next(self) -> None:
        """The next placement is made, but answered "duplicate order" (a retried request)."""
        ...

    def callback(self, key: str) -> tuple[Mapping[str, str], bytes] | None:
        """Headers and raw body of the genuine callback for the order under ``key``, or None
        when the supplier makes no callbacks."""
        ...

    def expire_credentials(self) -> None:
        """From now on the supplier refuses our credentials."""
        ...
