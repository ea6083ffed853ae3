"""``robot fake fulu``: the fake Fulu open-platform gateway (``/api/getway``), on loopback.

The fulu factory returns this command (``fake_command()``). The credentials it prints are the
fake's test credentials (Fulu's public sandbox key and a made-up secret), never real ones.
With ``--callback-url`` it posts order callbacks there, signed and retried as Fulu does.
"""

from __future__ import annotations

import click

from connectors.fakecli import (
    announce,
    clock_offset_option,
    json_option,
    listen_on_loopback,
    loopback_options,
    serve_until_interrupted,
)


@click.command("fulu")
@loopback_options
@clock_offset_option
@json_option
@click.option("--app-key", default=None, help="The app key it accepts (default: Fulu's "
              "public sandbox key).")
@click.option("--app-secret", default=None, help="The app secret (32 characters; default: a "
              "test value).")
@click.option("--balance", "balance_yuan", type=click.FloatRange(0, 10_000_000), default=10_000.0,
              show_default=True, help="The merchant's balance in yuan.")
@click.option("--callback-url", default=None,
              help="Post order callbacks to this URL (e.g. the robot's supplier gateway).")
def fake_fulu(port: int, host: str, clock_offset: float, as_json: bool, app_key: str | None,
              app_secret: str | None, balance_yuan: float, callback_url: str | None) -> None:
    """Serve a fake Fulu open-platform gateway until interrupted."""
    # Imported here so every other ``robot`` command starts without loading a web server.
    from connectors.fulu.fake import CallbackLoop, CallbackSender, create_app
    from connectors.fulu.fake_state import TEST_APP_KEY, TEST_APP_SECRET, FakeFulu

    secret = app_secret or TEST_APP_SECRET
    if len(secret.encode("utf-8")) != 32:
        raise click.BadParameter("32 characters (it is the card codes' AES-256 key too)",
                                 param_hint="--app-secret")
    if callback_url is not None and not callback_url.startswith(("http://", "https://")):
        raise click.BadParameter("an http(s) URL", param_hint="--callback-url")
    state = FakeFulu(app_key=app_key or TEST_APP_KEY, app_secret=secret,
                     balance_cents=round(balance_yuan * 100), callback_url=callback_url,
                     clock_offset=clock_offset)
    sock, base = listen_on_loopback(host, port)
    info: dict[str, object] = {
        "gateway": f"{base}/api/getway",
        "control": f"{base}/__fake__/state",
        "app_key": state.app_key,
        "app_secret": state.app_secret,
        "callback_url": callback_url,
        "balance_yuan": f"{state.balance_cents / 100:.2f}",
        "clock_offset_seconds": clock_offset,
        "products": [item.to_json() for item in state.catalog()],
    }
    announce(info, title="Fake Fulu open platform (test credentials):",
             shown=("gateway", "control", "app_key", "app_secret", "callback_url",
                    "balance_yuan"),
             more=state.banner(base), as_json=as_json)
    sender = CallbackSender(state)
    loop = CallbackLoop(sender)
    loop.start()
    serve_until_interrupted(create_app(state, sender), sock, state.release_hangs, loop.stop,
                            sender.close)
