"""Buying from suppliers: the ``source`` outbox jobs of orders in ``sourcing``.

Invariant 7 (no double purchase) is kept here, in this order:

* the attempt's idempotency key was committed with the order's move to ``sourcing``
  (:func:`robot.supplyroute.start`) or with the previous attempt's definite failure, before any
  call;
* an attempt is marked ``placing`` (committed) before the call: an attempt found ``placing``
  (a crash, a lost answer) is **queried**, and placed again under the same key only when the
  supplier says it holds nothing under it (the supplier de-duplicates on the key anyway);
* ``accepted`` / ``processing`` / ``unknown`` are queried with backoff, never taken for
  failures; only a definite ``failed`` writes the unit's next attempt (the next supplier, a
  new key), in the transaction that records the failure;
* a unit's price is checked against its maximum cost (the supplier's catalogue) before the
  call: above it, nothing is bought and the attempt fails for that reason;
* success is recorded in one transaction: the attempt, and for cards the codes encrypted
  into the vault and handed to the order line; only once every unit succeeded does the order
  move to ``allocated`` with its ship job, so no write-back runs before the success is
  durable.

No transaction is open while a supplier is called. A refund that arrives meanwhile does not
stop a purchase (no supplier cancels); when the last unit is done the order is cancelled
(bought codes nobody saw go back to stock) or held, and flagged for review.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from connectors.base import PlatformStatus, RefundState
from connectors.supplier import (
    KeyReused,
    NoSuchPurchase,
    Outcome,
    Product,
    Purchase,
    PurchaseRequest,
    Supplier,
)
from robot import audit, pipeline, pools
from robot.clock import utcnow
from robot.db import transaction
from robot.errors import Fatal, Retriable
from robot.groupcommit import GroupCommit
from robot.log import get_logger
from robot.outbox import Job, RetryPolicy, claim_jobs_in, renew_claims
from robot.schema import deliveries, order_lines, orders, outbox, supplier_attempts
from robot.schema import pools as pools_table
from robot.states import (
    DeliveryState,
    OrderState,
    OutboxState,
    SupplierAttemptState,
)
from robot.supplyroute import Supply, attempt_key, mask_account, supplies
from robot.vault import Vault, join_pair

log = get_logger(__name__)

S = SupplierAttemptState
#: Attempts whose outcome is not known yet.
OPEN = (S.NEW, S.PLACING, S.ACCEPTED, S.PROCESSING, S.UNKNOWN)
_OUTCOME_STATE = {Outcome.ACCEPTED: S.ACCEPTED, Outcome.PROCESSING: S.PROCESSING,
                  Outcome.UNKNOWN: S.UNKNOWN}


@dataclass(frozen=True)
class SourcingPolicy:
    """How often a purchase in flight is queried, and for how long a price is trusted."""

    query_initial: float = 5.0
    query_max: float = 300.0
    price_ttl: float = 60.0
    call_timeout: float = 30.0
    lease: timedelta = timedelta(seconds=15)  # renewed every few seconds by the daemon

    def delay(self, attempts: int) -> float:
        return RetryPolicy(backoff_initial=self.query_initial,
                           backoff_max=self.query_max).delay(attempts)


@dataclass(frozen=True)
class Attempt:
    """One attempt row, as the worker needs it."""

    id: int
    order_id: int
    line_no: int
    unit: int
    attempt: int
    supplier: str
    product: str
    kind: str
    key: str
    max_cost_cents: int
    account: str | None
    state: str
    pool_id: int | None = None  # card purchase: the pool the codes go into
    per_unit: int = 1
    #: top-up: the game area / server / game / role (``PLACES``), where the line has them
    places: Mapping[str, str | None] = field(default_factory=dict)

    def request(self) -> PurchaseRequest:
        # The plugin checks the price again right before placing (a second guard beside
        # the catalogue check: prices move).
        return PurchaseRequest(key=self.key, product_id=self.product, quantity=self.per_unit,
                               account=self.account, area=self.places.get("area"),
                               server=self.places.get("server"), game=self.places.get("game"),
                               role=self.places.get("role"),
                               max_unit_price_cents=self.max_cost_cents // self.per_unit)


def _latest(rows: Sequence[Any]) -> dict[tuple[int, int], Any]:
    """Each unit's latest attempt."""
    latest: dict[tuple[int, int], Any] = {}
    for r in rows:
        unit = (int(r.line_no), int(r.unit))
        if unit not in latest or int(r.attempt) > int(latest[unit].attempt):
            latest[unit] = r
    return latest


