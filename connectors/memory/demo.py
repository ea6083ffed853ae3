"""Demo driver for the in-memory platform (used when no real platform's fake is installed,
and by the demo's own tests)."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from connectors.base import Order, OrderLine, PlatformStatus, RefundState
from connectors.memory import MemoryPlatform
from connectors.plugin import Props


class MemoryDemo:
    platform = "memory"
    pushes = False
    sku_key = "outer_id"  # the merchant's own item code (商家编码)

    def __init__(self) -> None:
        self.name = f"demo-{uuid.uuid4().hex}"
        self.backend = MemoryPlatform.named(self.name)
        self._ids = itertools.count(1)

    async def start(self, robot_url: str) -> dict[str, Any]:
        return {"name": self.name}

    def create_paid_order(self, sku: str, quantity: int, buyer: str, *,
                          message: str | None = None, properties: Props = ()) -> str:
        oid = f"M{next(self._ids):07d}"
        self.backend.put_order(Order(
            platform_order_id=oid, status=PlatformStatus.PAID, buyer_id=buyer,
            buyer_message=message,
            lines=(OrderLine(line_id=f"{oid}-1", quantity=quantity, outer_id=sku,
                             title="VIP 月卡", unit_price_cents=1990,
                             properties=tuple(properties)),),
            total_cents=1990 * quantity))
        return oid

    def refund(self, platform_order_id: str) -> None:
        self.backend.set_status(platform_order_id, PlatformStatus.CLOSED, RefundState.REFUNDED)

    def inject_faults(self) -> int:
        self.backend.inject("ship", "unavailable", times=3)
        return 3

    def shipments(self) -> dict[str, int]:
        return self.backend.all_shipments()

    async def stop(self) -> None:
        return None


def driver() -> MemoryDemo:
    return MemoryDemo()
