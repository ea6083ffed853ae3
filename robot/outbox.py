"""Write-back through the outbox: ship allocated orders and write seller memos, with retries.

Invariant 2 (allocation before write-back): a ``ship`` job exists only for an order whose
codes were reserved and committed in the same transaction, so by the time a platform is
called the claim is durable. A job is leased to one worker at a time (``claimed_until``); a
worker that dies loses its lease and another worker redoes the job with the same codes. A
platform's "already shipped" answer for our shipment therefore counts as success.

Every attempt that reaches an outcome (done, retry, failed, cancelled) is also kept in
``outbox_attempts``, the write-back history a person reads in ``robot orders show``.

A connector whose platform shows codes to the buyer (``shows_codes``: 抖店, 闲管家) gets the
codes themselves in its shipment, wrapped (:class:`~connectors.base.HandedCode`), and only in
a ship job; every attempt that hands them over first marks them seen and is audited
(``hand_over``, codes masked) before the call (:func:`hand_over_in_tx`, which a supply
gateway's answer uses too). Every other connector gets masked codes and the pickup link only.

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
import itertools
import json
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

import structlog
import tenacity
from sqlalchemy import ColumnElement, Connection, Engine, bindparam, insert, or_, select, update
from sqlalchemy.exc import NoResultFound

from connectors.base import (
    Connector,
    HandedCode,
    Order,
    OrderLine,
    PlatformStatus,
    RefundState,
    Shipment,
    shows_codes,
)
from connectors.cardsecret import CardSecret
from robot import audit, pipeline, poolpage
from robot.clock import to_aware, utcnow
from robot.db import dialect_of, read, transaction, write
from robot.errors import CodeRejected, Fatal, NotShippable, Retriable, Skippable, VaultError
from robot.groupcommit import GroupCommit
from robot.http import handover
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
from robot.vault import Vault, mask, split_pair

if TYPE_CHECKING:
    from robot.notify import Notifications

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
    kind: Literal["ship", "memo", "notify", "source"]
    attempts: int


@dataclass(frozen=True)
class JobContext:
    shop: str
    state: str
    order: Order
    masked_codes: tuple[str, ...]
    platform_order_id: str
    paused: bool = False  # the shop is paused (credentials or permission problem)
    reserved: int = 0  # codes still reserved (a cancelled order's: its shipment was on its way)
    pickup_url: str | None = None  # filled by the Dispatcher when the shop has pickup on
    #: The codes themselves, for a ship job of a connector that shows them to the buyer.
    handed: tuple[HandedCode, ...] = ()


class PickupLinks(Protocol):
    """Makes (or finds) an order's pickup link inside the caller's transaction."""

    def in_tx(self, conn: Connection, order_id: int, shop_name: str) -> str | None: ...


#: The jobs the write-back dispatcher runs (``source`` jobs are robot.sourcing's).
WRITE_BACK_KINDS = ("ship", "memo", "notify")  # the Dispatcher's; "source" is robot.sourcing's
#: Seconds between the daemon's scans of the due-time index while it has handed orders to
#: ship (:meth:`Dispatcher.scan_due`): how late, at most, a retry or another process's job
#: is found under load.
SCAN_EVERY = 1.0


def claim_jobs(engine: Engine, worker: str, *, now: datetime, limit: int,
               lease: timedelta, kinds: Sequence[str] = WRITE_BACK_KINDS) -> list[Job]:
    """Lease up to ``limit`` due jobs of ``kinds`` to ``worker``."""
    with transaction(engine) as conn:
        return claim_jobs_in(conn, worker, now=now, limit=limit, lease=lease, kinds=kinds)


def claim_jobs_in(conn: Connection, worker: str, *, now: datetime, limit: int,
                  lease: timedelta, kinds: Sequence[str] = WRITE_BACK_KINDS,
                  order_ids: Collection[int] = (), scan: bool = True) -> list[Job]:
    """:func:`claim_jobs` inside the caller's transaction (a group commit's batch: a round
    that finds nothing costs a SELECT in a shared transaction, not one of its own).

    ``order_ids``: the due jobs of these orders first, looked up by order (the
    ``(order_id, kind)`` key) rather than found by the scan of the due-time index; with
    ``scan`` false, only those. A scan from the index's start walks the entry of every job
    that finished since the last vacuum could clean it — under a long transaction holding
    PostgreSQL's horizon, every job of the last minutes, on every round — while an order's
    own key holds that order's few row versions only."""
    locked = dialect_of(conn) != "sqlite"
    got: dict[int, Any] = {}
    if order_ids:
        stmt = _HANDED_JOBS_LOCKED if locked else _HANDED_JOBS
        for r in conn.execute(stmt, {"b_now": now, "b_kinds": list(kinds),
                                     "b_orders": list(order_ids)}):
            got[r.id] = r
    if scan and len(got) < limit:
        stmt = _DUE_JOBS_LOCKED if locked else _DUE_JOBS
        for r in conn.execute(stmt, {"b_now": now, "b_kinds": list(kinds),
                                     "b_limit": limit - len(got)}):
            got.setdefault(r.id, r)
    if not got:
        return []
    conn.execute(_LEASE, {"b_ids": list(got), "claimed_by": worker,
                          "claimed_until": now + lease})
    return [Job(int(r.id), int(r.order_id), r.kind, int(r.attempts)) for r in got.values()]


