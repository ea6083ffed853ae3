"""``robot blacklist …`` and ``robot risk dry-run``: the blacklists and what the rules would do.

Held orders are released or rejected with ``robot orders release / reject``. The dry run
only reads; nothing here changes an order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from robot import risk
from robot.cli.common import App, actor, emit_json, json_option, print_table
from robot.display import format_minute, zone_name

if TYPE_CHECKING:
    from robot.config import RiskRules


def _target(buyer: str | None, ip: str | None) -> tuple[risk.Kind, str]:
    if (buyer is None) == (ip is None):
        raise click.UsageError("give --buyer ID or --ip IP (one of them)")
    return ("buyer", buyer) if buyer is not None else ("ip", ip or "")


_buyer = click.option("--buyer", metavar="ID",
                      help="A platform buyer id (blacklisted on every platform).")
_ip = click.option("--ip", metavar="IP", help="A buyer IP address.")


@click.group("blacklist")
def blacklist_group() -> None:
    """Buyers and IPs whose orders are always held (every shop, every platform)."""


@blacklist_group.command("add")
@_buyer
@_ip
@click.option("--reason", help="Why (kept in the blacklist and the audit log).")
@json_option
@click.pass_obj
def add_cmd(app: App, buyer: str | None, ip: str | None, reason: str | None,
            as_json: bool) -> None:
    """Hold every new order from this buyer id or IP."""
    kind, value = _target(buyer, ip)
    entry = risk.add_blacklist(app.engine, kind, value, actor=actor(), reason=reason)
    if as_json:
        emit_json({"kind": entry.kind, "value": entry.value, "reason": entry.reason})
    else:
        click.echo(f"blacklisted {entry.kind} {entry.value}")


@blacklist_group.command("remove")
@_buyer
@_ip
@json_option
@click.pass_obj
def remove_cmd(app: App, buyer: str | None, ip: str | None, as_json: bool) -> None:
    """Take a buyer id or IP off the blacklist (held orders stay held)."""
    kind, value = _target(buyer, ip)
    risk.remove_blacklist(app.engine, kind, value, actor=actor())
    if as_json:
        emit_json({"kind": kind, "removed": value})
    else:
        click.echo(f"removed {kind} {value} from the blacklist")


@blacklist_group.command("list")
@json_option
@click.pass_obj
def list_cmd(app: App, as_json: bool) -> None:
    """Every blacklisted buyer id and IP."""
    entries = risk.list_blacklist(app.engine)
    if as_json:
        emit_json([{"kind": e.kind, "value": e.value, "reason": e.reason,
                    "created_at": e.created_at, "created_by": e.created_by} for e in entries],
                  app.zone)
        return
    print_table(app, "blacklist", ["kind", "value", "reason", "added", "by"],
                [[e.kind, e.value, e.reason or "", app.time(e.created_at), e.created_by]
                 for e in entries])


@click.group("risk")
def risk_group() -> None:
    """The risk rules (defaults.risk and each shop's risk: in the config files)."""


@risk_group.command("dry-run")
@click.option("--days", default=7.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Judge the orders received in the last N days.")
@json_option
@click.pass_obj
def dry_run_cmd(app: App, days: float, as_json: bool) -> None:
    """Which recent orders the CURRENT rules would have held; changes nothing."""
    config = app.config
    by_shop = {s.name: s.risk for s in config.shops}

    def rules_for(shop: str) -> RiskRules:
        return by_shop.get(shop, config.defaults.risk)

    report = risk.dry_run(app.engine, rules_for, days=days, zone=app.zone)
    if as_json:
        emit_json({"since": report.since, "judged": report.judged,
                   "would_hold": [vars(w) for w in report.would_hold]}, app.zone)
        return
    print_table(app, "orders the current rules would hold (since "
                f"{format_minute(report.since, zone=app.zone)} {zone_name(app.zone)})",
                ["id", "shop", "platform order", "state now", "received", "reason"],
                [[w.order_id, w.shop, w.platform_order_id, w.state, app.time(w.received_at),
                  w.reason]
                 for w in report.would_hold])
    click.echo(f"{len(report.would_hold)} of {report.judged} order(s) would be held")


COMMANDS: list[click.Command] = [blacklist_group, risk_group]
