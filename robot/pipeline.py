"""The order state machine: intake, allocation, and what the platform's news does to an order.

States (DESIGN.md)::

    received ──risk/unmapped──► held ──release──► received | allocated
    received ──► allocated (codes reserved)      or ──► waiting_stock ──codes arrive──► …
    received ──supplier route (a top-up, or a card its pool lacks)──► sourcing
    sourcing ──every unit bought (robot.sourcing)──► allocated   ──every supplier failed──► failed
    sourcing ──refunded meanwhile, purchase done──► cancelled / held, for review
    allocated ──write-back ok──► shipped ──refund──► refunded
    allocated ──max attempts──► failed ──replay──► allocated (same codes)
    received ──nothing mapped, shop says ignore──► ignored
    any unshipped state ──closed/refunded on the platform or by a person──► cancelled / rejected

Every transition is one short transaction, guarded by the state it leaves (``UPDATE … WHERE
state = …`` with the row count checked), so concurrent workers and processes cannot apply a
transition twice. Allocation reserves every code of an order or none. No platform call is
ever made while a transaction is open.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any, Literal, Protocol

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Row,
    bindparam,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from connectors.base import Order, OrderLine, PlatformStatus, RefundState, UnreadableOrder
from robot import audit, risk, supplyroute
from robot.clock import DEFAULT_ZONE, NEVER, to_naive_utc, utcnow
from robot.db import dialect_of, first, transaction, write, write_many
from robot.log import get_logger
from robot.matcher import ID_CHUNK, MappingLike, Need, claim, find_pools, resolve_line
from robot.schema import (
    codes,
    deliveries,
    order_lines,
    orders,
    outbox,
    replacements,
    stock,
)
from robot.states import (
    IN_FLIGHT,
    TO_ALLOCATE,
    UNSHIPPED,
    DeliveryState,
    OrderState,
    OutboxState,
    ReplacementState,
)

log = get_logger(__name__)

#: Unshipped orders the robot still means to ship (not parked for a person).
_STILL_TO_SHIP = (OrderState.RECEIVED, OrderState.WAITING_STOCK, OrderState.ALLOCATED,
                  OrderState.FAILED)

#: ``platform_status`` of an order parked because its data was unreadable (no lines kept):
#: the next readable snapshot takes it in as if it were new.
UNREADABLE = "unreadable"
UNREADABLE_REASON = "unreadable platform data: "
#: Sanity bounds at the boundary: beyond them a value is the platform's bad data, not an
#: order (and would overflow a column, which a server database reports as an error that
#: looks like an outage). No line of virtual goods sells more than this many units.
MAX_LINE_QUANTITY = 10_000
MAX_CENTS = 10**12  # ten billion yuan
#: Column widths (robot.schema) of what an Order carries into the database.
ID_MAX, OUTER_ID_MAX, BUYER_ID_MAX, IP_MAX, CURRENCY_MAX = 64, 128, 128, 64, 8
EMAIL_MAX, PHONE_MAX = 254, 32  # the buyer's contact columns
WAITING_RETRY = timedelta(seconds=60)


class ShopRules(Protocol):
    """What the pipeline needs of a shop's configuration (see robot.config.ShopConfig)."""

    @property
    def name(self) -> str: ...
    @property
    def platform(self) -> str: ...
    @property
    def unmapped(self) -> Literal["hold", "ignore"]: ...
    @property
    def items(self) -> Sequence[MappingLike]: ...
    # Optional: ``risk`` (robot.config.RiskRules), read with getattr; absent means no rules
    # (the blacklists still apply).


@dataclass(frozen=True)
class IntakeResult:
    order_id: int | None
    action: Literal["created", "duplicate", "updated", "skipped", "unidentifiable"]
    state: str | None


def _is_server(conn: Connection) -> bool:
    return dialect_of(conn) != "sqlite"


def _lock_order(conn: Connection, where: ColumnElement[bool]) -> Row[Any] | None:
    stmt = select(orders).where(where)
    if _is_server(conn):
        stmt = stmt.with_for_update()
    return conn.execute(stmt).first()


# The hot path's statements are built once and given their values at execution: building a
# statement per call (``.values(...)``, ``.where(x == value)``) cost more CPU than running
# it (profiles in BENCHMARKS.md). An UPDATE without ``.values()`` sets the columns named by
# the execution's parameters.
_BY_PLATFORM_ID = select(orders).where(orders.c.shop == bindparam("b_shop"),
                                       orders.c.platform_order_id == bindparam("b_oid"))
_BY_PLATFORM_ID_LOCKED = _BY_PLATFORM_ID.with_for_update()
_INSERT_ORDER = insert(orders)
_INSERT_LINES = insert(order_lines)
_INSERT_DELIVERIES = insert(deliveries)
_INSERT_OUTBOX = insert(outbox)
_MOVE_ORDER = update(orders).where(orders.c.id == bindparam("b_id"),
                                   orders.c.state == bindparam("b_from"))


def _find_order(conn: Connection, shop: str, platform_order_id: str) -> Row[Any] | None:
    """The order with its row lock on server databases (SQLite's writer lock covers it)."""
    stmt = _BY_PLATFORM_ID_LOCKED if _is_server(conn) else _BY_PLATFORM_ID
    return first(conn, stmt, {"b_shop": shop, "b_oid": platform_order_id})


# --------------------------------------------------------------------------- intake


