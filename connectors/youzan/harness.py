"""Contract harness for Youzan Cloud: the connector against the fake over real loopback HTTP."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx

from connectors.base import Connector
from connectors.common.context import MemoryContext
from connectors.testing.harness import served_write_backs
from connectors.testing.loopback import serve_in_thread
from connectors.youzan.client import YouzanConnector
from connectors.youzan.config import YouzanConfig
from connectors.youzan.fake import FakeClock, FakeYouzan, create_app

CLIENT_ID = "fake-client-id"
CLIENT_SECRET = "fake-client-secret"  # noqa: S105 - the fake's test credential
KDT_ID = "56232"
SKU = 36000001


def make_config(base_url: str = "http://youzan.fake", **overrides: Any) -> YouzanConfig:
    """A shop's config for the fake's test credentials at ``base_url``."""
    values: dict[str, Any] = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                              "grant_id": KDT_ID, "base_url": base_url}
    values.update(overrides)
    return YouzanConfig(**values)


def make_fake(clock: FakeClock | None = None, **kwargs: Any) -> FakeYouzan:
    """The fake with the test credentials, on ``clock`` (a fresh FakeClock when None)."""
    return FakeYouzan(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, kdt_id=KDT_ID,
                      clock=(clock or FakeClock()).now, **kwargs)


class YouzanHarness:
    platform = "youzan"
    sku_id = str(SKU)

    def __init__(self, base_url: str, clock: FakeClock) -> None:
        self.base_url = base_url
        self.clock = clock
        self.fake = make_fake(clock)
        self.context = MemoryContext("yz-shop")  # one shop's durable store, shared

    def connector(self) -> Connector:
        # Driven from several asyncio.run() loops: no pooled connection may outlive its loop.
        transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))
        config = make_config(self.base_url, lag_seconds=0, initial_lookback_minutes=10)
        return YouzanConnector(config, self.context, transport=transport, clock=self.clock.now)

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
    with serve_in_thread(create_app(harness.fake)) as url:
        harness.base_url = url
        yield harness
