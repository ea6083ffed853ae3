"""Invariant 2: a robot killed (SIGKILL) between allocation and write-back, or in the middle
of the platform call, ships every order once, with the codes it had reserved."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from connectors.memory import MemoryPlatform
from robot.schema import deliveries, orders
from robot.vault import Vault
from tests.factories import paid_order, seed_codes

ROOT = Path(__file__).resolve().parent.parent


def start(step: str, db_url: str, key_file: Path, platform_file: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.crash_worker", step, db_url, str(key_file), str(platform_file)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def run_until(proc: subprocess.Popen[str], marker: str) -> None:
    """Read the worker's output (its log lines too) until it says ``marker``."""
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        if line.strip() == marker:
            return
        seen.append(line)
    raise AssertionError(f"worker ended without saying {marker!r}: {''.join(seen)[-2000:]}")


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    close(proc)


def close(proc: subprocess.Popen[str]) -> None:
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            pipe.close()


def snapshot(engine: Engine) -> tuple[dict[int, str], dict[int, list[int]]]:
    with engine.connect() as conn:
        states = {int(r.id): str(r.state) for r in conn.execute(select(orders.c.id, orders.c.state))}
        codes: dict[int, list[int]] = {}
        for r in conn.execute(select(deliveries.c.order_id, deliveries.c.code_id)
                              .order_by(deliveries.c.code_id)):
            codes.setdefault(int(r.order_id), []).append(int(r.code_id))
    return states, codes


@pytest.mark.parametrize("crash_point", ["after-allocation", "during-ship-call"])
def test_killed_robot_ships_once_with_same_codes(
    engine: Engine, vault: Vault, db_url: str, key_file: Path, tmp_path: Path, crash_point: str
) -> None:
    """After SIGKILL and restart every order is shipped exactly once, with its reserved codes."""
    seed_codes(engine, vault, "p1", 10)
    platform_file = tmp_path / "platform.json"
    platform = MemoryPlatform(platform_file)
    for i in range(3):
        platform.put_order(paid_order(f"K{i}", ("s1", 1)))

    first = start("allocate", db_url, key_file, platform_file)
    run_until(first, "ALLOCATED")
    kill(first)
    states, reserved = snapshot(engine)
    assert set(states.values()) == {"allocated"}
    assert all(len(c) == 2 for c in reserved.values())

    if crash_point == "during-ship-call":
        second = start("ship-hang", db_url, key_file, platform_file)
        run_until(second, "SHIPPED_ON_PLATFORM")
        kill(second)
        assert sum(platform.all_shipments().values()) == 1  # the platform applied one

    restarted = start("dispatch", db_url, key_file, platform_file)
    run_until(restarted, "DONE")
    assert restarted.wait(timeout=60) == 0
    close(restarted)

    states, delivered = snapshot(engine)
    assert set(states.values()) == {"shipped"}
    assert delivered == reserved
    assert platform.all_shipments() == {"K0": 1, "K1": 1, "K2": 1}
