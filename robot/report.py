"""Sales and stock reports: what was sold, what it cost, what is left and how long it lasts.

Every figure is a grouped SQL aggregate over ``orders``, ``order_lines``, ``deliveries`` and
``codes`` (never a loop over rows in Python), defined so that it reconciles with those tables:

* **window** — an order belongs to the report when it was *paid* in ``[since, until)``
  (``orders.paid_at``, or ``received_at`` when the platform gave no payment time). Days are
  the local days of the report's zone (the robot's ``timezone:``): an order paid at
  2026-12-05 17:30 UTC is on day 2026-12-06 in Asia/Shanghai. The day is computed in SQL
  from the zone's UTC offsets over the window (one offset, or one per DST period), so a
  DST zone's days are right on both sides of a change. Orders the robot ignored (no line of
  ours) are left out altogether.
* **orders** — orders paid in the window; **shipped** — of those, the ones delivered
  (state ``shipped``, or ``refunded`` = shipped and refunded afterwards); **open** — still
  in the robot's hands (received, held, waiting for stock, allocated, failed).
* **units** — the quantities of the shipped orders' lines that map to a pool (lines the
  shop ignores, e.g. physical goods, are not units of ours).
* **revenue** — ``orders.total_cents`` of the shipped orders (refunded ones included: that
  money came in and went out again, see refunds). By SKU, a line's
  ``unit_price_cents × quantity`` stands in for the order total, which may also hold other
  lines, discounts or postage.
* **refunds** — shipped orders later refunded (state ``refunded``): their count and their
  ``total_cents`` (the platform's exact refund amount is not stored; a partial refund after
  delivery counts in full). **cancelled** — orders paid but cancelled or rejected before
  shipping (state ``cancelled``/``rejected``): count and ``total_cents``; never revenue.
* **cost** — ``codes.cost_cents`` of the codes delivered to the shipped orders
  (``deliveries`` of those orders; codes bought from a supplier carry what it charged),
  plus what suppliers charged for the shipped orders' top-ups
  (``supplier_attempts.cost_cents`` of the successful ones); codes without a cost count 0
  and are counted in ``cost_unknown``. **By supplier**: per supplier, the orders it
  bought for, units bought and what it charged for the shipped ones (money in is per
  order, so no revenue there). **net revenue** = revenue − refunds; **gross margin** = net revenue −
  cost.
* **paid to shipped** — the mean of ``shipped_at − paid time`` over the shipped orders (by
  day and shop only).
* **pools** — stock available now (unexpired), **burn** = codes that left stock into
  deliveries in the window per day, **days of cover** = stock / burn.

This module only reads; it must never decrypt a code or show anything but counts and money.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timedelta, tzinfo
from itertools import pairwise
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Float,
    Interval,
    and_,
    case,
    cast,
    distinct,
    extract,
    func,
    literal_column,
    select,
)

from robot.clock import DEFAULT_ZONE, day_start, local_to_utc, offset_changes, utcnow
from robot.db import dialect_of
from robot.display import format_time_json, zone_name
from robot.errors import UserError
from robot.pools import manual_import_cost
from robot.schema import (
    codes,
    deliveries,
    order_lines,
    orders,
    pools,
    restock_purchases,
    stock,
    supplier_attempts,
)
from robot.states import UNSHIPPED, OrderState, RestockState, SupplierAttemptState

Grouping = Literal["total", "day", "shop", "sku", "pool", "supplier"]
GROUPINGS: tuple[Grouping, ...] = ("total", "day", "shop", "sku", "pool", "supplier")
SHIPPED = (OrderState.SHIPPED, OrderState.REFUNDED)
CANCELLED = (OrderState.CANCELLED, OrderState.REJECTED)
OPEN = UNSHIPPED
_SINCE = re.compile(r"(\d+)\s*([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime, zone: tzinfo = DEFAULT_ZONE) -> datetime:
    """``7d``, ``24h``, ``30m``, ``2w`` before ``now``; a date (``2026-11-01``: its midnight
    in ``zone``); a local date and time in ``zone`` (``2026-11-01 08:00``); or a time with
    its offset (``2026-11-01T08:00+08:00``). Naive UTC, as stored; not before 1970."""
    try:
        when = _since(text, now, zone)
    except OverflowError:  # 99999999d, 0001-01-01 in a zone east of UTC
        when = EARLIEST - timedelta(days=1)
    if when < EARLIEST:
        raise UserError(f"--since {text!r}: give a start in 1970 or later")
    return when


#: The earliest window start (the report scans the zone's offsets from its start on).
EARLIEST = datetime(1970, 1, 1)


def _since(text: str, now: datetime, zone: tzinfo) -> datetime:
    m = _SINCE.fullmatch(text.strip().lower())
    if m:
        return now - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    try:
        return day_start(date.fromisoformat(text.strip()), zone)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UserError(f"--since {text!r}: use e.g. 7d, 24h, 30m, 2w, a date like "
                        "2026-11-01 or a time like '2026-11-01 08:00'") from None
    return local_to_utc(when, zone)


@dataclass(frozen=True)
class Window:
    """Orders paid in ``[since, until)`` (naive UTC); days are local days in ``zone``."""

    since: datetime
    until: datetime
    zone: tzinfo = DEFAULT_ZONE

    @property
    def days(self) -> float:
        return (self.until - self.since).total_seconds() / 86400


@dataclass
class SalesRow:
    """One line of the sales report (``key`` is the day, shop, SKU, pool or ``total``)."""

    key: str
    orders: int = 0
    shipped: int = 0
    open: int = 0
    units: int = 0
    revenue_cents: int | None = 0
    refunds: int = 0
    refund_cents: int | None = 0
    cancelled: int = 0
    cancelled_cents: int | None = 0
    cost_cents: int = 0
    cost_unknown: int = 0  # delivered codes without a cost
    codes: int = 0  # codes delivered to the shipped orders
    avg_paid_to_shipped_s: float | None = None

    @property
    def net_revenue_cents(self) -> int | None:
        if self.revenue_cents is None or self.refund_cents is None:
            return None
        return self.revenue_cents - self.refund_cents

    @property
    def margin_cents(self) -> int | None:
        net = self.net_revenue_cents
        return None if net is None else net - self.cost_cents

    @property
    def margin_pct(self) -> float | None:
        net, margin = self.net_revenue_cents, self.margin_cents
        if not net or margin is None:
            return None
        return round(100 * margin / net, 1)

    def as_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.avg_paid_to_shipped_s is not None:  # to a tenth: timestamps' microseconds
            data["avg_paid_to_shipped_s"] = round(self.avg_paid_to_shipped_s, 1)  # are noise
        data["net_revenue_cents"] = self.net_revenue_cents
        data["margin_cents"] = self.margin_cents
        data["margin_pct"] = self.margin_pct
        return data


@dataclass(frozen=True)
class PoolRow:
    pool: str
    available: int
    burned: int  # codes that went into deliveries during the window
    burn_per_day: float
    days_of_cover: float | None  # None: nothing burned, so no end in sight

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class RestockRow:
    """A pool's automatic restocking in the window, beside its codes imported by hand."""

    pool: str
    purchases: int  # succeeded
    codes: int  # put on sale
    cost_cents: int
    cost_per_code_cents: int | None
    manual_codes: int  # imported by hand in the window
    manual_cost_per_code_cents: int | None

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Report:
    window: Window
    by: Grouping
    rows: list[SalesRow]
    total: SalesRow
    pools: list[PoolRow]
    restocking: list[RestockRow] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        zone = self.window.zone
        return {"since": format_time_json(self.window.since, zone),
                "until": format_time_json(self.window.until, zone),
                "timezone": zone_name(zone), "by": self.by,
                "rows": [r.as_dict() for r in self.rows],
                "total": self.total.as_dict(), "pools": [p.as_dict() for p in self.pools],
                "restocking": [r.as_dict() for r in self.restocking]}


