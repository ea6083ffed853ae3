"""The Youzan connector against its fake over loopback HTTP, through the real pipeline, on
every supported database: poll-only, push-only, and both together.

What must hold: every paid trade ends shipped exactly once with codes from the mapped pool
(virtual trades Youzan delivered itself get their codes and no second shipment); duplicates
(polled twice, pushed twice, polled and pushed) are one order; a token that expires mid-run
is renewed; throttling and 5xx answers are survived; a refund before shipping cancels the
order and returns its codes; forged pushes change nothing; an outage of hours is caught up.

Push intake is driven the way the robot's webhook route will drive it: ``parse_push``, then
``pipeline.intake`` of each event's order (read with ``fetch_order`` when the event is thin),
and only then the reply.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.base import PushBatch
from connectors.youzan import YouzanConnector
from connectors.youzan.fake import FakeClock, FakeYouzan, PushSender
from connectors.youzan.fake_state import PushMessage
from robot import pipeline
from robot.clock import utcnow
from robot.errors import PushRejected, Retriable
from robot.outbox import Dispatcher, RetryPolicy
from robot.schema import deliveries, orders, stock
from robot.shops import DbShopContext, ensure_row
from robot.vault import Vault
from tests.factories import Shop, seed_codes, sku
from tests.youzan.helpers import live_fake, make_config, make_fake, serve

SKU = 36000001
SHOP = Shop(name="yz", platform="youzan", items=(sku(str(SKU), ("p1", 1)),))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake(clock: FakeClock) -> FakeYouzan:
    return make_fake(clock)


@pytest.fixture
def base_url(fake: FakeYouzan) -> Iterator[str]:
    with live_fake(fake) as url:
        yield url


def _connector(engine: Engine, vault: Vault, base_url: str, clock: FakeClock) -> YouzanConnector:
    ensure_row(engine, SHOP.name)
    return YouzanConnector(make_config(base_url, lag_seconds=30, initial_lookback_minutes=30),
                           DbShopContext(engine, vault, SHOP.name), clock=clock.now)


def _trade(fake: FakeYouzan, num: int = 1, **kwargs: Any) -> str:
    return fake.create_trade(items=[{"title": "VIP card", "price": "9.90", "sku_id": SKU,
                                     "num": num}], **kwargs)


async def _poll(connector: YouzanConnector, engine: Engine, clock: FakeClock,
                cursor: dict[str, Any] | None, *, refunds: bool = False) -> dict[str, Any]:
    """What the daemon's poll job does: steps until caught up, intake of each order."""
    while True:
        step = connector.poll_refunds if refunds else connector.poll
        result = await step(cursor, clock.now())
        for order in result.orders:
            await asyncio.to_thread(pipeline.intake, engine, SHOP, order, actor="poll:yz")
        cursor = dict(result.cursor)
        if not result.more:
            return cursor


async def _push(connector: YouzanConnector, engine: Engine, headers: dict[str, str],
                body: bytes) -> PushBatch:
    """What the webhook route will do: verify, apply every event durably, then reply."""
    batch = connector.parse_push(headers, body, datetime.now(UTC))
    for event in batch.events:
        order = event.order or await connector.fetch_order(event.platform_order_id)
        await asyncio.to_thread(pipeline.intake, engine, SHOP, order, actor="push:yz")
    return batch


def _message_push(fake: FakeYouzan, message: PushMessage) -> tuple[dict[str, str], bytes]:
    body = fake.push_body(message)
    return fake.push_headers(message, body), body


async def _deliver(engine: Engine, vault: Vault, connector: YouzanConnector) -> None:
    """Allocate everything due, then run the outbox until nothing is left (retries included)."""
    while await asyncio.to_thread(pipeline.allocate_next, engine) is not None:
        pass
    dispatcher = Dispatcher(engine, vault, {SHOP.name: connector}, {SHOP.name: SHOP},
                            RetryPolicy(max_attempts=10, backoff_initial=0.01, backoff_max=0.05),
                            worker="test")
    for _ in range(50):
        # Retries are due later in real time; look far enough ahead to run them now.
        if not await dispatcher.run_once(now=utcnow() + timedelta(hours=2)):
            return
    raise AssertionError("the outbox did not drain")


