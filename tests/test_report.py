"""Reports reconcile with the orders and deliveries tables, on every backend."""

from __future__ import annotations

import asyncio
import csv
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select, update

import robot.cli
from connectors.base import Order, PlatformStatus, RefundState
from connectors.memory import MemoryConnector, MemoryPlatform
from robot import pipeline, report
from robot.cli.common import App
from robot.clock import DEFAULT_ZONE, local_day, utcnow
from robot.display import yuan
from robot.errors import UserError
from robot.outbox import Dispatcher, RetryPolicy
from robot.schema import codes, pools
from robot.schema import orders as orders_t
from robot.vault import Vault
from tests.factories import Shop, paid_order, seed_codes, sku

SHOP_A = Shop(name="shop-a", items=(sku("s1", ("p1", 1)), sku("bundle", ("p1", 1), ("p2", 2))))
SHOP_B = Shop(name="shop-b", items=(sku("s1", ("p1", 1)),))


def paid(order: Order, days_ago: float) -> Order:
    return replace(order, paid_at=datetime.now(UTC) - timedelta(days=days_ago))


def build_business(engine: Engine, vault: Vault) -> dict[str, datetime]:
    """A known week: shipped, refunded, cancelled, open, held and out-of-window orders.

    Returns each order's paid time (naive UTC, as stored).
    """
    seed_codes(engine, vault, "p1", 10)
    seed_codes(engine, vault, "p2", 4)
    with engine.begin() as conn:
        p1 = conn.execute(select(pools.c.id).where(pools.c.name == "p1")).scalar_one()
        conn.execute(update(codes).where(codes.c.pool_id == p1).values(cost_cents=300))
    platform = MemoryPlatform()
    disp = Dispatcher(
        engine, vault, {s.name: MemoryConnector(platform) for s in (SHOP_A, SHOP_B)},
        {s.name: s for s in (SHOP_A, SHOP_B)},
        RetryPolicy(max_attempts=3, backoff_initial=0.001, backoff_max=0.001), worker="test")
    shipped = [(SHOP_A, paid(paid_order("A1", ("s1", 2)), 2)),
               (SHOP_A, paid(paid_order("A2", ("bundle", 1)), 1)),
               (SHOP_B, paid(paid_order("B1", ("s1", 3)), 3)),
               (SHOP_B, paid(paid_order("OLD", ("s1", 1)), 10))]
    for shop, order in shipped:
        platform.put_order(order)
        pipeline.intake(engine, shop, order)
    while pipeline.allocate_next(engine):
        pass
    while asyncio.run(disp.run_once(now=utcnow() + timedelta(hours=1))):
        pass
    # A2 is refunded after delivery.
    pipeline.intake(engine, SHOP_A, paid_order("A2", ("bundle", 1), status=PlatformStatus.CLOSED,
                                               refund=RefundState.REFUNDED))
    # A3 is allocated, then closed before shipping: cancelled, its code back in stock.
    a3 = pipeline.intake(engine, SHOP_A, paid(paid_order("A3", ("s1", 1)), 1))
    assert pipeline.allocate(engine, a3.order_id or 0) is not None
    pipeline.intake(engine, SHOP_A, paid_order("A3", ("s1", 1), status=PlatformStatus.CLOSED))
    # A4 is allocated and not shipped yet; B2 is held (unknown SKU).
    a4 = pipeline.intake(engine, SHOP_A, paid(paid_order("A4", ("s1", 1)), 0.5))
    assert pipeline.allocate(engine, a4.order_id or 0) is not None
    pipeline.intake(engine, SHOP_B, paid(paid_order("B2", ("nope", 1)), 0.2))
    with engine.connect() as conn:
        rows = conn.execute(select(orders_t.c.platform_order_id, orders_t.c.state,
                                   orders_t.c.paid_at)).all()
    states = {r.platform_order_id: r.state for r in rows}
    assert states == {"A1": "shipped", "A2": "refunded", "A3": "cancelled", "A4": "allocated",
                      "B1": "shipped", "B2": "held", "OLD": "shipped"}
    return {r.platform_order_id: r.paid_at for r in rows}


def mean_paid_to_shipped(engine: Engine, ids: list[str]) -> float:
    with engine.connect() as conn:
        rows = conn.execute(select(orders_t.c.paid_at, orders_t.c.shipped_at)
                            .where(orders_t.c.platform_order_id.in_(ids))).all()
    return sum((r.shipped_at - r.paid_at).total_seconds() for r in rows) / len(rows)


