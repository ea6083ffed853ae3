"""Contract harness for Pinduoduo: the fake POP served by uvicorn on a loopback port."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import uvicorn

from connectors.base import Connector
from connectors.pinduoduo import MemoryShopContext, PinduoduoConfig, PinduoduoConnector
from connectors.pinduoduo.fake import FakePdd, create_app
from connectors.pinduoduo.limiter import RateLimiter


@contextmanager
def serve_fake(state: FakePdd) -> Iterator[str]:
    """Serve ``state`` on a free loopback port in a background thread; yields the gateway."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections queue from now on, so no readiness wait is needed
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(state), log_level="warning", lifespan="off", ws="none",
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/api/router"
    finally:
        state.release_hangs()
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


class PinduoduoHarness:
    platform = "pinduoduo"
    sku_id = "880001"

    def __init__(self, gateway: str, state: FakePdd) -> None:
        self.state = state
        self.context = MemoryShopContext("contract-pdd")
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


@contextmanager
def make_harness() -> Iterator[PinduoduoHarness]:
    state = FakePdd()
    with serve_fake(state) as gateway:
        yield PinduoduoHarness(gateway, state)
