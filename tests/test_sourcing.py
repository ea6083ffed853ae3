"""Buying from suppliers (invariant 7) on every backend, against the in-memory supplier: one
successful supplier order per unit whatever the faults (checked from the supplier's own
records), no shipment before the success is committed, nothing above the maximum cost, a
crash between the call and its record found by query and never bought again."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from connectors.base import Order, PlatformStatus
from connectors.memory import MemoryConnector, MemoryPlatform
from connectors.memsupplier import MemorySupplier, MemorySupplierBackend
from connectors.supplier import Outcome
from robot import orders, pipeline
from robot.clock import utcnow
from robot.config import SkuMapping
from robot.errors import UserError
from robot.outbox import Dispatcher, Job, RetryPolicy
from robot.schema import audit_log, deliveries, supplier_attempts
from robot.schema import orders as orders_t
from robot.sourcing import Sourcer, SourcingPolicy, open_attempts
from robot.vault import Vault
from tests.factories import Shop, paid_order, seed_codes

TOPUP = SkuMapping.model_validate({
    "sku_id": "t50", "account": {"source": "buyer_message", "format": "mobile"},
    "suppliers": [{"supplier": "first", "product": "topup-mobile-50", "max_cost": "49.90"},
                  {"supplier": "second", "product": "topup-mobile-50", "max_cost": "49.90"}]})
CARD = SkuMapping.model_validate({
    "sku_id": "c30", "pool": "youku",
    "suppliers": [{"supplier": "first", "product": "card-youku-30", "max_cost": "15.50"}]})
CHEAP = SkuMapping.model_validate({
    "sku_id": "cheap", "account": {"source": "buyer_message"},
    "suppliers": [{"supplier": "first", "product": "topup-mobile-50", "max_cost": "40"}]})
SHOP = Shop(items=(TOPUP, CARD, CHEAP))  # type: ignore[arg-type]
LATER = timedelta(hours=2)


@pytest.fixture
def backends() -> dict[str, MemorySupplierBackend]:
    return {"first": MemorySupplierBackend(), "second": MemorySupplierBackend()}


def sourcer(engine: Engine, vault: Vault,
            backends: dict[str, MemorySupplierBackend]) -> Sourcer:
    return Sourcer(engine, vault, {n: MemorySupplier(b) for n, b in backends.items()},
                   SourcingPolicy(query_initial=0.001, query_max=0.001, price_ttl=0),
                   worker="test")


def run(src: Sourcer, rounds: int = 1) -> None:
    for _ in range(rounds):
        asyncio.run(src.run_once(now=utcnow() + LATER))


def topup_order(oid: str, message: str | None = "请充值 138 1234 5678，谢谢",
                sku: str = "t50", quantity: int = 1) -> Order:
    return dataclasses.replace(paid_order(oid, (sku, quantity)), buyer_message=message)


def take(engine: Engine, order: Order) -> int:
    result = pipeline.intake(engine, SHOP, order, allocate=True)
    assert result.order_id is not None
    return result.order_id


def state_of(engine: Engine, order_id: int) -> str:
    with engine.connect() as conn:
        return str(conn.execute(select(orders_t.c.state, orders_t.c.reason)
                                .where(orders_t.c.id == order_id)).one()[0])


def reason_of(engine: Engine, order_id: int) -> str:
    with engine.connect() as conn:
        return str(conn.execute(select(orders_t.c.reason)
                                .where(orders_t.c.id == order_id)).scalar_one())


def attempts(engine: Engine, order_id: int) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(supplier_attempts)
                                 .where(supplier_attempts.c.order_id == order_id)
                                 .order_by(supplier_attempts.c.attempt)).all())


def successes_per_unit(backends: dict[str, MemorySupplierBackend]) -> Counter[str]:
    """From the suppliers' own records: successful orders per (our order, line, unit)."""
    won: Counter[str] = Counter()
    for backend in backends.values():
        backend.settle()
        for key, order in backend.orders.items():
            if order.state is Outcome.SUCCEEDED:
                won[key.rsplit("A", 1)[0]] += 1  # RB<order>L<line>U<unit>
    return won


