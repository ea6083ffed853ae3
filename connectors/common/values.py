"""Lenient readers for loosely typed JSON values from platform answers.

They turn what a platform may send as a number, a string or nothing into a plain value; they
must never raise (a missing count reads as 0, a missing object as empty).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def as_int(value: Any) -> int:
    """``value`` as an int; 0 when it is missing or not a number."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def shipped_by(record: Any, key: str) -> bool | None:
    """Whether a platform's order ``record`` shows a shipment by its shipping-time field
    ``key`` (a time string, or Unix seconds): set, yes; empty or 0, no; absent (the answer
    does not carry the field), None."""
    if not isinstance(record, Mapping) or key not in record:
        return None
    value = record[key]
    return bool(value) and value not in ("0", "0000-00-00 00:00:00")