def intake(engine: Engine, shop: ShopRules, order: Order, *, actor: str = "intake",
           now: datetime | None = None, allocate: bool = False,
           zone: tzinfo = DEFAULT_ZONE,
           then: Callable[[Connection, IntakeResult], None] | None = None,
           unless: Callable[[Connection], bool] | None = None) -> IntakeResult:
    """Record a platform order snapshot. Idempotent on (shop, platform order id).

    A new paid order is created (received, held or ignored); a known order is updated from
    the snapshot (closed or refunded → cancelled / refunded); anything else is a no-op.

    With ``allocate`` a new order that passes the checks is allocated in the same
    transaction (``allocated``, or ``waiting_stock`` with the reason): one commit per order
    instead of two, and the claim is as durable as the order itself. The daemon takes orders
    in this way; without it the order waits ``received`` for :func:`allocate_next`.
    ``zone`` is the robot's ``timezone:``: the day of the risk rules' daily limits.

    A snapshot the platform sent in a shape we cannot use (an
    :class:`~connectors.common.unreadable.UnreadableOrder`, or values outside
    :func:`data_problem`'s bounds) parks the order: a new one is recorded ``held`` with the
    problem as its reason and no lines (so nothing is allocated or written back), an
    unshipped known one is moved to ``held``. The next readable snapshot of a parked order
    takes it in normally. An order whose id is unreadable cannot be parked: it is logged as
    ``order_unidentifiable`` and audited, and the result says ``unidentifiable``.

    ``then`` runs inside the same transaction with the result (a supplier gateway hands an
    order it allocated over in the commit that took it in, see :mod:`robot.supply`).
    ``unless`` runs first in the transaction: True leaves the snapshot alone (``skipped``,
    and ``then`` is not run) — a push's message already applied (:mod:`robot.poller`), so
    the look-up, the intake and the message's record share one commit.
    """
    problem = order.problem if isinstance(order, UnreadableOrder) else data_problem(order)
    if problem is not None and not usable_id(order.platform_order_id):
        return _unidentifiable(engine, shop, order.platform_order_id, problem, actor)
    for _attempt in range(3):
        try:
            with transaction(engine) as conn:
                if unless is not None and unless(conn):
                    return IntakeResult(None, "skipped", None)
                result = intake_in(conn, shop, order, actor=actor, now=now,
                                   allocate=allocate, zone=zone)
                if then is not None:
                    then(conn, result)
                return result
        except IntegrityError:
            # Another worker inserted the same order between our look-up and insert; the
            # unique constraint stopped the second copy. Try again as an update.
            continue
    raise RuntimeError("intake kept colliding on (shop, platform_order_id)")


def intake_in(conn: Connection, shop: ShopRules, order: Order, *, actor: str = "intake",
              now: datetime | None = None, allocate: bool = False,
              zone: tzinfo = DEFAULT_ZONE) -> IntakeResult:
    """:func:`intake`'s work inside the caller's transaction, for an order whose id is
    usable (:func:`usable_id`). Raises ``IntegrityError`` when another transaction inserted
    the same order meanwhile: the caller runs it again in a new transaction (or savepoint)."""
    problem = order.problem if isinstance(order, UnreadableOrder) else data_problem(order)
    if problem is not None:
        return _park_tx(conn, shop, order.platform_order_id, problem, actor, now or utcnow())
    return _intake_tx(conn, shop, order, actor, now or utcnow(), allocate, zone)


def known_order_ids(engine: Engine, shop: str, platform_order_ids: Sequence[str]) -> set[str]:
    """Which of ``platform_order_ids`` the shop already holds (the reconciliation sweep)."""
    known: set[str] = set()
    ids = list(dict.fromkeys(platform_order_ids))
    with engine.connect() as conn:
        for start in range(0, len(ids), ID_CHUNK):
            chunk = ids[start:start + ID_CHUNK]
            known.update(str(r[0]) for r in conn.execute(
                select(orders.c.platform_order_id)
                .where(orders.c.shop == shop, orders.c.platform_order_id.in_(chunk))))
    return known


def pool_needs(shop: ShopRules, order: Order) -> dict[str, int]:
    """The codes a new paid order would claim, per pool (its live mapped lines): what a
    group commit claims for a batch at once (:func:`robot.matcher.claim_ahead`). An estimate
    that may run over (an order already known, held, or bought from a supplier): codes no
    delivery takes go back to stock before the commit."""
    needs: dict[str, int] = {}
    if isinstance(order, UnreadableOrder) or order.status is not PlatformStatus.PAID \
            or data_problem(order) is not None:
        return needs
    for line in _live_lines(order):
        for need in resolve_line(shop.items, line) or ():
            needs[need.pool] = needs.get(need.pool, 0) + need.per_unit * line.quantity
    return needs


def usable_id(platform_order_id: str) -> bool:
    """Whether an order can be recorded (even parked) under this id."""
    return bool(platform_order_id.strip()) and len(platform_order_id) <= ID_MAX


def data_problem(snap: Order) -> str | None:
    """What makes a normalized snapshot unusable (None: nothing). Checked at the boundary
    for every connector alike, before anything is written."""
    oid = snap.platform_order_id
    if not oid.strip():
        return "the order id is empty"
    if len(oid) > ID_MAX:
        return f"the order id is longer than {ID_MAX} characters"
    if snap.status is PlatformStatus.PAID and not snap.lines:
        return "a paid order with no order lines"
    if not 0 <= snap.total_cents <= MAX_CENTS:
        return f"total {_short(snap.total_cents)} fen is out of range"
    for key, value, limit in (("buyer_id", snap.buyer_id, BUYER_ID_MAX),
                              ("buyer_ip", snap.buyer_ip, IP_MAX),
                              ("currency", snap.currency, CURRENCY_MAX)):
        if value is not None and len(value) > limit:
            return f"{key} is longer than {limit} characters"
    for line in snap.lines:
        where = f"line {line.line_id[:ID_MAX]}"
        if not 0 <= line.quantity <= MAX_LINE_QUANTITY:
            return f"{where}: quantity {_short(line.quantity)} is out of range " \
                   f"(0..{MAX_LINE_QUANTITY})"
        if not 0 <= line.unit_price_cents <= MAX_CENTS:
            return f"{where}: unit price {_short(line.unit_price_cents)} fen is out of range"
        for key, text, limit in (("line_id", line.line_id, ID_MAX),
                                 ("item_id", line.item_id, ID_MAX),
                                 ("sku_id", line.sku_id, ID_MAX),
                                 ("outer_id", line.outer_id, OUTER_ID_MAX)):
            if text is not None and len(text) > limit:
                return f"{where}: {key} is longer than {limit} characters"
    return None


