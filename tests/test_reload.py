"""``robot reload`` and SIGHUP: a real ``robot run`` reads its shop files again. Added shops
start, a shop file with errors is refused and the running shops go on, removed shops stop;
paused shops are named at every start with the command that resumes them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from click.testing import CliRunner
from sqlalchemy import Engine, select
from structlog.testing import capture_logs

import robot.cli
from connectors.memory import MemoryPlatform
from robot.config import load_config
from robot.daemon import Robot
from robot.migrate import alembic_config
from robot.outbox import pause_shop
from robot.pidfile import PidFile, pid_path, running_pid
from robot.schema import orders
from robot.vault import Vault
from tests.factories import paid_order, seed_codes
from tests.test_daemon import write_config as write_sqlite_config
from tests.test_multiprocess import wait_until

ROOT = Path(__file__).resolve().parent.parent
robot.cli._register()


def shop_file(root: Path, name: str, platform_file: Path, extra: str = "") -> Path:
    path = root / "shops" / f"{name}.yaml"
    path.write_text(f"name: {name}\nplatform: memory\nitems:\n  - sku_id: s1\n    pool: p1\n"
                    f"platform_config:\n  state_file: {platform_file}\n{extra}")
    return path


def events(log: Path) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


def logged(log: Path, event: str) -> list[dict[str, Any]]:
    return [e for e in events(log) if e.get("event") == event]


def shipped(engine: Engine) -> set[tuple[str, str]]:
    with engine.connect() as conn:
        return {(r.shop, r.platform_order_id) for r in conn.execute(
            select(orders.c.shop, orders.c.platform_order_id).where(orders.c.state == "shipped"))}


def received(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(orders.c.platform_order_id)).scalars())


@pytest.fixture
def robot_run(tmp_path: Path) -> Iterator[Callable[[Path], tuple[subprocess.Popen[bytes], Path]]]:
    procs: list[subprocess.Popen[bytes]] = []
    handles = []

    def start(config: Path) -> tuple[subprocess.Popen[bytes], Path]:
        log = tmp_path / "robot-0.log"
        handle = log.open("wb")
        handles.append(handle)
        proc = subprocess.Popen([sys.executable, "-m", "robot", "-c", str(config), "run"],
                                cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        procs.append(proc)
        return proc, log

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    for handle in handles:
        handle.close()


def test_reload_starts_added_shops_refuses_broken_files_and_stops_removed_shops(
    engine: Engine, vault: Vault, db_url: str, key_file: Path, tmp_path: Path,
    robot_run: Callable[[Path], tuple[subprocess.Popen[bytes], Path]],
) -> None:
    """A shop file added and SIGHUP: its orders ship. A shop file broken and SIGHUP: the
    refusal names file and field, and both shops keep shipping. A shop file removed and
    SIGHUP: that shop stops (its new orders are never taken in), the other goes on."""
    with engine.begin() as conn:
        command.stamp(alembic_config(conn), "head")
    seed_codes(engine, vault, "p1", 50)
    (tmp_path / "shops").mkdir()
    config = tmp_path / "robot.yaml"
    config.write_text(
        f"database: {db_url}\nkey_file: {key_file}\nshops: shops/*.yaml\n"
        "http: {listen: '127.0.0.1:0'}\n"
        "defaults: {poll_interval: 0.3, backoff_initial: 0.05, backoff_max: 0.5}\n"
        "log: {level: info, format: json}\n")
    a_file, b_file = tmp_path / "a.json", tmp_path / "b.json"
    a, b = MemoryPlatform(a_file), MemoryPlatform(b_file)
    shop_file(tmp_path, "mem-a", a_file)
    proc, log = robot_run(config)
    a.put_order(paid_order("A1", ("s1", 1)))
    wait_until(lambda: ("mem-a", "A1") in shipped(engine), 120, "A1 to ship", tmp_path)

    # 1. a shop added: `robot reload` finds the robot through its pid file and signals it
    b_path = shop_file(tmp_path, "mem-b", b_file)
    b.put_order(paid_order("B1", ("s1", 1)))
    sent = CliRunner().invoke(robot.cli.cli, ["-c", str(config), "reload"])
    assert sent.exit_code == 0, sent.output
    assert f"pid {proc.pid}" in sent.output
    wait_until(lambda: ("mem-b", "B1") in shipped(engine), 120, "B1 to ship", tmp_path)
    [reloaded] = logged(log, "shops_reloaded")
    assert reloaded["started"] == ["mem-b"] and reloaded["unchanged"] == ["mem-a"]

    # 2. a shop file broken: `robot reload` refuses to send; SIGHUP itself is refused too
    b_path.write_text(b_path.read_text().replace("items:", "itemz:"))
    refused_cli = CliRunner().invoke(robot.cli.cli, ["-c", str(config), "reload"])
    assert refused_cli.exit_code != 0
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: bool(logged(log, "reload_refused")), 60, "the refusal", tmp_path)
    [refused] = logged(log, "reload_refused")
    assert any("shops/mem-b.yaml: shop 'mem-b': itemz: unknown key" in p
               for p in refused["problems"]), refused
    a.put_order(paid_order("A2", ("s1", 1)))
    b.put_order(paid_order("B2", ("s1", 1)))
    wait_until(lambda: {("mem-a", "A2"), ("mem-b", "B2")} <= shipped(engine), 120,
               "both shops to go on after the refusal", tmp_path)
    assert len(logged(log, "shops_reloaded")) == 1

    # 3. a shop removed: it stops; the other goes on
    b_path.unlink()
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: len(logged(log, "shops_reloaded")) == 2, 60, "the second reload",
               tmp_path)
    second = logged(log, "shops_reloaded")[1]
    assert second["stopped"] == ["mem-b"] and second["unchanged"] == ["mem-a"]
    assert [e["shop"] for e in logged(log, "shop_stopped")] == ["mem-b"]
    b.put_order(paid_order("B3", ("s1", 1)))
    a.put_order(paid_order("A3", ("s1", 1)))
    wait_until(lambda: ("mem-a", "A3") in shipped(engine), 120, "A3 to ship", tmp_path)
    a.put_order(paid_order("A4", ("s1", 1)))  # several more polls of mem-a after B3 was put
    wait_until(lambda: ("mem-a", "A4") in shipped(engine), 120, "A4 to ship", tmp_path)
    assert "B3" not in received(engine)
    assert b.all_shipments() == {"B1": 1, "B2": 1}

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=40) == 0
    assert not pid_path(key_file).exists()  # the robot removes its pid file when it stops


def test_reload_without_a_running_robot_says_so(tmp_path: Path) -> None:
    """`robot reload` with no robot running is a clear error, also with a pid file left
    over from a robot that was killed (whose pid must never be signalled)."""
    config = write_sqlite_config(tmp_path, "reload-none")
    result = CliRunner().invoke(robot.cli.cli, ["-c", str(config), "reload"])
    assert result.exit_code != 0
    assert "no robot is running" in str(result.exception)
    stale = pid_path(load_config(config).key_file)
    stale.write_text(f"{os.getpid()}\n")  # our own pid, but nobody holds the lock
    result = CliRunner().invoke(robot.cli.cli, ["-c", str(config), "reload"])
    assert "left over from a robot that stopped" in str(result.exception)


def test_the_pid_file_is_held_by_one_robot(tmp_path: Path) -> None:
    """The pid file names the process that holds it; a second holder is refused."""
    path = tmp_path / "robot.pid"
    first, second = PidFile(path), PidFile(path)
    assert first.acquire()
    assert not second.acquire()
    assert running_pid(path) == os.getpid()
    first.release()
    assert not path.exists()


def test_a_paused_shop_is_logged_at_start_with_the_command_that_resumes_it(
        tmp_path: Path) -> None:
    """Every start names each paused shop and the command that resumes it."""
    config = load_config(write_sqlite_config(tmp_path, "paused-start"))
    first = Robot(config)
    first.prepare()
    pause_shop(first.engine, "mem", "session expired")
    first.release()
    with capture_logs() as logs:
        second = Robot(config)
        second.prepare()
        second.release()
    [paused] = [e for e in logs if e["event"] == "shop_paused_at_start"]
    assert paused["shop"] == "mem"
    assert paused["resume"] == "robot shops resume mem"
    assert paused["reason"] == "session expired"