# ---------------------------------------------------------------------------- SQL pieces


def _paid() -> ColumnElement[Any]:
    return func.coalesce(orders.c.paid_at, orders.c.received_at)


def _in_window(window: Window) -> ColumnElement[bool]:
    return and_(_paid() >= window.since, _paid() < window.until,
                orders.c.state != OrderState.IGNORED)


def _seconds(conn: Connection, start: ColumnElement[Any],
             end: ColumnElement[Any]) -> ColumnElement[Any]:
    """``end - start`` in seconds, per backend."""
    dialect = dialect_of(conn)
    if dialect == "postgresql":
        return extract("epoch", end - start)
    if dialect == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * 86400.0
    return cast(func.timestampdiff(literal_column("MICROSECOND"), start, end), Float) / 1e6


def _flag(cond: ColumnElement[bool]) -> ColumnElement[Any]:
    return case((cond, 1), else_=0)


def _when(cond: ColumnElement[bool], value: ColumnElement[Any]) -> ColumnElement[Any]:
    return case((cond, value), else_=0)


def _shifted_date(dialect: str, value: ColumnElement[Any], offset: int) -> ColumnElement[Any]:
    """The date of ``value + offset`` seconds, per backend (literal SQL: see :func:`_day`)."""
    if dialect == "sqlite":
        return func.date(value, literal_column(f"'{offset:+d} seconds'"))
    if dialect == "postgresql":
        return func.date(value + literal_column(f"interval '{offset} seconds'", Interval()))
    return func.date(func.date_add(value, literal_column(f"INTERVAL {offset} SECOND")))