def test_a_topup_is_keyed_before_the_call_bought_once_then_shipped(
        engine: Engine, vault: Vault, backends: dict[str, MemorySupplierBackend]) -> None:
    """The attempt and its key are committed with the move to sourcing, before the supplier
    hears of it; the order ships only after the supplier's success is recorded."""
    platform = MemoryPlatform()
    platform.put_order(topup_order("T1"))
    oid = take(engine, topup_order("T1"))
    assert state_of(engine, oid) == "sourcing"
    [first] = attempts(engine, oid)
    assert (first.state, first.account, first.supplier) == ("new", "13812345678", "first")
    assert backends["first"].orders == {}  # committed before any call
    disp = Dispatcher(engine, vault, {SHOP.name: MemoryConnector(platform)}, {SHOP.name: SHOP},
                      RetryPolicy(backoff_initial=0.001, backoff_max=0.001), worker="t")
    src = sourcer(engine, vault, backends)
    run(src)
    assert attempts(engine, oid)[0].state == "accepted"
    asyncio.run(disp.run_once(now=utcnow() + LATER))
    assert platform.shipments("T1") == 0 and state_of(engine, oid) == "sourcing"
    backends["first"].settle()
    run(src)
    assert state_of(engine, oid) == "allocated"
    asyncio.run(disp.run_once(now=utcnow() + LATER))
    assert state_of(engine, oid) == "shipped" and platform.shipments("T1") == 1
    assert successes_per_unit(backends) == Counter({f"RB{oid}L0U0": 1})


def test_an_answer_lost_after_the_order_was_placed_is_found_by_query(
        engine: Engine, vault: Vault, backends: dict[str, MemorySupplierBackend]) -> None:
    """A timeout after the supplier accepted is queried, never placed blind or failed."""
    backends["first"].arm("lose_answer")
    oid = take(engine, topup_order("T2"))
    src = sourcer(engine, vault, backends)
    run(src)
    assert attempts(engine, oid)[0].state == "unknown"
    run(src, rounds=3)
    backends["first"].settle()
    run(src)
    assert state_of(engine, oid) == "allocated"
    assert len(backends["first"].orders) == 1 and backends["second"].orders == {}
    assert successes_per_unit(backends) == Counter({f"RB{oid}L0U0": 1})


def test_a_crash_between_the_call_and_its_record_is_found_by_query_not_bought_again(
        engine: Engine, vault: Vault, backends: dict[str, MemorySupplierBackend]) -> None:
    """The worker died after the supplier took the order and before anything was recorded:
    the next worker finds the purchase by its key and buys nothing more."""
    oid = take(engine, topup_order("T3"))
    dead = sourcer(engine, vault, backends)
    with engine.begin() as conn:
        [att] = open_attempts(conn, oid)
    assert dead._mark_placing(att)
    asyncio.run(dead.suppliers["first"].place(att.request()))
    backends["first"].settle()
    run(sourcer(engine, vault, backends))
    assert state_of(engine, oid) == "allocated"
    assert len(backends["first"].orders) == 1
    assert successes_per_unit(backends) == Counter({f"RB{oid}L0U0": 1})


def test_only_a_definite_failure_moves_to_the_next_supplier_under_a_new_key(
        engine: Engine, vault: Vault, backends: dict[str, MemorySupplierBackend]) -> None:
    """Accepted then failed at the first supplier: the second is tried with a new key,
    recorded before its call; one success in all."""
    backends["first"].arm("accept_then_fail", "运营商维护")
    oid = take(engine, topup_order("T4"))
    src = sourcer(engine, vault, backends)
    run(src)
    backends["first"].settle()
    run(src)
    first, second = attempts(engine, oid)
    assert (first.state, first.reason) == ("failed", "运营商维护")
    assert second.supplier == "second" and second.key != first.key
    run(src)
    backends["second"].settle()
    run(src)
    assert state_of(engine, oid) == "allocated"
    assert successes_per_unit(backends) == Counter({f"RB{oid}L0U0": 1})


