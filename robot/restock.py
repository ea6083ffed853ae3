"""Automatic restocking: pools that refill themselves from a supplier, within a budget.

A pool with a rule (the robot file's ``restock:``, :mod:`robot.config.restock`) is watched:
when its stock falls to ``below`` or its days of cover (the report's burn rate over the last
week, :func:`robot.report.pool_cover`) under ``cover_days``, a purchase of ``quantity`` codes
is **requested**. What keeps the merchant's money safe, in this order:

* a request takes one of the pool's ``in_flight`` slots and reserves ``quantity x max_cost``
  in the day's and the month's budget in **one guarded UPDATE** of the pool's
  ``restock_state`` row, in the transaction that writes the purchase and its idempotency key.
  Several robot processes go through that row, so they cannot both spend the last of a budget;
  a refused request writes nothing (the transaction is rolled back) and says why;
* with ``approval: true`` the request waits (``awaiting_approval``, a slot held, no budget)
  until ``robot restock approve ID`` reserves the budget the same way;
* before the call, the supplier's price is checked against ``max_cost`` and its balance
  against the reservation; either refusal fails the purchase without calling ``place``;
* the purchase is marked ``placing`` (committed) before the call, and then goes through the
  same normalized call as order sourcing (:func:`robot.sourcing.place_call`): an unknown
  outcome (a lost answer, a crash before recording) is **queried by the key** with backoff,
  placed again under the same key only when the supplier holds nothing under it;
* success is recorded in one transaction, guarded on the purchase still being open: the codes
  (encrypted first, :func:`robot.pools.seal_bought`) go into the pool as a batch of their own
  with supplier, cost and the purchase's key, audited as an ``import``; what was reserved and
  not charged goes back to the budget; the slot is freed. So a purchase is imported once;
* a definite failure gives back the reservation, frees the slot and backs the pool off
  (doubling up to an hour); ``restock_failing`` alerts once while it lasts.

This module holds the rules, the guarded rows and what people ask and see; the worker that
places, queries and records purchases is :mod:`robot.restocker`. No transaction is open while
a supplier is called. Nothing here decrypts a code.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from sqlalchemy import Connection, Engine, case, insert, literal, or_, select, update
from sqlalchemy.exc import IntegrityError

from robot import audit, pools
from robot.alerts import Condition
from robot.clock import DEFAULT_ZONE, to_zone, utcnow
from robot.config.restock import RestockRule
from robot.db import transaction
from robot.display import yuan
from robot.errors import UserError
from robot.log import get_logger
from robot.report import PoolRow, pool_cover
from robot.schema import pools as pools_table
from robot.schema import restock_purchases, restock_state
from robot.states import RestockState
from robot.supplyroute import restock_key

log = get_logger(__name__)

R = RestockState
#: Purchases the supplier may hold (their outcome is still to come).
OPEN = (R.NEW, R.PLACING, R.ACCEPTED, R.PROCESSING, R.UNKNOWN)
#: Purchases holding one of the pool's in-flight slots.
HOLDING = (R.AWAITING_APPROVAL, *OPEN)
ACTOR = "restock"
#: A failing pool waits this long after its first failure, doubling, at most BACKOFF_MAX.
BACKOFF_INITIAL = 60.0
BACKOFF_MAX = 3600.0
rp, rs = restock_purchases, restock_state


class Refused(UserError):
    """The rule does not allow a purchase now (in flight, backing off, budget); nothing was
    written."""

    def __init__(self, message: str, *, budget: bool = False) -> None:
        super().__init__(message)
        self.budget = budget  # the budget refused it (not the slot or the backoff)


@dataclass(frozen=True)
class Periods:
    """The budget periods a moment falls in: the robot's local day and month."""

    day: str
    month: str

    @classmethod
    def at(cls, now: datetime, zone: tzinfo) -> Periods:
        local = to_zone(now, zone)
        return cls(f"{local:%Y-%m-%d}", f"{local:%Y-%m}")


def trigger(rule: RestockRule, row: PoolRow) -> str | None:
    """Why ``rule`` wants codes for a pool in ``row``'s state now (None: it does not)."""
    reasons = []
    if rule.below is not None and row.available <= rule.below:
        reasons.append(f"{row.available} available (rule: {rule.below} or fewer)")
    if rule.cover_days is not None and row.days_of_cover is not None \
            and row.days_of_cover < rule.cover_days:
        reasons.append(f"{row.days_of_cover} days of cover at {row.burn_per_day}/day "
                       f"(rule: under {rule.cover_days:g})")
    return "; ".join(reasons) or None


