"""Item 2: end to end — orders paid on a zero-latency platform fake until shipped.

The robot is the real daemon (``robot run``: allocator, write-back dispatcher, scheduler,
HTTP listener) in a child process of its own, with one shop on the in-memory platform and
push intake (:mod:`benchmarks.daemon`): feeder threads of the benchmark's process push each
order as paid (``paid_at`` = now) with a signed POST to ``/hooks/<shop>``; the robot takes
it in and allocates in one transaction, ships and writes the memo through the outbox, and
the platform acknowledges at once.

1. Max rate: ``orders`` orders pushed by :data:`~benchmarks.daemon.FEEDERS` feeders per daemon
   (pushes in flight at once, as a platform's sale burst sends them) as fast as the robot
   answers, from the first push to the last order shipped; the daemons' own CPU (from
   ``/proc``, every thread) from the first push until the last memo is written, per order.
   With ``processes`` > 1 (a server database) it runs with one daemon, then with that
   many, and reports both and their ratio.
2. Latency: orders pushed open-loop at half that rate for ``seconds``; p50/p99 of
   ``shipped_at - paid_at`` over every order.

Never prints a code.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from benchmarks.common import Result
from benchmarks.soak import measure_max, percentile, soak

RATE_TARGET = 500.0  # orders/s, SQLite, one process
P99_TARGET_MS = 250.0  # push intake, at half the maximum rate
SCALE_TARGET = 1.6  # PostgreSQL: two processes against one, where the machine has the cores


def measure(backend: str, orders: int, seconds: float, processes: int = 1) -> dict[str, Any]:
    """One backend's figures: max rate and the daemons' CPU per order (with one daemon, and
    with ``processes`` when more), then p50/p99 of paid -> shipped at half the last max rate
    (the keys of ``--json``)."""
    tops = [measure_max(backend, orders, p) for p in sorted({1, processes})]
    for t in tops:
        print(f"  e2e {backend}: {t.processes} daemon process(es): max "
              f"{t.orders_per_s:,.1f} orders/s, daemon CPU {t.cpu_us_per_order:,.0f} us/order"
              f" (feeders {t.feeder_cpu_us_per_order:,.0f} us/order)", flush=True)
    top = tops[-1]
    rate = top.orders_per_s / 2
    print(f"  e2e {backend}: paced at {rate:,.1f}/s for {seconds:g} s", flush=True)
    report = soak(backend, seconds / 60, rate, bucket_s=min(10.0, seconds),
                  hold_at=0.0, hold_for=0.0, processes=processes)
    lat = report.paid_to_shipped_ms
    figures: dict[str, Any] = {
        "backend": backend, "orders": orders, "processes": processes,
        "orders_per_s": round(top.orders_per_s, 1),
        "cpu_us_per_order": round(top.cpu_us_per_order),
        "cpu": "the daemon processes' own CPU (/proc, every thread) from the first push "
               "until the outbox is empty, per order; feeders run in another process",
        "feeder_cpu_us_per_order": round(top.feeder_cpu_us_per_order),
        "paced_orders_per_s": round(rate, 1), "paced_shipped": len(lat),
        "p50_ms": _ms(percentile(lat, 0.50)), "p99_ms": _ms(percentile(lat, 0.99)),
        "unshipped": report.unshipped, "push_retries": report.push_errors}
    if processes > 1:
        figures["by_processes"] = {str(t.processes): {
            "orders_per_s": round(t.orders_per_s, 1),
            "cpu_us_per_order": round(t.cpu_us_per_order)} for t in tops}
        figures["scaling"] = round(top.orders_per_s / tops[0].orders_per_s, 3)
    return figures


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def run(backends: Sequence[str], orders: int, seconds: float,
        processes: int = 1) -> list[Result]:
    results: list[Result] = []
    for backend in backends:
        procs = 1 if backend == "sqlite" else processes  # one robot per SQLite file
        m = measure(backend, orders, seconds, procs)
        top, rate, p50, p99 = m["orders_per_s"], m["paced_orders_per_s"], m["p50_ms"], m["p99_ms"]
        rate_target = f">= {RATE_TARGET:.0f}/s" if backend == "sqlite" else ""
        results.append(Result(
            "e2e", backend, f"max rate, {orders:,} orders, {procs} process(es), push", None,
            top, "orders/s", rate_target, top >= RATE_TARGET if backend == "sqlite" else None,
            f"paid -> shipped, real daemon(s); {m['cpu_us_per_order']:,} us daemon CPU/order"))
        if procs > 1:
            one = m["by_processes"]["1"]["orders_per_s"]
            results.append(Result(
                "e2e", backend, f"max rate, {procs} processes vs 1", one, top, "orders/s",
                f">= {SCALE_TARGET:g}x", m["scaling"] >= SCALE_TARGET,
                f"{m['scaling']:.2f}x; needs the cores (nproc {os.cpu_count()})"))
        results.append(Result(
            "e2e", backend, f"p99 paid->shipped at {rate:,.0f}/s (50 %), {seconds:g} s",
            None, p99, "ms", f"<= {P99_TARGET_MS:.0f} ms", p99 is not None
            and p99 <= P99_TARGET_MS,
            f"p50 {p50:,.0f} ms; {m['paced_shipped']:,} shipped, {m['unshipped']} unshipped, "
            f"{m['push_retries']} push retries" if p50 is not None else "nothing shipped"))
    return results
