"""``robot run``: one asyncio process that takes orders in, allocates and writes back.

Inside one event loop:

* an APScheduler 3.x ``AsyncIOScheduler`` is the timer: per-shop polls (orders, refunds), the
  per-shop reconciliation sweep (re-reads the recent past for orders polling missed) and
  periodic sweeps (expire codes, wake orders waiting for stock, clean crashed imports). It is
  never the lock: polling and reconciling a shop need the shop's lease row, everything else
  is claimed row by row in the database, so a second process running the same jobs is
  harmless;
* an allocator task and a write-back dispatcher task, woken when work arrives and otherwise
  checking once a second;
* (with the HTTP listener) the webhook, health, metrics and pickup endpoints.

Database work runs in worker threads (short transactions); the loop itself only waits on the
network. SIGTERM stops intake, lets in-flight work finish within ``drain_timeout``, releases
leases and exits 0. A crash of an internal task stops the process with status 1 (systemd
restarts it). A database outage is waited out, not turned into a crash loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Collection, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import structlog
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from connectors.base import ClockAware, Connector, ConnectorFactory, MessageSource, Reconciler
from robot import (
    alerts,
    audit,
    maintenance,
    pipeline,
    poller,
    pools,
    restock,
    shops,
    supply,
    support,
)
from robot import suppliers as supplier_ops
from robot.clock import utcnow
from robot.config import RobotConfig, ShopConfig, check_pools, load_config, zone
from robot.db import (
    check_durability,
    database_errors,
    dialect_of,
    error_reason,
    make_engine,
    safe_url,
    start_error_is_transient,
)
from robot.errors import ConfigError, DatabaseUnavailable, Fatal, Unavailable
from robot.groupcommit import GroupCommit
from robot.http.links import pickup_url_hook
from robot.keys import check_keys, rebind_codes
from robot.log import get_logger
from robot.migrate import upgrade
from robot.notify import Notifications, build_notifiers
from robot.outbox import Dispatcher, RetryPolicy, pause_shop
from robot.registry import discover
from robot.restocker import Restocker
from robot.sourcing import Sourcer, SourcingPolicy
from robot.states import OrderState
from robot.vault import Vault, open_vault
from robot.writes import signal_of

if TYPE_CHECKING:
    from robot.http.server import HttpServer

log = get_logger(__name__)
_T = TypeVar("_T")

# Seconds between checks for due work when nothing woke us: TICK after work, growing to
# IDLE_TICK while the robot stays idle (an idle robot should cost next to no CPU). Work made
# in this process wakes its loops at once; work made elsewhere (a CLI replay, another
# robot's import) waits at most IDLE_TICK, and the write-back never sleeps past the
# shortest retry delay (backoff_initial).
TICK = 1.0
IDLE_TICK = 5.0
#: Seconds between two looks at the restocked pools while nothing is in progress.
RESTOCK_TICK = 5.0
# A shop's polling leader holds a lease this long and renews it every LEASE_RENEW seconds,
# whatever the shop's poll interval: when a leader dies, another process takes its shops
# over within LEASE_TTL + LEASE_RENEW seconds.
LEASE_TTL = timedelta(seconds=10)
LEASE_RENEW = 3.0
SWEEP_INTERVAL = 60.0
DB_RETRY = 5.0
# A shop's first reconciliation sweep runs this long after start (or sooner, with a shorter
# sweep_every): the first polls catch up first, and a robot that restarts often still sweeps.
FIRST_RECONCILE = 120.0
# A measured clock offset is written to the database when it moved by this much, crossed
# the limit, or was last written this long ago (so `robot status` and alerts stay current
# without a write per poll).
CLOCK_SAVE_DELTA = 1.0
CLOCK_SAVE_EVERY = timedelta(minutes=5)


@dataclass
class ShopHealth:
    """In-memory view of a shop, for logs that fire once per change and for /healthz."""

    broken: str | None = None  # connector failed to build: config or plugin problem
    last_error: str | None = None
    last_ok: datetime | None = None
    leader: bool = False  # this process holds the shop's polling lease
    clock_offset: float | None = None  # the platform's clock minus ours (s), last measured
    clock_off: bool = False  # |clock_offset| is past intake.max_clock_offset
    clock_saved: tuple[float, datetime] | None = None  # what the database holds


@dataclass
class Health:
    database_ok: bool = True
    database_error: str | None = None
    shops: dict[str, ShopHealth] = field(default_factory=dict)


def sqlite_lock(url: str) -> IO[bytes] | None:
    """Hold an exclusive lock beside a SQLite database: one robot process per file."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    lock_path = Path(parsed.database + ".lock")
    handle = lock_path.open("ab")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise Fatal(
            f"another robot process is already running on {parsed.database}; SQLite allows one. "
            "Stop it first, or use PostgreSQL/MySQL to run several processes."
        ) from None
    return handle


@dataclass
class Reload:
    """What a reload did, by shop name."""

    started: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)  # its file changed
    unchanged: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)  # its connector failed to build


