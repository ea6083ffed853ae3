"""Youzan trades (``full_order_info``) and push topics turned into the core's normalized types.

Statuses (PLATFORMS.md §3.3): ``WAIT_BUYER_PAY``/``WAIT_CONFIRM`` are not ours yet,
``TRADE_PAID``/``WAIT_SELLER_SEND_GOODS`` are paid and awaiting shipment,
``WAIT_BUYER_CONFIRM_GOODS`` is shipped, ``TRADE_SUCCESS`` completed, ``TRADE_CLOSED`` closed.

**Virtual goods delivered by Youzan on payment.** Virtual items, e-vouchers and knowledge
products have no awaiting-shipment state: Youzan moves them past it by itself when the buyer
pays. The buyer still needs the card code, so such a trade (virtual, paid, not closed) is
normalized as PAID with ``extra["auto_delivered"] = "1"``: the core allocates and hands the
codes over as for any order, and the connector's ``ship`` answers ALREADY_SHIPPED for it without
calling Youzan (there is nothing left to ship there).

Money strings (yuan) become integer fen; times become aware UTC. Nothing here does I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import unquote

from connectors.base import Order, OrderLine, PlatformStatus, PushKind, RefundState
from connectors.common import buyertext
from connectors.common.times import parse_cst
from connectors.common.values import shipped_by
from connectors.errors import BadPlatformData

AUTO_DELIVERED = "auto_delivered"
#: ``item_type`` values Youzan delivers by itself on payment: 182 virtual, 183 e-voucher,
#: 31 knowledge payment (PLATFORMS.md §3.3; ⚠ the knowledge-pay value is from secondary notes).
SELF_DELIVERED_ITEM_TYPES = frozenset({31, 182, 183})
_PAID = frozenset({"TRADE_PAID", "WAIT_SELLER_SEND_GOODS"})
_SHIPPED = frozenset({"WAIT_BUYER_CONFIRM_GOODS", "TRADE_BUYER_SIGNED"})
_UNPAID = frozenset({"WAIT_BUYER_PAY", "WAIT_CONFIRM", "TRADE_NO_CREATE_PAY"})
#: Topics that announce a paid trade (``trade_TradePaid`` is the only one virtual items get).
PAID_TOPICS = frozenset({"trade_TradePaid", "trade_TradeBuyerPay"})
CLOSE_TOPICS = frozenset({"trade_TradeClose"})
REFUND_TOPIC_PREFIXES = ("trade_refund_", "youzan_trade_Refund")
#: Order-level ``refund_state``: 0 none, 1 partial refunding, 2 partial refunded,
#: 11 full refunding, 12 full refunded.
_FULL_REFUNDING, _FULL_REFUNDED = 11, 12
_PARTIAL_STATES = frozenset({1, 2})


def yuan_to_fen(value: Any) -> int:
    """``"12.30"`` (yuan) → 1230; empty → 0; anything else unreadable is BadPlatformData."""
    if value in (None, ""):
        return 0
    try:
        return int((Decimal(str(value)) * 100).to_integral_value())
    except InvalidOperation as exc:
        raise BadPlatformData(f"youzan money value {value!r} is not a number") from exc


def _time(value: Any) -> datetime | None:
    if not value or not isinstance(value, str):
        return None
    try:
        return parse_cst(value)
    except ValueError as exc:
        raise BadPlatformData(f"youzan time {value!r} is malformed") from exc


def _id(value: Any) -> str | None:
    if value in (None, "", 0, "0") or isinstance(value, bool):
        return None
    return str(value)


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def is_self_delivered(info: Mapping[str, Any], lines: list[Mapping[str, Any]]) -> bool:
    """Youzan delivers this trade itself on payment (virtual / e-voucher / knowledge)."""
    tags = info.get("order_tags") or {}
    if isinstance(tags, Mapping) and tags.get("is_virtual") in (True, 1, "1", "true"):
        return True
    return bool(lines) and all(
        _int(line.get("item_type"), -1) in SELF_DELIVERED_ITEM_TYPES for line in lines)


def _line_refunds(detail: Mapping[str, Any], info: Mapping[str, Any],
                  oids: list[str]) -> dict[str, RefundState]:
    """Per-line refund state from ``refund_order[]`` (detail), else the order-level state."""
    result = dict.fromkeys(oids, RefundState.NONE)
    for refund in detail.get("refund_order") or ():
        if not isinstance(refund, Mapping):
            continue
        state = _refund_entry_state(refund)
        for oid in str(refund.get("oids") or "").split(","):
            if oid.strip() in result:
                result[oid.strip()] = state
    level = _int(info.get("refund_state"))
    if level in (_FULL_REFUNDING, _FULL_REFUNDED):
        full = RefundState.REFUNDED if level == _FULL_REFUNDED else RefundState.REQUESTED
        return {oid: full if state is RefundState.NONE or full is RefundState.REFUNDED
                else state for oid, state in result.items()}
    if level in _PARTIAL_STATES and all(s is RefundState.NONE for s in result.values()):
        # A partial refund without line detail: never ship any line blindly.
        return dict.fromkeys(oids, RefundState.REQUESTED)
    return result


def _refund_entry_state(refund: Mapping[str, Any]) -> RefundState:
    status = str(refund.get("status") or "")
    if status == "SUCCESS":
        return RefundState.REFUNDED
    if status in ("CLOSED", "SELLER_REFUSE_BUYER"):
        return RefundState.REFUSED
    if status:
        return RefundState.REQUESTED
    code = _int(refund.get("refund_state"))
    if code in (2, _FULL_REFUNDED):
        return RefundState.REFUNDED
    if code in (1, _FULL_REFUNDING):
        return RefundState.REQUESTED
    return RefundState.NONE


def trade_to_order(detail: Mapping[str, Any]) -> Order:
    """Normalize a ``youzan.trade.get`` answer (``data``) or a list row: both carry
    ``full_order_info``; the detail adds ``refund_order``."""
    full = detail.get("full_order_info")
    if not isinstance(full, Mapping):
        raise BadPlatformData("youzan trade has no full_order_info")
    info = full.get("order_info")
    raw_lines = full.get("orders")
    if not isinstance(info, Mapping) or not isinstance(raw_lines, list):
        raise BadPlatformData("youzan trade lacks order_info or orders")
    tid = _id(info.get("tid"))
    if tid is None:
        raise BadPlatformData("youzan trade without tid")
    lines_data = [line for line in raw_lines if isinstance(line, Mapping)]
    oids = [str(line.get("oid") or f"{tid}-{n}") for n, line in enumerate(lines_data)]
    refunds = _line_refunds(detail, info, oids)
    lines = tuple(
        OrderLine(
            line_id=oid,
            quantity=_quantity(tid, oid, line.get("num")),
            item_id=_id(line.get("item_id")),
            sku_id=_id(line.get("sku_id")),
            outer_id=_id(line.get("outer_sku_id")) or _id(line.get("outer_item_id")),
            title=str(line.get("title") or ""),
            unit_price_cents=yuan_to_fen(line.get("price")),
            refund=refunds[oid],
            properties=line_properties(line),
        )
        for oid, line in zip(oids, lines_data, strict=True)
    )
    raw_status = str(info.get("status") or "")
    extra = {"status": raw_status}
    status = _status(raw_status)
    if status in (PlatformStatus.SHIPPED, PlatformStatus.COMPLETED, PlatformStatus.PAID) \
            and info.get("pay_time") and is_self_delivered(info, lines_data):
        status = PlatformStatus.PAID
        if raw_status != "WAIT_SELLER_SEND_GOODS":
            extra[AUTO_DELIVERED] = "1"
    buyer = _mapping(full.get("buyer_info"))
    pay = _mapping(full.get("pay_info"))
    return Order(
        platform_order_id=tid,
        status=status,
        lines=lines,
        total_cents=yuan_to_fen(pay.get("payment")),
        paid_at=_time(info.get("pay_time")),
        modified_at=_time(info.get("update_time")),
        buyer_id=_id(buyer.get("yz_open_id")),
        buyer_phone=_id(buyer.get("buyer_phone")),
        buyer_message=buyertext.message(_mapping(full.get("remark_info")).get("buyer_message")),
        extra=extra,
        shipped_on_platform=shipped_by(info, "consign_time"),
    )


def line_properties(line: Mapping[str, Any]) -> buyertext.Properties:
    """A line's SKU properties (``sku_properties_name``, a JSON text of ``[{"k", "v"}]``)
    then the fields the buyer filled in when ordering (``buyer_messages``, 下单留言, a JSON
    text of ``{"name": "value"}``)."""
    return buyertext.pairs((*buyertext.from_objects(line.get("sku_properties_name"), "k", "v"),
                            *buyertext.from_object(line.get("buyer_messages"))))


def _quantity(tid: str, oid: str, value: Any) -> int:
    """A line's ``num``: a positive integer, or bad data (never read as 0 or 1)."""
    count = _int(value, 0) if not isinstance(value, bool) else 0
    if count < 1:
        raise BadPlatformData(f"youzan trade {tid} line {oid}: num {value!r:.32} "
                              "is not a positive integer")
    return count


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _status(raw: str) -> PlatformStatus:
    if raw in _PAID:
        return PlatformStatus.PAID
    if raw in _SHIPPED:
        return PlatformStatus.SHIPPED
    if raw == "TRADE_SUCCESS":
        return PlatformStatus.COMPLETED
    if raw == "TRADE_CLOSED":
        return PlatformStatus.CLOSED
    if raw in _UNPAID:
        return PlatformStatus.UNPAID
    raise BadPlatformData(f"youzan trade status {raw!r} is unknown")


