"""Write-back through the outbox: ship allocated orders and write seller memos, with retries.

Invariant 2 (allocation before write-back): a ``ship`` job exists only for an order whose
codes were reserved and committed in the same transaction, so by the time a platform is
called the claim is durable. A job is leased to one worker at a time (``claimed_until``); a
worker that dies loses its lease and another worker redoes the job with the same codes. A
platform's "already shipped" answer for our shipment therefore counts as success.

Every attempt that reaches an outcome (done, retry, failed, cancelled) is also kept in
``outbox_attempts``, the write-back history a person reads in ``robot orders show``.

A memo job can be queued again (:func:`queue_memo`: a new pickup link, replacement codes);
a worker that was writing the old memo meanwhile no longer owns the job, so its outcome is
dropped and the job runs again with the new text.

Retries are durable: each failed attempt is recorded with the next due time from tenacity's
exponential backoff with jitter (or the platform's stated ban time, if longer); after
``max_attempts`` the order becomes ``failed`` with its last error kept, for
``robot orders replay``. Credentials errors (``Fatal``) pause the shop instead of burning
attempts. No transaction is ever open while a platform is being called.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

import structlog
import tenacity
from sqlalchemy import ColumnElement, Connection, Engine, bindparam, insert, or_, select, update

from connectors.base import (
    Connector,
    Order,
    OrderLine,
    PlatformStatus,
    RefundState,
    Shipment,
)
from robot import audit, pipeline
from robot.clock import to_aware, utcnow
from robot.db import dialect_of, transaction
from robot.errors import CodeRejected, Fatal, NotShippable, Retriable, Skippable, VaultError
from robot.log import get_logger
from robot.schema import (
    codes,
    deliveries,
    order_lines,
    orders,
    outbox,
    outbox_attempts,
    shop_state,
)
from robot.states import AttemptResult, DeliveryState, OrderState, OutboxState
from robot.vault import Vault, mask

log = get_logger(__name__)


class ShopTemplates(pipeline.ShopRules, Protocol):
    @property
    def memo_template(self) -> str: ...
    @property
    def item_desc(self) -> str: ...


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 10
    backoff_initial: float = 5.0
    backoff_max: float = 3600.0
    # A job's lease is renewed every few seconds while its worker runs it (Dispatcher.renew),
    # so a worker that dies frees its jobs within one lease, however long a call may take.
    lease: timedelta = timedelta(seconds=15)
    call_timeout: float = 30.0
    paused_recheck: timedelta = timedelta(seconds=60)
    concurrency: int = 8  # write-back jobs in flight at once per process

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before attempt ``attempt + 1`` (exponential with jitter, never below the
        platform's stated ban)."""
        state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
        state.attempt_number = attempt
        wait = tenacity.wait_exponential_jitter(
            multiplier=self.backoff_initial, max=self.backoff_max, jitter=self.backoff_initial
        )
        return max(float(wait(state)), retry_after or 0.0)


@dataclass(frozen=True)
class Job:
    id: int
    order_id: int
    kind: Literal["ship", "memo", "source"]
    attempts: int


@dataclass(frozen=True)
class JobContext:
    shop: str
    state: str
    order: Order
    masked_codes: tuple[str, ...]
    platform_order_id: str
    paused: bool = False  # the shop is paused (credentials or permission problem)
    pickup_url: str | None = None  # filled by the Dispatcher when the shop has pickup on


class PickupLinks(Protocol):
    """Makes (or finds) an order's pickup link inside the caller's transaction."""

    def in_tx(self, conn: Connection, order_id: int, shop_name: str) -> str | None: ...


#: The jobs the write-back dispatcher runs (``source`` jobs are robot.sourcing's).
WRITE_BACK_KINDS = ("ship", "memo")