def _short(number: int) -> str:
    text = str(number)
    return text if len(text) <= 24 else text[:12] + "…" + f"({len(text)} digits)"


def _unidentifiable(engine: Engine, shop: ShopRules, platform_order_id: str, problem: str,
                    actor: str) -> IntakeResult:
    # No id, no row to park: say so loudly (log and the audit trail) and let the shop go on.
    # Only the problem text and the id's length are recorded: never the platform's data.
    log.error("order_unidentifiable", shop=shop.name, platform=shop.platform, problem=problem,
              id_length=len(platform_order_id))
    with transaction(engine) as conn:
        audit.append(conn, actor=actor, action="unidentifiable_order", subject=f"shop:{shop.name}",
                     details={"shop": shop.name, "problem": problem})
    return IntakeResult(None, "unidentifiable", None)


def _park_tx(conn: Connection, shop: ShopRules, platform_order_id: str, problem: str,
             actor: str, now: datetime) -> IntakeResult:
    """Hold the order with ``problem`` as the reason (recorded without lines if new)."""
    reason = UNREADABLE_REASON + problem
    row = _find_order(conn, shop.name, platform_order_id)
    if row is not None and row.state not in _STILL_TO_SHIP:
        return IntakeResult(int(row.id), "duplicate", str(row.state))  # parked already, or done
    # Logged once, when the order is parked; a later poll seeing it again says nothing.
    log.warning("order_unreadable", shop=shop.name, platform_order_id=platform_order_id,
                problem=problem)
    if row is None:
        inserted = conn.execute(insert(orders).values(
            shop=shop.name, platform=shop.platform, platform_order_id=platform_order_id,
            state=OrderState.HELD, platform_status=UNREADABLE, reason=reason, total_cents=0,
            currency="CNY", extra="{}", received_at=now, updated_at=now, due_at=now,
        )).inserted_primary_key
        assert inserted is not None
        order_id = int(inserted[0])
        audit.append(conn, actor=actor, action="intake", subject=f"order:{order_id}",
                     details={"shop": shop.name, "platform_order_id": platform_order_id,
                              "state": OrderState.HELD, "reason": reason})
        return IntakeResult(order_id, "created", OrderState.HELD)
    # A known order whose new snapshot is unreadable: it may have been refunded, so it is
    # not shipped until a person (or a readable snapshot) says so.
    order_id, state = int(row.id), OrderState(row.state)
    transition(conn, order_id, state, OrderState.HELD, reason, now)
    audit.append(conn, actor=actor, action="hold", subject=f"order:{order_id}",
                 details={"reason": reason})
    return IntakeResult(order_id, "updated", OrderState.HELD)


def _intake_tx(conn: Connection, shop: ShopRules, snap: Order, actor: str,
               now: datetime, allocate: bool = False,
               zone: tzinfo = DEFAULT_ZONE) -> IntakeResult:
    row = _find_order(conn, shop.name, snap.platform_order_id)
    parked: int | None = None
    if row is not None:
        if not (row.state == OrderState.HELD and row.platform_status == UNREADABLE):
            return _apply_snapshot(conn, row, snap, actor, now)
        parked = int(row.id)  # parked unreadable, now readable: take it in as new
    live = _live_lines(snap)
    if snap.status is not PlatformStatus.PAID or not live:
        if parked is not None:
            return _settle_parked(conn, parked, snap, actor, now)
        return IntakeResult(None, "skipped", None)

    resolved: list[tuple[OrderLine, list[Need] | None]] = [
        (line, resolve_line(shop.items, line)) for line in snap.lines
    ]
    supplies = _supplies(shop, snap, resolved, live)
    state, reason, hits = _first_verdict(conn, shop, snap, resolved, live, now, zone)
    state, reason = _account_verdict(state, reason, supplies)
    values = _order_values(snap, state, reason, now)
    order_id = _store_order(conn, shop, snap, parked, values, now)
    wanted = _insert_lines(conn, order_id, resolved, live, supplies)
    entry = audit.Entry(actor=actor, action="intake", subject=f"order:{order_id}",
                        details={"shop": shop.name,
                                 "platform_order_id": snap.platform_order_id,
                                 "state": state, "reason": reason})
    if allocate and state == OrderState.RECEIVED:
        result = _allocate_locked(conn, order_id, state, now, actor, wanted=wanted,
                                  before=[entry])
        return IntakeResult(order_id, "created", result.state)
    audit.append_many(conn, [entry])
    if hits:
        risk.record_hold(conn, order_id, hits, actor=actor)
    return IntakeResult(order_id, "created", state)


def _supplies(shop: ShopRules, snap: Order,
              resolved: Sequence[tuple[OrderLine, list[Need] | None]],
              live: Sequence[OrderLine]) -> dict[int, supplyroute.Supply]:
    """``line_no -> Supply`` of the live lines whose mapping names suppliers."""
    out: dict[int, supplyroute.Supply] = {}
    for no, (line, needs) in enumerate(resolved):
        if needs is None or line not in live:
            continue
        found = supplyroute.supply_for(supplyroute.find_mapping(shop.items, line), snap, line)
        if found is not None:
            out[no] = found
    return out


