"""Taking orders in from a shop: polling steps, the reconciliation sweep, and events from
pushes or pulled messages.

A polling step asks the connector for one window after the stored cursor, takes every order
in (idempotently), and only then stores the new cursor: a crash in between repeats the step,
which is harmless. Steps repeat while the connector says it is behind (catching up after an
outage). The sweep lists the ids of the shop's recent orders (a trailing period, cheaply)
and reads in full and takes in only those the robot does not hold; it never touches a
cursor. Events (webhook pushes, Taobao TMC messages) are applied the same way — fetched in
full when the message is thin, taken in, recorded as seen — and only then acknowledged.

Database calls go through ``db`` (``asyncio.to_thread`` by default; the daemon passes one
that waits out database outages). This module never holds a transaction across a platform
call.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from connectors.base import (
    Connector,
    MessageSource,
    Order,
    PushEvent,
    PushKind,
    Reconciler,
    unreadable,
)
from robot import pipeline, shops
from robot.clock import DEFAULT_ZONE, utcnow
from robot.db import first, transaction, write
from robot.errors import BadPlatformData, Fatal, RobotError, Skippable
from robot.groupcommit import GroupCommit, run_together
from robot.log import get_logger
from robot.outbox import pause_shop
from robot.schema import push_seen

log = get_logger(__name__)

DbRunner = Callable[..., Awaitable[Any]]
MESSAGE_ID_MAX = 128  # push_seen.message_id


@dataclass
class PollOutcome:
    ok: bool
    steps: int = 0
    seen: int = 0  # orders the platform returned
    created: int = 0  # of which new to us
    error: str | None = None
    paused: bool = False  # a Fatal error paused the shop


async def poll_shop(engine: Engine, shop: pipeline.ShopRules, connector: Connector, kind: str,
                    *, now: Callable[[], datetime], owner: str | None = None,
                    db: DbRunner = asyncio.to_thread,
                    should_stop: Callable[[], bool] = lambda: False,
                    start: shops.PollStart | None = None,
                    zone: tzinfo = DEFAULT_ZONE) -> PollOutcome:
    """Run polling steps (``kind`` "poll" or "refund") until caught up; never raises for
    platform errors (they are recorded on the shop and returned). ``start`` is the shop's
    state as the caller just read it (else the cursor is read here); ``zone`` is the robot's
    ``timezone:`` (the risk rules' day)."""
    # Bound once: every line this poll logs (and intake, and the connector) names them.
    with structlog.contextvars.bound_contextvars(shop=shop.name, poll=kind):
        if start is None:
            start = await db(shops.poll_start, engine, shop.name, kind)
        cursor = start.cursor
        fetch = connector.poll if kind == "poll" else connector.poll_refunds
        outcome = PollOutcome(ok=True)
        while not should_stop():
            try:
                result = await fetch(cursor, now())
            except Fatal as exc:
                await db(pause_shop, engine, shop.name, exc.message)
                return PollOutcome(False, outcome.steps, outcome.seen, outcome.created,
                                   exc.message, paused=True)
            except RobotError as exc:
                return await _failed(engine, shop.name, kind, exc.message, outcome, db)
            except Exception as exc:  # a connector bug must not stop the robot (logged with trace)
                log.exception("poll_crashed")
                return await _failed(engine, shop.name, kind, f"unexpected {type(exc).__name__}",
                                     outcome, db)
            taken = await db(intake_page, engine, shop, result.orders,
                             actor=f"{kind}:{shop.name}", zone=zone)
            outcome.created += sum(t.action == "created" for t in taken)
            outcome.seen += len(result.orders)
            outcome.steps += 1
            await db(shops.save_poll, engine, shop.name, result.cursor, kind=kind, owner=owner)
            if not result.more:
                break
            cursor = dict(result.cursor)
        return outcome


def intake_page(engine: Engine, shop: pipeline.ShopRules, page: Sequence[Order], *,
                actor: str, zone: tzinfo = DEFAULT_ZONE) -> list[pipeline.IntakeResult]:
    """Take a polled page's orders in (allocating) in one transaction: one commit for the
    page instead of one per order, each order as :func:`pipeline.intake` takes it.

    An order that fails does not fail its neighbours: the page runs again with a savepoint
    per order (:func:`robot.groupcommit.run_together`), the others commit, and the first
    failure is raised afterwards (the cursor is not stored, so the page is read again and
    its committed orders are found taken in). An order another process inserted meanwhile
    is taken in again on its own (as an update); one whose id is unreadable goes through
    :func:`pipeline.intake` (it logs and audits it without an order).
    """
    together = [o for o in page if pipeline.usable_id(o.platform_order_id)]

    def unit(order: Order) -> Callable[[Connection], pipeline.IntakeResult]:
        return lambda conn: pipeline.intake_in(conn, shop, order, actor=actor, allocate=True,
                                               zone=zone)

    outcomes = run_together(engine, [unit(o) for o in together])
    taken: dict[int, pipeline.IntakeResult] = {}
    failed: Exception | None = None
    for order, (ok, value) in zip(together, outcomes, strict=True):
        if ok:
            taken[id(order)] = value
        elif isinstance(value, IntegrityError):
            taken[id(order)] = pipeline.intake(engine, shop, order, actor=actor, allocate=True,
                                               zone=zone)
        elif failed is None:
            failed = value
    if failed is not None:
        raise failed
    return [taken[id(o)] if id(o) in taken else
            pipeline.intake(engine, shop, o, actor=actor, allocate=True, zone=zone)
            for o in page]


async def _failed(engine: Engine, shop: str, kind: str, error: str, outcome: PollOutcome,
                  db: DbRunner) -> PollOutcome:
    await db(shops.save_poll, engine, shop, None, kind=kind, ok=False, error=error)
    return PollOutcome(False, outcome.steps, outcome.seen, outcome.created, error)


@dataclass
class SweepOutcome:
    ok: bool
    listed: int = 0  # recent orders the platform listed
    missing: int = 0  # of which the robot did not hold
    created: int = 0  # of which taken in as new orders now
    error: str | None = None


#: Ids named in one ``orders_recovered`` log line (the count is always complete).
_RECOVERED_SHOWN = 20


async def reconcile_shop(engine: Engine, shop: pipeline.ShopRules, connector: Connector, *,
                         now: datetime, period: timedelta, db: DbRunner = asyncio.to_thread,
                         fetch_timeout: float = 30.0,
                         zone: tzinfo = DEFAULT_ZONE) -> SweepOutcome:
    """Take in the orders of the last ``period`` (the platform's time, up to ``now`` on our
    clock) that polling missed. Never raises for platform errors; moves no cursor.

    Orders the robot holds are not read again (intake is idempotent, but reading every
    recent order in full each sweep would cost a call per order); a listed order that is
    not paid (any more) is skipped by intake like a polled one.
    """
    with structlog.contextvars.bound_contextvars(shop=shop.name, poll="sweep"):
        if not isinstance(connector, Reconciler):
            return SweepOutcome(True)
        try:
            ids = list(await connector.recent_order_ids(now, period))
            known = await db(pipeline.known_order_ids, engine, shop.name, ids)
            missing = [oid for oid in ids if oid not in known]
            created = 0
            for oid in missing:
                try:
                    order = await asyncio.wait_for(connector.fetch_order(oid), fetch_timeout)
                except BadPlatformData as exc:
                    order = unreadable(oid, exc.message)  # park it where a person sees it
                except Skippable as exc:
                    log.warning("sweep_order_unreadable", error=exc.message,
                                platform_order_id=oid)
                    continue
                taken = await db(pipeline.intake, engine, shop, order, actor=f"sweep:{shop.name}",
                                 allocate=True, zone=zone)
                created += taken.action == "created"
        except RobotError as exc:
            return SweepOutcome(False, error=exc.message)
        except TimeoutError:
            return SweepOutcome(False, error=f"reading an order took over {fetch_timeout:g}s")
        except Exception as exc:  # a connector bug must not stop the robot (logged with trace)
            log.exception("sweep_crashed")
            return SweepOutcome(False, error=f"unexpected {type(exc).__name__}")
        if created:
            # Polling should have found these: the log says so, with the ids to look at.
            log.warning("orders_recovered", count=created,
                        platform_order_ids=missing[:_RECOVERED_SHOWN])
        return SweepOutcome(True, len(ids), len(missing), created)


def message_key(message_id: str) -> str:
    """The message id as stored in ``push_seen``: long ids are replaced by their SHA-256."""
    if len(message_id) <= MESSAGE_ID_MAX:
        return message_id
    return "sha256:" + hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).hexdigest()


