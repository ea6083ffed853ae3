"""Item 4: claim latency as a pool grows, and the claim's query plan on each backend.

A pool of N codes is seeded in-database; then single-code claims run through the real
``robot.matcher.claim``, each in its own committed transaction (BEGIN IMMEDIATE on SQLite).
The claim statement's own latency is the figure (the commit's fsync dominates the whole
transaction and is the same for every pool size); the whole transaction is in the note.
The "floor" column is the smallest pool's p50 on the same backend; the target is that
larger pools stay within 1.5x of it.

Plans are printed with EXPLAIN (PostgreSQL: EXPLAIN ANALYZE inside a rolled-back
transaction, so nothing is claimed). Never touches a database it did not create.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

from sqlalchemy import Engine, text

from benchmarks.common import Result, new_pool, scratch_db, seed_stock
from robot.clock import utcnow
from robot.db import make_engine, transaction
from robot.matcher import _PG_CLAIM, _SQLITE_CLAIM, claim

LIMIT = 1.5

_MYSQL_PICK = text(
    "SELECT code_id FROM stock WHERE pool_id = :pool_id AND expires_at > :now"
    " ORDER BY expires_at, code_id LIMIT :n FOR UPDATE SKIP LOCKED"
)


def explain(engine: Engine, pool_id: int) -> list[str]:
    """The claim's plan as the backend reports it."""
    params = {"pool_id": pool_id, "now": utcnow(), "n": 1}
    backend = engine.dialect.name
    with engine.connect() as conn:
        trans = conn.begin()
        try:
            if backend == "sqlite":
                sql = "EXPLAIN QUERY PLAN " + str(_SQLITE_CLAIM)
                rows = conn.execute(text(sql), params).all()
                lines = [str(r[-1]) for r in rows]
            elif backend == "postgresql":
                sql = "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + str(_PG_CLAIM)
                lines = [str(r[0]) for r in conn.execute(text(sql), params)]
            else:
                sql = "EXPLAIN " + str(_MYSQL_PICK)
                res = conn.execute(text(sql), params)
                keys = list(res.keys())
                lines = [" ".join(f"{k}={v}" for k, v in zip(keys, r, strict=True)
                                  if k in ("table", "type", "key", "rows", "Extra"))
                         for r in res]
        finally:
            trans.rollback()
    return lines


def claim_latencies(engine: Engine, pool_id: int,
                    claims: int) -> tuple[list[float], list[float]]:
    """Milliseconds per claim statement, and per whole committed claim transaction."""
    stmt, whole = [], []
    for _ in range(claims):
        started = time.perf_counter()
        with transaction(engine) as conn:
            t0 = time.perf_counter()
            got = claim(conn, pool_id, 1, utcnow())
            stmt.append((time.perf_counter() - t0) * 1000)
        whole.append((time.perf_counter() - started) * 1000)
        if len(got) != 1:
            raise RuntimeError("scale: pool ran dry")
    return stmt, whole


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(backends: Sequence[str], sizes: Sequence[int], claims: int) -> tuple[list[Result],
                                                                             list[str]]:
    results: list[Result] = []
    plans: list[str] = []
    for backend in backends:
        base: float | None = None
        for size in sizes:
            with scratch_db(backend) as db:
                engine = make_engine(db.url)
                try:
                    pid, bid = new_pool(engine, "scale")
                    t0 = time.perf_counter()
                    seed_stock(engine, pid, bid, size)
                    seeded = time.perf_counter() - t0
                    claim_latencies(engine, pid, 20)  # warm the cache and the pool
                    lat, whole = claim_latencies(engine, pid, claims)
                    plan = explain(engine, pid)
                finally:
                    engine.dispose()
            p50, p99 = statistics.median(lat), _p(lat, 0.99)
            if base is None:
                base = p50
            results.append(Result(
                "scale", backend, f"pool of {size:,} codes, {claims} claims", base, p50,
                "ms claim p50", f"<= {LIMIT}x the 10k p50" if size != sizes[0] else "baseline",
                None if size == sizes[0] else p50 <= LIMIT * base,
                f"claim p99 {p99:.2f} ms; committed tx p50 {statistics.median(whole):.2f}"
                f" p99 {_p(whole, 0.99):.2f} ms; seeded in {seeded:.0f} s",
            ))
            plans.append(f"-- {backend}, pool of {size:,} codes")
            plans.extend("   " + line for line in plan)
            print(f"  scale {backend} {size:,}: p50 {p50:.2f} ms p99 {p99:.2f} ms", flush=True)
    return results, plans