def _attempt(r: Any, route: Supply | None, pool_ids: Mapping[str, int]) -> Attempt:
    pool = route.pool if route is not None and route.kind == "card" else None
    return Attempt(int(r.id), int(r.order_id), int(r.line_no), int(r.unit), int(r.attempt),
                   str(r.supplier), str(r.product), str(r.kind), str(r.key),
                   int(r.max_cost_cents), r.account, str(r.state),
                   pool_ids.get(pool) if pool else None,
                   route.per_unit if route is not None else 1,
                   route.places() if route is not None else {})


def _routes(conn: Connection, order_id: int) -> dict[int, Supply]:
    return supplies({int(r.line_no): r.supply for r in conn.execute(
        select(order_lines.c.line_no, order_lines.c.supply)
        .where(order_lines.c.order_id == order_id))})


def open_attempts(conn: Connection, order_id: int) -> list[Attempt]:
    """The order's attempts still to be settled (each unit's latest, if open)."""
    routes = _routes(conn, order_id)
    names = sorted({s.pool for s in routes.values() if s.pool})
    pool_ids = {str(n): int(i) for n, i in conn.execute(
        select(pools_table.c.name, pools_table.c.id).where(pools_table.c.name.in_(names)))
    } if names else {}
    rows = conn.execute(select(supplier_attempts)
                        .where(supplier_attempts.c.order_id == order_id)).all()
    return [_attempt(r, routes.get(int(r.line_no)), pool_ids)
            for r in _latest(rows).values() if r.state in OPEN]


