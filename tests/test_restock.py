"""Automatic restocking on every backend, against the in-memory supplier: each rule (stock
threshold, days of cover, quantity, maximum cost, daily and monthly budget, approval, purchases
in flight), a failing and a slow supplier, the balance checked before buying, and a crash
between the purchase and its recording (found by query, imported once)."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, func, select

from connectors.memsupplier import MemorySupplier, MemorySupplierBackend, MemorySupplierConfig
from connectors.supplier import Outcome
from robot import pipeline, pools, report, restock
from robot.alerts import AlertEngine, MemoryNotifier
from robot.clock import utcnow
from robot.config import AlertsConfig, SupplierConfig
from robot.config.restock import RestockRule
from robot.errors import UserError
from robot.report import LatencyRow, PoolRow
from robot.reporthtml import HtmlReport, render
from robot.restock import Refused
from robot.restocker import Restocker
from robot.schema import audit_log, batches, restock_purchases, stock
from robot.sourcing import SourcingPolicy
from robot.suppliers import Readings
from robot.vault import Vault
from tests.factories import Shop, ensure_pool, paid_order, seed_codes, sku

PRODUCT = "card-youku-30"  # 15.00 yuan a code at the in-memory supplier
LATER = timedelta(seconds=30)  # past any lease and query backoff, within the day


def rule(**changes: Any) -> RestockRule:
    base: dict[str, Any] = {"supplier": "mem", "product": PRODUCT, "below": 5,
                            "quantity": 10, "max_cost": "15.50", "daily_budget": "500",
                            "monthly_budget": "5000"}
    return RestockRule.model_validate({**base, **changes})


@pytest.fixture
def backend_sup() -> MemorySupplierBackend:
    return MemorySupplierBackend()


def restocker(engine: Engine, vault: Vault, sup: MemorySupplierBackend,
              rules: dict[str, RestockRule]) -> Restocker:
    return Restocker(engine, vault, {"mem": MemorySupplier(sup)}, rules,
                     SourcingPolicy(query_initial=0.001, query_max=0.001, price_ttl=0),
                     worker="test")


def run(worker: Restocker, rounds: int = 1, later: timedelta = LATER) -> None:
    for _ in range(rounds):
        asyncio.run(worker.run_once(now=utcnow() + later))


def available(engine: Engine, pool: str) -> int:
    pid = ensure_pool(engine, pool)
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(stock)
                                .where(stock.c.pool_id == pid)).scalar_one())


def purchases(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(restock_purchases).order_by(restock_purchases.c.id)))


def test_below_threshold_buys_once_puts_codes_on_sale_audited_as_an_import(
        engine: Engine, vault: Vault, backend_sup: MemorySupplierBackend) -> None:
    """Stock at the threshold: one purchase of ``quantity`` codes, its codes on sale in a
    batch of their own with supplier and cost, audited as an import; the budget charged."""
    seed_codes(engine, vault, "youku", 5)
    worker = restocker(engine, vault, backend_sup, {"youku": rule()})
    run(worker)  # requested and placed (the supplier accepts, settles later)
    backend_sup.settle()
    run(worker)
    assert available(engine, "youku") == 15
    [p] = purchases(engine)
    assert (p.state, p.codes, p.cost_cents) == ("succeeded", 10, 1500 * 10)
    assert len(backend_sup.orders) == 1
    with engine.connect() as conn:
        batch = conn.execute(select(batches).where(batches.c.id == p.batch_id)).one()
        entry = conn.execute(select(audit_log.c.details).where(
            audit_log.c.action == "import").order_by(audit_log.c.at.desc(),
                                                     audit_log.c.seq.desc())).first()
    assert (batch.supplier, batch.cost_cents, batch.code_count) == ("mem", 1500, 10)
    assert entry is not None and p.key in str(entry[0])
    [st] = restock.status(engine, {"youku": rule()})
    assert st["spent_today_cents"] == 15000 and st["in_flight"] == 0
    run(worker)  # 15 available, above the threshold: nothing more
    assert len(purchases(engine)) == 1


def restocked_report(engine: Engine, vault: Vault,
                     backend_sup: MemorySupplierBackend) -> report.Report:
    """One purchase for the pool ``youku`` bought and recorded; the day's report."""
    worker = restocker(engine, vault, backend_sup, {"youku": rule()})
    run(worker)
    backend_sup.settle()
    run(worker)
    return report.build(engine, since=utcnow() - timedelta(days=1),
                        now=utcnow() + timedelta(minutes=5))