def claim_jobs(engine: Engine, worker: str, *, now: datetime, limit: int,
               lease: timedelta, kinds: Sequence[str] = WRITE_BACK_KINDS) -> list[Job]:
    """Lease up to ``limit`` due jobs of ``kinds`` to ``worker``."""
    with transaction(engine) as conn:
        stmt = (
            select(outbox.c.id, outbox.c.order_id, outbox.c.kind, outbox.c.attempts)
            .where(outbox.c.state == OutboxState.PENDING, outbox.c.due_at <= now,
                   outbox.c.kind.in_(kinds),
                   or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until < now))
            .order_by(outbox.c.due_at, outbox.c.id)
            .limit(limit)
        )
        if dialect_of(conn) != "sqlite":
            stmt = stmt.with_for_update(skip_locked=True)
        rows = conn.execute(stmt).all()
        if not rows:
            return []
        conn.execute(update(outbox).where(outbox.c.id.in_([r.id for r in rows]))
                     .values(claimed_by=worker, claimed_until=now + lease))
        return [Job(int(r.id), int(r.order_id), r.kind, int(r.attempts)) for r in rows]


def renew_claims(engine: Engine, worker: str, job_ids: list[int], *, now: datetime,
                 lease: timedelta) -> int:
    """Extend ``worker``'s leases on ``job_ids`` (those another worker took over stay its)."""
    with transaction(engine) as conn:
        return conn.execute(
            update(outbox)
            .where(outbox.c.id.in_(job_ids), outbox.c.claimed_by == worker,
                   outbox.c.state == OutboxState.PENDING, outbox.c.claimed_until.is_not(None))
            .values(claimed_until=now + lease)
        ).rowcount


_ContextRows = tuple[Any, Sequence[Any], Sequence[Any]]  # order, lines, codes (Rows)
# Built once: every write-back job reads these.
_JOB_ORDER = (select(orders, shop_state.c.paused)
              .outerjoin(shop_state, shop_state.c.shop == orders.c.shop)
              .where(orders.c.id == bindparam("b_id")))
_JOB_LINES = (select(order_lines).where(order_lines.c.order_id == bindparam("b_id"))
              .order_by(order_lines.c.line_no))
_JOB_CODES = (select(codes.c.id, codes.c.pool_id, codes.c.fingerprint, codes.c.key_id,
                     codes.c.ciphertext, codes.c.aad_version)
              .join(deliveries, deliveries.c.code_id == codes.c.id)
              .where(deliveries.c.order_id == bindparam("b_id"),
                     # replaced: not the buyer's any more
                     deliveries.c.state != DeliveryState.DEFECTIVE)
              .order_by(deliveries.c.line_no, deliveries.c.n))


def _context_rows(conn: Connection, order_id: int) -> _ContextRows:
    """The order (with its shop's pause flag), its lines and its codes' rows."""
    params = {"b_id": order_id}
    return (conn.execute(_JOB_ORDER, params).one(), conn.execute(_JOB_LINES, params).all(),
            conn.execute(_JOB_CODES, params).all())


def _context(vault: Vault, rows: _ContextRows) -> JobContext:
    """Decrypt and mask the codes (outside any transaction) and rebuild the order."""
    o, lines, delivered = rows
    masked = tuple(
        mask(vault.decrypt(r.key_id, r.ciphertext, code_id=r.id, pool_id=r.pool_id,
                           fingerprint=r.fingerprint, aad_version=r.aad_version))
        for r in delivered
    )
    order = Order(
        platform_order_id=o.platform_order_id,
        status=PlatformStatus(o.platform_status),
        lines=tuple(OrderLine(line_id=ln.line_id, quantity=ln.quantity, item_id=ln.item_id,
                              sku_id=ln.sku_id, outer_id=ln.outer_id, title=ln.title,
                              unit_price_cents=ln.unit_price_cents, refund=RefundState(ln.refund))
                    for ln in lines),
        total_cents=o.total_cents, currency=o.currency,
        paid_at=to_aware(o.paid_at) if o.paid_at else None,
        buyer_id=o.buyer_id, buyer_ip=o.buyer_ip, extra=json.loads(o.extra or "{}"),
    )
    return JobContext(o.shop, o.state, order, masked, o.platform_order_id,
                      paused=bool(o.paused))