class Sourcer:
    """Runs due ``source`` jobs against the configured suppliers."""

    def __init__(self, engine: Engine, vault: Vault, suppliers: Mapping[str, Supplier],
                 policy: SourcingPolicy | None = None, *, worker: str,
                 actor: str = "sourcing",
                 on_allocated: Callable[[], None] = lambda: None,
                 group: GroupCommit | None = None) -> None:
        self.engine = engine
        self.vault = vault
        self.suppliers = suppliers
        self.policy = policy or SourcingPolicy()
        self.worker = worker
        self.actor = actor
        self.on_allocated = on_allocated
        self._prices: dict[str, tuple[float, dict[str, Product]]] = {}
        self._running: set[int] = set()
        #: Leases, reads and settlements share transactions (robot.groupcommit) with the
        #: rest of the daemon's bookkeeping (the daemon passes its own).
        self._group = group or GroupCommit(engine)

    def renew(self, *, now: datetime | None = None) -> int:
        """Extend the lease of every job this worker is running."""
        running = list(self._running)
        if not running:
            return 0
        return renew_claims(self.engine, self.worker, running, now=now or utcnow(),
                            lease=self.policy.lease)

    async def run_once(self, *, now: datetime | None = None, limit: int = 20) -> int:
        """Lease and run the due source jobs; returns how many were run."""
        at = now or utcnow()
        jobs = await self._group.run(lambda conn: claim_jobs_in(
            conn, self.worker, now=at, limit=limit, lease=self.policy.lease, kinds=("source",)))
        # Every job leased is renewed until it is run (the calls of the ones before it may
        # take longer than a lease).
        self._running.update(job.id for job in jobs)
        try:
            for job in jobs:
                with structlog.contextvars.bound_contextvars(order_id=job.order_id,
                                                             job="source"):
                    await self.run_job(job)
                self._running.discard(job.id)
        finally:
            self._running.difference_update(job.id for job in jobs)
        return len(jobs)

    async def run_job(self, job: Job) -> None:
        """Advance every open purchase of the order once, then settle the order."""
        attempts = await self._group.run(lambda conn: self._read_in(conn, job))
        for att in attempts:
            with structlog.contextvars.bound_contextvars(supplier=att.supplier, key=att.key):
                await self._advance(att)
        try:
            settled = await self._group.run(lambda conn: self.settle_in(conn, job))
        except pipeline.StateConflict:
            return  # another worker holding the same job (its lease ran out) settled it
        if settled == "allocated":
            self.on_allocated()  # in the loop's thread (an asyncio.Event is not thread-safe)

    def _read_in(self, conn: Connection, job: Job) -> list[Attempt]:
        state = conn.execute(select(orders.c.state)
                             .where(orders.c.id == job.order_id)).scalar_one()
        if state != OrderState.SOURCING:
            return []
        return open_attempts(conn, job.order_id)

    # -- one purchase --------------------------------------------------------------------------
    async def _advance(self, att: Attempt) -> None:
        supplier = self.suppliers.get(att.supplier)
        if supplier is None:
            await asyncio.to_thread(self._note, att, f"supplier {att.supplier!r} is not "
                                    "configured, or failed to start")
            return
        if att.state == S.NEW:
            purchase = await self._place_new(supplier, att)
        else:
            purchase = await self._query(supplier, att)
        if purchase is not None:
            await asyncio.to_thread(self.record, att, purchase)

    async def _place_new(self, supplier: Supplier, att: Attempt) -> Purchase | None:
        try:
            refusal = await self._price_refusal(supplier, att)
        except (Retriable, Fatal, TimeoutError) as exc:
            await asyncio.to_thread(self._note, att, f"price check failed: {_why(exc)}")
            return None
        if refusal is not None:
            return Purchase(att.key, Outcome.FAILED, reason=refusal)
        if not await asyncio.to_thread(self._mark_placing, att):
            return None  # another worker took it
        return await self._place(supplier, att)

    async def _place(self, supplier: Supplier, att: Attempt) -> Purchase | None:
        try:
            return await place_call(supplier, att.request(), self.policy.call_timeout)
        except Fatal as exc:  # nothing was bought (the protocol's promise): try again later
            await asyncio.to_thread(self._unplace, att, _why(exc))
            log.error("supplier_refused_credentials", error=_why(exc))
            return None

    async def _query(self, supplier: Supplier, att: Attempt) -> Purchase | None:
        try:
            return await asyncio.wait_for(supplier.query(att.key), self.policy.call_timeout)
        except NoSuchPurchase:
            # The placement never arrived: placing again under the same key is safe.
            log.info("supplier_purchase_not_found", state=att.state)
            return await self._place(supplier, att)
        except TimeoutError:
            return Purchase(att.key, Outcome.UNKNOWN, reason="query timed out")
        except Exception as exc:  # noqa: BLE001 - any trouble: the outcome stays unknown
            await asyncio.to_thread(self._note, att, f"query failed: {_why(exc)}")
            return None

    async def _price_refusal(self, supplier: Supplier, att: Attempt) -> str | None:
        """Why this unit must not be bought from this supplier now (None: buy)."""
        products = await self._catalogue(att.supplier, supplier)
        product = products.get(att.product)
        if product is None or not product.available:
            return f"product {att.product} is not on sale at {att.supplier}"
        price = product.price_cents * att.per_unit
        if price > att.max_cost_cents:
            return (f"price {_yuan(price)} is above the maximum cost "
                    f"{_yuan(att.max_cost_cents)}: not bought")
        return None

    async def _catalogue(self, name: str, supplier: Supplier) -> dict[str, Product]:
        cached = self._prices.get(name)
        if cached is not None and time.monotonic() - cached[0] < self.policy.price_ttl:
            return cached[1]
        products = await asyncio.wait_for(supplier.catalogue(), self.policy.call_timeout)
        found = {p.product_id: p for p in products}
        self._prices[name] = (time.monotonic(), found)
        return found

    # -- records (each one short transaction) --------------------------------------------------
    def _mark_placing(self, att: Attempt) -> bool:
        now = utcnow()
        with transaction(self.engine) as conn:
            return bool(conn.execute(update(supplier_attempts).where(
                supplier_attempts.c.id == att.id, supplier_attempts.c.state == S.NEW)
                .values(state=S.PLACING, updated_at=now)).rowcount)

    def _unplace(self, att: Attempt, reason: str) -> None:
        with transaction(self.engine) as conn:
            conn.execute(update(supplier_attempts).where(
                supplier_attempts.c.id == att.id, supplier_attempts.c.state == S.PLACING)
                .values(state=S.NEW, reason=reason, updated_at=utcnow()))

    def _note(self, att: Attempt, reason: str) -> None:
        """Keep why the attempt did not move (shown by robot orders show / suppliers status)."""
        log.warning("supplier_attempt_waiting", reason=reason)
        with transaction(self.engine) as conn:
            conn.execute(update(supplier_attempts).where(supplier_attempts.c.id == att.id)
                         .values(reason=reason[:300], updated_at=utcnow()))

    def record(self, att: Attempt, purchase: Purchase) -> None:
        """Record what the supplier said about one attempt."""
        if purchase.outcome is Outcome.SUCCEEDED:
            self._succeeded(att, purchase)
        elif purchase.outcome is Outcome.FAILED:
            self._failed(att, purchase.reason or "failed")
        else:
            self._pending(att, purchase)

    def _pending(self, att: Attempt, purchase: Purchase) -> None:
        state = _OUTCOME_STATE[purchase.outcome]
        with transaction(self.engine) as conn:
            conn.execute(update(supplier_attempts).where(
                supplier_attempts.c.id == att.id, supplier_attempts.c.state.in_(OPEN))
                .values(state=state, reason=purchase.reason,
                        supplier_order_id=purchase.supplier_order_id, updated_at=utcnow()))

    def _failed(self, att: Attempt, reason: str) -> None:
        """A definite failure: the unit's next attempt (next supplier, new key) is written in
        the same transaction, or nothing when every supplier failed."""
        now = utcnow()
        with transaction(self.engine) as conn:
            if not conn.execute(update(supplier_attempts).where(
                    supplier_attempts.c.id == att.id, supplier_attempts.c.state.in_(OPEN))
                    .values(state=S.FAILED, reason=reason[:300], updated_at=now,
                            finished_at=now)).rowcount:
                return
            route = _routes(conn, att.order_id).get(att.line_no)
            nxt = att.attempt + 1
            following = route.routes[nxt] if route is not None and nxt < len(route.routes) \
                else None
            if following is not None:
                conn.execute(insert(supplier_attempts).values(
                    order_id=att.order_id, line_no=att.line_no, unit=att.unit, attempt=nxt,
                    supplier=following.supplier, product=following.product, kind=att.kind,
                    key=attempt_key(att.order_id, att.line_no, att.unit, nxt),
                    max_cost_cents=following.max_cost_cents, account=att.account,
                    state=S.NEW, created_at=now, updated_at=now))
            audit.append(conn, actor=self.actor, action="supplier_failed",
                         subject=f"order:{att.order_id}",
                         details={"supplier": att.supplier, "key": att.key, "reason": reason,
                                  "next": following.supplier if following else None})
        log.warning("supplier_purchase_failed", reason=reason,
                    next=following.supplier if following else None)

    def _succeeded(self, att: Attempt, purchase: Purchase) -> None:
        if att.kind == "card" and len(purchase.cards) < att.per_unit:
            # Done at the supplier, the codes not handed over yet: read them by query.
            self._pending(att, Purchase(att.key, Outcome.PROCESSING,
                                        supplier_order_id=purchase.supplier_order_id,
                                        reason="succeeded; reading the codes"))
            return
        sealed = self._seal(att, purchase) if att.kind == "card" else []
        try:
            self._store_success(att, purchase, sealed)
        except IntegrityError:
            self._store_duplicate(att, purchase)

    def _seal(self, att: Attempt, purchase: Purchase) -> list[pools.SealedCode]:
        assert att.pool_id is not None, "a card purchase names its pool"
        secrets_ = [(join_pair(c.number.reveal(), c.code.reveal()) if c.number is not None
                     else c.code.reveal(), c.expires_at) for c in purchase.cards]
        return pools.seal_bought(self.engine, self.vault, att.pool_id, secrets_)

    def _store_success(self, att: Attempt, purchase: Purchase,
                       sealed: Sequence[pools.SealedCode]) -> None:
        now = utcnow()
        with transaction(self.engine) as conn:
            if not self._close_attempt(conn, att, purchase, S.SUCCEEDED, now):
                return
            code_ids: list[int] = []
            if sealed and att.pool_id is not None:
                unit_cost = (purchase.cost_cents // len(sealed)
                             if purchase.cost_cents is not None else None)
                code_ids = pools.add_bought(conn, att.pool_id, sealed, supplier=att.supplier,
                                            label=f"supplier {att.supplier} {att.key}",
                                            unit_cost_cents=unit_cost, actor=self.actor,
                                            now=now)
                conn.execute(insert(deliveries), [
                    {"order_id": att.order_id, "line_no": att.line_no,
                     "n": att.unit * att.per_unit + i, "code_id": cid, "pool_id": att.pool_id,
                     "state": DeliveryState.RESERVED, "created_at": now}
                    for i, cid in enumerate(code_ids)])
            over = purchase.cost_cents is not None and purchase.cost_cents > att.max_cost_cents
            audit.append(conn, actor=self.actor, action="supplier_purchase",
                         subject=f"order:{att.order_id}",
                         details={"supplier": att.supplier, "key": att.key,
                                  "product": att.product, "kind": att.kind,
                                  "supplier_order_id": purchase.supplier_order_id,
                                  "cost_cents": purchase.cost_cents, "code_ids": code_ids,
                                  "account": mask_account(att.account),
                                  "above_max_cost": over})
        if over:
            log.error("supplier_charged_above_max_cost", cost_cents=purchase.cost_cents,
                      max_cost_cents=att.max_cost_cents)
        log.info("supplier_purchase_succeeded", kind=att.kind, cost_cents=purchase.cost_cents)

    def _close_attempt(self, conn: Connection, att: Attempt, purchase: Purchase,
                       state: str, now: datetime, reason: str | None = None) -> bool:
        return bool(conn.execute(update(supplier_attempts).where(
            supplier_attempts.c.id == att.id, supplier_attempts.c.state.in_(OPEN))
            .values(state=state, supplier_order_id=purchase.supplier_order_id,
                    cost_cents=purchase.cost_cents, reason=reason, updated_at=now,
                    finished_at=now)).rowcount)

    def _store_duplicate(self, att: Attempt, purchase: Purchase) -> None:
        """The supplier sold us a code the vault already holds: the purchase is recorded as
        bought (never bought again) and the order waits for a person."""
        now = utcnow()
        why = "a code bought from the supplier is already in the vault (sold twice?)"
        with transaction(self.engine) as conn:
            if not self._close_attempt(conn, att, purchase, S.SUCCEEDED, now, why):
                return
            with contextlib.suppress(pipeline.StateConflict):
                pipeline.transition(conn, att.order_id, OrderState.SOURCING, OrderState.HELD,
                                    f"review: {why}; see robot orders show {att.order_id}", now)
            audit.append(conn, actor=self.actor, action="supplier_purchase",
                         subject=f"order:{att.order_id}",
                         details={"supplier": att.supplier, "key": att.key,
                                  "cost_cents": purchase.cost_cents, "problem": why})
        log.error("supplier_code_duplicate")

    # -- the order -----------------------------------------------------------------------------
    def settle(self, job: Job) -> str:
        """One transaction: the order moves on when every unit is done (allocated, failed,
        or cancelled / held for review after a refund); else the job waits. What happened."""
        with transaction(self.engine) as conn:
            return self.settle_in(conn, job)

    def settle_in(self, conn: Connection, job: Job) -> str:
        """:meth:`settle` inside the caller's transaction (the daemon's: a group commit's)."""
        now = utcnow()
        row = conn.execute(select(orders.c.state, orders.c.platform_status)
                           .where(orders.c.id == job.order_id)).one()
        if row.state != OrderState.SOURCING:
            self._end_job(conn, job, now)
            return "not_sourcing"
        rows = conn.execute(select(supplier_attempts)
                            .where(supplier_attempts.c.order_id == job.order_id)).all()
        latest = list(_latest(rows).values())
        if any(r.state in OPEN for r in latest):
            # A new attempt (the next supplier) goes at once; outcomes still coming are
            # asked for again with backoff.
            fresh = any(r.state == S.NEW and r.reason is None for r in latest)
            delay = timedelta(seconds=0 if fresh else self.policy.delay(job.attempts + 1))
            conn.execute(update(outbox).where(outbox.c.id == job.id).values(
                attempts=job.attempts + 1, due_at=now + delay, claimed_until=None))
            return "waiting"
        failed = [r for r in latest if r.state == S.FAILED]
        if failed:
            self._all_failed(conn, job, rows, now)
            outcome = "failed"
        else:
            outcome = self._finish(conn, job, str(row.platform_status), now)
        self._end_job(conn, job, now)
        return outcome

    def _end_job(self, conn: Connection, job: Job, now: datetime) -> None:
        conn.execute(update(outbox).where(outbox.c.id == job.id, outbox.c.state ==
                                          OutboxState.PENDING)
                     .values(state=OutboxState.DONE, done_at=now, claimed_until=None))

    def _all_failed(self, conn: Connection, job: Job, rows: Sequence[Any],
                    now: datetime) -> None:
        reasons = [f"line {r.line_no} unit {r.unit}: {r.supplier}: {r.reason or 'failed'}"
                   for r in sorted(rows, key=lambda r: (r.line_no, r.unit, r.attempt))
                   if r.state == S.FAILED]
        bought = sum(1 for r in rows if r.state == S.SUCCEEDED)
        reason = "every supplier failed (refund the buyer on the platform): " + "; ".join(
            reasons)
        if bought:
            reason += f"; {bought} unit(s) were bought: review"
        pipeline.transition(conn, job.order_id, OrderState.SOURCING, OrderState.FAILED,
                            reason[:2000], now)
        audit.append(conn, actor=self.actor, action="source_failed",
                     subject=f"order:{job.order_id}",
                     details={"reasons": reasons, "units_bought": bought})
        log.error("sourcing_failed", reasons=reasons)

    def _finish(self, conn: Connection, job: Job, platform_status: str, now: datetime) -> str:
        refunds = {str(r[0]) for r in conn.execute(
            select(order_lines.c.refund).where(order_lines.c.order_id == job.order_id))}
        closed = platform_status == PlatformStatus.CLOSED \
            or refunds == {RefundState.REFUNDED}
        if closed:
            why = ("review: refunded while being bought from a supplier; the purchase "
                   "completed (no supplier cancels)")
            pipeline.cancel(conn, job.order_id, OrderState.SOURCING, OrderState.CANCELLED, why,
                            self.actor, now)
            log.warning("sourced_after_refund", outcome="cancelled")
            return "cancelled"
        if refunds & {RefundState.REQUESTED, RefundState.REFUNDED}:
            pipeline.transition(conn, job.order_id, OrderState.SOURCING, OrderState.HELD,
                                "review: refund requested while being bought from a "
                                "supplier; the purchase completed", now)
            audit.append(conn, actor=self.actor, action="hold",
                         subject=f"order:{job.order_id}",
                         details={"reason": "refund requested while sourcing"})
            log.warning("sourced_after_refund", outcome="held")
            return "held"
        pipeline.transition(conn, job.order_id, OrderState.SOURCING, OrderState.ALLOCATED, None,
                            now, allocated_at=now)
        conn.execute(insert(outbox).values(order_id=job.order_id, kind="ship",
                                           state=OutboxState.PENDING, attempts=0, due_at=now,
                                           created_at=now))
        audit.append(conn, actor=self.actor, action="sourced", subject=f"order:{job.order_id}",
                     details={})
        log.info("order_sourced")
        return "allocated"


