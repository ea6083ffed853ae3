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

from connectors.base import Connector
from connectors.wechat.fake import FakeClock, FakeWechat
from tests.contract.harness import served_write_backs
from tests.wechat.helpers import PREFIX, SKU, UNIT, MemoryContext, connector_for, live_fake


class WechatHarness:
    platform = "wechat"
    sku_id = SKU

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.fake = FakeWechat(clock=self.clock.now)
        self.base_url = ""
        self.context = MemoryContext()  # one shop's durable store, shared like the real one

    def connector(self) -> Connector:
        return connector_for(self.fake, self.base_url, self.context, clock=self.clock)

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
    with live_fake(harness.fake) as url:
        harness.base_url = url
        yield harness
