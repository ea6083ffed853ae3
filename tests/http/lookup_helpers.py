"""Helpers for the lookup tests: orders with a payment time, and a simulated clock."""

from __future__ import annotations

import dataclasses
from datetime import datetime

from robot import pipeline
from tests.factories import paid_order
from tests.http.conftest import Http


def paid_at_order(h: Http, platform_order_id: str, paid_at: datetime, *,
                  buyer: str = "buyer-12345678") -> int:
    """A paid order (1 × 10.00, paid at ``paid_at``, naive UTC), taken in and allocated."""
    order = dataclasses.replace(paid_order(platform_order_id, ("s1", 1), buyer=buyer),
                                paid_at=paid_at)
    result = pipeline.intake(h.engine, h.shop, order)
    assert result.order_id is not None
    allocated = pipeline.allocate(h.engine, result.order_id)
    assert allocated is not None and allocated.state == "allocated"
    return result.order_id


class SimClock:
    """Monotonic seconds that move only when told to; its ``sleep`` moves them."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
