"""``robot run``: one asyncio process that takes orders in, allocates and writes back.

Inside one event loop:

* an APScheduler 3.x ``AsyncIOScheduler`` is the timer: per-shop polls (orders, refunds) and
  periodic sweeps (expire codes, wake orders waiting for stock, clean crashed imports). It is
  never the lock: polling a shop needs the shop's lease row, everything else is claimed row
  by row in the database, so a second process running the same jobs is harmless;
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
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from connectors.base import Connector, MessageSource
from robot import alerts, maintenance, pipeline, poller, pools, shops, support
from robot.clock import utcnow
from robot.config import RobotConfig, ShopConfig, check_pools
from robot.db import check_durability, database_errors, dialect_of, error_reason, make_engine
from robot.errors import Fatal, Unavailable
from robot.http.links import pickup_url_hook
from robot.keys import check_keys
from robot.log import get_logger
from robot.migrate import upgrade
from robot.outbox import Dispatcher, RetryPolicy, pause_shop
from robot.registry import discover
from robot.vault import Vault, open_vault

if TYPE_CHECKING:
    from robot.http.server import HttpServer

log = get_logger(__name__)

# Seconds between checks for due work when nothing woke us: TICK after work, growing to
# IDLE_TICK while the robot stays idle (an idle robot should cost next to no CPU). Work made
# in this process wakes its loops at once; work made elsewhere (a CLI replay, another
# robot's import) waits at most IDLE_TICK, and the write-back never sleeps past the
# shortest retry delay (backoff_initial).
TICK = 1.0
IDLE_TICK = 5.0
# A shop's polling leader holds a lease this long and renews it every LEASE_RENEW seconds,
# whatever the shop's poll interval: when a leader dies, another process takes its shops
# over within LEASE_TTL + LEASE_RENEW seconds.
LEASE_TTL = timedelta(seconds=10)
LEASE_RENEW = 3.0
SWEEP_INTERVAL = 60.0
DB_RETRY = 5.0


@dataclass
class ShopHealth:
    """In-memory view of a shop, for logs that fire once per change and for /healthz."""

    broken: str | None = None  # connector failed to build: config or plugin problem
    last_error: str | None = None
    last_ok: datetime | None = None
    leader: bool = False  # this process holds the shop's polling lease


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


class Robot:
    """The daemon. ``prepare()`` does the blocking start-up; ``run()`` is the loop."""

    def __init__(self, config: RobotConfig, *, owner: str | None = None,
                 drain_timeout: float = 20.0) -> None:
        self.config = config
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
        self._jobs: set[asyncio.Task[Any]] = set()  # scheduled jobs running now
        self._held: dict[str, float] = {}  # shop -> monotonic time its lease is surely ours
        self._vacuum = False  # PostgreSQL with autovacuum off: vacuum the hot tables
        self.exit_code = 0
        self.http: HttpServer | None = None
        #: Called with (shop, "poll" | "refund") on every failed poll (the metrics counter).
        self.on_poll_error: Callable[[str, str], None] = lambda _shop, _kind: None
        #: Called with the reason each time start-up finds the database unavailable.
        self.on_database_wait: Callable[[str], None] = lambda _reason: None
        #: Seconds between attempts while the database is unavailable.
        self.db_retry = DB_RETRY
        self._start_stop = threading.Event()
        self._down_since = 0.0  # time.monotonic() when the current database outage was seen

    @property
    def engine(self) -> Engine:
        assert self._engine is not None, "prepare() first"
        return self._engine

    @property
    def vault(self) -> Vault:
        assert self._vault is not None, "prepare() first"
        return self._vault

    # ------------------------------------------------------------------ start-up
    def _open_database(self, vault: Vault) -> None:
        """Open, upgrade and check the database, waiting for one that is not there yet.

        A server that is down or still starting, or a full disk, is waited for (the reason
        logged once, then every minute) until it answers or the robot is stopped; anything
        else (a durability setting, a wrong key file) is fatal at once.
        """
        url = self.config.database
        waited = 0.0
        while True:
            try:
                with database_errors(url):  # one clear line, password masked
                    self._lock = sqlite_lock(url)
                    engine = make_engine(url)
                    try:
                        upgrade(engine)
                        check_durability(engine)
                        # A missing or wrong key file is fatal here, before anything is
                        # written under it.
                        check_keys(engine, vault)
                        self._vacuum = maintenance.autovacuum_off(engine)
                    except BaseException:
                        engine.dispose()
                        raise
                self._engine = engine
                if self._vacuum:
                    log.warning("postgres_autovacuum_off", every_s=maintenance.INTERVAL,
                                detail="the server does not vacuum: the robot vacuums its own "
                                "hot tables")
                if waited:
                    log.info("database_recovered", waited_s=round(waited, 1))
                return
            except Unavailable as exc:  # DatabaseUnavailable or DiskFull
                if self._lock is not None:
                    self._lock.close()
                    self._lock = None
                if waited == 0 or waited // 60 != (waited + self.db_retry) // 60:
                    log.error("database_unavailable_at_start", error=exc.message,
                              waited_s=round(waited, 1))
                self.on_database_wait(exc.message)
                if self._start_stop.wait(self.db_retry):
                    raise
                waited += self.db_retry

    def stop_waiting(self) -> None:
        """Give up a start-up that is waiting for the database (prepare() re-raises)."""
        self._start_stop.set()

    @property
    def gave_up_waiting(self) -> bool:
        return self._start_stop.is_set()

    def prepare(self) -> None:
        """Open the vault and database, upgrade the schema, build every shop's connector."""
        self._vault = open_vault(self.config.key_file)
        self._open_database(self._vault)
        with self.engine.connect() as conn:
            existing = pools.pool_names(conn)
        for missing in check_pools(self.config, existing):
            # Orders for such a SKU wait with the reason; every other line goes on.
            log.error("pool_missing", problem=missing)
        found = discover()
        for problem in found.problems:
            log.error("connector_load_failed", connector=problem.name, error=problem.error)
        for shop in self.config.shops:
            if not shop.enabled:
                continue
            health = self.health.shops.setdefault(shop.name, ShopHealth())
            factory = found.factories.get(shop.platform)
            if factory is None:
                health.broken = f"no connector for platform {shop.platform!r}"
                log.error("shop_broken", shop=shop.name, error=health.broken)
                continue
            try:
                context = shops.DbShopContext(self.engine, self.vault, shop.name)
                self.connectors[shop.name] = factory.create(shop.platform_config, context)
            except Exception as exc:  # noqa: BLE001 - one broken shop never stops the others
                health.broken = f"{type(exc).__name__}: {exc}"
                log.error("shop_broken", shop=shop.name, error=health.broken)
                continue
            self.shops[shop.name] = shop
            shops.ensure_row(self.engine, shop.name)
        d = self.config.defaults
        self._dispatcher = Dispatcher(
            self.engine, self.vault, self.connectors, self.shops,
            RetryPolicy(max_attempts=d.max_attempts, backoff_initial=d.backoff_initial,
                        backoff_max=d.backoff_max),
            worker=self.owner,
            pickup_url=pickup_url_hook(self.engine, self.vault, self.shops,
                                       self.config.http.public_url),
        )
        log.info("robot_ready", shops=sorted(self.shops), database=dialect_of(self.engine),
                 owner=self.owner)

    def http_task(self, sock: socket.socket | None = None
                  ) -> Callable[[], Coroutine[Any, Any, None]]:
        """The HTTP listener as a ``run(extra=[...])`` task; call after ``prepare()``.

        Binds ``http.listen`` now (or serves ``sock``), so a busy port fails at start-up.
        """
        from robot.http.app import build_app  # the web stack loads only when serving
        from robot.http.context import HttpContext
        from robot.http.server import HttpServer, bind

        ctx = HttpContext(
            engine=self.engine, vault=self.vault, shops=self.shops, connectors=self.connectors,
            public_url=self.config.http.public_url, wake=self.wake,
            broken_shops=lambda: {n: h.broken for n, h in self.health.shops.items() if h.broken},
        )
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
        scheduler = AsyncIOScheduler(timezone=UTC)
        for name, shop in self.shops.items():
            interval = shop.poll_interval_seconds
            common: dict[str, Any] = {"coalesce": True, "max_instances": 1,
                                      "misfire_grace_time": max(5, int(interval)),
                                      "next_run_time": datetime.now(UTC)}
            scheduler.add_job(self._poll, "interval", seconds=interval, args=[name, "poll"],
                              id=f"poll:{name}", **common)
            # Refunds change less often than orders arrive: poll them less often, up to 30 s.
            refund_every = max(interval, min(30.0, 5 * interval))
            scheduler.add_job(self._poll, "interval", seconds=refund_every,
                              args=[name, "refund"], id=f"refunds:{name}", **common)
            connector = self.connectors[name]
            if isinstance(connector, MessageSource) and connector.pulls_messages:
                scheduler.add_job(self._pull_messages, "interval", seconds=min(interval, 5.0),
                                  args=[name], id=f"messages:{name}", **common)
        scheduler.add_job(self._renew_leases, "interval", seconds=LEASE_RENEW, id="leases",
                          coalesce=True, max_instances=1, misfire_grace_time=int(LEASE_RENEW))
        scheduler.add_job(self._sweep, "interval", seconds=SWEEP_INTERVAL, id="sweep",
                          coalesce=True, max_instances=1, misfire_grace_time=30,
                          next_run_time=datetime.now(UTC))
        if self._vacuum:
            scheduler.add_job(self._maintain, "interval", seconds=maintenance.INTERVAL,
                              id="vacuum", coalesce=True, max_instances=1,
                              misfire_grace_time=30)
        if self.config.alerts.targets:
            checker = alerts.AlertEngine(
                self.engine, alerts.AppriseNotifier(self.config.alerts.targets),
                self.config.alerts, shops=[s.name for s in self.config.shops if s.enabled])
            scheduler.add_job(self._check_alerts, "interval", seconds=alerts.CHECK_INTERVAL,
                              args=[checker], id="alerts", coalesce=True, max_instances=1,
                              misfire_grace_time=30)
        scheduler.start()
        workers = [asyncio.create_task(self._allocator(), name="allocator"),
                   asyncio.create_task(self._shipper(), name="shipper")]
        workers += [asyncio.create_task(job(), name=f"extra-{i}")
                    for i, job in enumerate(extra or [])]
        for task in workers:
            task.add_done_callback(self._task_done)
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

    def stop(self) -> None:
        self._stop.set()
        self._wake_alloc.set()
        self._wake_ship.set()

    def wake(self) -> None:
        """New orders or codes arrived: allocate and write back now rather than at the next
        tick (intake allocates what it can in its own transaction)."""
        self._wake_alloc.set()
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
        self.release()

    def release(self) -> None:
        """Free what prepare() took: the database connections and the SQLite file lock."""
        if self._engine is not None:
            self._engine.dispose()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    async def _db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run database work in a thread; wait out outages instead of crashing."""
        while True:
            started = time.monotonic()
            try:
                result = await asyncio.to_thread(fn, *args, **kwargs)
            except DBAPIError as exc:  # OperationalError included
                await self._database_down(exc)
                continue
            # A call already under way when the outage was noticed proves nothing.
            if not self.health.database_ok and started >= self._down_since:
                log.info("database_recovered")
                self.health.database_ok = True
                self.health.database_error = None
            return result

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
                result = await self._db(pipeline.allocate_next, self.engine, actor=self.owner)
                if result is None:
                    break
                found += 1
                if result.state == "allocated":
                    self._wake_ship.set()
            woken = self._wake_alloc.is_set()
            tick = TICK if found or woken else self._longer(tick, IDLE_TICK)
            await self._idle(self._wake_alloc, tick)

    async def _shipper(self) -> None:
        assert self._dispatcher is not None
        ceiling = min(IDLE_TICK, self._dispatcher.policy.backoff_initial)
        tick = TICK
        while not self._stop.is_set():
            try:
                ran = await self._dispatcher.run_once()
            except DBAPIError as exc:
                await self._database_down(exc)
                ran = 0
            if not ran:
                tick = TICK if self._wake_ship.is_set() else self._longer(tick, ceiling)
                await self._idle(self._wake_ship, tick)
            else:
                tick = TICK

    # ------------------------------------------------------------------ scheduled jobs
    def _track_job(self) -> None:
        """Remember the running job so that stop() lets it finish instead of cutting it off."""
        task = asyncio.current_task()
        if task is not None:
            self._jobs.add(task)
            task.add_done_callback(self._jobs.discard)

    async def _poll(self, shop_name: str, kind: str) -> None:
        if self._stop.is_set():
            return
        self._track_job()
        shop = self.shops[shop_name]
        if not await self._lead(shop_name):
            return  # another process is this shop's polling leader
        start = await self._db(shops.poll_start, self.engine, shop_name, kind)
        if start.paused:
            return
        try:
            outcome = await poller.poll_shop(
                self.engine, shop, self.connectors[shop_name], kind,
                now=lambda: datetime.now(UTC), owner=None if self._solo else self.owner,
                db=self._db, should_stop=self._stop.is_set, start=start,
            )
        except asyncio.CancelledError:
            # Only stop() cancels a poll (after the drain timeout): the cursor did not move,
            # so the next start repeats this step.
            log.info("poll_cancelled", shop=shop_name, poll=kind)
            return
        self._record_poll(shop_name, kind, outcome.ok, outcome.error, outcome.paused)
        if outcome.created or (kind == "refund" and outcome.seen):
            if outcome.created:
                log.info("orders_received", shop=shop_name, poll=kind, count=outcome.created)
            self.wake()

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
        names = list(self.shops)
        if self._solo:
            led = set(names)
        else:
            led = await self._db(shops.take_leases, self.engine, names, self.owner, LEASE_TTL)
            self._hold(led, names)
        for name in names:
            health = self.health.shops[name]
            if name in led and not health.leader:
                log.info("shop_lease_taken", shop=name, owner=self.owner)
            health.leader = name in led

    async def _pull_messages(self, shop_name: str) -> None:
        """Apply the platform's queued messages (Taobao TMC), then confirm them."""
        if self._stop.is_set():
            return
        self._track_job()
        connector = self.connectors[shop_name]
        if not isinstance(connector, MessageSource):
            return
        if (await self._db(shops.poll_start, self.engine, shop_name)).paused:
            return
        try:
            applied = await poller.consume_messages(self.engine, self.shops[shop_name], connector,
                                                    connector, db=self._db)
        except Fatal as exc:
            await self._db(pause_shop, self.engine, shop_name, exc.message)
            self._record_poll(shop_name, "messages", False, exc.message, True)
            return
        except Exception as exc:  # noqa: BLE001 - a failed pull is retried at the next tick
            self._record_poll(shop_name, "messages", False, f"{type(exc).__name__}: {exc}", False)
            return
        self._record_poll(shop_name, "messages", True, None, False)
        if applied:
            self.wake()

    def _record_poll(self, shop_name: str, kind: str, ok: bool, error: str | None,
                     paused: bool) -> None:
        """Log a failure once when it starts and once when it clears, not on every poll."""
        health = self.health.shops[shop_name]
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