def _seen(engine: Engine, shop: str, key: str) -> bool:
    with engine.connect() as conn:
        return _seen_in(conn, shop, key)


def _seen_in(conn: Connection, shop: str, key: str) -> bool:
    return first(conn, _SEEN, {"b_shop": shop, "b_key": key}) is not None


def _mark_seen(engine: Engine, shop: str, key: str) -> None:
    try:
        with transaction(engine) as conn:
            _mark_in(conn, shop, key)
    except IntegrityError:
        pass  # the same message was applied concurrently (the platform sent it twice)


def _mark_in(conn: Connection, shop: str, key: str) -> None:
    write(conn, _MARK_SEEN, {"shop": shop, "message_id": key, "received_at": utcnow()})


# Built once: every push runs them.
_SEEN = select(push_seen.c.message_id).where(push_seen.c.shop == bindparam("b_shop"),
                                            push_seen.c.message_id == bindparam("b_key"))
_MARK_SEEN = insert(push_seen)


def _take_in(engine: Engine, shop: pipeline.ShopRules, order: Order, key: str | None, *,
             actor: str, zone: tzinfo) -> pipeline.IntakeResult:
    """Take the event's order in and record its message as seen, in one transaction: a
    message already seen is skipped inside it. (A copy of the message applied concurrently
    makes our record collide; intake then runs again and finds the message seen.)"""
    if key is None:
        return pipeline.intake(engine, shop, order, actor=actor, allocate=True, zone=zone)
    result = pipeline.intake(engine, shop, order, actor=actor, allocate=True, zone=zone,
                             unless=lambda conn: _seen_in(conn, shop.name, key),
                             then=lambda conn, _result: _mark_in(conn, shop.name, key))
    if result.action == "unidentifiable":
        _mark_seen(engine, shop.name, key)  # recorded outside intake's transaction (none ran)
    return result


