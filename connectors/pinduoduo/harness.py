"""Contract harness for Pinduoduo: the fake POP served by uvicorn on a loopback port."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.base import Connector
from connectors.common.context import MemoryContext
from connectors.pinduoduo.client import PinduoduoConnector
from connectors.pinduoduo.config import PinduoduoConfig
from connectors.pinduoduo.fake import FakePdd, create_app
from connectors.pinduoduo.limiter import RateLimiter
from connectors.testing.harness import served_write_backs
from connectors.testing.loopback import serve_in_thread


class PinduoduoHarness:
    platform = "pinduoduo"
    sku_id = "880001"

    def __init__(self, gateway: str, state: FakePdd) -> None:
        self.state = state
        self.context = MemoryContext("contract-pdd")
        self.limiter = RateLimiter()
        self.config = PinduoduoConfig(
            client_id=state.client_id, client_secret=state.client_secret,
            access_token=state.access_token, refresh_token=state.refresh_token,
            gateway=gateway, logistics_id=3, max_retries=1, backoff_seconds=0.01,
        )

    def connector(self) -> Connector:
        return PinduoduoConnector(self.config, context=self.context, limiter=self.limiter)

    def create_paid_order(self, quantity: int = 1) -> str:
        # Updated a few minutes ago, so the order is inside a window ending at now - lag.
        return self.state.create_order(
            items=[{"goods_name": "contract card", "goods_price": "10.00",
                    "sku_id": int(self.sku_id), "goods_count": quantity}],
            updated_at=datetime.now(UTC) - timedelta(minutes=5),
        )

    def close_order(self, platform_order_id: str) -> None:
        self.state.request_refund(platform_order_id, after_sales_status=10)

    def shipments(self, platform_order_id: str) -> int:
        with self.state.lock:
            return self.state.orders[platform_order_id].shipments

    def memo(self, platform_order_id: str) -> str | None:
        with self.state.lock:
            return self.state.orders[platform_order_id].remark or None

    def expire_credentials(self) -> None:
        self.state.revoke_authorization()

    def signed_push(self, platform_order_id: str) -> tuple[Mapping[str, str], bytes] | None:
        return None  # POP pushes over a WebSocket, never over HTTP

    def write_backs(self, platform_order_id: str) -> list[dict[str, Any]]:
        return served_write_backs(str(self.config.gateway).removesuffix("/api/router"),
                                  platform_order_id)


@contextmanager
def make_harness() -> Iterator[PinduoduoHarness]:
    state = FakePdd()
    with serve_in_thread(create_app(state), before_stop=state.release_hangs) as base_url:
        yield PinduoduoHarness(f"{base_url}/api/router", state)