# Built once: every write-back round runs them.
_DUE = (outbox.c.state == OutboxState.PENDING, outbox.c.due_at <= bindparam("b_now"),
        outbox.c.kind.in_(bindparam("b_kinds", expanding=True)),
        or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until < bindparam("b_now")))
_JOB_COLS = (outbox.c.id, outbox.c.order_id, outbox.c.kind, outbox.c.attempts)
_DUE_JOBS = (
    select(*_JOB_COLS).where(*_DUE)
    .order_by(outbox.c.due_at, outbox.c.id)
    .limit(bindparam("b_limit"))
)
_DUE_JOBS_LOCKED = _DUE_JOBS.with_for_update(skip_locked=True)
_HANDED_JOBS = (
    select(*_JOB_COLS)
    .where(outbox.c.order_id.in_(bindparam("b_orders", expanding=True)), *_DUE)
    .order_by(outbox.c.id)
)
_HANDED_JOBS_LOCKED = _HANDED_JOBS.with_for_update(skip_locked=True)
_LEASE = update(outbox).where(outbox.c.id.in_(bindparam("b_ids", expanding=True)))


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
#: A job's context as read in its transaction: rows, pickup link, hand over?, redeem links.
_Prepared = tuple[_ContextRows, str | None, bool, dict[int, str]]
# Built once: every write-back job reads these.
_JOB_ORDER = (select(orders, shop_state.c.paused)
              .outerjoin(shop_state, shop_state.c.shop == orders.c.shop)
              .where(orders.c.id == bindparam("b_id")))
_JOB_LINES = (select(order_lines).where(order_lines.c.order_id == bindparam("b_id"))
              .order_by(order_lines.c.line_no))
_JOB_CODES = (select(codes.c.id, codes.c.pool_id, codes.c.fingerprint, codes.c.key_id,
                     codes.c.ciphertext, codes.c.aad_version, deliveries.c.state,
                     deliveries.c.line_no)
              .join(deliveries, deliveries.c.code_id == codes.c.id)
              .where(deliveries.c.order_id == bindparam("b_id"),
                     # replaced: not the buyer's any more
                     deliveries.c.state != DeliveryState.DEFECTIVE)
              .order_by(deliveries.c.line_no, deliveries.c.n))


def _context_rows(conn: Connection, order_id: int) -> _ContextRows:
    """The order (with its shop's pause flag), its lines and its codes' rows."""
    params = {"b_id": order_id}
    order = read(conn, _JOB_ORDER, params)
    if len(order) != 1:
        raise NoResultFound(f"order {order_id}: {len(order)} rows")
    return order[0], read(conn, _JOB_LINES, params), read(conn, _JOB_CODES, params)


def _context(vault: Vault, rows: _ContextRows, *, hand_over: bool = False,
             redeem: Mapping[int, str] | None = None) -> JobContext:
    """Decrypt and mask the codes (outside any transaction) and rebuild the order; with
    ``hand_over``, keep the codes too, wrapped (see :func:`handed_code`)."""
    o, lines, delivered = rows
    plain = [vault.decrypt(r.key_id, r.ciphertext, code_id=r.id, pool_id=r.pool_id,
                           fingerprint=r.fingerprint, aad_version=r.aad_version)
             for r in delivered]
    masked = tuple(mask(p) for p in plain)
    line_ids = {ln.line_no: ln.line_id for ln in lines}
    templates = redeem or {}
    handed = tuple(handed_code(p, line_ids.get(r.line_no, ""), templates.get(int(r.pool_id)))
                   for p, r in zip(plain, delivered, strict=True)) if hand_over else ()
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
                      paused=bool(o.paused), handed=handed,
                      reserved=sum(r.state == DeliveryState.RESERVED for r in delivered))


