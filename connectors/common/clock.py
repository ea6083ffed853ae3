"""The clock connectors take: a callable returning an aware "now" (tests pass a fixed one).

It must never return a naive datetime.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """Now, aware, in UTC."""
    return datetime.now(UTC)