async def _take_in_group(group: GroupCommit, shop: pipeline.ShopRules, order: Order,
                         key: str | None, *, actor: str, zone: tzinfo
                         ) -> pipeline.IntakeResult:
    """:func:`_take_in` in a transaction shared with the pushes arriving beside it (see
    :mod:`robot.groupcommit`): answered once that transaction committed. An order that
    collides with a copy inserted meanwhile is taken in again in the next batch."""

    def unit(conn: Connection) -> pipeline.IntakeResult:
        if key is not None and _seen_in(conn, shop.name, key):
            return pipeline.IntakeResult(None, "skipped", None)
        result = pipeline.intake_in(conn, shop, order, actor=actor, allocate=True, zone=zone)
        if key is not None:
            _mark_in(conn, shop.name, key)
        return result

    needs = pipeline.pool_needs(shop, order)
    for _attempt in range(3):
        try:
            return await group.run(unit, needs=needs)
        except IntegrityError:
            continue
    raise RuntimeError("intake kept colliding on (shop, platform_order_id)")


async def apply_events(engine: Engine, shop: pipeline.ShopRules, connector: Connector,
                       events: Sequence[PushEvent], *, db: DbRunner = asyncio.to_thread,
                       fetch_timeout: float = 30.0, zone: tzinfo = DEFAULT_ZONE,
                       group: GroupCommit | None = None,
                       taken: list[pipeline.IntakeResult] | None = None) -> int:
    """Apply verified events durably; returns how many created or changed an order (with
    ``taken``, each such order's intake result is appended to it).

    An event that carries its order is looked up, taken in and recorded as seen in one
    transaction; a thin one is looked up first (a message already applied is not fetched
    again). With ``group`` (the webhook's), events from pushes arriving together share
    transactions. Raises on any failure, so the caller does not acknowledge (the platform
    resends, and applying again is harmless).
    """
    with structlog.contextvars.bound_contextvars(shop=shop.name):
        changed = 0
        for event in events:
            key = message_key(event.message_id) if event.message_id else None
            order = event.order
            thin = order is None or not pipeline.usable_id(order.platform_order_id)
            if thin and key is not None and await db(_seen, engine, shop.name, key):
                continue
            if order is None and event.kind is not PushKind.OTHER:
                try:
                    order = await asyncio.wait_for(connector.fetch_order(event.platform_order_id),
                                                   fetch_timeout)
                except BadPlatformData as exc:
                    # The platform shows the order but not in a shape we can read: park it.
                    order = unreadable(event.platform_order_id, exc.message)
                except Skippable as exc:
                    # The platform will never show us this order (unknown, refused): there is
                    # nothing to take in, and asking again would not change that.
                    log.warning("event_order_unreadable", error=exc.message,
                                platform_order_id=event.platform_order_id)
            if order is not None and group is not None and not thin:
                result = await _take_in_group(group, shop, order, key,
                                              actor=f"push:{shop.name}", zone=zone)
            elif order is not None:
                result = await db(_take_in, engine, shop, order, key, actor=f"push:{shop.name}",
                                  zone=zone)
            else:
                if key is not None:
                    await db(_mark_seen, engine, shop.name, key)
                continue
            if result.action in ("created", "updated"):
                changed += 1
                if taken is not None:
                    taken.append(result)
        return changed


async def consume_messages(engine: Engine, shop: pipeline.ShopRules, source: MessageSource,
                           connector: Connector, *, db: DbRunner = asyncio.to_thread,
                           zone: tzinfo = DEFAULT_ZONE) -> int:
    """Pull one batch of queued platform messages, apply them, then confirm them.

    Returns the number of messages confirmed. A message whose order cannot be read now stops
    the batch; it and the rest stay unconfirmed and come back later.
    """
    batch = await source.consume_messages()
    done: list[str] = []
    try:
        for message_id, event in batch:
            await apply_events(engine, shop, connector, [event], db=db, zone=zone)
            done.append(message_id)
    finally:
        if done:
            await source.confirm_messages(done)
    return len(done)