def figures(row: report.SalesRow) -> dict[str, object]:
    data = row.as_dict()
    data.pop("avg_paid_to_shipped_s")
    data.pop("margin_pct")
    return data


def test_totals_reconcile_exactly(engine: Engine, vault: Vault) -> None:
    """Every figure of the week's total is exactly what the orders and deliveries hold."""
    build_business(engine, vault)
    now = utcnow()
    rep = report.build(engine, since=now - timedelta(days=7), now=now)
    assert rep.rows == []
    assert figures(rep.total) == {
        "key": "total", "orders": 6, "shipped": 3, "open": 2, "units": 6,
        "revenue_cents": 6000, "refunds": 1, "refund_cents": 1000, "cancelled": 1,
        "cancelled_cents": 1000, "cost_cents": 1800, "cost_unknown": 2, "codes": 8,
        "net_revenue_cents": 5000, "margin_cents": 3200,
    }
    assert rep.total.margin_pct == 64.0
    assert rep.total.avg_paid_to_shipped_s == pytest.approx(
        mean_paid_to_shipped(engine, ["A1", "A2", "B1"]), abs=0.01)
    by_pool = {p.pool: p for p in rep.pools}
    assert (by_pool["p1"].available, by_pool["p1"].burned) == (2, 8)  # OLD was allocated now
    assert (by_pool["p2"].available, by_pool["p2"].burned) == (2, 2)
    assert by_pool["p1"].burn_per_day == round(8 / 7, 2)
    assert by_pool["p1"].days_of_cover == round(2 / (8 / 7), 1)


def test_breakdowns_add_up_to_the_total(engine: Engine, vault: Vault) -> None:
    """By shop, day and SKU the rows are exact and sum to the total; by pool they count codes."""
    paid_at = build_business(engine, vault)
    now = utcnow()
    since = now - timedelta(days=7)
    total = report.build(engine, since=since, now=now).total

    shops = {r.key: r for r in report.build(engine, since=since, by="shop", now=now).rows}
    assert figures(shops["shop-a"]) == {
        "key": "shop-a", "orders": 4, "shipped": 2, "open": 1, "units": 3,
        "revenue_cents": 3000, "refunds": 1, "refund_cents": 1000, "cancelled": 1,
        "cancelled_cents": 1000, "cost_cents": 900, "cost_unknown": 2, "codes": 5,
        "net_revenue_cents": 2000, "margin_cents": 1100,
    }
    assert figures(shops["shop-b"]) == {
        "key": "shop-b", "orders": 2, "shipped": 1, "open": 1, "units": 3,
        "revenue_cents": 3000, "refunds": 0, "refund_cents": 0, "cancelled": 0,
        "cancelled_cents": 0, "cost_cents": 900, "cost_unknown": 0, "codes": 3,
        "net_revenue_cents": 3000, "margin_cents": 2100,
    }
    assert shops["shop-b"].avg_paid_to_shipped_s == pytest.approx(
        mean_paid_to_shipped(engine, ["B1"]), abs=0.01)

    days = {r.key: r for r in report.build(engine, since=since, by="day", now=now).rows}
    in_window = {k: v for k, v in paid_at.items() if k != "OLD"}
    # Days are the robot's local days (Asia/Shanghai unless configured otherwise).
    assert set(days) == {local_day(v, DEFAULT_ZONE).isoformat() for v in in_window.values()}
    for day, row in days.items():
        ids = [k for k, v in in_window.items() if local_day(v, DEFAULT_ZONE).isoformat() == day]
        assert row.orders == len(ids)
    for name in ("orders", "shipped", "open", "units", "revenue_cents", "refunds",
                 "refund_cents", "cancelled", "cancelled_cents", "cost_cents", "codes"):
        for rows in (shops, days):
            assert sum(getattr(r, name) for r in rows.values()) == getattr(total, name), name

    skus = {r.key: r for r in report.build(engine, since=since, by="sku", now=now).rows}
    assert figures(skus["s1"]) == {
        "key": "s1", "orders": 4, "shipped": 2, "open": 1, "units": 5,
        "revenue_cents": 5000, "refunds": 0, "refund_cents": 0, "cancelled": 1,
        "cancelled_cents": 1000, "cost_cents": 1500, "cost_unknown": 0, "codes": 5,
        "net_revenue_cents": 5000, "margin_cents": 3500,
    }
    assert figures(skus["bundle"]) == {
        "key": "bundle", "orders": 1, "shipped": 1, "open": 0, "units": 1,
        "revenue_cents": 1000, "refunds": 1, "refund_cents": 1000, "cancelled": 0,
        "cancelled_cents": 0, "cost_cents": 300, "cost_unknown": 2, "codes": 3,
        "net_revenue_cents": 0, "margin_cents": -300,
    }
    assert (skus["nope"].orders, skus["nope"].open, skus["nope"].units) == (1, 1, 0)
    assert sum(r.revenue_cents or 0 for r in skus.values()) == total.revenue_cents

    by_pool = {r.key: r for r in report.build(engine, since=since, by="pool", now=now).rows}
    assert (by_pool["p1"].orders, by_pool["p1"].shipped, by_pool["p1"].open,
            by_pool["p1"].refunds) == (4, 3, 1, 1)
    assert (by_pool["p1"].units, by_pool["p1"].cost_cents, by_pool["p1"].cost_unknown) == (
        6, 1800, 0)
    assert (by_pool["p2"].orders, by_pool["p2"].units, by_pool["p2"].cost_cents,
            by_pool["p2"].cost_unknown) == (1, 2, 0, 2)
    assert by_pool["p1"].revenue_cents is None and by_pool["p1"].margin_cents is None


