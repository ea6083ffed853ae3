"""Demo driver for Pinduoduo: the fake POP gateway on loopback, driven like a busy shop."""

from __future__ import annotations

from typing import Any

from connectors.fakeserve import ServedFake, serve_fake
from connectors.pinduoduo.fake import create_app
from connectors.pinduoduo.fake_state import FakePdd, goods_spec
from connectors.plugin import Props


class PinduoduoDemo:
    platform = "pinduoduo"
    pushes = False
    sku_key = "outer_id"  # the merchant's own item code (商家编码)

    def __init__(self) -> None:
        self.state = FakePdd()
        self._served: ServedFake | None = None

    async def start(self, robot_url: str) -> dict[str, Any]:
        self._served = await serve_fake(create_app(self.state))
        return {
            "client_id": self.state.client_id,
            "client_secret": self.state.client_secret,
            "access_token": self.state.access_token,
            "refresh_token": self.state.refresh_token,
            "gateway": f"{self._served.base_url}/api/router",
            "logistics_id": 3,  # the fake's "no logistics" carrier; a real shop sets its own
            # A demo wants orders within seconds: short, overlapping windows right up to now.
            "window_minutes": 1,
            "lag_seconds": 0,
            "overlap_seconds": 2,
            "initial_lookback_minutes": 5,
            "timeout_seconds": 5,
            "backoff_seconds": 0.1,
        }

    def create_paid_order(self, sku: str, quantity: int, buyer: str, *,
                          message: str | None = None, properties: Props = ()) -> str:
        return self.state.create_order(items=[{"goods_name": "爱奇艺月卡 iQIYI month",
                                               "goods_price": "19.90", "goods_count": quantity,
                                               "outer_id": sku,
                                               "goods_spec": goods_spec(properties)}],
                                       buyer_memo=message)

    def refund(self, platform_order_id: str) -> None:
        self.state.request_refund(platform_order_id, after_sales_status=10)

    def inject_faults(self) -> int:
        self.state.set_faults(http_500=2, throttle=2)
        return 4

    def shipments(self) -> dict[str, int]:
        with self.state.lock:
            return {sn: o.shipments for sn, o in self.state.orders.items() if o.shipments}

    async def stop(self) -> None:
        self.state.release_hangs()
        if self._served is not None:
            await self._served.stop()


def driver() -> PinduoduoDemo:
    return PinduoduoDemo()
