"""Group commit: short units of database work from many tasks share one transaction.

A durable commit costs a disk flush (SQLite's fsync, the server's WAL flush) whatever it
holds; the write-back's bookkeeping is many tiny transactions (a job's context read, its
outcome recorded) from jobs running side by side. :class:`GroupCommit` gathers the units
that arrive while a transaction is being committed (or within ``window`` seconds of the
first one) and runs them in one transaction, on one worker thread:

* each unit runs in a savepoint of its own when the batch holds more than one: a unit that
  raises is rolled back alone and its caller gets the exception; its neighbours go on;
* a caller gets its unit's result only after the commit that holds it: nothing is
  announced (a push acknowledged, a job called done) before it is durable;
* when the transaction itself fails (the database is unavailable, the commit fails), every
  caller of the batch gets that error, exactly as if its own transaction had failed.

A unit must not call out of the process (no platform call inside a transaction), and must
be what it would be in a transaction of its own: it sees its batch neighbours' writes,
which are for other orders and jobs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

from robot.db import transaction

_T = TypeVar("_T")
Unit = Callable[[Connection], Any]

#: Seconds the first unit of a batch waits for company before the transaction starts.
WINDOW = 0.002
#: Units per transaction at most.
MAX_BATCH = 64


class GroupCommit:
    """Runs :meth:`run` units in shared transactions (one batch at a time)."""

    def __init__(self, engine: Engine, *, window: float = WINDOW,
                 max_batch: int = MAX_BATCH) -> None:
        self.engine = engine
        self.window = window
        self.max_batch = max_batch
        self._queue: list[tuple[Unit, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        #: Transactions committed and units run (for benchmarks and tests).
        self.batches = 0
        self.units = 0

    async def run(self, unit: Callable[[Connection], _T]) -> _T:
        """Run ``unit(conn)`` in the next shared transaction; its result once committed."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((unit, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        result: _T = await future
        return result

    async def _flush(self) -> None:
        while self._queue:
            if len(self._queue) < self.max_batch and self.window > 0:
                await asyncio.sleep(self.window)
            batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
            try:
                outcomes = await asyncio.to_thread(self._commit, [u for u, _f in batch])
            except BaseException as exc:  # the transaction failed: every caller hears it
                for _unit, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_unit, future), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():  # its caller gave up waiting (cancelled)
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    def _commit(self, units: list[Unit]) -> list[tuple[bool, Any]]:
        outcomes: list[tuple[bool, Any]] = []
        with transaction(self.engine) as conn:
            if len(units) == 1:
                outcomes.append((True, units[0](conn)))
            else:
                for unit in units:
                    savepoint = conn.begin_nested()
                    try:
                        value = unit(conn)
                    except Exception as exc:  # noqa: BLE001 - the unit's caller gets it
                        savepoint.rollback()
                        outcomes.append((False, exc))
                    else:
                        savepoint.commit()
                        outcomes.append((True, value))
        self.batches += 1
        self.units += len(units)
        return outcomes