def _account_verdict(state: OrderState, reason: str | None,
                     supplies: dict[int, supplyroute.Supply]) -> tuple[OrderState, str | None]:
    """A top-up line without a usable account holds the order (a person supplies it with
    ``robot orders release ID --account ...``)."""
    problems = [f"line {no}: {s.problem}" for no, s in sorted(supplies.items()) if s.problem]
    if not problems or state not in (OrderState.RECEIVED, OrderState.HELD):
        return state, reason
    return OrderState.HELD, "; ".join(filter(None, (reason, *problems)))


def _live_lines(snap: Order) -> list[OrderLine]:
    """The lines still to ship: not refunded (or refund refused) and with a quantity."""
    return [line for line in snap.lines
            if line.refund in (RefundState.NONE, RefundState.REFUSED) and line.quantity > 0]


def _first_verdict(conn: Connection, shop: ShopRules, snap: Order,
                   resolved: Sequence[tuple[OrderLine, list[Need] | None]],
                   live: Sequence[OrderLine], now: datetime,
                   zone: tzinfo) -> tuple[OrderState, str | None, list[risk.Hit]]:
    """A new paid order's first state: held for unmapped SKUs or risk, ignored when no live
    line maps to a pool, else received; with the reason and the risk rules that hit."""
    unmapped = [line for line, needs in resolved if needs is None and line in live]
    mapped_live = [line for line, needs in resolved if needs is not None and line in live]
    state, reason = OrderState.RECEIVED, None
    if unmapped and shop.unmapped == "hold":
        state = OrderState.HELD
        reason = "unmapped SKU: " + ", ".join(_describe(line) for line in unmapped)
    elif not mapped_live:
        return OrderState.IGNORED, "no line maps to a pool", []
    rules = getattr(shop, "risk", None)
    hits = risk.check_new_order(conn, rules, _candidate(shop, snap, mapped_live), now, zone)
    if hits:
        state, reason = OrderState.HELD, "; ".join(filter(None, (reason, risk.reason_of(hits))))
    return state, reason, hits


def _order_values(snap: Order, state: OrderState, reason: str | None,
                  now: datetime) -> dict[str, Any]:
    """The order row's columns taken from a readable snapshot (a new or revived order)."""
    return {
        "state": state, "platform_status": snap.status.value, "reason": reason,
        "buyer_id": snap.buyer_id,
        "buyer_ip": risk.canonical_ip(snap.buyer_ip) if snap.buyer_ip else None,
        # A contact that does not fit is dropped, not the order: it only serves notices.
        "buyer_email": _fits(snap.buyer_email, EMAIL_MAX),
        "buyer_phone": _fits(snap.buyer_phone, PHONE_MAX),
        "total_cents": snap.total_cents,
        "currency": snap.currency, "extra": json.dumps(dict(snap.extra), sort_keys=True),
        "paid_at": to_naive_utc(snap.paid_at) if snap.paid_at else None,
        "updated_at": now, "due_at": now,
    }


def _fits(value: str | None, limit: int) -> str | None:
    text = (value or "").strip()
    return text if 0 < len(text) <= limit else None


def _store_order(conn: Connection, shop: ShopRules, snap: Order, parked: int | None,
                 values: dict[str, Any], now: datetime) -> int:
    """Revive the parked row, or insert a new one; the order's id."""
    if parked is not None:
        _revive(conn, parked, values)
        return parked
    inserted = write(
        conn, _INSERT_ORDER, {"shop": shop.name, "platform": shop.platform,
                              "platform_order_id": snap.platform_order_id, "received_at": now,
                              **values}
    ).inserted_primary_key
    assert inserted is not None
    return int(inserted[0])


def _insert_lines(conn: Connection, order_id: int,
                  resolved: Sequence[tuple[OrderLine, list[Need] | None]],
                  live: Sequence[OrderLine],
                  supplies: dict[int, supplyroute.Supply] | None = None) -> list[_Wanted]:
    """Write the order's lines with their pool shares (none for a dead or unmapped line) and
    supplier routes; the shares and routes, for allocating in the same transaction."""
    routes = supplies or {}
    wanted: list[_Wanted] = [
        (no, line.quantity, [(n.pool, n.per_unit) for n in needs] if needs and line in live
         else [], routes.get(no))
        for no, (line, needs) in enumerate(resolved)
    ]
    write_many(
        conn, _INSERT_LINES,
        [
            {
                "order_id": order_id, "line_no": no, "line_id": line.line_id,
                "item_id": line.item_id, "sku_id": line.sku_id, "outer_id": line.outer_id,
                "title": line.title[:255], "quantity": line.quantity,
                "unit_price_cents": line.unit_price_cents, "refund": line.refund.value,
                "mapping": json.dumps([list(share) for share in shares]),
                "supply": route.to_json() if route is not None else None,
            }
            for (no, _qty, shares, route), (line, _needs) in zip(wanted, resolved, strict=True)
        ],
    )
    return wanted


def _revive(conn: Connection, order_id: int, values: dict[str, Any]) -> None:
    result = conn.execute(update(orders).where(orders.c.id == order_id,
                                               orders.c.state == OrderState.HELD,
                                               orders.c.platform_status == UNREADABLE)
                          .values(**values))
    if result.rowcount != 1:
        raise StateConflict(f"order {order_id} is no longer parked")


def _settle_parked(conn: Connection, order_id: int, snap: Order, actor: str,
                   now: datetime) -> IntakeResult:
    """A parked order's first readable snapshot says there is nothing to ship."""
    conn.execute(update(orders).where(orders.c.id == order_id)
                 .values(platform_status=snap.status.value, updated_at=now))
    if snap.status is PlatformStatus.CLOSED or snap.fully_refunded:
        cancel(conn, order_id, OrderState.HELD, OrderState.CANCELLED, "closed on the platform",
               actor, now)
        return IntakeResult(order_id, "updated", OrderState.CANCELLED)
    # Shipped by hand, completed, not paid yet, or nothing left to ship: a person decides.
    transition(conn, order_id, OrderState.HELD, OrderState.HELD,
                f"platform reports {snap.status.value} with nothing for the robot to ship", now)
    return IntakeResult(order_id, "updated", OrderState.HELD)


