"""``robot demo``: the robot's real daemon against local fakes of every built-in platform.

Everything is throw-away: a temporary directory with a SQLite database, a fresh key file,
two pools of generated codes (imported through the real importer), and one shop per platform
whose fake runs on loopback. A stream of paid orders arrives — normal ones, bundles,
duplicates (a second payment notice or an overlapping poll), lines for unknown SKUs, and
refunds of orders still waiting for stock — with platform faults injected on the way. The
daemon takes them in, allocates and ships; a live table shows it happen.

Each plugin whose factory has ``demo_driver()`` contributes a driver
(:class:`connectors.plugin.DemoDriver`), found through the entry points like the connector.
A driver whose platform sells in live-stream bursts says how many orders one burst brings
(its ``burst`` attribute, e.g. 抖店): after the stream, those orders are paid at full speed,
and the summary tells how long the robot took to ship them all.
Expected outcomes are decided up front, so the run can be judged: ``shipped`` must equal
the orders that should ship, held/cancelled likewise, and no code may sit in two deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import shutil
import signal
import socket
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.live import Live
from rich.table import Table
from sqlalchemy import Engine, func, select

from connectors.plugin import DemoDriver, HasDemo
from robot import audit, demosupply, poolpage, pools
from robot import orders as order_ops
from robot.config import RobotConfig, load_config
from robot.daemon import Robot
from robot.db import make_engine
from robot.http.links import pickup_url_hook
from robot.log import configure_logging
from robot.migrate import upgrade
from robot.registry import discover
from robot.schema import deliveries, orders, stock
from robot.states import OrderState
from robot.vault import init_key_file, open_vault

POOL_MAIN = "vip-month"
POOL_BONUS = "game-card-50"
POOL_PREORDER = "preorder"  # stays empty: its orders wait for stock, then get refunded
SKU_MAIN = "SKU-VIP-MONTH"
SKU_BUNDLE = "SKU-VIP-BUNDLE"
SKU_PREORDER = "SKU-PREORDER"
SKU_UNKNOWN = "SKU-NOT-MAPPED"


@dataclass
class Expectation:
    ship: set[tuple[str, str]] = field(default_factory=set)  # (shop, platform order id)
    hold: set[tuple[str, str]] = field(default_factory=set)
    cancel: set[tuple[str, str]] = field(default_factory=set)
    preorders: list[tuple[DemoDriver, str, str]] = field(default_factory=list)
    #: top-ups waiting for their account (held; the demo's customer service gives it)
    topups: list[tuple[str, str]] = field(default_factory=list)
    topups_placed: int = 0  # every top-up order, with its account or without
    topups_held: int = 0  # of those, placed without a message (held for their account)
    cards: bool = False  # the supplier-bought card SKU is on sale

    @property
    def total(self) -> int:
        return len(self.ship) + len(self.hold) + len(self.cancel) + len(self.topups)


def load_drivers(only: list[str] | None = None) -> list[DemoDriver]:
    """A driver for every installed platform that ships one (the in-memory one last)."""
    drivers: list[DemoDriver] = []
    for platform, factory in sorted(discover().factories.items()):
        if only and platform not in only:
            continue
        driver = factory.demo_driver() if isinstance(factory, HasDemo) else None
        if driver is not None:
            drivers.append(driver)
    real = [d for d in drivers if d.platform != "memory"]
    return real or drivers


def _write_codes(path: Path, prefix: str, count: int) -> None:
    with path.open("w", encoding="utf-8") as fh:
        fh.write("code,cost\n")
        for _ in range(count):
            fh.write(f"{prefix}-{secrets.token_hex(6).upper()},9.90\n")


def _write_config(root: Path, drivers: list[DemoDriver], platform_configs: list[dict[str, Any]],
                  listen: str, suppliers: dict[str, Any] | None = None,
                  extra_items: list[list[dict[str, Any]]] | None = None,
                  restock: dict[str, Any] | None = None) -> Path:
    (root / "shops").mkdir()
    robot_file = {
        "database": "sqlite:///robot.db",
        "key_file": "robot.key",
        "shops": "shops/*.yaml",
        "http": {"listen": listen, "public_url": f"http://{listen}"},
        "defaults": {"poll_interval": 1, "backoff_initial": 0.2, "backoff_max": 2,
                     "max_attempts": 8},
        "log": {"level": "error", "format": "json"},
    }
    if suppliers:
        robot_file["suppliers"] = suppliers
        robot_file["sourcing"] = {"query_initial": 0.2, "query_max": 1}
    if restock:
        robot_file["restock"] = restock
    (root / "robot.yaml").write_text(yaml.safe_dump(robot_file, sort_keys=False,
                                                    allow_unicode=True))
    write_shops(root / "shops", drivers, platform_configs, extra_items)
    return root / "robot.yaml"


def shop_name(driver: DemoDriver) -> str:
    return f"{driver.platform}-demo"


#: Codes each SKU of a demo shop takes per unit ordered.
CODES_PER_UNIT = {SKU_MAIN: 1, SKU_BUNDLE: 3, SKU_PREORDER: 1}


def write_shops(directory: Path, drivers: list[DemoDriver],
                platform_configs: list[dict[str, Any]],
                extra_items: list[list[dict[str, Any]]] | None = None) -> None:
    """One shop file per driver, selling the demo SKUs (also used by the chaos suite);
    ``extra_items``: more mappings per driver (the supplier SKUs)."""
    extras = extra_items or [[] for _ in drivers]
    for driver, platform_config, more in zip(drivers, platform_configs, extras, strict=True):
        key = driver.sku_key
        # A platform that buys from the robot (闲管家) also needs each goods' price.
        extra = dict(getattr(driver, "item_extra", {}))
        shop = {
            "name": shop_name(driver),
            "platform": driver.platform,
            "unmapped": "hold",
            "items": [
                {key: SKU_MAIN, "pool": POOL_MAIN, "quantity": 1, **extra},
                {key: SKU_BUNDLE, "pools": [{"pool": POOL_MAIN, "quantity": 1},
                                            {"pool": POOL_BONUS, "quantity": 2}], **extra},
                {key: SKU_PREORDER, "pool": POOL_PREORDER, "quantity": 1, **extra},
                *more,
            ],
            "platform_config": platform_config,
            "display_name": f"{driver.platform} 演示店 demo shop",
            "contact": {"text": "客服 demo@example.com", "url": "mailto:demo@example.com"},
        }
        path = directory / f"{driver.platform}.yaml"
        path.write_text(yaml.safe_dump(shop, sort_keys=False))


def _free_listen() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@dataclass
class Summary:
    orders: int
    shipped: int
    cancelled: int
    failed: int
    held: int
    waiting_stock: int
    duplicate_codes: int
    per_platform: dict[str, dict[str, int]]
    p50_ms: float | None
    p99_ms: float | None
    platform_shipments_doubled: int
    faults_injected: int
    expected: dict[str, int]
    ok: bool
    directory: str | None = None
    pickup_example: str | None = None
    #: Per platform that had a live-stream burst: its orders, how long paying them took and
    #: how long from the first payment to the last shipment (see :func:`burst_report`).
    bursts: dict[str, dict[str, float | None]] = field(default_factory=dict)
    #: per supplier: top-ups and cards bought, purchases failed, cost (cents)
    per_supplier: dict[str, dict[str, int]] = field(default_factory=dict)
    #: units with two successful supplier orders, by the suppliers' own answers (must be 0)
    double_supplier_orders: int = 0
    #: the pool that refills itself: purchases made and succeeded, codes bought, cost (cents)
    restocked: dict[str, int] = field(default_factory=dict)


def measure(engine: Engine, exp: Expectation, drivers: list[DemoDriver], faults: int) -> Summary:
    """Count outcomes from the database and the fakes, and judge them against expectations."""
    with engine.connect() as conn:
        rows = conn.execute(select(orders.c.shop, orders.c.platform_order_id, orders.c.state,
                                   orders.c.paid_at, orders.c.received_at,
                                   orders.c.shipped_at)).all()
        dup = conn.execute(select(func.count()).select_from(
            select(deliveries.c.code_id).group_by(deliveries.c.code_id)
            .having(func.count() > 1).subquery())).scalar_one()
        in_both = conn.execute(select(func.count()).select_from(stock).join(
            deliveries, deliveries.c.code_id == stock.c.code_id)).scalar_one()
    states = Counter(r.state for r in rows)
    per_platform: dict[str, Counter[str]] = {}
    by_key = {(r.shop, r.platform_order_id): r.state for r in rows}
    for r in rows:
        per_platform.setdefault(r.shop.removesuffix("-demo"), Counter())[r.state] += 1
    latencies = sorted(
        (r.shipped_at - (r.paid_at or r.received_at)).total_seconds() * 1000
        for r in rows if r.shipped_at is not None
    )

    def pct(p: float) -> float | None:
        if not latencies:
            return None
        return round(float(latencies[min(len(latencies) - 1, int(p * len(latencies)))]), 1)

    doubled = sum(1 for d in drivers for n in d.shipments().values() if n > 1)
    ok = (
        all(by_key.get(k) == OrderState.SHIPPED for k in exp.ship)
        and all(by_key.get(k) == OrderState.HELD for k in exp.hold)
        and all(by_key.get(k) == OrderState.CANCELLED for k in exp.cancel)
        and states.get(OrderState.FAILED, 0) == 0
        and int(dup) == 0 and int(in_both) == 0 and doubled == 0
        and len(rows) == exp.total
    )
    return Summary(
        orders=len(rows), shipped=states.get(OrderState.SHIPPED, 0),
        cancelled=states.get(OrderState.CANCELLED, 0), failed=states.get(OrderState.FAILED, 0),
        held=states.get(OrderState.HELD, 0), waiting_stock=states.get(OrderState.WAITING_STOCK, 0),
        duplicate_codes=int(dup) + int(in_both),
        per_platform={k: dict(v) for k, v in sorted(per_platform.items())},
        p50_ms=pct(0.50), p99_ms=pct(0.99), platform_shipments_doubled=doubled,
        faults_injected=faults,
        expected={"shipped": len(exp.ship), "held": len(exp.hold), "cancelled": len(exp.cancel),
                  # top-ups whose account came in the buyer's message / was given by a person
                  "topups_with_message": exp.topups_placed - exp.topups_held,
                  "topups_held_for_account": exp.topups_held},
        ok=ok, per_supplier=demosupply.per_supplier(engine),
        restocked=demosupply.restocked(engine),
    )


def _table(summary: Summary, elapsed: float, target: int) -> Table:
    table = Table(title=f"robot demo — {summary.orders}/{target} orders in, {elapsed:.0f}s")
    for col in ("platform", "received", "allocated", "shipped", "waiting", "held", "cancelled",
                "failed"):
        table.add_column(col, justify="right" if col != "platform" else "left")
    for platform, counts in summary.per_platform.items():
        table.add_row(platform, *(str(counts.get(k, 0)) for k in (
            OrderState.RECEIVED, OrderState.ALLOCATED, OrderState.SHIPPED,
            OrderState.WAITING_STOCK, OrderState.HELD, OrderState.CANCELLED, OrderState.FAILED)))
    table.caption = (f"duplicate codes: {summary.duplicate_codes}   p50 {summary.p50_ms} ms   "
                     f"p99 {summary.p99_ms} ms   faults injected: {summary.faults_injected}")
    if summary.restocked.get("purchases"):
        table.caption += (f"\npool {demosupply.POOL_RESTOCK} refilled itself: "
                          f"{summary.restocked['succeeded']} purchases, "
                          f"{summary.restocked['codes']} codes bought")
    return table


async def run_demo(*, orders_wanted: int, timeout: float, console: Console | None,
                   only: list[str] | None = None, keep: bool = False,
                   seed: int | None = None, serve_after: bool = False,
                   burst: int | None = None) -> Summary:
    """Run the whole demo; ``console`` None means no live table (JSON mode); ``burst``
    overrides the size of each live-stream burst (0: none)."""
    rng = random.Random(seed)  # noqa: S311 - order mix for a demo, not security
    drivers = load_drivers(only)
    if not drivers:
        raise RuntimeError("no platform with a demo driver is installed")
    sizes = burst_sizes(drivers, burst)
    bursts: list[Burst] = []
    root = Path(tempfile.mkdtemp(prefix="robot-demo-"))
    stack = contextlib.ExitStack()
    supply = demosupply.SupplierDemo()
    fakes = contextlib.ExitStack()  # the supplier fakes stop before the log file closes
    try:
        listen = _free_listen()
        platform_configs = [await d.start(f"http://{listen}") for d in drivers]
        supply.start(fakes)
        # A platform buying from the robot (闲管家) is offered top-ups as recharge goods and
        # no pool that refills itself.
        extra = [[*await gateway_items(supply, d),
                  *([] if refuses_unknown(d) else supply.restock_items(d.sku_key))]
                 for d in drivers]
        rules = await supply.restock_rules()
        config, engine = _set_up(root, drivers, platform_configs, listen, supply, extra,
                                 stack, stock=orders_wanted + sum(sizes.values()),
                                 restock=rules)
        robot = Robot(config, drain_timeout=5)
        await asyncio.to_thread(robot.prepare)
        daemon = asyncio.create_task(robot.run(install_signals=False, extra=[robot.http_task()]))
        faults = sum(d.inject_faults() for d in drivers) + supply.inject_faults()
        exp = Expectation(cards=supply.sells_cards)
        await _watch(engine, exp, drivers, faults, supply, daemon, rng,
                     orders_wanted=orders_wanted, timeout=timeout, console=console,
                     sizes=sizes, bursts=bursts)
        summary = await asyncio.to_thread(measure, engine, exp, drivers, faults)
        summary.bursts = await asyncio.to_thread(burst_report, engine, bursts)
        summary.double_supplier_orders = await supply.double_orders(engine)
        summary.ok = summary.ok and summary.double_supplier_orders == 0 and (
            not rules or summary.restocked.get("succeeded", 0) > 0)  # the pool refilled
        if serve_after and console is not None:
            summary.pickup_example = await asyncio.to_thread(_pickup_example, robot)
            if summary.pickup_example:
                await _serve_until_interrupted(console, summary, daemon)
        robot.stop()
        await daemon
        engine.dispose()
        summary.directory = str(root) if keep else None
        return summary
    finally:
        for d in drivers:
            with contextlib.suppress(Exception):
                await d.stop()
        fakes.close()
        stack.close()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def _set_up(root: Path, drivers: list[DemoDriver], platform_configs: list[dict[str, Any]],
            listen: str, supply: demosupply.SupplierDemo, extra: list[list[dict[str, Any]]],
            stack: contextlib.ExitStack, *, stock: int,
            restock: dict[str, Any] | None = None) -> tuple[RobotConfig, Engine]:
    """The demo's robot directory: config, key file, log file, database and stock."""
    config_path = _write_config(root, drivers, platform_configs, listen,
                                supply.robot_file(), extra, restock)
    init_key_file(root / "robot.key")
    log_file = (root / "robot.log").open("a", encoding="utf-8")
    stack.callback(log_file.close)
    # Once the run's log file closes, log lines go back where `robot demo` sent them before.
    stack.callback(configure_logging, "error", "json")
    configure_logging("info", "json", stream=log_file)
    config = load_config(config_path)
    engine = make_engine(config.database)
    upgrade(engine)
    import_stock(config.key_file, engine, root, stock)
    if supply.sells_cards:
        pools.create_pool(engine, demosupply.POOL_BOUGHT, actor="demo")
        pools.create_pool(engine, demosupply.POOL_RESTOCK, actor="demo")
    return config, engine