def _day(conn: Connection, window: Window) -> ColumnElement[Any]:
    """The local day (in the window's zone) an order was paid, in SQL.

    The zone's UTC offsets over the window come from the zone database: one offset (Asia/
    Shanghai) gives ``date(paid + offset)``; a DST zone gives a CASE with one branch per
    period, split at the instants the offset changed. Every piece is literal SQL, not a
    bound parameter, because the same expression is in SELECT and GROUP BY (PostgreSQL's
    server-side parameters would make them two expressions). The values are ours (whole
    numbers and times from the zone database), never a user's text.
    """
    dialect = dialect_of(conn)
    paid = _paid()
    changes = offset_changes(window.since, window.until, window.zone)
    last = _shifted_date(dialect, paid, changes[-1][1])
    if len(changes) == 1:
        return last
    return case(*((paid < literal_column(f"'{nxt:%Y-%m-%d %H:%M:%S}'"),
                   _shifted_date(dialect, paid, offset))
                  for (_, offset), (nxt, _) in pairwise(changes)),
                else_=last)


def _key(by: Grouping, conn: Connection, window: Window) -> ColumnElement[Any]:
    if by == "day":
        return _day(conn, window)
    if by == "shop":
        return orders.c.shop
    if by == "sku":
        return func.coalesce(order_lines.c.sku_id, order_lines.c.outer_id,
                             order_lines.c.item_id, literal_column("'-'"))
    if by == "pool":
        return pools.c.name
    if by == "supplier":
        return supplier_attempts.c.supplier
    return literal_column("'total'")


def _int(value: Any) -> int:
    return int(value or 0)


# ---------------------------------------------------------------------------- queries


