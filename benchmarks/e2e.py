"""Item 2 (partial): end to end with ``robot.demo.run_demo`` — the real daemon against the
platform fakes on loopback, on SQLite, one process.

Reports orders/s from the first order to the last settled one, and the demo's own p50/p99
paid-to-shipped latency. The demo injects platform faults and retries with backoff, so the
p99 includes retried orders; it is a smoke figure, not the issue's "zero-latency fakes at
50 % of the maximum rate" measurement. Never prints a code.
"""

from __future__ import annotations

import asyncio
import time

from benchmarks.common import Result
from robot.demo import run_demo

TARGET = 500.0


def run(orders: int, timeout: float) -> list[Result]:
    started = time.perf_counter()
    summary = asyncio.run(run_demo(orders_wanted=orders, timeout=timeout, console=None,
                                   seed=1))
    elapsed = time.perf_counter() - started
    rate = summary.orders / elapsed
    note = (f"p50 {summary.p50_ms} ms, p99 {summary.p99_ms} ms paid->shipped; "
            f"{summary.shipped} shipped, faults {summary.faults_injected}, ok={summary.ok};"
            " rate includes setup (import, fakes)")
    print(f"  e2e sqlite: {rate:,.1f} orders/s ({note})", flush=True)
    return [Result("e2e", "sqlite", f"demo, {orders} orders, 1 process", None, rate,
                   "orders/s", f">= {TARGET:.0f}/s", rate >= TARGET, note)]
