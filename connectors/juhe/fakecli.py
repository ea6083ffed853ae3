"""``robot fake juhe``: Juhe's fake on loopback, with its test credentials and products."""

from __future__ import annotations

import click
import httpx

from connectors.fakecli import announce, fake_options, listen_on_loopback, serve_until_interrupted
from connectors.fakekit import DeliveryLoop
from connectors.juhe import protocol as p
from connectors.juhe.fake import TEST_KEY, TEST_OPENID, JuheFakeState, make_app


@click.command("juhe")
@fake_options("Ignored: Juhe takes no buyer orders (it is a supplier).")
@click.option("--openid", default=TEST_OPENID, show_default=True, help="The OpenID it accepts.")
@click.option("--key", "app_key", default=TEST_KEY, show_default=True,
              help="The mobile top-up AppKey it accepts.")
@click.option("--callback-url", default=None, help="Where it posts its callbacks.")
@click.option("--settle-seconds", type=click.FloatRange(0, 86400), default=30.0,
              show_default=True, help="How long a top-up stays processing.")
def juhe_fake(host: str, port: int, seed_orders: int, clock_offset: float, as_json: bool,
              openid: str, app_key: str, callback_url: str | None,
              settle_seconds: float) -> None:
    """Serve a fake of Juhe's mobile top-up API (loopback only)."""
    state = JuheFakeState(openid=openid, key=app_key, callback_url=callback_url,
                          settle_seconds=settle_seconds, clock_offset_seconds=clock_offset)
    sock, url = listen_on_loopback(host, port)
    info = {"url": url, "base_url": url, "openid": openid, "key": app_key,
            "callback_url": callback_url or "(none: pass --callback-url)",
            "products": [f"{p.product_id(f)} ({state.price(f) / 100:.2f} yuan)"
                         for f in p.FACE_VALUES]}
    more = [f"product: {item}" for item in info["products"]]
    more += [f"state: curl {url}/__fake__/state",
             f"faults: curl -X POST {url}/__fake__/faults -d '{{\"accept_then_fail\": 1}}'"]
    announce(info, title="Juhe fake (test credentials, never real ones):",
             shown=("base_url", "openid", "key", "callback_url"), more=more, as_json=as_json)
    client = httpx.Client(timeout=5.0)
    loop = DeliveryLoop(lambda: state.deliver_callbacks(client), name="juhe-callbacks")
    loop.start()
    serve_until_interrupted(make_app(state), sock, loop.stop, client.close)
