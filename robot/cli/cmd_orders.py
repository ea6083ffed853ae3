"""``robot orders …`` and ``robot reveal``: look at orders and act on them by hand."""

from __future__ import annotations

from typing import Any

import click
from rich.markup import escape

from robot import orders
from robot.cli.common import App, actor, emit_json, json_option, print_table
from robot.display import with_yuan, zone_name
from robot.display import yuan as _money
from robot.schema import ORDER_STATES
from robot.states import OrderState, OutboxState
from robot.support import printable


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
        emit_json(with_yuan(rows), app.zone)
        return
    print_table(app, f"orders (times in {zone_name(app.zone)})",
                ["id", "shop", "platform order", "state", "amount", "paid", "received",
                 "shipped", "reason"],
                [[r["id"], r["shop"], r["platform_order_id"], r["state"], _money(r["total_cents"]),
                  app.time(r["paid_at"]), app.time(r["received_at"]),
                  app.time(r["shipped_at"], empty=""),
                  _safe(r["reason"] or "")] for r in rows])


@orders_group.command("show")
@click.argument("order_id", type=int)
@json_option
@click.pass_obj
def show_cmd(app: App, order_id: int, as_json: bool) -> None:
    """One order: lines with titles and masked codes, pickup link, write-back history."""
    data = orders.show_order(app.engine, app.vault, order_id)
    if as_json:
        emit_json(with_yuan(data), app.zone)
        return
    show_text(app, data)


def _safe(value: object) -> str:
    """A stored value for the terminal: no control characters, no rich markup."""
    return escape(printable("" if value is None else str(value)))


def show_text(app: App, data: dict[str, Any]) -> None:
    print_ = app.console.print
    print_(f"[bold]order {data['id']}[/bold]  {_safe(data['shop'])} / "
           f"{_safe(data['platform_order_id'])}  state: [bold]{data['state']}[/bold]"
           + (f"  ({_safe(data['reason'])})" if data["reason"] else ""))
    print_(f"paid {app.time(data['paid_at'], empty='-')}  "
           f"received {app.time(data['received_at'])}  "
           f"shipped {app.time(data['shipped_at'], empty='-')}  "
           f"amount {_money(data['total_cents'])}  buyer {_safe(data['buyer_id'] or '-')}")
    print_table(app, "lines", ["#", "title", "item", "sku", "qty", "refund", "pools", "codes"],
                [[ln["line_no"], _safe(ln["title"]) or "-", _safe(ln["item_id"]),
                  _safe(ln["sku_id"]), ln["quantity"], ln["refund"], _safe(ln["mapping"]),
                  " ".join(ln["codes"]) or "-"] for ln in data["lines"]])
    if data["codes"]:
        print_table(app, "codes", ["line", "n", "code id", "pool", "batch", "code", "state",
                                   "seen"],
                    [[c["line_no"], c["n"], c["code_id"], c["pool"], c["batch_id"],
                      escape(c["masked"]), c["state"], "yes" if c["seen"] else ""]
                     for c in data["codes"]])
    link = data["link"]
    if link is None:
        print_("pickup link: none made yet")
    else:
        print_(f"pickup link: [bold]{link['status']}[/bold]  made {app.time(link['created_at'])}"
               f"  expires {app.time(link['expires_at'], empty='never')}"
               f"  views {link['views']}  reveals {link['reveals']}"
               f"  last view {app.time(link['last_view_at'], empty='never')}"
               + (f"  revoked {app.time(link['revoked_at'])}" if link["revoked_at"] else "")
               + (f"  ({link['links_made']} links made)" if link["links_made"] > 1 else ""))
    print_table(app, "write-back jobs", ["job", "state", "attempts", "next due", "done",
                                         "last error"],
                [[j["kind"], j["state"], j["attempts"],
                  app.time(j["due_at"]) if j["state"] == OutboxState.PENDING else "",
                  app.time(j["done_at"], empty=""), _safe(j["last_error"] or "")]
                 for j in data["jobs"]])
    if data["attempts"]:
        print_table(app, "write-back history", ["when", "job", "result", "error"],
                    [[app.time(a["at"]), a["kind"], a["result"], _safe(a["error"] or "")]
                     for a in data["attempts"]])
    if data["notifications"]:
        print_table(app, "buyer notifications", ["channel", "event", "state", "attempts",
                                                 "created", "sent", "last error"],
                    [[n["channel"], n["event"], n["state"], n["attempts"],
                      app.time(n["created_at"]), app.time(n["sent_at"], empty=""),
                      _safe(n["last_error"] or "")] for n in data["notifications"]])
    if data.get("supplier_attempts"):
        print_table(app, "supplier purchases", ["line", "unit", "#", "supplier", "product",
                                                "account", "state", "cost", "max", "reason"],
                    [[a["line_no"], a["unit"], a["attempt"], _safe(a["supplier"]),
                      _safe(a["product"]), a["account"] or "-", a["state"],
                      _money(a["cost_cents"]) if a["cost_cents"] is not None else "-",
                      _money(a["max_cost_cents"]), _safe(a["reason"] or "")]
                     for a in data["supplier_attempts"]])
    told = data.get("failure_notice")
    if told:
        print_(("failure reported to the platform " + app.time(told["sent_at"])
                if told["sent_at"] else "failure to report to the platform: due "
                + app.time(told["due_at"]))
               + f"  (attempts {told['attempts']})"
               + (f"  last error {_safe(told['last_error'])}" if told["last_error"] else ""))
    if data["replacements"]:
        print_table(app, "replacements", ["id", "line", "pool", "codes", "state", "asked",
                                          "reason"],
                    [[r["id"], r["line_no"], r["pool"], r["count"], r["state"],
                      app.time(r["created_at"]), _safe(r["reason"])]
                     for r in data["replacements"]])


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
@click.option("--account", default=None, metavar="ACCOUNT",
              help="The top-up account the buyer gave you (a held top-up had none usable); "
                   "checked against the mapping's format, recorded masked in the audit log.")
