"""Jobs of orders this process allocated are leased by order, not found by scanning.

The daemon hands the shipper the orders it has just allocated (``Dispatcher.hand``); a
round leases their jobs through the ``(order_id, kind)`` key and scans the due-time index
only once a second, when asked, or after a full round. Under a long transaction holding
PostgreSQL's vacuum horizon, that scan walks every job finished since; the look-up by
order does not (the soak in BENCHMARKS.md measures it).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, event, select

from connectors.memory import MemoryConnector, MemoryPlatform
from robot import outbox as outbox_mod
from robot import pipeline
from robot.clock import utcnow
from robot.db import transaction
from robot.outbox import Dispatcher, RetryPolicy, claim_jobs_in
from robot.schema import outbox
from robot.states import OutboxState
from robot.vault import Vault
from tests.factories import Shop, paid_order, seed_codes, sku

SHOP = Shop(items=(sku("s1", ("p1", 1)),))
LEASE = timedelta(seconds=30)


def _allocated(engine: Engine, vault: Vault, count: int,
               platform: MemoryPlatform | None = None, prefix: str = "H") -> list[int]:
    seed_codes(engine, vault, "p1", count)
    ids = []
    for i in range(count):
        order = paid_order(f"{prefix}{i}", ("s1", 1))
        if platform is not None:
            platform.put_order(order)
        result = pipeline.intake(engine, SHOP, order, allocate=True)
        assert result.state == "allocated" and result.order_id is not None
        ids.append(result.order_id)
    return ids


def _claim(engine: Engine, worker: str, **kw: Any) -> list[int]:
    with transaction(engine) as conn:
        return [j.order_id for j in claim_jobs_in(conn, worker, now=utcnow(), lease=LEASE,
                                                  **{"limit": 10, **kw})]


def _pending(engine: Engine) -> set[int]:
    with engine.connect() as conn:
        return set(conn.execute(select(outbox.c.order_id).where(
            outbox.c.kind == "ship", outbox.c.state == OutboxState.PENDING)).scalars())


def test_handed_orders_are_leased_by_order_and_the_scan_finds_the_rest(
        engine: Engine, vault: Vault) -> None:
    """Without the scan only the handed orders' due jobs are leased; with it, the handed
    ones come first and the scan adds the others; a job another worker holds is not taken
    through either road."""
    a, b, c, d = _allocated(engine, vault, 4)
    assert _claim(engine, "other", order_ids=[d], scan=False) == [d]
    assert _claim(engine, "w", order_ids=[b, d], scan=False) == [b]  # d's lease is other's
    assert _claim(engine, "w", order_ids=[c], scan=True, limit=2) == [c, a]
    assert _claim(engine, "w", order_ids=[a, b, c, d], scan=True) == []  # all leased


def test_a_round_without_the_scan_runs_no_scan_and_ships_the_handed_orders(
        engine: Engine, vault: Vault) -> None:
    """The dispatcher ships a handed order without scanning the due-time index; the order
    nobody handed waits for the next scan, which is due a second after the last one, at
    once when asked (``want_scan``), and after a round the scan filled."""
    platform = MemoryPlatform()
    disp = Dispatcher(engine, vault, {SHOP.name: MemoryConnector(platform)},
                      {SHOP.name: SHOP}, RetryPolicy(max_attempts=3), worker="w")
    assert disp.scan_due()  # never scanned
    assert asyncio.run(disp.run_once(scan=True)) == 0
    assert not disp.scan_due() and not disp.handed

    quiet, handed = _allocated(engine, vault, 2, platform)
    disp.hand([handed])
    assert disp.handed
    statements: list[str] = []

    def seen(_c: Any, _cur: Any, sql: str, *_a: Any) -> None:
        statements.append(sql)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        assert asyncio.run(disp.run_once(scan=disp.scan_due())) == 1
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert not any("ORDER BY outbox.due_at" in s for s in statements)  # no scan ran
    assert any("outbox.order_id IN" in s for s in statements)  # the look-up by order
    assert _pending(engine) == {quiet} and not disp.handed

    disp._scanned -= outbox_mod.SCAN_EVERY  # as if the last scan was a second ago
    assert disp.scan_due()
    assert asyncio.run(disp.run_once(scan=True)) == 1
    assert _pending(engine) == set()

    assert not disp.scan_due()
    disp.want_scan()
    assert disp.scan_due()
    asyncio.run(disp.run_once(scan=True))
    assert not disp.scan_due()
    _allocated(engine, vault, 3, platform, prefix="F")  # nobody hands them
    assert asyncio.run(disp.run_once(scan=True, limit=2)) == 2
    assert disp.scan_due()  # the scan filled its round: more may be due
