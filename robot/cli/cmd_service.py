"""Customer service commands: ``robot orders find|link|notify|redeliver``,
``robot codes find|defects``.

They add to the ``orders`` and ``codes`` groups (exported by ``cmd_orders`` and
``cmd_pools``), so this module exports no top-level command. Codes are shown masked; a code
to look for is read from a hidden prompt or standard input, never from the command line
(where shell history and ``ps`` would keep it).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from robot import support
from robot.cli.cmd_orders import _safe, orders_group
from robot.cli.cmd_pools import codes as codes_group
from robot.cli.common import App, actor, emit_json, json_option, print_table
from robot.errors import UserError


def _link_text(app: App, link: dict[str, Any] | None) -> str:
    if link is None:
        return "none"
    text = f"{link['status']}, {link['views']} view(s), {link['reveals']} reveal(s)"
    if link["last_view_at"] is not None:
        text += f", last {app.time(link['last_view_at'])}"
    return text


@orders_group.command("find")
@click.argument("text")
@json_option
@click.pass_obj
def find_cmd(app: App, text: str, as_json: bool) -> None:
    """Find orders in every shop by order number (or its last 6+ characters), buyer id or
    nick, or robot order id."""
    found = support.find_orders(app.engine, app.vault, text)
    if as_json:
        emit_json({"query": found.query, "ambiguous": found.ambiguous,
                   "matches": found.matches}, app.zone)
    elif not found.matches:
        click.echo(f"no order matches {support.printable(found.query)!r} (searched order "
                   "numbers, buyer ids and nicks, robot order ids; a suffix needs "
                   f"{support.MIN_SUFFIX}+ characters)")
    else:
        if found.ambiguous:
            app.console.print(f"[bold]{len(found.matches)} orders end with "
                              f"{_safe(found.query)}[/bold]: give more of the number, or one "
                              "of these ids")
        print_table(app, "orders", ["id", "shop", "order number", "state", "paid", "buyer",
                                    "codes", "pickup link", "matched"],
                    [[m["id"], _safe(m["shop"]), _safe(m["platform_order_id"]), m["state"],
                      app.time(m["paid_at"]), _safe(m["buyer_id"] or "-"),
                      " ".join(m["codes"]) or "-", _link_text(app, m["link"]), m["matched"]]
                     for m in found.matches])
    if found.ambiguous:  # scripts must not take one of several candidates as the answer
        click.get_current_context().exit(1)


@orders_group.command("link")
@click.argument("order_id", type=int)
@click.option("--new", "new", is_flag=True,
              help="Revoke the current link, make a new one and rewrite the seller memo.")
@json_option
@click.pass_obj
def link_cmd(app: App, order_id: int, new: bool, as_json: bool) -> None:
    """Print the buyer's pickup link for an order (audited), to send to the buyer."""
    from robot.http import links

    shop_name = support_shop(app, order_id)
    shop = next((s for s in app.config.shops if s.name == shop_name), None)
    if shop is not None and not shop.pickup.enabled:
        raise UserError(f"shop {shop_name!r} has the pickup page turned off (pickup.enabled in "
                        f"{shop.file})")
    result = support.pickup_link(app.engine, links.link_key(app.vault), order_id,
                                 public_url=app.config.http.public_url, ttl=links.ttl_of(shop),
                                 new=new, actor=actor())
    if as_json:
        emit_json({"order_id": order_id, "url": result.url, "new": result.made,
                   "revoked": result.revoked, "memo_rewrite_queued": result.memo_queued})
        return
    click.echo(result.url)
    if result.revoked:
        click.echo(f"(revoked {result.revoked} earlier link(s))", err=True)
    if result.memo_queued:
        click.echo("(the seller memo will be rewritten with this link by the running robot)",
                   err=True)


@orders_group.command("notify")
@click.argument("order_id", type=int)
@click.option("--channel", type=click.Choice(["email", "sms"]),
              help="Only this channel (default: every channel the order has a contact for).")
@click.option("--force", is_flag=True,
              help="Send again even where the provider says it took the earlier message.")