def redeem_templates(conn: Connection, vault: Vault, pool_ids: Sequence[int]) -> dict[int, str]:
    """The redemption link templates of those pools that have one (by pool id)."""
    return {pid: page.redeem_url for pid, page in poolpage.page_settings(
        conn, pool_ids, poolpage.page_key(vault)).items() if page.redeem_url}


def handed_code(plaintext: str, line_id: str, redeem: str | None) -> HandedCode:
    """One code as a platform that shows it to the buyer takes it: number and PIN apart, and
    the pool's redemption link (the code in it where the template takes one)."""
    number, pin = split_pair(plaintext)
    link = (None if redeem is None else poolpage.redeem_link(redeem, number)
            if poolpage.takes_code(redeem) else redeem)
    return HandedCode(line_id=line_id, number=CardSecret(number), masked=mask(plaintext),
                      pin=CardSecret(pin) if pin else None, link=link)


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
        notify: Notifications | None = None,
        group: GroupCommit | None = None,
    ) -> None:
        self.engine = engine
        self.vault = vault
        self.connectors = connectors
        self.shops = shops
        self.policy = policy
        self.worker = worker
        self._pickup = pickup_url
        self.actor = actor
        self._notify = notify  # buyer notifications (robot.notify): the ``notify`` jobs
        self._running: set[int] = set()  # ids of the jobs this worker is running now
        self._shops_running: dict[str, int] = {}  # shop -> its jobs running now
        #: Jobs' context reads and outcomes share transactions (robot.groupcommit).
        self._group = group or GroupCommit(engine)
        #: Orders this process allocated whose jobs are not leased yet (:meth:`hand`), in
        #: the order they came; and when the due-time index was last scanned.
        self._handed: dict[int, None] = {}
        self._scanned = float("-inf")
        self._scan_wanted = False

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

    def hand(self, order_ids: Iterable[int]) -> None:
        """Orders this process has just allocated (committed): the next round leases their
        jobs by order, without scanning the due-time index for them (:func:`claim_jobs_in`
        tells why that matters). Call in the event loop's thread."""
        for order_id in order_ids:
            self._handed[order_id] = None

    def want_scan(self) -> None:
        """Jobs may be due that were not handed (made elsewhere, or by a path that hands
        nothing): the next round scans the due-time index."""
        self._scan_wanted = True

    @property
    def handed(self) -> bool:
        """Whether orders were handed whose jobs no round has leased yet."""
        return bool(self._handed)

    def scan_due(self) -> bool:
        """Whether the next round should scan the due-time index: asked to, the last scan
        filled its round (more may be waiting), or :data:`SCAN_EVERY` seconds have passed
        (retries coming due, jobs other processes made)."""
        return self._scan_wanted or time.monotonic() - self._scanned >= SCAN_EVERY

    async def run_once(self, *, now: datetime | None = None, limit: int = 20,
                       scan: bool = True) -> int:
        """Lease and run the due jobs of the handed orders (:meth:`hand`) and, with ``scan``,
        any other due jobs; returns how many were run."""
        now = now or utcnow()
        handed = list(itertools.islice(self._handed, limit))
        for order_id in handed:
            del self._handed[order_id]
        if scan:
            self._scan_wanted = False
            self._scanned = time.monotonic()
        try:
            jobs = await self._group.run(lambda conn: claim_jobs_in(
                conn, self.worker, now=now, limit=limit, lease=self.policy.lease,
                order_ids=handed, scan=scan))
        except BaseException:
            self.hand(handed)  # not leased: the next round tries them again
            if scan:
                self._scan_wanted = True
            raise
        if scan and len(jobs) >= limit:
            self._scan_wanted = True  # a full round: more may be due
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
            read = self._prepare_in(conn, job)
        return self._context_of(read)

    def _prepare_in(self, conn: Connection, job: Job) -> _Prepared:
        """What :meth:`prepare` reads and writes, inside the caller's transaction."""
        rows = _context_rows(conn, job.order_id)
        o = rows[0]
        # A buyer notification needs the link whatever the platform's state.
        calls = o.shop in self.shops and (job.kind == "notify" or (
            not o.paused and o.shop in self.connectors
            and (job.kind != "ship" or o.state == OrderState.ALLOCATED)))
        pickup = (self._pickup.in_tx(conn, job.order_id, str(o.shop))
                  if calls and self._pickup is not None else None)
        # The codes themselves only for a shipment to a platform that shows them to the
        # buyer, each with its pool's redemption link when the pool has one.
        hand_over = calls and job.kind == "ship" and shows_codes(self.connectors[o.shop])
        redeem = (redeem_templates(conn, self.vault, [int(r.pool_id) for r in rows[2]])
                  if hand_over else {})
        return rows, pickup, hand_over, redeem

    def _context_of(self, read: _Prepared) -> JobContext:
        """Decrypt (outside any transaction) what :meth:`_prepare_in` read."""
        rows, pickup, hand_over, redeem = read
        return replace(_context(self.vault, rows, hand_over=hand_over, redeem=redeem),
                       pickup_url=pickup)

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
            read = await self._group.run(lambda conn: self._prepare_in(conn, job))
            ctx = self._context_of(read)
        except CodeRejected as exc:
            # A code of this order fails authentication (its row was altered, or a
            # ciphertext was copied or moved onto it): never send it; the order fails with
            # the reason, visibly, for a person (and `robot orders replace` / replay).
            if await asyncio.to_thread(self._fail, job, exc.message, refused=True):
                log.error("write_back_refused", error=exc.message)
            return
        except VaultError as exc:  # a key the file lacks: wait for the right key file
            await self._later(job, exc.message, count=False, delay=self.policy.paused_recheck)
            log.error("write_back_waiting_for_key", error=exc.message)
            return
        self._shops_running[ctx.shop] = self._shops_running.get(ctx.shop, 0) + 1
        try:
            with structlog.contextvars.bound_contextvars(shop=ctx.shop):
                if job.kind == "notify":  # the buyer's notifications: no platform call
                    await self._run_notify(job, ctx)
                else:
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
            await self._not_to_ship(job, ctx, connector)
            return
        pickup = ctx.pickup_url
        try:
            if job.kind == "ship":
                await self._ship(job, ctx, shop, connector)
            else:
                memo = render(shop.memo_template, ctx=ctx, pickup_url=pickup)
                await asyncio.wait_for(connector.write_memo(ctx.order, memo),
                                       self.policy.call_timeout)
                await self._group.run(lambda conn: self._done_in(conn, job))
                # The order's business event was its shipment (logged then); the memo is
                # its follow-up: at info only when it fails (retry / failed lines).
                log.debug("memo_written")
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
            if await asyncio.to_thread(self._fail, job, exc.message, refused=True):
                log.error("write_back_failed", error=exc.message)
        except Exception as exc:
            await self._retry(job, f"unexpected {type(exc).__name__}", None)
            log.exception("write_back_crashed")

    async def _not_to_ship(self, job: Job, ctx: JobContext, connector: Connector) -> None:
        if ctx.state == OrderState.CANCELLED and ctx.reserved:
            # Cancelled while a worker was shipping it, and that worker's answer was lost.
            await self._settle_lost(job, ctx, connector)
        else:
            await asyncio.to_thread(self._not_allocated, job, ctx.state)

    async def _settle_lost(self, job: Job, ctx: JobContext, connector: Connector) -> None:
        """Settle a cancelled order's codes from the platform's view of the order (the
        shipment's own answer was lost): shipped there, refused, or unknowable."""
        snapshot = await self._reread(job, ctx, connector, "re-reading the cancelled order")
        if snapshot is not None:
            await asyncio.to_thread(self._settle, job, _shipped_on(snapshot, earlier_lost=True))

    async def _reread(self, job: Job, ctx: JobContext, connector: Connector,
                      why: str) -> Order | None:
        """The platform's view of the job's order now; None (the job retried later) when it
        cannot be read."""
        try:
            return await asyncio.wait_for(connector.fetch_order(ctx.platform_order_id),
                                          self.policy.call_timeout)
        except Exception as exc:  # noqa: BLE001 - any failure here means: try again later
            await self._retry(job, f"{why} failed: {type(exc).__name__}", None)
            return None

    def _settle(self, job: Job, shipped: bool | None) -> None:
        now = utcnow()
        with transaction(self.engine) as conn:
            outcome = pipeline.settle_cancelled_shipment(conn, job.order_id, shipped=shipped,
                                                         actor=self.actor, now=now)
            ended = OutboxState.DONE if shipped else OutboxState.CANCELLED
            if conn.execute(update(outbox).where(outbox.c.id == job.id,
                                                 outbox.c.state == OutboxState.PENDING)
                            .values(state=ended, done_at=now, claimed_until=None)).rowcount:
                record_attempt(conn, job, AttemptResult.DONE if shipped else
                               AttemptResult.CANCELLED, f"order cancelled; shipment {outcome}", now)
        log.warning("cancelled_shipment_settled", shipment=outcome)

    async def _run_notify(self, job: Job, ctx: JobContext) -> None:
        """The order's buyer notifications (robot.notify); never touches the order."""
        if self._notify is None:
            await self._later(job, "buyer notifications are off in this process", count=False,
                              delay=self.policy.paused_recheck)
            return
        final = job.attempts + 1 >= self.policy.max_attempts
        outcome = await self._notify.run(job.order_id, ctx, final=final)
        if outcome.queued:
            await self._retry(job, outcome.error or "not sent", outcome.retry_after)
        elif outcome.in_flight:
            await self._later(job, "a notification is being sent by another worker",
                              count=False, delay=self._notify.abandoned_after)
        else:
            await self._group.run(lambda conn: self._done_in(conn, job))

    async def _ship(self, job: Job, ctx: JobContext, shop: ShopTemplates,
                    connector: Connector) -> None:
        pickup = ctx.pickup_url
        shipment = Shipment(
            order=ctx.order,
            line_ids=tuple(ln.line_id for ln in ctx.order.lines),
            memo=render(shop.memo_template, ctx=ctx, pickup_url=pickup),
            item_desc=render(shop.item_desc, ctx=ctx, pickup_url=None),
            masked_codes=ctx.masked_codes,
            pickup_url=pickup,
            handed=ctx.handed,
        )
        if ctx.handed:
            await self._group.run(lambda conn: self._handing_over_in(conn, job, ctx))
            log.info("hand_over_started", count=len(ctx.handed))
        outcome = await asyncio.wait_for(connector.ship(shipment), self.policy.call_timeout)
        memo_id = await self._group.run(
            lambda conn: self._shipped_in(conn, job, outcome.value, memo_now=True))
        log.info("order_shipped", outcome=outcome.value)
        if memo_id is not None:
            await self._memo_now(Job(memo_id, job.order_id, "memo", 0), ctx)

    async def _memo_now(self, memo: Job, ctx: JobContext) -> None:
        """Write the memo of an order just shipped, as its (leased) memo job would, from the
        context the shipment was made with. Its outcome is recorded as that job's; a worker
        that dies first leaves the job to be claimed once its lease ends, and a memo queued
        again meanwhile (replacement codes) takes the job from this worker, so this outcome
        is dropped and the job runs again with the new text (:meth:`_mine`)."""
        self._running.add(memo.id)  # its lease is renewed like a claimed job's
        try:
            with structlog.contextvars.bound_contextvars(job="memo"):
                await self._run_prepared(memo, ctx)
        finally:
            self._running.discard(memo.id)

    # -- outcomes (each one short transaction) -------------------------------------------------
    def _shipped(self, job: Job, outcome: str) -> None:
        with transaction(self.engine) as conn:
            self._shipped_in(conn, job, outcome)

    def _shipped_in(self, conn: Connection, job: Job, outcome: str, *,
                    memo_now: bool = False) -> int | None:
        """Record the shipment; queue the order's memo job and return its id. With
        ``memo_now`` the memo job is leased to this worker at once (it writes the memo next,
        from the context it shipped with: no claim, no second read)."""
        now = utcnow()
        state = OrderState.ALLOCATED
        try:
            pipeline.transition(conn, job.order_id, state, OrderState.SHIPPED,
                                None, now, shipped_at=now)
        except pipeline.StateConflict:
            state = OrderState(conn.execute(select(orders.c.state).where(
                orders.c.id == job.order_id)).scalar_one())
        if state == OrderState.HELD:
            # Held (a refund requested) while the shipment was on its way, and the platform
            # took it: the order is shipped; the refund, if it comes, refunds it.
            pipeline.transition(conn, job.order_id, state, OrderState.SHIPPED, None, now,
                                shipped_at=now)
        elif state == OrderState.CANCELLED and pipeline.settle_cancelled_shipment(
                conn, job.order_id, shipped=True, actor=self.actor, now=now):
            _finish_ship(conn, job, now)
            return None
        elif state != OrderState.ALLOCATED:
            log.error("ship_state_conflict", state=state)
            conn.execute(update(outbox).where(outbox.c.id == job.id)
                         .values(state=OutboxState.DONE, done_at=now, claimed_until=None))
            return None
        write(conn, _DELIVERED, {"b_order": job.order_id, "state": DeliveryState.DELIVERED,
                                 "delivered_at": now})
        _finish_ship(conn, job, now)
        lease = ({"claimed_by": self.worker, "claimed_until": now + self.policy.lease}
                 if memo_now else {})
        memo = write(conn, _INSERT_JOB, {"order_id": job.order_id, "kind": "memo",
                                         "state": OutboxState.PENDING, "attempts": 0,
                                         "due_at": now, "created_at": now, **lease})
        if self._notify is not None:  # the buyer hears of it once the shipment is durable
            self._notify.queue_delivered(conn, job.order_id, now)
        audit.append(conn, actor=self.actor, action="ship", subject=f"order:{job.order_id}",
                     details={"outcome": outcome})
        key = memo.inserted_primary_key  # (a single-row insert's id: every dialect has it)
        return None if key is None else int(key[0])

    def _handing_over_in(self, conn: Connection, job: Job, ctx: JobContext) -> None:
        """Audit, before the call, that this attempt hands the order's codes (named masked)
        to the platform, which shows them to the buyer: they leave the vault by design."""
        hand_over_in_tx(conn, job.order_id, [c.masked for c in ctx.handed],
                        actor=self.actor, now=utcnow(), shop=ctx.shop,
                        attempt=job.attempts + 1)

    def _mine(self, job: Job) -> list[ColumnElement[bool]]:
        """The job's row, and for a memo or a notify job only while this worker still owns it
        (one queued again under a running worker must run again, not be marked done)."""
        where = [outbox.c.id == job.id]
        if job.kind in _OWNED_KINDS:
            where.append(outbox.c.claimed_by == self.worker)
        return where

    def _done(self, job: Job) -> None:
        with transaction(self.engine) as conn:
            self._done_in(conn, job)

    def _done_in(self, conn: Connection, job: Job) -> None:
        _end_done(conn, job, utcnow(),
                  owner=self.worker if job.kind in _OWNED_KINDS else None)

    def _fail(self, job: Job, error: str, *, refused: bool = False) -> bool:
        """End the job, and a ship job's order, as failed; True when this call did it.

        ``refused``: the platform definitely did not take this attempt (it answered no, or it
        was never called), as opposed to giving up after attempts whose answers were lost.

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
                # Held, cancelled or shipped meanwhile: the order did not fail. Cancelled while
                # this shipment was on its way: it did not arrive, if this was its only attempt.
                if pipeline.settle_cancelled_shipment(
                        conn, job.order_id, shipped=False if refused and not job.attempts else None,
                        actor=self.actor, now=now):
                    conn.execute(update(outbox).where(outbox.c.id == job.id)
                                 .values(state=OutboxState.CANCELLED))
                return False
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
        snapshot = await self._reread(job, ctx, connector, f"{exc.message}; re-reading the order")
        if snapshot is None:
            return
        result = await asyncio.to_thread(pipeline.intake, self.engine, shop, snapshot,
                                         actor=self.actor)
        if result.state == OrderState.CANCELLED and ctx.reserved:
            # Cancelled while this shipment was on its way, and the platform refused it.
            await asyncio.to_thread(self._settle, job,
                                    _shipped_on(snapshot, earlier_lost=job.attempts > 0))
            return
        if result.state in (OrderState.CANCELLED, OrderState.REFUNDED, OrderState.HELD):
            log.info("write_back_cancelled", state=result.state)
            await asyncio.to_thread(self._not_allocated, job, str(result.state))
            return
        if snapshot.status in (PlatformStatus.SHIPPED, PlatformStatus.COMPLETED):
            await asyncio.to_thread(self._shipped, job, "already_shipped")
            log.info("order_shipped", outcome="already_shipped")
            return
        if await asyncio.to_thread(self._fail, job, exc.message, refused=True):
            log.error("write_back_failed", error=exc.message)

    def _pause_shop(self, shop: str, reason: str) -> None:
        pause_shop(self.engine, shop, reason)


def _shipped_on(snapshot: Order, *, earlier_lost: bool) -> bool | None:
    """Whether a cancelled order's shipment reached its platform, from the platform's view of
    the order: shipped or completed there, or its record shows a shipment
    (``shipped_on_platform``), yes; still open, no; closed (refunded) with a record that shows
    no shipment, no; closed with a record that says nothing, no when no earlier attempt's
    answer was lost, else nobody can tell (platforms close a refunded order whether it was
    shipped or not)."""
    if snapshot.status in (PlatformStatus.SHIPPED, PlatformStatus.COMPLETED) \
            or snapshot.shipped_on_platform:
        return True
    if snapshot.status is PlatformStatus.CLOSED and snapshot.shipped_on_platform is None \
            and earlier_lost:
        return None
    return False


def hand_over_in_tx(conn: Connection, order_id: int, masked: Sequence[str], *, actor: str,
                    now: datetime, **details: object) -> None:
    """The order's codes (``masked``) are about to leave the vault for a platform that shows
    them to the buyer: inside the caller's transaction, before any is sent, they are marked
    seen (a cancel can no longer put them back in stock) and the hand-over is audited
    (``hand_over``, with ``details`` and the codes masked). The outbox's ship job and a
    supply gateway's answer (:mod:`robot.supply`) both hand codes over through here."""
    handover.mark_seen(conn, order_id, now)
    audit.append(conn, actor=actor, action="hand_over", subject=f"order:{order_id}",
                 details={**details, "codes": list(masked)})


