"""Item 5: the soak — a steady load for a long time, with one stuck session in the middle.

PostgreSQL only. The robot is the real daemon (``robot run``: allocator, write-back
dispatcher, scheduler, HTTP listener) in a child process of its own
(:mod:`benchmarks.daemon`), with one shop on the in-memory platform (``connectors.memory``).
Orders arrive the way a pushing platform delivers them: feeder threads of this process POST
a signed push carrying the paid order to the robot's ``/hooks/<shop>`` over loopback; the
robot takes it in, allocates, ships and writes the memo through the outbox, and the platform
acknowledges at once. So every hot table sees its real traffic (orders, order_lines, stock,
deliveries, outbox, audit, push_seen, shop_state), which ``intake`` + ``allocate_next``
alone would not give (the outbox would only grow).

1. Max rate: ``max_orders`` orders pushed by four feeder threads as fast as the robot
   answers, timed from the first push to the last order shipped (its own scratch database).
2. Soak: a fresh scratch database; orders pushed at half that rate, open loop (a pacer
   thread hands each order to a pool of senders at its due time), for ``minutes``.
   A third of the way in, a separate session opens ``BEGIN ISOLATION LEVEL REPEATABLE
   READ; SELECT 1 FROM orders LIMIT 1`` and sits idle in transaction for a sixth of the run
   (5 of 30 minutes), holding back the xmin horizon, then rolls back. (A READ COMMITTED
   session idle in transaction after a plain SELECT holds no snapshot and no xid, so it
   would not hold vacuum back; the REPEATABLE READ snapshot does, as a stuck reporting
   query or a client that hung mid-transaction does.) Every bucket (a minute; 10 s in
   short runs) ``pg_stat_user_tables`` is sampled.
3. Judged: throughput drift (shipped per bucket, last 5 minutes against first 5), the worst
   bucket's p99 intake→shipped latency against the first 5 minutes' p99, and whether the
   hot tables' dead tuples came back down after the session was released.

SQLite and MariaDB are reported as not applicable: the item is about PostgreSQL's vacuum
horizon. (Their analogues — a long reader starving SQLite's WAL checkpoint, an old read view
holding back InnoDB purge — would need measurements of their own.)

Never touches a database it did not create; codes are generated and never printed.
"""

from __future__ import annotations

import contextlib
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, select, text
from sqlalchemy.engine import make_url

from benchmarks.common import Result, raw_connect, scratch_db
from benchmarks.daemon import FEEDERS, Feeder, fleet_on
from robot.clock import utcnow
from robot.db import make_engine
from robot.schema import orders

HOT = ("stock", "orders", "outbox", "deliveries", "audit_head", "shop_state")
DRIFT_TARGET = 0.15
P99_TARGET = 2.0


# --------------------------------------------------------------------------- measuring


SHIPPED = "SELECT count(*) FROM orders WHERE state = 'shipped'"
PENDING = "SELECT count(*) FROM outbox WHERE state = 'pending'"


def _count(conn: Any, sql: str) -> int:
    """One count on a raw connection (no write lock on SQLite), its transaction ended."""
    cur = conn.cursor()
    cur.execute(sql)
    value = int(cur.fetchone()[0])
    cur.close()
    conn.commit()
    return value


def _wait_count(conn: Any, sql: str, done: Callable[[int], bool], timeout: float) -> float:
    """Poll a count every 0.1 s until ``done(count)``; the monotonic time it happened."""
    deadline = time.monotonic() + timeout
    while True:
        value = _count(conn, sql)
        if done(value):
            return time.monotonic()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{sql}: {value} after {timeout:.0f}s")
        time.sleep(0.1)  # the daemons are other processes: their rows are what we wait on


@dataclass(frozen=True)
class MaxRate:
    orders_per_s: float  # first push to last order shipped
    #: CPU of the daemon processes (every thread, from /proc) from the first push until the
    #: outbox is empty (the last memo written), per order.
    cpu_us_per_order: float
    #: CPU of this process (the feeders) over the same time, per order.
    feeder_cpu_us_per_order: float
    processes: int


def max_rate(backend: str, n: int) -> float:
    """Orders/s the daemon ships when :data:`~benchmarks.daemon.FEEDERS` feeders push ``n``
    orders as fast as it answers."""
    return measure_max(backend, n).orders_per_s


