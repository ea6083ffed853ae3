"""``robot fake goofish``: 闲管家 on loopback — its callback endpoint, and its purchases on
the robot's supplier gateway (``--gateway``), signed with the documentation's test
credentials (or yours)."""

from __future__ import annotations

import asyncio

import click

from connectors.fakecli import (
    announce,
    json_option,
    listen_on_loopback,
    loopback_options,
    serve_until_interrupted,
)
from connectors.goofish.fake import (
    TEST_APP_ID,
    TEST_APP_SECRET,
    TEST_MCH_ID,
    TEST_MCH_SECRET,
    Credentials,
    FakeNotifyState,
    GoofishBuyer,
    make_app,
)


@click.command("goofish")
@loopback_options
@json_option
@click.option("--gateway", default="http://127.0.0.1:8080/supply/goofish-main", show_default=True,
              help="The robot's gateway address as registered in 闲管家 (/supply/<shop>).")
@click.option("--app-id", default=TEST_APP_ID, show_default=True)
@click.option("--app-secret", default=TEST_APP_SECRET, show_default=True)
@click.option("--mch-id", default=TEST_MCH_ID, show_default=True)
@click.option("--mch-secret", default=TEST_MCH_SECRET, show_default=True)
@click.option("--fail-callbacks", type=click.IntRange(0, 1000), default=0, show_default=True,
              help="Refuse this many callbacks (HTTP 500) before accepting them.")
def goofish_fake(host: str, port: int, as_json: bool, gateway: str, app_id: str,
                 app_secret: str, mch_id: str, mch_secret: str, fail_callbacks: int) -> None:
    """Serve a fake of 闲管家 buying from the robot as a 虚拟货源 (loopback only)."""
    credentials = Credentials(app_id, app_secret, mch_id, mch_secret)
    state = FakeNotifyState(credentials, fail_next=fail_callbacks)
    sock, url = listen_on_loopback(host, port)
    buyer = GoofishBuyer(gateway, credentials=credentials, notify_base=url,
                         notify_state=state)
    info = {"url": url, "gateway": gateway, "app_id": app_id, "app_secret": app_secret,
            "mch_id": mch_id, "mch_secret": mch_secret}
    more = [f"buy: curl -X POST {url}/__fake__/purchase -d "
            "'{\"goods_no\": \"G1001\", \"quantity\": 1, \"copies\": 2}'",
            f"state: curl {url}/__fake__/state"]
    announce(info, title="闲管家 fake (test credentials, never real ones):",
             shown=("gateway", "app_id", "app_secret", "mch_id", "mch_secret"), more=more,
             as_json=as_json)
    serve_until_interrupted(make_app(state, buyer), sock,
                            lambda: asyncio.run(buyer.aclose()))
