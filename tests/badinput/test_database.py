"""Bad-input catalogue (issue #8): the database unavailable at start and mid-run; a full disk.

What must hold each time: no corruption (the audit chain verifies, SQLite's integrity check
passes, no code in two deliveries, no order shipped twice), a clear error (one line naming
the database and the cause, password masked, no traceback), and recovery when the resource
returns (the daemon carries on by itself; a command run again succeeds).

The outages are real (tests/outage.py): SQLite's file disappears from its path, a server is
reached through a TCP proxy that is cut. A full disk is SQLite's own SQLITE_FULL: ``PRAGMA
max_page_count`` pinned to the file's current size on every connection the robot takes, so
the file cannot grow by one page and no filesystem has to be filled.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.engine import make_url
from structlog.testing import capture_logs

from connectors.memory import MemoryPlatform
from robot import audit
from robot import pools as P
from robot.cli.common import EXIT_FATAL, EXIT_USER, App
from robot.clock import DEFAULT_ZONE
from robot.config import load_config
from robot.daemon import Robot
from robot.db import make_engine, safe_url
from robot.migrate import upgrade
from robot.schema import batches, codes, deliveries, orders
from robot.vault import open_vault
from tests.badinput.cli import run, use_app
from tests.conftest import ServerDatabases
from tests.factories import paid_order, seed_codes
from tests.outage import FailingWrites, Switch, kill_session, switchable_database
from tests.test_daemon import wait_for, write_config

PASSWORD = "pw-never-shown-7Q"
MAX_PAGES = 4294967294  # SQLite's own ceiling: "no limit"


def robot_url(backend: str, switch: Switch) -> str:
    """The switch's URL; on PostgreSQL (trust auth ignores it) with a password that must
    never be printed."""
    if backend != "postgresql":
        return switch.url
    return make_url(switch.url).set(password=PASSWORD).render_as_string(hide_password=False)


def server_url(backend: str, dbs: ServerDatabases, purpose: str) -> str | None:
    """A database of its own per test on a server (the robot migrates it itself)."""
    return None if backend == "sqlite" else dbs.url_for(backend, purpose)


def shipped(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(orders)
                                .where(orders.c.state == "shipped")).scalar_one())


def assert_intact(engine: Engine) -> None:
    """No corruption: the audit chain verifies, no code is in two deliveries, SQLite's
    integrity check is clean."""
    assert audit.verify(engine).ok
    with engine.connect() as conn:
        given = conn.execute(select(deliveries.c.code_id)).scalars().all()
        if engine.dialect.name == "sqlite":
            assert conn.execute(text("PRAGMA integrity_check")).scalar_one() == "ok"
    assert len(given) == len(set(given))


def one_line(message: str) -> None:
    assert message and "\n" not in message.strip()
    assert "Traceback" not in message and PASSWORD not in message


# -- unavailable at start ------------------------------------------------------------------


def test_robot_waits_for_the_database_at_start_then_runs(
        backend: str, server_databases: ServerDatabases, tmp_path: Path) -> None:
    """`robot run` with the database down: the reason logged once (database named, password
    masked), attempts go on, and the robot starts and ships as soon as the database is back."""
    name = f"dbstart-{uuid.uuid4().hex}"
    with switchable_database(backend, server_url(backend, server_databases, "start"),
                             tmp_path) as switch:
        url = robot_url(backend, switch)
        config = load_config(write_config(tmp_path / "site", name, db_url=url))
        switch.down()
        robot = Robot(config, drain_timeout=5)
        robot.db_retry = 0.05
        reasons: list[str] = []

        def waited(reason: str) -> None:
            reasons.append(reason)
            if len(reasons) == 3:  # three refused attempts, then the database returns
                switch.up()

        robot.on_database_wait = waited
        with capture_logs() as logs:
            robot.prepare()
        assert len(reasons) == 3
        for reason in reasons:
            one_line(reason)
            assert reason.startswith(f"database {safe_url(url)} is unavailable: ")
        events = [e["event"] for e in logs if e["event"].startswith("database")]
        assert events == ["database_unavailable_at_start", "database_recovered"]

        seed_codes(robot.engine, robot.vault, "p1", 2)
        MemoryPlatform.named(name).put_order(paid_order("S1", ("s1", 1)))

        async def scenario() -> int:
            task = asyncio.create_task(robot.run(install_signals=False))
            await wait_for(lambda: shipped(robot.engine) == 1)
            robot.stop()
            return await task

        assert asyncio.run(scenario()) == 0
    assert MemoryPlatform.named(name).all_shipments() == {"S1": 1}


def test_sigterm_while_waiting_for_the_database_exits_cleanly(tmp_path: Path) -> None:
    """The real `robot run`, its database directory missing: it logs why and waits; SIGTERM
    ends the wait with exit status 0 and nothing written anywhere."""
    site = tmp_path / "site"
    missing = tmp_path / "not-mounted-yet" / "robot.db"
    config = write_config(site, f"dbwait-{uuid.uuid4().hex}", db_url=f"sqlite:///{missing}")
    with subprocess.Popen([sys.executable, "-m", "robot", "-c", str(config), "run"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # blocks until the robot has said why it waits
        proc.terminate()
        rest = proc.stdout.read()
        assert proc.wait(timeout=30) == 0
    assert "database_unavailable_at_start" in first
    assert f"database {safe_url(f'sqlite:///{missing}')} is unavailable" in first
    assert "Traceback" not in first + rest
    assert not missing.parent.exists()


def test_a_command_with_the_database_down_says_so_in_one_line(
        backend: str, server_databases: ServerDatabases, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`robot status` with the database down: one error line naming it, exit 1; back: works."""
    with switchable_database(backend, server_url(backend, server_databases, "cli"),
                             tmp_path) as switch:
        url = robot_url(backend, switch)
        config = write_config(tmp_path / "site", "unused", db_url=url)
        switch.down()
        status, out, err = run(monkeypatch, capsys, "-c", str(config), "status")
        assert (status, out) == (EXIT_USER, "")
        one_line(err)
        assert err.startswith(f"error: database {safe_url(url)} is unavailable: ")
        switch.up()
        status, out, err = run(monkeypatch, capsys, "-c", str(config), "status")
        assert (status, err) == (0, "")
        assert "mem" in out