def measure_max(backend: str, n: int, processes: int = 1) -> MaxRate:
    """:func:`max_rate` with the daemons' CPU per order, ``processes`` daemons on one
    database (:data:`~benchmarks.daemon.FEEDERS` feeders each)."""
    root = Path(tempfile.mkdtemp(prefix="robot-bench-soak-max-"))
    try:
        with scratch_db(backend, tables=False) as db, \
                fleet_on(db, root, n + 100, n, processes) as fleet:
            feeder = Feeder(fleet.urls)
            reader = raw_connect(db)
            try:
                cpu0, own0 = fleet.cpu(), time.process_time()
                started = time.monotonic()
                with ThreadPoolExecutor(FEEDERS * processes) as pool:
                    list(pool.map(feeder.send, range(n)))
                done = _wait_count(reader, SHIPPED, lambda v: v >= n, timeout=600)
                _wait_count(reader, PENDING, lambda v: v == 0, timeout=120)
                cpu, own = fleet.cpu() - cpu0, time.process_time() - own0
            finally:
                reader.close()
            return MaxRate(n / (done - started), cpu / n * 1e6, own / n * 1e6, processes)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class TableSample:
    dead: int
    live: int
    autovacuums: int
    last_autovacuum: datetime | None
    vacuums: int = 0  # manual VACUUMs (the robot's own when the server's autovacuum is off)


@dataclass
class Bucket:
    index: int
    offered: int = 0
    tables: dict[str, TableSample] = field(default_factory=dict)
    holding: bool = False
    held_xmin: str | None = None


def _stats(engine: Engine) -> dict[str, TableSample]:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT relname, n_dead_tup, n_live_tup, autovacuum_count, last_autovacuum,"
            " vacuum_count FROM pg_stat_user_tables")).all()
    return {r[0]: TableSample(int(r[1]), int(r[2]), int(r[3]), r[4], int(r[5])) for r in rows}


def _sizes(engine: Engine, tables: Sequence[str]) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: int(conn.execute(text("SELECT pg_total_relation_size(CAST(:t AS regclass))"),
                                    {"t": t}).scalar_one()) for t in tables}


