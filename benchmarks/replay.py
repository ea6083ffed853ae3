"""The same-statement allocation floor: the robot's own statements, replayed on the raw driver.

The 5-statement floor of :mod:`benchmarks.alloc` runs a smaller transaction than the robot
(no idempotency look-up, blacklist check, order lines or audit chain), so its ratio mixes
design and overhead. This floor runs exactly what the robot runs: a recording robot
(``robot.pipeline.intake(..., allocate=True)``, the daemon's path) takes each order in on
one scratch database while an engine listener (``before_cursor_execute``) keeps every
statement as the driver received it — the dialect's SQL text with its positional or named
parameters, after SQLAlchemy's bind processing — and every commit. The recorded statements
are then executed, with each order's own parameters, on a raw DB-API connection (sqlite3,
psycopg, pymysql; the robot's session settings) to a second scratch database seeded the
same way, so every generated id and claimed code is the same in both: rows are fetched as
the robot fetches them and each statement's rowcount must match the recording's.

Only the replay is timed. It runs in chunks (record a chunk, replay it), so memory stays
bounded at any order count. Not replayed, because they are not the transaction's statements:
SQLAlchemy's pool pre-ping and its reset (rollback) of a connection returned to the pool.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, event, text

from benchmarks.common import BenchShop, raw_connect, seeded, take_in
from robot.db import make_engine

CHUNK = 1000  # orders recorded, then replayed, at a time

#: One step: ("execute", sql, params, rowcount) | ("executemany", sql, rows, rowcount) |
#: ("commit",) | ("rollback",).
Step = tuple[Any, ...]


@dataclass
class Recorder:
    """Keeps what an engine sends its driver, in order."""

    steps: list[Step] = field(default_factory=list)
    executes: int = 0
    commits: int = 0

    def attach(self, engine: Engine) -> None:
        event.listen(engine, "after_cursor_execute", self._executed)
        event.listen(engine, "commit", self._commit)
        event.listen(engine, "rollback", self._rollback)

    def _executed(self, _conn: Any, cursor: Any, statement: str, params: Any, _ctx: Any,
                  many: bool) -> None:
        self.executes += 1
        self.steps.append(("executemany" if many else "execute", statement, params,
                           cursor.rowcount))

    def _commit(self, _conn: Any) -> None:
        self.commits += 1
        self.steps.append(("commit",))

    def _rollback(self, _conn: Any) -> None:
        self.steps.append(("rollback",))

    def take(self) -> list[Step]:
        steps, self.steps = self.steps, []
        return steps


def play(conn: Any, steps: list[Step]) -> None:
    """Run recorded steps on a raw DB-API connection, fetching every result set; a rowcount
    that differs from the recording's means the replay did other work, and fails."""
    cur = conn.cursor()
    for step in steps:
        kind = step[0]
        if kind == "commit":
            conn.commit()
            continue
        if kind == "rollback":
            conn.rollback()
            continue
        _kind, sql, params, rowcount = step
        if kind == "executemany":
            cur.executemany(sql, params)
        else:
            cur.execute(sql, params)
        if cur.rowcount != rowcount:
            raise RuntimeError(f"replay: rowcount {cur.rowcount}, recorded {rowcount}: {sql}")
        if cur.description is not None:
            cur.fetchall()
    cur.close()


@dataclass(frozen=True)
class SameFloor:
    orders_per_s: float
    cpu_us_per_order: float
    statements_per_order: float  # executes the driver received per order (BEGIN included)
    commits_per_order: float


def measure(backend: str, n: int, per_order: int = 1, batch: int = 1) -> SameFloor:
    """Record the robot's intake of ``n`` orders (``batch`` to a transaction, as
    :func:`benchmarks.common.take_in`) and replay it raw; the replay's figures."""
    stock = n * per_order + 100
    shop = BenchShop()
    with seeded(backend, stock) as (rec_db, _), seeded(backend, stock) as (floor_db, _):
        engine = make_engine(rec_db.url)
        with engine.connect() as warm:  # the dialect's first-connect queries: not the order's
            warm.execute(text("SELECT 1"))
        recorder = Recorder()
        recorder.attach(engine)
        conn = raw_connect(floor_db)
        wall = cpu = 0.0
        try:
            for start in range(0, n, CHUNK):
                take_in(engine, shop, start, min(n, start + CHUNK) - start, per_order, batch)
                steps = recorder.take()
                t0, c0 = time.perf_counter(), time.process_time()
                play(conn, steps)
                wall += time.perf_counter() - t0
                cpu += time.process_time() - c0
            _check(conn, n)
        finally:
            conn.close()
            engine.dispose()
    return SameFloor(n / wall, cpu / n * 1e6, recorder.executes / n, recorder.commits / n)


def _check(conn: Any, n: int) -> None:
    """The replayed database allocated every order, as the robot's did."""
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM orders WHERE state = 'allocated'")
    got = int(cur.fetchone()[0])
    cur.close()
    if got != n:
        raise RuntimeError(f"replay allocated {got} of {n} orders")
