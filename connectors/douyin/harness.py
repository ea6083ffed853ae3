"""Contract harness for Douyin: the connector against the fake over real loopback HTTP."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx

from connectors.base import Connector
from connectors.common.context import MemoryContext
from connectors.douyin.client import DouyinConnector
from connectors.douyin.config import DouyinConfig
from connectors.douyin.fake import FakeClock, FakeDouyin, create_app
from connectors.douyin.fake_state import CATALOG
from connectors.testing.harness import served_write_backs
from connectors.testing.loopback import serve_in_thread

APP_KEY = "fake-app-key"
APP_SECRET = "fake-app-secret"  # noqa: S105 - the fake's test credential
SHOP_ID = "77001"
SKU = CATALOG[0][0].sku


def make_config(base_url: str = "http://douyin.fake", **overrides: Any) -> DouyinConfig:
    """A shop's config for the fake's test credentials at ``base_url``."""
    values: dict[str, Any] = {"app_key": APP_KEY, "app_secret": APP_SECRET,
                              "shop_id": SHOP_ID, "base_url": base_url}
    values.update(overrides)
    return DouyinConfig(**values)


def make_fake(clock: FakeClock | None = None, **kwargs: Any) -> FakeDouyin:
    """The fake with the test credentials, on ``clock`` (a fresh FakeClock when None)."""
    return FakeDouyin(app_key=APP_KEY, app_secret=APP_SECRET, shop_id=SHOP_ID,
                      clock=(clock or FakeClock()).now, **kwargs)


class DouyinHarness:
    platform = "douyin"
    sku_id = SKU

    def __init__(self, base_url: str, clock: FakeClock) -> None:
        self.base_url = base_url
        self.clock = clock
        self.fake = make_fake(clock)
        self.context = MemoryContext("dy-shop")  # one shop's durable store, shared

    def connector(self) -> Connector:
        # Driven from several asyncio.run() loops: no pooled connection may outlive its loop.
        transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))
        config = make_config(self.base_url, lag_seconds=0, initial_lookback_minutes=10)
        return DouyinConnector(config, self.context, transport=transport, clock=self.clock.now)

    def create_paid_order(self, quantity: int = 1) -> str:
        item, fields = CATALOG[0]
        return self.fake.create_order(items=[{"sku_id": item.sku, "product_name": item.title,
                                              "price": item.price, "num": quantity,
                                              **fields}])

    def close_order(self, platform_order_id: str) -> None:
        self.fake.close_order(platform_order_id)

    def shipments(self, platform_order_id: str) -> int:
        return self.fake.orders[platform_order_id].shipments

    def memo(self, platform_order_id: str) -> str | None:
        return self.fake.orders[platform_order_id].seller_words

    def expire_credentials(self) -> None:
        self.fake.revoke_authorization()

    def signed_push(self, platform_order_id: str) -> tuple[Mapping[str, str], bytes] | None:
        return self.fake.signed_push(platform_order_id)

    def write_backs(self, platform_order_id: str) -> list[dict[str, Any]]:
        return served_write_backs(self.base_url, platform_order_id)


@contextmanager
def make_harness() -> Iterator[DouyinHarness]:
    clock = FakeClock()
    harness = DouyinHarness("", clock)
    with serve_in_thread(create_app(harness.fake)) as url:
        harness.base_url = url
        yield harness