def _pool_names(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return pools.pool_names(conn)


def _needs_restart(running: RobotConfig, new: RobotConfig) -> list[str]:
    """The robot file settings that differ in ``new`` and only apply at a start."""
    names = [f for f in ("database", "key_file", "timezone", "http", "alerts", "log",
                         "suppliers", "sourcing", "restock")
             if getattr(running, f) != getattr(new, f)]
    retry = ("max_attempts", "backoff_initial", "backoff_max")
    names += [f"defaults.{f}" for f in retry
              if getattr(running.defaults, f) != getattr(new.defaults, f)]
    return names


class Robot:
    """The daemon. ``prepare()`` does the blocking start-up; ``run()`` is the loop."""

    def __init__(self, config: RobotConfig, *, owner: str | None = None,
                 drain_timeout: float = 20.0) -> None:
        self.config = config
        #: The robot file's ``timezone:`` (a restart applies a change): days and times shown.
        self.zone = zone(config.timezone)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.drain_timeout = drain_timeout
        self.health = Health()
        self.connectors: dict[str, Connector] = {}
        self.shops: dict[str, ShopConfig] = {}
        self._engine: Engine | None = None
        self._vault: Vault | None = None
        self._lock: IO[bytes] | None = None
        self._stop = asyncio.Event()
        self._wake_alloc = asyncio.Event()
        self._wake_ship = asyncio.Event()
        self._dispatcher: Dispatcher | None = None
        self._notifications: Notifications | None = None
        #: Pushes taken in and write-back bookkeeping share transactions (robot.groupcommit).
        self._group: GroupCommit | None = None
        self._sourcer: Sourcer | None = None
        self._restocker: Restocker | None = None
        self._wake_source = asyncio.Event()
        self._wake_restock = asyncio.Event()
        #: Supplier clients by the robot file's name, and why broken ones are missing.
        self.suppliers: dict[str, Any] = {}
        self.broken_suppliers: dict[str, str] = {}
        self._jobs: set[asyncio.Task[Any]] = set()  # scheduled jobs running now
        self._shop_jobs: dict[str, set[asyncio.Task[Any]]] = {}  # the same, per shop
        self._scheduler: AsyncIOScheduler | None = None
        self._checker: alerts.AlertEngine | None = None
        self._reload_lock = asyncio.Lock()
        self._reloads: set[asyncio.Task[Any]] = set()
        #: SIGHUP came before the loop ran (``robot run`` notes it): reload once it runs.
        self.reload_requested = False
        self._held: dict[str, float] = {}  # shop -> monotonic time its lease is surely ours
        self._vacuum = False  # PostgreSQL with autovacuum off: vacuum the hot tables
        self.exit_code = 0
        self.http: HttpServer | None = None
        #: Alert readings kept in memory by parts of this process (the pickup lookup guard).
        self.alert_readings: list[Callable[[], alerts.Condition]] = []
        #: Called with (shop, "poll" | "refund") on every failed poll (the metrics counter).
        self.on_poll_error: Callable[[str, str], None] = lambda _shop, _kind: None
        #: Called with the reason each time start-up finds the database unavailable.
        self.on_database_wait: Callable[[str], None] = lambda _reason: None
        #: Seconds between attempts while the database is unavailable.
        self.db_retry = DB_RETRY
        self._start_stop = threading.Event()
        self._waited_since: float | None = None  # time.monotonic() start-up began waiting
        self._down_since = 0.0  # time.monotonic() when the current database outage was seen

    @property
    def engine(self) -> Engine:
        assert self._engine is not None, "prepare() first"
        return self._engine

    @property
    def group(self) -> GroupCommit:
        if self._group is None:
            self._group = GroupCommit(self.engine)
        return self._group

    @property
    def vault(self) -> Vault:
        assert self._vault is not None, "prepare() first"
        return self._vault

    # ------------------------------------------------------------------ start-up
    def _open_database(self, vault: Vault) -> set[str]:
        """Open, upgrade and check the database; returns the pool names it holds.

        Run through :meth:`_starting`, which waits out database errors; a durability
        setting, a wrong key file or a schema newer than this robot is fatal at once.
        """
        url = self.config.database
        self._lock = sqlite_lock(url)
        engine = make_engine(url)
        try:
            upgrade(engine)
            check_durability(engine)
            # A missing or wrong key file is fatal here, before anything is written under it.
            check_keys(engine, vault)
            # The audit log is sealed with the key file; chains of an older version are
            # re-sealed before anything is appended to them.
            audit.bind(engine, self.config.key_file)
            audit.upgrade_legacy(engine, actor="robot")
            audit.checkpoint_quietly(engine)
            self._vacuum = maintenance.autovacuum_off(engine)
            with engine.connect() as conn:
                existing = pools.pool_names(conn)
        except BaseException:
            engine.dispose()
            raise
        self._engine = engine
        return existing

    def _starting(self, step: Callable[[], _T]) -> _T:
        """Run a start-up step, waiting out the database as long as it takes.

        A server that is down or still starting, a session killed under us, a connection
        reset, a full disk: the reason is logged once when the wait starts
        (``database_unavailable_at_start``) and once when it ends (``database_recovered``),
        and the step is run again every ``db_retry`` seconds until it passes or the robot is
        stopped (then :class:`DatabaseUnavailable` is raised).
        """
        url = self.config.database
        while True:
            try:
                with database_errors(url):  # one clear line, password masked
                    result = step()
            except Exception as exc:
                if not start_error_is_transient(exc):
                    raise
                if self._lock is not None and self._engine is None:
                    self._lock.close()
                    self._lock = None
                reason = exc.message if isinstance(exc, Unavailable) else (
                    f"database {safe_url(url)} is unavailable: {error_reason(exc, url)}")
                if self._waited_since is None:
                    self._waited_since = time.monotonic()
                    log.error("database_unavailable_at_start", error=reason)
                self.on_database_wait(reason)
                if self._start_stop.wait(self.db_retry):
                    if isinstance(exc, Unavailable):
                        raise
                    raise DatabaseUnavailable(reason) from exc
                continue
            if self._waited_since is not None:
                log.info("database_recovered",
                         waited_s=round(time.monotonic() - self._waited_since, 1))
                self._waited_since = None
            return result

    def _connect(self, shop: ShopConfig,
                 factories: Mapping[str, ConnectorFactory]) -> Connector | None:
        """The shop's connector; None (logged, and kept in its health) when it fails."""
        health = self.health.shops.setdefault(shop.name, ShopHealth())
        health.broken = None
        factory = factories.get(shop.platform)
        if factory is None:
            health.broken = f"no connector for platform {shop.platform!r}"
            log.error("shop_broken", shop=shop.name, error=health.broken)
            return None
        try:
            context = shops.DbShopContext(self.engine, self.vault, shop.name)
            return factory.create(shop.platform_config, context)
        except Exception as exc:  # noqa: BLE001 - one broken shop never stops the others
            health.broken = f"{type(exc).__name__}: {exc}"
            log.error("shop_broken", shop=shop.name, error=health.broken)
            return None

    def _ensure_shop_rows(self) -> None:
        for name in self.shops:
            shops.ensure_row(self.engine, name)

    def _log_paused(self, names: Iterable[str] | None = None) -> None:
        """Say at every start which shops stay paused, and how to resume them: a paused shop
        neither polls nor ships, and nothing else in the log would say so again."""
        wanted = set(self.shops if names is None else names)
        for name, reason in shops.paused_shops(self.engine):
            if name in wanted:
                log.warning("shop_paused_at_start", shop=name, reason=reason,
                            resume=f"robot shops resume {name}")

    def stop_waiting(self) -> None:
        """Give up a start-up that is waiting for the database (prepare() re-raises)."""
        self._start_stop.set()

    @property
    def gave_up_waiting(self) -> bool:
        return self._start_stop.is_set()

    def prepare(self) -> None:
        """Open the vault and database, upgrade the schema, build every shop's connector."""
        vault = self._vault = open_vault(self.config.key_file)
        existing = self._starting(lambda: self._open_database(vault))
        # Codes written before the ciphertext bound its row's id are re-bound (resumable;
        # until then they still decrypt, and `robot keys status` counts them).
        self._starting(lambda: rebind_codes(self.engine, vault))
        if self._vacuum:
            log.warning("postgres_autovacuum_off", every_s=maintenance.INTERVAL,
                        detail="the server does not vacuum: the robot vacuums its own "
                        "hot tables")
        for missing in check_pools(self.config, existing):
            # Orders for such a SKU wait with the reason; every other line goes on.
            log.error("pool_missing", problem=missing)
        found = discover()
        for problem in found.problems:
            log.error("connector_load_failed", connector=problem.name, error=problem.error)
        for shop in self.config.shops:
            if not shop.enabled:
                continue
            connector = self._connect(shop, found.factories)
            if connector is not None:
                self.connectors[shop.name] = connector
                self.shops[shop.name] = shop
        self._starting(self._ensure_shop_rows)
        self._starting(self._log_paused)
        d = self.config.defaults
        policy = RetryPolicy(max_attempts=d.max_attempts, backoff_initial=d.backoff_initial,
                             backoff_max=d.backoff_max)
        self._notifications = Notifications(
            self.engine, self.vault, self.shops, build_notifiers(self.shops),
            # An SMTP session is several round trips, each with the notifier's own timeout;
            # past this the outcome is unknown (never resent blindly), so allow it time.
            call_timeout=max(policy.call_timeout, 120.0), lease=policy.lease)
        self._dispatcher = Dispatcher(
            self.engine, self.vault, self.connectors, self.shops, policy,
            worker=self.owner,
            pickup_url=pickup_url_hook(self.engine, self.vault, self.shops,
                                       self.config.http.public_url),
            notify=self._notifications, group=self.group,
        )
        self.suppliers, self.broken_suppliers = supplier_ops.build(
            self.config, self.engine, self.vault)
        self.supplier_readings = supplier_ops.Readings(
            self.engine, self.config.suppliers, self.config.sourcing.processing_alert_after)
        self.alert_readings.extend(self.supplier_readings.readers())
        self._sourcer = Sourcer(
            self.engine, self.vault, self.suppliers,
            SourcingPolicy(price_ttl=self.config.sourcing.price_ttl,
                           query_initial=self.config.sourcing.query_initial,
                           query_max=self.config.sourcing.query_max), worker=self.owner,
            on_allocated=self._ship_due, group=self.group)
        # With suppliers, even without rules: purchases a removed rule left open are still
        # queried to their end (their codes stocked, their budget released).
        if self.suppliers or self.config.restock:
            self._restocker = Restocker(
                self.engine, self.vault, self.suppliers, self.config.restock,
                SourcingPolicy(price_ttl=self.config.sourcing.price_ttl,
                               query_initial=self.config.sourcing.query_initial,
                               query_max=self.config.sourcing.query_max), worker=self.owner,
                zone=self.zone, balances=self.supplier_readings.balances, on_stocked=self.wake)
            self.alert_readings.extend(restock.readers(self.engine, self.config.restock))
        log.info("robot_ready", shops=sorted(self.shops), database=dialect_of(self.engine),
                 owner=self.owner, suppliers=sorted(self.suppliers))

    def http_task(self, sock: socket.socket | None = None
                  ) -> Callable[[], Coroutine[Any, Any, None]]:
        """The HTTP listener as a ``run(extra=[...])`` task; call after ``prepare()``.

        Binds ``http.listen`` now (or serves ``sock``), so a busy port fails at start-up.
        """
        from robot.http.address import parse_networks
        from robot.http.app import build_app  # the web stack loads only when serving
        from robot.http.context import HttpContext
        from robot.http.server import HttpServer, bind

        ctx = HttpContext(
            engine=self.engine, vault=self.vault, shops=self.shops, connectors=self.connectors,
            public_url=self.config.http.public_url, wake=self.wake, wake_for=self.wake_for,
            group=self.group,
            broken_shops=lambda: {n: h.broken for n, h in self.health.shops.items() if h.broken},
            timezone=self.config.timezone,
            trusted_proxies=parse_networks(self.config.http.trusted_proxies),
            clock_skewed=self.clock_skewed,
            max_clock_offset=self.config.intake.max_clock_offset,
            suppliers=self.suppliers, wake_sourcing=self.wake_sourcing,
        )
        self.alert_readings.append(ctx.guard.reading)
        self.on_poll_error = ctx.metrics.poll_error
        self.http = HttpServer(build_app(ctx), sock or bind(self.config.http.listen))
        server = self.http

        async def serve() -> None:
            await server.serve(self._stop)

        return serve

    # ------------------------------------------------------------------ the loop
    async def run(self, *, install_signals: bool = True,
                  extra: list[Callable[[], Coroutine[Any, Any, None]]] | None = None) -> int:
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        scheduler = self._scheduler = AsyncIOScheduler(timezone=UTC)
        for name in self.shops:
            self._schedule_shop(name)
        scheduler.add_job(self._renew_leases, "interval", seconds=LEASE_RENEW, id="leases",
                          coalesce=True, max_instances=1, misfire_grace_time=int(LEASE_RENEW))
        scheduler.add_job(self._sweep, "interval", seconds=SWEEP_INTERVAL, id="sweep",
                          coalesce=True, max_instances=1, misfire_grace_time=30,
                          next_run_time=datetime.now(UTC))
        # Buyer platforms (闲管家): goods changes they subscribed to, and orders a person
        # rejected or cancelled, are sent to them.
        scheduler.add_job(self._goods_notices, "interval", seconds=supply.GOODS_NOTICE_INTERVAL,
                          id="goods_notices", coalesce=True, max_instances=1,
                          misfire_grace_time=30)
        # Checkpoints of the audit chains (outside the database) follow the appends within
        # a second: what an attacker with the database could remove unseen.
        scheduler.add_job(self._checkpoint_audit, "interval", seconds=audit.CHECKPOINT_EVERY,
                          id="audit_checkpoint", coalesce=True, max_instances=1,
                          misfire_grace_time=5)
        if self.suppliers:
            scheduler.add_job(self._read_balances, "interval", seconds=supplier_ops.BALANCE_EVERY,
                              id="supplier_balances", coalesce=True, max_instances=1,
                              misfire_grace_time=60, next_run_time=datetime.now(UTC))
        if self._vacuum:
            scheduler.add_job(self._maintain, "interval", seconds=maintenance.INTERVAL,
                              id="vacuum", coalesce=True, max_instances=1,
                              misfire_grace_time=30)
        if self.config.alerts.targets:
            checker = self._checker = alerts.AlertEngine(
                self.engine, alerts.AppriseNotifier(self.config.alerts.targets),
                self.config.alerts, shops=[s.name for s in self.config.shops if s.enabled],
                extra=self.alert_readings,
                max_clock_offset=self.config.intake.max_clock_offset, zone=self.zone)
            scheduler.add_job(self._check_alerts, "interval", seconds=alerts.CHECK_INTERVAL,
                              args=[checker], id="alerts", coalesce=True, max_instances=1,
                              misfire_grace_time=30)
        scheduler.start()
        workers = [asyncio.create_task(self._allocator(), name="allocator"),
                   asyncio.create_task(self._shipper(), name="shipper"),
                   asyncio.create_task(self._sourcing(), name="sourcing")]
        if self._restocker is not None:
            workers.append(asyncio.create_task(self._restocking(), name="restocking"))
        workers += [asyncio.create_task(job(), name=f"extra-{i}")
                    for i, job in enumerate(extra or [])]
        for task in workers:
            task.add_done_callback(self._task_done)
        if self.reload_requested:
            self.request_reload()
        await self._stop.wait()
        log.info("robot_stopping", drain_timeout_s=self.drain_timeout)
        scheduler.shutdown(wait=False)
        _, pending = await asyncio.wait([*workers, *self._jobs], timeout=self.drain_timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self._close()
        log.info("robot_stopped", exit_code=self.exit_code)
        return self.exit_code

    def _schedule_shop(self, name: str) -> None:
        """Add the shop's polls (orders, refunds, pushed messages) to the scheduler."""
        assert self._scheduler is not None
        interval = self.shops[name].poll_interval_seconds
        common: dict[str, Any] = {"coalesce": True, "max_instances": 1,
                                  "misfire_grace_time": max(5, int(interval)),
                                  "next_run_time": datetime.now(UTC)}
        self._scheduler.add_job(self._poll, "interval", seconds=interval, args=[name, "poll"],
                                id=f"poll:{name}", **common)
        # Refunds change less often than orders arrive: poll them less often, up to 30 s.
        refund_every = max(interval, min(30.0, 5 * interval))
        self._scheduler.add_job(self._poll, "interval", seconds=refund_every,
                                args=[name, "refund"], id=f"refunds:{name}", **common)
        connector = self.connectors[name]
        if isinstance(connector, Reconciler):
            every = self.config.intake.sweep_every
            first = datetime.now(UTC) + timedelta(seconds=min(every, FIRST_RECONCILE))
            self._scheduler.add_job(self._reconcile, "interval", seconds=every, args=[name],
                                    id=f"reconcile:{name}", coalesce=True, max_instances=1,
                                    misfire_grace_time=max(5, int(every)), next_run_time=first)
        if isinstance(connector, MessageSource) and connector.pulls_messages:
            self._scheduler.add_job(self._pull_messages, "interval",
                                    seconds=min(interval, 5.0), args=[name],
                                    id=f"messages:{name}", **common)

    def _unschedule_shop(self, name: str) -> None:
        assert self._scheduler is not None
        for job_id in (f"poll:{name}", f"refunds:{name}", f"messages:{name}",
                       f"reconcile:{name}"):
            with contextlib.suppress(JobLookupError):
                self._scheduler.remove_job(job_id)

    # ------------------------------------------------------------------ reload
    def request_reload(self) -> None:
        """SIGHUP: read the shop files again (see :meth:`reload`), in the loop's own time."""
        if self._stop.is_set():
            return
        task = asyncio.get_running_loop().create_task(self.reload(), name="reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload(self) -> Reload | None:
        """Read the configuration again and apply its shops: added shops start, removed or
        disabled ones stop after their in-flight work, changed ones restart.

        A configuration with any problem is refused as a whole (``reload_refused`` lists
        every problem, as ``robot config check`` would) and the running shops stay as they
        were. Robot-level settings (database, key file, HTTP, alerts, retry policy, log)
        need a restart: a change to them is named in ``reload_needs_restart``.
        Returns what was done (None: refused).
        """
        async with self._reload_lock:
            log.info("reload_started", config=str(self.config.path))
            try:
                new = await asyncio.to_thread(load_config, self.config.path)
            except ConfigError as exc:
                log.error("reload_refused", problems=exc.problems,
                          detail="the running shops stay as they were")
                return None
            return await self._apply(new)

    async def _apply(self, new: RobotConfig) -> Reload:
        wanted = {s.name: s for s in new.shops if s.enabled}
        found = await asyncio.to_thread(discover)
        plan = Reload()
        built: dict[str, Connector] = {}
        for name, shop in wanted.items():
            if name in self.shops and self.shops[name] == shop:
                plan.unchanged.append(name)
                continue
            connector = await asyncio.to_thread(self._connect, shop, found.factories)
            if connector is None:
                plan.broken.append(name)  # a running shop keeps running as it was
                continue
            built[name] = connector
            (plan.restarted if name in self.shops else plan.started).append(name)
        plan.stopped = sorted(n for n in self.shops if n not in wanted)
        for name in [*plan.stopped, *plan.restarted]:
            await self._stop_shop(name, keep_health=name in plan.restarted)
        await self._reload_notifiers(plan, wanted)
        for name in [*plan.started, *plan.restarted]:
            self.shops[name] = wanted[name]
            self.connectors[name] = built[name]
            self.health.shops.setdefault(name, ShopHealth())
            await self._db(shops.ensure_row, self.engine, name)
            if not self._stop.is_set():
                self._schedule_shop(name)
        for name in list(self.health.shops):
            if name not in wanted:
                del self.health.shops[name]  # a removed broken shop is no longer broken
        self.config = self.config.model_copy(update={"shops": new.shops})
        if self._checker is not None:
            self._checker.shops = sorted(wanted)
        existing = await self._db(_pool_names, self.engine)
        for missing in check_pools(new.model_copy(update={
                "shops": [wanted[n] for n in [*plan.started, *plan.restarted]]}), existing):
            log.error("pool_missing", problem=missing)
        await self._db(self._log_paused, [*plan.started, *plan.restarted])
        restart = _needs_restart(self.config, new)
        if restart:
            log.warning("reload_needs_restart", settings=restart,
                        detail="these robot file settings apply at the next start")
        log.info("shops_reloaded", started=plan.started, stopped=plan.stopped,
                 restarted=plan.restarted, unchanged=plan.unchanged, broken=plan.broken)
        self.wake()
        return plan

    async def _reload_notifiers(self, plan: Reload, wanted: dict[str, ShopConfig]) -> None:
        """Stopped shops' notifiers closed; started and restarted shops' built anew."""
        if self._notifications is None:
            return
        for name in plan.stopped:
            await self._notifications.set_shop(name, None)
        for name in [*plan.started, *plan.restarted]:
            made = await asyncio.to_thread(build_notifiers, {name: wanted[name]})
            await self._notifications.set_shop(name, made.get(name))

    async def _stop_shop(self, name: str, *, keep_health: bool) -> None:
        """Stop polling the shop, let its running polls and write-backs finish (up to
        ``drain_timeout``), then close its connector and give up its lease."""
        self._unschedule_shop(name)
        connector = self.connectors.pop(name, None)
        self.shops.pop(name, None)  # from now on no new job of this shop starts
        if not keep_health:
            self.health.shops.pop(name, None)
        deadline = time.monotonic() + self.drain_timeout
        running = set(self._shop_jobs.get(name, ()))
        if running:
            await asyncio.wait(running, timeout=self.drain_timeout)
        while (self._dispatcher is not None and self._dispatcher.busy_with(name)
               and time.monotonic() < deadline):
            await asyncio.sleep(0.05)  # its write-backs end within the call timeout
        if connector is not None:
            with contextlib.suppress(Exception):
                await connector.aclose()
        self._held.pop(name, None)
        if not self._solo:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(shops.release_lease, self.engine, name, self.owner)
        log.info("shop_stopped", shop=name)

    def stop(self) -> None:
        self._stop.set()
        self._wake_alloc.set()
        self._wake_ship.set()

    def wake(self) -> None:
        """New orders or codes arrived: allocate and write back now rather than at the next
        tick (intake allocates what it can in its own transaction, and may have moved an
        order to sourcing)."""
        self._wake_alloc.set()
        self._ship_due()
        self._wake_source.set()

    def wake_for(self, taken: Collection[pipeline.IntakeResult]) -> None:
        """Orders were just taken in with these results: wake only the loops that have work
        for them. An order allocated at intake (a push's usual case) is the shipper's alone,
        handed to it by id; one moved to sourcing is the sourcing worker's; any other wakes
        every loop (:meth:`wake`)."""
        if not taken:
            return
        states = {t.state for t in taken}
        if states - {OrderState.ALLOCATED, OrderState.SOURCING}:
            self.wake()
            return
        self._ship_now(t.order_id for t in taken if t.state == OrderState.ALLOCATED)
        if OrderState.SOURCING in states:
            self._wake_source.set()

    def _ship_now(self, order_ids: Iterable[int | None]) -> None:
        """These orders were just allocated here: the shipper leases their jobs by order."""
        handed = [i for i in order_ids if i is not None]
        if handed:
            if self._dispatcher is not None:
                self._dispatcher.hand(handed)
            self._wake_ship.set()

    def _ship_due(self) -> None:
        """Jobs may be due that nobody handed over: the shipper scans for them now."""
        if self._dispatcher is not None:
            self._dispatcher.want_scan()
        self._wake_ship.set()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._stop.is_set():
            return
        exc = task.exception()
        log.error("internal_task_crashed", task=task.get_name(),
                  error=f"{type(exc).__name__}: {exc}" if exc else "returned early")
        self.exit_code = 1
        self.stop()

    async def _close(self) -> None:
        self._held.clear()
        for name in self.shops:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(shops.release_lease, self.engine, name, self.owner)
        for connector in self.connectors.values():
            with contextlib.suppress(Exception):
                await connector.aclose()
        if self._notifications is not None:
            await self._notifications.aclose()
        for client in self.suppliers.values():
            with contextlib.suppress(Exception):
                await client.aclose()
        await asyncio.to_thread(audit.checkpoint_quietly, self.engine)  # never raises
        self.release()

    async def _checkpoint_audit(self) -> None:
        await asyncio.to_thread(audit.checkpoint_due, self.engine)  # never raises

    def release(self) -> None:
        """Free what prepare() took: the database connections and the SQLite file lock."""
        if self._engine is not None:
            self._engine.dispose()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    async def _db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run database work in a thread; wait out outages instead of crashing."""
        failed = False
        while True:
            started = time.monotonic()
            try:
                result = await asyncio.to_thread(fn, *args, **kwargs)
            except DBAPIError as exc:  # OperationalError included
                failed = True
                await self._database_down(exc)
                continue
            if failed:
                self._maybe_recovered(started)
            return result

    def _maybe_recovered(self, started: float) -> None:
        """A call that had failed just went through: the outage is over, logged once —
        unless writes still fail (robot.writes). Reads that never failed prove nothing: on a
        full disk they succeed all along, and an outage ended by each of them would be
        logged again at the next failing write."""
        if (self.health.database_ok or started < self._down_since
                or signal_of(self.engine).failing):
            return
        log.info("database_recovered")
        self.health.database_ok = True
        self.health.database_error = None

    async def _database_down(self, exc: DBAPIError) -> None:
        """Record an outage (logged once, when it starts) and wait before the next attempt;
        re-raises when the robot is stopping. Only a call that succeeds ends the outage."""
        reason = error_reason(exc, self.config.database)  # e.g. the disk is full
        if self.health.database_ok:
            log.error("database_unavailable", error=reason)
            self._down_since = time.monotonic()
        self.health.database_ok = False
        self.health.database_error = reason
        if self._stop.is_set():
            raise exc
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), self.db_retry)

    async def _idle(self, event: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)
        event.clear()

    @staticmethod
    def _longer(tick: float, ceiling: float) -> float:
        """The next idle wait after an idle round: doubled, up to ``ceiling``."""
        return min(max(tick * 2, TICK), max(ceiling, TICK))

    async def _allocator(self) -> None:
        tick = TICK
        while not self._stop.is_set():
            found = 0
            while not self._stop.is_set():
                batch = await self._db(pipeline.allocate_due, self.engine, actor=self.owner)
                found += len(batch)
                # One hand-over per batch: the shipper leases the batch's jobs together.
                self._ship_now(r.order_id for r in batch if r.state == OrderState.ALLOCATED)
                if any(r.state == OrderState.SOURCING for r in batch):
                    self._wake_source.set()
                if len(batch) < pipeline.ALLOCATE_BATCH:
                    break
            woken = self._wake_alloc.is_set()
            tick = TICK if found or woken else self._longer(tick, IDLE_TICK)
            await self._idle(self._wake_alloc, tick)

    async def _shipper(self) -> None:
        assert self._dispatcher is not None
        ceiling = min(IDLE_TICK, self._dispatcher.policy.backoff_initial)
        tick = TICK
        failed = False
        while not self._stop.is_set():
            started = time.monotonic()
            scan = self._dispatcher.scan_due()
            try:
                # Orders allocated here are handed over and leased by order; the due-time
                # index is scanned once a second (or when asked), not on every round.
                ran = await self._dispatcher.run_once(scan=scan) \
                    if scan or self._dispatcher.handed else 0
            except DBAPIError as exc:
                failed = True
                await self._database_down(exc)
                ran = 0
            else:
                if failed:
                    self._maybe_recovered(started)
                    failed = not self.health.database_ok
            if not ran:
                tick = TICK if self._wake_ship.is_set() else self._longer(tick, ceiling)
                await self._idle(self._wake_ship, tick)
            else:
                tick = TICK

    async def _sourcing(self) -> None:
        """Buy for orders in ``sourcing`` (robot.sourcing): one round whenever woken, or
        every idle tick for purchases whose outcome is still coming."""
        assert self._sourcer is not None
        tick = TICK
        while not self._stop.is_set():
            try:
                ran = await self._sourcer.run_once()
            except DBAPIError as exc:
                await self._database_down(exc)
                ran = 0
            if not ran:
                tick = TICK if self._wake_source.is_set() else self._longer(tick, IDLE_TICK)
                await self._idle(self._wake_source, tick)
            else:
                tick = TICK

    async def _restocking(self) -> None:
        """Refill the pools that have a rule (robot.restock): watch their stock and run
        their purchases, every tick while purchases are in progress, else every few
        seconds (or when a supplier's callback wakes it)."""
        assert self._restocker is not None
        while not self._stop.is_set():
            try:
                ran = await self._restocker.run_once()
            except DBAPIError as exc:
                await self._database_down(exc)
                ran = 0
            await self._idle(self._wake_restock, TICK if ran else RESTOCK_TICK)

    async def _read_balances(self) -> None:
        """Read every supplier's balance for the low-balance alert (buys nothing)."""
        self._track_job()
        for name, client in self.suppliers.items():
            try:
                balance = await asyncio.wait_for(client.balance(), 30.0)
            except Exception as exc:  # noqa: BLE001 - a balance we cannot read is no alert by itself
                log.warning("supplier_balance_unreadable", supplier=name,
                            error=type(exc).__name__)
                continue
            self.supplier_readings.balances[name] = balance.available_cents

    def wake_sourcing(self) -> None:
        """Run the sourcing worker now (a supplier's callback said an order moved)."""
        self._wake_source.set()
        self._wake_restock.set()

    # ------------------------------------------------------------------ scheduled jobs
    def _track_job(self, shop: str | None = None) -> None:
        """Remember the running job so that stop() (or stopping its ``shop``) lets it finish
        instead of cutting it off."""
        task = asyncio.current_task()
        if task is not None:
            self._jobs.add(task)
            task.add_done_callback(self._jobs.discard)
            if shop is not None:
                mine = self._shop_jobs.setdefault(shop, set())
                mine.add(task)
                task.add_done_callback(mine.discard)

    async def _poll(self, shop_name: str, kind: str) -> None:
        """One polling job. Its context is bound once (shop, poll): every line logged in it,
        here and in the poller, pipeline and connector it calls, carries them."""
        with structlog.contextvars.bound_contextvars(shop=shop_name, poll=kind):
            shop = self.shops.get(shop_name)
            connector = self.connectors.get(shop_name)
            if self._stop.is_set() or shop is None or connector is None:
                return  # stopping, or the shop was stopped by a reload
            self._track_job(shop_name)
            if not await self._lead(shop_name):
                return  # another process is this shop's polling leader
            start = await self._db(shops.poll_start, self.engine, shop_name, kind)
            if start.paused:
                return
            try:
                outcome = await poller.poll_shop(
                    self.engine, shop, connector, kind,
                    now=lambda: datetime.now(UTC), owner=None if self._solo else self.owner,
                    db=self._db, should_stop=self._stop.is_set, start=start, zone=self.zone,
                )
            except asyncio.CancelledError:
                # Only stop() cancels a poll (after the drain timeout): the cursor did not move,
                # so the next start repeats this step.
                log.info("poll_cancelled")
                return
            self._record_poll(shop_name, kind, outcome.ok, outcome.error, outcome.paused)
            await self._watch_clock(shop_name)
            if outcome.created or (kind == "refund" and outcome.seen):
                if outcome.created:
                    log.info("orders_received", count=outcome.created)
                self.wake()

    async def _reconcile(self, shop_name: str) -> None:
        """The shop's reconciliation sweep, by its polling leader; moves no cursor."""
        with structlog.contextvars.bound_contextvars(shop=shop_name, poll="sweep"):
            if self._stop.is_set():
                return
            self._track_job()
            if not await self._lead(shop_name):
                return
            if (await self._db(shops.poll_start, self.engine, shop_name)).paused:
                return
            lookback = timedelta(seconds=self.config.intake.sweep_lookback)
            try:
                outcome = await poller.reconcile_shop(
                    self.engine, self.shops[shop_name], self.connectors[shop_name],
                    now=datetime.now(UTC), period=lookback, db=self._db, zone=self.zone)
            except asyncio.CancelledError:
                log.info("sweep_cancelled")
                return
            if not outcome.ok:
                log.warning("sweep_failed", error=outcome.error)
            else:
                log.info("sweep_done", listed=outcome.listed,
                         missing=outcome.missing, created=outcome.created)
            await self._watch_clock(shop_name)
            if outcome.created:
                self.wake()

    def clock_skewed(self) -> dict[str, float]:
        """Shops whose platform clock is past ``intake.max_clock_offset`` from ours, with
        the offset in seconds (platform minus ours)."""
        return {name: h.clock_offset for name, h in self.health.shops.items()
                if h.clock_off and h.clock_offset is not None}

    async def _watch_clock(self, shop_name: str) -> None:
        """Note the platform's clock offset as the connector last measured it: logged once
        when it passes the limit and once when it is back, kept for /healthz, and written
        to the database (for `robot status` and alerts) when it changed. Called inside a
        polling job, whose bound context names the shop in the log lines."""
        connector = self.connectors[shop_name]
        if not isinstance(connector, ClockAware):
            return
        reading = connector.clock_reading()
        if reading is None:
            return
        health = self.health.shops[shop_name]
        limit = self.config.intake.max_clock_offset
        offset = reading.offset_seconds
        off = abs(offset) > limit
        if off and not health.clock_off:
            log.warning("clock_offset_large", offset_s=offset, limit_s=limit,
                        corrected=reading.applied,
                        detail="the platform's clock differs from this machine's; polling "
                        "windows follow the platform's clock" if reading.applied else
                        "too far off to correct for: check this machine's clock (NTP)")
        elif health.clock_off and not off:
            log.info("clock_offset_recovered", offset_s=offset, limit_s=limit)
        health.clock_offset, health.clock_off = offset, off
        now = utcnow()
        saved = health.clock_saved
        if (saved is None or abs(saved[0] - offset) >= CLOCK_SAVE_DELTA
                or (abs(saved[0]) > limit) != off or now - saved[1] >= CLOCK_SAVE_EVERY):
            await self._db(shops.save_clock, self.engine, shop_name, offset, now)
            health.clock_saved = (offset, now)

    @property
    def _solo(self) -> bool:
        """SQLite: this process is the only robot on the database (it holds the file lock,
        see :func:`sqlite_lock`), so it leads every shop without writing leases."""
        return self._lock is not None

    async def _lead(self, shop_name: str) -> bool:
        """Take or keep the shop's polling lease; False if another process leads it.

        A lease taken less than half its TTL ago is still ours (nobody may take it before
        it expires): the poll goes ahead without writing to the database."""
        if self._solo:
            return True
        if time.monotonic() < self._held.get(shop_name, 0.0):
            return True
        led = bool(await self._db(shops.take_lease, self.engine, shop_name, self.owner,
                                  LEASE_TTL))
        self._hold({shop_name} if led else set(), [shop_name])
        return led

    def _hold(self, led: set[str], asked: list[str]) -> None:
        """Remember until when the leases just taken (``led`` of ``asked``) are ours."""
        until = time.monotonic() + LEASE_TTL.total_seconds() / 2
        for name in asked:
            if name in led:
                self._held[name] = until
            else:
                self._held.pop(name, None)

    async def _renew_leases(self) -> None:
        """Keep the shops we lead, and take over those whose leader stopped renewing (one
        transaction for all shops)."""
        if self._stop.is_set():
            return
        self._track_job()
        if self._dispatcher is not None and self._dispatcher.busy:
            await self._db(self._dispatcher.renew)
        if self._sourcer is not None:
            await self._db(self._sourcer.renew)
        names = list(self.shops)
        if self._solo:
            led = set(names)
        else:
            led = await self._db(shops.take_leases, self.engine, names, self.owner, LEASE_TTL)
            self._hold(led, names)
        for name in names:
            health = self.health.shops.get(name)
            if health is None:
                continue  # stopped by a reload meanwhile
            if name in led and not health.leader:
                log.info("shop_lease_taken", shop=name, owner=self.owner)
            health.leader = name in led

    async def _pull_messages(self, shop_name: str) -> None:
        """Apply the platform's queued messages (Taobao TMC), then confirm them."""
        with structlog.contextvars.bound_contextvars(shop=shop_name, poll="messages"):
            connector = self.connectors.get(shop_name)
            shop = self.shops.get(shop_name)
            if self._stop.is_set() or shop is None or not isinstance(connector, MessageSource):
                return
            self._track_job(shop_name)
            if (await self._db(shops.poll_start, self.engine, shop_name)).paused:
                return
            try:
                applied = await poller.consume_messages(self.engine, shop, connector, connector,
                                                        db=self._db, zone=self.zone)
            except Fatal as exc:
                await self._db(pause_shop, self.engine, shop_name, exc.message)
                self._record_poll(shop_name, "messages", False, exc.message, True)
                return
            except Exception as exc:  # noqa: BLE001 - a failed pull is retried at the next tick
                self._record_poll(shop_name, "messages", False, f"{type(exc).__name__}: {exc}",
                                  False)
                return
            self._record_poll(shop_name, "messages", True, None, False)
            if applied:
                self.wake()

    def _record_poll(self, shop_name: str, kind: str, ok: bool, error: str | None,
                     paused: bool) -> None:
        """Log a failure once when it starts and once when it clears, not on every poll."""
        health = self.health.shops.get(shop_name)
        if health is None:
            return  # stopped by a reload meanwhile
        bound = log.bind(shop=shop_name, poll=kind)
        if paused:
            bound.error("shop_paused", error=error)
        elif not ok:
            self.on_poll_error(shop_name, kind)
            if health.last_error != error:
                bound.warning("poll_failed", error=error)
        elif health.last_error is not None:
            bound.info("poll_recovered")
        health.last_error = None if ok else error
        if ok:
            health.last_ok = utcnow()

    async def _sweep(self) -> None:
        if self._stop.is_set():
            return
        self._track_job()
        now = utcnow()
        expired = await self._db(pools.expire_codes, self.engine, now)
        if expired:
            log.info("codes_expired", count=expired)
        await self._db(pools.cleanup_stale_imports, self.engine)
        await self._db(pipeline.wake_waiting, self.engine, now=now)
        # Replacement codes a person asked for while stock was short (robot orders redeliver).
        served = await self._db(support.fulfil_replacements, self.engine, now=now,
                                actor=self.owner)
        if served:
            log.info("replacements_served", count=served)
        self.wake()

    async def _goods_notices(self) -> None:
        if self._stop.is_set():
            return
        self._track_job()
        try:
            await supply.notify_goods_changes(self.engine, self.vault, self.shops,
                                              self.connectors, zone=self.zone,
                                              suppliers=self.suppliers.keys())
            await supply.notify_failures(self.engine, self.connectors)
        except DBAPIError as exc:  # the next run tries again; the allocator reports outages
            log.warning("goods_notices_deferred", error=type(exc).__name__)

    async def _maintain(self) -> None:
        if self._stop.is_set():
            return
        self._track_job()
        await self._db(maintenance.vacuum_hot_tables, self.engine)

    async def _check_alerts(self, checker: alerts.AlertEngine) -> None:
        if self._stop.is_set():
            return
        self._track_job()
        await self._db(checker.run_once, utcnow())