def _order_figures(conn: Connection, window: Window, by: Grouping) -> dict[str, SalesRow]:
    """Orders, shipped, open, revenue, refunds, cancellations, paid-to-shipped (total/day/shop)."""
    key = _key(by, conn, window).label("k")
    shipped = orders.c.state.in_(SHIPPED)
    timed = and_(shipped, orders.c.shipped_at.is_not(None))
    stmt = select(
        key,
        func.count().label("orders"),
        func.sum(_flag(shipped)).label("shipped"),
        func.sum(_flag(orders.c.state.in_(OPEN))).label("open"),
        func.sum(_when(shipped, orders.c.total_cents)).label("revenue"),
        func.sum(_flag(orders.c.state == OrderState.REFUNDED)).label("refunds"),
        func.sum(_when(orders.c.state == OrderState.REFUNDED, orders.c.total_cents))
        .label("refund"),
        func.sum(_flag(orders.c.state.in_(CANCELLED))).label("cancelled"),
        func.sum(_when(orders.c.state.in_(CANCELLED), orders.c.total_cents)).label("cancel"),
        func.sum(_when(timed, _seconds(conn, _paid(), orders.c.shipped_at))).label("secs"),
        func.sum(_flag(timed)).label("timed"),
    ).where(_in_window(window))
    if by != "total":
        stmt = stmt.group_by(key)
    out = {}
    for r in conn.execute(stmt):
        if r.k is None:  # an empty window still returns one aggregate row for the total
            continue
        timed_n = _int(r.timed)
        out[str(r.k)] = SalesRow(
            key=str(r.k), orders=_int(r.orders), shipped=_int(r.shipped), open=_int(r.open),
            revenue_cents=_int(r.revenue), refunds=_int(r.refunds), refund_cents=_int(r.refund),
            cancelled=_int(r.cancelled), cancelled_cents=_int(r.cancel),
            avg_paid_to_shipped_s=(float(r.secs) / timed_n) if timed_n else None)
    return out


def _line_figures(conn: Connection, window: Window) -> dict[str, SalesRow]:
    """The SKU view: orders and money from the lines (``unit_price × quantity``)."""
    key = _key("sku", conn, window).label("k")
    shipped = orders.c.state.in_(SHIPPED)
    amount = order_lines.c.unit_price_cents * order_lines.c.quantity
    stmt = (
        select(
            key,
            func.count(distinct(orders.c.id)).label("orders"),
            func.count(distinct(case((shipped, orders.c.id)))).label("shipped"),
            func.count(distinct(case((orders.c.state.in_(OPEN), orders.c.id)))).label("open"),
            func.sum(_when(shipped, amount)).label("revenue"),
            func.count(distinct(case((orders.c.state == OrderState.REFUNDED, orders.c.id))))
            .label("refunds"),
            func.sum(_when(orders.c.state == OrderState.REFUNDED, amount)).label("refund"),
            func.count(distinct(case((orders.c.state.in_(CANCELLED), orders.c.id))))
            .label("cancelled"),
            func.sum(_when(orders.c.state.in_(CANCELLED), amount)).label("cancel"),
        )
        .select_from(order_lines.join(orders, orders.c.id == order_lines.c.order_id))
        .where(_in_window(window))
        .group_by(key)
    )
    return {str(r.k): SalesRow(
        key=str(r.k), orders=_int(r.orders), shipped=_int(r.shipped), open=_int(r.open),
        revenue_cents=_int(r.revenue), refunds=_int(r.refunds), refund_cents=_int(r.refund),
        cancelled=_int(r.cancelled), cancelled_cents=_int(r.cancel)) for r in conn.execute(stmt)}


def _pool_orders(conn: Connection, window: Window) -> dict[str, SalesRow]:
    """The pool view: orders that drew codes from each pool (money is per order, not pool)."""
    key = _key("pool", conn, window).label("k")
    stmt = (
        select(
            key,
            func.count(distinct(orders.c.id)).label("orders"),
            func.count(distinct(case((orders.c.state.in_(SHIPPED), orders.c.id))))
            .label("shipped"),
            func.count(distinct(case((orders.c.state.in_(OPEN), orders.c.id)))).label("open"),
            func.count(distinct(case((orders.c.state == OrderState.REFUNDED, orders.c.id))))
            .label("refunds"),
        )
        .select_from(deliveries.join(orders, orders.c.id == deliveries.c.order_id)
                     .join(pools, pools.c.id == deliveries.c.pool_id))
        .where(_in_window(window))
        .group_by(key)
    )
    return {str(r.k): SalesRow(
        key=str(r.k), orders=_int(r.orders), shipped=_int(r.shipped), open=_int(r.open),
        refunds=_int(r.refunds), revenue_cents=None, refund_cents=None, cancelled_cents=None)
        for r in conn.execute(stmt)}


