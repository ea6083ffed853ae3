"""``robot status``: is everything flowing, and what needs a person?"""

from __future__ import annotations

import dataclasses

import click

from robot import orders
from robot.cli.common import App, emit_json, json_option, print_table
from robot.clock import format_age

_HINTS = {
    "replacements_waiting": "replacement codes wait for stock (robot orders redeliver); "
                            "import codes into their pools and they are served",
    "ignored_unmapped_7d": "paid orders ignored with unmapped lines (robot orders list "
                           "--state ignored); map the SKU, then robot orders release ID",
}


@click.command("status")
@json_option
@click.pass_obj
def status_cmd(app: App, as_json: bool) -> None:
    """Shops (last poll, lag, orders by state), pools (stock, days of cover), what needs you."""
    names = [s.name for s in app.config.shops]
    st = orders.status(app.engine, names)
    if as_json:
        emit_json(dataclasses.asdict(st))
        return
    limit = app.config.intake.max_clock_offset
    print_table(app, "shops", ["shop", "last poll ok", "lag", "clock", "paused", "received",
                               "allocated", "shipped", "waiting", "held", "failed", "cancelled"],
                [[s.shop, s.last_poll_ok_at or "never", format_age(s.lag_seconds),
                  _clock(s.clock_offset_s, limit),
                  s.paused_reason if s.paused else "", *(s.states.get(k, 0) for k in (
                      "received", "allocated", "shipped", "waiting_stock", "held", "failed",
                      "cancelled"))] for s in st.shops])
    print_table(app, "pools", ["pool", "available", "sold 7d", "days of cover", "low-stock at"],
                [[p.pool, p.available, p.sold_7d,
                  "-" if p.days_of_cover is None else p.days_of_cover,
                  p.low_stock if p.low_stock is not None else ""] for p in st.pools])
    skewed = [s for s in st.shops
              if s.clock_offset_s is not None and abs(s.clock_offset_s) > limit]
    for s in skewed:
        app.console.print(f"[bold red]clock:[/bold red] {s.shop}'s platform clock is "
                          f"{_clock(s.clock_offset_s, limit)} from this machine's (limit "
                          f"{limit:g}s); polling follows the platform's clock, but check NTP")
    needs = {k: v for k, v in st.attention.items() if v}
    if needs:
        app.console.print("[bold red]needs attention:[/bold red] "
                          + ", ".join(f"{k} {v}" for k, v in needs.items())
                          + "  (robot orders list --state …)")
        for key, hint in _HINTS.items():
            if needs.get(key):
                app.console.print(f"  {key}: {hint}")
    else:
        app.console.print("[green]nothing needs attention[/green]")


def _clock(offset: float | None, limit: float) -> str:
    """The platform's clock against ours: "+600s" (ahead), "-3s" (behind), "" unmeasured;
    "!" past the limit."""
    if offset is None:
        return ""
    return f"{offset:+.0f}s" + (" !" if abs(offset) > limit else "")


COMMANDS: list[click.Command] = [status_cmd]
