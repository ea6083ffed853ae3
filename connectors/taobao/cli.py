"""``robot fake taobao``: the fake Taobao Open Platform (TOP) gateway, served on loopback.

The taobao factory returns this command (``fake_command()``); the robot's ``robot fake`` group
lists it. The credentials it prints are the fake's own test credentials, never real ones.
"""

from __future__ import annotations

import click

from connectors.fakecli import announce, fake_options, listen_on_loopback, serve_until_interrupted


@click.command("taobao")
@fake_options("Paid trades to create at start.")
@click.option("--app-key", default="12345678", show_default=True)
@click.option("--app-secret", default="testsecret", show_default=True)
@click.option("--session", default="test-session", show_default=True)
def fake_taobao(
    port: int,
    host: str,
    app_key: str,
    app_secret: str,
    session: str,
    seed_orders: int,
    clock_offset: float,
    as_json: bool,
) -> None:
    """Serve a fake Taobao Open Platform (TOP) gateway until interrupted."""
    # Imported here so every other ``robot`` command starts without loading a web server.
    from connectors.taobao.fake import FakeTop, create_app

    state = FakeTop(app_key=app_key, app_secret=app_secret, session=session,
                    clock_offset=clock_offset)
    tids = state.seed(seed_orders)
    sock, base = listen_on_loopback(host, port)
    info = {
        "gateway": f"{base}/router/rest",
        "control": f"{base}/__fake__/state",
        "app_key": app_key,
        "app_secret": app_secret,
        "session": session,
        "seeded_tids": [str(tid) for tid in tids],
        "clock_offset_seconds": clock_offset,
    }
    info["skus"] = [item.to_json() for item in state.catalog()]
    announce(info, title="Fake TOP gateway (test credentials):",
             shown=("gateway", "control", "app_key", "app_secret", "session"),
             more=[f"seeded trades: {len(tids)}", *state.banner(base)], as_json=as_json)
    serve_until_interrupted(create_app(state), sock, state.release_hangs)
