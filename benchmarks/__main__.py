"""``python -m benchmarks {all,alloc,import,scale,e2e,idle,soak} [--quick] [--backend B ...]``.

Prints one table per benchmark (floor, robot, ratio, target, met?). Server backends run in
scratch databases created and dropped here; a server that does not answer is reported and
skipped. Nothing here changes the robot's code or settings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

from benchmarks import alloc, common, e2e, idle, importing, scale, soak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("which", choices=("all", "alloc", "import", "scale", "e2e", "idle", "soak"))
    parser.add_argument("--quick", action="store_true", help="small sizes (CI smoke check)")
    parser.add_argument("--backend", action="append", choices=common.BACKENDS,
                        help="repeatable; default: sqlite, plus servers that answer")
    parser.add_argument("--orders", type=int, help="orders for the allocation benchmark")
    parser.add_argument("--codes", type=int, help="codes for the import benchmark")
    parser.add_argument("--sizes", help="comma-separated pool sizes for the scale benchmark")
    parser.add_argument("--clients", default="1,4,8", help="PostgreSQL client counts")
    parser.add_argument("--batch", type=int, default=1,
                        help="alloc --json: orders per transaction (1: one each; more: as the"
                        " daemon's group commit takes pushes that arrive together)")
    parser.add_argument("--e2e-orders", type=int,
                        help="e2e: orders of the max-rate run (default 3000; quick 200)")
    parser.add_argument("--e2e-seconds", type=float,
                        help="e2e: seconds of paced load at half the max (default 60; quick 10)")
    parser.add_argument("--processes", type=int, default=1,
                        help="e2e: daemon processes on a server database (with more than "
                        "one, the max rate runs with 1 and with N; SQLite always 1)")
    parser.add_argument("--window", type=float,
                        help="idle: seconds measured after the warm-up (default 60; quick 15)")
    parser.add_argument("--profile", type=Path,
                        help="idle: py-spy record the robot through the window into this file"
                        " (.svg flame graph, .txt raw)")
    parser.add_argument("--minutes", type=float,
                        help="soak: minutes of steady load (default 30; quick 2)")
    parser.add_argument("--soak-max-orders", type=int,
                        help="soak: orders of the max-rate run (default 2000; quick 300)")
    parser.add_argument("--json", action="store_true",
                        help="alloc / e2e only: print one JSON object (the first backend, one "
                             "client) on stdout, progress on stderr")
    args = parser.parse_args(argv)
    if args.json:
        return _json(args)

    backends: list[str] = []
    for b in args.backend or list(common.BACKENDS):
        why = common.server_reachable(b)
        if why is None:
            backends.append(b)
        else:
            print(f"skipping {b}: server not reachable ({why})")
    quick = args.quick
    info = common.machine()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    for b in backends:
        if b != "sqlite":
            with common.scratch_db(b) as db:
                print(f"{b}: {common.server_version(db.url)}")
    started = time.perf_counter()
    results: list[common.Result] = []
    plans: list[str] = []
    if args.which in ("all", "alloc"):
        n = args.orders or (300 if quick else 100_000)
        clients = [int(c) for c in args.clients.split(",")]
        part = alloc.run(backends, n, pg_clients=(1,) if quick else clients)
        common.print_table("1. allocation throughput (write-back off)", part)
        results += part
    if args.which in ("all", "import"):
        count = args.codes or (20_000 if quick else 1_000_000)
        part = importing.run(backends, count)
        common.print_table("3. import", part)
        results += part
    if args.which in ("all", "scale"):
        sizes = ([int(s) for s in args.sizes.split(",")] if args.sizes
                 else [10_000, 100_000] if quick else [10_000, 1_000_000])
        part, plans = scale.run(backends, sizes, 100 if quick else 500)
        common.print_table("4. scale", part)
        print("\nclaim query plans:\n" + "\n".join(plans))
        results += part
    if args.which in ("all", "idle"):
        part = idle.run(backends, args.window or (15.0 if quick else 60.0),
                        warmup=5.0 if quick else 10.0, profile=args.profile)
        common.print_table("6. idle (4 shops polled every 5 s, no orders)", part)
        results += part
    if args.which in ("all", "soak"):
        part = soak.run(backends, args.minutes or (2.0 if quick else 30.0),
                        args.soak_max_orders or (300 if quick else 2000))
        common.print_table("5. soak (PostgreSQL)", part)
        results += part
    if args.which in ("all", "e2e"):
        part = e2e.run(backends, args.e2e_orders or (200 if quick else 3000),
                       args.e2e_seconds or (10.0 if quick else 60.0), args.processes)
        common.print_table("2. end to end (push intake, zero-latency fake)", part)
        results += part
    common.print_table("summary", results)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0


def _json(args: argparse.Namespace) -> int:
    """``--json``: one object for the first reachable backend asked for."""
    if args.which not in ("alloc", "e2e"):
        print("--json is for alloc and e2e", file=sys.stderr)
        return 2
    backend = next((b for b in args.backend or list(common.BACKENDS)
                    if common.server_reachable(b) is None), None)
    if backend is None:
        print("no reachable backend", file=sys.stderr)
        return 1
    with contextlib.redirect_stdout(sys.stderr):  # progress lines
        if args.which == "alloc":
            figures = alloc.measure(backend, args.orders or (300 if args.quick else 20_000),
                                    batch=args.batch)
        else:
            figures = e2e.measure(backend, args.e2e_orders or (200 if args.quick else 3000),
                                  args.e2e_seconds or (10.0 if args.quick else 60.0),
                                  1 if backend == "sqlite" else args.processes)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