def backoff(failures: int) -> float:
    """Seconds a pool waits after ``failures`` failed purchases in a row."""
    return float(min(BACKOFF_MAX, BACKOFF_INITIAL * 2.0 ** max(0, failures - 1)))


# ----------------------------------------------------------------------- the guarded rows


def _pool_id(conn: Connection, pool: str) -> int:
    return pools.pool_id(conn, pool)


def ensure_state(engine: Engine, pool_id: int, now: datetime) -> None:
    """The pool's ``restock_state`` row exists (its own transaction: a second process
    creating it at the same moment is no error)."""
    with engine.connect() as conn:
        if conn.execute(select(rs.c.pool_id).where(rs.c.pool_id == pool_id)).first():
            return
    try:
        with transaction(engine) as conn:
            conn.execute(insert(rs).values(pool_id=pool_id, in_flight=0, day_cents=0,
                                           month_cents=0, failures=0, updated_at=now))
    except IntegrityError:
        pass  # another process made it


def _spent(column: Any, period_column: Any, period: str) -> Any:
    """The period's figure: the stored one while it is the same period, else nothing yet."""
    return case((period_column == period, column), else_=literal(0))


def take_slot(conn: Connection, pool_id: int, rule: RestockRule, now: datetime, *,
              honour_backoff: bool) -> bool:
    """One guarded UPDATE: one more purchase in flight, if the rule allows it (and the pool
    is not backing off, unless a person asked)."""
    stmt = update(rs).where(rs.c.pool_id == pool_id, rs.c.in_flight < rule.in_flight)
    if honour_backoff:
        stmt = stmt.where(or_(rs.c.next_at.is_(None), rs.c.next_at <= now))
    return bool(conn.execute(stmt.values(in_flight=rs.c.in_flight + 1,
                                         updated_at=now)).rowcount)


def reserve(conn: Connection, pool_id: int, amount: int, rule: RestockRule,
            periods: Periods, now: datetime) -> bool:
    """One guarded UPDATE: ``amount`` cents more spent in the day and the month, only if
    both stay within their budgets. The row is locked by the UPDATE, so concurrent
    reservations (any process) are serialized and each sees the others' sums."""
    day = _spent(rs.c.day_cents, rs.c.day, periods.day)
    month = _spent(rs.c.month_cents, rs.c.month, periods.month)
    # MySQL/MariaDB evaluate SET left to right with the values already assigned; the sums
    # come before the period columns they read, so every backend computes the same.
    stmt = (update(rs).where(rs.c.pool_id == pool_id, day + amount <= rule.daily_cents,
                             month + amount <= rule.monthly_cents)
            .ordered_values((rs.c.day_cents, day + amount), (rs.c.day, periods.day),
                            (rs.c.month_cents, month + amount), (rs.c.month, periods.month),
                            (rs.c.updated_at, now)))
    return bool(conn.execute(stmt).rowcount)


def release(conn: Connection, pool_id: int, amount: int, day: str | None,
             month: str | None, now: datetime) -> None:
    """Give ``amount`` cents back to the periods they were reserved in (a period that has
    ended keeps its figure: it is history). A negative ``amount`` charges them more: a
    supplier that took more than was reserved is spent all the same."""
    if amount == 0:
        return
    conn.execute(update(rs).where(rs.c.pool_id == pool_id).ordered_values(
        (rs.c.day_cents, case((rs.c.day == day, rs.c.day_cents - amount),
                              else_=rs.c.day_cents)),
        (rs.c.month_cents, case((rs.c.month == month, rs.c.month_cents - amount),
                                else_=rs.c.month_cents)),
        (rs.c.updated_at, now)))


def free_slot(conn: Connection, pool_id: int, now: datetime, **values: Any) -> None:
    conn.execute(update(rs).where(rs.c.pool_id == pool_id, rs.c.in_flight > 0)
                 .values(in_flight=rs.c.in_flight - 1, updated_at=now, **values))


