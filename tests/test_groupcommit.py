"""Group commit: units of work from many tasks share one transaction, each isolated from
its neighbours' failures, each answered only once the transaction holding it committed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, func, insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError

from connectors.base import PushEvent, PushKind
from connectors.memory import MemoryConfig, MemoryConnector, MemoryPlatform
from robot import poller
from robot.clock import utcnow
from robot.groupcommit import GroupCommit
from robot.schema import deliveries, orders, push_seen
from robot.vault import Vault
from tests.factories import paid_order, seed_codes
from tests.http.conftest import shop_config


def _mark(key: str) -> Any:
    def unit(conn: Connection) -> str:
        conn.execute(insert(push_seen).values(shop="s", message_id=key, received_at=utcnow()))
        return key
    return unit


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(push_seen)).scalar_one())


def test_units_share_one_commit_and_fail_alone(engine: Engine) -> None:
    """Five units arriving together are one transaction; the one that fails (a duplicate
    key) is rolled back alone and its caller gets the error; the others are committed."""
    commits: list[int] = []
    event.listen(engine, "commit", lambda _conn: commits.append(1))
    group = GroupCommit(engine)

    async def main() -> list[Any]:
        units = [_mark("a"), _mark("b"), _mark("a"), _mark("c"), _mark("d")]
        return await asyncio.gather(*(group.run(u) for u in units), return_exceptions=True)

    results = asyncio.run(main())
    assert results[:2] == ["a", "b"] and results[3:] == ["c", "d"]
    assert isinstance(results[2], IntegrityError)
    assert _count(engine) == 4
    assert (group.batches, group.units) == (1, 5)
    assert len(commits) == 1


def test_nothing_is_answered_before_the_commit(engine: Engine) -> None:
    """When the transaction's commit fails, every caller of the batch gets the error and
    nothing of the batch is kept."""
    group = GroupCommit(engine)

    def refuse(_conn: Any) -> None:
        raise RuntimeError("commit refused")

    event.listen(engine, "commit", refuse)

    async def main() -> list[Any]:
        return await asyncio.gather(*(group.run(_mark(k)) for k in "xyz"),
                                    return_exceptions=True)

    results = asyncio.run(main())
    event.remove(engine, "commit", refuse)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert _count(engine) == 0


def test_a_lone_unit_runs_without_a_savepoint(engine: Engine) -> None:
    """A batch of one is a plain transaction; its failure is its caller's."""
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute",
                 lambda _c, _cur, stmt, *_a: statements.append(stmt))
    group = GroupCommit(engine, window=0)
    assert asyncio.run(group.run(_mark("solo"))) == "solo"
    assert not any("SAVEPOINT" in s.upper() for s in statements)
    with pytest.raises(IntegrityError):
        asyncio.run(group.run(_mark("solo")))
    assert _count(engine) == 1


def test_a_clean_batch_runs_without_savepoints(engine: Engine) -> None:
    """Savepoints are paid only when a unit of the batch fails."""
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute",
                 lambda _c, _cur, stmt, *_a: statements.append(stmt))
    group = GroupCommit(engine)

    async def main() -> list[Any]:
        return list(await asyncio.gather(*(group.run(_mark(k)) for k in "pqr")))

    assert asyncio.run(main()) == ["p", "q", "r"]
    assert not any("SAVEPOINT" in s.upper() for s in statements)
    assert (group.batches, group.units, _count(engine)) == (1, 3, 3)


def test_pushes_arriving_together_are_one_commit_each_order_once(engine: Engine,
                                                                  vault: Vault) -> None:
    """Five pushes applied side by side (one of them a copy of another's message, one the
    same order under a new message id) are stored in one transaction: three orders, each
    allocated once, four messages recorded."""
    seed_codes(engine, vault, "p1", 10)
    shop = shop_config()
    assert isinstance(shop.platform_config, MemoryConfig)
    connector = MemoryConnector(MemoryPlatform.named(shop.platform_config.name))
    commits: list[int] = []
    event.listen(engine, "commit", lambda _conn: commits.append(1))
    group = GroupCommit(engine)

    def push(order_id: str, message_id: str) -> PushEvent:
        return PushEvent(PushKind.PAID, order_id, message_id, paid_order(order_id, ("s1", 1)))

    events = [push("G1", "g-1"), push("G2", "g-2"), push("G1", "g-1"), push("G3", "g-3"),
              push("G3", "g-3-bis")]

    async def main() -> list[int]:
        return list(await asyncio.gather(*(
            poller.apply_events(engine, shop, connector, [e], group=group) for e in events)))

    changed = asyncio.run(main())
    assert sum(changed) == 3
    assert len(commits) == 1 and group.units == 5
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(orders)).scalar_one() == 3
        assert conn.execute(select(func.count()).select_from(deliveries)).scalar_one() == 3
        assert conn.execute(select(func.count()).select_from(push_seen)).scalar_one() == 4


def _kill_own_session(conn: Connection) -> None:
    """The database ends this session mid-transaction, as an operator or a restart does
    (SQLite has no sessions to kill: its connection is invalidated, as a lost one is)."""
    name = conn.dialect.name
    if name == "postgresql":
        conn.exec_driver_sql("SELECT pg_terminate_backend(pg_backend_pid())")
    elif name in ("mysql", "mariadb"):
        conn.exec_driver_sql("KILL CONNECTION_ID()")
    else:
        conn.invalidate()
        raise DBAPIError("SELECT 1", None, Exception("the connection was lost"),
                         connection_invalidated=True)


def test_a_session_killed_under_a_batch_is_a_database_error_for_every_caller(
        engine: Engine) -> None:
    """A unit's session dies in a batch of three: every caller hears a database error (the
    daemon's loops wait out outages on those) — never a PendingRollbackError from the
    savepoint of the unit after it, which no loop expects and which stopped the sourcing
    worker — nothing of the batch is committed, and the next batch runs."""
    group = GroupCommit(engine, window=0.05)

    async def go() -> list[BaseException | str]:
        return await asyncio.gather(group.run(_mark("a")), group.run(_kill_own_session),
                                    group.run(_mark("c")), return_exceptions=True)

    outcomes = asyncio.run(go())
    assert all(isinstance(o, DBAPIError) for o in outcomes), outcomes
    assert _count(engine) == 0
    assert asyncio.run(GroupCommit(engine).run(_mark("d"))) == "d"
    assert _count(engine) == 1