def render(template: str, *, ctx: JobContext, pickup_url: str | None) -> str:
    """Fill a memo / item description template; unknown placeholders are left as written."""
    lines = [ln for ln in ctx.order.lines if ln.refund is RefundState.NONE] or list(ctx.order.lines)
    values = {
        "masked_codes": " ".join(ctx.masked_codes),
        "pickup_url": pickup_url or "",
        "order_id": ctx.platform_order_id,
        "title": lines[0].title if lines else "",
        "quantity": sum(ln.quantity for ln in lines),
        "count": len(ctx.masked_codes),
    }

    class _Keep(dict[str, object]):
        def __missing__(self, key: str) -> str:
            return "{" + key + "}"

    return template.format_map(_Keep(values)).strip()


class Dispatcher:
    """Runs due outbox jobs against the shops' connectors."""

    def __init__(
        self,
        engine: Engine,
        vault: Vault,
        connectors: Mapping[str, Connector],
        shops: Mapping[str, ShopTemplates],
        policy: RetryPolicy,
        *,
        worker: str,
        pickup_url: PickupLinks | None = None,
        actor: str = "outbox",
    ) -> None:
        self.engine = engine
        self.vault = vault
        self.connectors = connectors
        self.shops = shops
        self.policy = policy
        self.worker = worker
        self._pickup = pickup_url
        self.actor = actor
        self._running: set[int] = set()  # ids of the jobs this worker is running now
        self._shops_running: dict[str, int] = {}  # shop -> its jobs running now

    @property
    def busy(self) -> bool:
        """Whether this worker is running jobs right now (whose leases need renewing)."""
        return bool(self._running)

    def renew(self, *, now: datetime | None = None) -> int:
        """Extend the lease of every job this worker is running (blocking: one short
        transaction); returns how many were renewed."""
        running = list(self._running)
        if not running:
            return 0
        return renew_claims(self.engine, self.worker, running, now=now or utcnow(),
                            lease=self.policy.lease)

    async def run_once(self, *, now: datetime | None = None, limit: int = 20) -> int:
        """Lease and run the due jobs; returns how many were run."""
        now = now or utcnow()
        jobs = await asyncio.to_thread(
            claim_jobs, self.engine, self.worker, now=now, limit=limit, lease=self.policy.lease
        )
        # Jobs are for different orders; their platform calls overlap, their transactions
        # stay short and separate.
        gate = asyncio.Semaphore(self.policy.concurrency)

        async def one(job: Job) -> None:
            async with gate:
                self._running.add(job.id)
                try:
                    await self.run_job(job)
                finally:
                    self._running.discard(job.id)

        await asyncio.gather(*(one(job) for job in jobs))
        return len(jobs)

    def prepare(self, job: Job) -> JobContext:
        """One transaction: the job's order, lines, codes and shop state, and the order's
        pickup link (made on first use) when the job will call the platform."""
        with transaction(self.engine) as conn:
            rows = _context_rows(conn, job.order_id)
            o = rows[0]
            calls = (not o.paused and o.shop in self.shops and o.shop in self.connectors
                     and (job.kind != "ship" or o.state == OrderState.ALLOCATED))
            pickup = (self._pickup.in_tx(conn, job.order_id, str(o.shop))
                      if calls and self._pickup is not None else None)
        return replace(_context(self.vault, rows), pickup_url=pickup)

    def busy_with(self, shop: str) -> bool:
        """Whether a job of ``shop`` is running now (a shop being stopped waits for it)."""
        return self._shops_running.get(shop, 0) > 0

    async def run_job(self, job: Job) -> None:
        """Run one job. Its context is bound once (order_id, job; shop once read): every line
        logged while it runs, here and in the pipeline or connector it calls, carries them."""
        with structlog.contextvars.bound_contextvars(order_id=job.order_id, job=job.kind):
            await self._run_bound(job)

    async def _run_bound(self, job: Job) -> None:
        try:
            ctx = await asyncio.to_thread(self.prepare, job)
        except CodeRejected as exc:
            # A code of this order fails authentication (its row was altered, or a
            # ciphertext was copied or moved onto it): never send it; the order fails with
            # the reason, visibly, for a person (and `robot orders replace` / replay).
            if await asyncio.to_thread(self._fail, job, exc.message):
                log.error("write_back_refused", error=exc.message)
            return
        except VaultError as exc:  # a key the file lacks: wait for the right key file
            await self._later(job, exc.message, count=False, delay=self.policy.paused_recheck)
            log.error("write_back_waiting_for_key", error=exc.message)
            return
        self._shops_running[ctx.shop] = self._shops_running.get(ctx.shop, 0) + 1
        try:
            with structlog.contextvars.bound_contextvars(shop=ctx.shop):
                await self._run_prepared(job, ctx)
        finally:
            self._shops_running[ctx.shop] -= 1

    async def _run_prepared(self, job: Job, ctx: JobContext) -> None:
        connector = self.connectors.get(ctx.shop)
        shop = self.shops.get(ctx.shop)
        if connector is None or shop is None:
            await self._later(job, f"shop {ctx.shop!r} is not configured or its connector failed",
                              count=False)
            return
        if ctx.paused:
            await self._later(job, "shop paused", count=False, delay=self.policy.paused_recheck)
            return
        if job.kind == "ship" and ctx.state != OrderState.ALLOCATED:
            await asyncio.to_thread(self._not_allocated, job, ctx.state)
            return
        pickup = ctx.pickup_url
        try:
            if job.kind == "ship":
                shipment = Shipment(
                    order=ctx.order,
                    line_ids=tuple(ln.line_id for ln in ctx.order.lines),
                    memo=render(shop.memo_template, ctx=ctx, pickup_url=pickup),
                    item_desc=render(shop.item_desc, ctx=ctx, pickup_url=None),
                    masked_codes=ctx.masked_codes,
                    pickup_url=pickup,
                )
                outcome = await asyncio.wait_for(connector.ship(shipment), self.policy.call_timeout)
                await asyncio.to_thread(self._shipped, job, outcome.value)
                log.info("order_shipped", outcome=outcome.value)
            else:
                memo = render(shop.memo_template, ctx=ctx, pickup_url=pickup)
                await asyncio.wait_for(connector.write_memo(ctx.order, memo),
                                       self.policy.call_timeout)
                await asyncio.to_thread(self._done, job)
                log.info("memo_written")
        except TimeoutError:
            await self._retry(job, "platform call timed out", None)
        except NotShippable as exc:
            await self._not_shippable(job, ctx, shop, connector, exc)
        except Retriable as exc:
            await self._retry(job, exc.message, exc.retry_after)
        except Fatal as exc:
            await asyncio.to_thread(self._pause_shop, ctx.shop, exc.message)
            await self._later(job, exc.message, count=False, delay=self.policy.paused_recheck)
            log.error("shop_paused", error=exc.message, error_type=type(exc).__name__)
        except Skippable as exc:
            if await asyncio.to_thread(self._fail, job, exc.message):
                log.error("write_back_failed", error=exc.message)
        except Exception as exc:
            await self._retry(job, f"unexpected {type(exc).__name__}", None)
            log.exception("write_back_crashed")

    # -- outcomes (each one short transaction) -------------------------------------------------
    def _shipped(self, job: Job, outcome: str) -> None:
        now = utcnow()
        with transaction(self.engine) as conn:
            try:
                pipeline.transition(conn, job.order_id, OrderState.ALLOCATED, OrderState.SHIPPED,
                                    None, now, shipped_at=now)
            except pipeline.StateConflict:
                log.error("ship_state_conflict")
                conn.execute(update(outbox).where(outbox.c.id == job.id)
                             .values(state=OutboxState.DONE, done_at=now, claimed_until=None))
                return
            conn.execute(update(deliveries).where(deliveries.c.order_id == job.order_id)
                         .values(state=DeliveryState.DELIVERED, delivered_at=now))
            conn.execute(update(outbox).where(outbox.c.id == job.id)
                         .values(state=OutboxState.DONE, done_at=now, attempts=job.attempts + 1,
                                 claimed_until=None, last_error=None))
            record_attempt(conn, job, AttemptResult.DONE, None, now)
            conn.execute(insert(outbox).values(order_id=job.order_id, kind="memo",
                                               state=OutboxState.PENDING, attempts=0, due_at=now,
                                               created_at=now))
            audit.append(conn, actor=self.actor, action="ship", subject=f"order:{job.order_id}",
                         details={"outcome": outcome})

    def _mine(self, job: Job) -> list[ColumnElement[bool]]:
        """The job's row, and for a memo only while this worker still owns it (a memo queued
        again under a running worker must run again, not be marked done by the old text)."""
        where = [outbox.c.id == job.id]
        if job.kind == "memo":
            where.append(outbox.c.claimed_by == self.worker)
        return where

    def _done(self, job: Job) -> None:
        now = utcnow()
        with transaction(self.engine) as conn:
            if conn.execute(update(outbox).where(*self._mine(job))
                            .values(state=OutboxState.DONE, done_at=now, attempts=job.attempts + 1,
                                    claimed_until=None, last_error=None)).rowcount:
                record_attempt(conn, job, AttemptResult.DONE, None, now)

    def _fail(self, job: Job, error: str) -> bool:
        """End the job, and a ship job's order, as failed; True when this call did it.

        Both moves are guarded by the state they leave (a pending job, an allocated order):
        when two workers hold the same job (a lease ran out under a hung call) or a person
        cancelled the order meanwhile, only the first to act records, audits and logs it.
        """
        now = utcnow()
        with transaction(self.engine) as conn:
            if not conn.execute(update(outbox)
                                .where(*self._mine(job), outbox.c.state == OutboxState.PENDING)
                                .values(state=OutboxState.FAILED, attempts=job.attempts + 1,
                                        last_error=error, claimed_until=None,
                                        done_at=now)).rowcount:
                return False
            record_attempt(conn, job, AttemptResult.FAILED, error, now)
            if job.kind != "ship":
                return True
            try:
                pipeline.transition(conn, job.order_id, OrderState.ALLOCATED, OrderState.FAILED,
                                    error, now)
            except pipeline.StateConflict:
                return False  # held, cancelled or shipped meanwhile: the order did not fail
            audit.append(conn, actor=self.actor, action="ship_failed",
                         subject=f"order:{job.order_id}", details={"error": error})
            return True

    async def _retry(self, job: Job, error: str, retry_after: float | None) -> None:
        attempts = job.attempts + 1
        if attempts >= self.policy.max_attempts:
            if await asyncio.to_thread(self._fail, job, f"{error} (after {attempts} attempts)"):
                log.error("write_back_failed", error=error, attempts=attempts)
            return
        delay = timedelta(seconds=self.policy.delay(attempts, retry_after))
        await self._later(job, error, count=True, delay=delay)
        log.warning("write_back_retry", error=error, attempts=attempts,
                      retry_in_s=round(delay.total_seconds(), 1))

    async def _later(self, job: Job, error: str, *, count: bool,
                     delay: timedelta = timedelta(seconds=60)) -> None:
        def _tx() -> None:
            now = utcnow()
            with transaction(self.engine) as conn:
                moved = conn.execute(update(outbox).where(*self._mine(job)).values(
                    attempts=job.attempts + (1 if count else 0), last_error=error,
                    due_at=now + delay, claimed_until=None)).rowcount
                if moved and count:  # a paused shop's wait is no attempt
                    record_attempt(conn, job, AttemptResult.RETRY, error, now)
        await asyncio.to_thread(_tx)

    def _not_allocated(self, job: Job, state: str) -> None:
        now = utcnow()
        with transaction(self.engine) as conn:
            if state in (OrderState.HELD, OrderState.FAILED):
                # Parked until a person releases or replays it; those reset due_at.
                values: dict[str, object] = {"due_at": now + timedelta(days=365),
                                             "claimed_until": None}
            else:
                ended = OutboxState.DONE if state == OrderState.SHIPPED else OutboxState.CANCELLED
                values = {"state": ended,
                          "done_at": now, "claimed_until": None}
                record_attempt(conn, job, AttemptResult.CANCELLED, f"order is {state}", now)
            conn.execute(update(outbox).where(outbox.c.id == job.id).values(**values))

    async def _not_shippable(self, job: Job, ctx: JobContext, shop: ShopTemplates,
                             connector: Connector, exc: NotShippable) -> None:
        """The platform refused: learn why from the order itself, then act on it."""
        try:
            snapshot = await asyncio.wait_for(connector.fetch_order(ctx.platform_order_id),
                                              self.policy.call_timeout)
        except Exception as fetch_exc:  # noqa: BLE001 - any failure here means: try again later
            await self._retry(job, f"{exc.message}; re-reading the order failed: "
                              f"{type(fetch_exc).__name__}", None)
            return
        result = await asyncio.to_thread(pipeline.intake, self.engine, shop, snapshot,
                                         actor=self.actor)
        if result.state in (OrderState.CANCELLED, OrderState.REFUNDED, OrderState.HELD):
            log.info("write_back_cancelled", state=result.state)
            await asyncio.to_thread(self._not_allocated, job, str(result.state))
            return
        if snapshot.status in (PlatformStatus.SHIPPED, PlatformStatus.COMPLETED):
            await asyncio.to_thread(self._shipped, job, "already_shipped")
            log.info("order_shipped", outcome="already_shipped")
            return
        if await asyncio.to_thread(self._fail, job, exc.message):
            log.error("write_back_failed", error=exc.message)

    def _pause_shop(self, shop: str, reason: str) -> None:
        pause_shop(self.engine, shop, reason)


