"""The WeChat mini-program connector: push intake, shipping-info upload, order reads.

Intake is push-only (:mod:`connectors.wechat.push`: WeChat Pay notifications and the merchant
backend's signed posts), so :meth:`WechatConnector.poll` and :meth:`poll_refunds` return
nothing and keep the cursor. Shipping is ``wxa/sec/order/upload_shipping_info`` with
``logistics_type`` 3 (virtual goods), unified delivery and the Shipment's ``item_desc``
(a short goods description; never a code). The payment is named by ``transaction_id`` when
the order has one, else by ``mchid`` + ``out_trade_no``; the payer's openid comes from
``Order.extra`` (or ``get_order`` when missing). WeChat has no seller memo: :meth:`write_memo`
does nothing; the codes reach the buyer through the robot's delivery API.

``platform_order_id`` is the merchant's ``out_trade_no`` (what merchants see and search by).

This module must never ship an order whose snapshot is closed or refunding, never treat a
refusal as success without re-reading the order, and never log a credential.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from connectors.base import (
    CheckReport,
    ClockReading,
    Order,
    PlatformStatus,
    PollResult,
    PushBatch,
    Shipment,
    ShipOutcome,
    ShopContext,
)
from connectors.common.check import staged_report
from connectors.common.clock import Clock, PlatformClock, utc_now
from connectors.common.http import LoopClient
from connectors.common.values import as_int
from connectors.errors import BadPlatformData, NotShippable, Retriable, RobotError, Unavailable
from connectors.log import get_logger
from connectors.wechat import errors as codes
from connectors.wechat.api import GET_ORDER, IS_TRADE_MANAGED, UPLOAD_SHIPPING_INFO, WechatApi
from connectors.wechat.config import WechatConfig
from connectors.wechat.crypto import load_public_key
from connectors.wechat.errors import WechatRejected
from connectors.wechat.lines import resolve_lines, unresolved_line
from connectors.wechat.push import parse_push
from connectors.wechat.token import TokenManager

log = get_logger(__name__)

CHINA = timezone(timedelta(hours=8))
ITEM_DESC_MAX = 120
DEFAULT_ITEM_DESC = "虚拟商品"
#: get_order ``order_state`` → normalized status (6 is observed but undocumented: refused).
ORDER_STATES = {1: PlatformStatus.PAID, 2: PlatformStatus.SHIPPED,
                3: PlatformStatus.COMPLETED, 4: PlatformStatus.COMPLETED,
                5: PlatformStatus.CLOSED}


def upload_time(now: datetime) -> str:
    """RFC 3339 in China time with milliseconds, as WeChat's examples show."""
    local = now.astimezone(CHINA)
    return local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{local.microsecond // 1000:03d}+08:00"


class WechatConnector:
    """One mini-program shop (one appid, one WeChat Pay merchant)."""

    platform: ClassVar[str] = "wechat"
    receives_push: ClassVar[bool] = True
    push_window: ClassVar[float] = 5.0  # WeChat Pay notifications: answer within 5 s

    def __init__(self, config: WechatConfig, context: ShopContext, *,
                 transport: httpx.AsyncBaseTransport | None = None,
                 clock: Clock | None = None) -> None:
        self.config = config
        self.shop = context.shop
        self._clock = clock or utc_now
        self._keys: dict[str, rsa.RSAPublicKey] = {
            serial: load_public_key(pem.get_secret_value(), serial=serial)
            for serial, pem in config.wechatpay_public_keys.items()}
        #: WeChat's clock as measured from its answers (reported; nothing is windowed).
        self.platform_clock = PlatformClock(self._clock)
        self._http = LoopClient(platform="WeChat", timeout=config.timeout_seconds,
                                transport=transport, clock=self.platform_clock)
        self._api = WechatApi(config, TokenManager(config, context, self._http, self._clock),
                              self._http)

    @property
    def api(self) -> WechatApi:
        return self._api

    async def aclose(self) -> None:
        await self._http.aclose()

    def clock_reading(self) -> ClockReading | None:
        """WeChat's clock offset from ours, as measured from its answers."""
        return self.platform_clock.reading()

    # -- intake ---------------------------------------------------------------------------

    async def poll(self, cursor: Mapping[str, Any] | None, now: datetime) -> PollResult:
        """Nothing: orders arrive by push only."""
        return PollResult(orders=(), cursor=dict(cursor or {}), more=False)

    async def poll_refunds(self, cursor: Mapping[str, Any] | None, now: datetime) -> PollResult:
        """Nothing: refunds arrive by push only (WeChat Pay refund notifications)."""
        return PollResult(orders=(), cursor=dict(cursor or {}), more=False)

    def parse_push(self, headers: Mapping[str, str], body: bytes, now: datetime) -> PushBatch:
        return parse_push(self.config, self._keys, headers, body, now)

    async def _get_order(self, out_trade_no: str) -> dict[str, Any]:
        data = await self._api.call(GET_ORDER, {"merchant_id": self.config.mchid,
                                                "merchant_trade_no": out_trade_no})
        order = data.get("order")
        if not isinstance(order, dict):
            raise BadPlatformData(f"wechat {GET_ORDER}: no order in the answer")
        return order

    async def fetch_order(self, platform_order_id: str) -> Order:
        """The order's current state from ``get_order``; lines from ``sku_rules`` (get_order
        does not return ``attach``), else one SKU-less line."""
        try:
            data = await self._get_order(platform_order_id)
        except WechatRejected as exc:
            if exc.code == codes.NOT_INDEXED:
                raise Unavailable(f"wechat order {platform_order_id} not found yet "
                                  f"({exc.code})",
                                  retry_after=self.config.not_indexed_retry_seconds) from exc
            raise
        return self._to_order(platform_order_id, data)

    def _to_order(self, out_trade_no: str, data: Mapping[str, Any]) -> Order:
        state = data.get("order_state")
        status = ORDER_STATES.get(state) if isinstance(state, int) else None
        if status is None:
            raise BadPlatformData(f"wechat order {out_trade_no}: unknown order_state "
                                  f"{str(state)[:16]}")
        total = data.get("paid_amount")
        total_cents = total if isinstance(total, int) and not isinstance(total, bool) else 0
        description = str(data.get("description") or "")
        lines = resolve_lines("", out_trade_no, total_cents, self.config.sku_rules,
                              description=description) or unresolved_line(description)
        pay_time = data.get("pay_time")
        openid = str(data.get("openid") or "")
        extra = {"mchid": str(data.get("merchant_id") or self.config.mchid),
                 "out_trade_no": out_trade_no, "appid": self.config.appid,
                 "transaction_id": str(data.get("transaction_id") or ""),
                 "openid": openid, "order_state": str(state)}
        return Order(
            platform_order_id=out_trade_no, status=status, lines=lines,
            total_cents=total_cents,
            paid_at=datetime.fromtimestamp(pay_time, UTC) if isinstance(pay_time, int)
            and not isinstance(pay_time, bool) and pay_time > 0 else None,
            buyer_id=openid or None, extra={k: v for k, v in extra.items() if v},
            shipped_on_platform=_shipped(data.get("shipping")),
        )

    # -- write-back -----------------------------------------------------------------------

    async def ship(self, shipment: Shipment) -> ShipOutcome:
        """Upload virtual-goods shipping info; "already handled" answers are re-read."""
        order = shipment.order
        oid = order.platform_order_id
        if order.status is PlatformStatus.CLOSED:
            raise NotShippable(f"wechat order {oid} is closed")
        if order.refund_in_progress:
            raise NotShippable(f"wechat order {oid} has a refund in progress")
        if order.status is PlatformStatus.UNPAID:
            raise NotShippable(f"wechat order {oid} is not paid")
        if order.status in (PlatformStatus.SHIPPED, PlatformStatus.COMPLETED):
            return ShipOutcome.ALREADY_SHIPPED
        openid = order.extra.get("openid", "")
        if not openid:
            openid = str((await self._get_order(oid)).get("openid") or "")
        transaction_id = order.extra.get("transaction_id", "")
        key: dict[str, Any] = (
            {"order_number_type": 2, "transaction_id": transaction_id} if transaction_id else
            {"order_number_type": 1, "mchid": order.extra.get("mchid") or self.config.mchid,
             "out_trade_no": oid})
        body = {
            "order_key": key, "logistics_type": 3, "delivery_mode": 1,
            "shipping_list": [{"item_desc": _item_desc(shipment.item_desc)}],
            "upload_time": upload_time(self._clock()), "payer": {"openid": openid},
        }
        try:
            await self._api.call(UPLOAD_SHIPPING_INFO, body)
        except WechatRejected as exc:
            if exc.code == codes.NOT_INDEXED:
                raise Unavailable(f"wechat order {oid}: payment not found yet ({exc.code}); "
                                  f"retrying later",
                                  retry_after=self.config.not_indexed_retry_seconds) from exc
            if exc.code in (codes.RESHIPPED, codes.UNCHANGED):
                return ShipOutcome.ALREADY_SHIPPED
            if exc.code == codes.NOT_SHIPPABLE_STATE:
                return await self._reconcile(oid, exc.code)
            raise
        return ShipOutcome.SHIPPED

    async def _reconcile(self, oid: str, code: int) -> ShipOutcome:
        current = await self.fetch_order(oid)
        if current.status in (PlatformStatus.SHIPPED, PlatformStatus.COMPLETED):
            return ShipOutcome.ALREADY_SHIPPED
        if current.status is PlatformStatus.CLOSED:
            raise NotShippable(f"wechat order {oid} was refunded ({code})")
        raise Unavailable(f"wechat refused to ship order {oid} in order_state "
                          f"{current.extra.get('order_state')} ({code})",
                          retry_after=self.config.not_indexed_retry_seconds)

    async def write_memo(self, order: Order, memo: str) -> None:
        """Nothing: WeChat has no seller memo (the merchant backend reads the codes through
        the robot's delivery API)."""

    # -- diagnostics ----------------------------------------------------------------------

    async def check(self) -> CheckReport:
        """A stable token (appid/secret/IP whitelist), then ``is_trade_managed``."""
        names = ("WeChat reachable", "appid and app_secret", "shipping-info management")
        try:
            await self._api.tokens.token()
        except RobotError as exc:
            return staged_report(names, 0 if isinstance(exc, Retriable) else 1, exc.message)
        try:
            data = await self._api.call(IS_TRADE_MANAGED, {"appid": self.config.appid})
        except RobotError as exc:
            return staged_report(names, 2, exc.message)
        if data.get("is_trade_managed") is not True:
            return staged_report(names, 2, "not enabled for this mini-program "
                                           "(is_trade_managed is false)")
        return staged_report(names, len(names), "")


def _item_desc(text: str) -> str:
    desc = " ".join(text.split())[:ITEM_DESC_MAX]
    return desc or DEFAULT_ITEM_DESC


def _shipped(shipping: Any) -> bool | None:
    """Whether get_order's ``shipping`` shows an upload (``finish_shipping``, a
    ``finish_shipping_count`` above 0, or a row in ``shipping_list``): it stays on the order
    after a refund (``order_state`` 5), which alone does not say whether the order was shipped
    first. None when the answer has none."""
    if not isinstance(shipping, Mapping):
        return None
    return (shipping.get("finish_shipping") is True
            or as_int(shipping.get("finish_shipping_count")) > 0
            or bool(shipping.get("shipping_list")))