def test_busy_answers_are_never_taken_for_failures(
        engine: Engine, vault: Vault, backends: dict[str, MemorySupplierBackend]) -> None:
    """'System busy' is an unknown outcome: the same supplier is asked again under the same
    key, the next supplier is never tried."""
    for _ in range(3):
        backends["first"].arm("busy")
    oid = take(engine, topup_order("T5"))
    src = sourcer(engine, vault, backends)
    run(src, rounds=5)
    backends["first"].settle()
    run(src)
    assert state_of(engine, oid) == "allocated"
    assert [a.supplier for a in attempts(engine, oid)] == ["first"]
    assert backends["second"].orders == {}


def test_every_supplier_failing_fails_the_order_with_each_reason(
        engine: Engine, vault: Vault, backends: dict[str, MemorySupplierBackend]) -> None:
    """When every supplier failed the order is failed with every supplier's reason, and a
    replay (which would re-send nothing) is refused."""
    backends["first"].arm("accept_then_fail", "库存不足")
    backends["second"].arm("accept_then_fail", "号码不支持")
    oid = take(engine, topup_order("T6"))
    src = sourcer(engine, vault, backends)
    for _ in range(4):
        run(src)
        for b in backends.values():
            b.settle()
    assert state_of(engine, oid) == "failed"
    reason = reason_of(engine, oid)
    assert "first: 库存不足" in reason and "second: 号码不支持" in reason
    with pytest.raises(UserError, match="suppliers failed"):
        orders.replay(engine, [oid], actor="test")
    assert successes_per_unit(backends) == Counter()


def test_nothing_is_bought_above_its_maximum_cost(
        engine: Engine, vault: Vault, backends: dict[str, MemorySupplierBackend]) -> None:
    """A product priced above the mapping's max_cost is never ordered."""
    oid = take(engine, topup_order("T7", sku="cheap"))
    run(sourcer(engine, vault, backends), rounds=2)
    assert backends["first"].orders == {}
    assert state_of(engine, oid) == "failed"
    assert "above the maximum cost" in reason_of(engine, oid)


def test_an_order_without_a_usable_account_is_held_until_a_person_gives_one(
        engine: Engine, vault: Vault, backends: dict[str, MemorySupplierBackend]) -> None:
    """No mobile number in the buyer's message: held with the reason; release checks the
    account a person gives, then the top-up goes there."""
    oid = take(engine, topup_order("T8", message="尽快发货"))
    assert state_of(engine, oid) == "held"
    assert "top-up account missing: the buyer's message holds no mobile number" \
        in reason_of(engine, oid)
    with pytest.raises(UserError, match="no usable account"):
        orders.release(engine, oid, actor="cs")
    with pytest.raises(UserError, match="not a mobile number"):
        orders.release(engine, oid, actor="cs", account="12345")
    assert orders.release(engine, oid, actor="cs", account="13900001111") == "received"
    assert pipeline.allocate(engine, oid) is not None
    run(sourcer(engine, vault, backends))
    [order] = backends["first"].orders.values()
    assert order.request.account == "13900001111"


def test_cards_come_from_the_pool_first_then_are_bought_into_the_vault(
        engine: Engine, vault: Vault, backends: dict[str, MemorySupplierBackend]) -> None:
    """With stock, the pool serves; without, the card is bought and its code stored
    encrypted for the order, in the transaction that records the purchase."""
    seed_codes(engine, vault, "youku", 1)
    from_pool = take(engine, paid_order("C1", ("c30", 1)))
    assert state_of(engine, from_pool) == "allocated"
    bought = take(engine, paid_order("C2", ("c30", 1)))
    assert state_of(engine, bought) == "sourcing"
    src = sourcer(engine, vault, backends)
    run(src)
    backends["first"].settle()
    run(src)
    assert state_of(engine, bought) == "allocated"
    [sold] = backends["first"].orders.values()
    revealed = orders.reveal(engine, vault, bought, actor="test")
    assert [(r.card_no, r.pin) for r in revealed] == [sold.cards[0]]
    with engine.connect() as conn:
        assert conn.execute(select(deliveries.c.state)
                            .where(deliveries.c.order_id == bought)).scalars().all() \
            == ["reserved"]