def _units(conn: Connection, window: Window, by: Grouping) -> dict[str, int]:
    key = _key(by, conn, window).label("k")
    stmt = (
        select(key, func.sum(order_lines.c.quantity).label("units"))
        .select_from(order_lines.join(orders, orders.c.id == order_lines.c.order_id))
        .where(_in_window(window), orders.c.state.in_(SHIPPED),
               (order_lines.c.mapping != "[]") | order_lines.c.supply.is_not(None))
    )
    if by != "total":
        stmt = stmt.group_by(key)
    return {str(r.k): _int(r.units) for r in conn.execute(stmt) if r.k is not None}


def _costs(conn: Connection, window: Window, by: Grouping) -> dict[str, tuple[int, int, int]]:
    """``key -> (cost_cents, codes, codes without a cost)`` of shipped orders' codes."""
    key = _key(by, conn, window).label("k")
    joined = (deliveries.join(orders, orders.c.id == deliveries.c.order_id)
              .join(codes, codes.c.id == deliveries.c.code_id))
    if by == "sku":
        joined = joined.join(order_lines, and_(order_lines.c.order_id == deliveries.c.order_id,
                                               order_lines.c.line_no == deliveries.c.line_no))
    if by == "pool":
        joined = joined.join(pools, pools.c.id == deliveries.c.pool_id)
    stmt = (
        select(key, func.sum(func.coalesce(codes.c.cost_cents, 0)).label("cost"),
               func.count().label("n"), func.sum(_flag(codes.c.cost_cents.is_(None))).label("nc"))
        .select_from(joined)
        .where(_in_window(window), orders.c.state.in_(SHIPPED))
    )
    if by != "total":
        stmt = stmt.group_by(key)
    return {str(r.k): (_int(r.cost), _int(r.n), _int(r.nc))
            for r in conn.execute(stmt) if r.k is not None}


def _pool_stock(conn: Connection, window: Window, now: datetime) -> list[PoolRow]:
    available = {int(r[0]): int(r[1]) for r in conn.execute(
        select(stock.c.pool_id, func.count()).where(stock.c.expires_at > now)
        .group_by(stock.c.pool_id))}
    burned = {int(r[0]): int(r[1]) for r in conn.execute(
        select(deliveries.c.pool_id, func.count())
        .where(deliveries.c.created_at >= window.since, deliveries.c.created_at < window.until)
        .group_by(deliveries.c.pool_id))}
    rows = []
    for p in conn.execute(select(pools.c.id, pools.c.name).order_by(pools.c.name)):
        avail, burn = available.get(int(p.id), 0), burned.get(int(p.id), 0)
        per_day = burn / window.days if window.days > 0 else 0.0
        rows.append(PoolRow(pool=str(p.name), available=avail, burned=burn,
                            burn_per_day=round(per_day, 2),
                            days_of_cover=round(avail / per_day, 1) if per_day else None))
    return rows


def pool_cover(engine: Engine, now: datetime, *, days: float = 7.0) -> dict[str, PoolRow]:
    """Each pool's stock, burn rate and days of cover over the last ``days`` (what the
    report's pool rows show; restocking's cover trigger reads the same figures)."""
    window = Window(now - timedelta(days=days), now)
    with engine.connect() as conn:
        return {row.pool: row for row in _pool_stock(conn, window, now)}


