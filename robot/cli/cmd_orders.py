"""``robot orders …`` and ``robot reveal``: look at orders and act on them by hand."""

from __future__ import annotations

import click

from robot import orders
from robot.cli.common import App, actor, emit_json, json_option, print_table
from robot.display import format_time, with_yuan
from robot.display import yuan as _money
from robot.schema import ORDER_STATES


@click.group("orders")
def orders_group() -> None:
    """List, inspect, replay, release, reject and cancel orders."""


@orders_group.command("list")
@click.option("--state", type=click.Choice(ORDER_STATES), help="Only orders in this state.")
@click.option("--shop", help="Only this shop's orders.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@json_option
@click.pass_obj
def list_cmd(app: App, state: str | None, shop: str | None, limit: int, as_json: bool) -> None:
    """Newest orders first."""
    rows = orders.list_orders(app.engine, state=state, shop=shop, limit=limit)
    if as_json:
        emit_json(with_yuan(rows))
        return
    print_table(app, "orders", ["id", "shop", "platform order", "state", "amount", "received",
                                "shipped", "reason"],
                [[r["id"], r["shop"], r["platform_order_id"], r["state"], _money(r["total_cents"]),
                  format_time(r["received_at"]), format_time(r["shipped_at"]), r["reason"] or ""]
                 for r in rows])


@orders_group.command("show")
@click.argument("order_id", type=int)
@json_option
@click.pass_obj
def show_cmd(app: App, order_id: int, as_json: bool) -> None:
    """One order: lines, codes (masked) and write-back jobs."""
    data = orders.show_order(app.engine, app.vault, order_id)
    if as_json:
        emit_json(with_yuan(data))
        return
    app.console.print(f"[bold]order {data['id']}[/bold]  {data['shop']} / "
                      f"{data['platform_order_id']}  state: [bold]{data['state']}[/bold]"
                      + (f"  ({data['reason']})" if data["reason"] else ""))
    app.console.print(f"paid {format_time(data['paid_at'], empty='-')}  "
                      f"received {format_time(data['received_at'])}  "
                      f"shipped {format_time(data['shipped_at'], empty='-')}  "
                      f"amount {_money(data['total_cents'])}")
    print_table(app, "lines", ["#", "line id", "item", "sku", "outer id", "qty", "refund", "pools"],
                [[ln["line_no"], ln["line_id"], ln["item_id"], ln["sku_id"], ln["outer_id"],
                  ln["quantity"], ln["refund"], ln["mapping"]] for ln in data["lines"]])
    print_table(app, "codes", ["line", "n", "code id", "pool", "code", "state", "seen"],
                [[c["line_no"], c["n"], c["code_id"], c["pool"], c["masked"], c["state"],
                  "yes" if c["seen"] else ""] for c in data["codes"]])
    print_table(app, "write-back", ["job", "state", "attempts", "due", "last error"],
                [[j["kind"], j["state"], j["attempts"], format_time(j["due_at"]),
                  j["last_error"] or ""]
                 for j in data["jobs"]])


@orders_group.command("replay")
@click.argument("order_ids", type=int, nargs=-1)
@click.option("--all-failed", is_flag=True, help="Replay every failed order.")
@json_option
@click.pass_obj
def replay_cmd(app: App, order_ids: tuple[int, ...], all_failed: bool, as_json: bool) -> None:
    """Send failed orders through write-back again, with the same codes."""
    if bool(order_ids) == all_failed:
        raise click.UsageError("give ORDER_ID… or --all-failed (one of them)")
    done = orders.replay(app.engine, None if all_failed else list(order_ids), actor=actor())
    if as_json:
        emit_json({"replayed": done})
    else:
        click.echo(f"replayed {len(done)} order(s): {' '.join(map(str, done)) or '-'}")


@orders_group.command("release")
@click.argument("order_id", type=int)
@json_option
@click.pass_obj
def release_cmd(app: App, order_id: int, as_json: bool) -> None:
    """Let a held order go on (unmapped lines are mapped again from the shop file)."""
    shown = orders.show_order(app.engine, app.vault, order_id)
    items = None
    shop_names = {s.name for s in app.config.shops}
    if shown["shop"] in shop_names:
        items = app.config.shop(shown["shop"]).items
    target = orders.release(app.engine, order_id, actor=actor(), items=items)
    if as_json:
        emit_json({"order_id": order_id, "state": target})
    else:
        click.echo(f"order {order_id} released: now {target}")


@orders_group.command("reject")
@click.argument("order_id", type=int)
@click.option("--reason", default="rejected by a person", show_default=True)
@json_option
@click.pass_obj
def reject_cmd(app: App, order_id: int, reason: str, as_json: bool) -> None:
    """Do not ship this order; the platform's refund flow takes over."""
    counts = orders.reject(app.engine, order_id, actor=actor(), reason=reason)
    if as_json:
        emit_json({"order_id": order_id, "state": "rejected", **counts})
    else:
        click.echo(f"order {order_id} rejected; {counts['returned']} code(s) back in stock, "
                   f"{counts['flagged']} flagged for review")


@orders_group.command("cancel")
@click.argument("order_id", type=int)
@click.option("--reason", default="cancelled by a person", show_default=True)
@json_option
@click.pass_obj
def cancel_cmd(app: App, order_id: int, reason: str, as_json: bool) -> None:
    """Cancel an unshipped order; codes nobody has seen go back to stock."""
    counts = orders.cancel(app.engine, order_id, actor=actor(), reason=reason)
    if as_json:
        emit_json({"order_id": order_id, "state": "cancelled", **counts})
    else:
        click.echo(f"order {order_id} cancelled; {counts['returned']} code(s) back in stock, "
                   f"{counts['flagged']} flagged for review")


@click.command("reveal")
@click.argument("order_id", type=int)
@json_option
@click.pass_obj
def reveal_cmd(app: App, order_id: int, as_json: bool) -> None:
    """Print an order's codes in plain text (audited with your user name)."""
    revealed = orders.reveal(app.engine, app.vault, order_id, actor=actor())
    if as_json:
        emit_json([{"code_id": r.code_id, "line_no": r.line_no, "pool": r.pool, "code": r.secret}
                   for r in revealed])
        return
    for r in revealed:
        click.echo(f"{r.pool}\t{r.secret}")
    click.echo(f"(revealed {len(revealed)} code(s) of order {order_id}; this was audited)",
               err=True)


COMMANDS: list[click.Command] = [orders_group, reveal_cmd]
