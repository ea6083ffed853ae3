"""Demo driver for Taobao: the fake TOP gateway on loopback, driven like a busy shop."""

from __future__ import annotations

from typing import Any

from connectors.fakeserve import ServedFake, serve_fake
from connectors.plugin import Props
from connectors.taobao.fake import create_app
from connectors.taobao.fake_state import FakeTop, sku_properties_name


class TaobaoDemo:
    platform = "taobao"
    pushes = False
    sku_key = "outer_id"  # the merchant's own item code (商家编码)

    def __init__(self) -> None:
        self.state = FakeTop()
        self._served: ServedFake | None = None

    async def start(self, robot_url: str) -> dict[str, Any]:
        self._served = await serve_fake(create_app(self.state))
        return {
            "app_key": self.state.app_key,
            "app_secret": self.state.app_secret,
            "session": self.state.session,
            "gateway": f"{self._served.base_url}/router/rest",
            # A demo wants orders within seconds: short, overlapping windows right up to now.
            "window_minutes": 1,
            "lag_seconds": 0,
            "overlap_seconds": 2,
            "initial_lookback_minutes": 5,
            "timeout_seconds": 5,
        }

    def create_paid_order(self, sku: str, quantity: int, buyer: str, *,
                          message: str | None = None, properties: Props = ()) -> str:
        item: dict[str, Any] = {"title": "优酷VIP月卡 Youku VIP month", "price": "19.90",
                                "num": quantity, "outer_sku_id": sku}
        if properties:
            item["sku_properties_name"] = sku_properties_name(properties)
        tid = self.state.create_trade(items=[item], buyer_open_uid=f"AAH_{buyer}",
                                      buyer_message=message)
        return str(tid)

    def refund(self, platform_order_id: str) -> None:
        self.state.request_refund(int(platform_order_id), status="SUCCESS")

    def inject_faults(self) -> int:
        self.state.set_faults(http_500=2, throttle=2, ban_seconds=1)
        return 4

    def shipments(self) -> dict[str, int]:
        with self.state.lock:
            return {str(tid): t.shipments for tid, t in self.state.trades.items() if t.shipments}

    async def stop(self) -> None:
        self.state.release_hangs()
        if self._served is not None:
            await self._served.stop()


def driver() -> TaobaoDemo:
    return TaobaoDemo()
