"""Douyin shop orders (``order.orderDetail`` / ``order.searchList`` rows) → :class:`Order`.

A shop order (``order_id``) carries sub-orders in ``sku_order_list`` (each with its own
``order_id``: the line id, and the id ``coupons.syncV2`` takes). Money is in fen; times are
Unix seconds. ``order_status``: 1 unpaid, 105 paid, 2 awaiting shipment, 101 partly shipped,
3 shipped, 4 cancelled, 5 completed (PLATFORMS.md §5.3). An unknown status or a malformed
field is :class:`connectors.errors.BadPlatformData` (the caller turns it into an
UnreadableOrder for the core to park), never a guess.

⚠ The sub-order refund field (``after_sale_info.refund_status``: 0 none, 1/2 in progress,
3 refunded, 4 refused) is assumed from the order API's field list.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectors.base import Order, OrderLine, PlatformStatus, RefundState
from connectors.common import buyertext
from connectors.common.times import from_epoch
from connectors.common.values import shipped_by
from connectors.errors import BadPlatformData

STATUS = {
    1: PlatformStatus.UNPAID,
    105: PlatformStatus.PAID,
    2: PlatformStatus.PAID,
    101: PlatformStatus.PAID,
    3: PlatformStatus.SHIPPED,
    4: PlatformStatus.CLOSED,
    5: PlatformStatus.COMPLETED,
}
REFUND = {0: RefundState.NONE, 1: RefundState.REQUESTED, 2: RefundState.REQUESTED,
          3: RefundState.REFUNDED, 4: RefundState.REFUSED}


def known_status(value: Any) -> bool:
    return _int(value) in STATUS


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _id(value: Any, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
        raise BadPlatformData(f"douyin order: {what} is missing or not an id")
    return str(value).strip()


def _fen(value: Any, what: str) -> int:
    number = _int(value if value is not None else 0)
    if number is None or number < 0:
        raise BadPlatformData(f"douyin order: {what} is not an amount in fen")
    return number


def _line(row: Any) -> OrderLine:
    if not isinstance(row, Mapping):
        raise BadPlatformData("douyin order: a sku_order_list entry is not an object")
    quantity = _int(row.get("item_num"))
    if quantity is None or quantity <= 0:
        raise BadPlatformData("douyin order: item_num is not a positive number")
    refund_info = row.get("after_sale_info")
    refund_code = _int(refund_info.get("refund_status", 0)) if isinstance(refund_info,
                                                                          Mapping) else 0
    if refund_code not in REFUND:
        raise BadPlatformData(f"douyin order: unknown refund_status {refund_code}")
    price = row.get("goods_price", row.get("origin_amount"))
    return OrderLine(
        line_id=_id(row.get("order_id"), "sku order_id"),
        quantity=quantity,
        item_id=str(row["product_id"]) if row.get("product_id") not in (None, "") else None,
        sku_id=str(row["sku_id"]) if row.get("sku_id") not in (None, "") else None,
        outer_id=str(row.get("out_sku_id") or row.get("out_product_id") or "") or None,
        title=str(row.get("product_name") or "")[:200],
        unit_price_cents=_fen(price, "goods_price"),
        refund=REFUND[refund_code],
        properties=buyertext.from_objects(row.get("spec"), "name", "value"),
    )


def order_from(detail: Any) -> Order:
    """The normalized snapshot of one shop order."""
    if not isinstance(detail, Mapping):
        raise BadPlatformData("douyin order: the order is not an object")
    order_id = _id(detail.get("order_id"), "order_id")
    code = _int(detail.get("order_status"))
    if code not in STATUS:
        raise BadPlatformData(f"douyin order {order_id}: unknown order_status "
                              f"{str(detail.get('order_status'))[:20]}")
    rows = detail.get("sku_order_list")
    if not isinstance(rows, list) or not rows:
        raise BadPlatformData(f"douyin order {order_id}: sku_order_list is missing")
    lines = tuple(_line(row) for row in rows)
    if len({line.line_id for line in lines}) != len(lines):
        raise BadPlatformData(f"douyin order {order_id}: repeated sub-order ids")
    pay_time = _int(detail.get("pay_time"))
    update_time = _int(detail.get("update_time"))
    buyer = detail.get("doudian_open_id")
    return Order(
        platform_order_id=order_id,
        status=STATUS[code],
        lines=lines,
        total_cents=_fen(detail.get("pay_amount"), "pay_amount"),
        paid_at=from_epoch(pay_time) if pay_time else None,
        modified_at=from_epoch(update_time) if update_time else None,
        buyer_id=str(buyer) if buyer else None,
        buyer_message=buyertext.message(detail.get("buyer_words")),
        extra={"order_status": str(code), "order_type": str(detail.get("order_type", ""))},
        shipped_on_platform=shipped_by(detail, "ship_time"),
    )
