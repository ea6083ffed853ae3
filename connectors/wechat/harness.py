"""Contract harness for the WeChat mini-program: the connector against the fake over loopback.

``platform_order_id`` is the merchant's ``out_trade_no``. Payments are made with an
``out_trade_no`` starting with the configured ``sku_rules`` prefix (unit price 10.00), which
is how ``fetch_order`` (``get_order`` carries no ``attach``) knows the SKU and quantity.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx

from connectors.base import Connector
from connectors.common.context import MemoryContext
from connectors.testing.harness import served_write_backs
from connectors.testing.loopback import serve_in_thread
from connectors.wechat.client import WechatConnector
from connectors.wechat.config import WechatConfig
from connectors.wechat.fake import FakeClock, FakeWechat, create_app

SKU = "wx-card"
PREFIX = "CT"
UNIT = 1000
BACKEND_SECRET = "backend-hmac-secret"  # noqa: S105 - a test credential


def platform_config(fake: FakeWechat, base_url: str = "http://wechat.fake",
                    **overrides: Any) -> dict[str, Any]:
    """The ``platform_config`` mapping for a shop on ``fake`` (as a shop file would hold)."""
    values: dict[str, Any] = {
        "appid": fake.appid, "app_secret": fake.app_secret, "mchid": fake.mchid,
        "apiv3_key": fake.apiv3_key,
        "wechatpay_public_keys": {fake.serial: fake.public_key_pem},
        "backend_secret": BACKEND_SECRET,
        "sku_rules": [{"prefix": PREFIX, "sku": SKU, "unit_price_cents": UNIT}],
        "base_url": base_url,
    }
    values.update(overrides)
    return values


class WechatHarness:
    platform = "wechat"
    sku_id = SKU

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.fake = FakeWechat(clock=self.clock.now)
        self.base_url = ""
        self.context = MemoryContext("wx-shop")  # one shop's durable store, shared

    def connector(self) -> Connector:
        # Driven from several asyncio.run() loops: no pooled connection may outlive its loop.
        transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))
        config = WechatConfig(**platform_config(self.fake, self.base_url))
        return WechatConnector(config, self.context, transport=transport, clock=self.clock.now)

    def create_paid_order(self, quantity: int = 1) -> str:
        return self.fake.create_payment(total=UNIT * quantity,
                                        out_trade_no=f"{PREFIX}{secrets.token_hex(8)}")

    def close_order(self, platform_order_id: str) -> None:
        self.fake.refund(platform_order_id)

    def shipments(self, platform_order_id: str) -> int:
        return self.fake.payments[platform_order_id].shipments

    def memo(self, platform_order_id: str) -> str | None:
        return None  # WeChat has no seller memo

    def expire_credentials(self) -> None:
        self.fake.revoke()

    def signed_push(self, platform_order_id: str) -> tuple[Mapping[str, str], bytes] | None:
        note = self.fake.notification_for(platform_order_id)
        body = self.fake.envelope(note)
        return self.fake.signed(body, datetime.now(UTC)), body

    def write_backs(self, platform_order_id: str) -> list[dict[str, Any]]:
        return served_write_backs(self.base_url, platform_order_id)


@contextmanager
def make_harness() -> Iterator[WechatHarness]:
    harness = WechatHarness()
    with serve_in_thread(create_app(harness.fake)) as url:
        harness.base_url = url
        yield harness