def test_report_shows_codes_bought_and_cost_per_code_beside_manual_imports(
        engine: Engine, vault: Vault, backend_sup: MemorySupplierBackend) -> None:
    """``robot report``: the pool's purchases, codes, spend and cost per code, beside the
    codes imported by hand in the same window."""
    seed_codes(engine, vault, "youku", 3)
    result = restocked_report(engine, vault, backend_sup)
    [row] = result.restocking
    assert (row.pool, row.purchases, row.codes, row.cost_cents, row.cost_per_code_cents,
            row.manual_codes) == ("youku", 1, 10, 15000, 1500, 3)
    assert result.as_dict()["restocking"][0]["cost_per_code_cents"] == 1500
    # `robot report --html` shows the same row in its restocking table.
    page = render(HtmlReport(result, result, result, [LatencyRow("total", [0] * 12)], utcnow()))
    table = page[page.index('id="table-restock"'):]
    table = table[:table.index("</table>")]
    assert re.findall(r"<td[^>]*>([^<]*)</td>", table) == [
        "youku", "1", "10", "¥150.00", "¥15.00", "3", "–"]


def test_report_compares_cost_per_code_with_the_manual_imports_cost(
        engine: Engine, vault: Vault, backend_sup: MemorySupplierBackend,
        tmp_path: Path) -> None:
    """Codes imported by hand at a known cost: the report's restocking row shows their cost
    per code beside the robot's (bought codes never count as imports)."""
    path = tmp_path / "codes.txt"
    path.write_text("".join(f"TEST-M-{i:06d}-ZXWV\n" for i in range(4)), encoding="utf-8")
    ensure_pool(engine, "youku")
    pools.import_codes(engine, vault, "youku", path, actor="test", cost_cents=1200)
    [row] = restocked_report(engine, vault, backend_sup).restocking
    assert (row.codes, row.cost_per_code_cents, row.manual_codes,
            row.manual_cost_per_code_cents) == (10, 1500, 4, 1200)


def test_above_threshold_nothing_is_bought(engine: Engine, vault: Vault,
                                           backend_sup: MemorySupplierBackend) -> None:
    """Stock above ``below`` and no cover rule: no purchase."""
    seed_codes(engine, vault, "youku", 6)
    run(restocker(engine, vault, backend_sup, {"youku": rule()}))
    assert purchases(engine) == [] and backend_sup.orders == {}


def test_days_of_cover_triggers_from_last_weeks_burn(engine: Engine, vault: Vault,
                                                      backend_sup: MemorySupplierBackend) -> None:
    """Plenty of stock by count, but sales this week leave under ``cover_days``: bought."""
    seed_codes(engine, vault, "youku", 21)
    shop = Shop(items=(sku("y1", ("youku", 1)),))
    for i in range(14):
        pipeline.intake(engine, shop, paid_order(f"C{i}", ("y1", 1)), allocate=True)
    # 7 left, 14 sold in 7 days: 2 a day, 3.5 days of cover.
    cover_rule = rule(below=None, cover_days=4)
    assert restock.trigger(cover_rule, PoolRow("youku", 7, 14, 2.0, 3.5)) is not None
    assert restock.trigger(cover_rule, PoolRow("youku", 9, 14, 2.0, 4.5)) is None
    worker = restocker(engine, vault, backend_sup, {"youku": cover_rule})
    asyncio.run(worker.run_once())
    [p] = purchases(engine)
    assert "days of cover" in p.trigger


def test_a_supplier_charging_more_than_reserved_is_spent_all_the_same(
        engine: Engine, vault: Vault, backend_sup: MemorySupplierBackend) -> None:
    """The supplier took 160.00 where 155.00 (10 × max_cost) was reserved: the day's spend
    is what was charged, so the budget's next check counts the overage."""
    seed_codes(engine, vault, "youku", 5)
    worker = restocker(engine, vault, backend_sup, {"youku": rule()})
    run(worker)
    [order] = backend_sup.orders.values()
    order.cost_cents = 16000
    backend_sup.settle()
    run(worker)
    [p] = purchases(engine)
    assert (p.state, p.cost_cents) == ("succeeded", 16000)
    [st] = restock.status(engine, {"youku": rule()})
    assert st["spent_today_cents"] == 16000


def test_daily_budget_refuses_the_next_purchase_and_says_why(
        engine: Engine, vault: Vault, backend_sup: MemorySupplierBackend) -> None:
    """A day's budget holding one purchase: the second request is refused, nothing written,
    the pool shows why and the blocked alert is active."""
    r = rule(daily_budget="200", in_flight=3)  # one purchase may cost 155
    seed_codes(engine, vault, "youku", 1)
    restock.request(engine, "youku", r, why="test", actor="t")
    with pytest.raises(Refused, match="daily budget"):
        restock.request(engine, "youku", r, why="test", actor="t")
    assert len(purchases(engine)) == 1
    [st] = restock.status(engine, {"youku": r})
    assert st["spent_today_cents"] == 15500 and "daily budget" in st["blocked"]
    conds = {c.key: c for c in restock.conditions(engine, {"youku": r})}
    assert conds["restock_blocked:youku"].active


