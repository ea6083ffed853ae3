"""The restock budget holds with several robot processes on one database: the reservation is
one guarded UPDATE, so processes started together cannot both spend the last of a day's
budget (on PostgreSQL and MariaDB, where robots share a database, and on SQLite)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from robot.schema import restock_purchases, restock_state
from tests.factories import ensure_pool
from tests.restock_worker import ask

PROCESSES = 4
TRIES = 3


@pytest.mark.parametrize("in_flight", [10])
def test_processes_together_never_overspend_the_budget(engine: Engine, db_url: str,
                                                       key_file: Path,
                                                       in_flight: int) -> None:
    """Four processes ask twelve times for 155-yuan purchases against a 620-yuan day:
    exactly four are granted, and the day's figure is exactly their sum."""
    ensure_pool(engine, "shared")
    rule = {"supplier": "mem", "product": "card-youku-30", "below": 5, "quantity": 10,
            "max_cost": "15.50", "daily_budget": "620", "monthly_budget": "10000",
            "in_flight": in_flight}
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(PROCESSES) as pool:
        barrier = manager.Barrier(PROCESSES)  # all ask at once
        granted = pool.starmap(ask, [(db_url, str(key_file), rule, TRIES, barrier)] * PROCESSES)
        # Let the workers end on their own: leaving the block terminates them (SIGTERM), and a
        # worker that is saving coverage data on SIGTERM can then hang its join for good.
        pool.close()
        pool.join()
    assert sum(granted) == 4
    with engine.connect() as conn:
        rows = conn.execute(select(restock_purchases.c.reserved_cents)).scalars().all()
        day = conn.execute(select(restock_state.c.day_cents, restock_state.c.in_flight)).one()
    assert sorted(rows) == [15500] * 4
    assert (day.day_cents, day.in_flight) == (62000, 4)
