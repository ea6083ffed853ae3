"""The WeChat connector against its fakes over loopback HTTP, through the robot's real
webhook route (``robot.http.app.build_app``) and outbox, on every supported database.

What must hold: WeChat Pay notifications become orders shipped exactly once with codes from
the mapped pool; a notification sent twice, or retried after a failure, is one order; a
robot unreachable for hours catches up from WeChat Pay's retries; an expired access token is
renewed; throttling, 5xx and "not indexed yet" answers are survived; a refund before
shipping cancels the order and returns its codes; forged or stale notifications change
nothing; the merchant backend's signed posts are an order too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select

from connectors.wechat import WechatConnector, backend_signature
from connectors.wechat.fake import FakeClock, FakeWechat, PaySender
from robot import pipeline
from robot.clock import utcnow
from robot.config import PoolShare, ShopConfig, SkuMapping
from robot.http.app import build_app
from robot.http.context import HttpContext
from robot.outbox import Dispatcher, RetryPolicy
from robot.schema import deliveries, metadata, orders, stock
from robot.shops import DbShopContext, ensure_row
from robot.vault import Vault
from tests.factories import seed_codes
from tests.wechat.helpers import BACKEND_SECRET, SKU, live_fake, make_config, serve

SHOP = "wx"


@dataclass
class Rig:
    engine: Engine
    vault: Vault
    clock: FakeClock
    fake: FakeWechat
    connector: WechatConnector
    shop: ShopConfig
    hook_url: str
    sender: PaySender

    def deliver(self) -> int:
        return self.sender.deliver_due()

    async def ship_all(self) -> None:
        """Allocate everything due, then run the outbox until nothing is left."""
        while await asyncio.to_thread(pipeline.allocate_next, self.engine) is not None:
            pass
        dispatcher = Dispatcher(self.engine, self.vault, {SHOP: self.connector},
                                {SHOP: self.shop},
                                RetryPolicy(max_attempts=10, backoff_initial=0.01,
                                            backoff_max=0.05), worker="test")
        for _ in range(50):
            if not await dispatcher.run_once(now=utcnow() + timedelta(hours=2)):
                await self.connector.aclose()
                return
        raise AssertionError("the outbox did not drain")


def _rig(engine: Engine, vault: Vault, fake_url: str, fake: FakeWechat, clock: FakeClock,
         **overrides: Any) -> Iterator[Rig]:
    config = make_config(fake, fake_url, **overrides)
    shop = ShopConfig(name=SHOP, platform="wechat", file=Path("wx.yaml"),
                      items=[SkuMapping(sku_id=SKU, pools=[PoolShare(pool="p1")])],
                      platform_config=config)
    ensure_row(engine, SHOP)
    connector = WechatConnector(
        config, DbShopContext(engine, vault, SHOP), clock=clock.now,
        transport=httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=0)))
    ctx = HttpContext(engine=engine, vault=vault, shops={SHOP: shop},
                      connectors={SHOP: connector})
    sender = PaySender(fake)
    with serve(build_app(ctx)) as robot_url:
        fake.notify_url = f"{robot_url}/hooks/{SHOP}"
        try:
            yield Rig(engine, vault, clock, fake, connector, shop, fake.notify_url, sender)
        finally:
            sender.close()


@pytest.fixture
def rig(engine: Engine, vault: Vault) -> Iterator[Rig]:
    clock = FakeClock()
    fake = FakeWechat(clock=clock.now)
    seed_codes(engine, vault, "p1", 10)
    with live_fake(fake) as url:
        yield from _rig(engine, vault, url, fake, clock)


def _states(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {str(r.platform_order_id): str(r.state)
                for r in conn.execute(select(orders.c.platform_order_id, orders.c.state))}


def _count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _available(engine: Engine) -> int:
    return _count(engine, stock)  # stock holds exactly the codes free to allocate


def _everything(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    with engine.connect() as conn:
        return {t.name: sorted((tuple(r) for r in conn.execute(select(t))), key=repr)
                for t in metadata.sorted_tables}


def test_paid_notifications_are_shipped_once(rig: Rig) -> None:
    """Notifications (attach JSON, attach pairs, out_trade_no rule) ship once each, with
    codes from the mapped pool, even when sent twice and when WeChat has not indexed yet."""
    a = rig.fake.create_payment(total=990, attach=json.dumps({"sku": SKU, "qty": 1}))
    b = rig.fake.create_payment(total=1980, attach=f"sku={SKU};qty=2")
    c = rig.fake.create_payment(total=3000, out_trade_no="CT-rule-1")
    rig.fake.set_faults(not_indexed_calls=1)
    assert rig.deliver() == 3
    assert {status for _, status in rig.sender.answers} == {200}
    for note in rig.fake.notifications:  # WeChat sends the same notifications again
        note.delivered = False
    assert rig.deliver() == 3
    assert _count(rig.engine, orders) == 3
    asyncio.run(rig.ship_all())
    assert _states(rig.engine) == {a: "shipped", b: "shipped", c: "shipped"}
    assert {oid: p.shipments for oid, p in rig.fake.payments.items()} == {a: 1, b: 1, c: 1}
    assert _count(rig.engine, deliveries) == 1 + 2 + 3
    assert all(p.upload_calls == 2 for p in rig.fake.payments.values())  # 10060001 once
    assert all(p.item_desc and "T0" not in p.item_desc for p in rig.fake.payments.values())


def test_unreachable_robot_catches_up_from_retries(rig: Rig) -> None:
    """Hours of failed deliveries are retried on WeChat's schedule; the order is taken once."""
    oid = rig.fake.create_payment(total=990, attach=json.dumps({"sku": SKU}))
    rig.fake.notify_url = rig.hook_url.replace(f"/hooks/{SHOP}", "/hooks/nope")  # 404
    assert rig.deliver() == 0
    rig.clock.advance(14)
    assert rig.deliver() == 0 and len(rig.sender.answers) == 1  # not due before 15 s
    for _ in range(5):  # 15 s, 30 s, 3 min, 10 min, ... all refused
        rig.clock.advance(timedelta(minutes=20))
        rig.deliver()
    assert _count(rig.engine, orders) == 0
    rig.fake.notify_url = rig.hook_url  # the robot is back
    rig.clock.advance(timedelta(hours=3))
    assert rig.deliver() == 1
    assert rig.sender.answers[-1][1] == 200
    asyncio.run(rig.ship_all())
    assert _states(rig.engine) == {oid: "shipped"}
    assert rig.fake.payments[oid].shipments == 1


