"""``robot fake youzan``: serve the local fake of Youzan Cloud for demos and manual tests.

The youzan factory returns this command (``fake_command()``); the robot's ``robot fake`` group
lists it. Like every fake it listens on loopback only, and the credentials it prints are the
fake's own test credentials. With ``--push-url`` it also delivers push messages there, signed
and retried as Youzan does, once a second.
"""

from __future__ import annotations

import click

from connectors.fakecli import announce, fake_options, listen_on_loopback, serve_until_interrupted


@click.command("youzan")
@fake_options("Paid trades to create at start.")
@click.option("--client-id", default="fake-client-id", show_default=True)
@click.option("--client-secret", default="fake-client-secret", show_default=True)
@click.option("--kdt-id", default="56232", show_default=True, help="The shop id (grant_id).")
@click.option("--push-url", default=None,
              help="Deliver push messages to this URL (e.g. the robot's /hooks/SHOP).")
def fake_youzan(port: int, host: str, client_id: str, client_secret: str, kdt_id: str,
                seed_orders: int, push_url: str | None, clock_offset: float,
                as_json: bool) -> None:
    """Serve a fake Youzan Cloud (token endpoint, API gateway, pushes) until interrupted."""
    # Imported here so every other ``robot`` command starts without loading a web server.
    from connectors.youzan.fake import FakeYouzan, PushSender, create_app
    from connectors.youzan.fake_push import PushLoop

    state = FakeYouzan(client_id=client_id, client_secret=client_secret, kdt_id=kdt_id,
                       push_url=push_url, clock_offset=clock_offset)
    tids = state.seed(seed_orders)
    sock, base = listen_on_loopback(host, port)
    info: dict[str, object] = {
        "base_url": base,
        "control": f"{base}/__fake__/state",
        "client_id": client_id,
        "client_secret": client_secret,
        "grant_id": kdt_id,
        "push_url": push_url,
        "seeded_tids": tids,
    }
    info["skus"] = [item.to_json() for item in state.catalog()]
    announce(info, title="Fake Youzan Cloud (test credentials):",
             shown=("base_url", "control", "client_id", "client_secret", "grant_id", "push_url"),
             more=[f"seeded trades: {len(tids)}", *state.banner(base)],
             as_json=as_json)
    sender = PushSender(state)
    loop = PushLoop(sender)
    loop.start()
    serve_until_interrupted(create_app(state, sender), sock, loop.stop, sender.close)
