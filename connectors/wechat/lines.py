"""Which SKUs a WeChat Pay payment bought: ``attach`` formats and ``out_trade_no`` rules.

WeChat Pay knows only an amount; the mini-program's backend knows the goods. Supported, in
this order:

1. ``attach`` (≤128 chars, set by the merchant's backend when it creates the payment) as
   JSON — ``{"sku":"X","qty":2}``, a list of such objects, or ``{"items":[...]}`` (``qty``
   may also be spelled ``quantity``; default 1) — or as key=value pairs —
   ``sku=X;qty=2`` (``&`` also separates pairs; ``|`` separates several items);
2. the first :class:`connectors.wechat.config.SkuRule` whose ``prefix`` starts
   ``out_trade_no``;
3. nothing: :func:`resolve_lines` returns None and the caller applies
   ``unresolved_lines``.

A JSON ``attach`` object may also carry ``"message"``: what the buyer typed in the
mini-program for the seller (a top-up's account, e.g.), read by :func:`attach_message`.

Line ids are ``"1"``, ``"2"``, … in the order given, so a later snapshot of the same order
(a refund notification) names the same lines. Pure functions; never raises for odd
``attach`` text (it simply does not match).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from connectors.base import OrderLine
from connectors.common import buyertext
from connectors.wechat.config import SkuRule

MAX_QTY = 10_000


def parse_attach(attach: str) -> list[tuple[str, int]] | None:
    """``[(sku, qty), ...]`` from ``attach``, or None when it names no SKU."""
    text = attach.strip()
    if not text:
        return None
    if text[:1] in "{[":
        try:
            data = json.loads(text)
        except ValueError:
            return None
        return _from_json(data)
    items: list[tuple[str, int]] = []
    for chunk in text.split("|"):
        pairs = dict(_pair(part) for part in chunk.replace("&", ";").split(";") if "=" in part)
        item = _item(pairs.get("sku"), pairs.get("qty", pairs.get("quantity", "1")))
        if item is None:
            return None
        items.append(item)
    return items or None


def attach_message(attach: str) -> str | None:
    """The buyer's message a JSON ``attach`` object carries (``"message"``), or None."""
    text = attach.strip()
    if not text.startswith("{"):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return buyertext.message(data.get("message")) if isinstance(data, dict) else None


def _pair(part: str) -> tuple[str, str]:
    key, _, value = part.partition("=")
    return key.strip().lower(), value.strip()


def _from_json(data: Any) -> list[tuple[str, int]] | None:
    if isinstance(data, dict) and isinstance(data.get("items"), list):
        data = data["items"]
    rows = data if isinstance(data, list) else [data]
    items: list[tuple[str, int]] = []
    for row in rows:
        if not isinstance(row, dict):
            return None
        item = _item(row.get("sku"), row.get("qty", row.get("quantity", 1)))
        if item is None:
            return None
        items.append(item)
    return items or None


def _item(sku: Any, qty: Any) -> tuple[str, int] | None:
    if isinstance(sku, bool) or not isinstance(sku, str | int) or not str(sku).strip():
        return None
    if isinstance(qty, bool):
        return None
    try:
        count = int(str(qty).strip())
    except ValueError:
        return None
    if not 1 <= count <= MAX_QTY:
        return None
    return str(sku).strip(), count


def from_rules(rules: Sequence[SkuRule], out_trade_no: str, total_cents: int
               ) -> list[tuple[str, int, str]] | None:
    """``[(sku, qty, title)]`` from the first rule matching ``out_trade_no``, or None."""
    for rule in rules:
        if not out_trade_no.startswith(rule.prefix):
            continue
        qty = rule.quantity
        if rule.unit_price_cents is not None:
            if total_cents <= 0 or total_cents % rule.unit_price_cents:
                return None  # the amount does not fit the rule: let a human look
            qty = total_cents // rule.unit_price_cents
        return [(rule.sku, qty, rule.title)]
    return None


def resolve_lines(attach: str, out_trade_no: str, total_cents: int, rules: Sequence[SkuRule],
                  *, description: str = "") -> tuple[OrderLine, ...] | None:
    """The order lines this payment bought, or None when neither source names them."""
    parsed = parse_attach(attach)
    if parsed is not None:
        unit = total_cents // sum(q for _, q in parsed) if len(parsed) == 1 else 0
        return tuple(OrderLine(line_id=str(no), quantity=qty, sku_id=sku,
                               title=description, unit_price_cents=unit)
                     for no, (sku, qty) in enumerate(parsed, start=1))
    ruled = from_rules(rules, out_trade_no, total_cents)
    if ruled is not None:
        return tuple(OrderLine(line_id=str(no), quantity=qty, sku_id=sku,
                               title=title or description,
                               unit_price_cents=total_cents // qty)
                     for no, (sku, qty, title) in enumerate(ruled, start=1))
    return None


def unresolved_line(description: str) -> tuple[OrderLine, ...]:
    """One line with no SKU: the pipeline holds (or ignores) it per the shop's rule."""
    return (OrderLine(line_id="1", quantity=1, title=description or "WeChat Pay payment"),)
