"""The order state machine end to end on every backend: intake, allocation, write-back,
refunds, and the operator's actions."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import Connection, Engine, event, func, select

from connectors.base import PlatformStatus, RefundState
from connectors.memory import MemoryConnector, MemoryPlatform
from robot import audit, orders, pipeline
from robot.clock import utcnow
from robot.errors import UserError
from robot.outbox import Dispatcher, RetryPolicy, pause_shop, resume_shop
from robot.schema import deliveries, order_lines, outbox, outbox_attempts, stock
from robot.schema import orders as orders_t
from robot.vault import Vault
from tests.factories import Shop, paid_order, seed_codes, sku

SHOP = Shop(items=(sku("s1", ("p1", 1)), sku("bundle", ("p1", 1), ("p2", 2))))


def state_of(engine: Engine, order_id: int) -> str:
    with engine.connect() as conn:
        return str(conn.execute(select(orders_t.c.state).where(orders_t.c.id == order_id)).scalar_one())


def stock_count(engine: Engine, pool_id: int | None = None) -> int:
    stmt = select(func.count()).select_from(stock)
    if pool_id is not None:
        stmt = stmt.where(stock.c.pool_id == pool_id)
    with engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


def dispatcher(engine: Engine, vault: Vault, platform: MemoryPlatform, *,
               max_attempts: int = 3, shop: Shop = SHOP) -> Dispatcher:
    return Dispatcher(
        engine, vault, {shop.name: MemoryConnector(platform)}, {shop.name: shop},
        RetryPolicy(max_attempts=max_attempts, backoff_initial=0.001, backoff_max=0.001),
        worker="test",
    )


def drain(engine: Engine, disp: Dispatcher, *, rounds: int = 20) -> None:
    """Allocate everything due, then run write-back until no job is due (time moved on)."""
    while pipeline.allocate_next(engine):
        pass
    for _ in range(rounds):
        ran = asyncio.run(disp.run_once(now=utcnow() + timedelta(hours=2)))
        if not ran:
            return


def test_intake_is_idempotent(engine: Engine) -> None:
    """The same order taken in twice (poll and push, say) is one order."""
    first = pipeline.intake(engine, SHOP, paid_order("A1", ("s1", 1)))
    second = pipeline.intake(engine, SHOP, paid_order("A1", ("s1", 1)))
    assert first.action == "created"
    assert second.action == "duplicate"
    assert second.order_id == first.order_id
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(orders_t)).scalar_one() == 1


def test_unpaid_and_closed_orders_are_not_taken_in(engine: Engine) -> None:
    """Only paid orders become work; a closed order never seen before is skipped."""
    r1 = pipeline.intake(engine, SHOP, paid_order("U1", ("s1", 1), status=PlatformStatus.UNPAID))
    r2 = pipeline.intake(engine, SHOP, paid_order("C1", ("s1", 1), status=PlatformStatus.CLOSED))
    assert (r1.action, r2.action) == ("skipped", "skipped")


def test_unmapped_sku_is_held_or_ignored_per_shop_policy(engine: Engine) -> None:
    """An unknown SKU holds the order (hold policy) or is left out (ignore policy)."""
    held = pipeline.intake(engine, SHOP, paid_order("H1", ("nope", 1)))
    assert held.state == "held"
    ignoring = Shop(name="shop-b", unmapped="ignore", items=SHOP.items)
    ignored = pipeline.intake(engine, ignoring, paid_order("I1", ("nope", 1)))
    assert ignored.state == "ignored"
    mixed = pipeline.intake(engine, ignoring, paid_order("M1", ("s1", 1), ("nope", 3)))
    assert mixed.state == "received"
    with engine.connect() as conn:
        mappings = conn.execute(select(order_lines.c.mapping).where(
            order_lines.c.order_id == mixed.order_id).order_by(order_lines.c.line_no)).scalars().all()
    assert mappings == ['[["p1", 1]]', "[]"]
    with engine.connect() as conn:
        reason = conn.execute(select(orders_t.c.reason).where(orders_t.c.id == held.order_id)).scalar_one()
    assert "sku_id=nope" in reason


def test_allocation_is_all_or_nothing(engine: Engine, vault: Vault) -> None:
    """A bundle short in one pool takes no code from the other pool and waits for stock."""
    seed_codes(engine, vault, "p1", 5)
    seed_codes(engine, vault, "p2", 1)
    r = pipeline.intake(engine, SHOP, paid_order("B1", ("bundle", 1)))
    res = pipeline.allocate_next(engine)
    assert res is not None and res.state == "waiting_stock"
    assert state_of(engine, r.order_id or 0) == "waiting_stock"
    assert stock_count(engine) == 6
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(deliveries)).scalar_one() == 0


def test_due_orders_are_allocated_in_batches_each_all_or_nothing(engine: Engine,
                                                                 vault: Vault) -> None:
    """allocate_due takes the oldest due orders, up to its limit, in one commit; a bundle
    short of stock waits without taking a code while its neighbours are served."""
    seed_codes(engine, vault, "p1", 4)
    seed_codes(engine, vault, "p2", 1)
    ids = [pipeline.intake(engine, SHOP, paid_order(oid, line)).order_id
           for oid, line in (("D1", ("s1", 1)), ("D2", ("bundle", 1)), ("D3", ("s1", 2)),
                             ("D4", ("s1", 1)))]
    commits: list[int] = []
    event.listen(engine, "commit", lambda _conn: commits.append(1))
    first = pipeline.allocate_due(engine, limit=3)
    assert [(r.order_id, r.state) for r in first] == [
        (ids[0], "allocated"), (ids[1], "waiting_stock"), (ids[2], "allocated")]
    assert len(commits) == 1
    assert stock_count(engine) == 2  # p1: 4 - 1 - 2; p2 untouched by the short bundle
    assert [r.order_id for r in pipeline.allocate_due(engine, limit=3)] == [ids[3]]
    assert pipeline.allocate_due(engine) == []  # the bundle is not due again yet


def test_waiting_order_is_served_when_codes_arrive(engine: Engine, vault: Vault) -> None:
    """waiting_stock is retried automatically once stock is added."""
    r = pipeline.intake(engine, SHOP, paid_order("W1", ("s1", 2)))
    assert pipeline.allocate_next(engine).state == "waiting_stock"  # type: ignore[union-attr]
    assert pipeline.allocate_next(engine) is None  # not due again yet
    seed_codes(engine, vault, "p1", 2)
    assert pipeline.wake_waiting(engine) == 1
    res = pipeline.allocate_next(engine)
    assert res is not None and res.state == "allocated" and len(res.code_ids) == 2
    assert state_of(engine, r.order_id or 0) == "allocated"


def test_earliest_expiry_first_and_expired_never_sold(engine: Engine, vault: Vault) -> None:
    """Codes expiring soonest go first; an expired code is never handed out."""
    now = utcnow()
    expired = seed_codes(engine, vault, "p1", 2, expires_at=now - timedelta(minutes=1))
    late = seed_codes(engine, vault, "p1", 1, expires_at=now + timedelta(days=30))
    soon = seed_codes(engine, vault, "p1", 1, expires_at=now + timedelta(days=1))
    never = seed_codes(engine, vault, "p1", 1)
    shop = Shop(items=(sku("s1", ("p1", 1)),))
    got = []
    for i in range(4):
        r = pipeline.intake(engine, shop, paid_order(f"E{i}", ("s1", 1)))
        res = pipeline.allocate(engine, r.order_id or 0)
        assert res is not None
        got.append(res)
    assert [g.state for g in got] == ["allocated", "allocated", "allocated", "waiting_stock"]
    revealed = [orders.reveal(engine, vault, g.order_id, actor="t")[0].secret for g in got[:3]]
    assert revealed == [soon[0], late[0], never[0]]
    assert not set(expired) & set(revealed)


def test_ship_once_and_memo_written(engine: Engine, vault: Vault) -> None:
    """An allocated order is shipped once on its platform and the memo carries masked codes."""
    secrets = seed_codes(engine, vault, "p1", 3)
    platform = MemoryPlatform()
    order = paid_order("S1", ("s1", 2))
    platform.put_order(order)
    r = pipeline.intake(engine, SHOP, order)
    drain(engine, dispatcher(engine, vault, platform))
    assert state_of(engine, r.order_id or 0) == "shipped"
    assert platform.shipments("S1") == 1
    memo = platform.memo("S1") or ""
    assert "****" in memo
    assert not any(s in memo for s in secrets)
    with engine.connect() as conn:
        states = set(conn.execute(select(deliveries.c.state)).scalars())
    assert states == {"delivered"}
    assert audit.verify(engine).ok


def test_memo_is_written_in_the_shipping_round(engine: Engine, vault: Vault) -> None:
    """The worker that ships an order writes its memo right after, in the same round: the
    memo job is made leased to it with the shipment (no second claim or context read) and
    is done with one attempt recorded."""
    seed_codes(engine, vault, "p1", 1)
    platform = MemoryPlatform()
    order = paid_order("M1", ("s1", 1))
    platform.put_order(order)
    r = pipeline.intake(engine, SHOP, order, allocate=True)
    disp = dispatcher(engine, vault, platform)
    assert asyncio.run(disp.run_once(now=utcnow() + timedelta(hours=2))) == 1  # the ship job
    assert platform.shipments("M1") == 1
    assert "****" in (platform.memo("M1") or "")
    with engine.connect() as conn:
        jobs = {j.kind: j for j in conn.execute(select(outbox).where(
            outbox.c.order_id == (r.order_id or 0)))}
        attempts = conn.execute(select(outbox_attempts.c.kind, outbox_attempts.c.result)
                                .order_by(outbox_attempts.c.id)).all()
    memo = jobs["memo"]
    assert (memo.state, memo.attempts, memo.claimed_by, memo.claimed_until) == \
        ("done", 1, "test", None)
    assert [tuple(a) for a in attempts] == [("ship", "done"), ("memo", "done")]
    assert not disp.busy  # its lease is no longer renewed
    assert asyncio.run(disp.run_once(now=utcnow() + timedelta(hours=2))) == 0


def test_memo_failing_after_the_shipment_is_retried_as_its_own_job(engine: Engine,
                                                                    vault: Vault) -> None:
    """A memo written right after the shipment that fails is an ordinary memo job's retry:
    the order stays shipped, the memo job is released with its due time, and a later round
    writes it."""
    seed_codes(engine, vault, "p1", 1)
    platform = MemoryPlatform()
    order = paid_order("M2", ("s1", 1))
    platform.put_order(order)
    r = pipeline.intake(engine, SHOP, order, allocate=True)
    platform.inject("memo", "unavailable", times=1)
    disp = dispatcher(engine, vault, platform)
    assert asyncio.run(disp.run_once(now=utcnow() + timedelta(hours=2))) == 1
    assert state_of(engine, r.order_id or 0) == "shipped"
    assert platform.memo("M2") is None
    with engine.connect() as conn:
        memo = conn.execute(select(outbox).where(outbox.c.kind == "memo")).one()
    assert (memo.state, memo.attempts, memo.claimed_until) == ("pending", 1, None)
    assert "unavailable" in (memo.last_error or "")
    drain(engine, disp)
    assert "****" in (platform.memo("M2") or "")
    assert platform.shipments("M2") == 1


def test_already_shipped_counts_as_success(engine: Engine, vault: Vault) -> None:
    """If the platform already shows our shipment (crash after the call), the order ships once."""
    seed_codes(engine, vault, "p1", 1)
    platform = MemoryPlatform()
    order = paid_order("S2", ("s1", 1))
    platform.put_order(order)
    r = pipeline.intake(engine, SHOP, order)
    pipeline.allocate_next(engine)
    platform.ship("S2")  # the earlier attempt reached the platform but we never recorded it
    drain(engine, dispatcher(engine, vault, platform))
    assert state_of(engine, r.order_id or 0) == "shipped"
    assert platform.shipments("S2") == 1


def test_retries_then_failed_then_replay_with_same_codes(engine: Engine, vault: Vault) -> None:
    """Write-back retries with backoff, ends failed with the error kept, replay ships the same codes."""
    seed_codes(engine, vault, "p1", 2)
    platform = MemoryPlatform()
    order = paid_order("F1", ("s1", 1))
    platform.put_order(order)
    r = pipeline.intake(engine, SHOP, order)
    oid = r.order_id or 0
    alloc = pipeline.allocate_next(engine)
    assert alloc is not None
    platform.inject("ship", "unavailable", times=3)
    disp = dispatcher(engine, vault, platform, max_attempts=3)
    drain(engine, disp)
    assert state_of(engine, oid) == "failed"
    with engine.connect() as conn:
        job = conn.execute(select(outbox).where(outbox.c.order_id == oid)).one()
    assert job.attempts == 3 and "unavailable" in (job.last_error or "")
    assert orders.replay(engine, None, actor="t") == [oid]
    drain(engine, disp)
    assert state_of(engine, oid) == "shipped"
    assert platform.shipments("F1") == 1
    shown = orders.show_order(engine, vault, oid)
    assert [c["code_id"] for c in shown["codes"]] == list(alloc.code_ids)


def test_throttle_is_survived(engine: Engine, vault: Vault) -> None:
    """A throttled platform call is retried and the order still ships once."""
    seed_codes(engine, vault, "p1", 1)
    platform = MemoryPlatform()
    order = paid_order("T1", ("s1", 1))
    platform.put_order(order)
    r = pipeline.intake(engine, SHOP, order)
    platform.inject("ship", "throttled", times=2, retry_after=0.0)
    drain(engine, dispatcher(engine, vault, platform, max_attempts=5))
    assert state_of(engine, r.order_id or 0) == "shipped"
    assert platform.shipments("T1") == 1


def test_auth_error_pauses_shop_without_burning_attempts(engine: Engine, vault: Vault) -> None:
    """Expired authorization pauses the shop; resuming ships the order."""
    from robot.outbox import resume_shop

    seed_codes(engine, vault, "p1", 1)
    platform = MemoryPlatform()
    order = paid_order("P1", ("s1", 1))
    platform.put_order(order)
    r = pipeline.intake(engine, SHOP, order)
    platform.inject("ship", "auth", times=1)
    disp = dispatcher(engine, vault, platform, max_attempts=1)
    drain(engine, disp)
    assert state_of(engine, r.order_id or 0) == "allocated"
    st = orders.status(engine)
    assert st.shops[0].paused and "authorization" in (st.shops[0].paused_reason or "")
    resume_shop(engine, SHOP.name, actor="t")
    drain(engine, disp)
    assert state_of(engine, r.order_id or 0) == "shipped"


def test_refund_before_shipping_returns_unseen_codes(engine: Engine, vault: Vault) -> None:
    """A close before shipping cancels the order and puts its unseen codes back on sale."""
    seed_codes(engine, vault, "p1", 2)
    r = pipeline.intake(engine, SHOP, paid_order("R1", ("s1", 2)))
    pipeline.allocate_next(engine)
    assert stock_count(engine) == 0
    res = pipeline.intake(engine, SHOP, paid_order("R1", ("s1", 2), status=PlatformStatus.CLOSED,
                                                   refund=RefundState.REFUNDED))
    assert res.state == "cancelled"
    assert stock_count(engine) == 2
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(deliveries)).scalar_one() == 0
        assert conn.execute(select(outbox.c.state).where(outbox.c.order_id == r.order_id)).scalar_one() == "cancelled"


def test_refund_before_shipping_keeps_seen_codes_out_of_stock(engine: Engine, vault: Vault) -> None:
    """A code a person has seen is never put back on sale; it is flagged for review."""
    seed_codes(engine, vault, "p1", 1)
    r = pipeline.intake(engine, SHOP, paid_order("R2", ("s1", 1)))
    pipeline.allocate_next(engine)
    orders.reveal(engine, vault, r.order_id or 0, actor="t")
    pipeline.intake(engine, SHOP, paid_order("R2", ("s1", 1), status=PlatformStatus.CLOSED))
    assert stock_count(engine) == 0
    with engine.connect() as conn:
        assert conn.execute(select(deliveries.c.state)).scalar_one() == "review"


def test_refund_requested_holds_unshipped_order(engine: Engine, vault: Vault) -> None:
    """A refund in progress stops write-back: the order is held, not shipped."""
    seed_codes(engine, vault, "p1", 1)
    r = pipeline.intake(engine, SHOP, paid_order("R3", ("s1", 1)))
    pipeline.allocate_next(engine)
    res = pipeline.intake(engine, SHOP, paid_order("R3", ("s1", 1), refund=RefundState.REQUESTED))
    assert res.state == "held"
    assert state_of(engine, r.order_id or 0) == "held"


def test_refund_after_shipping_flags_codes(engine: Engine, vault: Vault) -> None:
    """A refund after delivery marks the order refunded; its codes stay delivered-for-review."""
    seed_codes(engine, vault, "p1", 1)
    platform = MemoryPlatform()
    order = paid_order("R4", ("s1", 1))
    platform.put_order(order)
    r = pipeline.intake(engine, SHOP, order)
    drain(engine, dispatcher(engine, vault, platform))
    res = pipeline.intake(engine, SHOP, paid_order("R4", ("s1", 1), status=PlatformStatus.SHIPPED,
                                                   refund=RefundState.REFUNDED))
    assert res.state == "refunded"
    assert state_of(engine, r.order_id or 0) == "refunded"
    assert stock_count(engine) == 0
    with engine.connect() as conn:
        assert conn.execute(select(deliveries.c.state)).scalar_one() == "review"


def test_platform_refusal_reconciles_to_cancel(engine: Engine, vault: Vault) -> None:
    """If the platform refuses to ship because the order closed, the robot cancels it."""
    seed_codes(engine, vault, "p1", 1)
    platform = MemoryPlatform()
    order = paid_order("N1", ("s1", 1))
    platform.put_order(order)
    r = pipeline.intake(engine, SHOP, order)
    pipeline.allocate_next(engine)
    platform.set_status("N1", PlatformStatus.CLOSED)
    drain(engine, dispatcher(engine, vault, platform))
    assert state_of(engine, r.order_id or 0) == "cancelled"
    assert platform.shipments("N1") == 0
    assert stock_count(engine) == 1


def test_release_and_reject_held_orders(engine: Engine, vault: Vault) -> None:
    """A held order can be released (after fixing the mapping) or rejected; both are audited."""
    seed_codes(engine, vault, "p1", 2)
    a = pipeline.intake(engine, SHOP, paid_order("H2", ("new-sku", 1)))
    b = pipeline.intake(engine, SHOP, paid_order("H3", ("new-sku", 1)))
    with pytest.raises(UserError, match="no line maps"):
        orders.release(engine, a.order_id or 0, actor="t", items=SHOP.items)
    fixed = (*SHOP.items, sku("new-sku", ("p1", 1)))
    assert orders.release(engine, a.order_id or 0, actor="t", items=fixed) == "received"
    assert pipeline.allocate_next(engine).state == "allocated"  # type: ignore[union-attr]
    orders.reject(engine, b.order_id or 0, actor="t")
    assert state_of(engine, b.order_id or 0) == "rejected"
    with pytest.raises(UserError, match="not held"):
        orders.release(engine, b.order_id or 0, actor="t")
    with engine.connect() as conn:
        actions = conn.execute(select(audit.audit_log.c.action)).scalars().all()
    assert "release" in actions and "reject" in actions


def test_cancel_refuses_shipped_orders(engine: Engine, vault: Vault) -> None:
    """A shipped order cannot be cancelled by hand; refunds go through the platform."""
    seed_codes(engine, vault, "p1", 1)
    platform = MemoryPlatform()
    order = paid_order("X1", ("s1", 1))
    platform.put_order(order)
    r = pipeline.intake(engine, SHOP, order)
    drain(engine, dispatcher(engine, vault, platform))
    with pytest.raises(UserError, match="no longer be cancelled"):
        orders.cancel(engine, r.order_id or 0, actor="t")


def test_status_counts(engine: Engine, vault: Vault) -> None:
    """status shows orders by state per shop and stock with days of cover per pool."""
    seed_codes(engine, vault, "p1", 10)
    for i in range(3):
        pipeline.intake(engine, SHOP, paid_order(f"ST{i}", ("s1", 1)))
    pipeline.intake(engine, SHOP, paid_order("ST-held", ("zzz", 1)))
    while pipeline.allocate_next(engine):
        pass
    st = orders.status(engine, [SHOP.name])
    assert st.shops[0].states == {"allocated": 3, "held": 1}
    p1 = next(p for p in st.pools if p.pool == "p1")
    assert p1.available == 7 and p1.sold_7d == 3
    assert p1.days_of_cover == round(7 / (3 / 7), 1)
    assert st.attention["held"] == 1


def test_a_running_job_keeps_its_lease_and_a_dead_workers_job_is_freed(
        engine: Engine, vault: Vault) -> None:
    """While a worker runs a job its lease is renewed; a job whose worker is gone (no
    renewals) can be claimed by another worker once its short lease runs out."""
    from robot.outbox import claim_jobs

    seed_codes(engine, vault, "p1", 2)
    pipeline.intake(engine, SHOP, paid_order("L1", ("s1", 1)))
    pipeline.intake(engine, SHOP, paid_order("L2", ("s1", 1)))
    while pipeline.allocate_next(engine):
        pass
    disp = dispatcher(engine, vault, MemoryPlatform())
    lease = disp.policy.lease
    now = utcnow()
    mine, dead = claim_jobs(engine, "test", now=now, limit=1, lease=lease) + \
        claim_jobs(engine, "dead-worker", now=now, limit=1, lease=lease)
    disp._running.add(mine.id)  # as run_once does while the platform call is in flight
    later = now + lease * 0.9
    assert disp.renew(now=later) == 1
    after_expiry = now + lease + timedelta(seconds=1)
    taken = claim_jobs(engine, "other", now=after_expiry, limit=10, lease=lease)
    assert [j.id for j in taken] == [dead.id]  # only the dead worker's job changed hands
    with engine.connect() as conn:
        owner = conn.execute(select(outbox.c.claimed_by).where(outbox.c.id == mine.id)).scalar()
    assert owner == "test"


def test_intake_with_allocate_claims_in_the_same_transaction(engine: Engine, vault: Vault) -> None:
    """The daemon's intake allocates a new order at once: codes reserved, the write-back
    queued, and the intake and allocation audited together in that order."""
    seed_codes(engine, vault, "p1", 5)
    seed_codes(engine, vault, "p2", 5)
    result = pipeline.intake(engine, SHOP, paid_order("M1", ("bundle", 2)), allocate=True)
    assert (result.action, result.state) == ("created", "allocated")
    assert result.order_id is not None
    with engine.connect() as conn:
        held = conn.execute(select(deliveries.c.pool_id, deliveries.c.state)
                            .where(deliveries.c.order_id == result.order_id)).all()
        jobs = conn.execute(select(outbox.c.kind, outbox.c.state)
                            .where(outbox.c.order_id == result.order_id)).all()
        actions = conn.execute(select(audit.audit_log.c.action).where(
            audit.audit_log.c.subject == f"order:{result.order_id}")
            .order_by(audit.audit_log.c.chain, audit.audit_log.c.seq)).scalars().all()
    assert len(held) == 6 and {s for _p, s in held} == {"reserved"}  # 2 x (1 + 2) codes
    assert [tuple(j) for j in jobs] == [("ship", "pending")]
    assert actions == ["intake", "allocate"]
    assert pipeline.allocate_next(engine) is None  # nothing left for the allocator
    assert audit.verify(engine).ok


def test_intake_with_allocate_short_of_stock_waits_with_nothing_claimed(
    engine: Engine, vault: Vault,
) -> None:
    """A bundle the stock cannot fill takes nothing: the order waits, with the reason, and
    every code is still for sale."""
    seed_codes(engine, vault, "p1", 5)
    seed_codes(engine, vault, "p2", 1)
    result = pipeline.intake(engine, SHOP, paid_order("M2", ("bundle", 1)), allocate=True)
    assert result.state == "waiting_stock"
    assert stock_count(engine) == 6
    with engine.connect() as conn:
        reason = conn.execute(select(orders_t.c.reason)
                              .where(orders_t.c.id == result.order_id)).scalar_one()
        assert conn.execute(select(func.count()).select_from(deliveries)).scalar_one() == 0
    assert reason == "not enough stock in pool 'p2' (need 2)"


def test_intake_with_allocate_leaves_a_held_order_alone(engine: Engine, vault: Vault) -> None:
    """An order held at intake (unmapped SKU) is not allocated by the daemon's intake."""
    seed_codes(engine, vault, "p1", 5)
    result = pipeline.intake(engine, SHOP, paid_order("M3", ("nope", 1)), allocate=True)
    assert result.state == "held"
    assert stock_count(engine) == 5


