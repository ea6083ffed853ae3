"""``robot fake pinduoduo``: serve the fake Pinduoduo (POP) gateway for demos and manual tests.

Registers a sub-command on the ``fake`` group from :mod:`robot.cli.cmd_fake`. Like every
fake it listens on loopback only; the credentials it prints are the fake's own test
credentials, never real ones.
"""

from __future__ import annotations

import click

from robot.cli.cmd_fake import _loopback_socket, fake
from robot.cli.common import emit_json, json_option


@fake.command("pinduoduo")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="TCP port (0 picks a free one).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="A loopback address.")
@click.option("--client-id", default="test-client", show_default=True)
@click.option("--client-secret", default="testsecret", show_default=True)
@click.option("--access-token", default="test-access-token", show_default=True)
@click.option("--refresh-token", default="test-refresh-token", show_default=True)
@click.option(
    "--seed-orders",
    type=click.IntRange(0, 10_000),
    default=0,
    show_default=True,
    help="Paid orders awaiting shipment to create at start.",
)
@json_option
def fake_pinduoduo(
    port: int,
    host: str,
    client_id: str,
    client_secret: str,
    access_token: str,
    refresh_token: str,
    seed_orders: int,
    as_json: bool,
) -> None:
    """Serve a fake Pinduoduo open-platform (POP) gateway until interrupted."""
    # Imported here so every other ``robot`` command starts without loading a web server.
    import uvicorn

    from connectors.pinduoduo.fake import FakePdd, create_app

    sock = _loopback_socket(host, port)
    state = FakePdd(client_id=client_id, client_secret=client_secret,
                    access_token=access_token, refresh_token=refresh_token)
    order_sns = state.seed(seed_orders)
    bound_host, bound_port = sock.getsockname()[:2]
    shown_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    base = f"http://{shown_host}:{bound_port}"
    info = {
        "gateway": f"{base}/api/router",
        "control": f"{base}/__fake__/state",
        "client_id": client_id,
        "client_secret": client_secret,
        "access_token": access_token,
        "refresh_token": refresh_token,
        "authorization_code": state.auth_code,
        "seeded_orders": order_sns,
    }
    if as_json:
        emit_json(info)
    else:
        click.echo("Fake Pinduoduo POP gateway (test credentials):")
        for key in ("gateway", "control", "client_id", "client_secret", "access_token",
                    "refresh_token", "authorization_code"):
            click.echo(f"  {key}: {info[key]}")
        click.echo(f"  seeded orders: {len(order_sns)}")
    config = uvicorn.Config(create_app(state), log_level="warning", lifespan="off", ws="none")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        state.release_hangs()
        sock.close()


COMMANDS: list[click.Command] = []
