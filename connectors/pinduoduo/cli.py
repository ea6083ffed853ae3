"""``robot fake pinduoduo``: serve the fake Pinduoduo (POP) gateway for demos and manual tests.

The pinduoduo factory returns this command (``fake_command()``); the robot's ``robot fake``
group lists it. Like every fake it listens on loopback only; the credentials it prints are the
fake's own test credentials, never real ones.
"""

from __future__ import annotations

import click

from connectors.fakecli import announce, fake_options, listen_on_loopback, serve_until_interrupted


@click.command("pinduoduo")
@fake_options("Paid orders awaiting shipment to create at start.")
@click.option("--client-id", default="test-client", show_default=True)
@click.option("--client-secret", default="testsecret", show_default=True)
@click.option("--access-token", default="test-access-token", show_default=True)
@click.option("--refresh-token", default="test-refresh-token", show_default=True)
def fake_pinduoduo(
    port: int,
    host: str,
    client_id: str,
    client_secret: str,
    access_token: str,
    refresh_token: str,
    seed_orders: int,
    clock_offset: float,
    as_json: bool,
) -> None:
    """Serve a fake Pinduoduo open-platform (POP) gateway until interrupted."""
    # Imported here so every other ``robot`` command starts without loading a web server.
    from connectors.pinduoduo.fake import FakePdd, create_app

    sock, base = listen_on_loopback(host, port)
    state = FakePdd(client_id=client_id, client_secret=client_secret,
                    access_token=access_token, refresh_token=refresh_token,
                    clock_offset=clock_offset)
    order_sns = state.seed(seed_orders)
    info = {
        "gateway": f"{base}/api/router",
        "control": f"{base}/__fake__/state",
        "client_id": client_id,
        "client_secret": client_secret,
        "access_token": access_token,
        "refresh_token": refresh_token,
        "authorization_code": state.auth_code,
        "seeded_orders": order_sns,
        "clock_offset_seconds": clock_offset,
    }
    info["skus"] = [item.to_json() for item in state.catalog()]
    announce(info, title="Fake Pinduoduo POP gateway (test credentials):",
             shown=("gateway", "control", "client_id", "client_secret", "access_token",
                    "refresh_token", "authorization_code"),
             more=[f"seeded orders: {len(order_sns)}", *state.banner(base)],
             as_json=as_json)
    serve_until_interrupted(create_app(state), sock, state.release_hangs)
