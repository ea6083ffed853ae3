"""Item 1: allocation throughput, robot (intake → claim → outbox) against raw-driver floors.

Two floors, both on the raw driver with the robot's durability settings, schema and indexes:
the same-statement floor (:mod:`benchmarks.replay`: the robot's own statements for each
order, recorded and replayed; the ratio that counts) and the 5-statement floor, the
transaction's bare shape (insert order, claim N codes, insert deliveries, update order,
insert outbox row, commit), which leaves out what the product adds (idempotency look-up,
blacklist, order lines, audit chain) and so mixes design and overhead. The robot side runs the real
``robot.pipeline.intake`` with ``allocate=True`` as the daemon's poller and webhooks do (one
transaction per order; with ``--batch N``, N orders to a transaction through the group
commit's ``run_together``, as the daemon takes pushes that arrive together, and the
same-statement floor replays exactly that); the "split" rows take orders in first and
drain them with ``robot.pipeline.allocate_next`` (the daemon's path for orders that
waited). Write-back is off (outbox rows are left pending). Each measurement gets its own
scratch database.

Never touches a database it did not create.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks import replay
from benchmarks.common import (
    BenchShop,
    Result,
    Scratch,
    cpu_of,
    make_order,
    raw_connect,
    seeded,
    stamp,
    take_in,
)
from robot.clock import utcnow
from robot.db import make_engine
from robot.pipeline import allocate_next, intake

TARGET = 0.60


def _split(n: int, workers: int) -> list[range]:
    step = -(-n // workers)
    return [range(s, min(n, s + step)) for s in range(0, n, step)]


def _run_threads(target: Callable[[range], None], n: int, workers: int) -> float:
    """Run ``target`` on ``workers`` threads over slices of ``range(n)``; wall seconds."""
    errors: list[BaseException] = []

    def wrap(part: range) -> None:
        try:
            target(part)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(part,)) for part in _split(n, workers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return elapsed


def _run_processes(target: Callable[[range], int], n: int, workers: int) -> tuple[float, int]:
    """Run ``target`` in ``workers`` forked processes over slices of ``range(n)``, started
    together; (wall seconds, sum of what the targets returned)."""
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Barrier(workers + 1)
    results = ctx.Queue()

    def child(part: range) -> None:
        ready.wait()
        try:
            results.put(("ok", target(part)))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent below
            results.put(("error", f"{type(exc).__name__}: {exc}"))

    procs = [ctx.Process(target=child, args=(part,)) for part in _split(n, workers)]
    for p in procs:
        p.start()
    ready.wait()
    started = time.perf_counter()
    outcomes = [results.get() for _ in procs]
    elapsed = time.perf_counter() - started
    for p in procs:
        p.join()
    failed = [str(v) for kind, v in outcomes if kind == "error"]
    if failed:
        raise RuntimeError(f"a robot client failed: {failed[0]}")
    return elapsed, sum(int(v) for _kind, v in outcomes)


# --------------------------------------------------------------------------- floors

_ORDER_COLS = ("shop, platform, platform_order_id, state, platform_status, buyer_id,"
               " total_cents, currency, extra, received_at, updated_at, due_at")


def _order_values(i: int, per_order: int, now: Any) -> tuple[Any, ...]:
    return ("bench-shop", "memory", f"B{i:09d}", "received", "paid", f"buyer-{i % 997}",
            990 * per_order, "CNY", "{}", now, now, now)


def floor_sqlite(db: Scratch, n: int, per_order: int, pool_id: int) -> float:
    """Raw sqlite3 loop with the robot's pragmas and BEGIN IMMEDIATE; orders/s."""
    conn = raw_connect(db)
    ins_order = f"INSERT INTO orders ({_ORDER_COLS}) VALUES ({', '.join('?' * 12)})"  # noqa: S608 - constant column list and placeholders
    claim = ("DELETE FROM stock WHERE code_id IN (SELECT code_id FROM stock"
             " WHERE pool_id = ? AND expires_at > ? ORDER BY expires_at, code_id LIMIT ?)"
             " RETURNING code_id")
    ins_del = ("INSERT INTO deliveries (order_id, line_no, n, code_id, pool_id, state,"
               " created_at) VALUES (?, 0, ?, ?, ?, 'reserved', ?)")
    upd = ("UPDATE orders SET state = 'allocated', allocated_at = ?, updated_at = ?"
           " WHERE id = ? AND state = 'received'")
    ins_out = ("INSERT INTO outbox (order_id, kind, state, attempts, due_at, created_at)"
               " VALUES (?, 'ship', 'pending', 0, ?, ?)")

    def loop(part: range) -> None:
        for i in part:
            now = stamp(utcnow())
            conn.execute("BEGIN IMMEDIATE")
            oid = conn.execute(ins_order, _order_values(i, per_order, now)).lastrowid
            ids = [r[0] for r in conn.execute(claim, (pool_id, now, per_order))]
            assert len(ids) == per_order
            conn.executemany(ins_del, [(oid, k, cid, pool_id, now)
                                       for k, cid in enumerate(sorted(ids))])
            if conn.execute(upd, (now, now, oid)).rowcount != 1:
                raise RuntimeError("floor: order moved")
            conn.execute(ins_out, (oid, now, now))
            conn.execute("COMMIT")

    try:
        return n / _run_threads(loop, n, 1)
    finally:
        conn.close()


