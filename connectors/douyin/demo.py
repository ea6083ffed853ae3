"""Demo driver for Douyin (抖店): the fake gateway on loopback, pushing every paid order to the
robot's webhook (tag 101) while the robot also polls, and selling in live-stream bursts —
a few hundred orders paid within seconds, as when a streamer opens the cart.

Orders carry the demo's SKU as the merchant's SKU code (``out_sku_id``), which the shop file
maps; the codes are synced to each sub-order (coupons.syncV2) and shown in the fake's buyer
view.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from connectors.douyin.fake import PushLoop, PushSender, create_app
from connectors.douyin.fake_state import FakeDouyin
from connectors.fakeserve import ServedFake, serve_fake
from connectors.plugin import Props

#: Orders of one live-stream burst (the demo adds them at full speed after its stream).
BURST = 300
#: Douyin's numeric SKU id for the demo's SKU codes (the shop maps the SKU code).
_SKU_IDS = {"SKU-VIP-MONTH": "1750000101", "SKU-VIP-BUNDLE": "1750000102",
            "SKU-PREORDER": "1750000103"}


class DouyinDemo:
    platform = "douyin"
    pushes = True
    sku_key = "outer_id"  # the merchant's SKU code (out_sku_id)
    #: Orders ``robot demo`` adds as one live-stream burst.
    burst = BURST

    def __init__(self) -> None:
        self.state = FakeDouyin()
        self._served: ServedFake | None = None
        self._sender = PushSender(self.state)
        self._loop = PushLoop(self._sender, interval=0.3)

    async def start(self, robot_url: str) -> dict[str, Any]:
        self._served = await serve_fake(create_app(self.state, self._sender))
        self.state.push_url = f"{robot_url}/hooks/douyin-demo"
        self._loop.start()
        return {
            "app_key": self.state.app_key,
            "app_secret": self.state.app_secret,
            "shop_id": self.state.shop_id,
            "base_url": self._served.base_url,
            "window_minutes": 1,
            "lag_seconds": 0,
            "overlap_seconds": 2,
            "initial_lookback_minutes": 5,
            "timeout_seconds": 5,
            "page_size": 100,
        }

    def create_paid_order(self, sku: str, quantity: int, buyer: str, *,
                          message: str | None = None, properties: Props = ()) -> str:
        return self.create_paid_order_lines([(sku, quantity)], buyer, message=message,
                                            properties=properties)

    def create_paid_order_lines(self, lines: Sequence[tuple[str, int]], buyer: str, *,
                                message: str | None = None, properties: Props = ()) -> str:
        """One shop order with a sub-order per ``(sku, quantity)``, as a buyer's cart of
        several goods is paid at once; its shop order id."""
        return self.state.create_order(items=[{
            "sku_id": _SKU_IDS.get(sku, "1750000999"), "out_sku_id": sku,
            "product_id": "3600000101", "product_name": "腾讯视频VIP月卡 Tencent Video VIP",
            "price": "19.90", "num": quantity, "spec": properties} for sku, quantity in lines],
            buyer=f"dy_{buyer}", buyer_words=message)

    def refund(self, platform_order_id: str) -> None:
        self.state.close_order(platform_order_id)

    def inject_faults(self) -> int:
        self.state.set_faults(http_500=2)
        return 2

    def shipments(self) -> dict[str, int]:
        with self.state.lock:
            return {oid: o.shipments for oid, o in self.state.orders.items() if o.shipments}

    def buyer_view(self, platform_order_id: str) -> list[dict[str, Any]]:
        """What the buyer sees on Douyin's order page: each sub-order's certificates."""
        return self.state.buyer_view(platform_order_id)

    async def stop(self) -> None:
        self._loop.stop()
        self._sender.close()
        if self._served is not None:
            await self._served.stop()


def driver() -> DouyinDemo:
    return DouyinDemo()
