"""Demo driver for 闲管家: 闲鱼 buyers pay, 闲管家 buys the codes from the robot's gateway.

Unlike the channel platforms, 闲管家 calls the robot: each ``create_paid_order`` becomes a
purchase on ``/supply/goofish-demo/…`` sent from the driver's own event loop in a thread (the
caller may be the robot's own loop), retried until the robot answers (it may be restarting),
sometimes as several copies at once; ``create_topup_order`` places a top-up (the account in
the order) the same way. ``refund`` sends the refund notice once the purchase was
answered. ``shipments`` counts, per order, the distinct sets of codes 闲管家 was handed (in
answers or callbacks): one set per served order, however often it asked.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import httpx

from connectors.fakeserve import FakeHost, ServedFake, serve_fake
from connectors.gateway import GoodsKind
from connectors.goofish import protocol as p
from connectors.goofish.fake import (
    Callback,
    Credentials,
    FakeNotifyState,
    GoofishBuyer,
    make_app,
    new_order_no,
)
from connectors.plugin import Props

#: The shop the demo writes for this driver (``robot.demo.shop_name``).
DEMO_SHOP = "goofish-demo"
COPIES_EVERY = 5  # every fifth purchase is sent three times at once
RETRY_PAUSE = 0.2
MAX_TRIES = 600  # two minutes of a robot that does not answer


class GoofishDemo:
    platform = "goofish"
    pushes = False
    sku_key = "goods_no"
    #: Added to each item of the demo's shop file: what 闲管家 pays per unit.
    item_extra: dict[str, Any] = {"price": "9.90"}  # noqa: RUF012 - read only
    #: 闲管家 only buys goods the gateway lists: an unknown goods number places no order.
    refuses_unknown = True

    def __init__(self) -> None:
        self.credentials = Credentials()
        self.state = FakeNotifyState(self.credentials, on_callback=self._called_back)
        self.watchers: list[Callable[[str], None]] = []
        self.refusals: dict[str, int] = {}  # order_no -> the gateway's refusal code
        self.abandoned: set[str] = set()  # orders no try placed (no robot answered)
        self._handed: dict[str, set[tuple[str, ...]]] = {}
        #: Every hand-over as it reached 闲管家, in order: ``kind`` is ``answer`` (codes in
        #: the purchase's answer) or ``ship`` (the outbox's callback); codes in plaintext,
        #: for the chaos checks to mask and compare (never printed).
        self.handovers: list[dict[str, Any]] = []
        self._placed: dict[str, Future[None]] = {}
        self._lock = threading.Lock()
        self._host = FakeHost()
        self._served: ServedFake | None = None
        self._buyer: GoofishBuyer | None = None
        self._count = 0

    async def start(self, robot_url: str) -> dict[str, Any]:
        self._served = await serve_fake(make_app(self.state))
        self._buyer = self._host.call(self._make_buyer(robot_url, self._served.base_url))
        c = self.credentials
        return {"app_id": c.app_id, "app_secret": c.app_secret, "mch_id": c.mch_id,
                "mch_secret": c.mch_secret}

    async def _make_buyer(self, robot_url: str, notify_base: str) -> GoofishBuyer:
        return GoofishBuyer(f"{robot_url}/supply/{DEMO_SHOP}", credentials=self.credentials,
                            notify_base=notify_base, notify_state=self.state, timeout=15.0)

    def point_gateway(self, robot_url: str) -> None:
        """Send later purchases to this robot (another one behind the same address)."""
        if self._buyer is not None:
            self._buyer.gateway_url = f"{robot_url}/supply/{DEMO_SHOP}"

    # -- what 闲管家 was handed -------------------------------------------------------------
    def _handed_over(self, order_no: str, items: Any, kind: str) -> None:
        if not isinstance(items, list):
            return
        codes = tuple(sorted((str(i.get("card_no", "")), str(i.get("card_pwd", "")))
                             for i in items if isinstance(i, dict)))
        with self._lock:
            self._handed.setdefault(order_no, set()).add(tuple(f"{a}/{b}" for a, b in codes))
            self.handovers.append({"seq": len(self.handovers), "received_at": time.time(),
                                   "kind": kind, "order_id": order_no, "outcome": "applied",
                                   "codes": codes})
        for watcher in list(self.watchers):
            watcher(order_no)

    def _called_back(self, callback: Callback) -> None:
        if callback.doc.get("order_status") == p.ORDER_STATUS_SUCCEEDED:
            self._handed_over(callback.order_no, _items(callback.doc), "ship")

    # -- orders ---------------------------------------------------------------------------
    def create_paid_order(self, sku: str, quantity: int, buyer: str, *,
                          message: str | None = None, properties: Props = ()) -> str:
        # 闲管家 names the account in its own recharge request; a buyer's message has no
        # place here.
        assert self._buyer is not None, "start() first"
        order_no = new_order_no()
        payload = self._buyer.purchase_payload(sku, quantity, order_no=order_no)
        with self._lock:
            self._count += 1
            copies = 3 if self._count % COPIES_EVERY == 0 else 1
        future = asyncio.run_coroutine_threadsafe(self._place(payload, copies), self._host.loop)
        with self._lock:
            self._placed[order_no] = future
        return order_no

    def create_topup_order(self, sku: str, quantity: int, account: str, buyer: str) -> str:
        """A 闲鱼 buyer pays for top-up goods: 闲管家 places the top-up (创建直充订单) naming
        the account to credit, retried like a purchase."""
        assert self._buyer is not None, "start() first"
        order_no = new_order_no()
        payload = self._buyer.recharge_payload(sku, account, quantity, order_no=order_no)
        future = asyncio.run_coroutine_threadsafe(self._place(payload, 1), self._host.loop)
        with self._lock:
            self._placed[order_no] = future
        return order_no

    async def _place(self, payload: dict[str, Any], copies: int) -> None:
        assert self._buyer is not None
        order_no = str(payload["order_no"])
        for _ in range(MAX_TRIES):
            try:
                answers = await self._buyer.concurrent_purchases(payload, copies)
            except (httpx.HTTPError, ValueError):  # robot down or restarting; not JSON
                await asyncio.sleep(RETRY_PAUSE)
                continue
            final = [a for a in answers if a.get("code") not in (None, p.ORDER_TIMEOUT)]
            for answer in final:
                data = answer.get("data") or {}
                if answer.get("code") == p.OK and data.get("order_status") == \
                        p.ORDER_STATUS_SUCCEEDED:
                    self._handed_over(order_no, _items(data), "answer")
            if final:
                if all(a.get("code") != p.OK for a in final):
                    with self._lock:
                        self.refusals[order_no] = int(final[0]["code"])
                return
            await asyncio.sleep(RETRY_PAUSE)
        with self._lock:
            self.abandoned.add(order_no)

    def refund(self, platform_order_id: str) -> None:
        with self._lock:
            placed = self._placed.get(platform_order_id)
        asyncio.run_coroutine_threadsafe(self._refund(platform_order_id, placed),
                                         self._host.loop)

    async def _refund(self, order_no: str, placed: Future[None] | None) -> None:
        assert self._buyer is not None
        if placed is not None:
            await asyncio.wrap_future(placed)  # 闲管家 refunds only what it bought
        for _ in range(MAX_TRIES):
            try:
                if (await self._buyer.refund(order_no)).get("result") == "success":
                    return
            except (httpx.HTTPError, ValueError):
                pass
            await asyncio.sleep(RETRY_PAUSE)

    def inject_faults(self) -> int:
        self.state.fail_next = 2  # the first two callbacks fail: the outbox retries them
        return 2

    def shipments(self) -> dict[str, int]:
        with self._lock:
            return {oid: len(sets) for oid, sets in self._handed.items()}

    async def stop(self) -> None:
        if self._buyer is not None:
            self._host.call(self._buyer.aclose())
        self._host.close()
        if self._served is not None:
            await self._served.stop()


def _items(doc: dict[str, Any]) -> Any:
    """What a success handed over: its ``card_items``; a top-up (order_type 1) hands over
    no code, and counts as one (empty) hand-over."""
    if doc.get("order_type") == p.ORDER_TYPE[GoodsKind.RECHARGE]:
        return doc.get("card_items") or []
    return doc.get("card_items")


def driver() -> GoofishDemo:
    return GoofishDemo()