async def _watch(engine: Engine, exp: Expectation, drivers: list[DemoDriver], faults: int,
                 supply: demosupply.SupplierDemo, daemon: asyncio.Task[int],
                 rng: random.Random, *, orders_wanted: int, timeout: float,
                 console: Console | None, sizes: dict[str, int], bursts: list[Burst]) -> None:
    """Feed the orders (then the live-stream bursts of ``sizes``) and watch them settle (a
    live table on ``console``): refunds for the pre-orders once they wait for stock, accounts
    for held top-ups, the suppliers working."""
    started = time.monotonic()
    live = Live(console=console, refresh_per_second=4) if console else None
    with live or contextlib.nullcontext():
        feeder = asyncio.create_task(_feed_then_burst(drivers, exp, orders_wanted, rng, sizes,
                                                      bursts, topups=bool(supply.harnesses)))
        while True:
            supply.settle()
            await asyncio.to_thread(_give_accounts, engine, exp)
            summary = await asyncio.to_thread(measure, engine, exp, drivers, faults)
            if live is not None:
                live.update(_table(summary, time.monotonic() - started, orders_wanted))
            if feeder.done() and not exp.preorders and not exp.topups \
                    and _settled(summary, exp):
                break
            if feeder.done() and exp.preorders \
                    and await asyncio.to_thread(_all_waiting, engine, exp.preorders):
                for driver, shop, oid in exp.preorders:  # refunds while waiting for stock
                    driver.refund(oid)
                    exp.cancel.add((shop, oid))
                exp.preorders.clear()
            if time.monotonic() - started > timeout or daemon.done():
                break
            await asyncio.sleep(0.25)
        await feeder