def floor_postgresql(db: Scratch, n: int, per_order: int, pool_id: int, workers: int) -> float:
    """Raw psycopg loop, one connection per client thread; orders/s."""
    ins_order = (f"INSERT INTO orders ({_ORDER_COLS}) VALUES ({', '.join(['%s'] * 12)})"  # noqa: S608 - constants only
                 " RETURNING id")
    claim = ("WITH c AS (SELECT code_id FROM stock WHERE pool_id = %s AND expires_at > %s"
             " ORDER BY expires_at, code_id LIMIT %s FOR UPDATE SKIP LOCKED)"
             " DELETE FROM stock s USING c WHERE s.code_id = c.code_id RETURNING s.code_id")
    ins_del = ("INSERT INTO deliveries (order_id, line_no, n, code_id, pool_id, state,"
               " created_at) VALUES (%s, 0, %s, %s, %s, 'reserved', %s)")
    upd = ("UPDATE orders SET state = 'allocated', allocated_at = %s, updated_at = %s"
           " WHERE id = %s AND state = 'received'")
    ins_out = ("INSERT INTO outbox (order_id, kind, state, attempts, due_at, created_at)"
               " VALUES (%s, 'ship', 'pending', 0, %s, %s)")
    conns = [raw_connect(db) for _ in range(workers)]
    free = list(conns)
    lock = threading.Lock()

    def loop(part: range) -> None:
        with lock:
            conn = free.pop()
        cur = conn.cursor()
        for i in part:
            now = utcnow()
            row = cur.execute(ins_order, _order_values(i, per_order, now)).fetchone()
            assert row is not None
            oid = row[0]
            ids = sorted(r[0] for r in cur.execute(claim, (pool_id, now, per_order)))
            if len(ids) != per_order:
                raise RuntimeError("floor: stock short")
            cur.executemany(ins_del, [(oid, k, cid, pool_id, now) for k, cid in enumerate(ids)])
            if cur.execute(upd, (now, now, oid)).rowcount != 1:
                raise RuntimeError("floor: order moved")
            cur.execute(ins_out, (oid, now, now))
            conn.commit()

    try:
        return n / _run_threads(loop, n, workers)
    finally:
        for c in conns:
            c.close()


def floor_mysql(db: Scratch, n: int, per_order: int, pool_id: int, workers: int) -> float:
    """Raw pymysql loop (SELECT … FOR UPDATE SKIP LOCKED, then DELETE); orders/s."""
    ins_order = f"INSERT INTO orders ({_ORDER_COLS}) VALUES ({', '.join(['%s'] * 12)})"  # noqa: S608 - constants only
    pick = ("SELECT code_id FROM stock WHERE pool_id = %s AND expires_at > %s"
            " ORDER BY expires_at, code_id LIMIT %s FOR UPDATE SKIP LOCKED")
    ins_del = ("INSERT INTO deliveries (order_id, line_no, n, code_id, pool_id, state,"
               " created_at) VALUES (%s, 0, %s, %s, %s, 'reserved', %s)")
    upd = ("UPDATE orders SET state = 'allocated', allocated_at = %s, updated_at = %s"
           " WHERE id = %s AND state = 'received'")
    ins_out = ("INSERT INTO outbox (order_id, kind, state, attempts, due_at, created_at)"
               " VALUES (%s, 'ship', 'pending', 0, %s, %s)")
    conns = [raw_connect(db) for _ in range(workers)]
    free = list(conns)
    lock = threading.Lock()

    def loop(part: range) -> None:
        with lock:
            conn = free.pop()
        cur = conn.cursor()
        for i in part:
            now = utcnow()
            cur.execute(ins_order, _order_values(i, per_order, now))
            oid = cur.lastrowid
            cur.execute(pick, (pool_id, now, per_order))
            ids = sorted(int(r[0]) for r in cur.fetchall())
            if len(ids) != per_order:
                raise RuntimeError("floor: stock short")
            marks = ", ".join(["%s"] * len(ids))
            delete = f"DELETE FROM stock WHERE code_id IN ({marks})"  # noqa: S608 - placeholders
            if cur.execute(delete, ids) != len(ids):
                raise RuntimeError("floor: claim lost rows")
            cur.executemany(ins_del, [(oid, k, cid, pool_id, now) for k, cid in enumerate(ids)])
            if cur.execute(upd, (now, now, oid)) != 1:
                raise RuntimeError("floor: order moved")
            cur.execute(ins_out, (oid, now, now))
            conn.commit()

    try:
        return n / _run_threads(loop, n, workers)
    finally:
        for c in conns:
            c.close()


