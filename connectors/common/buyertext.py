"""What a buyer typed on an order, read from a platform's answer: the message to the seller
(留言) and the SKU's properties (``name:value`` pairs, custom fields the buyer filled in).

A top-up mapping reads the account to credit from one of them (:mod:`robot.supplyroute`).
Both are personal data: a connector passes them into the normalized order and nowhere else;
nothing here or in a connector may log them. Readers are lenient: what cannot be read is
left out (the order then waits ``held`` for a person), never an error that parks the order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

#: The longest message or property value kept (longer text is cut: an account is short).
TEXT_MAX = 500
#: The most properties kept per line.
PROPERTIES_MAX = 20

Properties = tuple[tuple[str, str], ...]


def message(value: Any) -> str | None:
    """The buyer's message as text, or None when there is none."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        return None
    text = str(value).strip()
    return text[:TEXT_MAX] if text else None


def pairs(items: Iterable[tuple[Any, Any]]) -> Properties:
    """``(name, value)`` pairs as text, empty names and values dropped, at most
    :data:`PROPERTIES_MAX`."""
    out: list[tuple[str, str]] = []
    for name, value in items:
        key, text = message(name), message(value)
        if key and text:
            out.append((key[:64], text))
    return tuple(out[:PROPERTIES_MAX])


def from_text(value: Any, separator: str = ";") -> Properties:
    """Pairs from ``name:value<separator>name:value`` (Taobao's ``sku_properties_name``,
    e.g. ``充值面额:50元;充值号码:13800000000``); a part without a colon is skipped."""
    text = message(value)
    if text is None:
        return ()
    found = []
    for part in text.split(separator):
        name, colon, rest = part.replace("：", ":").partition(":")
        if colon:
            found.append((name, rest))
    return pairs(found)


def from_objects(value: Any, name_key: str, value_key: str) -> Properties:
    """Pairs from a list of objects (``[{"name": …, "value": …}]``), or from a JSON text of
    one (some platforms send the list as a string)."""
    items = _json(value)
    if not isinstance(items, list):
        return ()
    return pairs((item.get(name_key), item.get(value_key))
                 for item in items if isinstance(item, Mapping))


def from_object(value: Any) -> Properties:
    """Pairs from one object (``{"充值账号": "…"}``), or from a JSON text of one."""
    found = _json(value)
    if not isinstance(found, Mapping):
        return ()
    return pairs(found.items())


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value