def _why_refused(conn: Connection, pool_id: int, rule: RestockRule, amount: int,
                 periods: Periods, now: datetime) -> tuple[bool, str]:
    """``(budget?, why)`` a request was refused."""
    row = conn.execute(select(rs).where(rs.c.pool_id == pool_id)).one()
    if row.in_flight >= rule.in_flight:
        return False, (f"{row.in_flight} purchase(s) in flight or awaiting approval (the "
                       f"rule allows {rule.in_flight})")
    if row.next_at is not None and row.next_at > now:
        return False, (f"backing off after {row.failures} failed purchase(s) until "
                       f"{row.next_at:%Y-%m-%d %H:%M:%S} UTC")
    return True, _budget_why(row, rule, amount, periods)


def _budget_why(row: Any, rule: RestockRule, amount: int, periods: Periods) -> str:
    day, month = spent(row, periods)
    if day + amount > rule.daily_cents:
        return (f"daily budget: {yuan(day)} of {yuan(rule.daily_cents)} spent or reserved "
                f"today; a purchase may cost {yuan(amount)}")
    return (f"monthly budget: {yuan(month)} of {yuan(rule.monthly_cents)} spent or reserved "
            f"this month; a purchase may cost {yuan(amount)}")


# ------------------------------------------------------------------------- asking, approving


def request(engine: Engine, pool: str, rule: RestockRule, *, why: str, actor: str,
            now: datetime | None = None, zone: tzinfo = DEFAULT_ZONE,
            manual: bool = False) -> int:
    """Write one purchase for ``pool`` within ``rule`` (its key committed with it); its id.
    Raises :class:`Refused` (nothing written) when the rule does not allow it now."""
    now = now or utcnow()
    with engine.connect() as conn:
        pid = _pool_id(conn, pool)
    ensure_state(engine, pid, now)
    amount = rule.quantity * rule.max_unit_cents
    periods = Periods.at(now, zone)
    try:
        with transaction(engine) as conn:
            if not take_slot(conn, pid, rule, now, honour_backoff=not manual) or (
                    not rule.approval and not reserve(conn, pid, amount, rule, periods, now)):
                budget, why_not = _why_refused(conn, pid, rule, amount, periods, now)
                raise Refused(why_not, budget=budget)
            state = R.AWAITING_APPROVAL if rule.approval else R.NEW
            held = {} if rule.approval else {"reserved_cents": amount, "day": periods.day,
                                             "month": periods.month}
            key = restock_key(pid, now)
            new_id = _new_id(conn.execute(insert(rp).values(
                pool_id=pid, supplier=rule.supplier, product=rule.product, key=key,
                quantity=rule.quantity, max_unit_cents=rule.max_unit_cents, state=state,
                trigger=why[:2000], requested_by=actor[:128], attempts=0, due_at=now,
                created_at=now, updated_at=now, **held)))
            conn.execute(update(rs).where(rs.c.pool_id == pid).values(blocked=None))
            audit.append(conn, actor=actor, action="restock_request", subject=f"pool:{pool}",
                         details={"pool": pool, "purchase": new_id, "key": key,
                                  "supplier": rule.supplier, "product": rule.product,
                                  "quantity": rule.quantity, "reserved_cents": held.get(
                                      "reserved_cents", 0), "state": state, "why": why})
    except Refused as exc:
        if exc.budget:
            _note_blocked(engine, pid, exc.message, now)
        raise
    log.info("restock_requested", pool=pool, purchase=new_id, state=state)
    return new_id


def _new_id(result: Any) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def _note_blocked(engine: Engine, pool_id: int, why: str, now: datetime) -> None:
    """Keep why the pool could not be restocked (status shows it, the alert tells once)."""
    with transaction(engine) as conn:
        changed = conn.execute(update(rs).where(
            rs.c.pool_id == pool_id, or_(rs.c.blocked.is_(None), rs.c.blocked != why[:500]))
            .values(blocked=why[:500], updated_at=now)).rowcount
    if changed:
        log.warning("restock_blocked", pool_id=pool_id, why=why)


