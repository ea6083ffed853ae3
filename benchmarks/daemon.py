"""Robot daemons in child processes, and the feeders that push orders to them from outside.

The load benchmarks (e2e, soak) start each robot as its own process — ``python -m
benchmarks.daemon``, which is ``robot -c robot.yaml run`` after one preparation below — so
the feeders (threads of the benchmark's process signing and POSTing pushes) never share the
daemon's CPU or GIL, and the daemon's CPU is read from ``/proc/<pid>/stat`` (all its
threads). Several daemons on one server database share the shop: one holds its polling
lease, all of them take pushes (the feeders spread them) and run write-back.

The shop is on the in-memory platform (``connectors.memory``), which lives inside the robot's
process. Before the robot starts, the child puts the run's orders on it already shipped: a
push carries the whole paid order (the robot never asks the platform for it), and when the
robot ships it the platform answers "already shipped", which the robot records exactly as
"shipped" (same transaction, same memo job). Polls skip them (they are not paid), so every
order enters through its push.

Never touches a database it did not create; codes are generated and never printed.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from benchmarks.common import Scratch, free_port, healthz, sample
from connectors.base import Order, OrderLine, PlatformStatus
from connectors.memory import TEST_PUSH_SECRET, MemoryPlatform, order_to_json, sign_push
from robot import audit, pools
from robot.db import make_engine
from robot.migrate import upgrade
from robot.vault import init_key_file, open_vault

ROOT = Path(__file__).resolve().parent.parent
#: Feeder threads per daemon: pushes in flight at once. Each push is answered only after the
#: commit that holds it, so with too few in flight the daemon's batches stay small and the
#: benchmark measures its own feeders: 4 gave 81 orders/s where 16 gave 259 and 32 gave
#: 296 on the same code (SQLite, 2 cores); past 32 the feeders' own CPU grows.
FEEDERS = 32
SHOP = "soak-shop"
POOL = "soak-pool"
SKU = "SKU-SOAK"


def order(i: int, status: PlatformStatus = PlatformStatus.PAID,
          paid_at: datetime | None = None) -> Order:
    """The run's ``i``-th order."""
    oid = f"S{i:09d}"
    return Order(platform_order_id=oid, status=status, buyer_id=f"buyer-{i % 997}",
                 lines=(OrderLine(line_id=f"{oid}-1", quantity=1, outer_id=SKU,
                                  title="VIP month", unit_price_cents=1990),),
                 total_cents=1990, paid_at=paid_at)


# --------------------------------------------------------------------------- the child


def main(argv: list[str]) -> None:
    """``python -m benchmarks.daemon CONFIG PLATFORM ORDERS``: put orders 0..ORDERS-1 on the
    in-memory platform PLATFORM (shipped), then ``robot -c CONFIG run``."""
    config, platform, count = argv[0], argv[1], int(argv[2])
    memory = MemoryPlatform.named(platform)
    for i in range(count):
        memory.put_order(order(i, PlatformStatus.SHIPPED))
    from robot.cli import main as robot_main

    sys.argv = ["robot", "-c", config, "run"]
    robot_main()


# --------------------------------------------------------------------------- the parent


