"""``robot report``: sales, cost, margin, refunds and pool stock over a window.

The definitions of every figure are in :mod:`robot.report`. This module only formats; it
never shows a code (reports hold counts and money only).
"""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from robot.cli.common import App, emit_json, json_option, print_table
from robot.clock import utcnow
from robot.display import CENTS_SUFFIX, format_minute, format_span, with_yuan, yuan_name, zone_name
from robot.display import yuan as _money
from robot.report import (
    GROUPINGS,
    Grouping,
    Report,
    SalesRow,
    build,
    paid_to_shipped,
    parse_since,
)

_FIELDS = ("key", "orders", "shipped", "open", "units", "codes", "revenue_cents", "refunds",
           "refund_cents", "net_revenue_cents", "cancelled", "cancelled_cents", "cost_cents",
           "cost_unknown", "margin_cents", "margin_pct", "avg_paid_to_shipped_s")
#: Every amount in yuan (``29.90``), each followed by its exact ``…_cents``.
CSV_COLUMNS = tuple(c for f in _FIELDS for c in (
    (yuan_name(f, _FIELDS), f) if f.endswith(CENTS_SUFFIX) else (f,)))


def _table_row(r: SalesRow) -> list[Any]:
    return [r.key, r.orders, r.shipped, r.open, r.units, _money(r.revenue_cents),
            f"{r.refunds} / {_money(r.refund_cents)}" if r.refund_cents is not None
            else r.refunds,
            _money(r.cost_cents) + (f" (+{r.cost_unknown} unknown)" if r.cost_unknown else ""),
            _money(r.margin_cents),
            "" if r.margin_pct is None else f"{r.margin_pct}%",
            f"{r.cancelled} / {_money(r.cancelled_cents)}" if r.cancelled_cents is not None
            else "", format_span(r.avg_paid_to_shipped_s)]


def write_csv(report: Report, path: Path) -> None:
    """The rows (or the total alone), amounts in yuan and in cents, plus the total last."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in [*report.rows, report.total]:
            writer.writerow({k: ("" if v is None else v)
                             for k, v in with_yuan(row.as_dict()).items()})


@click.command("report")
@click.option("--since", "since_text", default="7d", show_default=True,
              help="Window start: 7d, 24h, 30m, 2w, or a date such as 2026-11-01 (midnight "
                   "in the robot's timezone).")
@click.option("--by", "by", type=click.Choice(GROUPINGS[1:]), default=None,
              help="Break the figures down by paid day (in the robot's timezone), shop, SKU "
                   "pool, or supplier (what each supplier was paid).")
@click.option("--csv", "csv_path", type=click.Path(path_type=Path, dir_okay=False),
              default=None,
              help="Also write the rows to this CSV file (amounts in yuan and in cents).")
@click.option("--html", "html_path", type=click.Path(path_type=Path, dir_okay=False),
              default=None, help="Also write the report with charts to this HTML file (one "
                                 "self-contained page).")
@json_option
@click.pass_obj
def report(app: App, since_text: str, by: str | None, csv_path: Path | None,
           html_path: Path | None, as_json: bool) -> None:
    """Orders, units, revenue, cost of codes, margin, refunds and pool cover for orders paid
    in the window."""
    now = utcnow()
    grouping = next(g for g in GROUPINGS if g == (by or "total"))  # click.Choice checked it
    since = parse_since(since_text, now, app.zone)
    result = build(app.engine, since=since, by=grouping, now=now, zone=app.zone)
    if csv_path is not None:
        write_csv(result, csv_path)
    if html_path is not None:
        write_html(app, result, html_path, now=now)
    if as_json:
        latency = paid_to_shipped(app.engine, since=since, until=result.window.until,
                                  zone=app.zone)
        emit_json(with_yuan({**result.as_dict(),
                             "paid_to_shipped": [r.as_dict() for r in latency]}), app.zone)
        return
    title = (f"orders paid {format_minute(result.window.since, zone=app.zone)} to "
             f"{format_minute(result.window.until, zone=app.zone)} {zone_name(app.zone)}")
    print_table(app, title,
                [by or "", "orders", "shipped", "open", "units", "revenue", "refunds",
                 "cost", "margin", "margin %", "cancelled", "paid→shipped"],
                [*(_table_row(r) for r in result.rows), _table_row(result.total)])
    print_table(app, "pools", ["pool", "available", "burned", "per day", "days of cover"],
                [[p.pool, p.available, p.burned, p.burn_per_day,
                  "" if p.days_of_cover is None else p.days_of_cover]
                 for p in result.pools])
    if result.restocking:
        print_table(app, "restocking (codes bought by the robot, against your own imports)",
                    ["pool", "purchases", "codes", "spent", "per code", "imported by hand",
                     "per code (imports)"],
                    [[r.pool, r.purchases, r.codes, _money(r.cost_cents),
                      _money(r.cost_per_code_cents) or "-", r.manual_codes,
                      _money(r.manual_cost_per_code_cents) or "-"] for r in result.restocking])
    if csv_path is not None:
        click.echo(f"wrote {csv_path}", err=True)
    if html_path is not None:
        click.echo(f"wrote {html_path}", err=True)


def write_html(app: App, result: Report, path: Path, *, now: datetime) -> None:
    """The page of :mod:`robot.reporthtml` for the same window (by day, SKU and shop)."""
    from robot.reporthtml import HtmlReport, render

    w = result.window

    def view(by: Grouping) -> Report:
        return result if result.by == by else build(app.engine, since=w.since, until=w.until,
                                                    by=by, now=now, zone=w.zone)

    page = render(HtmlReport(view("day"), view("sku"), view("shop"),
                             paid_to_shipped(app.engine, since=w.since, until=w.until,
                                             zone=w.zone), now))
    path.write_text(page, encoding="utf-8")


COMMANDS: list[click.Command] = [report]
