"""A refund that arrives while the order's shipment is on its way to the platform.

A worker holds the ship job and is calling the platform when the refund push is taken in.
Returning the codes to stock then would be wrong whenever the platform takes the shipment
(the robot would say "cancelled" while the platform says "shipped", and the codes could go to
a second buyer). So the codes stay reserved and the worker's outcome settles them:

* the platform took the shipment → the order is ``refunded`` (shipped, then refunded), its
  codes the buyer's and flagged for review; exactly one shipment on the platform;
* the platform refused it → the codes go back to stock and the order stays ``cancelled``;
* the worker's answer was lost (it died) → the next worker reads the platform: the order's
  record of shipments (a consign time, an uploaded shipment) settles it as above; where the
  platform shows only "closed", nobody can tell, so the codes are flagged for review, never
  put back;
* a refund *requested* (the order held) while the shipment lands → the order is ``shipped``.

A person's cancel while the shipment is on its way is refused with a clear message.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any, cast

import pytest
from sqlalchemy import Engine, func, select

from connectors.base import PlatformStatus, RefundState, Shipment, ShipOutcome
from connectors.memory import MemoryConnector, MemoryPlatform
from robot import attention, orders, pipeline
from robot.clock import utcnow
from robot.errors import UserError
from robot.outbox import Dispatcher, Job, RetryPolicy, claim_jobs
from robot.schema import audit_log, deliveries, outbox, stock
from robot.schema import orders as orders_t
from robot.states import DeliveryState, OrderState, OutboxState
from robot.vault import Vault
from tests.factories import Shop, paid_order, seed_codes, sku

SHOP = Shop(items=(sku("s1", ("p1", 2)),))
LEASE = timedelta(seconds=15)


class _Gated(MemoryConnector):
    """Holds its ship call at a gate: before the platform sees it (``land_first`` False) or
    after the platform took it and before the answer comes back (``land_first`` True)."""

    def __init__(self, platform: MemoryPlatform, *, land_first: bool) -> None:
        super().__init__(platform)
        self.land_first = land_first
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def ship(self, shipment: Shipment) -> ShipOutcome:
        outcome = await super().ship(shipment) if self.land_first else None
        self.entered.set()
        await self.gate.wait()
        return outcome if outcome is not None else await super().ship(shipment)


def _allocated(engine: Engine, vault: Vault, platform: MemoryPlatform) -> tuple[int, Job]:
    seed_codes(engine, vault, "p1", 4)
    order = paid_order("T1", ("s1", 1))
    platform.put_order(order)
    result = pipeline.intake(engine, SHOP, order, allocate=True)
    assert result.state == OrderState.ALLOCATED
    (job,) = claim_jobs(engine, "a", now=utcnow(), limit=1, lease=LEASE)
    return result.order_id or 0, job


def _dispatcher(engine: Engine, vault: Vault, connector: MemoryConnector, worker: str) -> Dispatcher:
    return Dispatcher(engine, vault, {SHOP.name: connector}, {SHOP.name: SHOP},
                      RetryPolicy(max_attempts=5), worker=worker)


def _refund_on_platform(engine: Engine, platform: MemoryPlatform) -> None:
    """The buyer is refunded in full: the platform closes the order, the robot takes it in."""
    platform.set_status("T1", PlatformStatus.CLOSED, refund=RefundState.REFUNDED)
    result = pipeline.intake(engine, SHOP, platform.order("T1"))
    assert result.state == OrderState.CANCELLED


def _facts(engine: Engine, order_id: int) -> tuple[str, list[str], int]:
    """The order's state, its codes' delivery states, and the codes in stock."""
    with engine.connect() as conn:
        state = conn.execute(select(orders_t.c.state).where(orders_t.c.id == order_id)).scalar()
        held = conn.execute(select(deliveries.c.state).where(deliveries.c.order_id == order_id)
                            .order_by(deliveries.c.id)).scalars().all()
        in_stock = conn.execute(select(func.count()).select_from(stock)).scalar_one()
    return str(state), [str(s) for s in held], int(in_stock)


def _cancelled_codes_out(engine: Engine, now: datetime) -> list[attention.Item]:
    """What `robot status` says needs a person about cancelled orders with codes out."""
    ctx = attention.Context(engine, cast("Any", None), cast("Any", None), now)
    return attention._cancelled_codes_out(ctx)


def _job_state(engine: Engine, job: Job) -> str:
    with engine.connect() as conn:
        return str(conn.execute(select(outbox.c.state).where(outbox.c.id == job.id)).scalar())


async def _refund_during_the_call(engine: Engine, connector: _Gated, dispatcher: Dispatcher,
                                  job: Job, platform: MemoryPlatform) -> None:
    run = asyncio.create_task(dispatcher.run_job(job))
    await connector.entered.wait()
    await asyncio.to_thread(_refund_on_platform, engine, platform)
    connector.gate.set()
    await run


def test_a_refund_during_a_shipment_that_lands_refunds_the_order_and_keeps_its_codes(
        engine: Engine, vault: Vault) -> None:
    platform = MemoryPlatform()
    order_id, job = _allocated(engine, vault, platform)
    connector = _Gated(platform, land_first=True)
    asyncio.run(_refund_during_the_call(engine, connector,
                                        _dispatcher(engine, vault, connector, "a"), job, platform))
    assert platform.shipments("T1") == 1
    # Shipped, then refunded: the two codes are the buyer's, for a person to review; none
    # went back to stock (only the unsold two of the four seeded remain there).
    assert _facts(engine, order_id) == (OrderState.REFUNDED, [DeliveryState.REVIEW] * 2, 2)
    assert _job_state(engine, job) == OutboxState.DONE
    with engine.connect() as conn:
        settled = conn.execute(select(audit_log.c.details).where(
            audit_log.c.action == "settle_cancel")).scalars().all()
    assert len(settled) == 1 and '"shipped"' in settled[0]


def test_a_refund_during_a_shipment_the_platform_refuses_returns_the_codes(
        engine: Engine, vault: Vault) -> None:
    platform = MemoryPlatform()
    order_id, job = _allocated(engine, vault, platform)
    connector = _Gated(platform, land_first=False)
    asyncio.run(_refund_during_the_call(engine, connector,
                                        _dispatcher(engine, vault, connector, "a"), job, platform))
    assert platform.shipments("T1") == 0
    assert _facts(engine, order_id) == (OrderState.CANCELLED, [], 4)
    assert _job_state(engine, job) == OutboxState.CANCELLED


def test_the_codes_stay_reserved_while_the_shipment_is_on_its_way(
        engine: Engine, vault: Vault) -> None:
    platform = MemoryPlatform()
    order_id, _job = _allocated(engine, vault, platform)
    _refund_on_platform(engine, platform)
    assert _facts(engine, order_id) == (OrderState.CANCELLED, [DeliveryState.RESERVED] * 2, 2)


def test_a_refund_when_no_worker_holds_the_shipment_returns_the_codes_at_once(
        engine: Engine, vault: Vault) -> None:
    platform = MemoryPlatform()
    seed_codes(engine, vault, "p1", 4)
    platform.put_order(paid_order("T1", ("s1", 1)))
    order_id = pipeline.intake(engine, SHOP, platform.order("T1"), allocate=True).order_id or 0
    _refund_on_platform(engine, platform)
    assert _facts(engine, order_id) == (OrderState.CANCELLED, [], 4)


def _after_a_lost_answer(engine: Engine, vault: Vault, platform: MemoryPlatform, *,
                         landed: bool) -> tuple[int, Job]:
    """The worker holding the ship job died during the call (which reached the platform or
    not), the refund was taken in, and the next worker runs the job."""
    order_id, job = _allocated(engine, vault, platform)
    if landed:
        platform.ship("T1")  # the dead worker's call reached the platform
    _refund_on_platform(engine, platform)
    later = utcnow() + LEASE * 2
    (again,) = claim_jobs(engine, "b", now=later, limit=1, lease=LEASE)
    assert again.id == job.id
    asyncio.run(_dispatcher(engine, vault, MemoryConnector(platform), "b").run_job(again))
    return order_id, job


@pytest.mark.parametrize("landed", [True, False], ids=["it-landed", "it-did-not"])
def test_a_lost_answer_after_a_refund_is_settled_by_the_platforms_record_of_shipments(
        engine: Engine, vault: Vault, landed: bool) -> None:
    """The next worker reads a closed order whose record says whether it was shipped (a
    consign time, an uploaded shipment): shipped, the order ends refunded with its codes the
    buyer's (flagged for review); not shipped, the codes go back to stock."""
    platform = MemoryPlatform()
    order_id, job = _after_a_lost_answer(engine, vault, platform, landed=landed)
    if landed:
        assert _facts(engine, order_id) == (OrderState.REFUNDED, [DeliveryState.REVIEW] * 2, 2)
        assert _job_state(engine, job) == OutboxState.DONE
    else:
        assert _facts(engine, order_id) == (OrderState.CANCELLED, [], 4)
        assert _job_state(engine, job) == OutboxState.CANCELLED
    assert platform.all_shipments() == ({"T1": 1} if landed else {})
    assert _cancelled_codes_out(engine, utcnow()) == []  # settled: nothing for a person