@dataclass
class Fleet:
    """Robot daemons running as child processes on one database."""

    procs: list[subprocess.Popen[bytes]]
    urls: list[str]
    logs: list[Path]

    def cpu(self) -> float:
        """CPU seconds the daemons have spent so far (user + system, every thread)."""
        return sum(sample(p.pid).cpu for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p, log in zip(self.procs, self.logs, strict=True):
            try:
                status = p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                status = p.wait(timeout=30)
            if status != 0:
                print(f"  robot pid {p.pid} exited {status}; its log: {_tail(log)}",
                      file=sys.stderr, flush=True)


def _tail(log: Path, lines: int = 5) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _write_codes(path: Path, count: int) -> None:
    with path.open("w", encoding="utf-8") as fh:
        fh.write("code,cost\n")
        for _ in range(count):
            fh.write(f"SOAK-{secrets.token_hex(8).upper()},9.90\n")


def _prepare(db: Scratch, root: Path, codes: int) -> Path:
    """Migrate ``db`` and import ``codes`` codes into the pool; the key file."""
    key_file = root / "robot.key"
    init_key_file(key_file)
    engine = make_engine(db.url)
    audit.bind(engine, key_file)  # sealed with the key the daemons then open
    try:
        upgrade(engine)
        pools.create_pool(engine, POOL, actor="bench")
        csv = root / "codes.csv"
        _write_codes(csv, codes)
        pools.import_codes(engine, open_vault(key_file), POOL, csv, actor="bench",
                           supplier="bench")
        csv.unlink()
    finally:
        engine.dispose()
    return key_file


@contextlib.contextmanager
def fleet_on(db: Scratch, root: Path, codes: int, orders: int,
             processes: int = 1) -> Iterator[Fleet]:
    """Migrate ``db``, import ``codes`` codes, start ``processes`` daemons whose platform
    holds orders 0..``orders``-1; wait until they answer and the shop was polled; stop
    them afterwards."""
    if processes > 1 and db.backend == "sqlite":
        raise ValueError("one robot process per SQLite file")
    key_file = _prepare(db, root, codes)
    platform = f"bench-{secrets.token_hex(4)}"
    (root / "shops").mkdir(exist_ok=True)
    (root / "shops" / "bench.yaml").write_text(yaml.safe_dump({
        "name": SHOP, "platform": "memory", "unmapped": "hold",
        "items": [{"outer_id": SKU, "pool": POOL, "quantity": 1}],
        "platform_config": {"name": platform},
    }, sort_keys=False))
    fleet = Fleet([], [], [])
    ports: list[int] = []
    try:
        for k in range(processes):
            port = free_port()
            config = root / f"robot-{k}.yaml"
            config.write_text(yaml.safe_dump({
                "database": db.url, "key_file": str(key_file), "shops": "shops/*.yaml",
                "http": {"listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}"},
                "log": {"level": "info", "format": "json"},
            }, sort_keys=False))
            log = root / f"robot-{k}.log"
            with log.open("wb") as out:
                fleet.procs.append(subprocess.Popen(  # noqa: S603 - our module, fixed arguments
                    [sys.executable, "-m", "benchmarks.daemon", str(config), platform,
                     str(orders)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONPATH": str(ROOT)}))
            fleet.urls.append(f"http://127.0.0.1:{port}")
            fleet.logs.append(log)
            ports.append(port)
        _wait_ready(fleet, ports, timeout=120)
        yield fleet
    finally:
        fleet.stop()


def _wait_ready(fleet: Fleet, ports: list[int], timeout: float) -> None:
    """Every daemon answers ``/healthz``, and one of them has polled the shop (its first
    poll reads every preloaded order: done before anything is measured)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p, log in zip(fleet.procs, fleet.logs, strict=True):
            if p.poll() is not None:
                raise RuntimeError(f"robot exited {p.returncode} during start-up: {_tail(log)}")
        bodies = [healthz(port) for port in ports]
        polled = any((b or {}).get("shops", {}).get(SHOP, {}).get("last_poll_ok_age_s")
                     is not None for b in bodies)
        if all(b is not None for b in bodies) and polled:
            return
        time.sleep(0.2)  # start-up of other processes: nothing to wait on but their answer
    raise RuntimeError(f"robots not ready within {timeout:.0f}s: {_tail(fleet.logs[0])}")


class Feeder:
    """Pushes paid orders to the daemons' webhooks (spread over them by order number).

    Each thread keeps one keep-alive connection per daemon on the standard library's
    ``http.client``: a push costs the benchmark's process ~0.2 ms of CPU instead of httpx's
    ~1 ms, so the load generator is not what bounds the daemon it measures."""

    def __init__(self, urls: list[str]) -> None:
        self.hosts = [urlsplit(u) for u in urls]
        self.local = threading.local()
        self.count = 0
        self.errors = 0
        self._lock = threading.Lock()

    def _conn(self, k: int) -> http.client.HTTPConnection:
        conns: dict[int, http.client.HTTPConnection] | None = getattr(self.local, "conns", None)
        if conns is None:
            conns = self.local.conns = {}
        if k not in conns:
            u = self.hosts[k]
            conns[k] = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port, timeout=60)
        return conns[k]

    def _post(self, k: int, body: bytes, headers: dict[str, str]) -> int | None:
        conn = self._conn(k)
        for fresh in (conn.sock is None, True):
            try:
                conn.request("POST", f"/hooks/{SHOP}", body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                return resp.status
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed a kept-alive connection while it was idle (uvicorn after
                # 5 s): sent again at once on a new one, as HTTP clients do; not an error.
                conn.close()
                if fresh:
                    return None
            except (OSError, http.client.HTTPException):
                conn.close()  # reconnects on the next request
                return None
        return None

    def send(self, i: int) -> None:
        paid = order(i, paid_at=datetime.now(UTC))  # paid now: latency starts here
        oid = paid.platform_order_id
        body = json.dumps({"order": order_to_json(paid), "message_id": f"m-{oid}"}).encode()
        headers = {"X-Memory-Sign": sign_push(TEST_PUSH_SECRET, body),
                   "Content-Type": "application/json"}
        k = i % len(self.hosts)
        for _attempt in range(5):  # a platform resends a push that was not acknowledged
            if self._post(k, body, headers) == 200:
                break
            with self._lock:
                self.errors += 1
            time.sleep(0.5)  # a platform's resend delay
        with self._lock:
            self.count += 1


if __name__ == "__main__":
    main(sys.argv[1:])
