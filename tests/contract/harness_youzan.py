"""Contract harness for Youzan Cloud: the connector against the fake over real loopback HTTP."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from connectors.base import Connector
from connectors.youzan.fake import FakeClock
from tests.contract.harness import served_write_backs
from tests.youzan.helpers import MemoryContext, connector_for, live_fake, make_fake

SKU = 36000001


class YouzanHarness:
    platform = "youzan"
    sku_id = str(SKU)

    def __init__(self, base_url: str, clock: FakeClock) -> None:
        self.base_url = base_url
        self.clock = clock
        self.fake = make_fake(clock)
        self.context = MemoryContext()  # one shop's durable store, shared like the real one

    def connector(self) -> Connector:
        return connector_for(self.base_url, self.context, clock=self.clock, pooled=False,
                             lag_seconds=0, initial_lookback_minutes=10)

    def create_paid_order(self, quantity: int = 1) -> str:
        return self.fake.create_trade(items=[{"title": "contract card", "price": "10.00",
                                              "sku_id": SKU, "num": quantity}])

    def close_order(self, platform_order_id: str) -> None:
        self.fake.close_trade(platform_order_id)

    def shipments(self, platform_order_id: str) -> int:
        return self.fake.trades[platform_order_id].shipments

    def memo(self, platform_order_id: str) -> str | None:
        return self.fake.trades[platform_order_id].memo

    def expire_credentials(self) -> None:
        self.fake.revoke_authorization()

    def signed_push(self, platform_order_id: str) -> tuple[Mapping[str, str], bytes] | None:
        return self.fake.signed_push(platform_order_id)

    def write_backs(self, platform_order_id: str) -> list[dict[str, Any]]:
        return served_write_backs(self.base_url, platform_order_id)


@contextmanager
def make_harness() -> Iterator[YouzanHarness]:
    clock = FakeClock()
    harness = YouzanHarness("", clock)
    with live_fake(harness.fake) as url:
        harness.base_url = url
        yield harness