@pytest.mark.parametrize("landed", [True, False], ids=["it-landed", "it-did-not"])
def test_a_lost_answer_on_a_platform_that_shows_only_closed_flags_the_codes_for_review(
        engine: Engine, vault: Vault, landed: bool) -> None:
    """A platform whose order read shows only "closed" cannot tell whether it was shipped
    first: the codes are flagged, never returned (one could be out)."""
    platform = MemoryPlatform(tells_shipments=False)
    order_id, job = _after_a_lost_answer(engine, vault, platform, landed=landed)
    state, held, in_stock = _facts(engine, order_id)
    assert (state, held, in_stock) == (OrderState.CANCELLED, [DeliveryState.REVIEW] * 2, 2)
    with engine.connect() as conn:
        reason = conn.execute(select(orders_t.c.reason).where(orders_t.c.id == order_id)).scalar()
    assert "unknown" in str(reason)
    assert _job_state(engine, job) == OutboxState.CANCELLED
    # `robot status` lists it under "needs attention" until a week after it changed.
    assert [(i.kind, i.count) for i in _cancelled_codes_out(engine, utcnow())] == [
        ("cancelled_codes_out", 1)]
    assert _cancelled_codes_out(engine, utcnow() + timedelta(days=8)) == []


def test_a_lost_answer_on_an_order_still_open_returns_the_codes(
        engine: Engine, vault: Vault) -> None:
    """The platform still shows the order paid and unshipped (closed only in the robot):
    the lost call did not ship it, and no further call will."""
    platform = MemoryPlatform()
    order_id, _job = _allocated(engine, vault, platform)
    _refund_on_platform(engine, platform)
    platform.set_status("T1", PlatformStatus.PAID, refund=RefundState.NONE)
    (again,) = claim_jobs(engine, "b", now=utcnow() + LEASE * 2, limit=1, lease=LEASE)
    asyncio.run(_dispatcher(engine, vault, MemoryConnector(platform), "b").run_job(again))
    assert _facts(engine, order_id) == (OrderState.CANCELLED, [], 4)