def test_monthly_budget_holds_across_days(engine: Engine, vault: Vault) -> None:
    """Each day within its budget, the month's total is still capped."""
    r = rule(daily_budget="200", monthly_budget="400", in_flight=9)
    ensure_pool(engine, "youku")
    day1 = utcnow().replace(day=2, hour=4)
    restock.request(engine, "youku", r, why="t", actor="t", now=day1)
    restock.request(engine, "youku", r, why="t", actor="t", now=day1 + timedelta(days=1))
    with pytest.raises(Refused, match="monthly budget"):
        restock.request(engine, "youku", r, why="t", actor="t", now=day1 + timedelta(days=2))
    # The next month starts again from nothing.
    restock.request(engine, "youku", r, why="t", actor="t", now=day1 + timedelta(days=32))
    assert len(purchases(engine)) == 3


def test_never_two_in_flight_unless_the_rule_allows(engine: Engine, vault: Vault,
                                                    backend_sup: MemorySupplierBackend) -> None:
    """A purchase still at the supplier (slow) holds the pool's only slot; ``in_flight: 2``
    allows a second."""
    seed_codes(engine, vault, "youku", 1)
    worker = restocker(engine, vault, backend_sup, {"youku": rule()})
    run(worker, rounds=3)  # the supplier never settles: accepted, queried with backoff
    [p] = purchases(engine)
    assert p.state == "accepted" and len(backend_sup.orders) == 1
    with pytest.raises(Refused, match="in flight"):
        restock.request(engine, "youku", rule(), why="t", actor="t")
    restock.request(engine, "youku", rule(in_flight=2), why="t", actor="t")
    backend_sup.settle()
    run(worker)
    assert purchases(engine)[0].state == "succeeded"


def test_approval_waits_for_a_person_then_buys(engine: Engine, vault: Vault,
                                               backend_sup: MemorySupplierBackend) -> None:
    """``approval: true``: the purchase waits, holding no budget, and nothing is bought until
    ``approve``; ``reject`` frees the slot without buying."""
    r = rule(approval=True)
    seed_codes(engine, vault, "youku", 2)
    worker = restocker(engine, vault, backend_sup, {"youku": r})
    run(worker, rounds=2)
    [p] = purchases(engine)
    assert p.state == "awaiting_approval" and backend_sup.orders == {}
    assert restock.status(engine, {"youku": r})[0]["awaiting_approval"] == [p.id]
    assert restock.status(engine, {"youku": r})[0]["spent_today_cents"] == 0
    restock.approve(engine, p.id, {"youku": r}, actor="alice")
    run(worker)
    backend_sup.settle()
    run(worker)
    assert purchases(engine)[0].state == "succeeded" and available(engine, "youku") == 12
    second = restock.request(engine, "youku", r, why="t", actor="t")
    restock.reject(engine, second, actor="alice")
    assert purchases(engine)[1].state == "rejected"
    restock.request(engine, "youku", r, why="t", actor="t")  # the slot is free again


def test_approval_reserves_the_budget_and_refuses_past_it(engine: Engine) -> None:
    """Approving reserves the purchase's budget with the same guard: the approval that would
    pass the day's budget is refused and the purchase keeps waiting."""
    r = rule(approval=True, daily_budget="200", in_flight=2)
    ensure_pool(engine, "youku")
    first = restock.request(engine, "youku", r, why="t", actor="t")
    second = restock.request(engine, "youku", r, why="t", actor="t")
    restock.approve(engine, first, {"youku": r}, actor="alice")
    with pytest.raises(Refused, match="daily budget"):
        restock.approve(engine, second, {"youku": r}, actor="alice")
    assert [p.state for p in purchases(engine)] == ["new", "awaiting_approval"]
    with pytest.raises(UserError, match="not awaiting approval"):
        restock.approve(engine, first, {"youku": r}, actor="alice")


def test_price_above_max_cost_is_never_bought(engine: Engine, vault: Vault,
                                              backend_sup: MemorySupplierBackend) -> None:
    """The supplier's price is above ``max_cost``: the purchase fails without a placement,
    its reservation comes back."""
    r = rule(max_cost="14.99")
    seed_codes(engine, vault, "youku", 1)
    run(restocker(engine, vault, backend_sup, {"youku": r}))
    [p] = purchases(engine)
    assert p.state == "failed" and "above the maximum cost" in p.reason
    assert backend_sup.orders == {}
    assert restock.status(engine, {"youku": r})[0]["spent_today_cents"] == 0


