"""Real ``robot run`` processes: two on one server database survive losing their polling
leader (SIGKILL) with no order lost or shipped twice; SIGTERM drains and exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, select

from connectors.memory import MemoryPlatform
from robot.migrate import alembic_config
from robot.schema import deliveries, orders, shop_state
from robot.vault import Vault
from tests.conftest import backends
from tests.factories import paid_order, seed_codes

ROOT = Path(__file__).resolve().parent.parent
SERVERS = [b for b in backends() if b != "sqlite"]


def write_config(root: Path, db_url: str, key_file: Path, platform_file: Path) -> Path:
    (root / "shops").mkdir()
    (root / "robot.yaml").write_text(
        f"database: {db_url}\nkey_file: {key_file}\nshops: shops/*.yaml\n"
        "http: {listen: '127.0.0.1:0'}\n"
        "defaults: {poll_interval: 0.5, backoff_initial: 0.05, backoff_max: 0.5}\n"
        "log: {level: info, format: json}\n"
    )
    (root / "shops" / "mem.yaml").write_text(
        "name: mem\nplatform: memory\nitems:\n  - sku_id: s1\n    pool: p1\n"
        f"platform_config:\n  state_file: {platform_file}\n"
    )
    return root / "robot.yaml"


def stamp(engine: Engine) -> None:
    """The fixture built the schema from the models; tell alembic it is current."""
    with engine.begin() as conn:
        command.stamp(alembic_config(conn), "head")


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[[Path], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    logs = []

    def start(config: Path) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"robot-{len(procs)}.log").open("wb")
        logs.append(log)
        proc = subprocess.Popen([sys.executable, "-m", "robot", "-c", str(config), "run"],
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    for log in logs:
        log.close()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               logs: Path | None = None) -> None:
    """Check a condition until it holds (the robots work in other processes); on time-out
    the message carries the tail of each robot's log found in ``logs``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            tails = "".join(f"\n--- {p.name}\n" + "\n".join(p.read_text(errors="replace")
                                                           .splitlines()[-40:])
                            for p in sorted(logs.glob("robot-*.log"))) if logs else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{tails}")
        time.sleep(0.1)


def shipped(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(orders.c.platform_order_id)
                                .where(orders.c.state == "shipped")).scalars())


def leader(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return conn.execute(select(shop_state.c.lease_owner)
                            .where(shop_state.c.shop == "mem")).scalar()


@pytest.mark.parametrize("backend", SERVERS, indirect=True)
def test_leader_killed_its_shop_is_taken_over_nothing_lost_or_doubled(
    engine: Engine, vault: Vault, db_url: str, key_file: Path, tmp_path: Path,
    spawn: Callable[[Path], subprocess.Popen[bytes]],
) -> None:
    """Two robots share a database; the polling leader dies; the other takes the shop over
    within seconds and every order ships exactly once."""
    stamp(engine)
    seed_codes(engine, vault, "p1", 100)
    platform_file = tmp_path / "platform.json"
    platform = MemoryPlatform(platform_file)
    first = [f"A{i}" for i in range(20)]
    for oid in first:
        platform.put_order(paid_order(oid, ("s1", 1)))
    config = write_config(tmp_path, db_url, key_file, platform_file)
    robots = {p.pid: p for p in (spawn(config), spawn(config))}

    wait_until(lambda: shipped(engine) >= set(first), 120, "the first orders to ship", tmp_path)
    holder = leader(engine)
    assert holder is not None
    victim = robots[int(holder.rsplit(":", 1)[1])]
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    survivor = next(p for pid, p in robots.items() if pid != victim.pid)

    second = [f"B{i}" for i in range(20)]
    for oid in second:
        platform.put_order(paid_order(oid, ("s1", 1)))
    # Takeover needs LEASE_TTL + LEASE_RENEW (13 s); the rest is headroom for a loaded CI host.
    wait_until(lambda: shipped(engine) >= set(first + second), 120,
               "the survivor to take the shop over and ship the rest", tmp_path)
    assert leader(engine) == f"{holder.rsplit(':', 1)[0]}:{survivor.pid}"
    assert platform.all_shipments() == dict.fromkeys(first + second, 1)
    with engine.connect() as conn:
        code_ids = conn.execute(select(deliveries.c.code_id)).scalars().all()
    assert len(code_ids) == len(set(code_ids)) == 40

    survivor.send_signal(signal.SIGTERM)
    assert survivor.wait(timeout=40) == 0


def test_sigterm_drains_and_exits_zero(tmp_path: Path, key_file: Path, vault: Vault,
                                       spawn: Callable[[Path], subprocess.Popen[bytes]]) -> None:
    """SIGTERM stops intake, finishes in-flight work and exits 0; a second robot on the same
    SQLite file is refused while the first runs."""
    from robot.db import make_engine
    from robot.migrate import upgrade

    db_url = f"sqlite:///{tmp_path / 'robot.db'}"
    engine = make_engine(db_url)
    upgrade(engine)
    seed_codes(engine, vault, "p1", 10)
    platform_file = tmp_path / "platform.json"
    platform = MemoryPlatform(platform_file)
    for i in range(5):
        platform.put_order(paid_order(f"S{i}", ("s1", 1)))
    config = write_config(tmp_path, db_url, key_file, platform_file)
    robot = spawn(config)
    wait_until(lambda: len(shipped(engine)) == 5, 120, "the orders to ship", tmp_path)
    second = spawn(config)
    assert second.wait(timeout=60) != 0  # refused: SQLite allows one robot process
    robot.send_signal(signal.SIGTERM)
    assert robot.wait(timeout=40) == 0
    assert platform.all_shipments() == {f"S{i}": 1 for i in range(5)}
    engine.dispose()
