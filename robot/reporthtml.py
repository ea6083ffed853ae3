"""The report as one self-contained HTML page: charts drawn here as inline SVG, tables below.

The page loads nothing: no script, no font, no stylesheet or image from anywhere (a strict
Content-Security-Policy in the page says so to the browser too), so it opens the same from
a mail attachment, a USB stick or a browser without network. Labels are Chinese with
English; money is in yuan.

Every text that comes from a shop, a platform or a merchant (shop names, SKU ids, pool
names) goes through :func:`_e` (HTML escaping) before it reaches the page: this page is an
injection surface. Numbers are formatted here, never taken as markup.

The figures are :mod:`robot.report`'s, unchanged: the page never computes a figure of its
own beyond scaling bars.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from robot.clock import local_day
from robot.display import format_minute, format_span, zone_name
from robot.report import LATENCY_EDGES, LatencyRow, PoolRow, Report, RestockRow, SalesRow

CHART_W = 720
BAR_AREA_H = 160
COVER_WARN_DAYS = 3.0


@dataclass(frozen=True)
class HtmlReport:
    """What the page shows: the same window by day, by SKU and by shop, and paid→shipped."""

    by_day: Report
    by_sku: Report
    by_shop: Report
    latency: list[LatencyRow]
    generated_at: datetime


def _e(text: object) -> str:
    """Text for HTML content or a quoted attribute."""
    return html.escape(str(text), quote=True)


def yuan(cents: int | None) -> str:
    """``¥1,234.50``, ``-¥3.00``; ``–`` for no figure."""
    if cents is None:
        return "–"
    return f"{'-' if cents < 0 else ''}¥{abs(cents) / 100:,.2f}"


def duration(seconds: float | None) -> str:
    return format_span(seconds, empty="–")


def window_days(report: Report) -> list[str]:
    """Every local day of the window (``YYYY-MM-DD`` in the report's zone), with or without
    orders, plus any day the rows hold that the range does not."""
    zone = report.window.zone
    first: date = local_day(report.window.since, zone)
    last: date = local_day(report.window.until - timedelta(microseconds=1), zone)
    days = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    extra = [r.key for r in report.rows if r.key not in days]
    return sorted([*days, *extra])


# ---------------------------------------------------------------------------- SVG charts


def _bar_chart(chart_id: str, title: str, labels: Sequence[str], values: Sequence[float],
               shown: Sequence[str], *, colour: str) -> str:
    """Vertical bars, one per label; ``shown`` is each bar's value as text."""
    n = max(len(labels), 1)
    left, bottom = 48, 36
    height = BAR_AREA_H + bottom + 16
    step = (CHART_W - left - 8) / n
    top = max([*values, 0]) or 1
    parts = [f'<svg id="{_e(chart_id)}" class="chart" viewBox="0 0 {CHART_W} {height}" '
             f'role="img" aria-label="{_e(title)}">',
             f'<line x1="{left}" y1="{16 + BAR_AREA_H}" x2="{CHART_W - 8}" '
             f'y2="{16 + BAR_AREA_H}" class="axis"/>',
             f'<text x="{left - 6}" y="24" class="tick" text-anchor="end">'
             f"{_e(shown_max(top, shown, values))}</text>"]
    for i, (label, value, text) in enumerate(zip(labels, values, shown, strict=True)):
        h = BAR_AREA_H * max(value, 0) / top
        x = left + i * step + step * 0.15
        w = step * 0.7
        y = 16 + BAR_AREA_H - h
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" '
            f'fill="{colour}" data-key="{_e(label)}" data-value="{_e(text)}">'
            f'<title>{_e(label)}: {_e(text)}</title></rect>')
        if n <= 16 or i % max(1, n // 16) == 0:
            parts.append(f'<text x="{x + w / 2:.1f}" y="{16 + BAR_AREA_H + 14}" class="tick" '
                         f'text-anchor="middle">{_e(label[5:] if len(label) == 10 else label)}'
                         '</text>')
    parts.append("</svg>")
    return "".join(parts)


def shown_max(top: float, shown: Sequence[str], values: Sequence[float]) -> str:
    """The label of the axis' top: the largest bar's own text."""
    for text, value in zip(shown, values, strict=True):
        if value == top:
            return text
    return ""


def _hbar_chart(chart_id: str, title: str, rows: Sequence[tuple[str, float, str, bool]]) -> str:
    """Horizontal bars ``(label, value, text, warn)``; negative values grow to the left of a
    zero line, ``warn`` bars are red."""
    row_h, label_w = 24, 200
    height = max(len(rows), 1) * row_h + 8
    lo = min([0.0, *(v for _, v, _, _ in rows)])
    hi = max([0.0, *(v for _, v, _, _ in rows)])
    span = (hi - lo) or 1
    plot_w = CHART_W - label_w - 120
    zero = label_w + plot_w * (-lo / span)
    parts = [f'<svg id="{_e(chart_id)}" class="chart" viewBox="0 0 {CHART_W} {height}" '
             f'role="img" aria-label="{_e(title)}">',
             f'<line x1="{zero:.1f}" y1="0" x2="{zero:.1f}" y2="{height}" class="axis"/>']
    for i, (label, value, text, warn) in enumerate(rows):
        y = 4 + i * row_h
        w = plot_w * abs(value) / span
        x = zero if value >= 0 else zero - w
        colour = "#c62828" if warn or value < 0 else "#2e7d32"
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 15}" class="label" text-anchor="end">'
            f'{_e(_short(label))}</text>'
            f'<rect class="bar" x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row_h - 8}" '
            f'fill="{colour}" data-key="{_e(label)}" data-value="{_e(text)}">'
            f'<title>{_e(label)}: {_e(text)}</title></rect>'
            f'<text x="{max(x + w, zero) + 6:.1f}" y="{y + 15}" class="tick">{_e(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _short(label: str, width: int = 28) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