def row_status(row: Mapping[str, Any]) -> tuple[str, str, int]:
    """(tid, status, refund_state) of a ``trades.sold.get`` row, for choosing what to read;
    tid is ``""`` when the row carries none (the caller reports it)."""
    full = row.get("full_order_info")
    info = full.get("order_info") if isinstance(full, Mapping) else None
    if not isinstance(info, Mapping) or _id(info.get("tid")) is None:
        return "", "", 0
    return str(info.get("tid")), str(info.get("status") or ""), _int(info.get("refund_state"))


def known_status(raw: str) -> bool:
    """Whether ``raw`` is a trade status this module knows (others are bad data)."""
    return raw in _PAID | _SHIPPED | _UNPAID | {"TRADE_SUCCESS", "TRADE_CLOSED"}


def topic_kind(topic: str) -> PushKind | None:
    """What a push topic means to the core; None for topics the robot ignores."""
    if topic in PAID_TOPICS:
        return PushKind.PAID
    if topic in CLOSE_TOPICS:
        return PushKind.CLOSED
    if topic.startswith(REFUND_TOPIC_PREFIXES):
        return PushKind.REFUND
    return None


def decode_msg(value: Any) -> dict[str, Any]:
    """A push's ``msg``: URL-encoded JSON text (``trade_*``) or already an object (refunds)."""
    if isinstance(value, Mapping):
        return dict(value)
    if not isinstance(value, str) or not value:
        return {}
    try:
        decoded = json.loads(unquote(value))
    except ValueError as exc:
        raise BadPlatformData("youzan push msg is not URL-encoded JSON") from exc
    return decoded if isinstance(decoded, dict) else {}
