"""Youzan pushes through the robot's real webhook route, on every database: the fake's push
sender posts signed messages to ``POST /hooks/{shop}`` over loopback; replays are one order,
a forged push changes nothing, and every order ships once."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import httpx
from sqlalchemy import Engine, select

from connectors.youzan import YouzanConnector
from connectors.youzan.fake import FakeClock, PushSender
from robot.clock import utcnow
from robot.config import PoolShare, ShopConfig, SkuMapping
from robot.http.app import build_app
from robot.http.context import HttpContext
from robot.outbox import Dispatcher, RetryPolicy
from robot.pipeline import allocate_next
from robot.schema import metadata, orders
from robot.shops import DbShopContext, ensure_row
from robot.vault import Vault
from tests.factories import seed_codes
from tests.youzan.helpers import live_fake, make_config, make_fake, serve

SHOP = "yz-hook"
SKU = "36000009"


def _everything(engine: Engine) -> dict[str, list[str]]:
    with engine.connect() as conn:
        return {t.name: sorted(repr(tuple(r)) for r in conn.execute(select(t)))
                for t in metadata.sorted_tables}


def test_pushes_through_the_webhook_route_ship_once(engine: Engine, vault: Vault) -> None:
    """Signed pushes become orders (replays too are one order); a forged one writes nothing."""
    seed_codes(engine, vault, "p1", 10)
    clock = FakeClock()
    fake = make_fake(clock)
    with live_fake(fake) as base_url:
        config = make_config(base_url)
        shop = ShopConfig(name=SHOP, platform="youzan", file=Path("yz.yaml"),
                          items=[SkuMapping(sku_id=SKU, pools=[PoolShare(pool="p1")])],
                          platform_config=config)
        ensure_row(engine, SHOP)
        transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))
        connector = YouzanConnector(config, DbShopContext(engine, vault, SHOP),
                                    clock=clock.now, transport=transport)
        ctx = HttpContext(engine=engine, vault=vault, shops={SHOP: shop},
                          connectors={SHOP: connector})
        sender = PushSender(fake)
        with serve(build_app(ctx)) as robot_url:
            fake.push_url = f"{robot_url}/hooks/{SHOP}"
            tids = [fake.create_trade(items=[{"title": "card", "price": "9.90", "num": 1,
                                              "sku_id": int(SKU)}]) for _ in range(3)]
            sender.deliver_due()
            assert {answer for _, answer in sender.answers} == {200}

            # the same messages again (Youzan retries when unsure): still three orders
            for message in fake.messages:
                body = fake.push_body(message, send_count=2)
                reply = httpx.post(fake.push_url, content=body,
                                   headers=fake.push_headers(message, body))
                assert reply.status_code == 200
            before = _everything(engine)
            message = fake.messages[-1]
            body = fake.push_body(message).replace(b"E", b"F", 1)
            forged = httpx.post(fake.push_url, content=body,
                                headers=fake.push_headers(message, fake.push_body(message)))
            assert forged.status_code == 401
            assert _everything(engine) == before

            async def ship() -> None:
                while allocate_next(engine):
                    pass
                disp = Dispatcher(engine, vault, {SHOP: connector}, {SHOP: shop},
                                  RetryPolicy(max_attempts=5, backoff_initial=0.01,
                                              backoff_max=0.05), worker="t")
                while await disp.run_once(now=utcnow() + timedelta(hours=1)):
                    pass
                await connector.aclose()

            asyncio.run(ship())
        sender.close()
    with engine.connect() as conn:
        states = dict(conn.execute(select(orders.c.platform_order_id, orders.c.state)).all())
    assert states == dict.fromkeys(tids, "shipped")
    assert [fake.trades[t].shipments for t in tids] == [1, 1, 1]