def test_expired_token_throttling_and_5xx_are_survived(rig: Rig) -> None:
    """A token expired mid-run is renewed once; 45011 and HTML 502 answers are retried."""
    oid = rig.fake.create_payment(total=990, attach=json.dumps({"sku": SKU}))
    assert rig.deliver() == 1
    asyncio.run(rig.connector.api.tokens.token())
    assert rig.fake.token_grants == 1
    rig.fake.expire_tokens()
    rig.fake.set_faults(fail_next=1, throttle_next=1)
    asyncio.run(rig.ship_all())
    assert _states(rig.engine) == {oid: "shipped"}
    assert rig.fake.payments[oid].shipments == 1
    assert rig.fake.token_grants == 2
    # The renewed token is durable and encrypted: another process reuses it.
    other = WechatConnector(rig.connector.config, DbShopContext(rig.engine, rig.vault, SHOP),
                            clock=rig.clock.now)
    token = asyncio.run(other.api.tokens.token())
    assert rig.fake.token_grants == 2
    assert token not in json.dumps(_everything(rig.engine), default=str)


def test_refund_before_shipping_cancels_and_after_shipping_refunds(rig: Rig) -> None:
    """REFUND.SUCCESS cancels an unshipped order (codes back in stock) and marks a shipped
    one refunded."""
    early = rig.fake.create_payment(total=990, attach=json.dumps({"sku": SKU}))
    late = rig.fake.create_payment(total=990, attach=json.dumps({"sku": SKU}))
    assert rig.deliver() == 2
    asyncio.run(rig.ship_all())
    assert _available(rig.engine) == 8
    early2 = rig.fake.create_payment(total=1980, attach=json.dumps({"sku": SKU, "qty": 2}))
    assert rig.deliver() == 1  # the notification's intake claims the two codes
    assert _available(rig.engine) == 6
    rig.fake.refund(early2)
    rig.fake.refund(late)
    assert rig.deliver() == 2
    states = _states(rig.engine)
    assert states[early2] == "cancelled" and states[late] == "refunded"
    assert states[early] == "shipped"
    assert _available(rig.engine) == 8
    asyncio.run(rig.ship_all())
    assert rig.fake.payments[early2].shipments == 0