def _candidate(shop: ShopRules, snap: Order, lines: Sequence[OrderLine]) -> risk.Candidate:
    return risk.Candidate(
        platform=shop.platform, buyer_id=snap.buyer_id, buyer_ip=snap.buyer_ip,
        total_cents=snap.total_cents,
        lines=[risk.LineFacts(ln.quantity, ln.item_id, ln.sku_id, ln.outer_id) for ln in lines])


def _describe(line: OrderLine) -> str:
    parts = [f"{k}={getattr(line, k)}" for k in ("item_id", "sku_id", "outer_id")
             if getattr(line, k)]
    return f"line {line.line_id} ({' '.join(parts) or 'no ids'})"


def _apply_snapshot(conn: Connection, row: Row[Any], snap: Order, actor: str,
                    now: datetime) -> IntakeResult:
    order_id = int(row.id)
    state = OrderState(row.state)
    changed_lines = _update_line_refunds(conn, order_id, snap)
    status_changed = snap.status.value != row.platform_status
    if status_changed:
        conn.execute(update(orders).where(orders.c.id == order_id)
                     .values(platform_status=snap.status.value, updated_at=now))
    if not status_changed and not changed_lines:
        return IntakeResult(order_id, "duplicate", state)
    if snap.status is PlatformStatus.CLOSED or snap.fully_refunded:
        moved = _apply_closed(conn, order_id, state, snap, actor, now)
    elif changed_lines:
        moved = _apply_line_refunds(conn, order_id, state, changed_lines, actor, now)
    else:
        moved = None
    return IntakeResult(order_id, "updated", moved or state)


def _apply_closed(conn: Connection, order_id: int, state: OrderState, snap: Order, actor: str,
                  now: datetime) -> OrderState | None:
    """A known order closed or fully refunded on the platform: cancelled before shipping,
    refunded after; the state it moved to (None: it stays)."""
    if state in UNSHIPPED:
        why = "refunded before shipping" if snap.fully_refunded else "closed on the platform"
        cancel(conn, order_id, state, OrderState.CANCELLED, why, actor, now)
        return OrderState.CANCELLED
    if state == OrderState.SHIPPED:
        _refund_after_delivery(conn, order_id, actor, now, "refunded after delivery")
        return OrderState.REFUNDED
    if state in IN_FLIGHT:
        _refund_in_flight(conn, order_id, actor, "closed or refunded on the platform")
    return None


def _refund_in_flight(conn: Connection, order_id: int, actor: str, why: str) -> None:
    """A refund while a supplier purchase is in flight: no supplier cancels, so the purchase
    finishes; the sourcing worker then cancels or holds the order for review (robot.sourcing).
    Recorded now, so the trail shows when the platform said so."""
    log.warning("refund_while_sourcing", order_id=order_id, reason=why)
    audit.append(conn, actor=actor, action="refund_in_flight", subject=f"order:{order_id}",
                 details={"reason": why})


def _apply_line_refunds(conn: Connection, order_id: int, state: OrderState,
                        changed_lines: Sequence[OrderLine], actor: str,
                        now: datetime) -> OrderState | None:
    """Lines whose refund state changed: a shipped line refunded refunds the order, a refund
    requested before shipping holds it; the state it moved to (None: it stays)."""
    refunded = [ln for ln in changed_lines if ln.refund is RefundState.REFUNDED]
    requested = [ln for ln in changed_lines
                 if ln.refund in (RefundState.REQUESTED, RefundState.REFUNDED)]
    if state == OrderState.SHIPPED and refunded:
        _refund_after_delivery(conn, order_id, actor, now,
                               "line refunded after delivery: "
                               + ", ".join(ln.line_id for ln in refunded))
        return OrderState.REFUNDED
    if state in IN_FLIGHT and requested:
        _refund_in_flight(conn, order_id, actor, "refund requested on line "
                          + ", ".join(ln.line_id for ln in requested))
        return None
    if state in _STILL_TO_SHIP and requested:
        reason = "refund requested on line " + ", ".join(ln.line_id for ln in requested)
        transition(conn, order_id, state, OrderState.HELD, reason, now)
        audit.append(conn, actor=actor, action="hold", subject=f"order:{order_id}",
                     details={"reason": reason})
        return OrderState.HELD
    return None


def _update_line_refunds(conn: Connection, order_id: int, snap: Order) -> list[OrderLine]:
    stored = {r.line_id: r for r in conn.execute(
        select(order_lines.c.line_no, order_lines.c.line_id, order_lines.c.refund)
        .where(order_lines.c.order_id == order_id))}
    changed = []
    for line in snap.lines:
        old = stored.get(line.line_id)
        if old is not None and old.refund != line.refund.value:
            conn.execute(update(order_lines)
                         .where(order_lines.c.order_id == order_id,
                                order_lines.c.line_no == old.line_no)
                         .values(refund=line.refund.value))
            changed.append(line)
    return changed


def transition(conn: Connection, order_id: int, from_state: OrderState, to_state: OrderState,
               reason: str | None, now: datetime, **values: object) -> None:
    """Move an order between states, guarded by the state it leaves: the only way an order's
    state changes once it exists (:exc:`StateConflict` when it is no longer ``from_state``).

    ``values`` are further columns set in the same statement (``shipped_at``, ``due_at``).
    """
    result = write(conn, _MOVE_ORDER, {"b_id": order_id, "b_from": from_state,
                                       "state": to_state, "reason": reason,
                                       "updated_at": now, **values})
    if result.rowcount != 1:
        raise StateConflict(f"order {order_id} is no longer {from_state}")


