"""The chaos run: real ``robot run`` processes on one database, fed by the four platform fakes
with faults injected, while a driver SIGKILLs robots, terminates database sessions and
restarts the database server; then the invariants of DESIGN.md are checked from the database
and from the fakes' own records.

Used by ``tests/chaos/test_chaos.py`` (small, in CI) and ``scripts/chaos`` (long runs). The
driver plays systemd too: a robot that exits on its own is started again.

What is checked when the load stops (each failure is one line in ``ChaosReport.violations``):

* no code in two deliveries, no delivered code still in stock, and no code lost (out of
  stock, not delivered, not retired); no *plaintext* in two
  deliveries either (every delivered code is decrypted with the run's key: one code hidden
  under two rows, pools or fingerprints is still one code);
* every order holds exactly the codes it was sold (units × codes per unit), or none;
* every paid order was shipped exactly once on its platform (the fake counts shipments), or
  is visibly ``held`` / ``waiting_stock`` / ``failed`` with a reason, or was cancelled
  because the buyer was refunded (and then was never shipped);
* every order that did not ship is explained by what the run did to it (an unmapped SKU, a
  refund, a hand shipment), so shipped never falls below the minimum those explain;
* what was *sent*, from every call the fakes recorded (refused ones too): no ship call after
  the robot had recorded the order shipped (no crash or lost answer explains that), no call
  carrying codes or a pickup link other than the first one sent for the order, no memo whose
  masked codes are not the order's (``tests/chaos/checks.py``);
* every write-back that reached a platform was for a claim already committed: at the moment
  the fake receives the call, a separate connection must see the order's deliveries, and
  they must be the codes the order still holds at the end;
* the audit chain verifies, every robot drains and exits 0 on SIGTERM, and a database server
  the run restarted accepts connections again at the end.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from connectors.fakeserve import FakeHost
from robot import audit, demosupply
from robot import orders as order_ops
from robot import pools as pool_ops
from robot.db import make_engine, normalize_url
from robot.demo import (
    CODES_PER_UNIT,
    SKU_BUNDLE,
    SKU_MAIN,
    SKU_UNKNOWN,
    DemoDriver,
    gateway_items,
    import_stock,
    load_drivers,
    place_topup,
    places_topups,
    refuses_unknown,
    shop_name,
    write_shops,
)
from robot.errors import UserError
from robot.migrate import upgrade
from robot.pipeline import StateConflict
from robot.schema import codes, deliveries, orders, outbox, stock, supplier_attempts
from robot.vault import Vault, init_key_file, mask, open_vault
from tests.chaos import checks
from tests.chaos.platforms import Chaos, chaos_for

ROOT = Path(__file__).resolve().parents[2]
SETTLED = ("shipped", "held", "waiting_stock", "failed", "cancelled", "refunded", "rejected",
           "ignored")

T = TypeVar("T")


@dataclass
class ChaosPlan:
    backend: str  # sqlite | postgresql | mysql
    server_url: str | None = None  # the server to create a scratch database on
    robots: int = 3
    orders: int = 300
    seconds: float = 40.0  # how long the load lasts
    kill_every: float = 4.0  # mean seconds between SIGKILLs
    session_kill_every: float = 3.0  # mean seconds between terminated database sessions
    fault_every: float = 1.5  # mean seconds between platform faults
    restart_db: bool = True  # restart the database server once, mid-load
    settle_timeout: float = 150.0
    seed: int | None = None
    keep: bool = False  # keep the working directory (logs, config) afterwards
    #: the module run as ``python -m <robot_module> -c robot.yaml run`` (a test runs a
    #: deliberately broken robot to show that the checks catch it)
    robot_module: str = "robot"
    #: also sell a top-up and a supplier-bought card, from the Fulu and Juhe fakes
    suppliers: bool = True
    #: called with (engine, key file) after the stock is imported, before any robot starts
    after_import: Callable[[Engine, Path], None] | None = None
    say: Callable[[str], None] = lambda _line: None


@dataclass
class Placed:
    """An order the driver placed on a platform, and what it expects of it."""

    chaos: Chaos
    shop: str
    order_id: str
    kind: str  # normal | unknown_sku | refunded | by_hand
    codes: int  # codes the order takes when allocated


@dataclass
class ChaosReport:
    backend: str
    orders: int = 0
    states: Counter[str] = field(default_factory=Counter)
    kills: int = 0
    restarts: int = 0
    unexpected_exits: int = 0
    session_kills: int = 0
    db_restarts: int = 0
    db_restart_seconds: float = 0.0  # from stopping the server to its first answer again
    faults: Counter[str] = field(default_factory=Counter)
    shipments_applied: int = 0
    write_backs_witnessed: int = 0
    ship_calls: int = 0  # every ship call the platforms received, refused ones included
    memo_calls: int = 0
    shipped_minimum: int = 0  # what the run's injected events allow at least
    shipped_expected: int = 0  # orders placed to ship (normal ones)
    shipped: int = 0  # of those, shipped
    plaintexts_compared: int = 0
    duplicates_found: int = 0
    audit_entries: int = 0
    #: per supplier: top-ups and cards bought, purchases failed, cost (cents)
    per_supplier: dict[str, dict[str, int]] = field(default_factory=dict)
    double_supplier_orders: int = 0  # units bought twice, by the suppliers' own answers
    seconds: float = 0.0
    violations: list[str] = field(default_factory=list)
    workdir: str | None = None
    database: str | None = None  # the scratch database, when kept

    @property
    def ok(self) -> bool:
        return not self.violations

    def lines(self) -> list[str]:
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items()))
        states = ", ".join(f"{k} {v}" for k, v in sorted(self.states.items()))
        out = [
            f"chaos on {self.backend}: {'OK' if self.ok else 'VIOLATIONS'} in {self.seconds:.0f} s",
            f"  orders placed         {self.orders}  ({states})",
            f"  robots SIGKILLed      {self.kills}  (restarts {self.restarts}, "
            f"exits on their own {self.unexpected_exits})",
            f"  db sessions killed    {self.session_kills}",
            f"  db server restarts    {self.db_restarts}"
            + (f"  (back in {self.db_restart_seconds:.1f} s)" if self.db_restarts else ""),
            f"  faults injected       {sum(self.faults.values())}  ({faults})",
            f"  shipments applied     {self.shipments_applied}  "
            f"(write-backs witnessed {self.write_backs_witnessed}; calls received: "
            f"ship {self.ship_calls}, memo {self.memo_calls})",
            f"  shipped               {self.shipped} of {self.shipped_expected} "
            f"(the injected faults explain a minimum of {self.shipped_minimum})",
            f"  plaintexts compared   {self.plaintexts_compared}",
            f"  audit entries         {self.audit_entries}",
            f"  duplicates found      {self.duplicates_found}",
            f"  supplier purchases    {self.per_supplier}  "
            f"(double supplier orders {self.double_supplier_orders})",
            f"  violations            {len(self.violations)}",
        ]
        out += [f"    - {v}" for v in self.violations[:50]]
        if self.workdir:
            out.append(f"  working directory     {self.workdir}")
        if self.database:
            out.append(f"  database kept         {self.database}")
        return out


# -- the fakes, on their own event loop -----------------------------------------------------
# -- the database ---------------------------------------------------------------------------
class Database:
    """The scratch database of one run, with what the driver does to its server."""

    def __init__(self, plan: ChaosPlan, workdir: Path) -> None:
        self.backend = plan.backend
        self._admin_url: str | None = None
        if plan.backend == "sqlite":
            self.url = f"sqlite:///{workdir / 'robot.db'}"
            return
        if not plan.server_url:
            raise ValueError(f"a {plan.backend} chaos run needs the server's URL")
        base = make_url(normalize_url(plan.server_url))
        self._admin_url = base.render_as_string(hide_password=False)
        self.name = f"robot_chaos_{secrets.token_hex(4)}"
        with self.admin() as conn:
            quoted = f'"{self.name}"' if plan.backend == "postgresql" else f"`{self.name}`"
            extra = "" if plan.backend == "postgresql" else " CHARACTER SET utf8mb4"
            conn.execute(text(f"CREATE DATABASE {quoted}{extra}"))
        self.url = base.set(database=self.name).render_as_string(hide_password=False)

    @contextlib.contextmanager
    def admin(self) -> Iterator[Any]:
        assert self._admin_url is not None
        engine = create_engine(self._admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        try:
            with engine.connect() as conn:
                yield conn
        finally:
            engine.dispose()

    def reader(self) -> Engine:
        """An engine for the driver's own reads (no pooling: sessions get killed)."""
        return create_engine(normalize_url(self.url), poolclass=NullPool)

    def kill_sessions(self, rng: random.Random) -> int:
        """Terminate one to three of the robots' sessions; returns how many."""
        if self.backend == "sqlite":
            return 0
        with self.admin() as conn:
            if self.backend == "postgresql":
                ids = conn.execute(text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = :db "
                    "AND pid <> pg_backend_pid()"), {"db": self.name}).scalars().all()
            else:
                ids = conn.execute(text(
                    "SELECT id FROM information_schema.processlist WHERE db = :db "
                    "AND id <> CONNECTION_ID()"), {"db": self.name}).scalars().all()
            victims = rng.sample(list(ids), min(len(ids), rng.randint(1, 3)))
            for victim in victims:
                with contextlib.suppress(DBAPIError):  # it may have gone meanwhile
                    if self.backend == "postgresql":
                        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": victim})
                    else:
                        conn.execute(text(f"KILL CONNECTION {int(victim)}"))
        return len(victims)

    def restart_server(self) -> None:
        """Stop the database server and start it again (as root, like the CI machine)."""
        if self.backend == "postgresql":
            version = sorted(os.listdir("/etc/postgresql"))[-1]
            subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", "-m", "fast",
                            version, "main", "restart"], check=True, capture_output=True)
        elif self.backend == "mysql":
            with contextlib.suppress(DBAPIError), self.admin() as conn:
                conn.execute(text("SHUTDOWN"))
            _wait(lambda: subprocess.run(["pgrep", "-x", "mariadbd"],
                                         check=False, capture_output=True).returncode != 0,
                  60, "the MariaDB server to stop")
            subprocess.run(["start-stop-daemon", "--start", "--oknodo", "--background",
                            "--exec", "/usr/sbin/mariadbd"], check=True, capture_output=True)
        else:
            return
        _wait(self._reachable, 60, f"the {self.backend} server to come back")

    def _reachable(self) -> bool:
        try:
            with self.admin() as conn:
                conn.execute(text("SELECT 1"))
        except DBAPIError:
            return False
        return True

    def drop(self) -> None:
        if self.backend == "sqlite":
            return
        with self.admin() as conn:
            if self.backend == "postgresql":
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            else:
                conn.execute(text(f"DROP DATABASE IF EXISTS `{self.name}`"))


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _retrying(read: Callable[[], T], timeout: float = 60.0) -> T:
    """Run a read of the driver's own, waiting out a killed session or a restarting server."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return read()
        except DBAPIError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# -- robot processes ------------------------------------------------------------------------
class RobotProcess:
    """One ``robot run`` process, restartable on its own port."""

    def __init__(self, index: int, config: Path, port: int, log: Path,
                 module: str = "robot") -> None:
        self.index, self.config, self.port, self.log_path = index, config, port, log
        self.module = module
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, "-c", str(self.config), "run"],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.starts += 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, wait for the drain; the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
            return -9


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_robot_config(path: Path, db_url: str, key_file: Path, port: int,
                        public_url: str, suppliers: dict[str, Any] | None = None) -> None:
    doc = {
        "database": db_url, "key_file": str(key_file), "shops": "shops/*.yaml",
        # One public address for every robot, as behind a load balancer: a pickup link is
        # the same whichever robot writes it.
        "http": {"listen": f"127.0.0.1:{port}", "public_url": public_url},
        # Many faults in a short time: retry quickly and long enough to see them through.
        "defaults": {"poll_interval": 1, "backoff_initial": 0.2, "backoff_max": 2,
                     "max_attempts": 40},
        "log": {"level": "info", "format": "json"},
    }
    if suppliers:
        doc["suppliers"] = suppliers
        doc["sourcing"] = {"query_initial": 0.2, "query_max": 1}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


# -- the run --------------------------------------------------------------------------------
class ChaosRun:
    def __init__(self, plan: ChaosPlan) -> None:
        self.plan = plan
        self.rng = random.Random(plan.seed)
        self.report = ChaosReport(plan.backend)
        self.placed: list[Placed] = []
        self.by_hand: set[tuple[str, str]] = set()
        #: (shop, order id) → (order state, committed code ids) seen at each write-back
        self.witnessed: dict[tuple[str, str], list[tuple[str | None, list[int]]]] = {}
        #: (shop, order id) → units still being bought, seen at each write-back (must be 0)
        self.unbought: dict[tuple[str, str], list[int]] = {}
        self._witness_lock = threading.Lock()
        self.supply = demosupply.SupplierDemo()
        self._fakes = contextlib.ExitStack()

    def run(self) -> ChaosReport:
        plan = self.plan
        workdir = Path(tempfile.mkdtemp(prefix=f"robot-chaos-{plan.backend}-"))
        started = time.monotonic()
        host = FakeHost()
        drivers: list[DemoDriver] = []
        db: Database | None = None
        robots: list[RobotProcess] = []
        try:
            db = Database(plan, workdir)
            self.reader = db.reader()
            engine = make_engine(db.url)
            upgrade(engine)
            key_file = workdir / "robot.key"
            init_key_file(key_file)
            self.vault = open_vault(key_file)
            audit.bind(self.reader, key_file)  # the robots seal the audit log with it
            import_stock(key_file, engine, workdir, plan.orders)
            if plan.suppliers:
                self.supply.start(self._fakes)
                self.supply.fund(plan.orders * 10_000)  # 100 yuan an order, however long
                pool_ops.create_pool(engine, demosupply.POOL_BOUGHT, actor="chaos")
            if plan.after_import is not None:
                plan.after_import(engine, key_file)
            engine.dispose()
            ports = [_free_port() for _ in range(plan.robots)]
            drivers = load_drivers()
            platform_configs = [host.call(d.start(f"http://127.0.0.1:{ports[0]}"))
                                for d in drivers]
            # A robot killed mid-request makes the fakes' server log a client disconnect.
            logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
            (workdir / "shops").mkdir()
            extra = [host.call(gateway_items(self.supply, d)) for d in drivers]
            write_shops(workdir / "shops", drivers, platform_configs, extra)
            self.chaos = [chaos_for(d) for d in drivers]
            for chaos in self.chaos:
                chaos.compress_retries(1 / 15)
                chaos.watch_shipments(self._witness(shop_name(chaos.driver)))
            for i, port in enumerate(ports):
                config = workdir / f"robot-{i}.yaml"
                _write_robot_config(config, db.url, key_file, port, f"http://127.0.0.1:{ports[0]}",
                                    self.supply.robot_file())
                robots.append(RobotProcess(i, config, port, workdir / f"robot-{i}.log",
                                           plan.robot_module))
            for robot in robots:
                robot.start()
            plan.say(f"{plan.backend}: {len(robots)} robots, {len(drivers)} platforms, "
                     f"{plan.orders} orders over {plan.seconds:.0f} s")
            self._load(db, robots)
            plan.say(f"{plan.backend}: load stopped; waiting for the orders to settle")
            self._settle(robots)
            for robot in robots:
                status = robot.stop()
                if status != 0:
                    self.report.violations.append(
                        f"robot {robot.index} exited {status} on SIGTERM (log {robot.log_path})")
            self._check(drivers)
            self._check_suppliers(host)
            if db.backend != "sqlite":
                try:
                    _wait(db._reachable, 60, f"the {db.backend} server")
                except TimeoutError:
                    self.report.violations.append(
                        f"the {db.backend} server does not accept connections at the end")
        finally:
            for robot in robots:
                if robot.alive():
                    robot.proc.kill()  # type: ignore[union-attr]
                    robot.proc.wait(timeout=30)  # type: ignore[union-attr]
            for chaos in getattr(self, "chaos", []):
                chaos.calm()
            for d in drivers:
                with contextlib.suppress(Exception):
                    host.call(d.stop())
            self._fakes.close()
            host.close()
            if hasattr(self, "reader"):
                self.reader.dispose()
            if db is not None and not plan.keep and self.report.ok:
                db.drop()  # a run with violations keeps its database to be examined
            elif db is not None and db.backend != "sqlite":
                self.report.database = db.name
            self.report.seconds = time.monotonic() - started
            if plan.keep or not self.report.ok:
                self.report.workdir = str(workdir)
            else:
                shutil.rmtree(workdir, ignore_errors=True)
        return self.report

    # -- load ---------------------------------------------------------------------------
    def _load(self, db: Database, robots: list[RobotProcess]) -> None:
        plan, rng = self.plan, self.rng
        start = time.monotonic()
        end = start + plan.seconds
        next_kill = start + self._every(plan.kill_every)
        next_session_kill = start + self._every(plan.session_kill_every)
        next_fault = start + self._every(plan.fault_every)
        restart_at = start + plan.seconds / 2 if plan.restart_db and db.backend != "sqlite" \
            else None
        pending: list[tuple[float, Callable[[], None]]] = []  # (when, action)
        restarts: dict[int, float] = {}
        while (now := time.monotonic()) < end:
            due = int(plan.orders * min(1.0, (now - start) / plan.seconds)) + 1
            while len(self.placed) < min(due, plan.orders):
                pending.extend(self._place())
            for item in [p for p in pending if p[0] <= now]:
                pending.remove(item)
                item[1]()
            if now >= next_kill:
                self._kill_one(robots, restarts, now)
                next_kill = now + self._every(plan.kill_every)
            if now >= next_session_kill:
                self.report.session_kills += _retrying(lambda: db.kill_sessions(rng), 30)
                next_session_kill = now + self._every(plan.session_kill_every)
            if now >= next_fault:
                self._fault()
                next_fault = now + self._every(plan.fault_every)
            if restart_at is not None and now >= restart_at:
                plan.say(f"{plan.backend}: restarting the database server")
                began = time.monotonic()
                db.restart_server()
                self.report.db_restart_seconds += time.monotonic() - began
                self.report.db_restarts += 1
                restart_at = None
            self._supervise(robots, restarts)
            self._suppliers_work()
            time.sleep(0.05)
        while len(self.placed) < plan.orders:
            pending.extend(self._place())
        for _when, action in pending:
            action()

    def _every(self, mean: float) -> float:
        """Seconds to the next event of a kind: around ``mean``, never bunched or starved."""
        return self.rng.uniform(0.5 * mean, 1.5 * mean)

    def _place(self) -> list[tuple[float, Callable[[], None]]]:
        """Place one order on a random platform; returns actions to run later."""
        rng = self.rng
        chaos = self.chaos[len(self.placed) % len(self.chaos)]
        shop = shop_name(chaos.driver)
        buyer = f"buyer-{rng.randrange(100_000)}"
        roll = rng.random()
        if roll < 0.05 and not refuses_unknown(chaos.driver):
            oid = chaos.driver.create_paid_order(SKU_UNKNOWN, 1, buyer)
            self.placed.append(Placed(chaos, shop, oid, "unknown_sku", 0))
            return []
        if self.supply.harnesses and 0.20 <= roll < 0.27 and (
                places_topups(chaos.driver) or not refuses_unknown(chaos.driver)):
            # Most carry the account in the buyer's message; the rest wait held for it.
            message = demosupply.topup_message(sum(p.kind == "topup" for p in self.placed))
            oid, _waits = place_topup(chaos.driver, buyer, message)
            self.placed.append(Placed(chaos, shop, oid, "topup", 0))
            return []
        if self.supply.sells_cards and 0.27 <= roll < 0.33 and not refuses_unknown(chaos.driver):
            qty = rng.choice((1, 1, 2))
            oid = chaos.driver.create_paid_order(demosupply.SKU_CARD, qty, buyer)
            self.placed.append(Placed(chaos, shop, oid, "normal", qty))
            return []
        sku = SKU_BUNDLE if roll < 0.20 else SKU_MAIN
        qty = rng.choice((1, 1, 2))
        several = getattr(chaos.driver, "create_paid_order_lines", None)
        if several is not None and 0.33 <= roll < 0.45:
            # A cart of two goods paid at once (抖店: one shop order, a sub-order each, every
            # sub-order's codes synced on its own).
            lines = [(SKU_MAIN, qty), (SKU_BUNDLE, 1)]
            oid = several(lines, buyer)
            codes = sum(n * CODES_PER_UNIT[s] for s, n in lines)
        else:
            oid = chaos.driver.create_paid_order(sku, qty, buyer)
            codes = qty * CODES_PER_UNIT[sku]
        placed = Placed(chaos, shop, oid, "normal", codes)
        self.placed.append(placed)
        later = time.monotonic() + rng.uniform(0.0, 2.0)
        if roll > 0.93:
            placed.kind = "refunded"
            return [(later, lambda: chaos.driver.refund(oid))]
        if roll > 0.90 and chaos.hand_ships:

            def by_hand() -> None:
                if chaos.ship_by_hand(oid):
                    placed.kind = "by_hand"
                    self.report.faults["already_shipped_by_hand"] += 1

            return [(later, by_hand)]
        return []

    def _fault(self) -> None:
        chaos = self.rng.choice(self.chaos)
        roll = self.rng.random()
        if self.supply.harnesses and roll > 0.85:
            self._supplier_fault()
            return
        if roll < 0.15 and chaos.duplicate_pushes(self.rng):
            return
        if roll < 0.25 and chaos.reorder_pushes() > 1:
            return
        if chaos.menu():
            chaos.inject(self.rng)

    def _supplier_fault(self) -> None:
        """A supplier misbehaves once: busy, an answer lost after the order was placed, or
        (for the first supplier of the top-up, which has a second) accepted then failed."""
        name = self.rng.choice(sorted(self.supply.harnesses))
        harness = self.supply.harnesses[name]
        kinds = ["busy", "lose_answer"]
        if name == demosupply.PLUGINS[0] and len(self.supply.harnesses) > 1 \
                and not harness.card_product:
            kinds.append("accept_then_fail")
        kind = self.rng.choice(kinds)
        if kind == "busy":
            harness.busy_next()
        elif kind == "lose_answer":
            harness.lose_next_answer()
        else:
            harness.fail_next_after_accept("运营商维护")
        self.report.faults[f"{name}_{kind}"] += 1

    def _suppliers_work(self, every: float = 0.3) -> None:
        """Time passes at the suppliers (they finish what they process), and customer service
        gives the account of each top-up held for it."""
        now = time.monotonic()
        if now < getattr(self, "_next_supplier_work", 0.0):
            return
        self._next_supplier_work = now + every
        if not self.supply.harnesses:
            return
        self.supply.settle()
        with contextlib.suppress(DBAPIError):
            self._give_accounts()

    def _give_accounts(self) -> None:
        topups = {(p.shop, p.order_id) for p in self.placed if p.kind == "topup"}
        with self.reader.connect() as conn:
            held = [(int(r.id), r.shop, r.platform_order_id) for r in conn.execute(
                select(orders.c.id, orders.c.shop, orders.c.platform_order_id)
                .where(orders.c.state == "held"))]
        for order_id, shop, oid in held:
            if (shop, oid) in topups:
                with contextlib.suppress(UserError, StateConflict):
                    order_ops.release(self.reader, order_id, actor="chaos-customer-service",
                                      account=demosupply.DEMO_ACCOUNT)

    def _check_suppliers(self, host: FakeHost) -> None:
        """No unit bought twice (the suppliers' own answers), nothing above its maximum cost,
        no write-back while a unit was still being bought."""
        if not self.supply.harnesses:
            return
        v = self.report.violations
        self.report.per_supplier = demosupply.per_supplier(self.reader)
        self.report.double_supplier_orders = host.call(self.supply.double_orders(self.reader))
        if self.report.double_supplier_orders:
            v.append(f"{self.report.double_supplier_orders} units bought twice at a supplier")
        with self.reader.connect() as conn:
            above = conn.execute(select(func.count()).select_from(supplier_attempts).where(
                supplier_attempts.c.cost_cents > supplier_attempts.c.max_cost_cents)).scalar_one()
        if above:
            v.append(f"{above} purchases cost more than their maximum")
        for (shop, oid), seen in self.unbought.items():
            if any(seen):
                v.append(f"{shop} {oid}: a write-back reached the platform while "
                         f"{max(seen)} unit(s) were still being bought")

    def _kill_one(self, robots: list[RobotProcess], restarts: dict[int, float],
                  now: float) -> None:
        alive = [r for r in robots if r.alive() and r.index not in restarts]
        if not alive:
            return
        victim = self.rng.choice(alive)
        victim.kill()
        self.report.kills += 1
        restarts[victim.index] = now + self.rng.uniform(0.0, 1.5)
        others = [r for r in robots if r.alive()]
        if others:  # the platforms' pushes go to a robot that is up, as a load balancer would
            target = self.rng.choice(others)
            for chaos in self.chaos:
                chaos.point_pushes(target.url)

    def _supervise(self, robots: list[RobotProcess], restarts: dict[int, float]) -> None:
        """Restart robots due for it, and (like systemd) any that exited on their own."""
        now = time.monotonic()
        for robot in robots:
            if robot.index in restarts:
                if now >= restarts[robot.index]:
                    del restarts[robot.index]
                    robot.start()
                    self.report.restarts += 1
            elif not robot.alive():
                self.report.unexpected_exits += 1
                robot.start()
                self.report.restarts += 1
        if len(robots) == 1 and robots[0].alive():
            for chaos in self.chaos:
                chaos.point_pushes(robots[0].url)

    # -- settle -------------------------------------------------------------------------
    def _settle(self, robots: list[RobotProcess]) -> None:
        for chaos in self.chaos:
            chaos.calm()
        deadline = time.monotonic() + self.plan.settle_timeout
        restarts: dict[int, float] = {}
        while time.monotonic() < deadline:
            self._supervise(robots, restarts)
            self._suppliers_work(every=0.0)
            if _retrying(self._settled):
                return
            time.sleep(0.5)
        self.report.violations.append(
            f"orders did not settle within {self.plan.settle_timeout:.0f} s after the load")

    def _settled(self) -> bool:
        with self.reader.connect() as conn:
            states = {(r.shop, r.platform_order_id): r.state for r in conn.execute(
                select(orders.c.shop, orders.c.platform_order_id, orders.c.state))}
            ships_due = conn.execute(select(func.count()).select_from(outbox).where(
                outbox.c.kind == "ship", outbox.c.state == "pending")).scalar_one()
        for p in self.placed:
            state = states.get((p.shop, p.order_id))
            if state is None and p.kind not in ("by_hand", "refunded"):
                return False
            if p.kind == "topup" and state == "held":
                return False  # waits for its account
            if state is not None and state not in SETTLED:
                return False
        return int(ships_due) == 0

    # -- the write-back witness ---------------------------------------------------------
    def _witness(self, shop: str) -> Callable[[str], None]:
        def witness(order_id: str) -> None:
            def read() -> tuple[str | None, list[int]]:
                # One statement, so one snapshot: two reads could straddle a commit (the
                # order read before a cancel, its deliveries after) and report a state the
                # database never held.
                with self.reader.connect() as conn:
                    rows = conn.execute(
                        select(orders.c.state, deliveries.c.code_id)
                        .select_from(orders.outerjoin(
                            deliveries, deliveries.c.order_id == orders.c.id))
                        .where(orders.c.shop == shop, orders.c.platform_order_id == order_id)
                    ).all()
                if not rows:
                    return None, []
                return rows[0].state, sorted(int(r.code_id) for r in rows
                                             if r.code_id is not None)

            try:
                seen = _retrying(read, 30)
            except DBAPIError as exc:
                self.report.violations.append(
                    f"{shop} {order_id}: could not witness a write-back ({type(exc).__name__})")
                return
            try:
                unbought = _retrying(lambda: self._unbought(shop, order_id), 30)
            except DBAPIError:
                unbought = 0
            with self._witness_lock:
                self.report.write_backs_witnessed += 1
                self.witnessed.setdefault((shop, order_id), []).append(seen)
                self.unbought.setdefault((shop, order_id), []).append(unbought)
        return witness

    def _unbought(self, shop: str, order_id: str) -> int:
        """Units of the order without a successful supplier purchase, though it has some
        (a write-back must never see one)."""
        with self.reader.connect() as conn:
            rows = conn.execute(
                select(supplier_attempts.c.line_no, supplier_attempts.c.unit,
                       supplier_attempts.c.state)
                .join(orders, orders.c.id == supplier_attempts.c.order_id)
                .where(orders.c.shop == shop, orders.c.platform_order_id == order_id)).all()
        units = {(r.line_no, r.unit) for r in rows}
        bought = {(r.line_no, r.unit) for r in rows if r.state == "succeeded"}
        return len(units - bought)

    # -- the invariants -----------------------------------------------------------------
    def _check(self, drivers: list[DemoDriver]) -> None:
        report, v = self.report, self.report.violations
        report.orders = len(self.placed)
        for chaos in self.chaos:
            report.faults.update(chaos.injected)
        with self.reader.connect() as conn:
            rows = {(r.shop, r.platform_order_id): r for r in conn.execute(
                select(orders.c.id, orders.c.shop, orders.c.platform_order_id, orders.c.state,
                       orders.c.reason, orders.c.shipped_at))}
            held: dict[int, list[tuple[int, str]]] = {}
            delivered = conn.execute(
                select(deliveries.c.order_id, deliveries.c.code_id, deliveries.c.state,
                       codes.c.pool_id, codes.c.fingerprint, codes.c.key_id, codes.c.ciphertext,
                       codes.c.aad_version)
                .join(codes, codes.c.id == deliveries.c.code_id)
                .order_by(deliveries.c.order_id, deliveries.c.line_no, deliveries.c.n)).all()
            for d in delivered:
                held.setdefault(int(d.order_id), []).append((int(d.code_id), d.state))
            twice = conn.execute(select(deliveries.c.code_id).group_by(deliveries.c.code_id)
                                 .having(func.count() > 1)).scalars().all()
            in_stock = conn.execute(select(func.count()).select_from(stock).join(
                deliveries, deliveries.c.code_id == stock.c.code_id)).scalar_one()
            # A code leaves stock only for a delivery (in the claim's transaction) or when
            # retired: one in neither place was lost (a claim not put back).
            lost = conn.execute(select(func.count()).select_from(codes).where(
                codes.c.retired.is_(None),
                ~select(stock.c.code_id).where(stock.c.code_id == codes.c.id).exists(),
                ~select(deliveries.c.code_id).where(deliveries.c.code_id == codes.c.id)
                .exists())).scalar_one()
        report.duplicates_found = len(twice) + int(in_stock)
        if twice:
            v.append(f"codes in two deliveries: {sorted(twice)[:10]}")
        if in_stock:
            v.append(f"{in_stock} delivered codes are still in stock")
        if lost:
            v.append(f"{lost} codes are neither in stock, nor delivered, nor retired (lost)")
        applied = {(shop_name(d), oid): n for d in drivers for oid, n in d.shipments().items()}
        report.shipments_applied = sum(applied.values())
        placed_keys = {(p.shop, p.order_id) for p in self.placed}
        for key in applied.keys() - placed_keys:
            v.append(f"{key[0]} {key[1]}: shipped on the platform but never placed")
        for p in self.placed:
            self._check_order(p, rows.get((p.shop, p.order_id)), held, applied)
        self._check_sent(rows, delivered)
        result = audit.verify(self.reader)
        report.audit_entries = result.entries
        if not result.ok:
            v.append(f"audit chain broken at {result.first_bad_seq}: {result.problem}")

    def _check_order(self, p: Placed, row: Any, held: dict[int, list[tuple[int, str]]],
                     applied: dict[tuple[str, str], int]) -> None:
        v = self.report.violations
        name = f"{p.shop} {p.order_id} ({p.kind})"
        shipped_on_platform = applied.get((p.shop, p.order_id), 0)
        state = row.state if row is not None else "absent"
        self.report.states[state] += 1
        if shipped_on_platform > 1:
            v.append(f"{name}: shipped {shipped_on_platform} times on the platform")
        if p.kind == "by_hand":
            if shipped_on_platform != 1:
                v.append(f"{name}: shipped by hand, but the platform counts "
                         f"{shipped_on_platform} shipments")
            return
        if row is None:
            if p.kind != "refunded" or shipped_on_platform:
                why = p.chaos.why_not_placed(p.order_id)
                v.append(f"{name}: paid on the platform but never taken in"
                         + (f" ({why})" if why else ""))
            return  # refunded before the robot saw it: nothing to do, nothing was done
        # A refund after delivery flags the codes for review; they stay the order's.
        codes = [c for c, s in held.get(int(row.id), [])
                 if s in ("reserved", "delivered") or state == "refunded"]
        for then, seen in self.witnessed.get((p.shop, p.order_id), []):
            if then in ("cancelled", "rejected"):
                continue  # a refund overtook the write-back; the platform must refuse it
            if len(seen) != p.codes:
                v.append(f"{name}: a write-back reached the platform while the order was "
                         f"{then} with {len(seen)} committed codes of {p.codes}")
            elif state in ("shipped", "refunded") and seen != sorted(codes):
                v.append(f"{name}: a write-back carried a claim that is not the order's codes")
        if state in ("shipped", "refunded"):
            if shipped_on_platform != 1:
                v.append(f"{name}: {state} in the robot, {shipped_on_platform} shipments on "
                         "the platform")
            if len(codes) != p.codes:
                v.append(f"{name}: {state} with {len(codes)} codes, sold {p.codes}")
        elif state in ("cancelled", "rejected"):
            if shipped_on_platform:
                v.append(f"{name}: cancelled in the robot, shipped on the platform")
            if p.kind != "refunded":
                v.append(f"{name}: cancelled though never refunded ({row.reason})")
            if codes:
                v.append(f"{name}: cancelled but still holds {len(codes)} codes")
        elif state in ("held", "waiting_stock", "failed"):
            if not row.reason:
                v.append(f"{name}: {state} without a reason")
            if shipped_on_platform:
                v.append(f"{name}: {state} in the robot, shipped on the platform")
            if state != "failed" and codes:
                v.append(f"{name}: {state} but holds {len(codes)} codes")
            if state == "failed" and len(codes) not in (0, p.codes):
                v.append(f"{name}: failed holding {len(codes)} codes of {p.codes}")
        else:
            v.append(f"{name}: left {state} ({row.reason})")


    def _check_sent(self, rows: dict[tuple[str, str], Any], delivered: list[Any]) -> None:
        """What the platforms were sent, the plaintexts delivered, and the outcomes against
        what the run explains (``tests/chaos/checks.py``)."""
        report, v = self.report, self.report.violations
        names = {int(row.id): f"{shop} {oid}" for (shop, oid), row in rows.items()}
        plain: list[tuple[str, int, str]] = []
        masked: dict[int, list[str]] = {}
        for d in delivered:
            secret = _decrypt(self.vault, d)
            plain.append((names.get(int(d.order_id), f"order {d.order_id}"), int(d.code_id),
                          secret))
            masked.setdefault(int(d.order_id), []).append(mask(secret))
        report.plaintexts_compared = len(plain)
        v.extend(checks.check_plaintexts(plain))
        placed = {(p.shop, p.order_id): p for p in self.placed}
        for chaos in self.chaos:
            shop = shop_name(chaos.driver)
            for order_id, calls in checks.calls_by_order(chaos.write_backs()).items():
                # A supplier's answer carrying the codes is its platform's shipment call.
                report.ship_calls += sum(1 for c in calls if c.kind in ("ship", "answer"))
                report.memo_calls += sum(1 for c in calls if c.kind == "memo")
                row, p = rows.get((shop, order_id)), placed.get((shop, order_id))
                if p is None:
                    v.append(f"{shop} {order_id}: {len(calls)} write-back calls for an order "
                             "never placed")
                    continue
                # The memo carries each code masked, a card/password pair as two.
                held = masked.get(int(row.id), []) if row is not None else []
                codes_sent = [part for code in held for part in code.split(" / ")]
                v.extend(checks.check_write_backs(
                    f"{shop} {order_id} ({p.kind})", calls, codes_sent,
                    row.shipped_at if row is not None else None))
        outcomes = []
        for p in self.placed:
            row = rows.get((p.shop, p.order_id))
            outcomes.append(checks.Outcome(f"{p.shop} {p.order_id} ({p.kind})", p.kind,
                                           row.state if row is not None else "absent",
                                           row.reason if row is not None else None))
        report.shipped, report.shipped_minimum, found = checks.check_outcomes(outcomes)
        report.shipped_expected = sum(1 for o in outcomes if o.kind in checks.MUST_SHIP)
        v.extend(found)


def _decrypt(vault: Vault, row: Any) -> str:
    """One delivered code's plaintext (kept in memory for the comparison, never printed)."""
    return vault.decrypt(str(row.key_id), bytes(row.ciphertext), code_id=int(row.code_id),
                         pool_id=int(row.pool_id), fingerprint=bytes(row.fingerprint),
                         aad_version=row.aad_version)


def run(plan: ChaosPlan) -> ChaosReport:
    return ChaosRun(plan).run()
