"""What needs a person: the list ``robot status`` prints under "needs attention".

Each check is a function of a :class:`Context` that returns :class:`Item` s; :data:`CHECKS`
holds them in the order they are shown, and another part of the robot adds its own with
:func:`check`. The checks are cheap (grouped counts, the key check ``robot run`` does at
start, the audit heads against their signed checkpoints — never a walk of the whole log)
so that ``robot status`` can be run every morning and by monitoring.

"Nothing needs attention" must only ever be said when it is true: a check that cannot run
(the database refuses a query, a file cannot be read) is itself an item, never silence.

This module must never put a code, a credential or a key into an item: items carry shop
and pool names, counts, states and the robot's own error texts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select

from robot import orders as order_views
from robot.clock import format_age
from robot.config import RobotConfig, check_pools
from robot.errors import RobotError
from robot.schema import alert_state
from robot.states import OrderState
from robot.vault import open_vault

#: A shop's polls are stale when its last good poll is older than the larger of
#: ``alerts.poll_lag`` and this many of its poll intervals.
STALE_POLL_INTERVALS = 3
#: Cancelled orders whose codes may be out are listed for this long after they changed.
CANCELLED_WINDOW = timedelta(days=7)
#: Ignored orders with unmapped lines are counted over this window.


@dataclass(frozen=True)
class Item:
    """One thing that needs a person."""

    kind: str  # stable name: shop_paused, poll_stale, low_stock, orders_failed, keys, audit…
    subject: str  # the shop, pool or state it is about ("" for the robot as a whole)
    message: str  # one line for people
    action: str = ""  # what to do about it (a command, when there is one)
    count: int | None = None  # how many orders / codes, where that is the point

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Context:
    """What every check may read."""

    engine: Engine
    config: RobotConfig
    status: order_views.Status
    now: datetime

    def enabled_shops(self) -> dict[str, Any]:
        return {s.name: s for s in self.config.shops if s.enabled}


Check = Callable[[Context], list[Item]]
#: Every check, in the order its items are shown.
CHECKS: list[Check] = []


def check(fn: Check) -> Check:
    """Register ``fn`` as a check (decorator); its items follow those of earlier checks."""
    CHECKS.append(fn)
    return fn


def needs_attention(engine: Engine, config: RobotConfig, status: order_views.Status,
                    now: datetime, checks: Sequence[Check] | None = None) -> list[Item]:
    """Every item of every check; a check that fails is reported as an item."""
    ctx = Context(engine, config, status, now)
    found: list[Item] = []
    for fn in CHECKS if checks is None else checks:
        try:
            found.extend(fn(ctx))
        except Exception as exc:  # noqa: BLE001 - a check that cannot run is never "all well"
            reason = exc.message if isinstance(exc, RobotError) else type(exc).__name__
            found.append(Item("check_failed", fn.__name__.strip("_"),
                              f"could not check {fn.__name__.strip('_').replace('_', ' ')}: "
                              f"{reason}"))
    return found


# ---------------------------------------------------------------------------- shops


@check
def _paused_shops(ctx: Context) -> list[Item]:
    wanted = ctx.enabled_shops()
    return [Item("shop_paused", s.shop,
                 f"shop {s.shop} is paused: {s.paused_reason or 'no reason recorded'}",
                 f"fix the cause, then: robot shops resume {s.shop}")
            for s in ctx.status.shops if s.paused and s.shop in wanted]


@check
def _stale_polls(ctx: Context) -> list[Item]:
    wanted = ctx.enabled_shops()
    items = []
    for s in ctx.status.shops:
        shop = wanted.get(s.shop)
        if shop is None or s.paused:
            continue  # a paused shop is reported as paused
        limit = max(ctx.config.alerts.poll_lag,
                    STALE_POLL_INTERVALS * shop.poll_interval_seconds)
        error = f"; last error: {s.last_error}" if s.last_error else ""
        if s.last_poll_ok_at is None:
            message = f"shop {s.shop} has never been polled successfully{error}"
        elif s.lag_seconds is not None and s.lag_seconds > limit:
            message = (f"shop {s.shop}: last successful poll {format_age(s.lag_seconds)} ago "
                       f"(stale after {format_age(limit)}){error}")
        else:
            continue
        items.append(Item("poll_stale", s.shop, message,
                          "is `robot run` running? see its log; robot shops test " + s.shop))
    return items


# ---------------------------------------------------------------------------- pools


def _mapped_pools(ctx: Context) -> set[str]:
    return {share.pool for shop in ctx.enabled_shops().values()
            for mapping in shop.items for share in mapping.pools}


@check
def _low_stock(ctx: Context) -> list[Item]:
    cover_days = ctx.config.alerts.low_cover_days
    mapped = _mapped_pools(ctx)
    items = []
    for p in ctx.status.pools:
        reasons = []
        if p.low_stock is not None and p.available <= p.low_stock:
            reasons.append(f"{p.available} available, at or below its low-stock mark "
                           f"{p.low_stock}")
        elif p.available == 0 and p.pool in mapped:
            reasons.append("empty, and a shop sells from it")
        if cover_days is not None and p.days_of_cover is not None \
                and p.days_of_cover < cover_days:
            reasons.append(f"{p.days_of_cover:g} days of cover at last week's rate "
                           f"(under {cover_days:g})")
        if reasons:
            items.append(Item("low_stock", p.pool, f"pool {p.pool}: " + "; ".join(reasons),
                              f"robot pools import {p.pool} FILE", p.available))
    return items


@check
def _missing_pools(ctx: Context) -> list[Item]:
    with ctx.engine.connect() as conn:
        from robot.pools import pool_names

        existing = pool_names(conn)
    enabled = ctx.config.model_copy(update={"shops": list(ctx.enabled_shops().values())})
    return [Item("pool_missing", "", problem, "create the pool or fix the shop file")
            for problem in check_pools(enabled, existing)]


@check
def _restocking(ctx: Context) -> list[Item]:
    """Restock purchases waiting for a person, pools the budget keeps from restocking, and
    pools whose purchases fail (robot.restock)."""
    if not ctx.config.restock:
        return []
    from robot import restock

    items = []
    for r in restock.status(ctx.engine, ctx.config.restock, now=ctx.now):
        pool = r["pool"]
        for pid in r["awaiting_approval"]:
            items.append(Item("restock_approval", pool,
                              f"restock purchase #{pid} for pool {pool} awaits approval",
                              f"robot restock approve {pid} (or reject {pid})"))
        if r["blocked"]:
            items.append(Item("restock_blocked", pool,
                              f"pool {pool} cannot be restocked: {r['blocked']}",
                              "wait for the next day / month, raise the budget in the robot "
                              f"file's restock:, or robot pools import {pool} FILE"))
        if r["failures"]:
            items.append(Item("restock_failing", pool,
                              f"restocking of pool {pool}: {r['failures']} purchase(s) failed "
                              f"in a row; last: {r['last_error']}",
                              "robot restock history --pool " + pool, r["failures"]))
    return items


# ---------------------------------------------------------------------------- orders


_ORDER_STATES = (
    (OrderState.FAILED, "orders_failed", "order(s) failed (their write-back, or every supplier)",
     "robot orders list --state failed; robot orders show ID: replay a failed write-back "
     "(robot orders replay ID), refund on the platform an order its suppliers failed"),
    (OrderState.HELD, "orders_held", "order(s) held for a person",
     "robot orders list --state held; then robot orders release / reject ID"),
    (OrderState.WAITING_STOCK, "orders_waiting", "order(s) waiting for stock",
     "robot orders list --state waiting_stock; import codes into their pools"),
)


@check
def _orders(ctx: Context) -> list[Item]:
    items = []
    for state, kind, what, action in _ORDER_STATES:
        n = ctx.status.attention.get(state, 0)
        if n:
            items.append(Item(kind, state, f"{n} {what}", action, n))
    memos = ctx.status.attention.get("failed_memos", 0)
    if memos:
        items.append(Item("memos_failed", "memo", f"{memos} seller memo(s) could not be written",
                          "robot orders list; robot orders show ID", memos))
    return items


@check
def _cancelled_codes_out(ctx: Context) -> list[Item]:
    """Cancelled orders of the last 7 days whose codes may have reached the buyer (seen on
    the pickup page, or shipped just before a refund where the platform could not say):
    flagged for review, never back in stock."""
    with ctx.engine.connect() as conn:
        ids = order_views.cancelled_codes_out(conn, ctx.now - CANCELLED_WINDOW)
    if not ids:
        return []
    return [Item("cancelled_codes_out", "orders",
                 f"{len(ids)} cancelled order(s) of the last 7 days whose codes may have reached "
                 f"the buyer (e.g. order {ids[0]}): flagged for review, not back in stock",
                 "robot orders show ID; check with the platform or the buyer whether the codes "
                 "were used", len(ids))]


@check
def _ignored_unmapped(ctx: Context) -> list[Item]:
    """Paid orders the robot ignored in the last week because a line maps to no pool."""
    from robot import support

    with ctx.engine.connect() as conn:
        per_shop = support.ignored_unmapped(conn, ctx.now)
    return [Item("ignored_unmapped", shop,
                 f"shop {shop}: {n} paid order(s) of the last 7 days ignored, with lines "
                 "that map to no pool",
                 f"robot orders list --state ignored --shop {shop}; map their SKUs in the "
                 "shop file, then robot orders release ID", n)
            for shop, n in per_shop.items()]


@check
def _replacements(ctx: Context) -> list[Item]:
    """Replacements of bad cards that wait for stock (``robot orders redeliver``)."""
    n = ctx.status.attention.get("replacements_waiting", 0)
    if not n:
        return []
    return [Item("replacements_waiting", "replacements",
                 f"{n} replacement(s) of bad codes wait for stock",
                 "import codes into their pools (robot orders show ID names the pool); "
                 "they are served within a minute", n)]


@check
def _notifications_unknown(ctx: Context) -> list[Item]:
    """Buyer notifications that may or may not have gone out (never re-sent by themselves)."""
    from robot import notify

    with ctx.engine.connect() as conn:
        per_shop = notify.unknown_by_shop(conn)
    return [Item("notifications_unknown", shop,
                 f"shop {shop}: the buyer notification of {len(ids)} order(s) may or may not "
                 f"have been sent (e.g. order {ids[0]})",
                 "robot orders show ID; if the buyer has nothing, robot orders notify ID",
                 len(ids))
            for shop, ids in per_shop.items()]


@check
def _clock_offsets(ctx: Context) -> list[Item]:
    """Platforms whose clock is off from this machine's past ``intake.max_clock_offset``."""
    limit = ctx.config.intake.max_clock_offset
    return [Item("clock_offset", s.shop,
                 f"shop {s.shop}: the platform's clock is {s.clock_offset_s:+.0f}s from this "
                 f"machine's (limit {limit:g}s); polling follows the platform's clock",
                 "check this machine's time (NTP: timedatectl status)")
            for s in ctx.status.shops
            if s.clock_offset_s is not None and abs(s.clock_offset_s) > limit]


