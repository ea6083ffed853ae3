"""Contract harness for the built-in in-memory platform."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from connectors.base import Connector, Order, OrderLine, PlatformStatus
from connectors.memory import (
    TEST_PUSH_SECRET,
    MemoryConnector,
    MemoryPlatform,
    order_to_json,
    sign_push,
)

_ids = itertools.count(1)


class MemoryHarness:
    platform = "memory"
    sku_id = "contract-sku"

    def __init__(self) -> None:
        self.backend = MemoryPlatform()

    def connector(self) -> Connector:
        return MemoryConnector(self.backend)

    def create_paid_order(self, quantity: int = 1) -> str:
        oid = f"MEM{next(_ids):06d}"
        self.backend.put_order(Order(
            platform_order_id=oid, status=PlatformStatus.PAID, buyer_id="buyer-1",
            lines=(OrderLine(line_id=f"{oid}-1", quantity=quantity, sku_id=self.sku_id,
                             unit_price_cents=1000),),
            total_cents=1000 * quantity))
        return oid

    def close_order(self, platform_order_id: str) -> None:
        self.backend.set_status(platform_order_id, PlatformStatus.CLOSED)

    def shipments(self, platform_order_id: str) -> int:
        return self.backend.shipments(platform_order_id)

    def memo(self, platform_order_id: str) -> str | None:
        return self.backend.memo(platform_order_id)

    def expire_credentials(self) -> None:
        for kind in ("poll", "fetch", "ship", "memo"):
            self.backend.inject(kind, "auth", times=1000)

    def signed_push(self, platform_order_id: str) -> tuple[Mapping[str, str], bytes] | None:
        body = json.dumps({"message_id": f"m-{platform_order_id}",
                           "order": order_to_json(self.backend.order(platform_order_id))}).encode()
        return {"X-Memory-Sign": sign_push(TEST_PUSH_SECRET, body)}, body


@contextmanager
def make_harness() -> Iterator[MemoryHarness]:
    yield MemoryHarness()