class RecordingLinks:
    """A pickup-link maker that records when the write-back asks for a link."""

    def __init__(self) -> None:
        self.asked: list[tuple[int, str, bool]] = []

    def in_tx(self, conn: Connection, order_id: int, shop_name: str) -> str | None:
        self.asked.append((order_id, shop_name, conn.in_transaction()))
        return f"https://pick.example/p/{order_id}"


def test_write_back_asks_for_the_pickup_link_only_when_it_calls_the_platform(
        engine: Engine, vault: Vault) -> None:
    """The link is made inside the ship job's preparing transaction (the memo written right
    after the shipment uses that context: no second read); a paused shop's job is put off
    without asking for one."""
    seed_codes(engine, vault, "p1", 2)
    platform = MemoryPlatform()
    platform.put_order(paid_order("L1", ("s1", 1)))
    links = RecordingLinks()
    disp = Dispatcher(
        engine, vault, {SHOP.name: MemoryConnector(platform)}, {SHOP.name: SHOP},
        RetryPolicy(max_attempts=3, backoff_initial=0.001, backoff_max=0.001),
        worker="test", pickup_url=links)
    oid = pipeline.intake(engine, SHOP, paid_order("L1", ("s1", 1)), allocate=True).order_id
    assert oid is not None
    pause_shop(engine, SHOP.name, "authorization revoked")
    assert asyncio.run(disp.run_once(now=utcnow() + timedelta(hours=2))) == 1
    assert links.asked == []
    assert platform.shipments("L1") == 0
    with engine.connect() as conn:
        job = conn.execute(select(outbox.c.last_error, outbox.c.attempts)).one()
    assert (job.last_error, job.attempts) == ("shop paused", 0)

    resume_shop(engine, SHOP.name, actor="t")
    drain(engine, disp)
    assert state_of(engine, oid) == "shipped"
    assert links.asked == [(oid, SHOP.name, True)]  # the ship's; its memo reuses it
    assert f"https://pick.example/p/{oid}" in (platform.memo("L1") or "")