# ---------------------------------------------------------------------------- keys and audit


@check
def _keys(ctx: Context) -> list[Item]:
    """The key file as ``robot run`` checks it at start."""
    from robot.keys import check_keys, lost_key_file

    path = ctx.config.key_file
    try:
        if not path.exists():
            lost = lost_key_file(ctx.engine, path)
            message = lost.message if lost is not None else (
                f"key file {path} does not exist: robot run cannot start")
            action = ("restore the key file from its backup" if lost is not None
                      else "robot keys init")
            return [Item("keys", "key_file", message, action)]
        check_keys(ctx.engine, open_vault(path))
    except RobotError as exc:
        return [Item("keys", "key_file", exc.message, "see README: Keys")]
    return []


@check
def _audit(ctx: Context) -> list[Item]:
    """Cheap signs that the audit log is not what its checkpoints say (no full walk)."""
    from robot import audit

    if not ctx.config.key_file.exists():
        return []  # reported by the key check; the log cannot be read without it
    items: list[Item] = []
    with ctx.engine.connect() as conn:
        heads = {int(r.id): r for r in conn.execute(select(*audit.HEAD_COLS))}
        broken = conn.execute(select(alert_state.c.detail).where(
            alert_state.c.key == "audit:chain",
            alert_state.c.active == True)).first()  # noqa: E712 - SQL comparison
    unkeyed = sorted(c for c, h in heads.items() if not h.keyed)
    if unkeyed:
        items.append(Item("audit", "unkeyed",
                          f"audit chain(s) {', '.join(map(str, unkeyed))} still use the unkeyed "
                          "hashes of an older version", "robot audit upgrade (robot run does it "
                          "at start)"))
    try:
        seal = audit.Seal.from_key_file(ctx.config.key_file)
        marks = audit.read_checkpoints(seal)
    except RobotError as exc:
        items.append(Item("audit", "checkpoint", exc.message, "robot audit verify"))
        marks = {}
    for chain, mark in sorted(marks.items()):
        head = heads.get(chain)
        if head is None:
            problem = "its head row is missing"
        elif int(head.seq) < mark.seq:
            problem = (f"its head is entry {head.seq}, behind its checkpoint (entry "
                       f"{mark.seq}): entries were removed")
        elif int(head.seq) == mark.seq and str(head.hash) != mark.hash:
            problem = f"entry {mark.seq} does not match its checkpoint: the chain was rewritten"
        else:
            continue
        items.append(Item("audit", f"chain {chain}", f"audit chain {chain}: {problem}",
                          "robot audit verify"))
    if broken is not None:
        items.append(Item("audit", "verify", "the last audit check found the log broken: "
                          f"{broken.detail or 'see robot audit verify'}", "robot audit verify"))
    return items