def test_failing_supplier_backs_off_and_alerts(engine: Engine, vault: Vault,
                                               backend_sup: MemorySupplierBackend) -> None:
    """A supplier that fails: the pool backs off (no new purchase while it lasts), the
    failing alert is active; a success clears it."""
    seed_codes(engine, vault, "youku", 1)
    worker = restocker(engine, vault, backend_sup, {"youku": rule()})
    backend_sup.arm("accept_then_fail", "supplier out of stock")
    now = utcnow()
    asyncio.run(worker.run_once(now=now))
    backend_sup.settle()
    asyncio.run(worker.run_once(now=now + timedelta(seconds=1)))
    [p] = purchases(engine)
    assert p.state == "failed"
    asyncio.run(worker.run_once(now=now + timedelta(seconds=2)))  # backing off
    assert len(purchases(engine)) == 1
    conds = {c.key: c for c in restock.conditions(engine, {"youku": rule()})}
    assert conds["restock_failing:youku"].active
    assert "out of stock" in conds["restock_failing:youku"].detail
    asyncio.run(worker.run_once(now=now + timedelta(seconds=restock.BACKOFF_INITIAL + 5)))
    backend_sup.settle()
    asyncio.run(worker.run_once(now=now + timedelta(seconds=restock.BACKOFF_INITIAL + 6)))
    assert [x.state for x in purchases(engine)] == ["failed", "succeeded"]
    conds = {c.key: c for c in restock.conditions(engine, {"youku": rule()})}
    assert not conds["restock_failing:youku"].active


def test_failing_supplier_alerts_once_and_low_balance_alerts_until_topped_up(
        engine: Engine, vault: Vault) -> None:
    """Through the alert engine: two failed purchases in a row (balance too low) send one
    "restocking … failing" alert and one low-balance alert (the balance the restocker read
    before buying); the purchase that goes through after a top-up resolves each, once."""
    poor = MemorySupplierBackend(balance_cents=10_000)
    seed_codes(engine, vault, "youku", 1)
    entry = SupplierConfig(name="mem", plugin="memory", low_balance_cents=20_000,
                           config=MemorySupplierConfig(callback_secret=SecretStr("x")))
    readings = Readings(engine, [entry], processing_alert_after=3600)
    rules = {"youku": rule()}
    worker = Restocker(engine, vault, {"mem": MemorySupplier(poor)}, rules,
                       SourcingPolicy(query_initial=0.001, query_max=0.001, price_ttl=0),
                       worker="test", balances=readings.balances)
    notifier = MemoryNotifier()
    alerts = AlertEngine(engine, notifier, AlertsConfig(),
                         extra=[*restock.readers(engine, rules), *readings.readers()])
    t0 = utcnow()

    def sent() -> list[str]:
        return [title for title, _ in notifier.sent
                if "restocking" in title or "balance" in title]

    def alert(minutes: int) -> None:
        alerts.run_once(t0 + timedelta(minutes=minutes))

    run(worker)  # the first purchase fails: the balance is below its cost
    alert(1)
    assert sorted(sent()) == ["[robot] ALERT: low balance at supplier mem",
                              "[robot] ALERT: restocking of pool youku failing"]
    run(worker, later=timedelta(seconds=restock.BACKOFF_INITIAL + 10))  # fails again
    assert [p.state for p in purchases(engine)] == ["failed", "failed"]
    alert(2)
    assert len(sent()) == 2  # still failing: nothing more is sent
    poor.balance_cents = 1_000_000  # the merchant tops the account up
    after = timedelta(seconds=3 * restock.BACKOFF_INITIAL + 10)  # past the doubled backoff
    run(worker, later=after)
    poor.settle()
    run(worker, later=after + timedelta(seconds=1))
    assert [p.state for p in purchases(engine)][-1] == "succeeded"
    alert(15)
    assert sorted(sent()[2:]) == ["[robot] resolved: low balance at supplier mem",
                                  "[robot] resolved: restocking of pool youku failing"]
    alert(30)
    assert len(sent()) == 4


def test_low_balance_is_checked_before_buying(engine: Engine, vault: Vault) -> None:
    """A balance below what the purchase costs: nothing placed, the reason names the
    balance, and the balance is kept for the supplier's low-balance alert."""
    poor = MemorySupplierBackend(balance_cents=10_000)
    seed_codes(engine, vault, "youku", 1)
    worker = restocker(engine, vault, poor, {"youku": rule()})
    run(worker)
    [p] = purchases(engine)
    assert p.state == "failed" and "balance" in p.reason and poor.orders == {}
    assert worker.balances == {"mem": 10_000}