def _all_waiting(engine: Engine, preorders: list[tuple[DemoDriver, str, str]]) -> bool:
    """Every pre-order is in, waiting for stock (orders of the pool that refills itself
    wait too, so the count of waiting orders alone does not say it)."""
    wanted = {(shop, oid) for _d, shop, oid in preorders}
    with engine.connect() as conn:
        waiting = {(r.shop, r.platform_order_id) for r in conn.execute(
            select(orders.c.shop, orders.c.platform_order_id)
            .where(orders.c.state == OrderState.WAITING_STOCK))}
    return wanted <= waiting


def _pickup_example(robot: Robot) -> str | None:
    """A buyer's pickup link for one shipped order (created as the write-back would)."""
    with robot.engine.connect() as conn:
        order_id = conn.execute(select(orders.c.id).where(orders.c.state == OrderState.SHIPPED)
                                .order_by(orders.c.id).limit(1)).scalar()
    if order_id is None:
        return None
    hook = pickup_url_hook(robot.engine, robot.vault, robot.shops, robot.config.http.public_url)
    return hook(int(order_id))


async def _serve_until_interrupted(console: Console, summary: Summary,
                                   daemon: asyncio.Task[int]) -> None:
    console.print(f"\nThe robot keeps running. Open a buyer's pickup page: "
                  f"[bold]{summary.pickup_example}[/bold]")
    console.print("Press Ctrl-C to stop.")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        await asyncio.wait([asyncio.ensure_future(stop.wait()), daemon],
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def _settled(summary: Summary, exp: Expectation) -> bool:
    return (summary.orders >= exp.total and summary.shipped >= len(exp.ship)
            and summary.held >= len(exp.hold) and summary.cancelled >= len(exp.cancel))


def import_stock(key_file: Path, engine: Engine, root: Path, orders_wanted: int) -> None:
    """The demo pools, filled through the real importer (enough for every order twice)."""
    vault = open_vault(key_file)
    audit.bind(engine, key_file)  # the imports are audited under the same key file
    for name, prefix, count in ((POOL_MAIN, "VIP", orders_wanted * 2 + 50),
                                (POOL_BONUS, "GAME", orders_wanted * 2 + 50)):
        pools.create_pool(engine, name, low_stock=20, actor="demo")
        path = root / f"{name}.csv"
        _write_codes(path, prefix, count)
        pools.import_codes(engine, vault, name, path, actor="demo", supplier="demo supplier")
        path.unlink()
    pools.create_pool(engine, POOL_PREORDER, actor="demo")
    # What the pickup page shows beside the main pool's codes (robot pools page).
    poolpage.set_page(engine, vault, POOL_MAIN, {
        "instructions_zh": "1. 打开视频 App，进入「我的」\n2. 点「兑换会员」，粘贴卡密",
        "instructions_en": "1. Open the video app and go to Me\n2. Tap Redeem and paste the code",
        "redeem_url": "https://vip.example.com/exchange?code={code}"}, actor="demo")


def refuses_unknown(driver: DemoDriver) -> bool:
    """Whether the platform cannot place an order for goods the shop does not list (a buyer
    platform such as 闲管家 buys only what the gateway offers): no unknown-SKU orders."""
    return getattr(driver, "refuses_unknown", False) is True


def places_topups(driver: DemoDriver) -> bool:
    """Whether a buyer platform's driver places top-ups naming their account (闲管家)."""
    return callable(getattr(driver, "create_topup_order", None))


async def gateway_items(supply: demosupply.SupplierDemo,
                        driver: DemoDriver) -> list[dict[str, Any]]:
    """The supplier SKUs a driver's shop maps: a buyer platform gets the top-up as recharge
    goods when its driver places top-ups, nothing else."""
    if not refuses_unknown(driver):
        return await supply.items(driver.sku_key)
    return await supply.items(driver.sku_key, gateway=True) if places_topups(driver) else []


def place_topup(driver: DemoDriver, buyer: str, message: str | None) -> tuple[str, bool]:
    """Place a top-up order: its id, and whether it waits for its account (no buyer message
    names it) rather than going straight to the suppliers. A buyer platform (闲管家) names
    the account in its order."""
    if places_topups(driver):
        return driver.create_topup_order(  # type: ignore[attr-defined]
            demosupply.SKU_TOPUP, 1, demosupply.DEMO_ACCOUNT, buyer), False
    return (driver.create_paid_order(demosupply.SKU_TOPUP, 1, buyer, message=message),
            message is None)


def _give_accounts(engine: Engine, exp: Expectation) -> None:
    """The demo's customer service: each top-up held for its account (placed without a
    buyer message) gets one, as ``robot orders release ID --account`` does."""
    for shop, oid in list(exp.topups):
        with engine.connect() as conn:
            row = conn.execute(select(orders.c.id, orders.c.state).where(
                orders.c.shop == shop, orders.c.platform_order_id == oid)).first()
        if row is None or row.state != OrderState.HELD:
            continue
        order_ops.release(engine, int(row.id), actor="demo-customer-service",
                          account=demosupply.DEMO_ACCOUNT)
        exp.topups.remove((shop, oid))
        exp.ship.add((shop, oid))


async def _feed(drivers: list[DemoDriver], exp: Expectation, count: int,
                rng: random.Random, *, topups: bool = False) -> None:
    """Orders arrive over a few seconds: mostly normal, some bundles, unknown SKUs, pre-orders,
    and with suppliers top-ups and cards bought per order."""
    for i in range(count):
        driver = drivers[i % len(drivers)]
        shop = shop_name(driver)
        roll = rng.random()
        buyer = f"buyer-{rng.randrange(10_000)}"
        if roll < 0.05 and not refuses_unknown(driver):
            oid = driver.create_paid_order(SKU_UNKNOWN, 1, buyer)
            exp.hold.add((shop, oid))
        elif roll < 0.10:
            oid = driver.create_paid_order(SKU_PREORDER, 1, buyer)
            exp.preorders.append((driver, shop, oid))
        elif roll < 0.25:
            oid = driver.create_paid_order(SKU_BUNDLE, 1, buyer)
            exp.ship.add((shop, oid))
        elif topups and roll < 0.32 and (places_topups(driver) or not refuses_unknown(driver)):
            message = demosupply.topup_message(exp.topups_placed)
            exp.topups_placed += 1
            oid, waits = place_topup(driver, buyer, message)
            if waits:
                exp.topups.append((shop, oid))
                exp.topups_held += 1
            else:
                exp.ship.add((shop, oid))
        elif exp.cards and roll < 0.38 and not refuses_unknown(driver):
            oid = driver.create_paid_order(demosupply.SKU_CARD, 1, buyer)
            exp.ship.add((shop, oid))
        elif exp.cards and roll < 0.45 and not refuses_unknown(driver):
            # From the pool that refills itself: it may wait for the robot's next purchase.
            oid = driver.create_paid_order(demosupply.SKU_RESTOCKED, 1, buyer)
            exp.ship.add((shop, oid))
        else:
            oid = driver.create_paid_order(SKU_MAIN, rng.choice((1, 1, 2)), buyer)
            exp.ship.add((shop, oid))
        if i % 20 == 19:
            await asyncio.sleep(0.05)


@dataclass
class Burst:
    """One live-stream burst: its shop's orders and how long paying them took."""

    platform: str
    shop: str
    order_ids: list[str]
    pay_seconds: float


def burst_sizes(drivers: list[DemoDriver], override: int | None) -> dict[str, int]:
    """Orders of one live-stream burst per platform that sells in bursts."""
    sizes = {}
    for driver in drivers:
        own = getattr(driver, "burst", 0)
        size = own if override is None or not own else override
        if isinstance(size, int) and size > 0:
            sizes[driver.platform] = size
    return sizes


async def _feed_then_burst(drivers: list[DemoDriver], exp: Expectation, count: int,
                           rng: random.Random, sizes: dict[str, int],
                           bursts: list[Burst], *, topups: bool = False) -> None:
    await _feed(drivers, exp, count, rng, topups=topups)
    for driver in drivers:
        if driver.platform in sizes:
            bursts.append(live_burst(driver, exp, sizes[driver.platform], rng))


def live_burst(driver: DemoDriver, exp: Expectation, size: int,
               rng: random.Random) -> Burst:
    """A streamer opens the cart: ``size`` buyers pay for the main SKU at once."""
    shop = shop_name(driver)
    started = time.monotonic()
    ids = []
    for _ in range(size):
        oid = driver.create_paid_order(SKU_MAIN, 1, f"fan-{rng.randrange(1_000_000)}")
        exp.ship.add((shop, oid))
        ids.append(oid)
    return Burst(driver.platform, shop, ids, time.monotonic() - started)


def burst_report(engine: Engine, bursts: list[Burst]) -> dict[str, dict[str, float | None]]:
    """Per burst: orders, shipped, seconds paying them took, and seconds from the first
    payment to the last shipment (None until every order of the burst is shipped)."""
    report: dict[str, dict[str, float | None]] = {}
    for burst in bursts:
        with engine.connect() as conn:
            rows = conn.execute(select(orders.c.paid_at, orders.c.received_at,
                                       orders.c.shipped_at)
                                .where(orders.c.shop == burst.shop,
                                       orders.c.platform_order_id.in_(burst.order_ids))).all()
        shipped = [r.shipped_at for r in rows if r.shipped_at is not None]
        paid = [r.paid_at or r.received_at for r in rows]
        done = len(shipped) == len(burst.order_ids) and paid
        report[burst.platform] = {
            "orders": len(burst.order_ids), "shipped": len(shipped),
            "pay_seconds": round(burst.pay_seconds, 2),
            "all_shipped_seconds": round((max(shipped) - min(paid)).total_seconds(), 2)
            if done else None,
        }
    return report


def summary_json(summary: Summary) -> str:
    data = {k: v for k, v in summary.__dict__.items() if v is not None or k in ("p50_ms", "p99_ms")}
    return json.dumps(data, ensure_ascii=False, indent=2)