async def place_call(supplier: Supplier, request: PurchaseRequest,
                     timeout: float) -> Purchase:
    """Place ``request`` once, its outcome normalized for the caller to record: a time-out
    or any surprise is ``unknown`` (query by the key, never place blind), a key reused for
    another purchase is ``failed``. Raises :class:`Fatal` only when nothing was bought (the
    supplier refused our credentials). Shared by order sourcing and restocking."""
    try:
        return await asyncio.wait_for(supplier.place(request), timeout)
    except TimeoutError:
        return Purchase(request.key, Outcome.UNKNOWN, reason="timeout: query by the key")
    except KeyReused as exc:
        return Purchase(request.key, Outcome.FAILED, reason=_why(exc))
    except Fatal:
        raise
    except Exception as exc:
        log.exception("supplier_place_crashed")
        return Purchase(request.key, Outcome.UNKNOWN, reason=f"unexpected {type(exc).__name__}")


def callback_due(engine: Engine, supplier: str, key: str) -> bool:
    """A verified callback for ``key``: its order's source job is due now (the worker then
    queries the supplier; the callback itself records nothing). Whether the key is ours."""
    now = utcnow()
    with transaction(engine) as conn:
        order_id = conn.execute(select(supplier_attempts.c.order_id).where(
            supplier_attempts.c.key == key, supplier_attempts.c.supplier == supplier)).scalar()
        if order_id is None:
            return False
        conn.execute(update(outbox).where(outbox.c.order_id == order_id,
                                          outbox.c.kind == "source",
                                          outbox.c.state == OutboxState.PENDING)
                     .values(due_at=now))
    return True


def _why(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    return str(message or type(exc).__name__)[:300]


def _yuan(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}元"