def _restocking(conn: Connection, window: Window) -> list[RestockRow]:
    """Per pool that restocked itself in the window: purchases, codes, spend, cost per code,
    and the cost per code of its codes imported by hand in the same window."""
    rp = restock_purchases
    rows = conn.execute(
        select(pools.c.id, pools.c.name, func.count().label("n"),
               func.sum(rp.c.codes).label("codes"), func.sum(rp.c.cost_cents).label("cost"))
        .select_from(rp.join(pools, pools.c.id == rp.c.pool_id))
        .where(rp.c.state == RestockState.SUCCEEDED, rp.c.finished_at >= window.since,
               rp.c.finished_at < window.until)
        .group_by(pools.c.id, pools.c.name).order_by(pools.c.name)).all()
    if not rows:
        return []
    manual = manual_import_cost(conn, since=window.since, until=window.until)
    out = []
    for r in rows:
        codes_, cost = _int(r.codes), _int(r.cost)
        n, avg = manual.get(int(r.id), (0, None))
        out.append(RestockRow(str(r.name), _int(r.n), codes_, cost,
                              round(cost / codes_) if codes_ else None, n, avg))
    return out


_BOUGHT = supplier_attempts.c.state == SupplierAttemptState.SUCCEEDED


def _topup_costs(conn: Connection, window: Window, by: Grouping) -> dict[str, int]:
    """``key -> cents`` suppliers charged for the shipped orders' top-ups."""
    key = _key(by, conn, window).label("k")
    joined = supplier_attempts.join(orders, orders.c.id == supplier_attempts.c.order_id)
    if by == "sku":
        joined = joined.join(order_lines, and_(
            order_lines.c.order_id == supplier_attempts.c.order_id,
            order_lines.c.line_no == supplier_attempts.c.line_no))
    stmt = (select(key, func.sum(func.coalesce(supplier_attempts.c.cost_cents, 0)).label("c"))
            .select_from(joined)
            .where(_in_window(window), orders.c.state.in_(SHIPPED), _BOUGHT,
                   supplier_attempts.c.kind == "topup"))
    if by != "total":
        stmt = stmt.group_by(key)
    return {str(r.k): _int(r.c) for r in conn.execute(stmt) if r.k is not None}


def _supplier_rows(conn: Connection, window: Window) -> dict[str, SalesRow]:
    """The supplier view: orders bought for, units bought and their cost, per supplier."""
    key = _key("supplier", conn, window).label("k")
    shipped = orders.c.state.in_(SHIPPED)
    stmt = (
        select(
            key,
            func.count(distinct(orders.c.id)).label("orders"),
            func.count(distinct(case((shipped, orders.c.id)))).label("shipped"),
            func.count(distinct(case((orders.c.state.in_(OPEN), orders.c.id)))).label("open"),
            func.sum(_flag(shipped)).label("units"),
            func.sum(_when(shipped, func.coalesce(supplier_attempts.c.cost_cents, 0)))
            .label("cost"),
        )
        .select_from(supplier_attempts.join(orders,
                                            orders.c.id == supplier_attempts.c.order_id))
        .where(_in_window(window), _BOUGHT)
        .group_by(key)
    )
    return {str(r.k): SalesRow(
        key=str(r.k), orders=_int(r.orders), shipped=_int(r.shipped), open=_int(r.open),
        units=_int(r.units), cost_cents=_int(r.cost), revenue_cents=None, refund_cents=None,
        cancelled_cents=None) for r in conn.execute(stmt)}


def _sales(conn: Connection, window: Window, by: Grouping) -> dict[str, SalesRow]:
    if by == "supplier":
        return _supplier_rows(conn, window)
    if by == "sku":
        rows = _line_figures(conn, window)
    elif by == "pool":
        rows = _pool_orders(conn, window)
    else:
        rows = _order_figures(conn, window, by)
    units = _units(conn, window, by) if by != "pool" else {}
    for k, (cost, n, unknown) in _costs(conn, window, by).items():
        row = rows.setdefault(k, SalesRow(key=k))
        row.cost_cents, row.codes, row.cost_unknown = cost, n, unknown
        if by == "pool":
            row.units = n  # a pool's units are its codes
    for k, u in units.items():
        rows.setdefault(k, SalesRow(key=k)).units = u
    if by != "pool":
        for k, cost in _topup_costs(conn, window, by).items():
            rows.setdefault(k, SalesRow(key=k)).cost_cents += cost
    return rows


