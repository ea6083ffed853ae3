"""Lenient readers for loosely typed JSON values from platform answers.

They turn what a platform may send as a number, a string or nothing into a plain value; they
must never raise (a missing count reads as 0, a missing object as empty).
"""

from __future__ import annotations

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