# ---------------------------------------------------------------------------- tables


def _table(table_id: str, head: Sequence[str], rows: Sequence[Sequence[object]],
           total: Sequence[object] | None = None) -> str:
    parts = [f'<table id="{_e(table_id)}"><thead><tr>',
             *(f"<th>{_e(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for row in rows:
        parts.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>")
    parts.append("</tbody>")
    if total is not None:
        parts.append('<tfoot><tr class="total">' + "".join(f"<td>{_e(c)}</td>" for c in total)
                     + "</tr></tfoot>")
    parts.append("</table>")
    return "".join(parts)


def _sales_cells(r: SalesRow, key: str) -> list[object]:
    return [key, r.orders, r.shipped, r.open, r.units, yuan(r.revenue_cents),
            f"{r.refunds} / {yuan(r.refund_cents)}", yuan(r.cost_cents), yuan(r.margin_cents),
            "–" if r.margin_pct is None else f"{r.margin_pct}%", r.cancelled,
            duration(r.avg_paid_to_shipped_s)]


SALES_HEAD = ("", "订单 orders", "已发货 shipped", "未完成 open", "件数 units", "收入 revenue",
              "退款 refunds", "成本 cost", "毛利 margin", "毛利率 margin %", "取消 cancelled",
              "付款→发货 avg paid→shipped")


def _bucket_label(i: int) -> str:
    if i == len(LATENCY_EDGES):
        return f"> {duration(LATENCY_EDGES[-1])}"
    return f"≤ {duration(LATENCY_EDGES[i])}"


def _pct(seconds: int | None, shipped: int) -> str:
    if not shipped:
        return "–"
    return f"≤ {duration(seconds)}" if seconds is not None else f"> {duration(LATENCY_EDGES[-1])}"


# ---------------------------------------------------------------------------- the page


STYLE = """
body{font-family:system-ui,-apple-system,"PingFang SC","Microsoft YaHei",sans-serif;margin:0;
padding:16px 24px;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 4px}h2{font-size:1.1em;margin:28px 0 8px}
.meta{color:#666;font-size:.9em}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px 14px;min-width:120px}
.card b{display:block;font-size:1.3em}
.chart{display:block;width:100%;max-width:720px;height:auto;background:#fff;
border:1px solid #ddd;border-radius:6px;margin:4px 0}
.axis{stroke:#999;stroke-width:1}.tick{font-size:10px;fill:#555}.label{font-size:11px;fill:#222}
table{border-collapse:collapse;background:#fff;margin:8px 0 16px;font-size:.9em}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}
thead th{background:#f0f0f0}tr.total td{font-weight:bold;background:#f7f7f7}
.empty{color:#888}
"""
# The page needs nothing from anywhere: a browser that honours this refuses it all.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def render(data: HtmlReport) -> str:
    """The whole page."""
    day, total = data.by_day, data.by_day.total
    days = window_days(day)
    rows_by_day = {r.key: r for r in day.rows}
    orders = [rows_by_day[d].orders if d in rows_by_day else 0 for d in days]
    revenue = [rows_by_day[d].revenue_cents or 0 if d in rows_by_day else 0 for d in days]
    w = day.window
    zone = w.zone
    body = [
        f"<h1>销售报表 Sales report</h1><p class=\"meta\">付款时间 orders paid "
        f"{format_minute(w.since, zone=zone)} – {format_minute(w.until, zone=zone)} · 生成于 "
        f"generated {format_minute(data.generated_at, zone=zone)} · 时区 time zone "
        f"{_e(zone_name(zone))}</p>",
        '<div class="cards">',
        *(f'<div class="card">{_e(label)}<b>{_e(value)}</b></div>' for label, value in (
            ("订单 orders", total.orders), ("已发货 shipped", total.shipped),
            ("收入 revenue", yuan(total.revenue_cents)),
            ("退款 refunds", yuan(total.refund_cents)), ("成本 cost", yuan(total.cost_cents)),
            ("毛利 margin", yuan(total.margin_cents)),
            ("付款→发货 avg paid→shipped", duration(total.avg_paid_to_shipped_s)))),
        "</div>",
        "<h2>每日订单 Orders per day</h2>",
        _bar_chart("chart-orders", "orders per day", days, orders, [str(n) for n in orders],
                   colour="#1565c0"),
        "<h2>每日收入 Revenue per day</h2>",
        _bar_chart("chart-revenue", "revenue per day", days, revenue,
                   [yuan(c) for c in revenue], colour="#2e7d32"),
        *_margin_section(data.by_sku),
        *_pool_section(day.pools),
        *_latency_section(data.latency),
        "<h2>明细 Tables</h2>",
        "<h3>按日 By day</h3>",
        _table("table-day", SALES_HEAD, [_sales_cells(r, r.key) for r in day.rows],
               _sales_cells(total, "合计 total")),
        "<h3>按店铺 By shop</h3>",
        _table("table-shop", SALES_HEAD, [_sales_cells(r, r.key) for r in data.by_shop.rows],
               _sales_cells(data.by_shop.total, "合计 total")),
        "<h3>按商品 By SKU</h3>",
        _table("table-sku", SALES_HEAD, [_sales_cells(r, r.key) for r in data.by_sku.rows]),
        "<h3>库存 Pools</h3>",
        _table("table-pools", ("号池 pool", "可售 available", "期间消耗 burned",
                               "日均 per day", "可售天数 days of cover"),
               [[p.pool, p.available, p.burned, p.burn_per_day,
                 "–" if p.days_of_cover is None else p.days_of_cover] for p in day.pools]),
        *_restock_section(day.restocking),
        "<h3>付款→发货 Paid→shipped by day</h3>",
        _table("table-latency", ("日期 day", "已发货 shipped", "p50", "p90"),
               [[r.key if r.key != "total" else "合计 total", r.shipped,
                 _pct(r.percentile(0.5), r.shipped), _pct(r.percentile(0.9), r.shipped)]
                for r in data.latency]),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>销售报表 Sales report {local_day(w.since, zone)} – "
            f"{local_day(w.until, zone)}</title>"
            f"<style>{STYLE}</style></head><body>" + "\n".join(body) + "</body></html>\n")


def _margin_section(by_sku: Report) -> list[str]:
    rows = [(r.key, (r.margin_cents or 0) / 100, yuan(r.margin_cents), False)
            for r in by_sku.rows if r.margin_cents is not None and (r.shipped or r.refunds)]
    if not rows:
        return ["<h2>商品毛利 Margin per SKU</h2>", '<p class="empty">无已发货订单 no shipped '
                "orders</p>"]
    return ["<h2>商品毛利 Margin per SKU</h2>", _hbar_chart("chart-margin", "margin per SKU", rows)]


def _pool_section(pools: list[PoolRow]) -> list[str]:
    if not pools:
        return ["<h2>库存 Stock and days of cover</h2>", '<p class="empty">无号池 no pools</p>']
    rows = [(p.pool, float(p.available),
             f"{p.available} · " + ("∞" if p.days_of_cover is None else f"{p.days_of_cover} 天 d"),
             p.days_of_cover is not None and p.days_of_cover < COVER_WARN_DAYS)
            for p in pools]
    return ["<h2>库存与可售天数 Stock and days of cover</h2>",
            _hbar_chart("chart-stock", "stock and days of cover per pool", rows)]


def _restock_section(restocking: list[RestockRow]) -> list[str]:
    """The codes the robot bought for its pools, against the codes imported by hand."""
    if not restocking:
        return []
    return ["<h3>自动补货 Restocking (codes bought by the robot, against your own imports)</h3>",
            _table("table-restock", ("号池 pool", "采购 purchases", "卡密 codes", "花费 spent",
                                     "单价 per code", "手动导入 imported by hand",
                                     "导入单价 per code (imports)"),
                   [[r.pool, r.purchases, r.codes, yuan(r.cost_cents),
                     yuan(r.cost_per_code_cents), r.manual_codes,
                     yuan(r.manual_cost_per_code_cents)] for r in restocking])]


def _latency_section(latency: list[LatencyRow]) -> list[str]:
    total = latency[-1]
    labels = [_bucket_label(i) for i in range(len(total.counts))]
    return ["<h2>付款→发货用时分布 Paid→shipped time</h2>",
            f'<p class="meta">p50 {_e(_pct(total.percentile(0.5), total.shipped))} · p90 '
            f'{_e(_pct(total.percentile(0.9), total.shipped))} · {total.shipped} 单 orders</p>',
            _bar_chart("chart-latency", "paid to shipped time", labels, total.counts,
                       [str(n) for n in total.counts], colour="#6a1b9a")]


__all__ = ["HtmlReport", "render", "window_days"]
