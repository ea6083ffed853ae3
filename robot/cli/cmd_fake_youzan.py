"""``robot fake youzan``: serve the local fake of Youzan Cloud for demos and manual tests.

Registers a sub-command on the ``fake`` group (exported by :mod:`robot.cli.cmd_fake`). Like
every fake it listens on loopback only, and the credentials it prints are the fake's own test
credentials. With ``--push-url`` it also delivers push messages there, signed and retried as
Youzan does, once a second.
"""

from __future__ import annotations

import click

from robot.cli.cmd_fake import _loopback_socket, fake
from robot.cli.common import emit_json, json_option


@fake.command("youzan")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="TCP port (0 picks a free one).")
@click.option("--host", default="127.0.0.1", show_default=True, help="A loopback address.")
@click.option("--client-id", default="fake-client-id", show_default=True)
@click.option("--client-secret", default="fake-client-secret", show_default=True)
@click.option("--kdt-id", default="56232", show_default=True, help="The shop id (grant_id).")
@click.option("--seed-orders", type=click.IntRange(0, 10_000), default=0, show_default=True,
              help="Paid trades to create at start.")
@click.option("--push-url", default=None,
              help="Deliver push messages to this URL (e.g. the robot's /hooks/SHOP).")
@json_option
def fake_youzan(port: int, host: str, client_id: str, client_secret: str, kdt_id: str,
                seed_orders: int, push_url: str | None, as_json: bool) -> None:
    """Serve a fake Youzan Cloud (token endpoint, API gateway, pushes) until interrupted."""
    # Imported here so every other ``robot`` command starts without loading a web server.
    import uvicorn

    from connectors.youzan.fake import FakeYouzan, PushSender, create_app
    from connectors.youzan.fake_push import PushLoop

    state = FakeYouzan(client_id=client_id, client_secret=client_secret, kdt_id=kdt_id,
                       push_url=push_url)
    tids = state.seed(seed_orders)
    sock = _loopback_socket(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    info = {
        "base_url": f"http://{shown}:{bound_port}",
        "control": f"http://{shown}:{bound_port}/__fake__/state",
        "client_id": client_id,
        "client_secret": client_secret,
        "grant_id": kdt_id,
        "push_url": push_url,
        "seeded_tids": tids,
    }
    if as_json:
        emit_json(info)
    else:
        click.echo("Fake Youzan Cloud (test credentials):")
        for key in ("base_url", "control", "client_id", "client_secret", "grant_id", "push_url"):
            click.echo(f"  {key}: {info[key]}")
        click.echo(f"  seeded trades: {len(tids)}")
    sender = PushSender(state)
    loop = PushLoop(sender)
    loop.start()
    config = uvicorn.Config(create_app(state, sender), log_level="warning", lifespan="off",
                            ws="none")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        loop.stop()
        sender.close()
        sock.close()


COMMANDS: list[click.Command] = []