def record_attempt(conn: Connection, job: Job, result: str, error: str | None,
                   now: datetime) -> None:
    """Keep one write-back attempt's outcome for the order's history."""
    conn.execute(insert(outbox_attempts).values(outbox_id=job.id, order_id=job.order_id,
                                                kind=job.kind, at=now, result=result,
                                                error=error))


def queue_memo(conn: Connection, order_id: int, now: datetime) -> None:
    """(Re)write the order's seller memo from its current codes and pickup link.

    Inside the caller's transaction. The order's one memo job is made pending again (or
    made): a worker still running the old one loses it (see :meth:`Dispatcher._mine`).
    """
    moved = conn.execute(update(outbox).where(outbox.c.order_id == order_id,
                                              outbox.c.kind == "memo")
                         .values(state=OutboxState.PENDING, attempts=0, due_at=now, claimed_by=None,
                                 claimed_until=None, last_error=None, done_at=None)).rowcount
    if not moved:
        conn.execute(insert(outbox).values(order_id=order_id, kind="memo",
                                           state=OutboxState.PENDING, attempts=0, due_at=now,
                                           created_at=now))


def write_back_history(conn: Connection, order_id: int) -> list[dict[str, Any]]:
    """The order's write-back attempts, oldest first: when, which job, result, error."""
    return [dict(r._mapping) for r in conn.execute(
        select(outbox_attempts.c.at, outbox_attempts.c.kind, outbox_attempts.c.result,
               outbox_attempts.c.error)
        .where(outbox_attempts.c.order_id == order_id)
        .order_by(outbox_attempts.c.at, outbox_attempts.c.id))]