def settle_ship_in_tx(conn: Connection, order_id: int, now: datetime) -> None:
    """The order's pending ship job is done: the shipment happened outside the outbox (a
    supply gateway answered the codes), inside the caller's transaction."""
    rows = conn.execute(select(outbox.c.id, outbox.c.attempts).where(
        outbox.c.order_id == order_id, outbox.c.kind == "ship",
        outbox.c.state == OutboxState.PENDING)).all()
    for r in rows:
        _finish_ship(conn, Job(int(r.id), order_id, "ship", int(r.attempts)), now)


def _finish_ship(conn: Connection, job: Job, now: datetime) -> None:
    _end_done(conn, job, now)


def _end_done(conn: Connection, job: Job, now: datetime, *, owner: str | None = None) -> None:
    """End the job done, and keep the attempt; with ``owner``, only while that worker
    still holds it (:meth:`Dispatcher._mine`, as one prebuilt statement)."""
    params: dict[str, object] = {"b_id": job.id, "state": OutboxState.DONE, "done_at": now,
                                  "attempts": job.attempts + 1, "claimed_until": None,
                                  "last_error": None}
    stmt = _END_JOB
    if owner is not None:
        stmt, params["b_worker"] = _END_MINE, owner
    if write(conn, stmt, params).rowcount:
        record_attempt(conn, job, AttemptResult.DONE, None, now)


def record_attempt(conn: Connection, job: Job, result: str, error: str | None,
                   now: datetime) -> None:
    """Keep one write-back attempt's outcome for the order's history."""
    write(conn, _INSERT_ATTEMPT, {"outbox_id": job.id, "order_id": job.order_id,
                                  "kind": job.kind, "at": now, "result": result,
                                  "error": error})


#: Jobs a newer queueing may take from the worker running them (a memo queued again with
#: replacement codes, a notification re-sent): their outcome counts only while it is ours.
_OWNED_KINDS = ("memo", "notify")

# Built once (the write-back's hot statements; the SET columns are the parameters given).
_END_JOB = update(outbox).where(outbox.c.id == bindparam("b_id"))
_END_MINE = update(outbox).where(outbox.c.id == bindparam("b_id"),
                                 outbox.c.claimed_by == bindparam("b_worker"))
_INSERT_ATTEMPT = insert(outbox_attempts)
_INSERT_JOB = insert(outbox)
_DELIVERED = update(deliveries).where(deliveries.c.order_id == bindparam("b_order"))


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