def test_empty_window_and_bad_arguments(engine: Engine) -> None:
    """A window without orders is all zeros; a bad --since or an empty window is refused."""
    now = utcnow()
    rep = report.build(engine, since=now - timedelta(days=1), by="day", now=now)
    assert rep.rows == [] and rep.total.orders == 0 and rep.total.revenue_cents == 0
    assert rep.total.avg_paid_to_shipped_s is None and rep.total.margin_pct is None
    assert report.parse_since("7d", now) == now - timedelta(days=7)
    assert report.parse_since("2026-11-01", now, UTC) == datetime(2026, 11, 1)
    with pytest.raises(UserError, match="--since"):
        report.parse_since("last week", now)
    with pytest.raises(UserError, match="not before"):
        report.build(engine, since=now + timedelta(days=1), now=now)


@pytest.fixture
def cli_app(engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> App:
    """The CLI, talking to the test database instead of a configured one."""
    robot.cli._register()
    app = App(config_path=tmp_path / "robot.yaml")
    app._engine = engine
    app.zone = DEFAULT_ZONE  # no robot file: its default timezone
    monkeypatch.setattr(robot.cli, "App", lambda config_path: app)
    return app


def test_cli_report_json_csv_and_table(cli_app: App, engine: Engine, vault: Vault,
                                       tmp_path: Path) -> None:
    """`robot report --by shop` prints the same figures as JSON, CSV and a table, amounts
    in yuan (with the exact cents beside them in JSON and CSV)."""
    build_business(engine, vault)
    out = tmp_path / "report.csv"
    runner = CliRunner()
    result = runner.invoke(robot.cli.cli, ["report", "--by", "shop", "--csv", str(out),
                                           "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["total"]["revenue_cents"] == 6000 and data["total"]["margin_cents"] == 3200
    assert [r["key"] for r in data["rows"]] == ["shop-a", "shop-b"]
    with out.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["key"], r["revenue_cents"], r["cost_cents"]) for r in rows] == [
        ("shop-a", "3000", "900"), ("shop-b", "3000", "900"), ("total", "6000", "1800")]
    # money in yuan beside the exact cents, in the CSV and in the JSON
    assert [(r["revenue"], r["cost"], r["margin"]) for r in rows][-1] == ("60.00", "18.00",
                                                                          "32.00")
    assert data["total"]["revenue"] == "60.00" and data["total"]["margin"] == "32.00"
    assert data["total"]["cancelled_yuan"] == yuan(data["total"]["cancelled_cents"])
    table = runner.invoke(robot.cli.cli, ["report", "--since", "30d"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "70.00" in table.stdout  # revenue incl. the order paid 10 days ago
    bad = runner.invoke(robot.cli.cli, ["report", "--by", "week"])
    assert bad.exit_code == 2
