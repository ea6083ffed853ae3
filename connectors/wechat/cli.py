"""``robot fake wechat``: serve the local fake of ``api.weixin.qq.com`` and WeChat Pay.

The wechat factory returns this command (``fake_command()``); the robot's ``robot fake`` group
lists it. Like every fake it listens on loopback only, and the keys and credentials it prints
are the fake's own test values, generated at start (an RSA key pair, an APIv3 key). With
``--notify-url`` it also delivers WeChat Pay notifications there, signed, encrypted and retried
as WeChat Pay does, once a second.
"""

from __future__ import annotations

import click

from connectors.fakecli import announce, fake_options, listen_on_loopback, serve_until_interrupted


@click.command("wechat")
@fake_options("Paid payments to create at start.")
@click.option("--appid", default="wxfakeappid000001", show_default=True)
@click.option("--app-secret", default="fake-app-secret", show_default=True)
@click.option("--mchid", default="1900000109", show_default=True)
@click.option("--seed-sku", default="GAME-50", show_default=True,
              help="The SKU the seeded payments carry in attach.")
@click.option("--notify-url", default=None,
              help="Deliver WeChat Pay notifications to this URL (the robot's /hooks/SHOP).")
def fake_wechat(port: int, host: str, appid: str, app_secret: str, mchid: str,
                seed_orders: int, seed_sku: str, notify_url: str | None, clock_offset: float,
                as_json: bool) -> None:
    """Serve a fake WeChat (stable_token, shipping-info APIs, Pay notifications)."""
    # Imported here so every other ``robot`` command starts without loading a web server.
    import json

    from connectors.wechat.fake import FakeWechat, PaySender, create_app
    from connectors.wechat.fake_pay import PayLoop

    state = FakeWechat(appid=appid, app_secret=app_secret, mchid=mchid, notify_url=notify_url,
                       clock_offset=clock_offset)
    seeded = [state.create_payment(attach=json.dumps({"sku": seed_sku, "qty": 1}))
              for _ in range(seed_orders)]
    sock, base = listen_on_loopback(host, port)
    info: dict[str, object] = {
        "base_url": base,
        "control": f"{base}/__fake__/state",
        "appid": appid,
        "app_secret": app_secret,
        "mchid": mchid,
        "apiv3_key": state.apiv3_key,
        "wechatpay_serial": state.serial,
        "wechatpay_public_key_pem": state.public_key_pem,
        "notify_url": notify_url,
        "seeded_out_trade_nos": seeded,
        "clock_offset_seconds": clock_offset,
    }
    info["skus"] = [item.to_json() for item in state.catalog()]
    announce(info, title="Fake WeChat (test credentials):",
             shown=("base_url", "control", "appid", "app_secret", "mchid", "apiv3_key",
                    "wechatpay_serial", "notify_url"),
             more=[f"public key PEM: GET {base}/__fake__/keys",
                   f"seeded payments: {len(seeded)}", *state.banner(base)], as_json=as_json)
    sender = PaySender(state)
    loop = PayLoop(sender)
    loop.start()
    serve_until_interrupted(create_app(state, sender), sock, loop.stop, sender.close)