# -- lost mid-run --------------------------------------------------------------------------


def test_database_lost_mid_run_then_back_ships_every_order_once(
        backend: str, server_databases: ServerDatabases, tmp_path: Path) -> None:
    """The database goes away under a running robot: it says why (health and one log line),
    takes nothing in meanwhile, and ships every order exactly once when the database is back."""
    name = f"dbmid-{uuid.uuid4().hex}"
    with switchable_database(backend, server_url(backend, server_databases, "midrun"),
                             tmp_path) as switch:
        config = load_config(write_config(tmp_path / "site", name,
                                          db_url=robot_url(backend, switch)))
        engine = make_engine(config.database)
        upgrade(engine)
        seed_codes(engine, open_vault(config.key_file), "p1", 10)
        platform = MemoryPlatform.named(name)
        for i in range(3):
            platform.put_order(paid_order(f"A{i}", ("s1", 1)))

        async def scenario() -> tuple[int, str | None]:
            robot = Robot(config, drain_timeout=5)
            robot.db_retry = 0.1
            await asyncio.to_thread(robot.prepare)
            task = asyncio.create_task(robot.run(install_signals=False))
            await wait_for(lambda: shipped(engine) == 3)
            switch.down()
            for i in range(3):
                platform.put_order(paid_order(f"B{i}", ("s1", 1)))
            await wait_for(lambda: not robot.health.database_ok)
            error = robot.health.database_error
            switch.up()
            engine.dispose()  # the test's own connections went with the server
            await wait_for(lambda: shipped(engine) == 6)
            robot.stop()
            return await task, error

        with capture_logs() as logs:
            code, error = asyncio.run(scenario())
        assert code == 0
        assert error is not None
        one_line(error)
        assert [e["event"] for e in logs if e["event"] == "database_unavailable"] \
            == ["database_unavailable"]  # said once for the outage, not once per attempt
        assert_intact(engine)
        engine.dispose()
    assert platform.all_shipments() == {f"{p}{i}": 1 for p in "AB" for i in range(3)}


# -- disk full (SQLite) --------------------------------------------------------------------