# --------------------------------------------------------------------------- robot


@dataclass(frozen=True)
class RobotRun:
    pipelined: float  # orders/s, intake then allocate_next per order
    intake_only: float  # orders/s, intake of pre-made platform orders
    allocate_only: float  # orders/s, draining pre-inserted received orders


def robot_pipelined(db: Scratch, n: int, per_order: int, workers: int) -> float:
    """Each client: the daemon's intake (which allocates in the same transaction), then
    drain anything left waiting with allocate_next(); orders/s end to end.

    Several clients are several processes, as the robot scales (one robot process takes a
    shop's orders in one loop; more throughput is more processes on one server database).
    """
    shop = BenchShop()

    def loop(part: range) -> int:
        engine = make_engine(db.url)
        try:
            take_in(engine, shop, part.start, len(part), per_order)  # raises unless all
            got = len(part)
            while allocate_next(engine) is not None:
                got += 1
            return got
        finally:
            engine.dispose()

    elapsed, allocated = _run_processes(loop, n, workers)
    if allocated != n:
        raise RuntimeError(f"robot allocated {allocated} of {n}")
    return n / elapsed


def robot_split(db: Scratch, n: int, per_order: int, workers: int) -> tuple[float, float]:
    """Intake every order first, then drain with allocate_next: (intake/s, allocate/s)."""
    engine = make_engine(db.url, pool_size=max(8, workers))
    shop = BenchShop()
    try:
        def take(part: range) -> None:
            for i in part:
                intake(engine, shop, make_order(i, per_order))

        intake_rate = n / _run_threads(take, n, workers)
        counts: list[int] = []

        def drain(_part: range) -> None:
            got = 0
            while allocate_next(engine) is not None:
                got += 1
            counts.append(got)

        alloc_rate = n / _run_threads(drain, workers, workers)
        if sum(counts) != n:
            raise RuntimeError(f"robot allocated {sum(counts)} of {n}")
        return intake_rate, alloc_rate
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- driver


def robot_timed(db: Scratch, n: int, per_order: int,
                batch: int = 1) -> tuple[float, list[float]]:
    """One client in this process: the daemon's intake (allocating), one transaction per
    order or ``batch`` orders to a transaction, each transaction timed; (orders/s, each
    order's milliseconds: its transaction's)."""
    shop = BenchShop()
    engine = make_engine(db.url)
    took: list[float] = []
    try:
        started = time.perf_counter()
        for start in range(0, n, batch):
            count = min(n, start + batch) - start
            t0 = time.perf_counter()
            take_in(engine, shop, start, count, per_order, batch)
            took.extend([(time.perf_counter() - t0) * 1000] * count)
        return n / (time.perf_counter() - started), took
    finally:
        engine.dispose()


def floor5(db: Scratch, n: int, per_order: int, pool_id: int, clients: int = 1) -> float:
    """The 5-statement floor on ``db``'s backend (SQLite: one client); orders/s."""
    if db.backend == "sqlite":
        return floor_sqlite(db, n, per_order, pool_id)
    if db.backend == "postgresql":
        return floor_postgresql(db, n, per_order, pool_id, clients)
    return floor_mysql(db, n, per_order, pool_id, clients)


