"""Contract harness for Taobao/Tmall: the connector against the fake TOP over loopback HTTP."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx

from connectors.base import Connector
from connectors.taobao.client import TaobaoConnector
from connectors.taobao.config import TaobaoConfig
from connectors.taobao.fake import FakeTop, create_app
from connectors.testing.harness import served_write_backs
from connectors.testing.loopback import serve_in_thread


class TaobaoHarness:
    platform = "taobao"
    sku_id = "5000000000001"

    def __init__(self, top: FakeTop, gateway: str) -> None:
        self.top = top
        self.gateway = gateway

    def connector(self) -> Connector:
        # The suite drives one connector from several asyncio.run() loops; without keep-alive
        # no pooled connection outlives the loop that opened it.
        transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))
        config = TaobaoConfig(app_key=self.top.app_key, app_secret=self.top.app_secret,
                              session=self.top.session, gateway=self.gateway, lag_seconds=0,
                              initial_lookback_minutes=5)
        return TaobaoConnector(config, shop="contract", transport=transport)

    def create_paid_order(self, quantity: int = 1) -> str:
        item = {"title": "Contract card", "price": "5.00", "num": quantity, "sku_id": self.sku_id}
        return str(self.top.create_trade(items=[item]))

    def close_order(self, platform_order_id: str) -> None:
        self.top.close_trade(int(platform_order_id))

    def shipments(self, platform_order_id: str) -> int:
        return self.top.trades[int(platform_order_id)].shipments

    def memo(self, platform_order_id: str) -> str | None:
        return self.top.trades[int(platform_order_id)].seller_memo

    def expire_credentials(self) -> None:
        self.top.set_faults(expire_session=True)

    def signed_push(self, platform_order_id: str) -> tuple[Mapping[str, str], bytes] | None:
        return None  # TOP does not push over HTTP (TMC is pulled)

    def write_backs(self, platform_order_id: str) -> list[dict[str, Any]]:
        return served_write_backs(self.gateway.removesuffix("/router/rest"), platform_order_id)


@contextmanager
def make_harness() -> Iterator[TaobaoHarness]:
    top = FakeTop()
    with serve_in_thread(create_app(top), before_stop=top.release_hangs) as base_url:
        yield TaobaoHarness(top, f"{base_url}/router/rest")
