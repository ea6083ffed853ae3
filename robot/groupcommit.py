"""Group commit: short units of database work from many tasks share one transaction.

A durable commit costs a disk flush (SQLite's fsync, the server's WAL flush) whatever it
holds; the write-back's bookkeeping is many tiny transactions (a job's context read, its
outcome recorded) from jobs running side by side. :class:`GroupCommit` gathers the units
that arrive while a transaction is being committed (or, when the lane was idle, within
``window`` seconds of the first one; the callers a commit answers get one turn of the event
loop to queue their next step) and runs them in one transaction, on a worker thread (one
batch at a time on SQLite, which has one writer; up to :data:`SERVER_PARALLEL` on a server
database, whose round trips overlap — a new batch starts gathering only while the others
commit):

* a batch first runs as one plain transaction; when a unit raises, that transaction is
  rolled back and the batch runs again with each unit in a savepoint of its own: the unit
  that raises is rolled back alone and its caller gets the exception; its neighbours go on
  (so a unit must be safe to run twice: it only reads and writes the database, and what it
  did in a rolled-back transaction is gone);
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
import contextvars
import functools
import weakref
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

from robot.clock import utcnow
from robot.db import dialect_of, transaction
from robot.matcher import claim_ahead, forget_ahead, give_back

_T = TypeVar("_T")
Unit = Callable[[Connection], Any]
#: Codes a unit will claim, per pool name (its order's lines): claimed for the whole batch
#: in one statement per pool (:func:`robot.matcher.claim_ahead`).
Needs = Mapping[str, int]

#: Seconds the first unit of a batch waits for company before the transaction starts.
WINDOW = 0.002
#: Units per transaction at most.
MAX_BATCH = 64
#: Batches in flight at once on a server database (SQLite has one writer: one).
SERVER_PARALLEL = 4


class _UnitFailed(Exception):
    """A unit of a plain batch raised (the batch runs again with savepoints)."""


class GroupCommit:
    """Runs :meth:`run` units in shared transactions (one batch at a time)."""

    def __init__(self, engine: Engine, *, window: float = WINDOW,
                 max_batch: int = MAX_BATCH, parallel: int | None = None) -> None:
        self.engine = engine
        self.window = window
        self.max_batch = max_batch
        self.parallel = parallel or (1 if dialect_of(engine) == "sqlite" else SERVER_PARALLEL)
        # Its own threads, one per lane: a batch's hand-off wakes a thread that already
        # holds the lane's connection warm, not whichever thread of the loop's pool is free.
        self._threads = ThreadPoolExecutor(self.parallel, thread_name_prefix="group-commit")
        weakref.finalize(self, self._threads.shutdown, wait=False)
        self._queue: list[tuple[Unit, Needs | None, asyncio.Future[Any]]] = []
        self._flushers: set[asyncio.Task[None]] = set()
        self._gathering = False  # a flusher is waiting for company for its next batch
        self._last_commit = float("-inf")  # loop time of the last batch's end
        #: Transactions committed and units run (for benchmarks and tests).
        self.batches = 0
        self.units = 0

    async def run(self, unit: Callable[[Connection], _T], *, needs: Needs | None = None) -> _T:
        """Run ``unit(conn)`` in the next shared transaction; its result once committed.
        ``needs``: the codes the unit will claim, per pool (claimed with its neighbours')."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((unit, needs, future))
        if not self._gathering and len(self._flushers) < self.parallel:
            self._flushers.add(asyncio.create_task(self._flush()))
        result: _T = await future
        return result

    async def _flush(self) -> None:
        try:
            await self._flush_batches()
        finally:
            # Left the set in the same step as its last look at the queue: a unit queued
            # after that look starts a new flusher.
            task = asyncio.current_task()
            if task is not None:
                self._flushers.discard(task)

    async def _flush_batches(self) -> None:
        # Whenever units wait, some flusher is gathering them or will look again after its
        # commit; one that finds another gathering leaves the queue to it.
        loop = asyncio.get_running_loop()
        answered = False
        while not self._gathering:
            if not self._queue:
                if not answered:
                    return
                # The callers just answered take their next step now: one turn of the loop
                # lets them queue it, and it goes at once instead of through a new window.
                answered = False
                await asyncio.sleep(0)
                continue
            self._gathering = True
            try:
                # Only a batch that starts from idle waits for company: a lane that
                # committed within the window already gathered whatever queued meanwhile.
                idle = loop.time() - self._last_commit >= self.window
                if idle and len(self._queue) < self.max_batch and self.window > 0:
                    await asyncio.sleep(self.window)
            finally:
                self._gathering = False
            batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
            try:
                call = functools.partial(contextvars.copy_context().run, self._commit,
                                         [u for u, _n, _f in batch], [n for _u, n, _f in batch])
                outcomes = await loop.run_in_executor(self._threads, call)
            except BaseException as exc:  # the transaction failed: every caller hears it
                for _unit, _needs, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            self._last_commit = loop.time()
            answered = True
            for (_unit, _needs, future), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():  # its caller gave up waiting (cancelled)
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    def _commit(self, units: list[Unit], needs: list[Needs | None]) -> list[tuple[bool, Any]]:
        outcomes = run_together(self.engine, units, needs)
        # (A failed commit raised out of here to every caller: it is not run again.)
        self.batches += 1
        self.units += len(units)
        return outcomes


def run_together(engine: Engine, units: Sequence[Unit],
                 needs: Sequence[Needs | None] = ()) -> list[tuple[bool, Any]]:
    """Run ``units`` in one transaction: ``(True, result)`` or ``(False, exception)`` each.

    Plain first; when a unit raises, that transaction is rolled back and the units run
    again with a savepoint each, so the failing unit alone is rolled back and its neighbours
    commit. A failure of the transaction itself (the database, the commit) raises out of
    here for all of them (for a lone unit it is its outcome: the same to its caller).

    ``needs`` (one per unit, or none) are the codes the units will claim per pool: with two
    or more units they are claimed together first, one statement per pool, and what no
    delivery took is put back before the commit (:mod:`robot.matcher`).
    """
    if len(units) == 1:
        try:
            with transaction(engine) as conn:
                return [(True, units[0](conn))]
        except Exception as exc:  # noqa: BLE001 - the unit's caller gets it
            return [(False, exc)]
    if not units:
        return []
    total = _total(needs)
    try:
        with transaction(engine) as conn:
            try:
                claim_ahead(conn, total, utcnow())
                outcomes: list[tuple[bool, Any]] = []
                for unit in units:
                    try:
                        outcomes.append((True, unit(conn)))
                    except Exception as exc:
                        raise _UnitFailed from exc
                give_back(conn)
            finally:
                forget_ahead(conn)
    except _UnitFailed:
        pass  # rolled back: run again, isolating the failing unit
    else:
        return outcomes
    return _isolated(engine, units, total)


def _total(needs: Sequence[Needs | None]) -> Counter[str]:
    total: Counter[str] = Counter()
    for one in needs:
        if one:
            total.update(one)
    return total


def _isolated(engine: Engine, units: Sequence[Unit], total: Needs) -> list[tuple[bool, Any]]:
    """The units with each in a savepoint (a unit rolled back leaves the codes it took
    from the batch's claim to :func:`robot.matcher.give_back`)."""
    outcomes: list[tuple[bool, Any]] = []
    with transaction(engine) as conn:
        try:
            claim_ahead(conn, total, utcnow())
            for unit in units:
                savepoint = conn.begin_nested()
                try:
                    value = unit(conn)
                except Exception as exc:  # the unit's caller gets it
                    if conn.invalidated:
                        # The session itself is gone (killed, the server restarted): no
                        # savepoint is left to roll back to; the transaction fails for
                        # every unit, as a database error its callers wait out.
                        raise
                    savepoint.rollback()
                    outcomes.append((False, exc))
                else:
                    savepoint.commit()
                    outcomes.append((True, value))
            give_back(conn)
        finally:
            forget_ahead(conn)
    return outcomes
