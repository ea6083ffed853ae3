"""The 闲管家 connector: the robot's supplier gateway for one shop, and its order callbacks.

闲管家 calls us (there is nothing to poll): :meth:`GoofishConnector.serve` checks each request's
``mch_id``, timestamp window and signature exactly as the standard says — before anything
reaches the core — then answers from the core's :class:`~connectors.gateway.SupplyBackend`.

An order served synchronously is answered with its codes (状态 20). An order that cannot be
(no stock yet, held for a person, a top-up being bought from a supplier) is answered 处理中
(10); once the core has the codes (or the supplier's top-up succeeded) it ships the order
through the outbox, and :meth:`GoofishConnector.ship` posts the signed order callback
(订单回调通知, 状态 20) to the order's ``notify_url``, retried until 闲管家 answers ``code 0``;
an order that will not be served gets the same callback with 状态 30
(:meth:`GoofishConnector.notify_failure`). 闲管家 itself ships the 闲鱼 order and messages the
codes to the buyer.

Goods-change subscriptions (自动调价) are kept by the core; when a subscribed goods' stock,
price or status changes, the core calls :meth:`GoofishConnector.notify_goods`, which posts
the signed goods callback (商品回调通知) to the subscription's address.

This module never logs a code or a secret.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlencode, urlsplit

import httpx

from connectors.base import (
    CheckReport,
    Order,
    PollResult,
    PushBatch,
    Shipment,
    ShipOutcome,
)
from connectors.errors import NotShippable, PushRejected, Unavailable
from connectors.gateway import (
    GatewayReply,
    GatewayRequest,
    Goods,
    GoodsKind,
    Purchase,
    PurchaseState,
    RefundNotice,
    Subscription,
    SupplyBackend,
    SupplyRefused,
    our_order_id,
    platform_order_of,
)
from connectors.goofish import protocol as p
from connectors.goofish.config import GoofishConfig
from connectors.goofish.sign import fresh, same, same_id, supply_sign

Handler = Callable[[dict[str, Any], SupplyBackend], Awaitable[GatewayReply]]


def _reply(code: int, msg: str, data: Any = None, status: int = 200) -> GatewayReply:
    return GatewayReply(status, p.envelope(code, msg, data))


class GoofishConnector:
    """One 闲管家 shop: a supplier gateway (no polling, no pushes, no memo)."""

    platform: ClassVar[str] = "goofish"
    receives_push: ClassVar[bool] = False
    #: 闲管家 delivers the codes to the buyer itself: ``ship`` carries them in its callback.
    shows_codes: ClassVar[bool] = True

    def __init__(self, config: GoofishConfig, *, clock: Callable[[], float] = time.time,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self._clock = clock
        self._http = httpx.AsyncClient(timeout=config.callback_timeout_seconds,
                                       transport=transport)
        self._routes: Mapping[str, Handler] = {
            p.OPEN_INFO: self._open_info, p.USER_INFO: self._user_info,
            p.GOODS_LIST: self._goods_list, p.GOODS_DETAIL: self._goods_detail,
            p.PURCHASE: self._purchase, p.RECHARGE: self._recharge,
            p.ORDER_DETAIL: self._order_detail, p.REFUND_NOTIFY: self._refund_notify,
            p.REFUND_APPLY: self._refund_apply,
            p.SUBSCRIBE: self._subscribe, p.UNSUBSCRIBE: self._unsubscribe,
            p.SUBSCRIBE_LIST: self._subscriptions,
        }

    # -- signing -------------------------------------------------------------------------
    def sign(self, body: bytes, timestamp: int | str) -> str:
        c = self.config
        return supply_sign(app_id=c.app_id, app_secret=c.app_secret.get_secret_value(),
                           body=body, timestamp=timestamp, mch_id=c.mch_id,
                           mch_secret=c.mch_secret.get_secret_value())

    def refusal(self, request: GatewayRequest) -> GatewayReply | None:
        """The answer to a request that fails verification (None: it passes)."""
        q = request.query
        if not same_id(q.get("mch_id", ""), self.config.mch_id):
            return _reply(p.SIGN_ERROR, "商户ID错误")
        if not fresh(q.get("timestamp", ""), self._clock(), self.config.timestamp_window_seconds):
            return _reply(p.TIMESTAMP_EXPIRED, "时间戳已过期")
        if not same(q.get("sign", ""), self.sign(request.body, q["timestamp"].strip())):
            return _reply(p.SIGN_ERROR, "签名错误")
        return None

    # -- the gateway ---------------------------------------------------------------------
    async def serve(self, request: GatewayRequest, backend: SupplyBackend) -> GatewayReply:
        handler = self._routes.get(request.path.strip("/"))
        if handler is None or request.method != "POST":
            return _reply(p.NOT_FOUND_PATH, "接口不存在", status=404)
        refused = self.refusal(request)
        if refused is not None:
            return refused
        try:
            return await handler(p.parse_body(request.body), backend)
        except p.BadField as exc:
            return _reply(p.BAD_ORDER, f"参数错误: {exc}")
        except SupplyRefused as exc:
            code, msg = p.REFUSAL_CODES[exc.refusal]
            return _reply(code, msg)

    async def _open_info(self, _doc: dict[str, Any], _b: SupplyBackend) -> GatewayReply:
        return _reply(p.OK, "OK", {"app_id": int(self.config.app_id), "features": {
            "is_support_order_refund": True,  # the refund notice is recorded
            "is_support_goods_notify": True,  # price/stock/status changes are sent
            "is_support_loss_purchase": False,  # never sells above max_amount
        }})

    async def _user_info(self, _doc: dict[str, Any], _b: SupplyBackend) -> GatewayReply:
        return _reply(p.OK, "OK", {"balance": int(self.config.balance_yuan * 100)})

    async def _goods_list(self, doc: dict[str, Any], backend: SupplyBackend) -> GatewayReply:
        return _reply(p.OK, "OK", p.goods_page(await backend.goods(), doc))

    async def _goods_detail(self, doc: dict[str, Any], backend: SupplyBackend) -> GatewayReply:
        goods_no = p.text_field(doc, "goods_no")
        kind = p.goods_kind(p.int_field(doc, "goods_type", required=False, low=1, high=2))
        for goods in await backend.goods():
            if goods.goods_no == goods_no and (kind is None or goods.kind is kind):
                return _reply(p.OK, "OK", p.goods_item(goods))
        return _reply(p.GOODS_NOT_FOUND, "商品不存在")

    async def _purchase(self, doc: dict[str, Any], backend: SupplyBackend) -> GatewayReply:
        return await self._place(p.purchase_fields(doc), GoodsKind.CARD, backend)

    async def _recharge(self, doc: dict[str, Any], backend: SupplyBackend) -> GatewayReply:
        return await self._place(p.purchase_fields(doc, recharge=True), GoodsKind.RECHARGE,
                                 backend)

    async def _place(self, f: p.PurchaseFields, kind: GoodsKind,
                     backend: SupplyBackend) -> GatewayReply:
        extra = {"notify_url": f.notify_url, "order_type": str(p.ORDER_TYPE[kind])}
        if f.biz_order_no:
            extra["biz_order_no"] = f.biz_order_no
        view = await backend.purchase(Purchase(
            platform_order_id=f.order_no, goods_no=f.goods_no, quantity=f.buy_quantity,
            max_total_cents=f.max_amount, kind=kind, buyer_ip=f.buyer_ip, account=f.account,
            area=f.game_area, server=f.game_server, game=f.game_name, role=f.game_role,
            extra=extra))
        return _reply(p.OK, "OK", p.order_data(view, kind))

    async def _order_detail(self, doc: dict[str, Any], backend: SupplyBackend) -> GatewayReply:
        order_no = p.text_field(doc, "order_no", required=False)
        ours = p.text_field(doc, "out_order_no", required=False)
        if order_no is None and ours is not None:
            order_no = platform_order_of(ours)
        if order_no is None:
            if ours is None:
                raise p.BadField("order_no or out_order_no is required")
            return _reply(p.ORDER_NOT_FOUND, "订单不存在")
        view = await backend.order(order_no)
        if view is None or (ours is not None and ours != view.our_order_id):
            return _reply(p.ORDER_NOT_FOUND, "订单不存在")
        kind = GoodsKind.RECHARGE if view.extra.get("order_type") == "1" else GoodsKind.CARD
        return _reply(p.OK, "OK", p.order_data(view, kind))

    async def _refund_notify(self, doc: dict[str, Any], backend: SupplyBackend) -> GatewayReply:
        order_no = p.text_field(doc, "order_no")
        assert order_no is not None
        amount = p.int_field(doc, "refund_amount", required=False)
        reason = doc.get("refund_reason") if isinstance(doc.get("refund_reason"), str) else ""
        scene = doc.get("refund_scene") if isinstance(doc.get("refund_scene"), str) else ""
        text = " ".join(filter(None, ("闲管家退款通知", str(scene)[:40], str(reason)[:80])))
        await backend.refunded(RefundNotice(order_no, amount, text))
        # Unknown orders are acknowledged too: there is nothing of ours to undo.
        return GatewayReply(200, p.REFUND_ACK)

    async def _refund_apply(self, doc: dict[str, Any], backend: SupplyBackend) -> GatewayReply:
        """订单退款申请(自动撤单): 闲管家 checks with us before it refunds. We agree — an order
        not served yet is cancelled first (no code goes out); codes already handed over
        cannot be taken back, and the refund notice that follows flags them for review — but
        for a top-up being bought from a supplier (still processing), which nobody can stop.
        ⚠ The answer's ``refund_data`` fields follow the documentation's example only."""
        order_no = p.text_field(doc, "order_no")
        assert order_no is not None
        amount = p.int_field(doc, "refund_amount", required=False)
        view = await backend.refund_requested(RefundNotice(order_no, amount, "闲管家退款申请"))
        if view is None:
            return _reply(p.ORDER_NOT_FOUND, "订单不存在")
        now = int(self._clock())
        if view.state is PurchaseState.PROCESSING:
            # A top-up being bought from a supplier cannot be called back: refused (⚠ the
            # value "refuse" is an assumption beside the documented "agree").
            return _reply(p.OK, "OK", {"result": "refuse", "remark": "充值处理中, 无法撤单"})
        served = view.state is PurchaseState.SUCCEEDED
        return _reply(p.OK, "OK", {
            "result": "agree", "remark": "卡密已发放, 同意退款" if served else "撤单成功",
            "refund_data": {"apply_time": p.int_field(doc, "apply_time", required=False) or now,
                            "refund_status": p.REFUND_SUCCEEDED,
                            "refund_amount": amount if amount is not None else view.total_cents,
                            "refund_time": now}})

    async def _subscribe(self, doc: dict[str, Any], backend: SupplyBackend) -> GatewayReply:
        sub = p.subscription_fields(doc, datetime.fromtimestamp(self._clock(), UTC))
        if not await backend.subscribe(sub):
            return _reply(p.GOODS_NOT_FOUND, "商品不存在")
        return _reply(p.OK, "OK")

    async def _unsubscribe(self, doc: dict[str, Any], backend: SupplyBackend) -> GatewayReply:
        goods_no = p.text_field(doc, "goods_no")
        token = p.text_field(doc, "token", limit=128)
        assert goods_no is not None
        assert token is not None
        await backend.unsubscribe(goods_no, token)
        return _reply(p.OK, "OK")

    async def _subscriptions(self, doc: dict[str, Any],
                             backend: SupplyBackend) -> GatewayReply:
        goods_no = p.text_field(doc, "goods_no", required=False)
        return _reply(p.OK, "OK", p.subscription_page(await backend.subscriptions(goods_no),
                                                      doc))

    # -- the goods callback (the core's goods-change sweep) ------------------------------------
    async def notify_goods(self, subscription: Subscription, goods: Goods) -> None:
        await self.post_callback(subscription.notify_url, p.goods_notice_body(goods),
                                 int(self._clock()))

    # -- the order callback (the outbox's ship job) -----------------------------------------
    async def ship(self, shipment: Shipment) -> ShipOutcome:
        order = shipment.order
        url = order.extra.get("notify_url")
        if not url:
            raise NotShippable("the order has no notify_url to call back")
        kind = GoodsKind.RECHARGE if order.extra.get("order_type") == "1" else GoodsKind.CARD
        now = int(self._clock())
        body = p.callback_body(order_no=order.platform_order_id,
                               out_order_no=our_order_id(order.platform_order_id),
                               state=PurchaseState.SUCCEEDED, end_time=now,
                               codes=shipment.handed, kind=kind)
        await self.post_callback(url, body, now)
        return ShipOutcome.SHIPPED

    async def notify_failure(self, platform_order_id: str, extra: Mapping[str, str],
                             reason: str) -> None:
        """The order callback with 状态 30 (已失败) and the reason as its remark."""
        url = extra.get("notify_url")
        if not url:
            raise NotShippable("the order has no notify_url to call back")
        kind = GoodsKind.RECHARGE if extra.get("order_type") == "1" else GoodsKind.CARD
        now = int(self._clock())
        body = p.callback_body(order_no=platform_order_id,
                               out_order_no=our_order_id(platform_order_id),
                               state=PurchaseState.FAILED, end_time=now,
                               remark=reason or "订单未能完成", kind=kind)
        await self.post_callback(url, body, now)

    async def post_callback(self, url: str, body: bytes, now: int) -> None:
        """POST one signed callback; Unavailable unless 闲管家 acknowledges it."""
        query = urlencode({"mch_id": self.config.mch_id, "timestamp": now,
                           "sign": self.sign(body, now)})
        target = f"{url}{'&' if urlsplit(url).query else '?'}{query}"
        try:
            response = await self._http.post(target, content=body,
                                             headers={"Content-Type": "application/json"})
        except httpx.HTTPError as exc:
            raise Unavailable(f"闲管家 callback failed: {type(exc).__name__}") from exc
        if response.status_code != 200 or not p.acknowledged(response.content):
            raise Unavailable(f"闲管家 did not acknowledge the callback "
                              f"(HTTP {response.status_code})")

    # -- the rest of the channel contract: nothing to pull, nothing to write ------------------
    async def poll(self, cursor: Mapping[str, Any] | None, now: datetime) -> PollResult:
        return PollResult((), dict(cursor or {}))

    async def poll_refunds(self, cursor: Mapping[str, Any] | None,
                           now: datetime) -> PollResult:
        return PollResult((), dict(cursor or {}))

    async def fetch_order(self, platform_order_id: str) -> Order:
        # 闲管家 offers suppliers no order query; its callbacks and notices are the source.
        raise NotShippable("闲管家 orders cannot be read back from 闲管家")

    def parse_push(self, headers: Mapping[str, str], body: bytes, now: datetime) -> PushBatch:
        raise PushRejected("闲管家 calls the supply gateway (/supply/<shop>/), not /hooks")

    async def write_memo(self, order: Order, memo: str) -> None:
        return None  # 闲管家 has no seller memo for its suppliers

    async def check(self) -> CheckReport:
        at = datetime.fromtimestamp(self._clock(), UTC).isoformat(timespec="seconds")
        return CheckReport(True, (
            ("credentials", True, "闲管家 calls this robot; its requests are verified with "
                                  f"app_id {self.config.app_id} and mch_id "
                                  f"{self.config.mch_id} (checked {at})"),))

    async def aclose(self) -> None:
        await self._http.aclose()