@json_option
@click.pass_obj
def release_cmd(app: App, order_id: int, account: str | None, as_json: bool) -> None:
    """Let a held or ignored order go on (unmapped lines are mapped again from the shop file).

    An ignored order is released once its SKU is in the shop's items; it meets the shop's
    risk rules then, as it never did. A top-up held for its account needs --account.
    """
    shop_name = orders.shop_of(app.engine, order_id)
    shop = next((s for s in app.config.shops if s.name == shop_name), None)
    target = orders.release(app.engine, order_id, actor=actor(),
                            items=shop.items if shop is not None else None,
                            platform=shop.platform if shop is not None else None,
                            rules=shop.risk if shop is not None else None, zone=app.zone,
                            account=account)
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
        emit_json({"order_id": order_id, "state": OrderState.REJECTED, **counts})
    else:
        click.echo(f"order {order_id} rejected; {counts['returned']} code(s) back in stock, "
                   f"{counts['flagged']} flagged for review")


@orders_group.command("cancel")
@click.argument("order_id", type=int)
@click.option("--reason", default="cancelled by a person", show_default=True)
@json_option
@click.pass_obj
def cancel_cmd(app: App, order_id: int, reason: str, as_json: bool) -> None:
    """Cancel an unshipped order; codes nobody has seen go back to stock.

    The robot only stops delivering: the order stays paid on the platform, and the buyer's
    money comes back only when you refund it there.
    """
    counts = orders.cancel(app.engine, order_id, actor=actor(), reason=reason)
    if as_json:
        emit_json({"order_id": order_id, "state": OrderState.CANCELLED, **counts,
                   "platform": "still paid: refund it on the platform"})
    else:
        click.echo(f"order {order_id} cancelled in the robot; {counts['returned']} code(s) back "
                   f"in stock, {counts['flagged']} flagged for review")
        click.echo("The order is still PAID on the platform: refund the buyer there "
                   "(the robot does not refund).")


@click.command("reveal")
@click.argument("order_id", type=int)
@json_option
@click.pass_obj
def reveal_cmd(app: App, order_id: int, as_json: bool) -> None:
    """Print an order's codes in plain text (audited with your user name)."""
    revealed = orders.reveal(app.engine, app.vault, order_id, actor=actor())
    if as_json:
        emit_json([{"code_id": r.code_id, "line_no": r.line_no, "pool": r.pool,
                    "card_no": printable(r.card_no),
                    "pin": None if r.pin is None else printable(r.pin)} for r in revealed])
        return
    for r in revealed:
        click.echo(f"line {r.line_no}  pool {r.pool}  code id {r.code_id}")
        if r.pin is None:
            click.echo(f"  code:        {printable(r.card_no)}")
        else:
            click.echo(f"  card number: {printable(r.card_no)}")
            click.echo(f"  PIN:         {printable(r.pin)}")
    click.echo(f"(revealed {len(revealed)} code(s) of order {order_id}; this was audited)",
               err=True)


COMMANDS: list[click.Command] = [orders_group, reveal_cmd]