class StateConflict(Exception):
    """The order moved on under us (another worker or process acted first)."""


def cancel(conn: Connection, order_id: int, from_state: OrderState, to_state: OrderState,
           reason: str, actor: str, now: datetime) -> dict[str, int]:
    """Cancel or reject an unshipped order (a :func:`transition` to ``to_state``, cancelled or
    rejected); unseen reserved codes go back to stock, its pending write-back is cancelled.

    Unless its shipment is on its way: a worker holds the order's ship job (its lease has not
    run out), so the platform may be taking the shipment at this very moment. Then the codes
    stay reserved and the ship job stays the worker's; its outcome settles them
    (:func:`settle_cancelled_shipment`): shipped on the platform → ``refunded`` with the codes
    kept for review, refused → the codes go back to stock. Returning them now could hand a
    code that reached the buyer to a second buyer.
    """
    transition(conn, order_id, from_state, to_state, reason, now)
    held = to_state == OrderState.CANCELLED and shipment_in_flight(conn, order_id, now)
    returned, flagged = ([], []) if held else _release_codes(conn, order_id, now)
    conn.execute(update(outbox).where(outbox.c.order_id == order_id,
                                      outbox.c.state == OutboxState.PENDING,
                                      *([outbox.c.kind != "ship"] if held else []))
                 .values(state=OutboxState.CANCELLED, done_at=now))
    counts = {"returned": len(returned), "flagged": len(flagged), "held": int(held)}
    action = "cancel" if to_state == OrderState.CANCELLED else "reject"
    audit.append(conn, actor=actor, action=action,
                 subject=f"order:{order_id}",
                 details={"reason": reason, **counts,
                          "returned_code_ids": [int(r.code_id) for r in returned]})
    return counts


def shipment_in_flight(conn: Connection, order_id: int, now: datetime) -> bool:
    """Whether a worker is writing the order's shipment to its platform right now (it holds
    the pending ship job's lease)."""
    return conn.execute(
        select(outbox.c.id).where(outbox.c.order_id == order_id, outbox.c.kind == "ship",
                                  outbox.c.state == OutboxState.PENDING,
                                  outbox.c.claimed_until > now).limit(1)
    ).first() is not None


def _release_codes(conn: Connection, order_id: int, now: datetime) -> tuple[list[Any], list[int]]:
    """The order's reserved codes: unseen ones back to stock, seen ones flagged for review."""
    rows = conn.execute(
        select(deliveries.c.id, deliveries.c.code_id, deliveries.c.seen_at, deliveries.c.pool_id,
               codes.c.expires_at)
        .join(codes, codes.c.id == deliveries.c.code_id)
        .where(deliveries.c.order_id == order_id, deliveries.c.state == DeliveryState.RESERVED)
    ).all()
    returned = [r for r in rows if r.seen_at is None]
    flagged = [int(r.id) for r in rows if r.seen_at is not None]
    if returned:
        conn.execute(delete(deliveries).where(deliveries.c.id.in_([int(r.id) for r in returned])))
        conn.execute(insert(stock), [
            {"code_id": int(r.code_id), "pool_id": int(r.pool_id),
             "expires_at": r.expires_at or NEVER} for r in returned
        ])
        # Codes came back: orders waiting for stock may now be served.
        conn.execute(update(orders).where(orders.c.state == OrderState.WAITING_STOCK)
                     .values(due_at=now))
    if flagged:
        conn.execute(update(deliveries).where(deliveries.c.id.in_(flagged))
                     .values(state=DeliveryState.REVIEW))
    return returned, flagged


def settle_cancelled_shipment(conn: Connection, order_id: int, *, shipped: bool | None,
                              actor: str, now: datetime) -> str | None:
    """Settle the codes a cancel left reserved because the order's shipment was on its way
    (:func:`cancel`), once the platform's answer is known; what was done, or None when the
    order holds no such codes (it was not cancelled during a shipment, or is settled).

    ``shipped``: True — the platform took the shipment: the order is ``refunded`` (shipped,
    then refunded) and its codes are the buyer's, flagged for review; False — the platform
    refused it: unseen codes go back to stock; None — nobody can tell (the call's answer was
    lost and the platform shows only that the order is closed): the codes are flagged for
    review, never put back, and the order stays cancelled with that said in its reason.
    """
    row = conn.execute(select(orders.c.state, orders.c.reason).where(orders.c.id == order_id)
                       ).one()
    reserved = (deliveries.c.order_id == order_id, deliveries.c.state == DeliveryState.RESERVED)
    if row.state != OrderState.CANCELLED or conn.execute(
            select(deliveries.c.id).where(*reserved).limit(1)).first() is None:
        return None
    if shipped:
        transition(conn, order_id, OrderState.CANCELLED, OrderState.REFUNDED,
                   f"{row.reason}; the shipment on its way reached the platform: codes kept "
                   "for review", now, shipped_at=now)
        conn.execute(update(deliveries).where(*reserved)
                     .values(state=DeliveryState.REVIEW, delivered_at=now))
        outcome = "shipped"
    elif shipped is None:
        transition(conn, order_id, OrderState.CANCELLED, OrderState.CANCELLED,
                   f"{row.reason}; whether the shipment on its way reached the platform is "
                   "unknown: codes flagged for review", now)
        conn.execute(update(deliveries).where(*reserved).values(state=DeliveryState.REVIEW))
        outcome = "unknown"
    else:
        _release_codes(conn, order_id, now)
        outcome = "refused"
    audit.append(conn, actor=actor, action="settle_cancel", subject=f"order:{order_id}",
                 details={"shipment": outcome})
    return outcome


