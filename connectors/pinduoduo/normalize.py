"""POP order and refund rows turned into the core's normalized :class:`connectors.base.Order`.

Pure functions over the JSON POP returns (``order_info`` and ``order_sn_list`` rows share one
field family). POP has no sub-order ids and one refund state per order, so every line of an
order carries the order's refund state. Money arrives as yuan (float or string) and leaves
as integer fen. This module must never keep or emit ``card_info_list`` (encrypted card data)
nor receiver fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from connectors.base import Order, OrderLine, PlatformStatus, RefundState
from connectors.common import buyertext
from connectors.common.times import parse_cst
from connectors.common.values import shipped_by
from connectors.errors import BadPlatformData

# order_status: 1 awaiting shipment, 2 shipped (awaiting receipt), 3 received.
AWAITING_SHIPMENT, SHIPPED, RECEIVED = 1, 2, 3
# confirm_status: 0 not yet confirmed (group forming), 1 confirmed, 2 cancelled.
CONFIRMED, CANCELLED = 1, 2
# refund_status: 1 none or closed, 2 after-sale in progress, 3 refunding, 4 refunded.
REFUND_NONE, REFUND_PROCESSING, REFUNDING, REFUNDED = 1, 2, 3, 4


def yuan_to_fen(value: Any) -> int:
    """``9.9`` / ``"9.90"`` yuan → 990 fen, exactly (via the decimal text, never float maths)."""
    if value in (None, ""):
        return 0
    try:
        return int((Decimal(str(value)) * 100).quantize(Decimal(1)))
    except (InvalidOperation, ValueError) as exc:
        raise BadPlatformData(f"pinduoduo amount {value!r} is not a number") from exc


def _int(row: Mapping[str, Any], key: str, default: int = 0) -> int:
    value = row.get(key)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise BadPlatformData(f"pinduoduo field {key}={value!r} is not an integer") from exc


def _time(row: Mapping[str, Any], key: str) -> datetime | None:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return parse_cst(value)
    except ValueError as exc:
        raise BadPlatformData(f"pinduoduo field {key}={value!r} is not a time") from exc


def _text(value: Any) -> str | None:
    if value in (None, "") or isinstance(value, bool):
        return None
    return str(value)


def refund_state(refund_status: int) -> RefundState:
    if refund_status in (REFUND_PROCESSING, REFUNDING):
        return RefundState.REQUESTED
    if refund_status == REFUNDED:
        return RefundState.REFUNDED
    return RefundState.NONE


def platform_status(order_status: int, confirm_status: int, refund_status: int) -> PlatformStatus:
    if confirm_status == CANCELLED:
        return PlatformStatus.CLOSED
    if order_status == RECEIVED:
        return PlatformStatus.COMPLETED
    if order_status == SHIPPED:
        return PlatformStatus.SHIPPED
    if refund_status == REFUNDED:
        return PlatformStatus.CLOSED  # refunded before shipping: the trade is over
    if confirm_status != CONFIRMED:
        return PlatformStatus.UNPAID  # paid but the group has not formed: nothing to ship yet
    return PlatformStatus.PAID


def order_from_row(row: Mapping[str, Any]) -> Order:
    """One ``order_info`` / ``order_sn_list`` row as an Order."""
    order_sn = _text(row.get("order_sn"))
    if order_sn is None:
        raise BadPlatformData("pinduoduo order without order_sn")
    if row.get("order_status") in (None, ""):
        # Never guess a state: read as 0 it would pass for "awaiting shipment".
        raise BadPlatformData(f"pinduoduo order {order_sn} has no order_status")
    order_status = _int(row, "order_status")
    confirm_status = _int(row, "confirm_status", CONFIRMED)
    refund_status = _int(row, "refund_status", REFUND_NONE)
    refund = refund_state(refund_status)
    items = row.get("item_list") or []
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise BadPlatformData(f"pinduoduo order {order_sn}: item_list is malformed")
    lines: list[OrderLine] = []
    seen: dict[str, int] = {}
    for item in items:
        base = _text(item.get("sku_id")) or _text(item.get("goods_id")) or "item"
        seen[base] = seen.get(base, 0) + 1
        line_id = base if seen[base] == 1 else f"{base}#{seen[base]}"
        lines.append(OrderLine(
            line_id=line_id,
            quantity=_int(item, "goods_count", 1),
            item_id=_text(item.get("goods_id")),
            sku_id=_text(item.get("sku_id")),
            outer_id=_text(item.get("outer_id")) or _text(item.get("outer_goods_id")),
            title=str(item.get("goods_name") or ""),
            unit_price_cents=yuan_to_fen(item.get("goods_price")),
            refund=refund,
            properties=spec_properties(item.get("goods_spec")),
        ))
    extra = {
        "order_status": str(order_status),
        "confirm_status": str(confirm_status),
        "refund_status": str(refund_status),
        "after_sales_status": str(_int(row, "after_sales_status")),
    }
    return Order(
        platform_order_id=order_sn,
        status=platform_status(order_status, confirm_status, refund_status),
        lines=tuple(lines),
        total_cents=yuan_to_fen(row.get("pay_amount")),
        paid_at=_time(row, "pay_time"),
        modified_at=_time(row, "updated_at"),
        buyer_message=buyertext.message(row.get("buyer_memo")),
        extra=extra,
        shipped_on_platform=shipped_by(row, "shipping_time"),
    )


#: The name under which a POP line's spec text is exposed (``property.规格``).
SPEC_PROPERTY = "规格"


def spec_properties(value: Any) -> buyertext.Properties:
    """A POP item's ``goods_spec`` as one property, :data:`SPEC_PROPERTY` (POP gives the
    spec as one text, not as named pairs)."""
    return buyertext.pairs([(SPEC_PROPERTY, value)])


def unique_order_sns(rows: list[dict[str, Any]]) -> list[str]:
    """Distinct ``order_sn`` values, first occurrence first."""
    seen: dict[str, None] = {}
    for row in rows:
        sn = _text(row.get("order_sn"))
        if sn is not None:
            seen.setdefault(sn, None)
    return list(seen)


def latest_by_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per ``order_sn`` (backward paging repeats rows): the most recently updated.
    Rows without an ``order_sn`` are left out (the caller reports them)."""
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        sn = _text(row.get("order_sn"))
        if sn is None:
            continue
        kept = best.get(sn)
        if kept is None or str(row.get("updated_at") or "") >= str(kept.get("updated_at") or ""):
            best[sn] = row
    return list(best.values())