class Holder:
    """A session left idle in a REPEATABLE READ transaction (it pins the xmin horizon)."""

    def __init__(self, url: str) -> None:
        u = make_url(url)
        self.conn = psycopg.connect(host=u.host, port=u.port, user=u.username,
                                    password=u.password, dbname=u.database)
        self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        self.conn.execute("SELECT 1 FROM orders LIMIT 1")
        self.pid = self.conn.info.backend_pid

    def xmin(self, engine: Engine) -> str | None:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT state, backend_xmin FROM pg_stat_activity"
                                    " WHERE pid = :p"), {"p": self.pid}).first()
        return None if row is None else f"{row[0]}, xmin {row[1]}"

    def release(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self.conn.rollback()
        self.conn.close()


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


@dataclass
class SoakReport:
    rate: float
    bucket_s: float
    buckets: list[Bucket]
    shipped: list[int]
    p50: list[float | None]
    p99: list[float | None]
    hold: tuple[int, int]  # first and last bucket index with the session held
    sizes: dict[str, tuple[int, int]]  # table -> (bytes at start, bytes at end)
    push_errors: int
    unshipped: int
    paid_to_shipped_ms: list[float] = field(default_factory=list)  # every shipped order


def soak(backend: str, minutes: float, rate: float, *, bucket_s: float,
         hold_at: float, hold_for: float, processes: int = 1) -> SoakReport:
    """Push orders at ``rate``/s for ``minutes`` to ``processes`` daemons; a stuck session
    from ``hold_at`` s for ``hold_for`` s (PostgreSQL; ``hold_for=0``: none); sample the
    tables every ``bucket_s`` s (PostgreSQL's statistics; other backends run the same paced
    load without them)."""
    pg = backend == "postgresql"
    total_s = minutes * 60
    n = int(rate * total_s) + 10
    nb = round(total_s / bucket_s)
    root = Path(tempfile.mkdtemp(prefix="robot-bench-soak-"))
    try:
        offered = int(rate * nb * bucket_s) + 110  # whole buckets may outrun n
        with scratch_db(backend, tables=False) as db, \
                fleet_on(db, root, n + 100, offered, processes) as fleet:
            engine = make_engine(db.url)
            reader = raw_connect(db)
            feeder = Feeder(fleet.urls)
            todo: queue.Queue[int | None] = queue.Queue()
            senders = [threading.Thread(target=_sender, args=(feeder, todo), daemon=True)
                       for _ in range(FEEDERS * processes)]
            for t in senders:
                t.start()
            buckets = [Bucket(k) for k in range(nb)]
            holder: Holder | None = None
            hold_first = int(hold_at // bucket_s)
            sizes0 = _sizes(engine, HOT) if pg else {}
            start_wall = utcnow()
            start = time.monotonic()
            i = 0
            try:
                for k in range(nb):
                    end = start + (k + 1) * bucket_s
                    while True:
                        now = time.monotonic()
                        if holder is None and hold_for > 0 and k == hold_first \
                                and now - start >= hold_at:
                            holder = Holder(db.url)
                        if holder is not None and now - start >= hold_at + hold_for:
                            holder.release()
                            holder = None
                            hold_first = -1  # never again
                        if now >= end:
                            break
                        due = start + i / rate
                        if due > now:
                            time.sleep(min(min(due, end) - now, 0.05))
                            continue
                        todo.put(i)
                        buckets[k].offered += 1
                        i += 1
                    buckets[k].holding = holder is not None
                    if holder is not None:
                        buckets[k].held_xmin = holder.xmin(engine)
                    buckets[k].tables = _stats(engine) if pg else {}
                    _progress(buckets[k], bucket_s, engine, start_wall)
            finally:
                if holder is not None:
                    holder.release()
                for _ in senders:
                    todo.put(None)
                for t in senders:
                    t.join(timeout=120)
            settle = time.monotonic() + 120
            while _count(reader, SHIPPED) < feeder.count and time.monotonic() < settle:
                time.sleep(0.5)
            reader.close()
            with engine.connect() as conn:
                rows = conn.execute(select(orders.c.received_at, orders.c.shipped_at,
                                           orders.c.paid_at)).all()
            sizes1 = _sizes(engine, HOT) if pg else {}
            engine.dispose()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    shipped = [0] * nb
    lat: list[list[float]] = [[] for _ in range(nb)]
    unshipped = 0
    paid_to_shipped: list[float] = []
    for received, shipped_at, paid_at in rows:
        if shipped_at is None:
            unshipped += 1
            continue
        if paid_at is not None:
            paid_to_shipped.append((shipped_at - paid_at).total_seconds() * 1000)
        kb = int((received - start_wall).total_seconds() // bucket_s)
        if 0 <= kb < nb:
            lat[kb].append((shipped_at - received).total_seconds() * 1000)
        ks = int((shipped_at - start_wall).total_seconds() // bucket_s)
        if 0 <= ks < nb:
            shipped[ks] += 1
    return SoakReport(
        rate=rate, bucket_s=bucket_s, buckets=buckets, shipped=shipped,
        p50=[percentile(v, 0.50) for v in lat], p99=[percentile(v, 0.99) for v in lat],
        hold=(int(hold_at // bucket_s), int((hold_at + hold_for) // bucket_s) - 1),
        sizes={t: (sizes0[t], sizes1[t]) for t in HOT if t in sizes0},
        push_errors=feeder.errors, unshipped=unshipped, paid_to_shipped_ms=paid_to_shipped)


def _sender(feeder: Feeder, todo: queue.Queue[int | None]) -> None:
    while True:
        i = todo.get()
        if i is None:
            return
        feeder.send(i)


def _progress(b: Bucket, bucket_s: float, engine: Engine, start_wall: datetime) -> None:
    lo = start_wall + timedelta(seconds=b.index * bucket_s)
    with engine.connect() as conn:
        shipped = int(conn.execute(text(
            "SELECT count(*) FROM orders WHERE shipped_at >= :lo AND shipped_at < :hi"),
            {"lo": lo, "hi": lo + timedelta(seconds=bucket_s)}).scalar_one())
    dead = " ".join(f"{t}={b.tables[t].dead}" for t in HOT if t in b.tables)
    held = f" HELD ({b.held_xmin})" if b.holding else ""
    print(f"  soak {b.index * bucket_s / 60:5.1f} min: offered {b.offered}, shipped {shipped};"
          f" dead {dead}{held}", flush=True)


# --------------------------------------------------------------------------- judging


def _window(report: SoakReport) -> int:
    """Buckets in "the first / last 5 minutes" (a quarter of a shorter run)."""
    nb = len(report.buckets)
    return max(1, min(int(300 // report.bucket_s), nb // 4))


def judge(report: SoakReport) -> tuple[list[Result], list[str]]:
    """Result rows and the printed per-bucket tables."""
    nb, w = len(report.buckets), _window(report)
    first = sum(report.shipped[:w]) / w
    last = sum(report.shipped[nb - w:]) / w
    drift = abs(last - first) / first if first else float("inf")
    base = [p for p in report.p99[:w] if p is not None]
    baseline = max(base) if base else None
    worst = max((p for p in report.p99 if p is not None), default=None)
    h0, h1 = report.hold
    lines = [f"{'t (min)':>7} {'offered':>7} {'shipped':>7} {'p50 ms':>7} {'p99 ms':>7}  "
             + " ".join(f"{t:>10}" for t in HOT) + "  held"]
    for b in report.buckets:
        k = b.index
        p50, p99 = report.p50[k], report.p99[k]
        lines.append(
            f"{k * report.bucket_s / 60:7.1f} {b.offered:7d} {report.shipped[k]:7d}"
            f" {'-' if p50 is None else f'{p50:.0f}':>7}"
            f" {'-' if p99 is None else f'{p99:.0f}':>7}"
            "  " + " ".join(f"{b.tables[t].dead if t in b.tables else 0:>10}" for t in HOT)
            + ("  " + (b.held_xmin or "held") if h0 <= k <= h1 else ""))
    # Dead tuples: before the hold, at its peak, at the end; "normal" is what autovacuum
    # keeps a table at by default (50 + 20 % of its live rows).
    before = report.buckets[max(0, h0 - 1)].tables
    end = report.buckets[-1].tables
    lines.append("")
    lines.append(f"{'table':>12} {'dead before':>11} {'dead peak':>9} {'dead end':>8}"
                 f" {'live end':>8} {'autovacuums':>11} {'vacuums':>7} {'size start':>10}"
                 f" {'size end':>9}"
                 "  recovered?")
    recovered_all = True
    for t in HOT:
        if t not in end:
            continue
        peak = max(b.tables[t].dead for b in report.buckets if t in b.tables)
        normal = 50 + 0.2 * end[t].live
        ok = end[t].dead <= max(2 * normal, before.get(t, end[t]).dead)
        recovered_all &= ok
        s0, s1 = report.sizes[t]
        lines.append(f"{t:>12} {before[t].dead if t in before else 0:>11} {peak:>9}"
                     f" {end[t].dead:>8} {end[t].live:>8} {end[t].autovacuums:>11}"
                     f" {end[t].vacuums:>7}"
                     f" {s0 // 1024:>8}kB {s1 // 1024:>7}kB  {'yes' if ok else 'NO'}")
    others = sorted(t for t in end if t not in HOT
                    and max(b.tables[t].dead for b in report.buckets if t in b.tables) >= 1000)
    if others:
        lines.append("other tables with >= 1000 dead tuples at some point: " + ", ".join(
            f"{t} (end {end[t].dead})" for t in others))
    minutes = nb * report.bucket_s / 60
    case = (f"{minutes:.3g} min at {report.rate:.1f} orders/s, idle in transaction"
            f" {h0 * report.bucket_s / 60:.3g}-{(h1 + 1) * report.bucket_s / 60:.3g} min")
    note = (f"{report.push_errors} push retries, {report.unshipped} unshipped at the end;"
            f" windows of {w * report.bucket_s / 60:.3g} min")
    rows = [
        Result("soak", "postgresql", case + ": throughput", first * 60 / report.bucket_s,
               last * 60 / report.bucket_s, "orders/min", f"drift <= {DRIFT_TARGET:.0%}",
               drift <= DRIFT_TARGET, f"drift {drift:.1%} (last window vs first); " + note),
        Result("soak", "postgresql", case + ": p99", baseline, worst, "ms",
               f"<= {P99_TARGET:g}x", None if baseline is None or worst is None
               else worst <= P99_TARGET * baseline,
               "worst bucket's p99 intake->shipped vs the first window's worst p99"),
        Result("soak", "postgresql", case + ": dead tuples", None, None, "",
               "recovered", recovered_all,
               "hot tables back to <= 2x autovacuum's threshold (50 + 20 % live) or the"
               " pre-hold level by the end"),
    ]
    return rows, lines


def run(backends: Sequence[str], minutes: float, max_orders: int) -> list[Result]:
    """The soak on PostgreSQL; other backends get a not-applicable row."""
    results: list[Result] = []
    for backend in backends:
        if backend != "postgresql":
            results.append(Result("soak", backend, "idle-in-transaction soak", None, None, "",
                                  "", None, "not applicable: the item is about PostgreSQL's"
                                  " vacuum horizon (see benchmarks/soak.py)"))
            continue
        top = max_rate(backend, max_orders)
        rate = top / 2
        print(f"  soak {backend}: max {top:.1f} orders/s; soaking at {rate:.1f}/s for"
              f" {minutes:g} min", flush=True)
        total = minutes * 60
        bucket = 60.0 if minutes >= 10 else 10.0
        hold_for = max(30.0, total / 6)
        hold_at = round(total / 3 / bucket) * bucket
        report = soak(backend, minutes, rate, bucket_s=bucket, hold_at=hold_at,
                      hold_for=hold_for)
        rows, lines = judge(report)
        print(f"\n== 5. soak per {bucket:g} s (dead tuples from pg_stat_user_tables)")
        print("\n".join(lines))
        max_row = Result("soak", backend, f"max rate, {max_orders} orders, {FEEDERS} feeders", None,
                         top, "orders/s", "", None, "real daemon, memory platform, push intake")
        results += [max_row, *rows]
    return results