def test_crash_between_purchase_and_record_is_found_by_query_and_imported_once(
        engine: Engine, vault: Vault, backend_sup: MemorySupplierBackend) -> None:
    """The robot placed the purchase and died before recording the answer: the next run
    queries by the key, imports the codes once, and never buys again."""
    ensure_pool(engine, "youku")
    worker = restocker(engine, vault, backend_sup, {"youku": rule()})
    pid = restock.request(engine, "youku", rule(), why="t", actor="t")
    [job] = worker.claim(utcnow(), 10)
    assert worker._mark_placing(job)
    asyncio.run(MemorySupplier(backend_sup).place(job.request()))  # the answer is lost
    backend_sup.settle()
    run(worker, rounds=3)  # a restarted robot (its lease ran out)
    assert len(backend_sup.orders) == 1
    assert available(engine, "youku") == 10
    [p] = purchases(engine)
    assert (p.id, p.state, p.codes) == (pid, "succeeded", 10)
    # A late, repeated record of the same success imports nothing more.
    purchase = asyncio.run(MemorySupplier(backend_sup).query(job.key))
    assert purchase.outcome is Outcome.SUCCEEDED
    worker.record(job, purchase)
    assert available(engine, "youku") == 10


def test_lost_request_is_placed_again_under_the_same_key(
        engine: Engine, vault: Vault, backend_sup: MemorySupplierBackend) -> None:
    """The request never reached the supplier (timeout): the query finds nothing, the same
    key is placed again, one order at the supplier."""
    ensure_pool(engine, "youku")
    worker = restocker(engine, vault, backend_sup, {"youku": rule()})
    backend_sup.arm("lose_request")
    run(worker)
    assert purchases(engine)[0].state == "unknown" and backend_sup.orders == {}
    run(worker)
    backend_sup.settle()
    run(worker)
    assert len(backend_sup.orders) == 1 and purchases(engine)[0].state == "succeeded"


class SlowSupplier(MemorySupplier):
    """The supplier takes the order, then never answers in time (the answer is lost to
    the caller's time-out)."""

    async def place(self, request: Any) -> Any:
        await super().place(request)
        await asyncio.Event().wait()  # never answers: the caller's time-out ends the call


def test_slow_supplier_times_out_is_queried_and_bought_once(
        engine: Engine, vault: Vault, backend_sup: MemorySupplierBackend) -> None:
    """A placement that times out is ``unknown``, never taken for a failure: the next run
    queries by the key, finds the order, and imports its codes once."""
    ensure_pool(engine, "youku")
    worker = Restocker(engine, vault, {"mem": SlowSupplier(backend_sup)}, {"youku": rule()},
                       SourcingPolicy(query_initial=0.001, query_max=0.001, price_ttl=0,
                                      call_timeout=0.05), worker="test")
    run(worker)
    [p] = purchases(engine)
    assert p.state == "unknown" and len(backend_sup.orders) == 1
    backend_sup.settle()
    run(worker, rounds=2)
    assert len(backend_sup.orders) == 1 and purchases(engine)[0].state == "succeeded"
    assert available(engine, "youku") == 10


def test_supplier_callback_makes_the_purchase_due(engine: Engine, vault: Vault) -> None:
    """A verified callback for a restock key makes its purchase due now; a key that is not
    ours (or another supplier's) is not claimed."""
    ensure_pool(engine, "youku")
    pid = restock.request(engine, "youku", rule(), why="t", actor="t")
    key = purchases(engine)[0].key
    with engine.begin() as conn:
        conn.execute(restock_purchases.update().where(restock_purchases.c.id == pid)
                     .values(due_at=utcnow() + timedelta(hours=1)))
    assert restock.callback_due(engine, "mem", key)
    assert purchases(engine)[0].due_at <= utcnow()
    assert not restock.callback_due(engine, "other", key)
    assert not restock.callback_due(engine, "mem", "RS1T000000000000X000000")


def test_rule_rejects_what_could_never_be_bought() -> None:
    """A rule without a trigger, or whose one purchase exceeds the daily budget, is a
    config error naming the problem."""
    with pytest.raises(ValueError, match="below"):
        rule(below=None)
    with pytest.raises(ValueError, match="daily_budget"):
        rule(daily_budget="100")
    assert rule().max_unit_cents == 1550 and rule().daily_cents == int(Decimal("500") * 100)
