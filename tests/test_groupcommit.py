"""Group commit: units of work from many tasks share one transaction, each isolated from
its neighbours' failures, each answered only once the transaction holding it committed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, func, insert, select
from sqlalchemy.exc import IntegrityError

from robot.clock import utcnow
from robot.groupcommit import GroupCommit
from robot.schema import push_seen


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
