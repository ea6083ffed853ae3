"""Demo driver for a WeChat mini-program shop: WeChat Pay notifies the robot's webhook of
every payment (signed, encrypted, retried like WeChat), and the fake api.weixin.qq.com takes
the shipping-info uploads. The mini-program puts the SKU in ``attach``."""

from __future__ import annotations

from typing import Any

from connectors.fakeserve import ServedFake, serve_fake
from connectors.plugin import Props
from connectors.wechat.fake import create_app
from connectors.wechat.fake_pay import PayLoop, PaySender
from connectors.wechat.fake_state import FakeWechat, sku_attach


class WechatDemo:
    platform = "wechat"
    pushes = True
    sku_key = "sku_id"  # the mini-program's own SKU code, carried in attach

    def __init__(self) -> None:
        self.state = FakeWechat()
        self._served: ServedFake | None = None
        self._sender = PaySender(self.state)
        self._loop = PayLoop(self._sender, interval=0.3)

    async def start(self, robot_url: str) -> dict[str, Any]:
        self._served = await serve_fake(create_app(self.state, self._sender))
        self.state.notify_url = f"{robot_url}/hooks/wechat-demo"
        self._loop.start()
        return {
            "appid": self.state.appid,
            "app_secret": self.state.app_secret,
            "mchid": self.state.mchid,
            "apiv3_key": self.state.apiv3_key,
            "wechatpay_public_keys": {self.state.serial: self.state.public_key_pem},
            "base_url": self._served.base_url,
            "not_indexed_retry_seconds": 0.5,
        }

    def create_paid_order(self, sku: str, quantity: int, buyer: str, *,
                          message: str | None = None, properties: Props = ()) -> str:
        # WeChat Pay carries no SKU properties: the mini-program puts the message in attach.
        return self.state.create_payment(total=1990 * quantity,
                                         attach=sku_attach(sku, quantity, message),
                                         description="游戏点卡 game card")

    def refund(self, platform_order_id: str) -> None:
        self.state.refund(platform_order_id)

    def inject_faults(self) -> int:
        return 0

    def shipments(self) -> dict[str, int]:
        with self.state.lock:
            return {oid: p.shipments for oid, p in self.state.payments.items() if p.shipments}

    async def stop(self) -> None:
        self._loop.stop()
        self._sender.close()
        if self._served is not None:
            await self._served.stop()


def driver() -> WechatDemo:
    return WechatDemo()
