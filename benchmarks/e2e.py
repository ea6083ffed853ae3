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
from typing import Any

from benchmarks.common import Result
from benchmarks.soak import measure_max, percentile, soak

RATE_TARGET = 500.0  # orders/s, SQLite, one process
P99_TARGET_MS = 250.0  # push intake, at half the maximum rate


def measure(backend: str, orders: int, seconds: float) -> dict[str, Any]:
    """One backend's figures: max rate and the robot's CPU per order, then p50/p99 of
    paid -> shipped at half that rate (the keys of ``--json``)."""
    top = measure_max(backend, orders)
    rate = top.orders_per_s / 2
    print(f"  e2e {backend}: max {top.orders_per_s:,.1f} orders/s "
          f"({top.cpu_us_per_order:,.0f} us CPU/order); paced at {rate:,.1f}/s for "
          f"{seconds:g} s", flush=True)
    report = soak(backend, seconds / 60, rate, bucket_s=min(10.0, seconds),
                  hold_at=0.0, hold_for=0.0)
    lat = report.paid_to_shipped_ms
    return {"backend": backend, "orders": orders, "orders_per_s": round(top.orders_per_s, 1),
            "cpu_us_per_order": round(top.cpu_us_per_order),
            "paced_orders_per_s": round(rate, 1), "paced_shipped": len(lat),
            "p50_ms": _ms(percentile(lat, 0.50)), "p99_ms": _ms(percentile(lat, 0.99)),
            "unshipped": report.unshipped, "push_retries": report.push_errors}


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def run(backends: Sequence[str], orders: int, seconds: float) -> list[Result]:
    results: list[Result] = []
    for backend in backends:
        m = measure(backend, orders, seconds)
        top, rate, p50, p99 = m["orders_per_s"], m["paced_orders_per_s"], m["p50_ms"], m["p99_ms"]
        rate_target = f">= {RATE_TARGET:.0f}/s" if backend == "sqlite" else ""
        results.append(Result(
            "e2e", backend, f"max rate, {orders:,} orders, 1 process, push", None, top,
            "orders/s", rate_target, top >= RATE_TARGET if backend == "sqlite" else None,
            f"paid on the fake -> shipped, real daemon; {m['cpu_us_per_order']:,} us CPU/order"))
        results.append(Result(
            "e2e", backend, f"p99 paid->shipped at {rate:,.0f}/s (50 %), {seconds:g} s",
            None, p99, "ms", f"<= {P99_TARGET_MS:.0f} ms", p99 is not None
            and p99 <= P99_TARGET_MS,
            f"p50 {p50:,.0f} ms; {m['paced_shipped']:,} shipped, {m['unshipped']} unshipped, "
            f"{m['push_retries']} push retries" if p50 is not None else "nothing shipped"))
    return results