def test_a_refund_during_a_topup_lets_it_finish_and_flags_the_order(
        engine: Engine, vault: Vault, backends: dict[str, MemorySupplierBackend]) -> None:
    """The platform closes the order while the top-up is in flight: the purchase finishes
    (no supplier cancels), the order is cancelled for review, never shipped."""
    oid = take(engine, topup_order("T9"))
    src = sourcer(engine, vault, backends)
    run(src)
    closed = dataclasses.replace(topup_order("T9"), status=PlatformStatus.CLOSED)
    pipeline.intake(engine, SHOP, closed)
    assert state_of(engine, oid) == "sourcing"
    backends["first"].settle()
    run(src)
    assert state_of(engine, oid) == "cancelled"
    assert reason_of(engine, oid).startswith("review:")
    with engine.connect() as conn:
        actions = conn.execute(select(audit_log.c.action)).scalars().all()
    assert "refund_in_flight" in actions and "supplier_purchase" in actions
    assert successes_per_unit(backends) == Counter({f"RB{oid}L0U0": 1})


def test_two_workers_on_one_job_buy_once(
        engine: Engine, vault: Vault, backends: dict[str, MemorySupplierBackend]) -> None:
    """Two workers holding the same source job (a lease ran out) place the unit once: the
    move to ``placing`` is guarded."""
    oid = take(engine, topup_order("T10", quantity=2))
    job = Job(0, oid, "source", 0)
    a, b = sourcer(engine, vault, backends), sourcer(engine, vault, backends)

    async def both() -> None:
        await asyncio.gather(a.run_job(job), b.run_job(job))

    asyncio.run(both())
    backends["first"].settle()
    run(a)
    assert state_of(engine, oid) == "allocated"
    assert successes_per_unit(backends) == Counter({f"RB{oid}L0U0": 1, f"RB{oid}L0U1": 1})


def test_supplier_alerts_read_failing_stuck_and_low_balance(
        engine: Engine, vault: Vault, backends: dict[str, MemorySupplierBackend]) -> None:
    """Three failures in an hour with no success: failing; a purchase open past the limit:
    stuck; a balance under low_balance: low (each a separate alert key per supplier)."""
    from pydantic import SecretStr

    from connectors.memsupplier import MemorySupplierConfig
    from robot.config import SupplierConfig
    from robot.suppliers import Readings

    entry = SupplierConfig(name="first", plugin="memory", low_balance_cents=10_000,
                           config=MemorySupplierConfig(callback_secret=SecretStr("x")))
    readings = Readings(engine, [entry], processing_alert_after=60)
    assert [c.active for c in (readings.failing("first"), readings.stuck("first"),
                               readings.balance("first", 10_000))] == [False, False, False]
    src = sourcer(engine, vault, {"first": backends["first"]})
    for n in range(3):
        backends["first"].arm("accept_then_fail", "维护中")
        take(engine, topup_order(f"AL{n}", sku="t50"))
    run(src)
    backends["first"].settle()
    run(src)
    assert readings.failing("first").active
    take(engine, topup_order("AL9"))
    run(src)  # accepted, never settled
    with engine.begin() as conn:
        conn.execute(supplier_attempts.update().where(supplier_attempts.c.state == "accepted")
                     .values(created_at=utcnow() - timedelta(minutes=5)))
    assert readings.stuck("first").active
    readings.balances["first"] = 9_999
    assert readings.balance("first", 10_000).active
    assert len(readings.readers()) == 3


def test_supplier_cost_is_in_the_report_margin_and_by_supplier(
        engine: Engine, vault: Vault, backends: dict[str, MemorySupplierBackend]) -> None:
    """A shipped top-up's cost is what the supplier charged: the margin includes it, and
    ``--by supplier`` shows it against the supplier that was paid."""
    from robot import report

    platform = MemoryPlatform()
    platform.put_order(topup_order("R1"))
    oid = take(engine, topup_order("R1"))
    src = sourcer(engine, vault, backends)
    run(src)
    backends["first"].settle()
    run(src)
    disp = Dispatcher(engine, vault, {SHOP.name: MemoryConnector(platform)}, {SHOP.name: SHOP},
                      RetryPolicy(backoff_initial=0.001, backoff_max=0.001), worker="t")
    asyncio.run(disp.run_once(now=utcnow() + LATER))
    assert state_of(engine, oid) == "shipped"
    since = utcnow() - timedelta(days=1)
    total = report.build(engine, since=since, until=utcnow() + LATER).total
    assert (total.units, total.revenue_cents, total.cost_cents, total.margin_cents) == (
        1, 1000, 4950, 1000 - 4950)
    [row] = report.build(engine, since=since, until=utcnow() + LATER, by="supplier").rows
    assert (row.key, row.shipped, row.units, row.cost_cents) == ("first", 1, 1, 4950)