def approve(engine: Engine, purchase_id: int, rules: Mapping[str, RestockRule], *,
            actor: str, now: datetime | None = None, zone: tzinfo = DEFAULT_ZONE) -> str:
    """A person approves a waiting purchase: its budget is reserved (guarded) and it goes to
    the supplier. Its pool's name. :class:`UserError` when it cannot be."""
    now = now or utcnow()
    periods = Periods.at(now, zone)
    with transaction(engine) as conn:
        row = _purchase_row(conn, purchase_id)
        pool = str(conn.execute(select(pools_table.c.name)
                                .where(pools_table.c.id == row.pool_id)).scalar_one())
        if row.state != R.AWAITING_APPROVAL:
            raise UserError(f"restock purchase {purchase_id} is {row.state}, not awaiting "
                            "approval")
        rule = rules.get(pool)
        if rule is None:
            raise UserError(f"pool {pool!r} has no restock rule any more (the robot file's "
                            f"restock:); reject the purchase: robot restock reject {purchase_id}")
        amount = int(row.quantity) * int(row.max_unit_cents)
        if not reserve(conn, int(row.pool_id), amount, rule, periods, now):
            st = conn.execute(select(rs).where(rs.c.pool_id == row.pool_id)).one()
            raise Refused(_budget_why(st, rule, amount, periods), budget=True)
        conn.execute(update(rp).where(rp.c.id == purchase_id,
                                      rp.c.state == R.AWAITING_APPROVAL)
                     .values(state=R.NEW, approved_by=actor[:128], reserved_cents=amount,
                             day=periods.day, month=periods.month, due_at=now,
                             updated_at=now))
        audit.append(conn, actor=actor, action="restock_approve", subject=f"pool:{pool}",
                     details={"purchase": purchase_id, "key": row.key,
                              "reserved_cents": amount})
    log.info("restock_approved", pool=pool, purchase=purchase_id)
    return pool


def reject(engine: Engine, purchase_id: int, *, actor: str,
           now: datetime | None = None) -> None:
    """A person turns down a waiting purchase; its slot is freed, nothing is bought."""
    now = now or utcnow()
    with transaction(engine) as conn:
        row = _purchase_row(conn, purchase_id)
        if not conn.execute(update(rp).where(rp.c.id == purchase_id,
                                             rp.c.state == R.AWAITING_APPROVAL)
                            .values(state=R.REJECTED, reason=f"rejected by {actor}"[:300],
                                    updated_at=now, finished_at=now)).rowcount:
            raise UserError(f"restock purchase {purchase_id} is {row.state}, not awaiting "
                            "approval")
        free_slot(conn, int(row.pool_id), now)
        audit.append(conn, actor=actor, action="restock_reject",
                     subject=f"pool_id:{row.pool_id}", details={"purchase": purchase_id})


def _purchase_row(conn: Connection, purchase_id: int) -> Any:
    row = conn.execute(select(rp).where(rp.c.id == purchase_id)).first()
    if row is None:
        raise UserError(f"no restock purchase {purchase_id} (robot restock history)")
    return row


# ---------------------------------------------------------------------------- callbacks


def callback_due(engine: Engine, supplier: str, key: str) -> bool:
    """A verified callback for ``key``: its purchase is due now (the worker queries the
    supplier; the callback records nothing). Whether the key is a restock purchase's."""
    with transaction(engine) as conn:
        found = conn.execute(select(rp.c.id).where(rp.c.key == key,
                                                   rp.c.supplier == supplier)).first()
        if found is None:
            return False
        conn.execute(update(rp).where(rp.c.id == found.id, rp.c.state.in_(OPEN))
                     .values(due_at=utcnow()))
    return True


# ------------------------------------------------------------------------- what people see


def spent(row: Any, periods: Periods) -> tuple[int, int]:
    """``(today, this month)`` cents spent or reserved, from a ``restock_state`` row."""
    if row is None:
        return 0, 0
    return (int(row.day_cents) if row.day == periods.day else 0,
            int(row.month_cents) if row.month == periods.month else 0)


