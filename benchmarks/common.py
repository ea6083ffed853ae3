"""Shared pieces of the benchmarks: scratch databases, seeding, result rows and tables.

Never creates or drops anything outside a scratch database this module created itself, and
never prints a plaintext code (seeded codes are random bytes, never decrypted).
"""

from __future__ import annotations

import functools
import json
import os
import platform
import secrets
import shutil
import socket
import sqlite3
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import psycopg
import pymysql
from sqlalchemy import Engine, create_engine, insert, select, text
from sqlalchemy.engine import make_url

from connectors.base import Order, OrderLine, PlatformStatus
from robot import audit
from robot.clock import NEVER, utcnow
from robot.db import (
    PG_IDLE_IN_TX_TIMEOUT_MS,
    PG_STATEMENT_TIMEOUT_MS,
    SQLITE_BUSY_TIMEOUT_MS,
    make_engine,
    normalize_url,
)
from robot.pipeline import intake
from robot.schema import batches, metadata, pools
from robot.vault import init_key_file

SERVER_URLS = {
    "postgresql": os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    "mysql": os.environ.get("BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
}
BACKENDS = ("sqlite", "postgresql", "mysql")
POOL = "bench-pool"
SKU = "SKU-BENCH"
_T = TypeVar("_T")


@dataclass(frozen=True)
class Result:
    """One line of a results table."""

    bench: str
    backend: str
    case: str
    floor: float | None
    robot: float | None
    unit: str
    target: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.floor is None or self.robot is None or self.floor == 0:
            return None
        return self.robot / self.floor


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def print_table(title: str, rows: list[Result]) -> None:
    """Print rows as a fixed-width table (plain text, so CI logs stay readable)."""
    head = ("bench", "backend", "case", "floor", "robot", "unit", "ratio", "target", "met?",
            "note")
    body = [
        (r.bench, r.backend, r.case, _fmt(r.floor), _fmt(r.robot), r.unit,
         "-" if r.ratio is None else f"{r.ratio:.0%}", r.target,
         "-" if r.met is None else ("yes" if r.met else "NO"), r.note)
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    print(f"\n== {title}")
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for line in body:
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


@dataclass(frozen=True)
class Scratch:
    """A throw-away database: its backend, robot URL and (for SQLite) file path."""

    backend: str
    url: str
    path: Path | None = None


@contextmanager
def scratch_db(backend: str, *, tables: bool = True) -> Iterator[Scratch]:
    """A fresh database with the robot's tables, dropped (or deleted) afterwards.

    ``tables=False`` leaves it empty, for a caller that runs the robot's own migrations.
    """
    with _sealed():
        yield from _scratch_db(backend, tables=tables)


@contextmanager
def _sealed() -> Iterator[None]:
    """Audit entries the benchmarks' own engines append (intake, allocation) are sealed with a
    throw-away key file, as a robot's are with its own (forked clients inherit it)."""
    keys = Path(tempfile.mkdtemp(prefix="robot-bench-key-"))
    try:
        key_file = keys / "robot.key"
        init_key_file(key_file)
        audit.bind_default(key_file)
        yield
    finally:
        audit.bind_default(None)
        shutil.rmtree(keys, ignore_errors=True)


def _scratch_db(backend: str, *, tables: bool) -> Iterator[Scratch]:
    if backend == "sqlite":
        root = Path(tempfile.mkdtemp(prefix="robot-bench-"))
        try:
            path = root / "bench.db"
            url = f"sqlite:///{path}"
            if tables:
                _create_tables(url)
            yield Scratch(backend, url, path)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return
    base = normalize_url(SERVER_URLS[backend])
    name = f"bench_{secrets.token_hex(4)}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if backend == "postgresql":
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            else:
                conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        url = make_url(base).set(database=name).render_as_string(hide_password=False)
        try:
            if tables:
                _create_tables(url)
            yield Scratch(backend, url)
        finally:
            with admin.connect() as conn:
                if backend == "postgresql":
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                else:
                    conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    finally:
        admin.dispose()


def server_reachable(backend: str) -> str | None:
    """None when the server answers, else why not (for a skipped-row note)."""
    if backend == "sqlite":
        return None
    eng = create_engine(normalize_url(SERVER_URLS[backend]))
    try:
        with eng.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "not available", reported
        return f"{type(exc).__name__}"
    finally:
        eng.dispose()
    return None


def _create_tables(url: str) -> None:
    engine = make_engine(url)
    try:
        metadata.create_all(engine)
    finally:
        engine.dispose()


def new_pool(engine: Engine, name: str) -> tuple[int, int]:
    """Create a pool and an active batch directly: ``(pool_id, batch_id)``."""
    now = utcnow()
    with engine.begin() as conn:
        pk = conn.execute(insert(pools).values(name=name, created_at=now)).inserted_primary_key
        assert pk is not None
        pid = int(pk[0])
        pk = conn.execute(insert(batches).values(
            pool_id=pid, state="active", file_name="bench", file_sha256="0" * 64,
            code_count=0, imported_by="bench", created_at=now, updated_at=now,
        )).inserted_primary_key
        assert pk is not None
        bid = int(pk[0])
    return pid, bid


def seed_stock(engine: Engine, pool_id: int, batch_id: int, count: int,
               *, group: int = 250_000) -> None:
    """Put ``count`` codes (random bytes, never real codes) into a pool, generated in-database.

    The claim never decrypts, so the ciphertext is filler of a realistic size (12 + 16 + 20
    bytes). Done in groups so one statement never grows the transaction log too far.
    """
    backend = engine.dialect.name
    now = utcnow()
    with engine.connect() as conn:
        start = int(conn.execute(text(
            "SELECT COALESCE(MAX(source_line), 0) FROM codes WHERE batch_id = :b"),
            {"b": batch_id}).scalar_one())
    done = 0
    while done < count:
        n = min(group, count - done)
        lo, hi = start + done + 1, start + done + n
        params = {"p": pool_id, "b": batch_id, "now": now, "lo": lo, "hi": hi,
                  "never": NEVER}
        with engine.begin() as conn:
            if backend == "postgresql":  # the robot's 30 s statement timeout is for claims
                conn.execute(text("SET LOCAL statement_timeout = 0"))
            if backend == "sqlite":
                conn.execute(text(
                    "INSERT INTO codes (pool_id, batch_id, source_line, fingerprint, key_id,"
                    " ciphertext, created_at)"
                    " WITH RECURSIVE s(i) AS (SELECT :lo UNION ALL SELECT i + 1 FROM s"
                    " WHERE i < :hi)"
                    " SELECT :p, :b, i, randomblob(32), 'k1', randomblob(48), :now FROM s"),
                    params)
            elif backend == "postgresql":
                conn.execute(text(
                    "INSERT INTO codes (pool_id, batch_id, source_line, fingerprint, key_id,"
                    " ciphertext, created_at)"
                    " SELECT :p, :b, i, sha256(convert_to(:b || '-' || i, 'UTF8')), 'k1',"
                    " decode(md5(i::text) || md5(i::text) || md5(i::text), 'hex'), :now"
                    " FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS i"),
                    params)
            else:
                # MariaDB's sequence engine; lo and hi are ints computed above.
                seq = f"seq_{int(lo)}_to_{int(hi)}"
                insert_codes = (
                    "INSERT INTO codes (pool_id, batch_id, source_line, fingerprint, key_id,"  # noqa: S608 - seq is a table name made of two ints
                    " ciphertext, created_at)"
                    " SELECT :p, :b, seq, UNHEX(SHA2(CONCAT(:b, '-', seq), 256)), 'k1',"
                    " RANDOM_BYTES(48), :now FROM " + seq
                )
                conn.execute(text(insert_codes), params)
            conn.execute(text(
                "INSERT INTO stock (code_id, pool_id, expires_at)"
                " SELECT id, pool_id, :never FROM codes"
                " WHERE batch_id = :b AND source_line BETWEEN :lo AND :hi"), params)
        done += n
    with engine.begin() as conn:
        if backend == "postgresql":
            conn.execute(text("ANALYZE codes"))
            conn.execute(text("ANALYZE stock"))
        elif backend == "mysql":
            conn.execute(text("ANALYZE TABLE stock"))
        else:
            conn.execute(text("ANALYZE"))


def pool_size(engine: Engine, pool_id: int) -> int:
    from robot.schema import stock

    with engine.connect() as conn:
        from sqlalchemy import func

        return int(conn.execute(select(func.count()).select_from(stock)
                                .where(stock.c.pool_id == pool_id)).scalar_one())


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) // 1024} MiB"
    except OSError:
        pass
    return {"nproc": str(os.cpu_count()), "memory": mem, "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version, "platform": platform.platform()}


def server_version(url: str) -> str:
    eng = make_engine(url)
    try:
        with eng.connect() as conn:
            return str(conn.execute(text("SELECT version()")).scalar_one()).split(" on ")[0]
    finally:
        eng.dispose()


def stamp(value: datetime) -> str:
    """A naive UTC datetime as SQLAlchemy stores it in SQLite (for the raw sqlite3 floor)."""
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


# --------------------------------------------------------------------------- the bench shop


@dataclass(frozen=True)
class _Share:
    pool: str
    quantity: int


@dataclass(frozen=True)
class _Mapping:
    pools: tuple[_Share, ...]
    item_id: str | None = None
    sku_id: str | None = None
    outer_id: str | None = None


@dataclass(frozen=True)
class BenchShop:
    """The one shop of the allocation benchmarks (satisfies robot.pipeline.ShopRules)."""

    name: str = "bench-shop"
    platform: str = "memory"
    unmapped: Literal["hold", "ignore"] = "hold"
    items: tuple[_Mapping, ...] = field(
        default_factory=lambda: (_Mapping(pools=(_Share(POOL, 1),), sku_id=SKU),))


def make_order(i: int, per_order: int) -> Order:
    return Order(
        platform_order_id=f"B{i:09d}", status=PlatformStatus.PAID,
        lines=(OrderLine(line_id=f"B{i:09d}-0", quantity=per_order, sku_id=SKU,
                         title="bench item", unit_price_cents=990),),
        total_cents=990 * per_order, buyer_id=f"buyer-{i % 997}",
    )


@contextmanager
def seeded(backend: str, stock_count: int) -> Iterator[tuple[Scratch, int]]:
    """A scratch database with one pool (:data:`POOL`) holding ``stock_count`` codes:
    ``(database, pool id)``. Two seeded the same way hold the same code ids."""
    with scratch_db(backend) as db:
        engine = make_engine(db.url)
        try:
            pid, bid = new_pool(engine, POOL)
            seed_stock(engine, pid, bid, stock_count)
        finally:
            engine.dispose()
        yield db, pid


# --------------------------------------------------------------------------- raw drivers


def raw_connect(db: Scratch) -> Any:
    """A DB-API connection straight from the driver, with the session settings the robot's
    engine gives its own (``robot.db.make_engine``): SQLite's pragmas with transaction
    control left to the caller (``BEGIN IMMEDIATE``), PostgreSQL's timeouts and synchronous
    commit, MariaDB's READ COMMITTED, lock wait and UTC session."""
    if db.backend == "sqlite":
        assert db.path is not None
        lite = sqlite3.connect(db.path, isolation_level=None, check_same_thread=False,
                               timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
        for pragma in ("journal_mode=WAL", "synchronous=FULL",
                       f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}", "foreign_keys=ON"):
            lite.execute(f"PRAGMA {pragma}")
        return lite
    u = make_url(db.url)
    if db.backend == "postgresql":
        return psycopg.connect(
            host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database,
            options=f"-c statement_timeout={PG_STATEMENT_TIMEOUT_MS}"
            f" -c idle_in_transaction_session_timeout={PG_IDLE_IN_TX_TIMEOUT_MS}"
            " -c synchronous_commit=on")
    conn = pymysql.connect(host=u.host or "127.0.0.1", port=u.port or 3306,
                           user=u.username or "root", password=u.password or "",
                           database=u.database, charset="utf8mb4", autocommit=False)
    with conn.cursor() as cur:
        cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        cur.execute("SET SESSION innodb_lock_wait_timeout = 30")
        cur.execute("SET SESSION time_zone = '+00:00'")
    return conn


# --------------------------------------------------------------------------- CPU


def cpu_of(fn: Callable[[], _T]) -> tuple[_T, float]:
    """(what ``fn`` returned, CPU seconds this process spent meanwhile)."""
    cpu0 = time.process_time()
    value = fn()
    return value, time.process_time() - cpu0


_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    """One reading of another process from /proc."""

    at: float  # monotonic seconds
    cpu: float  # seconds of CPU (user + system, all threads) since the process started
    rss_kb: int
    hwm_kb: int


def sample(pid: int) -> Sample:
    """CPU seconds and memory of process ``pid`` (all its threads) from /proc."""
    at = time.monotonic()
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Field 2 (comm) may hold spaces: split after its closing parenthesis.
    fields = stat[stat.rindex(")") + 2:].split()
    cpu = (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15)
    mem: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            mem[key] = int(value.split()[0])
    return Sample(at, cpu, mem["VmRSS"], mem["VmHWM"])


# --------------------------------------------------------------------------- a robot's HTTP


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthz(port: int) -> dict[str, Any] | None:
    """The body of a robot's ``/healthz`` on loopback (a 503 too: it says why), or None
    when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return dict(json.load(resp))
    except urllib.error.HTTPError as exc:  # 503: unhealthy, the body says why
        return dict(json.load(exc))
    except (OSError, ValueError):
        return None


def take_in(engine: Any, shop: BenchShop, first: int, count: int, per_order: int,
            batch: int = 1) -> None:
    """Orders ``first`` .. ``first + count - 1`` taken in and allocated as the daemon takes
    them: one transaction per order (``batch`` 1, :func:`robot.pipeline.intake`), or
    ``batch`` orders to a transaction (:func:`robot.groupcommit.run_together` of
    :func:`robot.pipeline.intake_in` units: pushes that arrive together). Raises unless
    every order was allocated."""
    if batch <= 1:
        for i in range(first, first + count):
            if intake(engine, shop, make_order(i, per_order), allocate=True).state \
                    != "allocated":
                raise RuntimeError(f"robot: order {i} was not allocated")
        return
    # Imported here: a checkout from before group commit (a "before" side) has neither.
    from robot.groupcommit import run_together
    from robot.pipeline import pool_needs
    for start in range(first, first + count, batch):
        orders = [make_order(i, per_order) for i in range(start, min(first + count,
                                                                     start + batch))]
        outcomes = run_together(engine, [functools.partial(_intake_unit, shop, o)
                                         for o in orders],
                                [pool_needs(shop, o) for o in orders])
        if not all(ok and value.state == "allocated" for ok, value in outcomes):
            raise RuntimeError(f"robot: an order of batch {start} was not allocated")


def _intake_unit(shop: BenchShop, order: Order, conn: Any) -> Any:
    from robot.pipeline import intake_in
    return intake_in(conn, shop, order, allocate=True)