def measure(backend: str, n: int, per_order: int = 1, batch: int = 1) -> dict[str, Any]:
    """One client on one backend: the robot, the same-statement floor (the ratio that
    counts) and the 5-statement floor, each with CPU per order (this process's CPU); the
    keys of ``--json``. With ``batch`` > 1 the robot takes ``batch`` orders in per
    transaction, as the daemon's group commit does with pushes that arrive together, and
    the same-statement floor replays that (the 5-statement floor stays one per order)."""
    from benchmarks.soak import percentile

    stock_count = n * per_order + 100
    with seeded(backend, stock_count) as (db, pid):
        five, five_cpu = cpu_of(lambda: floor5(db, n, per_order, pid))
    same = replay.measure(backend, n, per_order, batch)
    with seeded(backend, stock_count) as (db, _pid):
        (robot, took), robot_cpu = cpu_of(lambda: robot_timed(db, n, per_order, batch))
    five_us, robot_us = five_cpu / n * 1e6, robot_cpu / n * 1e6
    print(f"  alloc {backend}: robot {robot:,.0f}/s ({robot_us:,.0f} us CPU/order); "
          f"same-statement floor {same.orders_per_s:,.0f}/s ({same.cpu_us_per_order:,.0f} us, "
          f"{same.statements_per_order:.1f} statements/order); 5-statement floor "
          f"{five:,.0f}/s ({five_us:,.0f} us)", flush=True)
    return {"backend": backend, "orders": n, "batch": batch, "orders_per_s": round(robot, 1),
            "cpu_us_per_order": round(robot_us), "p50_ms": _ms(percentile(took, 0.50)),
            "p99_ms": _ms(percentile(took, 0.99)),
            "floor_orders_per_s": round(same.orders_per_s, 1),
            "floor_cpu_us_per_order": round(same.cpu_us_per_order),
            "ratio": round(robot / same.orders_per_s, 3),
            "cpu_ratio": _share(same.cpu_us_per_order, robot_us),
            "floor": "same statements: the robot's own statements for each order, recorded "
                     "and replayed on the raw driver",
            "floor_statements_per_order": round(same.statements_per_order, 2),
            "floor_commits_per_order": round(same.commits_per_order, 2),
            "floor5_orders_per_s": round(five, 1), "floor5_cpu_us_per_order": round(five_us),
            "ratio5": round(robot / five, 3), "cpu_ratio5": _share(five_us, robot_us),
            "floor5": "5-statement transaction (insert order, claim, deliveries, update, "
                      "outbox) on the raw driver"}


def _share(floor_us: float, robot_us: float) -> float | None:
    return round(floor_us / robot_us, 3) if robot_us else None


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def run(backends: Sequence[str], n: int, per_order: int = 1,
        pg_clients: Sequence[int] = (1, 4, 8), my_clients: Sequence[int] = (1,),
        split: bool = True) -> list[Result]:
    """Floors and robot figures for every backend asked for: with one client the target is
    judged against the same-statement floor (the 5-statement floor is a second line); with
    more clients only the 5-statement floor runs (a replay is one ordered stream)."""
    results: list[Result] = []
    stock_count = n * per_order + 100
    for backend in backends:
        clients = {"sqlite": (1,), "postgresql": tuple(pg_clients),
                   "mysql": tuple(my_clients)}[backend]
        for c in clients:
            with seeded(backend, stock_count) as (db, pid):
                five = floor5(db, n, per_order, pid, c)
            with seeded(backend, stock_count) as (db, _pid):
                robot = robot_pipelined(db, n, per_order, c)
            case = f"{n:,} orders x{per_order} code, {c} client{'s' if c > 1 else ''}"
            note = "intake(allocate=True), as the daemon; clients are processes"
            if c == 1:
                same = replay.measure(backend, n, per_order)
                results.append(Result(
                    "alloc", backend, case, same.orders_per_s, robot, "orders/s",
                    f">= {TARGET:.0%}", robot / same.orders_per_s >= TARGET,
                    f"{note}; floor: the robot's {same.statements_per_order:.1f} statements "
                    "per order replayed raw"))
            results.append(Result("alloc", backend, case + " (5-statement floor)", five,
                                  robot, "orders/s", "", None, note))
            if split and c == 1:
                with seeded(backend, stock_count) as (db, _pid):
                    intake_rate, alloc_rate = robot_split(db, n, per_order, c)
                results.append(Result("alloc", backend, case + " (split)", five, alloc_rate,
                                       "orders/s", "", None,
                                       f"allocate_next only; intake alone {intake_rate:,.0f}/s"))
            print(f"  alloc {backend} {case}: 5-statement floor {five:,.0f}/s robot "
                  f"{robot:,.0f}/s", flush=True)
    return results
