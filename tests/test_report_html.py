"""`robot report --html FILE`: one self-contained page whose charts and tables show exactly
the figures of `robot report --json`, rendered in a real browser (headless Chromium through
Playwright), with every shop-supplied text escaped."""

from __future__ import annotations

import json
import re
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from playwright.sync_api import sync_playwright
from sqlalchemy import Engine, update

import robot.cli
from robot import report
from robot.cli.common import App
from robot.clock import DEFAULT_ZONE, utcnow
from robot.reporthtml import HtmlReport, render, window_days, yuan
from robot.schema import order_lines, orders
from robot.vault import Vault
from tests.http.test_browser import CHROMIUM, CHROMIUM_ARGS
from tests.test_report import build_business

EVIL_SHOP = "<script>alert('shop')</script>"
EVIL_SKU = '"><img src=x onerror="alert(1)">'


@pytest.fixture
def cli_app(engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> App:
    """The CLI, talking to the test database instead of a configured one."""
    robot.cli._register()
    app = App(config_path=tmp_path / "robot.yaml")
    app._engine = engine
    app.zone = DEFAULT_ZONE  # no robot file: its default timezone
    monkeypatch.setattr(robot.cli, "App", lambda config_path: app)
    return app


def cli_json(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(robot.cli.cli, ["report", *args, "--json"])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def poison_names(engine: Engine) -> None:
    """A shop name and a SKU id that would run script if the page did not escape them."""
    with engine.begin() as conn:
        conn.execute(update(orders).where(orders.c.platform_order_id == "B1")
                     .values(shop=EVIL_SHOP))
        conn.execute(update(order_lines).where(order_lines.c.sku_id == "bundle")
                     .values(sku_id=EVIL_SKU))


def page_for(engine: Engine) -> str:
    now = utcnow()
    since = now - timedelta(days=7)

    def view(by: report.Grouping) -> report.Report:
        return report.build(engine, since=since, until=now, by=by, now=now)

    return render(HtmlReport(view("day"), view("sku"), view("shop"),
                             report.paid_to_shipped(engine, since=since, until=now), now))


def test_page_needs_nothing_from_anywhere(engine: Engine, vault: Vault) -> None:
    """The page holds no script, link, image, font or URL of any kind; its styles are inline
    and its CSP forbids loading anything."""
    build_business(engine, vault)
    lowered = page_for(engine).lower()
    for needle in ("http://", "https://", "//cdn", "<script", "<link", "<img", "<iframe",
                   "<object", "<embed", "src=", "href=", "url(", "@import", "@font-face"):
        assert needle not in lowered, needle
    assert "default-src 'none'" in lowered
    assert lowered.count("<svg") == 5


def test_hostile_names_are_escaped(engine: Engine, vault: Vault) -> None:
    """A shop name or SKU id made of markup appears escaped, in text and in attributes."""
    build_business(engine, vault)
    poison_names(engine)
    page = page_for(engine)
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&#x27;shop&#x27;)&lt;/script&gt;" in page
    assert 'data-key="&quot;&gt;&lt;img src=x onerror=&quot;alert(1)&quot;&gt;"' in page


def test_html_report_in_a_browser_matches_the_json(cli_app: App, engine: Engine, vault: Vault,
                                                   tmp_path: Path) -> None:
    """In Chromium: one bar per day of the window whose values are the JSON's orders and
    revenue; margin bars per SKU, stock bars per pool and the paid→shipped histogram agree
    with `report --json`; escaped names show as text and run nothing; no request leaves the
    file and no console error."""
    build_business(engine, vault)
    poison_names(engine)
    out = tmp_path / "report.html"
    runner = CliRunner()
    written = runner.invoke(robot.cli.cli, ["report", "--since", "7d", "--by", "day", "--html",
                                            str(out)])
    assert written.exit_code == 0, written.output
    assert f"wrote {out}" in written.stderr
    by_day = cli_json("--since", "7d", "--by", "day")
    by_sku = cli_json("--since", "7d", "--by", "sku")
    by_shop = cli_json("--since", "7d", "--by", "shop")

    requests: list[str] = []
    problems: list[str] = []
    dialogs: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("request", lambda r: requests.append(r.url))
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(out.as_uri())

        def bars(chart: str) -> list[tuple[str, str]]:
            found: list[list[str]] = page.eval_on_selector_all(
                f"#{chart} rect.bar",
                "els => els.map(e => [e.dataset.key, e.dataset.value])")
            return [(k, v) for k, v in found]

        orders_bars = bars("chart-orders")
        revenue_bars = bars("chart-revenue")
        margin_bars = bars("chart-margin")
        stock_bars = bars("chart-stock")
        latency_bars = bars("chart-latency")
        svg_count = page.locator("svg.chart").count()
        shop_cells = page.eval_on_selector_all("#table-shop tbody td:first-child",
                                               "els => els.map(e => e.textContent)")
        sku_cells = page.eval_on_selector_all("#table-sku tbody td:first-child",
                                              "els => els.map(e => e.textContent)")
        scripts = page.locator("script").count()
        images = page.locator("img").count()
        latency_rows = page.eval_on_selector_all(
            "#table-latency tbody tr", "els => els.map(r => [...r.cells].map(c => c.textContent))")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()

    assert svg_count == 5
    # One bar per day of the window, days without orders included.
    since = by_day["since"][:10]
    until = by_day["until"][:10]
    assert len(orders_bars) == len(revenue_bars) == len(window_days_of(since, until))
    day_rows = {r["key"]: r for r in by_day["rows"]}
    assert [(k, int(v)) for k, v in orders_bars] == [
        (d, day_rows[d]["orders"] if d in day_rows else 0) for d in window_days_of(since, until)]
    assert [v for _, v in revenue_bars] == [
        yuan(day_rows[d]["revenue_cents"] if d in day_rows else 0)
        for d in window_days_of(since, until)]
    assert sum(int(v) for _, v in orders_bars) == by_day["total"]["orders"]
    # Margin per SKU (SKUs that shipped), stock and cover per pool.
    assert sorted(margin_bars) == sorted(
        (r["key"], yuan(r["margin_cents"])) for r in by_sku["rows"] if r["shipped"] or r["refunds"])
    assert [(k, v.split(" · ")[0]) for k, v in stock_bars] == [
        (p["pool"], str(p["available"])) for p in by_day["pools"]]
    for (_, v), p in zip(stock_bars, by_day["pools"], strict=True):
        cover = p["days_of_cover"]
        assert v.endswith("∞" if cover is None else f"{cover} 天 d")
    # Paid→shipped: the histogram's counts and the p50/p90 rows are the JSON's.
    total_latency = by_day["paid_to_shipped"][-1]
    assert [int(v) for _, v in latency_bars] == total_latency["counts"]
    assert sum(total_latency["counts"]) == by_day["total"]["shipped"]
    assert [r[0] for r in latency_rows] == [
        *(r["key"] for r in by_day["paid_to_shipped"][:-1]), "合计 total"]
    assert [int(r[1]) for r in latency_rows] == [r["shipped"] for r in by_day["paid_to_shipped"]]
    # Hostile names are text on the page, never markup.
    assert EVIL_SHOP in shop_cells
    assert {r["key"] for r in by_shop["rows"]} == set(shop_cells)
    assert EVIL_SKU in sku_cells
    assert (scripts, images, dialogs) == (0, 0, [])
    assert requests == [out.as_uri()]
    assert problems == []


def window_days_of(since: str, until: str) -> list[str]:
    """The calendar days from ``since`` to ``until`` (ISO dates), both included."""
    from datetime import date

    first, last = date.fromisoformat(since), date.fromisoformat(until)
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def test_window_days_cover_the_window(engine: Engine) -> None:
    """A 7-day window ending mid-day spans 8 calendar days; one ending at midnight, 7."""
    now = utcnow().replace(hour=12, minute=0, second=0, microsecond=0)
    rep = report.build(engine, since=now - timedelta(days=7), until=now, by="day", now=now,
                       zone=UTC)
    assert len(window_days(rep)) == 8
    midnight = now.replace(hour=0)
    rep = report.build(engine, since=midnight - timedelta(days=7), until=midnight, by="day",
                       now=now, zone=UTC)
    assert len(window_days(rep)) == 7
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", window_days(rep)[0])


def test_paid_to_shipped_buckets_reconcile(engine: Engine, vault: Vault) -> None:
    """The paid→shipped buckets count every shipped order once, by paid day, in the bucket of
    its own delay; p50/p90 are the upper edge of the bucket that holds them."""
    paid_at = build_business(engine, vault)
    delays = {"A1": timedelta(seconds=5), "A2": timedelta(seconds=45), "B1": timedelta(hours=2),
              "OLD": timedelta(seconds=1)}
    with engine.begin() as conn:
        for oid, delay in delays.items():
            conn.execute(update(orders).where(orders.c.platform_order_id == oid)
                         .values(shipped_at=paid_at[oid] + delay))
    now = utcnow()
    rows = report.paid_to_shipped(engine, since=now - timedelta(days=7), until=now)
    total = report.build(engine, since=now - timedelta(days=7), until=now, now=now).total
    assert rows[-1].key == "total"
    assert rows[-1].shipped == total.shipped == 3 == sum(r.shipped for r in rows[:-1])
    assert rows[-1].counts == [1, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0]  # OLD is outside
    # Days are the report's local days (the shop's zone), not UTC days: near midnight in the
    # zone an order paid late in the UTC day belongs to the next local day.
    assert {r.key: r.shipped for r in rows[:-1]} == {
        paid_at[o].replace(tzinfo=UTC).astimezone(DEFAULT_ZONE).date().isoformat(): 1
        for o in ("A1", "A2", "B1")}
    assert (rows[-1].percentile(0.5), rows[-1].percentile(0.9)) == (60, 7200)
    latency = report.LatencyRow("x", [0, 1, 0, 0, 0, 0, 0, 0, 8, 0, 0, 1])
    assert (latency.percentile(0.5), latency.percentile(0.9)) == (7200, 7200)
    assert report.LatencyRow("x", [0] * 11 + [3]).percentile(0.5) is None
    assert report.LatencyRow("x", [0] * 12).percentile(0.5) is None