def _refund_after_delivery(conn: Connection, order_id: int, actor: str, now: datetime,
                           reason: str) -> None:
    transition(conn, order_id, OrderState.SHIPPED, OrderState.REFUNDED, reason, now)
    # Defective codes keep that state (they count against their batch); the rest are flagged.
    flagged = conn.execute(update(deliveries).where(deliveries.c.order_id == order_id,
                                                    deliveries.c.state != DeliveryState.DEFECTIVE)
                           .values(state=DeliveryState.REVIEW)).rowcount
    # Replacements still waiting for stock are owed to nobody now.
    conn.execute(update(replacements).where(replacements.c.order_id == order_id,
                                            replacements.c.state == ReplacementState.WAITING)
                 .values(state=ReplacementState.CANCELLED, done_at=now))
    audit.append(conn, actor=actor, action="refund", subject=f"order:{order_id}",
                 details={"reason": reason, "codes_flagged": flagged})


# --------------------------------------------------------------------------- allocation


@dataclass(frozen=True)
class AllocationResult:
    order_id: int
    state: OrderState  # allocated or waiting_stock
    code_ids: tuple[int, ...] = ()
    reason: str | None = None


def allocate_next(engine: Engine, *, now: datetime | None = None,
                  actor: str = "allocator") -> AllocationResult | None:
    """Allocate the oldest due order; None when nothing is due.

    Orders are claimed row by row (``FOR UPDATE SKIP LOCKED`` on server databases), so any
    number of workers in any number of processes can call this concurrently.
    """
    now = now or utcnow()
    with transaction(engine) as conn:
        stmt = (
            select(orders.c.id, orders.c.state)
            .where(orders.c.state.in_(TO_ALLOCATE), orders.c.due_at <= now)
            .order_by(orders.c.due_at, orders.c.id)
            .limit(1)
        )
        if _is_server(conn):
            stmt = stmt.with_for_update(skip_locked=True)
        row = conn.execute(stmt).first()
        if row is None:
            return None
        return _allocate_locked(conn, int(row.id), OrderState(row.state), now, actor)


#: Orders allocated per transaction by :func:`allocate_due`.
ALLOCATE_BATCH = 50
_ANY_DUE = (select(orders.c.id)
            .where(orders.c.state.in_(TO_ALLOCATE), orders.c.due_at <= bindparam("b_now"))
            .limit(1))
_DUE = (select(orders.c.id, orders.c.state)
        .where(orders.c.state.in_(TO_ALLOCATE), orders.c.due_at <= bindparam("b_now"))
        .order_by(orders.c.due_at, orders.c.id)
        .limit(bindparam("b_limit")))
_DUE_LOCKED = _DUE.with_for_update(skip_locked=True)


def allocate_due(engine: Engine, *, now: datetime | None = None, actor: str = "allocator",
                 limit: int = ALLOCATE_BATCH) -> list[AllocationResult]:
    """Allocate up to ``limit`` due orders, oldest first, in one transaction (one commit
    for the batch); an empty list when nothing is due.

    Each order is allocated as by :func:`allocate_next` — all its codes or none, and on
    server databases the orders are claimed ``FOR UPDATE SKIP LOCKED``, so workers in other
    processes take other orders. Whether anything is due is read first without the write
    lock: an idle allocator takes no write transaction.
    """
    now = now or utcnow()
    with engine.connect() as conn:
        if conn.execute(_ANY_DUE, {"b_now": now}).first() is None:
            return []
    with transaction(engine) as conn:
        stmt = _DUE_LOCKED if _is_server(conn) else _DUE
        rows = conn.execute(stmt, {"b_now": now, "b_limit": limit}).all()
        return [_allocate_locked(conn, int(r.id), OrderState(r.state), now, actor)
                for r in rows]


def allocate(engine: Engine, order_id: int, *, now: datetime | None = None,
             actor: str = "allocator") -> AllocationResult | None:
    """Allocate one given order if it is waiting for allocation; None otherwise."""
    now = now or utcnow()
    with transaction(engine) as conn:
        row = _lock_order(conn, orders.c.id == order_id)
        if row is None or row.state not in TO_ALLOCATE:
            return None
        return _allocate_locked(conn, order_id, OrderState(row.state), now, actor)


#: (line_no, quantity, [(pool name, codes per unit), ...], supplier route) of one order line.
_Wanted = tuple[int, int, list[tuple[str, int]], supplyroute.Supply | None]


def _allocate_locked(conn: Connection, order_id: int, state: OrderState, now: datetime,
                     actor: str, *, wanted: Sequence[_Wanted] | None = None,
                     before: Sequence[audit.Entry] = ()) -> AllocationResult:
    """Reserve every code of the order or none. ``wanted`` is the order's lines when the
    caller has them at hand (intake), else they are read; ``before`` are audit entries of
    this transaction still to be appended ahead of the allocation's (one chain append)."""
    if wanted is None:
        wanted = _read_wanted(conn, order_id)
    plan = _plan(conn, wanted)
    if isinstance(plan, str):
        return _wait(conn, order_id, state, now, plan, actor, before)
    # Lines bought as cards when their pool runs short (a pool, then suppliers).
    fallback = {no for no, _q, _s, route in wanted if route is not None and route.kind == "card"}
    claimed = _claim_all(conn, order_id, plan, now, fallback)
    if isinstance(claimed, str):
        return _wait(conn, order_id, state, now, claimed, actor, before)
    rows, short = claimed
    if rows:
        write_many(conn, _INSERT_DELIVERIES, rows)
    to_source = [(no, qty, route) for no, qty, _s, route in wanted if route is not None
                 and (route.kind == "topup" or no in short)]
    if to_source:
        return _source(conn, order_id, state, now, actor, to_source, rows, before)
    transition(conn, order_id, state, OrderState.ALLOCATED, None, now, allocated_at=now)
    write(conn, _INSERT_OUTBOX, {"order_id": order_id, "kind": "ship",
                                 "state": OutboxState.PENDING, "attempts": 0, "due_at": now,
                                 "created_at": now})
    code_ids = tuple(int(str(r["code_id"])) for r in rows)
    audit.append_many(conn, [*before, audit.Entry(
        actor=actor, action="allocate", subject=f"order:{order_id}",
        details={"code_ids": list(code_ids)})])
    return AllocationResult(order_id, OrderState.ALLOCATED, code_ids)