@json_option
@click.pass_obj
def notify_cmd(app: App, order_id: int, channel: str | None, force: bool,
               as_json: bool) -> None:
    """Send the buyer's notification again (audited with your user name).

    A notification whose outcome is unknown (the robot stopped mid-send) is first checked
    with a provider that can tell (Aliyun SMS): one it took is marked sent and not sent
    again (unless --force). Otherwise it is sent again under its same key (the same e-mail
    Message-ID / SMS OutId), and any other notification is queued anew.
    """
    from connectors.notifier import Channel
    from robot import notify

    shop_name = support_shop(app, order_id)
    shop = next((s for s in app.config.shops if s.name == shop_name), None)
    only = Channel(channel) if channel else None
    confirmed: list[notify.Confirmed] = []
    if shop is not None and not force:
        notifiers = notify.build_notifiers({shop.name: shop}).get(shop.name, {})
        confirmed = notify.confirm_unknown(app.engine, order_id, notifiers, only,
                                           actor=actor())
    done = notify.resend(app.engine, order_id, shop, only, actor=actor(),
                         skip={c.channel for c in confirmed})
    if as_json:
        emit_json({"order_id": order_id, "queued": [
            {"channel": r.channel.value, "event": r.event, "same_key": r.again} for r in done],
            "confirmed": [{"channel": c.channel.value, "event": c.event,
                           "reference": c.reference} for c in confirmed]})
        return
    for c in confirmed:
        click.echo(f"{c.channel.value}: {c.event} was sent after all ({c.reference}): "
                   "not sent again (--force sends it anyway)")
    for r in done:
        again = " (its earlier outcome was unknown: same key)" if r.again else ""
        click.echo(f"{r.channel.value}: {r.event} queued{again}")
    if done:
        click.echo("(the running robot sends it)", err=True)


def support_shop(app: App, order_id: int) -> str:
    from robot.orders import shop_of

    return shop_of(app.engine, order_id)


@orders_group.command("redeliver")
@click.argument("order_id", type=int)
@click.option("--line", "line_no", type=int, help="Only this line's codes (see orders show).")
@click.option("--code", "code_ids", type=int, multiple=True,
              help="Only this code id (repeatable; see orders show).")
@click.option("--reason", required=True, help="What the buyer reported (kept in the audit log).")
@json_option
@click.pass_obj
def redeliver_cmd(app: App, order_id: int, line_no: int | None, code_ids: tuple[int, ...],
                  reason: str, as_json: bool) -> None:
    """Replace a buyer's bad codes: they become defective (never sold again) and codes from
    the same pool take their place on the pickup page and in the seller memo."""
    done = support.redeliver(app.engine, order_id, reason=reason, actor=actor(),
                             line_no=line_no, code_ids=code_ids)
    if as_json:
        emit_json(done.as_dict())
    elif done.waiting:
        short = ", ".join(f"pool {w['pool']} needs {w['need']}" for w in done.waiting)
        click.echo(f"order {order_id}: {len(done.defective)} code(s) marked defective, but stock "
                   f"is short ({short}): nothing replaced yet. The request waits for stock "
                   "(robot status shows it) and is served once codes are imported.", err=True)
    else:
        click.echo(f"order {order_id}: {len(done.defective)} code(s) marked defective and "
                   f"replaced ({' '.join(map(str, done.replaced))}); the pickup page shows the "
                   "new codes and the seller memo will be rewritten")
    if done.waiting:  # not done yet: scripts must not take it as replaced
        click.get_current_context().exit(1)


@codes_group.command("find")
@click.argument("source", required=False, metavar="[-]")
@json_option
@click.pass_obj
def codes_find_cmd(app: App, source: str | None, as_json: bool) -> None:
    """Which order holds a code (audited). The code is asked for without echo, or read
    from standard input with ``-``; it is never an argument (shell history keeps those)."""
    if source not in (None, "-"):
        raise click.UsageError("give the code on standard input (`-`) or at the prompt, not "
                               "as an argument: shell history and `ps` would keep it")
    if source == "-":
        text = sys.stdin.readline(support.MAX_CODE_CHARS * 4 + 2)
    else:
        text = click.prompt("code", hide_input=True, err=True)
    hits = support.find_code(app.engine, app.vault, text, actor=actor())
    if as_json:
        emit_json([h.as_dict() for h in hits])
        return
    if not hits:
        click.echo("no such code in any pool (looked up by fingerprint; this was audited)")
        return
    print_table(app, "codes", ["code id", "code", "pool", "batch", "state", "order",
                               "order number", "shop", "order state", "line"],
                [[h.code_id, h.masked, h.pool, h.batch_id, h.state, h.order_id or "-",
                  _safe(h.platform_order_id or "-"), _safe(h.shop or "-"),
                  h.order_state or "-", "-" if h.line_no is None else h.line_no]
                 for h in hits])


@codes_group.command("defects")
@json_option
@click.pass_obj
def codes_defects_cmd(app: App, as_json: bool) -> None:
    """Batches with codes buyers reported bad: to claim back from the supplier."""
    rows = support.defects_by_batch(app.engine)
    if as_json:
        emit_json(rows, app.zone)
        return
    if not rows:
        click.echo("no defective codes")
        return
    print_table(app, "defective codes by batch", ["batch", "pool", "supplier", "file",
                                                  "imported", "delivered", "defective"],
                [[r["batch_id"], r["pool"], _safe(r["supplier"] or "-"), _safe(r["file"]),
                  app.time(r["imported_at"]), r["delivered"], r["defective"]]
                 for r in rows])


COMMANDS: list[click.Command] = []
