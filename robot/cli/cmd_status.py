"""``robot status``: is everything flowing, and what needs a person?

The "needs attention" list comes from :mod:`robot.attention` (every check, in one place);
"nothing needs attention" is printed only when that list is empty. ``--json`` carries the
same list under ``needs_attention``.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

import click

from robot import attention, orders, restock
from robot.cli.common import App, emit_json, json_option, print_table
from robot.clock import format_age, utcnow
from robot.display import with_yuan, yuan
from robot.states import OrderState

#: The order states `robot status` counts per shop, in its column order.
_SHOP_COLUMNS = (OrderState.RECEIVED, OrderState.ALLOCATED, OrderState.SHIPPED,
                 OrderState.WAITING_STOCK, OrderState.SOURCING, OrderState.HELD,
                 OrderState.FAILED, OrderState.CANCELLED)


@click.command("status")
@json_option
@click.pass_obj
def status_cmd(app: App, as_json: bool) -> None:
    """Shops (last poll, lag, orders by state), pools (stock, days of cover), what needs you."""
    names = [s.name for s in app.config.shops]
    now = utcnow()
    st = orders.status(app.engine, names, now=now)
    items = attention.needs_attention(app.engine, app.config, st, now)
    if as_json:
        data = dataclasses.asdict(st)
        for shop in data["shops"]:  # seconds to a tenth, like the times (no microseconds)
            for key in ("lag_seconds", "clock_offset_s"):
                if shop.get(key) is not None:
                    shop[key] = round(shop[key], 1)
        emit_json({**data, "restocking": _restocking(app, now),
                   "needs_attention": [i.as_dict() for i in items]}, app.zone)
        return
    limit = app.config.intake.max_clock_offset
    print_table(app, "shops", ["shop", "last poll ok", "lag", "clock", "paused", "received",
                               "allocated", "shipped", "waiting", "sourcing", "held", "failed",
                               "cancelled"],
                [[s.shop, app.time(s.last_poll_ok_at, empty="never"),
                  format_age(s.lag_seconds), _clock(s.clock_offset_s, limit),
                  s.paused_reason if s.paused else "",
                  *(s.states.get(k, 0) for k in _SHOP_COLUMNS)] for s in st.shops])
    print_table(app, "pools", ["pool", "available", "sold 7d", "days of cover", "low-stock at"],
                [[p.pool, p.available, p.sold_7d,
                  "-" if p.days_of_cover is None else p.days_of_cover,
                  p.low_stock if p.low_stock is not None else ""] for p in st.pools])
    rows = _restocking(app, now)
    if rows:
        print_table(app, "restocking", ["pool", "spent today", "this month", "in flight",
                                        "awaiting approval", "last purchase"],
                    [[r["pool"], f"{yuan(r['spent_today_cents'])} / "
                      f"{yuan(r['daily_budget_cents'])}",
                      f"{yuan(r['spent_month_cents'])} / {yuan(r['monthly_budget_cents'])}",
                      r["in_flight"], len(r["awaiting_approval"]),
                      "-" if r["last_purchase"] is None else
                      f"#{r['last_purchase']['id']} {r['last_purchase']['state']}"]
                     for r in rows])
    if not items:
        app.console.print("[green]nothing needs attention[/green]")
        return
    app.console.print(f"[bold red]needs attention ({len(items)}):[/bold red]")
    for item in items:
        app.console.print(f"  - {item.message}", markup=False, highlight=False,
                              soft_wrap=True)
        if item.action:
            app.console.print(f"      → {item.action}", markup=False, highlight=False,
                              soft_wrap=True)


def _restocking(app: App, now: datetime) -> list[dict[str, Any]]:
    """Per pool with a restock rule: its spend and purchases (robot restock status)."""
    if not app.config.restock:
        return []
    return [with_yuan(r) for r in restock.status(app.engine, app.config.restock, now=now,
                                                 zone=app.zone)]


def _clock(offset: float | None, limit: float) -> str:
    """The platform's clock against ours: "+600s" (ahead), "-3s" (behind), "" unmeasured;
    "!" past the limit."""
    if offset is None:
        return ""
    whole = round(offset)
    shown = f"{whole:+d}s" if whole else "0s"  # never "-0s" for a clock a few ms behind
    return shown + (" !" if abs(offset) > limit else "")


COMMANDS: list[click.Command] = [status_cmd]
