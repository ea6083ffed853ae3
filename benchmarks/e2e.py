"""Item 2: end to end — orders paid on a zero-latency platform fake until shipped.

The robot is the real daemon (allocator, write-back dispatcher, scheduler, HTTP listener)
in one process, with one shop on the in-memory platform and push intake, through the soak
benchmark's harness (``benchmarks.soak.robot_on`` / ``Feeder``): each order is put on the
platform as paid (``paid_at`` = now) and a signed push is POSTed to ``/hooks/<shop>``; the
robot takes it in and allocates in one transaction, ships and writes the memo through the
outbox, and the platform acknowledges at once.

1. Max rate: ``orders`` orders pushed by four feeders as fast as the robot answers, from
   the first push to the last order shipped.
2. Latency: orders pushed open-loop at half that rate for ``seconds``; p50/p99 of
   ``shipped_at - paid_at`` over every order.

The feeders share the robot's process (and its GIL), so both figures are pessimistic.
Never prints a code.
"""

from __future__ import annotations

from collections.abc import Sequence

from benchmarks.common import Result
from benchmarks.soak import max_rate, percentile, soak

RATE_TARGET = 500.0  # orders/s, SQLite, one process
P99_TARGET_MS = 250.0  # push intake, at half the maximum rate


def run(backends: Sequence[str], orders: int, seconds: float) -> list[Result]:
    results: list[Result] = []
    for backend in backends:
        top = max_rate(backend, orders)
        rate = top / 2
        print(f"  e2e {backend}: max {top:,.1f} orders/s; paced at {rate:,.1f}/s for "
              f"{seconds:g} s", flush=True)
        report = soak(backend, seconds / 60, rate, bucket_s=min(10.0, seconds),
                      hold_at=0.0, hold_for=0.0)
        lat = report.paid_to_shipped_ms
        p50, p99 = percentile(lat, 0.50), percentile(lat, 0.99)
        rate_target = f">= {RATE_TARGET:.0f}/s" if backend == "sqlite" else ""
        results.append(Result(
            "e2e", backend, f"max rate, {orders:,} orders, 1 process, push", None, top,
            "orders/s", rate_target, top >= RATE_TARGET if backend == "sqlite" else None,
            "paid on the fake -> shipped, real daemon"))
        results.append(Result(
            "e2e", backend, f"p99 paid->shipped at {rate:,.0f}/s (50 %), {seconds:g} s",
            None, p99, "ms", f"<= {P99_TARGET_MS:.0f} ms", p99 is not None
            and p99 <= P99_TARGET_MS,
            f"p50 {p50:,.0f} ms; {len(lat):,} shipped, {report.unshipped} unshipped, "
            f"{report.push_errors} push retries" if p50 is not None else "nothing shipped"))
    return results
