"""TOP trade JSON (non-simplified) → :class:`connectors.base.Order`, and TMC topics → kinds.

Pure functions. They must never round money (a price that is not whole fen is bad data),
never lose digits of a ``tid``/``oid`` (they exceed 2**53), and never call a trade shippable
unless TOP says ``WAIT_SELLER_SEND_GOODS``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from connectors.base import Order, OrderLine, PlatformStatus, PushKind, RefundState
from connectors.common import buyertext
from connectors.common.times import parse_cst
from connectors.errors import BadPlatformData

TRADE_STATUS: dict[str, PlatformStatus] = {
    "WAIT_SELLER_SEND_GOODS": PlatformStatus.PAID,
    "WAIT_BUYER_CONFIRM_GOODS": PlatformStatus.SHIPPED,
    "SELLER_CONSIGNED_PART": PlatformStatus.SHIPPED,
    "TRADE_BUYER_SIGNED": PlatformStatus.SHIPPED,
    "TRADE_FINISHED": PlatformStatus.COMPLETED,
    "TRADE_CLOSED": PlatformStatus.CLOSED,
    "TRADE_CLOSED_BY_TAOBAO": PlatformStatus.CLOSED,
    "WAIT_BUYER_PAY": PlatformStatus.UNPAID,
    "TRADE_NO_CREATE_PAY": PlatformStatus.UNPAID,
    "PAY_PENDING": PlatformStatus.UNPAID,
    "WAIT_PRE_AUTH_CONFIRM": PlatformStatus.UNPAID,
    # Paid, but TOP forbids consigning (e.g. risk control): not ours to ship, so it is
    # reported as not yet paid; it becomes PAID when TOP moves it to WAIT_SELLER_SEND_GOODS.
    "PAID_FORBID_CONSIGN": PlatformStatus.UNPAID,
}

REFUND_STATUS: dict[str, RefundState] = {
    "WAIT_SELLER_AGREE": RefundState.REQUESTED,
    "WAIT_BUYER_RETURN_GOODS": RefundState.REQUESTED,
    "WAIT_SELLER_CONFIRM_GOODS": RefundState.REQUESTED,
    "SUCCESS": RefundState.REFUNDED,
    "SELLER_REFUSE_BUYER": RefundState.REFUSED,
    "CLOSED": RefundState.REFUSED,
    "NO_REFUND": RefundState.NONE,
}

# A sub-order TOP closed (by itself or after a refund) must never be shipped: it counts as refunded.
_CLOSED_LINE_STATUSES = frozenset({"TRADE_CLOSED", "TRADE_CLOSED_BY_TAOBAO"})


def yuan_to_cents(value: Any, what: str = "amount") -> int:
    """``"12.30"`` → 1230; bad data if not a whole number of fen."""
    try:
        cents = Decimal(str(value)) * 100
    except InvalidOperation as exc:
        raise BadPlatformData(f"taobao {what} is not a number") from exc
    if not cents.is_finite() or cents != cents.to_integral_value():
        raise BadPlatformData(f"taobao {what} is not a whole number of fen")
    return int(cents)


def _time(value: Any, what: str) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        return parse_cst(str(value))
    except ValueError as exc:
        raise BadPlatformData(f"taobao {what} is not a TOP time") from exc


def _id(value: Any, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str) or str(value).strip() == "":
        raise BadPlatformData(f"taobao trade has no usable {what}")
    return str(value).strip()


def _opt_str(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def line_from_order(order: Mapping[str, Any]) -> OrderLine:
    """One TOP sub-order (``orders.order[]``) → :class:`OrderLine`."""
    refund = REFUND_STATUS.get(str(order.get("refund_status") or "NO_REFUND"), RefundState.NONE)
    if order.get("status") in _CLOSED_LINE_STATUSES:
        refund = RefundState.REFUNDED
    try:
        quantity = int(order.get("num", 1))
    except (TypeError, ValueError) as exc:
        raise BadPlatformData("taobao sub-order num is not a number") from exc
    return OrderLine(
        line_id=_id(order.get("oid"), "oid"),
        quantity=quantity,
        item_id=_opt_str(order.get("num_iid")),
        sku_id=_opt_str(order.get("sku_id")),
        outer_id=_opt_str(order.get("outer_sku_id")) or _opt_str(order.get("outer_iid")),
        title=str(order.get("title") or ""),
        unit_price_cents=yuan_to_cents(order.get("price", "0"), "price"),
        refund=refund,
        # "充值号码:138...;充值面额:50元": the buyer's choices and typed fields.
        properties=buyertext.from_text(order.get("sku_properties_name")),
    )


def trade_to_order(trade: Mapping[str, Any]) -> Order:
    """One TOP trade (``trade_fullinfo_get_response.trade``) → :class:`Order`."""
    tid = _id(trade.get("tid"), "tid")
    raw_status = str(trade.get("status") or "")
    if not raw_status:
        raise BadPlatformData(f"taobao trade {tid} has no status")
    orders = (trade.get("orders") or {}).get("order") or []
    if not isinstance(orders, list):
        raise BadPlatformData(f"taobao trade {tid} has malformed orders")
    extra = {"status": raw_status}
    if trade.get("type"):
        extra["type"] = str(trade["type"])
    if trade.get("buyer_nick"):  # what the buyer calls themselves in chat: `robot orders find`
        extra["buyer_nick"] = str(trade["buyer_nick"])[:64]
    return Order(
        platform_order_id=tid,
        # Unknown statuses (new ones TOP may add) are never treated as shippable.
        status=TRADE_STATUS.get(raw_status, PlatformStatus.UNPAID),
        lines=tuple(line_from_order(order) for order in orders),
        total_cents=yuan_to_cents(trade.get("payment", "0"), "payment"),
        paid_at=_time(trade.get("pay_time"), "pay_time"),
        modified_at=_time(trade.get("modified"), "modified"),
        buyer_id=_opt_str(trade.get("buyer_open_uid")),
        buyer_message=buyertext.message(trade.get("buyer_message")),
        extra=extra,
        # TOP leaves empty fields out of its answers, and the detail asks for consign_time
        # (client.TRADE_FIELDS): no consign time there means no shipment.
        shipped_on_platform=bool(trade.get("consign_time")),
    )


def topic_kind(topic: str) -> PushKind:
    """TMC topic → what the core should do about it."""
    if topic == "taobao_trade_TradeBuyerPay":
        return PushKind.PAID
    if topic == "taobao_trade_TradeClose":
        return PushKind.CLOSED
    if topic.startswith("taobao_refund_"):
        return PushKind.REFUND
    return PushKind.OTHER
