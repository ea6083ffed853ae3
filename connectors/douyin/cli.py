"""``robot fake douyin``: serve the local fake of the Douyin shop gateway.

The douyin factory returns this command (``fake_command()``). Like every fake it listens on
loopback only, and the credentials it prints are the fake's own test credentials. With
``--push-url`` it also delivers push messages there, signed and retried, once a second.
"""

from __future__ import annotations

import click

from connectors.fakecli import announce, fake_options, listen_on_loopback, serve_until_interrupted


@click.command("douyin")
@fake_options("Paid orders to create at start.")
@click.option("--app-key", default="fake-app-key", show_default=True)
@click.option("--app-secret", default="fake-app-secret", show_default=True)
@click.option("--shop-id", default="77001", show_default=True)
@click.option("--app-type", type=click.Choice(["self", "tool"]), default="self",
              show_default=True,
              help="A self-use app (authorization_self) or a tool app (authorization_code: "
                   "the banner prints a one-time code, POST /__fake__/authorize makes more).")
@click.option("--push-url", default=None,
              help="Deliver push messages to this URL (e.g. the robot's /hooks/SHOP).")
def fake_douyin(port: int, host: str, app_key: str, app_secret: str, shop_id: str,
                app_type: str, seed_orders: int, push_url: str | None, clock_offset: float,
                as_json: bool) -> None:
    """Serve a fake Douyin shop gateway (tokens, orders, coupons, pushes) until interrupted."""
    # Imported here so every other ``robot`` command starts without loading a web server.
    from connectors.douyin.fake import FakeDouyin, PushLoop, PushSender, create_app

    state = FakeDouyin(app_key=app_key, app_secret=app_secret, shop_id=shop_id,
                       app_type=app_type, push_url=push_url, clock_offset=clock_offset)
    ids = state.seed(seed_orders)
    sock, base = listen_on_loopback(host, port)
    info: dict[str, object] = {
        "base_url": base, "control": f"{base}/__fake__/state", "app_key": app_key,
        "app_secret": app_secret, "shop_id": shop_id, "push_url": push_url,
        "app_type": app_type, "auth_code": state.authorize() if app_type == "tool" else None,
        "seeded_order_ids": ids, "skus": [item.to_json() for item in state.catalog()],
    }
    announce(info, title="Fake Douyin shop gateway (test credentials):",
             shown=("base_url", "control", "app_key", "app_secret", "shop_id", "app_type",
                    *(("auth_code",) if app_type == "tool" else ()), "push_url"),
             more=[f"seeded orders: {len(ids)}", *state.banner(base)], as_json=as_json)
    sender = PushSender(state)
    loop = PushLoop(sender)
    loop.start()
    serve_until_interrupted(create_app(state, sender), sock, loop.stop, sender.close)
