"""Item 6: an idle robot — four shops polled every 5 s, no orders — and what it costs.

A real ``python -m robot -c robot.yaml run`` child process polls the four platform fakes
(``robot.demo``'s drivers, served on loopback from an event loop in a thread of *this*
process, so their CPU is never counted as the robot's). Nothing is ever ordered. After a
warm-up, the robot's CPU time (``utime + stime`` from ``/proc/<pid>/stat``, all its threads)
is read at the start and end of a window, and its resident memory (``VmRSS``, ``VmHWM`` from
``/proc/<pid>/status``) sampled through it. The database server's own CPU (PostgreSQL) is a
separate process and is not counted.

The floor for memory is a Python process that imports what ``robot run`` imports (daemon,
HTTP app, every connector) and does nothing else: what the robot adds on top of its code.
CPU has no floor (zero is the floor).

Never touches a database it did not create; the pools hold generated codes, never printed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import Result, free_port, healthz, sample, scratch_db
from connectors.fakeserve import FakeHost
from connectors.plugin import DemoDriver
from robot.db import make_engine
from robot.demo import import_stock, load_drivers, write_shops
from robot.migrate import upgrade
from robot.vault import init_key_file

ROOT = Path(__file__).resolve().parent.parent
POLL_INTERVAL = 5
CPU_TARGET = 1.0  # % of one core
RSS_TARGET_MB = 150.0

#: What ``robot run`` loads before it serves: the floor of its memory.
IMPORTS = ("import robot.daemon, robot.http.app, robot.http.server, robot.cli.commands;"
           " from robot.registry import discover; discover()")


def imports_floor_mb() -> float:
    """VmRSS of a Python process that has only imported the robot's modules (MB)."""
    code = (f"{IMPORTS}\nfrom pathlib import Path\n"
            "print([l.split()[1] for l in Path('/proc/self/status').read_text().splitlines()"
            " if l.startswith('VmRSS:')][0])")
    out = subprocess.run([sys.executable, "-c", code],  # noqa: S603 - fixed code, our Python
                         cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    return int(out.stdout.strip()) / 1024


def _wait_polled(port: int, proc: subprocess.Popen[bytes], shops: int,
                 timeout: float) -> dict[str, Any]:
    """Wait until /healthz shows every shop polled successfully at least once."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"robot exited with status {proc.returncode} during start-up")
        body = healthz(port)
        polled = [s for s in (body or {}).get("shops", {}).values()
                  if s.get("last_poll_ok_age_s") is not None]
        if body is not None and len(polled) >= shops:
            return body
        time.sleep(0.2)
    raise RuntimeError(f"robot did not poll every shop within {timeout:.0f}s: {body}")


@dataclass(frozen=True)
class IdleRun:
    backend: str
    seconds: float
    cpu_percent: float
    rss_mb_max: float
    hwm_mb: float
    log_lines: int
    log_events: dict[str, int]
    shops: int
    oldest_poll_age_s: float | None


def measure(backend: str, window: float, warmup: float,
            profile: Path | None = None) -> IdleRun:
    """One idle robot on ``backend``: start, warm up, measure over ``window`` seconds."""
    logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
    root = Path(tempfile.mkdtemp(prefix=f"robot-bench-idle-{backend}-"))
    host = FakeHost()
    drivers: list[DemoDriver] = []
    proc: subprocess.Popen[bytes] | None = None
    try:
        with scratch_db(backend, tables=False) as db:
            key_file = root / "robot.key"
            init_key_file(key_file)
            engine = make_engine(db.url)
            try:
                upgrade(engine)
                import_stock(key_file, engine, root, 50)
            finally:
                engine.dispose()
            port = free_port()
            drivers = load_drivers()
            configs = [host.call(d.start(f"http://127.0.0.1:{port}")) for d in drivers]
            (root / "shops").mkdir()
            write_shops(root / "shops", drivers, configs)
            config = root / "robot.yaml"
            config.write_text(yaml.safe_dump({
                "database": db.url, "key_file": str(key_file), "shops": "shops/*.yaml",
                "http": {"listen": f"127.0.0.1:{port}",
                         "public_url": f"http://127.0.0.1:{port}"},
                "defaults": {"poll_interval": POLL_INTERVAL},
            }, sort_keys=False))
            log_path = root / "robot.log"
            with log_path.open("wb") as log:
                proc = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
                    [sys.executable, "-m", "robot", "-c", str(config), "run"],
                    cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONPATH": str(ROOT)})
            _wait_polled(port, proc, len(drivers), timeout=120)
            time.sleep(warmup)  # a measurement window, not synchronization
            lines_before = len(log_path.read_bytes().splitlines())
            first = sample(proc.pid)
            samples = [first]
            spy: subprocess.Popen[bytes] | None = None
            if profile is not None:
                spy = _start_profile(proc.pid, window, profile)
            while time.monotonic() - first.at < window:
                time.sleep(min(1.0, window - (time.monotonic() - first.at)))
                if proc.poll() is not None:
                    raise RuntimeError(f"robot exited with status {proc.returncode}")
                samples.append(sample(proc.pid))
            last = samples[-1]
            logged = log_path.read_bytes().splitlines()[lines_before:]
            if spy is not None:
                spy.wait(timeout=window + 60)
            body = healthz(port) or {}
            ages = [s.get("last_poll_ok_age_s") for s in body.get("shops", {}).values()]
            oldest = max((a for a in ages if a is not None), default=None)
            proc.send_signal(signal.SIGTERM)
            status = proc.wait(timeout=60)
            if status != 0:
                raise RuntimeError(f"robot exited {status} on SIGTERM (log {log_path})")
            elapsed = last.at - first.at
            return IdleRun(
                backend=backend, seconds=elapsed,
                cpu_percent=100 * (last.cpu - first.cpu) / elapsed,
                rss_mb_max=max(s.rss_kb for s in samples) / 1024, hwm_mb=last.hwm_kb / 1024,
                log_lines=len(logged), log_events=_events(logged), shops=len(drivers),
                oldest_poll_age_s=oldest)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        for d in drivers:
            with contextlib.suppress(Exception):
                host.call(d.stop())
        host.close()
        shutil.rmtree(root, ignore_errors=True)


def _events(lines: list[bytes]) -> dict[str, int]:
    """How often each log event name occurs (JSON logs; other lines count as "(text)")."""
    counts: dict[str, int] = {}
    for line in lines:
        try:
            name = str(json.loads(line).get("event", "(no event)"))
        except (ValueError, AttributeError):
            name = "(text)"
        # Library messages carry their arguments ('Job "Robot._poll (…)" executed…',
        # 'HTTP Request: POST http://…'): keep the words before them.
        name = name.split('"')[0].split(":")[0].strip()
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _start_profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy (if installed next to this Python) records the robot through the window."""
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        print(f"  idle: no py-spy at {spy}; profile skipped", flush=True)
        return None
    fmt = "raw" if out.suffix == ".txt" else "flamegraph"
    return subprocess.Popen(  # noqa: S603 - py-spy beside this Python, fixed arguments
        [str(spy), "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "100", "-f", fmt,
         "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run(backends: Sequence[str], window: float, warmup: float = 10.0,
        profile: Path | None = None) -> list[Result]:
    """CPU and memory of an idle robot on each backend, against the issue's targets."""
    floor_mb = imports_floor_mb()
    results: list[Result] = []
    for backend in backends:
        if backend == "mysql":
            continue  # the target names SQLite and PostgreSQL robots
        r = measure(backend, window, warmup, profile)
        polled = (f"{r.shops} shops, every shop polled (oldest last poll {r.oldest_poll_age_s}s"
                  f" ago); {r.log_lines} log lines in {r.seconds:.0f}s")
        case = f"{r.shops} shops, poll {POLL_INTERVAL}s, {r.seconds:.0f}s window"
        results.append(Result("idle", backend, case, None, r.cpu_percent, "% of a core",
                              f"<= {CPU_TARGET:g} %", r.cpu_percent <= CPU_TARGET, polled))
        results.append(Result("idle", backend, case + " (memory)", floor_mb, r.hwm_mb, "MB",
                              f"<= {RSS_TARGET_MB:g} MB", r.hwm_mb <= RSS_TARGET_MB,
                              f"peak RSS (VmHWM) since start; VmRSS max in window "
                              f"{r.rss_mb_max:.0f} MB; floor = imports only"))
        print(f"  idle {backend}: CPU {r.cpu_percent:.2f} % of a core, RSS {r.rss_mb_max:.0f} MB"
              f" (peak {r.hwm_mb:.0f} MB), {r.log_lines} log lines {r.log_events}", flush=True)
    return results
