"""Demo driver for Youzan: the fake Youzan Cloud on loopback, pushing every paid order to the
robot's webhook (and the robot polling too), like a shop with both intakes switched on."""

from __future__ import annotations

from typing import Any

from connectors.fakeserve import ServedFake, serve_fake
from connectors.plugin import Props
from connectors.youzan.fake import create_app
from connectors.youzan.fake_push import PushLoop, PushSender
from connectors.youzan.fake_state import FakeYouzan


class YouzanDemo:
    platform = "youzan"
    pushes = True
    sku_key = "outer_id"  # the merchant's own item code (商家编码)

    def __init__(self) -> None:
        self.state = FakeYouzan()
        self._served: ServedFake | None = None
        self._sender = PushSender(self.state)
        self._loop = PushLoop(self._sender, interval=0.3)

    async def start(self, robot_url: str) -> dict[str, Any]:
        self._served = await serve_fake(create_app(self.state, self._sender))
        self.state.push_url = f"{robot_url}/hooks/youzan-demo"
        self._loop.start()
        return {
            "client_id": self.state.client_id,
            "client_secret": self.state.client_secret,
            "grant_id": str(self.state.kdt_id),
            "base_url": self._served.base_url,
            "window_minutes": 1,
            "lag_seconds": 0,
            "overlap_seconds": 2,
            "initial_lookback_minutes": 5,
            "timeout_seconds": 5,
        }

    def create_paid_order(self, sku: str, quantity: int, buyer: str, *,
                          message: str | None = None, properties: Props = ()) -> str:
        return self.state.create_trade(items=[{"title": "腾讯视频VIP Tencent Video VIP",
                                               "price": "19.90", "num": quantity,
                                               "outer_sku_id": sku,
                                               "buyer_messages": dict(properties)}],
                                       yz_open_id=f"yz_{buyer}", buyer_message=message)

    def refund(self, platform_order_id: str) -> None:
        self.state.close_trade(platform_order_id)

    def inject_faults(self) -> int:
        self.state.set_faults(http_500=2)
        return 2

    def shipments(self) -> dict[str, int]:
        with self.state.lock:
            return {tid: t.shipments for tid, t in self.state.trades.items() if t.shipments}

    async def stop(self) -> None:
        self._loop.stop()
        self._sender.close()
        if self._served is not None:
            await self._served.stop()


def driver() -> YouzanDemo:
    return YouzanDemo()