def status(engine: Engine, rules: Mapping[str, RestockRule], *, now: datetime | None = None,
           zone: tzinfo = DEFAULT_ZONE) -> list[dict[str, Any]]:
    """Per pool with a rule: the rule, stock, cover, spent today / this month, purchases in
    flight, the last purchase, purchases awaiting approval, and why it is blocked."""
    now = now or utcnow()
    periods = Periods.at(now, zone)
    cover = pool_cover(engine, now)
    out = []
    with engine.connect() as conn:
        ids = {str(r.name): int(r.id) for r in conn.execute(
            select(pools_table.c.name, pools_table.c.id))}
        states = {int(r.pool_id): r for r in conn.execute(select(rs))}
        for pool, rule in sorted(rules.items()):
            pid = ids.get(pool)
            st = states.get(pid) if pid is not None else None
            day, month = spent(st, periods)
            last = conn.execute(select(rp).where(rp.c.pool_id == pid)
                                .order_by(rp.c.id.desc()).limit(1)).first() if pid else None
            waiting = [int(i) for i in conn.execute(select(rp.c.id).where(
                rp.c.pool_id == pid, rp.c.state == R.AWAITING_APPROVAL))
                .scalars()] if pid else []
            row = cover.get(pool)
            out.append({
                "pool": pool, "exists": pid is not None, "supplier": rule.supplier,
                "product": rule.product, "below": rule.below, "cover_days": rule.cover_days,
                "quantity": rule.quantity, "max_cost_cents": rule.max_unit_cents,
                "daily_budget_cents": rule.daily_cents,
                "monthly_budget_cents": rule.monthly_cents, "approval": rule.approval,
                "available": row.available if row else None,
                "days_of_cover": row.days_of_cover if row else None,
                "wants": trigger(rule, row) if row else None,
                "spent_today_cents": day, "spent_month_cents": month,
                "in_flight": int(st.in_flight) if st is not None else 0,
                "failures": int(st.failures) if st is not None else 0,
                "last_error": st.last_error if st is not None else None,
                "blocked": st.blocked if st is not None else None,
                "last_purchase": _shown(last, pool) if last is not None else None,
                "awaiting_approval": waiting})
    return out


def history(engine: Engine, *, pool: str | None = None, limit: int = 50
            ) -> list[dict[str, Any]]:
    """Restock purchases, newest first."""
    stmt = (select(rp, pools_table.c.name.label("pool"))
            .join(pools_table, pools_table.c.id == rp.c.pool_id)
            .order_by(rp.c.id.desc()).limit(limit))
    if pool is not None:
        stmt = stmt.where(pools_table.c.name == pool)
    with engine.connect() as conn:
        return [_shown(r, str(r.pool)) for r in conn.execute(stmt)]


def _shown(r: Any, pool: str) -> dict[str, Any]:
    return {"id": int(r.id), "pool": pool, "state": str(r.state), "supplier": r.supplier,
            "product": r.product, "key": r.key, "quantity": int(r.quantity),
            "codes": r.codes, "cost_cents": r.cost_cents,
            "reserved_cents": int(r.reserved_cents), "trigger": r.trigger,
            "requested_by": r.requested_by, "approved_by": r.approved_by,
            "reason": r.reason, "created_at": r.created_at, "finished_at": r.finished_at}


# ---------------------------------------------------------------------------------- alerts


def conditions(engine: Engine, rules: Mapping[str, RestockRule]) -> list[Condition]:
    """Alert readings: a pool whose purchases fail (once while it lasts), and a pool that
    wants codes and cannot buy them (budget spent, balance low)."""
    with engine.connect() as conn:
        rows = {str(r.name): r for r in conn.execute(
            select(pools_table.c.name, rs).join(rs, rs.c.pool_id == pools_table.c.id))}
    out = []
    for pool in sorted(rules):
        r = rows.get(pool)
        failing = r is not None and int(r.failures) > 0
        out.append(Condition(f"restock_failing:{pool}", failing,
                             f"restocking of pool {pool} failing",
                             f"{r.failures if r is not None else 0} purchase(s) failed in a "
                             f"row; last: {(r.last_error if r is not None else '') or ''}"
                             "; the robot backs off and tries again"))
        blocked = r is not None and r.blocked is not None
        out.append(Condition(f"restock_blocked:{pool}", blocked,
                             f"pool {pool} cannot be restocked",
                             (r.blocked if r is not None else None) or ""))
    return out


def readers(engine: Engine, rules: Mapping[str, RestockRule]
            ) -> list[Callable[[], Condition]]:
    """One reading per alert key of :func:`conditions` (for the daemon's alert engine)."""
    def one(key: str) -> Condition:
        return next(c for c in conditions(engine, rules) if c.key == key)
    return [functools.partial(one, f"{kind}:{pool}") for pool in sorted(rules)
            for kind in ("restock_failing", "restock_blocked")]
