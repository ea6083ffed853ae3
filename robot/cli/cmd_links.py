"""``robot orders revoke-link``: end an order's pickup links (and optionally issue a new one).

Adds a command to the ``orders`` group; the group itself is exported by ``cmd_orders``, so
this module exports no top-level command.
"""

from __future__ import annotations

import click

from robot.cli.cmd_orders import orders_group
from robot.cli.common import App, actor, emit_json, json_option


@orders_group.command("revoke-link")
@click.argument("order_id", type=int)
@click.option("--new", "issue_new", is_flag=True,
              help="Issue a fresh link at once and print it (to send to the buyer).")
@json_option
@click.pass_obj
def revoke_link_cmd(app: App, order_id: int, issue_new: bool, as_json: bool) -> None:
    """Revoke every live pickup link of an order (audited)."""
    from robot import support
    from robot.http import links
    from robot.orders import shop_of

    url = None
    if issue_new:  # the same as `robot orders link --new`: the memo is rewritten too
        shop_name = shop_of(app.engine, order_id)
        shop = next((s for s in app.config.shops if s.name == shop_name), None)
        made = support.pickup_link(app.engine, links.link_key(app.vault), order_id,
                                   public_url=app.config.http.public_url,
                                   ttl=links.ttl_of(shop), new=True, actor=actor())
        revoked, url = made.revoked, made.url
    else:
        shop_of(app.engine, order_id)  # UserError if there is no such order
        revoked = links.revoke(app.engine, order_id, actor=actor())
    if as_json:
        emit_json({"order_id": order_id, "revoked": revoked, "new_url": url})
        return
    click.echo(f"order {order_id}: revoked {revoked} link(s)")
    if url:
        click.echo(url)


COMMANDS: list[click.Command] = []
