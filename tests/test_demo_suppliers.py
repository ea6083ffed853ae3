"""``robot demo`` with the supplier plugins: top-ups and bought cards ship through the Fulu and
Juhe fakes with faults on, and no unit is ever bought twice."""

from __future__ import annotations

import asyncio

import pytest

from robot.demo import run_demo


@pytest.mark.usefixtures("demo_logging")
def test_the_demo_buys_topups_and_cards_once_each_through_the_supplier_fakes() -> None:
    """Every expected order ships (top-ups with the account in the buyer's message at once,
    the few without one after customer service gives it), both suppliers bought something,
    a failed purchase moved on, and double_supplier_orders is 0."""
    summary = asyncio.run(run_demo(orders_wanted=60, timeout=120, console=None,
                                   only=["memory"], seed=3))
    assert summary.ok, summary
    assert summary.double_supplier_orders == 0
    assert summary.expected["topups_with_message"] > summary.expected["topups_held_for_account"]
    assert summary.expected["topups_held_for_account"] >= 1
    assert summary.held == summary.expected["held"]  # only the unmapped SKUs stay held
    per = summary.per_supplier
    assert set(per) == {"fulu", "juhe"}
    assert per["juhe"]["topups"] > 0 and per["fulu"]["cards"] > 0
    assert per["juhe"]["failed"] >= 1  # the armed accepted-then-failed top-up
    assert sum(p["topups"] + p["cards"] for p in per.values()) > 0
    assert all(p["cost"] > 0 for p in per.values())
    # The pool with a restock rule started empty and refilled itself from Fulu: its orders
    # shipped (summary.ok) with codes the robot bought, within the rule's quantity.
    restocked = summary.restocked
    assert restocked["succeeded"] >= 1 and restocked["codes"] == 10 * restocked["succeeded"]
    assert restocked["cost"] == 1500 * restocked["codes"]


@pytest.mark.usefixtures("demo_logging")
def test_the_demo_sells_topups_to_goofish_as_recharge_goods() -> None:
    """闲管家 places top-ups naming their account: they go straight to the suppliers (never
    held), every expected order ships, nothing is bought twice."""
    summary = asyncio.run(run_demo(orders_wanted=40, timeout=120, console=None,
                                   only=["goofish"], seed=3))
    assert summary.ok, summary
    assert summary.double_supplier_orders == 0
    assert sum(p["topups"] for p in summary.per_supplier.values()) > 0
    assert summary.held == 0