def test_a_failure_while_recording_a_bought_card_ships_nothing_and_buys_nothing_more(
        engine: Engine, vault: Vault, backends: dict[str, MemorySupplierBackend],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The transaction recording a success fails half-way (after the codes were written):
    nothing of it stays, no write-back is queued, and the next round finds the purchase by
    query and records it, with the supplier's one order."""
    from robot import pools
    from robot.schema import outbox
    from tests.factories import ensure_pool

    ensure_pool(engine, "youku")
    bought = take(engine, paid_order("CR1", ("c30", 1)))
    assert state_of(engine, bought) == "sourcing"
    src = sourcer(engine, vault, backends)
    run(src)
    backends["first"].settle()
    real = pools.add_bought

    def crash(*args: Any, **kwargs: Any) -> list[int]:
        real(*args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(pools, "add_bought", crash)
    with pytest.raises(OSError):
        run(src)
    with engine.connect() as conn:
        assert conn.execute(select(deliveries).where(deliveries.c.order_id == bought)).all() == []
        assert conn.execute(select(outbox.c.kind).where(outbox.c.order_id == bought)
                            ).scalars().all() == ["source"]
    assert state_of(engine, bought) == "sourcing"
    monkeypatch.setattr(pools, "add_bought", real)
    # Once the crashed worker's lease has run out, a worker takes the job over.
    asyncio.run(sourcer(engine, vault, backends).run_once(now=utcnow() + 2 * LATER))
    assert state_of(engine, bought) == "allocated"
    assert len(backends["first"].orders) == 1


def test_the_topup_status_hook_tells_the_buyer_progress_with_the_account_masked(
        engine: Engine, vault: Vault, backends: dict[str, MemorySupplierBackend]) -> None:
    """What the pickup page may show for a top-up: in progress, then done; the account
    masked, nothing about the supplier."""
    from robot.suppliers import topup_status

    oid = take(engine, topup_order("P1"))
    src = sourcer(engine, vault, backends)
    run(src)
    [status] = topup_status(engine, oid)
    assert (status.account, status.state, status.title) == ("138****5678", "in_progress",
                                                            "item t50")
    backends["first"].settle()
    run(src)
    assert [s.state for s in topup_status(engine, oid)] == ["done"]


def test_keys_fit_every_supplier_and_never_repeat_across_databases() -> None:
    """Letters and digits, 8 to 32 characters (Juhe's rule), naming order, line, unit and
    attempt; two databases numbering orders alike never share a key."""
    import re

    from robot.supplyroute import attempt_key

    first, again = attempt_key(1, 0, 0, 0), attempt_key(1, 0, 0, 0)
    assert first != again and first.startswith("RB1L0U0A0X")
    for key in (first, attempt_key(10**18, 99, 9999, 7)):
        assert re.fullmatch(r"[A-Za-z0-9]{8,32}", key), key


def test_source_jobs_are_leased_read_and_settled_in_the_shared_group(
        engine: Engine, vault: Vault, backends: dict[str, MemorySupplierBackend]) -> None:
    """The sourcing worker's bookkeeping goes through the daemon's group commit (shared
    transactions with the write-back and pushes): the lease of due source jobs, the read of
    an order's open purchases and the order's settlement are units of it, and the order
    is still bought once and allocated."""
    from robot.groupcommit import GroupCommit

    oid = take(engine, topup_order("G1"))
    group = GroupCommit(engine)
    src = Sourcer(engine, vault, {n: MemorySupplier(b) for n, b in backends.items()},
                  SourcingPolicy(query_initial=0.001, query_max=0.001, price_ttl=0),
                  worker="test", group=group)
    run(src)  # lease, read, place (recorded on its own), settle: waiting for the outcome
    assert group.units == 3
    backends["first"].settle()
    run(src)
    assert state_of(engine, oid) == "allocated"
    assert successes_per_unit(backends) == Counter({f"RB{oid}L0U0": 1})
    assert group.units > 3
