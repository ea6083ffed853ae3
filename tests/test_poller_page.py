"""A polled page is taken in as one transaction; a bad order in it does not fail the others."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, event, select

from connectors.memory import MemoryConnector, MemoryPlatform
from robot import pipeline, poller, shops
from robot.clock import utcnow
from robot.db import transaction
from robot.outbox import ensure_shop_state
from robot.schema import orders
from robot.vault import Vault
from tests.factories import Shop, paid_order, seed_codes, sku

SHOP = Shop(items=(sku("s1", ("p1", 1)),))


@pytest.fixture
def commits(engine: Engine) -> Iterator[list[int]]:
    """Commits on the engine, counted as they happen."""
    seen: list[int] = []

    def count(_conn: Any) -> None:
        seen.append(1)

    event.listen(engine, "commit", count)
    yield seen
    event.remove(engine, "commit", count)


def _runner(commits: list[int], made: dict[str, int]) -> Callable[..., Any]:
    """A ``db`` runner that notes the commits each poller step made, by the step's name."""

    async def db(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        before = len(commits)
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        finally:
            made[fn.__name__] = made.get(fn.__name__, 0) + len(commits) - before

    return db


def _states(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {str(r[0]): str(r[1]) for r in conn.execute(
            select(orders.c.platform_order_id, orders.c.state))}


def test_a_poll_page_is_one_commit(engine: Engine, vault: Vault, commits: list[int]) -> None:
    """Five paid orders in one polled page: taken in and allocated with one commit (not one
    per order), then the cursor stored."""
    seed_codes(engine, vault, "p1", 5)
    platform = MemoryPlatform()
    for i in range(5):
        platform.put_order(paid_order(f"A{i}", ("s1", 1)))
    made: dict[str, int] = {}
    outcome = asyncio.run(poller.poll_shop(engine, SHOP, MemoryConnector(platform), "poll",
                                           now=lambda: datetime.now(UTC),
                                           db=_runner(commits, made)))
    assert (outcome.ok, outcome.created, outcome.steps) == (True, 5, 1)
    assert made["intake_page"] == 1
    assert _states(engine) == {f"A{i}": "allocated" for i in range(5)}


def test_a_bad_order_does_not_fail_its_page(engine: Engine, vault: Vault, commits: list[int],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """An order whose intake fails is rolled back alone: its neighbours in the page commit
    (in one transaction still), the failure is raised and the cursor stays, so the next
    poll reads the page again, takes the order in and finds the others already taken in."""
    seed_codes(engine, vault, "p1", 5)
    platform = MemoryPlatform()
    for oid in ("B1", "B2", "B3"):
        platform.put_order(paid_order(oid, ("s1", 1)))
    real = pipeline.intake_in

    def failing(conn: Any, shop: Any, order: Any, **kwargs: Any) -> pipeline.IntakeResult:
        if order.platform_order_id == "B2":
            raise ValueError("this order breaks intake")
        return real(conn, shop, order, **kwargs)

    monkeypatch.setattr(pipeline, "intake_in", failing)
    with transaction(engine) as conn:  # the shop's row, where its cursor is kept
        ensure_shop_state(conn, SHOP.name, utcnow())
    connector = MemoryConnector(platform)
    made: dict[str, int] = {}
    with pytest.raises(ValueError, match="breaks intake"):
        asyncio.run(poller.poll_shop(engine, SHOP, connector, "poll",
                                     now=lambda: datetime.now(UTC), db=_runner(commits, made)))
    assert made["intake_page"] == 1  # the neighbours' commit (the plain try rolled back)
    assert _states(engine) == {"B1": "allocated", "B3": "allocated"}
    assert not shops.poll_start(engine, SHOP.name, "poll").cursor  # not moved

    monkeypatch.setattr(pipeline, "intake_in", real)
    outcome = asyncio.run(poller.poll_shop(engine, SHOP, connector, "poll",
                                           now=lambda: datetime.now(UTC)))
    assert (outcome.ok, outcome.created, outcome.seen) == (True, 1, 3)
    assert _states(engine) == {"B1": "allocated", "B2": "allocated", "B3": "allocated"}
    assert shops.poll_start(engine, SHOP.name, "poll").cursor  # stored this time