class DiskLimit:
    """While ``full``, every connection an engine hands out may not grow the file by a page
    (``PRAGMA max_page_count`` below the size pins it at the size): SQLITE_FULL."""

    def __init__(self) -> None:
        self.full = False

    def install(self, engine: Engine) -> Engine:
        @event.listens_for(engine, "checkout")
        def _limit(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
            dbapi_conn.execute(f"PRAGMA max_page_count={1 if self.full else MAX_PAGES}")

        return engine


def limited_engine(url: str, limit: DiskLimit) -> Engine:
    return limit.install(make_engine(url))


def stock(engine: Engine) -> int:
    """Codes in active batches (what allocation can give)."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(codes.join(batches))
                                .where(batches.c.state == "active")).scalar_one())


def test_import_with_the_disk_full_adds_nothing_and_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`robot pools import` on a full disk: one line saying the disk is full, exit 3, no code
    added, nothing corrupt; with space again the same file imports whole."""
    limit = DiskLimit()
    engine = limited_engine(f"sqlite:///{tmp_path / 'robot.db'}", limit)
    upgrade(engine)
    key_file = tmp_path / "robot.key"
    from robot.vault import init_key_file

    init_key_file(key_file)
    vault = open_vault(key_file)
    P.create_pool(engine, "p1", actor="test")
    seed = tmp_path / "seed.txt"
    seed.write_text("".join(f"TEST-SEED-{i:04d}\n" for i in range(3)))
    P.import_codes(engine, vault, "p1", seed, actor="test")
    app = App(config_path=tmp_path / "robot.yaml")
    app._engine = engine
    app.zone = DEFAULT_ZONE  # no robot file: its default timezone
    app.__dict__["vault"] = vault
    use_app(monkeypatch, app)
    batch = tmp_path / "batch.txt"
    batch.write_text("".join(f"TEST-BULK-{i:06d}-QZXW\n" for i in range(2000)))

    limit.full = True
    status, out, err = run(monkeypatch, capsys, "pools", "import", "p1", str(batch))
    assert (status, out) == (EXIT_FATAL, "")
    one_line(err)
    assert err.startswith("error: database: the database's disk is full")
    assert "TEST-BULK" not in err
    limit.full = False
    assert stock(engine) == 3
    assert_intact(engine)

    status, out, err = run(monkeypatch, capsys, "pools", "import", "p1", str(batch))
    assert (status, err) == (0, "")
    assert stock(engine) == 2003
    assert_intact(engine)
    engine.dispose()


def test_disk_full_mid_run_holds_nothing_back_once_space_returns(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills under a running robot: it logs that the disk is full (once), writes no
    half order, and ships every order exactly once when space returns."""
    limit = DiskLimit()
    engines: list[Engine] = []

    def make_limited(url: str) -> Engine:
        engines.append(limited_engine(url, limit))
        return engines[-1]

    monkeypatch.setattr("robot.daemon.make_engine", make_limited)
    name = f"dbfull-{uuid.uuid4().hex}"
    config = load_config(write_config(tmp_path, name))
    engine = make_engine(config.database)
    upgrade(engine)
    seed_codes(engine, open_vault(config.key_file), "p1", 10)
    platform = MemoryPlatform.named(name)
    platform.put_order(paid_order("A0", ("s1", 1)))
    # An order that cannot fit in the file as it is: its note alone needs new pages.
    big = dataclasses.replace(paid_order("B0", ("s1", 1)), extra={"note": "n" * 200_000})

    def said(logs: list[dict[str, Any]]) -> Callable[[], bool]:
        return lambda: any(e["event"] == "database_unavailable"
                           and "disk is full" in e["error"] for e in logs)

    async def scenario(logs: list[dict[str, Any]]) -> int:
        robot = Robot(config, drain_timeout=5)
        robot.db_retry = 0.1
        await asyncio.to_thread(robot.prepare)
        task = asyncio.create_task(robot.run(install_signals=False))
        await wait_for(lambda: shipped(engine) == 1)
        limit.full = True
        platform.put_order(big)
        await wait_for(said(logs))
        with engine.connect() as conn:  # nothing of B0 was written
            assert conn.execute(select(orders.c.platform_order_id)).scalars().all() == ["A0"]
        limit.full = False
        await wait_for(lambda: shipped(engine) == 2)
        robot.stop()
        return await task

    with capture_logs() as logs:
        assert asyncio.run(scenario(logs)) == 0
    full = [e for e in logs if e["event"] == "database_unavailable"]
    assert full and all(e["error"] == "the database's disk is full (database or disk is full)"
                        for e in full)
    assert [e["event"] for e in logs if e["event"].startswith("database_")] \
        == ["database_unavailable", "database_recovered"]  # once each, not per attempt
    assert platform.all_shipments() == {"A0": 1, "B0": 1}
    assert_intact(engine)
    engine.dispose()


# -- writes failing while reads answer; a session killed at start ------------------------------


def test_failing_writes_are_one_outage_logged_once_and_ship_everything_after(
        backend: str, server_databases: ServerDatabases, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Writes fail with EIO while reads still answer: the robot logs the outage once when it
    starts and once when it ends (not once per attempt, nor once per read that went through),
    and ships every order exactly once when writes work again."""
    fault = FailingWrites()
    engines: list[Engine] = []

    def make_faulty(url: str) -> Engine:
        engines.append(fault.install(make_engine(url)))
        return engines[-1]

    monkeypatch.setattr("robot.daemon.make_engine", make_faulty)
    name = f"dbeio-{uuid.uuid4().hex}"
    url = server_url(backend, server_databases, "eio") or f"sqlite:///{tmp_path / 'robot.db'}"
    config = load_config(write_config(tmp_path / "site", name, db_url=url))
    engine = make_engine(config.database)
    upgrade(engine)
    seed_codes(engine, open_vault(config.key_file), "p1", 10)
    platform = MemoryPlatform.named(name)
    platform.put_order(paid_order("E0", ("s1", 1)))

    async def scenario() -> int:
        robot = Robot(config, drain_timeout=5)
        robot.db_retry = 0.05
        await asyncio.to_thread(robot.prepare)
        task = asyncio.create_task(robot.run(install_signals=False))
        await wait_for(lambda: shipped(engine) == 1)
        fault.failing = True
        for i in range(3):
            platform.put_order(paid_order(f"E{i + 1}", ("s1", 1)))
        await wait_for(lambda: fault.failures >= 20)  # many attempts, reads in between
        assert not robot.health.database_ok
        fault.failing = False
        await wait_for(lambda: shipped(engine) == 4)
        await wait_for(lambda: robot.health.database_ok)
        robot.stop()
        return await task

    with capture_logs() as logs:
        assert asyncio.run(scenario()) == 0
    events = [e["event"] for e in logs if e["event"].startswith("database_")]
    assert events == ["database_unavailable", "database_recovered"]
    assert "disk I/O error" in next(e["error"] for e in logs
                                    if e["event"] == "database_unavailable") \
        or "Input/output error" in next(e["error"] for e in logs
                                        if e["event"] == "database_unavailable")
    assert platform.all_shipments() == {f"E{i}": 1 for i in range(4)}
    assert_intact(engine)
    engine.dispose()


@pytest.mark.parametrize("at", ["CREATE TABLE", "FROM pools"])
def test_a_session_killed_during_start_up_is_waited_out(
        at: str, backend: str, server_databases: ServerDatabases, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The database session dies during start-up — in the middle of the migration, or
    reading the pools after it — (PostgreSQL pg_terminate_backend, MySQL KILL, SQLite's
    handle closed): the robot says so once, tries again, says once that the database is
    back, and then runs and ships."""
    name = f"dbkill-{uuid.uuid4().hex}"
    url = server_url(backend, server_databases, f"killed-{at}") \
        or f"sqlite:///{tmp_path / 'robot.db'}"
    config = load_config(write_config(tmp_path / "site", name, db_url=url))
    killed: list[str] = []

    def make_killable(engine_url: str) -> Engine:
        engine = make_engine(engine_url)

        @event.listens_for(engine, "before_cursor_execute")
        def _kill(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if not killed and at in statement:
                killed.append(statement.split("(", maxsplit=1)[0].strip())
                kill_session(conn, url)

        return engine

    monkeypatch.setattr("robot.daemon.make_engine", make_killable)
    robot = Robot(config, drain_timeout=5)
    robot.db_retry = 0.05
    with capture_logs() as logs:
        robot.prepare()
    assert killed  # the session really died mid-migration
    events = [e["event"] for e in logs if e["event"].startswith("database")]
    assert events == ["database_unavailable_at_start", "database_recovered"]
    one_line(next(e["error"] for e in logs if e["event"] == "database_unavailable_at_start"))

    seed_codes(robot.engine, robot.vault, "p1", 1)
    MemoryPlatform.named(name).put_order(paid_order("K1", ("s1", 1)))

    async def scenario() -> int:
        task = asyncio.create_task(robot.run(install_signals=False))
        await wait_for(lambda: shipped(robot.engine) == 1)
        robot.stop()
        return await task

    assert asyncio.run(scenario()) == 0
    assert MemoryPlatform.named(name).all_shipments() == {"K1": 1}
    assert_intact(robot.engine)