def pause_shop(engine: Engine, shop: str, reason: str) -> None:
    """Pause a shop (credentials or permission problem) until a person resumes it."""
    now = utcnow()
    with transaction(engine) as conn:
        ensure_shop_state(conn, shop, now)
        conn.execute(update(shop_state).where(shop_state.c.shop == shop)
                     .values(paused=True, paused_reason=reason, updated_at=now))
        audit.append(conn, actor="robot", action="shop_pause", subject=f"shop:{shop}",
                     details={"reason": reason})


def resume_shop(engine: Engine, shop: str, *, actor: str) -> None:
    now = utcnow()
    with transaction(engine) as conn:
        ensure_shop_state(conn, shop, now)
        conn.execute(update(shop_state).where(shop_state.c.shop == shop)
                     .values(paused=False, paused_reason=None, updated_at=now))
        conn.execute(update(outbox).where(
            outbox.c.state == OutboxState.PENDING,
            outbox.c.order_id.in_(select(orders.c.id).where(orders.c.shop == shop)))
            .values(due_at=now))
        audit.append(conn, actor=actor, action="shop_resume", subject=f"shop:{shop}", details={})


def ensure_shop_state(conn: Connection, shop: str, now: datetime) -> None:
    exists = conn.execute(select(shop_state.c.shop).where(shop_state.c.shop == shop)).first()
    if exists is None:
        conn.execute(insert(shop_state).values(shop=shop, paused=False, updated_at=now))