def test_a_hold_during_a_shipment_that_lands_ships_the_order(
        engine: Engine, vault: Vault) -> None:
    platform = MemoryPlatform()
    order_id, job = _allocated(engine, vault, platform)
    connector = _Gated(platform, land_first=True)

    async def hold_during_the_call() -> None:
        run = asyncio.create_task(_dispatcher(engine, vault, connector, "a").run_job(job))
        await connector.entered.wait()
        requested = paid_order("T1", ("s1", 1), status=PlatformStatus.SHIPPED,
                               refund=RefundState.REQUESTED)
        held = await asyncio.to_thread(pipeline.intake, engine, SHOP, requested)
        assert held.state == OrderState.HELD
        connector.gate.set()
        await run

    asyncio.run(hold_during_the_call())
    assert _facts(engine, order_id) == (OrderState.SHIPPED, [DeliveryState.DELIVERED] * 2, 2)


def test_a_person_cannot_cancel_an_order_whose_shipment_is_on_its_way(
        engine: Engine, vault: Vault) -> None:
    platform = MemoryPlatform()
    order_id, _job = _allocated(engine, vault, platform)
    with pytest.raises(UserError, match="being shipped"):
        orders.cancel(engine, order_id, actor="cs")
    assert _facts(engine, order_id) == (OrderState.ALLOCATED, [DeliveryState.RESERVED] * 2, 2)
