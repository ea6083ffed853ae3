"""The restocking worker: requests what the pools' rules want, then advances each purchase
(place, query, record) outside any transaction, every decision a guarded UPDATE of
:mod:`robot.restock`'s rows, so any number of robot processes may run one.

No transaction is open while a supplier is called. Nothing here decrypts a code.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any

import structlog
from sqlalchemy import Engine, or_, select, update
from sqlalchemy.exc import IntegrityError

from connectors.supplier import NoSuchPurchase, Outcome, Product, Purchase, PurchaseRequest
from connectors.supplier import Supplier as SupplierClient
from robot import audit, pools
from robot.clock import DEFAULT_ZONE, utcnow
from robot.config.restock import RestockRule
from robot.db import dialect_of, transaction
from robot.display import yuan
from robot.errors import Fatal, Retriable
from robot.log import get_logger
from robot.report import pool_cover
from robot.restock import (
    ACTOR,
    OPEN,
    R,
    Refused,
    backoff,
    free_slot,
    release,
    request,
    rp,
    rs,
    trigger,
)
from robot.schema import pools as pools_table
from robot.sourcing import SourcingPolicy, place_call
from robot.vault import Vault, join_pair

log = get_logger(__name__)

_PENDING = {Outcome.ACCEPTED: R.ACCEPTED, Outcome.PROCESSING: R.PROCESSING,
            Outcome.UNKNOWN: R.UNKNOWN}

@dataclass(frozen=True)
class Job:
    """One claimed purchase, as the worker needs it."""

    id: int
    pool_id: int
    pool: str
    supplier: str
    product: str
    key: str
    quantity: int
    max_unit_cents: int
    reserved_cents: int
    day: str | None
    month: str | None
    state: str
    attempts: int

    def request(self) -> PurchaseRequest:
        return PurchaseRequest(key=self.key, product_id=self.product, quantity=self.quantity,
                               max_unit_price_cents=self.max_unit_cents)


class Restocker:
    """Watches the pools that have a rule and runs their purchases (any number of processes
    may run one: every decision is a guarded UPDATE)."""

    def __init__(self, engine: Engine, vault: Vault, suppliers: Mapping[str, SupplierClient],
                 rules: Mapping[str, RestockRule], policy: SourcingPolicy | None = None, *,
                 worker: str, zone: tzinfo = DEFAULT_ZONE,
                 balances: MutableMapping[str, int] | None = None,
                 on_stocked: Callable[[], None] = lambda: None) -> None:
        self.engine = engine
        self.vault = vault
        self.suppliers = suppliers
        self.rules = dict(rules)
        self.policy = policy or SourcingPolicy()
        self.worker = worker
        self.zone = zone
        #: The latest balance read per supplier (cents): shared with the supplier alerts.
        self.balances: MutableMapping[str, int] = balances if balances is not None else {}
        self.on_stocked = on_stocked
        self._prices: dict[str, tuple[float, dict[str, Product]]] = {}

    async def run_once(self, *, now: datetime | None = None, limit: int = 10) -> int:
        """Request what the rules want, then advance due purchases; how many were advanced."""
        now = now or utcnow()
        await asyncio.to_thread(self.plan, now)
        jobs = await asyncio.to_thread(self.claim, now, limit)
        for job in jobs:
            with structlog.contextvars.bound_contextvars(pool=job.pool, key=job.key,
                                                         supplier=job.supplier):
                await self.advance(job)
        return len(jobs)

    def plan(self, now: datetime) -> list[int]:
        """A purchase for every pool whose rule's trigger holds and allows one; their ids."""
        if not self.rules:
            return []
        rows = pool_cover(self.engine, now)
        made = []
        for pool, rule in sorted(self.rules.items()):
            row = rows.get(pool)
            why = trigger(rule, row) if row is not None else None
            if why is None:
                self._unblock(pool)
                continue
            try:
                made.append(request(self.engine, pool, rule, why=why, actor=ACTOR, now=now,
                                    zone=self.zone))
            except Refused:
                continue  # noted on the pool (status, alert)
        return made

    def _unblock(self, pool: str) -> None:
        """The pool wants nothing now: whatever blocked it no longer matters."""
        with transaction(self.engine) as conn:
            conn.execute(update(rs).where(rs.c.blocked.is_not(None), rs.c.pool_id.in_(
                select(pools_table.c.id).where(pools_table.c.name == pool).scalar_subquery()))
                .values(blocked=None))

    def claim(self, now: datetime, limit: int, *, only: int | None = None) -> list[Job]:
        """Lease due open purchases (or just purchase ``only``) to this worker."""
        with transaction(self.engine) as conn:
            stmt = (select(rp, pools_table.c.name.label("pool"))
                    .join(pools_table, pools_table.c.id == rp.c.pool_id)
                    .where(rp.c.state.in_(OPEN), rp.c.due_at <= now,
                           or_(rp.c.claimed_until.is_(None), rp.c.claimed_until < now))
                    .order_by(rp.c.due_at, rp.c.id).limit(limit))
            if only is not None:
                stmt = stmt.where(rp.c.id == only)
            if dialect_of(conn) != "sqlite":
                stmt = stmt.with_for_update(skip_locked=True, of=rp)
            rows = conn.execute(stmt).all()
            if rows:
                conn.execute(update(rp).where(rp.c.id.in_([r.id for r in rows])).values(
                    claimed_by=self.worker, claimed_until=now + self.policy.lease))
        return [Job(int(r.id), int(r.pool_id), str(r.pool), str(r.supplier), str(r.product),
                    str(r.key), int(r.quantity), int(r.max_unit_cents),
                    int(r.reserved_cents), r.day, r.month, str(r.state), int(r.attempts))
                for r in rows]

    # -- one purchase --------------------------------------------------------------------------
    async def advance(self, job: Job) -> None:
        supplier = self.suppliers.get(job.supplier)
        if supplier is None:
            await asyncio.to_thread(self._wait, job, f"supplier {job.supplier!r} is not "
                                    "configured, or failed to start")
            return
        purchase = await (self._place_new(supplier, job) if job.state == R.NEW
                          else self._query(supplier, job))
        if purchase is not None:
            await asyncio.to_thread(self.record, job, purchase)

    async def _place_new(self, supplier: SupplierClient, job: Job) -> Purchase | None:
        try:
            refusal = await self._refusal(supplier, job)
        except (Retriable, Fatal, TimeoutError) as exc:
            await asyncio.to_thread(self._wait, job, f"price or balance check failed: "
                                    f"{_why(exc)}")
            return None
        if refusal is not None:  # nothing was placed: a definite failure
            return Purchase(job.key, Outcome.FAILED, reason=refusal)
        if not await asyncio.to_thread(self._mark_placing, job):
            return None
        return await self._place(supplier, job)

    async def _place(self, supplier: SupplierClient, job: Job) -> Purchase | None:
        try:
            return await place_call(supplier, job.request(), self.policy.call_timeout)
        except Fatal as exc:  # nothing was bought: stays new, tried again later
            await asyncio.to_thread(self._wait, job, _why(exc), back_to_new=True)
            log.error("supplier_refused_credentials", error=_why(exc))
            return None

    async def _query(self, supplier: SupplierClient, job: Job) -> Purchase | None:
        try:
            return await asyncio.wait_for(supplier.query(job.key), self.policy.call_timeout)
        except NoSuchPurchase:  # the placement never arrived: the same key again is safe
            log.info("supplier_purchase_not_found", state=job.state)
            return await self._place(supplier, job)
        except TimeoutError:
            return Purchase(job.key, Outcome.UNKNOWN, reason="query timed out")
        except Exception as exc:  # noqa: BLE001 - any trouble: the outcome stays unknown
            await asyncio.to_thread(self._wait, job, f"query failed: {_why(exc)}")
            return None

    async def _refusal(self, supplier: SupplierClient, job: Job) -> str | None:
        """Why this purchase must not be placed now (price above the maximum, product not
        on sale, balance below what it may cost); None: place it."""
        cached = self._prices.get(job.supplier)
        if cached is None or time.monotonic() - cached[0] >= self.policy.price_ttl:
            products = await asyncio.wait_for(supplier.catalogue(), self.policy.call_timeout)
            cached = (time.monotonic(), {p.product_id: p for p in products})
            self._prices[job.supplier] = cached
        product = cached[1].get(job.product)
        if product is None or not product.available:
            return f"product {job.product} is not on sale at {job.supplier}"
        if product.price_cents > job.max_unit_cents:
            return (f"price {yuan(product.price_cents)} per code is above the maximum cost "
                    f"{yuan(job.max_unit_cents)}: not bought")
        balance = await asyncio.wait_for(supplier.balance(), self.policy.call_timeout)
        self.balances[job.supplier] = balance.available_cents
        need = product.price_cents * job.quantity
        if balance.available_cents < need:
            return (f"balance at {job.supplier} is {yuan(balance.available_cents)}, below "
                    f"the {yuan(need)} this purchase costs: top the account up")
        return None

    # -- records (each one short transaction) --------------------------------------------------
    def _mark_placing(self, job: Job) -> bool:
        with transaction(self.engine) as conn:
            return bool(conn.execute(update(rp).where(rp.c.id == job.id, rp.c.state == R.NEW)
                                     .values(state=R.PLACING, updated_at=utcnow())).rowcount)

    def _wait(self, job: Job, reason: str, *, back_to_new: bool = False) -> None:
        """Nothing learned: keep why, and look again after the backoff."""
        log.warning("restock_waiting", reason=reason)
        now = utcnow()
        values: dict[str, Any] = {
            "reason": reason[:300], "attempts": job.attempts + 1, "updated_at": now,
            "due_at": now + timedelta(seconds=self.policy.delay(job.attempts + 1)),
            "claimed_until": None}
        stmt = update(rp).where(rp.c.id == job.id, rp.c.state.in_(OPEN))
        if back_to_new:
            stmt = update(rp).where(rp.c.id == job.id, rp.c.state == R.PLACING)
            values["state"] = R.NEW
        with transaction(self.engine) as conn:
            conn.execute(stmt.values(**values))

    def record(self, job: Job, purchase: Purchase) -> None:
        """Record what the supplier said about one purchase."""
        if purchase.outcome is Outcome.SUCCEEDED and len(purchase.cards) >= job.quantity:
            self._succeeded(job, purchase)
        elif purchase.outcome is Outcome.FAILED:
            self._failed(job, purchase.reason or "failed")
        else:  # in progress, unknown, or done with the codes not handed over yet
            self._pending(job, purchase)

    def _pending(self, job: Job, purchase: Purchase) -> None:
        state = _PENDING.get(purchase.outcome, R.PROCESSING)
        reason = purchase.reason if purchase.outcome in _PENDING else \
            "succeeded; reading the codes"
        now = utcnow()
        with transaction(self.engine) as conn:
            conn.execute(update(rp).where(rp.c.id == job.id, rp.c.state.in_(OPEN)).values(
                state=state, reason=reason, supplier_order_id=purchase.supplier_order_id,
                attempts=job.attempts + 1, updated_at=now, claimed_until=None,
                due_at=now + timedelta(seconds=self.policy.delay(job.attempts + 1))))

    def _failed(self, job: Job, reason: str) -> None:
        now = utcnow()
        with transaction(self.engine) as conn:
            if not conn.execute(update(rp).where(rp.c.id == job.id, rp.c.state.in_(OPEN))
                                .values(state=R.FAILED, reason=reason[:300], updated_at=now,
                                        finished_at=now, claimed_until=None)).rowcount:
                return
            release(conn, job.pool_id, job.reserved_cents, job.day, job.month, now)
            failures = int(conn.execute(select(rs.c.failures)
                                        .where(rs.c.pool_id == job.pool_id)).scalar_one()) + 1
            free_slot(conn, job.pool_id, now, failures=failures, last_error=reason[:300],
                       next_at=now + timedelta(seconds=backoff(failures)))
            audit.append(conn, actor=ACTOR, action="restock_failed", subject=f"pool:{job.pool}",
                         details={"purchase": job.id, "key": job.key,
                                  "supplier": job.supplier, "reason": reason})
        log.warning("restock_purchase_failed", reason=reason, failures=failures)

    def _succeeded(self, job: Job, purchase: Purchase) -> None:
        cards = purchase.cards[:job.quantity]
        secrets_ = [(join_pair(c.number.reveal(), c.code.reveal()) if c.number is not None
                     else c.code.reveal(), c.expires_at) for c in cards]
        sealed = pools.seal_bought(self.engine, self.vault, job.pool_id, secrets_)
        try:
            stocked = self._store(job, purchase, sealed)
        except IntegrityError:
            stocked = self._store(job, purchase, [], problem=(
                "a code bought is already in the vault (sold twice?): none of this "
                "purchase's codes were put on sale; review it with the supplier"))
        if stocked:
            self.on_stocked()

    def _store(self, job: Job, purchase: Purchase, sealed: list[pools.SealedCode], *,
               problem: str | None = None) -> int:
        """The success in one transaction, once: codes on sale as their own batch, the
        budget trued up, the slot freed. How many codes went on sale."""
        now = utcnow()
        cost = purchase.cost_cents
        with transaction(self.engine) as conn:
            if not conn.execute(update(rp).where(rp.c.id == job.id, rp.c.state.in_(OPEN))
                                .values(state=R.SUCCEEDED, updated_at=now, finished_at=now,
                                        supplier_order_id=purchase.supplier_order_id,
                                        cost_cents=cost, reason=problem,
                                        claimed_until=None)).rowcount:
                return 0  # recorded already (another worker, an earlier run)
            label = f"restock {job.supplier} {job.key}"
            unit = cost // job.quantity if cost is not None else None
            batch, in_stock = pools.stock_bought(
                conn, job.pool_id, sealed, supplier=job.supplier, label=label,
                unit_cost_cents=unit, actor=ACTOR, now=now)
            conn.execute(update(rp).where(rp.c.id == job.id)
                         .values(codes=in_stock, batch_id=batch))
            charged = cost if cost is not None else job.reserved_cents
            if charged > job.reserved_cents:
                log.warning("restock_charged_above_reserved", purchase=job.id,
                            reserved_cents=job.reserved_cents, cost_cents=charged)
            release(conn, job.pool_id, job.reserved_cents - charged, job.day, job.month, now)
            free_slot(conn, job.pool_id, now, failures=0, next_at=None, last_error=None)
            audit.append(conn, actor=ACTOR, action="import", subject=f"pool:{job.pool}",
                         details={"pool": job.pool, "batch": batch, "count": len(sealed),
                                  "in_stock": in_stock, "file": label,
                                  "supplier": job.supplier, "cost_cents": cost,
                                  "purchase": job.id, "key": job.key,
                                  "supplier_order_id": purchase.supplier_order_id,
                                  "problem": problem})
        if problem:
            log.error("restock_code_duplicate")
        log.info("restock_purchase_succeeded", codes=in_stock, cost_cents=cost)
        return in_stock


def _why(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    return str(message or type(exc).__name__)[:300]