def _source(conn: Connection, order_id: int, state: OrderState, now: datetime, actor: str,
            lines: Sequence[tuple[int, int, supplyroute.Supply]], rows: Sequence[dict[str, object]],
            before: Sequence[audit.Entry]) -> AllocationResult:
    """Move the order to ``sourcing``: every unit's first attempt (its key) and the order's
    source job are committed with the move, before any supplier is called."""
    transition(conn, order_id, state, OrderState.SOURCING, None, now)
    purchases = supplyroute.start(conn, order_id, lines, now)
    code_ids = tuple(int(str(r["code_id"])) for r in rows)
    audit.append_many(conn, [*before, audit.Entry(
        actor=actor, action="source", subject=f"order:{order_id}",
        details={"lines": [no for no, _q, _s in lines], "purchases": purchases,
                 "code_ids": list(code_ids)})])
    return AllocationResult(order_id, OrderState.SOURCING, code_ids)


def _read_wanted(conn: Connection, order_id: int) -> list[_Wanted]:
    """The order's stored lines with their pool shares and routes, in line order."""
    return [(int(r.line_no), int(r.quantity), [(str(p), int(k)) for p, k in
                                               json.loads(r.mapping)],
             supplyroute.Supply.from_json(r.supply))
            for r in conn.execute(
                select(order_lines.c.line_no, order_lines.c.quantity, order_lines.c.mapping,
                       order_lines.c.supply)
                .where(order_lines.c.order_id == order_id)
                .order_by(order_lines.c.line_no))]


#: (line_no, pool_id, pool name, codes to claim) of one share of one order line.
_Claim = tuple[int, int, str, int]


def _plan(conn: Connection, wanted: Sequence[_Wanted]) -> list[_Claim] | str:
    """The claims to make, or why the order must wait (a pool that does not exist)."""
    pool_ids = find_pools(conn, {pool for _no, _qty, shares, _r in wanted
                                 for pool, _k in shares})
    plan: list[_Claim] = []
    for line_no, quantity, shares, _route in wanted:
        for pool_name, per_unit in shares:
            pid = pool_ids.get(pool_name)
            if pid is None:
                return f"pool {pool_name!r} does not exist"
            plan.append((line_no, pid, pool_name, per_unit * quantity))
    return plan


def _claim_or_none(conn: Connection, pid: int, count: int, now: datetime) -> list[int] | None:
    """All ``count`` codes of a line that can be bought instead, or none (None)."""
    savepoint = conn.begin_nested() if count > 1 else None
    got = claim(conn, pid, count, now)
    if len(got) < count:
        if savepoint is not None:
            savepoint.rollback()
        return None
    if savepoint is not None:
        savepoint.commit()
    return got


def _claim_all(conn: Connection, order_id: int, plan: Sequence[_Claim], now: datetime,
               fallback: set[int] | frozenset[int] = frozenset(),
               ) -> tuple[list[dict[str, object]], set[int]] | str:
    """Claim every code of the plan: the delivery rows to insert and the ``fallback`` lines
    whose pool fell short (bought from suppliers instead); or none and why not."""
    rows: list[dict[str, object]] = []
    per_line: dict[int, int] = {}
    short: set[int] = set()
    # A claim of one code takes it or nothing; only a larger plan can fall short half-way
    # and needs a savepoint to put back what it took.
    savepoint = conn.begin_nested() if sum(claim[3] for claim in plan) > 1 else None
    for line_no, pid, name, count in plan:
        if line_no in fallback:
            taken = _claim_or_none(conn, pid, count, now)
            if taken is None:
                short.add(line_no)
                continue
            got = taken
        else:
            got = claim(conn, pid, count, now)
        if len(got) < count:
            if savepoint is not None:
                savepoint.rollback()
            return f"not enough stock in pool {name!r} (need {count})"
        for cid in got:
            n = per_line.get(line_no, 0)
            per_line[line_no] = n + 1
            rows.append({"order_id": order_id, "line_no": line_no, "n": n, "code_id": cid,
                         "pool_id": pid, "state": DeliveryState.RESERVED, "created_at": now})
    if savepoint is not None:
        savepoint.commit()
    return rows, short


def _wait(conn: Connection, order_id: int, state: OrderState, now: datetime, reason: str,
          actor: str, before: Sequence[audit.Entry] = ()) -> AllocationResult:
    transition(conn, order_id, state, OrderState.WAITING_STOCK, reason, now,
               due_at=now + WAITING_RETRY)
    entries = list(before)
    if state != OrderState.WAITING_STOCK:
        entries.append(audit.Entry(actor=actor, action="wait_stock", subject=f"order:{order_id}",
                                   details={"reason": reason}))
    if entries:
        audit.append_many(conn, entries)
    return AllocationResult(order_id, OrderState.WAITING_STOCK, reason=reason)


def wake_waiting(engine: Engine, *, now: datetime | None = None) -> int:
    """Make every order waiting for stock due now (after an import or a cancel)."""
    with transaction(engine) as conn:
        return int(conn.execute(update(orders).where(orders.c.state == OrderState.WAITING_STOCK)
                                .values(due_at=now or utcnow())).rowcount)