def _states(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {str(r.platform_order_id): str(r.state)
                for r in conn.execute(select(orders.c.platform_order_id, orders.c.state))}


def _count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_poll_only_ships_every_order_once(engine: Engine, vault: Vault, fake: FakeYouzan,
                                          base_url: str, clock: FakeClock) -> None:
    """Polling alone: paid and virtual trades shipped once, refunded one cancelled, codes back,
    throttling, 5xx and a token expiring mid-run all survived, a second poll changes nothing."""
    seed_codes(engine, vault, "p1", 10)
    normal = [_trade(fake), _trade(fake, num=2), _trade(fake)]
    virtual = _trade(fake, virtual=True)
    refunded = _trade(fake)
    _trade(fake, paid=False)
    clock.advance(60)
    connector = _connector(engine, vault, base_url, clock)

    async def scenario() -> None:
        fake.set_faults(throttle=1)
        with pytest.raises(Retriable):
            await _poll(connector, engine, clock, None)
        fake.set_faults(http_500=1)
        with pytest.raises(Retriable):
            await _poll(connector, engine, clock, None)
        cursor = await _poll(connector, engine, clock, None)  # the next scheduled tick
        await asyncio.to_thread(pipeline.allocate_next, engine)
        while await asyncio.to_thread(pipeline.allocate_next, engine) is not None:
            pass
        # The buyer is refunded before we ship; the refund poll cancels the order.
        fake.request_refund(refunded, status="SUCCESS")
        clock.advance(60)
        await _poll(connector, engine, clock, None, refunds=True)
        fake.expire_tokens()  # mid-run: the shipping calls get 4202 first
        fake.set_faults(throttle=1, throttle_shape="500100004")
        await _deliver(engine, vault, connector)
        await _poll(connector, engine, clock, cursor)
        await _poll(connector, engine, clock, None)  # polled twice from scratch: no new order
        await connector.aclose()

    asyncio.run(scenario())
    states = _states(engine)
    assert states == {**dict.fromkeys([*normal, virtual], "shipped"), refunded: "cancelled"}
    assert [fake.trades[t].shipments for t in normal] == [1, 1, 1]
    assert fake.trades[virtual].shipments == 0  # Youzan delivered it; codes still handed over
    assert fake.trades[refunded].shipments == 0
    assert all("****" in (fake.trades[t].memo or "") for t in [*normal, virtual])
    assert _count(engine, deliveries) == 5  # 1 + 2 + 1 + virtual 1; the refunded one's came back
    assert _count(engine, stock) == 5
    assert fake.tokens_issued == 2


def test_push_only_ships_every_order_once(engine: Engine, vault: Vault, fake: FakeYouzan,
                                          base_url: str, clock: FakeClock) -> None:
    """Pushes alone: every message verified and applied; replays are one order; a forged push
    creates nothing; a refund push cancels; the token expiring mid-run is renewed."""
    seed_codes(engine, vault, "p1", 10)
    paid = [_trade(fake), _trade(fake, num=2)]
    virtual = _trade(fake, virtual=True)  # announced by trade_TradePaid only
    refunded = _trade(fake)
    forged_tid = _trade(fake)
    connector = _connector(engine, vault, base_url, clock)

    async def scenario() -> None:
        messages = list(fake.messages)
        for n, message in enumerate(messages):
            headers, body = _message_push(fake, message)
            if message.tid == forged_tid:
                with pytest.raises(PushRejected):
                    await _push(connector, engine, headers, body.replace(b"WAIT", b"WAIT "))
                continue
            if n == 4:
                fake.expire_tokens()
            batch = await _push(connector, engine, headers, body)
            assert b"success" in batch.reply_body
        for message in messages:  # Youzan re-sends: every message a second time
            if message.tid != forged_tid:
                await _push(connector, engine, *_message_push(fake, message))
        while await asyncio.to_thread(pipeline.allocate_next, engine) is not None:
            pass
        seen = len(fake.messages)
        fake.request_refund(refunded, status="SUCCESS")
        for message in fake.messages[seen:]:
            await _push(connector, engine, *_message_push(fake, message))
        await _deliver(engine, vault, connector)
        await connector.aclose()

    asyncio.run(scenario())
    states = _states(engine)
    assert states == {**dict.fromkeys([*paid, virtual], "shipped"), refunded: "cancelled"}
    assert forged_tid not in states
    assert [fake.trades[t].shipments for t in paid] == [1, 1]
    assert fake.trades[virtual].shipments == 0
    assert _count(engine, deliveries) == 4
    assert _count(engine, stock) == 6
    assert fake.tokens_issued == 2


def test_poll_and_push_together_are_one_order_each(engine: Engine, vault: Vault,
                                                   fake: FakeYouzan, base_url: str,
                                                   clock: FakeClock) -> None:
    """The same trades arriving by poll and by push (both orders) are intaken once, shipped
    once."""
    seed_codes(engine, vault, "p1", 10)
    tids = [_trade(fake) for _ in range(3)] + [_trade(fake, virtual=True)]
    clock.advance(60)
    connector = _connector(engine, vault, base_url, clock)

    async def scenario() -> None:
        first_half = [m for m in fake.messages if m.tid in tids[:2]]
        for message in first_half:
            await _push(connector, engine, *_message_push(fake, message))
        await _poll(connector, engine, clock, None)
        for message in fake.messages:
            await _push(connector, engine, *_message_push(fake, message))
        await _deliver(engine, vault, connector)
        await connector.aclose()

    asyncio.run(scenario())
    assert _states(engine) == dict.fromkeys(tids, "shipped")
    assert [fake.trades[t].shipments for t in tids] == [1, 1, 1, 0]
    assert _count(engine, deliveries) == 4


def test_outage_of_hours_is_caught_up_with_nothing_missed(engine: Engine, vault: Vault,
                                                         fake: FakeYouzan, base_url: str,
                                                         clock: FakeClock) -> None:
    """The robot was down for 8 hours (and its token expired meanwhile): the next poll walks
    window after window to now and every trade paid during the outage ships once."""
    seed_codes(engine, vault, "p1", 20)
    connector = _connector(engine, vault, base_url, clock)

    async def scenario() -> list[str]:
        cursor = await _poll(connector, engine, clock, None)
        tids = []
        for _ in range(8):
            clock.advance(timedelta(minutes=59))
            tids.append(_trade(fake))
        fake.expire_tokens()
        clock.advance(timedelta(minutes=5))
        await _poll(connector, engine, clock, cursor)
        await _deliver(engine, vault, connector)
        await connector.aclose()
        return tids

    tids = asyncio.run(scenario())
    assert _states(engine) == dict.fromkeys(tids, "shipped")
    assert [fake.trades[t].shipments for t in tids] == [1] * 8
    assert fake.calls.count("youzan.trades.sold.get") >= 8


def test_fake_push_sender_reaches_a_receiver_that_acks_only_after_intake(
        engine: Engine, vault: Vault, fake: FakeYouzan, base_url: str,
        clock: FakeClock) -> None:
    """Over loopback the fake posts signed messages to a receiver doing the route's work;
    a non-success answer (the database was down) is retried later with sendCount + 1, and the
    order exists exactly once whatever the number of deliveries."""
    seed_codes(engine, vault, "p1", 5)
    ensure_row(engine, SHOP.name)
    received: list[dict[str, Any]] = []
    failing = {"left": 1}

    async def hook(request: Request) -> Response:
        body = await request.body()
        payload = json.loads(body)
        received.append(payload)
        connector = YouzanConnector(make_config(base_url),
                                    DbShopContext(engine, vault, SHOP.name), clock=clock.now)
        try:
            try:
                batch = connector.parse_push(dict(request.headers), body, datetime.now(UTC))
            except PushRejected:
                return Response(b'{"code":1,"msg":"bad sign"}', status_code=403)
            if failing["left"] and batch.events:
                failing["left"] -= 1  # the effect could not be made durable: no success reply
                return Response(b'{"code":1,"msg":"try later"}', status_code=500)
            for event in batch.events:
                order = event.order or await connector.fetch_order(event.platform_order_id)
                await asyncio.to_thread(pipeline.intake, engine, SHOP, order, actor="push:yz")
            return Response(batch.reply_body, status_code=batch.reply_status,
                            media_type=batch.reply_content_type)
        finally:
            await connector.aclose()

    receiver = Starlette(routes=[Route("/hooks/yz", hook, methods=["POST"])])
    with serve(receiver) as hook_url:
        fake.push_url = f"{hook_url}/hooks/yz"
        fake.publish_test_message()
        tid = _trade(fake)
        sender = PushSender(fake)
        try:
            sender.deliver_due()
            assert _states(engine) == {tid: "received"}
            pending = [m for m in fake.messages if not m.delivered]
            assert [m.topic for m in pending] == ["trade_TradePaid"]  # the one answered 500
            assert sender.deliver_due() == 0  # not due yet: Youzan waits before retrying
            clock.advance(15)
            assert sender.deliver_due() == 1
        finally:
            sender.close()
    assert _states(engine) == {tid: "received"}
    assert all(m.delivered for m in fake.messages)
    paid = [p for p in received if p.get("type") == "trade_TradePaid"]
    assert [p["sendCount"] for p in paid] == [1, 2]
    assert len({p["msg_id"] for p in paid}) == 1
    assert received[0]["test"] is True
    topics = [p.get("type") for p in received if not p.get("test")]
    assert "trade_TradeBuyerPay" in topics