def build(engine: Engine, *, since: datetime, until: datetime | None = None,
          by: Grouping = "total", now: datetime | None = None,
          zone: tzinfo = DEFAULT_ZONE) -> Report:
    """The report for orders paid in ``[since, until)``, grouped ``by`` (days are local days
    in ``zone``); always with the total and the pool stock rows."""
    if by not in GROUPINGS:
        raise UserError(f"--by {by!r}: use one of {', '.join(GROUPINGS[1:])}")
    now = now or utcnow()
    window = Window(since, until or now, zone)
    if window.since >= window.until:
        raise UserError("the report's start is not before its end")
    with engine.connect() as conn:
        total = _sales(conn, window, "total").get("total", SalesRow(key="total"))
        rows = [] if by == "total" else sorted(_sales(conn, window, by).values(),
                                               key=lambda r: r.key)
        pool_rows = _pool_stock(conn, window, now)
        restocked = _restocking(conn, window)
    return Report(window, by, rows, total, pool_rows, restocked)


# ---------------------------------------------------------------------------- paid to shipped

# Upper edges (seconds) of the paid→shipped buckets; the last bucket is "longer".
LATENCY_EDGES: tuple[int, ...] = (10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)


@dataclass(frozen=True)
class LatencyRow:
    """Shipped orders of one day (or ``total``) counted by paid→shipped bucket; p50/p90 are
    the upper edge of the bucket that holds them (None: the longest bucket, or no orders)."""

    key: str
    counts: list[int]  # one per LATENCY_EDGES, plus one for "longer"

    @property
    def shipped(self) -> int:
        return sum(self.counts)

    def percentile(self, q: float) -> int | None:
        """The upper bucket edge (seconds) at or below which ``q`` of the orders shipped."""
        need, seen = q * self.shipped, 0
        for edge, n in zip(LATENCY_EDGES, self.counts, strict=False):
            seen += n
            if self.shipped and seen >= need:
                return edge
        return None

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "shipped": self.shipped, "counts": self.counts,
                "p50_le_s": self.percentile(0.5), "p90_le_s": self.percentile(0.9)}


def paid_to_shipped(engine: Engine, *, since: datetime, until: datetime,
                    zone: tzinfo = DEFAULT_ZONE) -> list[LatencyRow]:
    """Shipped orders paid in ``[since, until)`` by paid day (local, in ``zone``) and
    paid→shipped bucket (one grouped query), with a ``total`` row last."""
    window = Window(since, until, zone)
    with engine.connect() as conn:
        secs = _seconds(conn, _paid(), orders.c.shipped_at)
        # Literal numbers, not bound parameters: the same CASE is in SELECT and GROUP BY,
        # and PostgreSQL's server-side parameters would make them two expressions. Delays are
        # compared to the second (SQLite's julianday arithmetic is off by microseconds).
        bucket = case(*((secs < literal_column(f"{edge}.5"), literal_column(str(i)))
                        for i, edge in enumerate(LATENCY_EDGES)),
                      else_=literal_column(str(len(LATENCY_EDGES)))).label("b")
        key = _key("day", conn, window).label("k")
        rows = conn.execute(
            select(key, bucket, func.count().label("n"))
            .where(_in_window(window), orders.c.state.in_(SHIPPED),
                   orders.c.shipped_at.is_not(None))
            .group_by(key, bucket)
        ).all()
    days: dict[str, list[int]] = {}
    total = [0] * (len(LATENCY_EDGES) + 1)
    for r in rows:
        counts = days.setdefault(str(r.k), [0] * (len(LATENCY_EDGES) + 1))
        counts[int(r.b)] += int(r.n)
        total[int(r.b)] += int(r.n)
    return [*(LatencyRow(k, v) for k, v in sorted(days.items())), LatencyRow("total", total)]
