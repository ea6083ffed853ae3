"""The daemon's loop: polls a shop, allocates, ships, drains on stop; one process per SQLite file."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from connectors.base import PlatformStatus
from connectors.memory import MemoryPlatform
from robot import audit
from robot.config import load_config
from robot.daemon import Robot, sqlite_lock
from robot.db import make_engine
from robot.errors import Fatal
from robot.migrate import upgrade
from robot.pipeline import IntakeResult
from robot.schema import orders
from robot.vault import init_key_file, open_vault
from tests.factories import paid_order, seed_codes


def write_config(root: Path, platform_name: str, db_url: str | None = None) -> Path:
    (root / "shops").mkdir(parents=True, exist_ok=True)
    init_key_file(root / "robot.key")
    # The test's own engines seal the audit log with the robot's key file, as the robot does.
    audit.bind_default(root / "robot.key")
    (root / "robot.yaml").write_text(
        f"database: {db_url or 'sqlite:///robot.db'}\n"
        "key_file: robot.key\n"
        "shops: shops/*.yaml\n"
        "defaults: {poll_interval: 0.2, backoff_initial: 0.01, backoff_max: 0.05}\n"
        "log: {level: warning}\n"
    )
    (root / "shops" / "mem.yaml").write_text(
        "name: mem\nplatform: memory\n"
        "items:\n  - sku_id: s1\n    pool: p1\n    quantity: 1\n"
        f"platform_config:\n  name: {platform_name}\n"
    )
    return root / "robot.yaml"


async def wait_for(predicate, timeout: float = 30.0) -> None:
    """Check a condition until it holds (the robot works in the background)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await asyncio.to_thread(predicate):
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def test_robot_polls_allocates_ships_and_stops_cleanly(tmp_path: Path) -> None:
    """Paid orders on the platform end up shipped once; stop() exits 0 and frees the lease."""
    name = f"daemon-{uuid.uuid4().hex}"
    config = load_config(write_config(tmp_path, name))
    engine = make_engine(config.database)
    upgrade(engine)
    seed_codes(engine, open_vault(config.key_file), "p1", 10)
    platform = MemoryPlatform.named(name)
    for i in range(5):
        platform.put_order(paid_order(f"D{i}", ("s1", 1)))
    platform.put_order(paid_order("D-closed", ("s1", 1), status=PlatformStatus.CLOSED))

    def all_shipped() -> bool:
        with engine.connect() as conn:
            states = conn.execute(select(orders.c.state)).scalars().all()
        return len(states) == 5 and set(states) == {"shipped"}

    async def scenario() -> int:
        robot = Robot(config, drain_timeout=5)
        await asyncio.to_thread(robot.prepare)
        task = asyncio.create_task(robot.run(install_signals=False))
        await wait_for(all_shipped)
        robot.stop()
        return await task

    assert asyncio.run(scenario()) == 0
    assert platform.all_shipments() == {f"D{i}": 1 for i in range(5)}
    engine.dispose()


def test_wake_for_wakes_only_the_loops_with_work(tmp_path: Path) -> None:
    """An order allocated at intake is the shipper's alone, handed to it by id; one in
    sourcing the sourcing worker's; any other state (or an unknown one) wakes every loop,
    as ``wake`` does, and asks the shipper to scan for due jobs."""
    config = load_config(write_config(tmp_path, f"daemon-{uuid.uuid4().hex}"))

    class _Shipper:
        def __init__(self) -> None:
            self.handed: list[int] = []
            self.scan = False

        def hand(self, ids: list[int]) -> None:
            self.handed.extend(ids)

        def want_scan(self) -> None:
            self.scan = True

    async def woken(states: list[str]) -> tuple[bool, bool, bool, list[int], bool]:
        robot = Robot(config, drain_timeout=5)
        shipper = _Shipper()
        robot._dispatcher = shipper  # type: ignore[assignment]
        robot.wake_for([IntakeResult(i, "created", s) for i, s in enumerate(states, 1)])
        return (robot._wake_alloc.is_set(), robot._wake_ship.is_set(),
                robot._wake_source.is_set(), shipper.handed, shipper.scan)

    assert asyncio.run(woken(["allocated", "allocated"])) == (False, True, False, [1, 2], False)
    assert asyncio.run(woken(["sourcing"])) == (False, False, True, [], False)
    assert asyncio.run(woken(["allocated", "waiting_stock"])) == (True, True, True, [], True)
    assert asyncio.run(woken(["cancelled"])) == (True, True, True, [], True)
    assert asyncio.run(woken([])) == (False, False, False, [], False)


def test_second_process_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    """SQLite allows one robot process: the second gets a clear error."""
    url = f"sqlite:///{tmp_path / 'robot.db'}"
    first = sqlite_lock(url)
    assert first is not None
    with pytest.raises(Fatal, match="already running"):
        sqlite_lock(url)
    first.close()
    again = sqlite_lock(url)
    assert again is not None
    again.close()