def test_forged_and_stale_notifications_change_nothing(rig: Rig) -> None:
    """Altered body, wrong key, stale timestamp: 401 and not a row written."""
    oid = rig.fake.create_payment(total=990, attach=json.dumps({"sku": SKU}))
    note = rig.fake.notification_for(oid)
    body = rig.fake.envelope(note)
    before = _everything(rig.engine)
    other = FakeWechat(apiv3_key=rig.fake.apiv3_key)
    other.serial = rig.fake.serial  # same serial, another RSA key
    attempts = [
        (rig.fake.signed(body, utcnow_aware()), body.replace(b'"id"', b'"id" ', 1)),
        (other.signed(body, utcnow_aware()), body),
        (rig.fake.signed(body, utcnow_aware() - timedelta(minutes=6)), body),
    ]
    with httpx.Client() as client:
        for headers, content in attempts:
            response = client.post(rig.hook_url, content=content, headers=headers)
            assert response.status_code == 401
            assert _everything(rig.engine) == before
        good = client.post(rig.hook_url, content=body,
                           headers=rig.fake.signed(body, utcnow_aware()))
        assert good.status_code == 200
    assert _states(rig.engine) == {oid: "allocated"}


def utcnow_aware() -> datetime:
    """Wall-clock now: the webhook route checks timestamps against the real clock."""
    return datetime.now(UTC)


@pytest.fixture
def backend_rig(engine: Engine, vault: Vault) -> Iterator[Rig]:
    clock = FakeClock()
    fake = FakeWechat(clock=clock.now)
    seed_codes(engine, vault, "p1", 10)
    with live_fake(fake) as url:
        yield from _rig(engine, vault, url, fake, clock, unresolved_lines="backend")


def test_merchant_backend_posts_are_orders(backend_rig: Rig) -> None:
    """With lines from the merchant backend: the bare payment waits, the signed post (sent
    twice) is one order shipped once; a post with a bad signature writes nothing."""
    rig = backend_rig
    oid = rig.fake.create_payment(total=1980)  # no attach, no rule: lines come later
    assert rig.deliver() == 1
    assert _count(rig.engine, orders) == 0
    payment = rig.fake.payments[oid]
    body = json.dumps({"out_trade_no": oid, "transaction_id": payment.transaction_id,
                       "openid": payment.openid, "total": 1980,
                       "lines": [{"sku": SKU, "qty": 2, "title": "VIP"}]}).encode()
    stamp = str(int(utcnow_aware().timestamp()))
    good = {"X-Robot-Timestamp": stamp,
            "X-Robot-Signature": backend_signature(BACKEND_SECRET, stamp, body),
            "Content-Type": "application/json"}
    before = _everything(rig.engine)
    with httpx.Client() as client:
        bad = client.post(rig.hook_url, content=body, headers={
            **good, "X-Robot-Signature": backend_signature("wrong", stamp, body)})
        assert bad.status_code == 401
        assert _everything(rig.engine) == before
        for _ in range(2):
            assert client.post(rig.hook_url, content=body, headers=good).status_code == 200
    assert _count(rig.engine, orders) == 1
    asyncio.run(rig.ship_all())
    assert _states(rig.engine) == {oid: "shipped"}
    assert payment.shipments == 1
    assert _count(rig.engine, deliveries) == 2
