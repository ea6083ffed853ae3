"""The robot file's ``restock:``: per pool, the rule that refills it from a supplier.

::

    restock:
      youku-month:             # the pool (robot pools list)
        supplier: fulu-main    # a name of the robot file's suppliers:
        product: "10001"       # the supplier's card product
        below: 50              # buy when available codes fall to 50 or fewer, and/or
        cover_days: 3          # when they last fewer than 3 days at last week's sales rate
        quantity: 100          # codes per purchase
        max_cost: 9.50         # yuan per code: never bought above it
        daily_budget: 2000     # yuan per local day (the robot's timezone:)
        monthly_budget: 30000  # yuan per local month
        approval: false        # true: each purchase waits for `robot restock approve ID`
        in_flight: 1           # purchases of this pool in progress at once

It lives in the robot file beside ``suppliers:`` because it spends the merchant's money with
those accounts: whoever may change the supplier credentials may change the budget, and a
change is reviewed like any other configuration change (``robot config check``).
"""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from robot.config.types import ShopName, StrictModel, Yuan, cents


class RestockRule(StrictModel):
    """One pool's restock rule, as written (money in yuan)."""

    supplier: ShopName
    product: str = Field(min_length=1, max_length=64)
    below: int | None = Field(default=None, ge=0)
    cover_days: float | None = Field(default=None, gt=0)
    quantity: int = Field(ge=1, le=10_000)
    max_cost: Yuan
    daily_budget: Yuan
    monthly_budget: Yuan
    approval: bool = False
    in_flight: int = Field(default=1, ge=1, le=10)

    @model_validator(mode="after")
    def _sane(self) -> Self:
        if self.below is None and self.cover_days is None:
            raise PydanticCustomError(
                "restock_trigger", "give below (a stock level) and/or cover_days (days of "
                "cover): without one the pool is never restocked")
        one = self.max_cost * self.quantity
        if one > self.daily_budget:
            raise PydanticCustomError(
                "restock_budget", "one purchase may cost up to {one} yuan (quantity x "
                "max_cost), more than daily_budget {day}: it could never be bought",
                {"one": str(one), "day": str(self.daily_budget)})
        if self.daily_budget > self.monthly_budget:
            raise PydanticCustomError(
                "restock_budget", "daily_budget is above monthly_budget")
        return self

    @property
    def max_unit_cents(self) -> int:
        return cents(self.max_cost)

    @property
    def daily_cents(self) -> int:
        return cents(self.daily_budget)

    @property
    def monthly_cents(self) -> int:
        return cents(self.monthly_budget)


