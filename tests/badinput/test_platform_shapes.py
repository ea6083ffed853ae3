"""Bad-input catalogue (issue #8): platforms answering in unexpected shapes.

Each of the four real connectors runs against its fake over loopback HTTP, through the real
intake (:func:`robot.poller.poll_shop` for the polled platforms, ``parse_push`` +
:func:`robot.poller.apply_events` for WeChat, exactly as ``/hooks/<shop>`` does), allocation
and write-back, on every configured database. The fakes bend one order's JSON
(``corrupt_order``: a field dropped, null, or a huge number written as a string) or replace
a whole answer by an HTML page or truncated JSON (``garble_answers``).

What must hold ("the order is parked with a reason, the shop keeps going"):

* one malformed order is recorded ``held`` with a reason naming the field or problem, gets
  no code and no write-back; the other orders of the same poll ship once; the shop is not
  paused; once the platform sends it readable again it ships once;
* a whole unreadable answer fails that poll as Retriable (a push is refused with a 4xx, so
  the platform sends it again), writes nothing, keeps the cursor; the next poll takes
  everything in;
* an order whose id itself is unreadable cannot be parked (see
  :func:`test_order_with_unreadable_id_is_reported_and_the_shop_goes_on`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import pytest
from sqlalchemy import Engine, func, select
from structlog.testing import capture_logs

from connectors.base import Connector
from connectors.common.shapes import HUGE_NUMBER
from connectors.plugin import HasHarness
from connectors.wechat.crypto import backend_signature
from robot import pipeline, poller, shops
from robot.clock import utcnow
from robot.errors import PushRejected, Retriable
from robot.http.hooks import rejection_status
from robot.outbox import Dispatcher, RetryPolicy
from robot.registry import discover
from robot.schema import audit_log, deliveries, order_lines, orders, outbox, shop_state
from robot.vault import Vault
from tests.badinput.snapshot import snapshot
from tests.factories import Shop, seed_codes, sku
from tests.wechat.helpers import BACKEND_SECRET, SKU, UNIT


class ShapeFake(Protocol):
    """The shape-fault controls every platform fake has."""

    def corrupt_order(self, order_id: Any, path: str, how: str) -> None: ...
    def garble_answers(self, how: str, count: int = 1) -> None: ...
    def clear_corruption(self, order_id: Any = None) -> None: ...


@dataclass(frozen=True)
class Platform:
    """How to drive one platform's harness for these tests."""

    name: str
    #: how -> (path into the order's JSON on the fake, words the parked reason must contain)
    fields: Mapping[str, tuple[str, str]]
    id_path: str  # where the order's own id sits in that JSON
    pushed: bool = False  # orders arrive by push (WeChat), not by polling


PLATFORMS = {
    "taobao": Platform("taobao", {"drop": ("status", "no status"),
                                  "null": ("orders.order.0.num", "num is not a number"),
                                  "huge": ("orders.order.0.num", "quantity")},
                       id_path="tid"),
    "pinduoduo": Platform("pinduoduo", {"drop": ("order_status", "no order_status"),
                                        "null": ("item_list", "no order lines"),
                                        "huge": ("item_list.0.goods_count", "quantity")},
                          id_path="order_sn"),
    "youzan": Platform("youzan", {"drop": ("order_info.status", "status"),
                                  "null": ("orders.0.num", "num None is not a positive"),
                                  "huge": ("orders.0.num", "quantity")},
                       id_path="order_info.tid"),
    "wechat": Platform("wechat", {"drop": ("amount.total", "amount.total"),
                                  "null": ("amount.total", "amount.total"),
                                  "huge": ("amount.total", "amount.total")},
                       id_path="out_trade_no", pushed=True),
}
DEADLINE = 30.0


class Rig:
    """One platform's fake on loopback, its connector, a shop mapping its SKU to ``cards``."""

    def __init__(self, platform: Platform, harness: Any, engine: Engine, vault: Vault) -> None:
        self.platform = platform
        self.h = harness
        self.engine = engine
        self.vault = vault
        self.shop = Shop(name=f"bad-{platform.name}", platform=platform.name,
                         items=(sku(harness.sku_id, ("cards", 1)),))
        shops.ensure_row(engine, self.shop.name)

    # -- the platform side ---------------------------------------------------------------

    @property
    def fake(self) -> ShapeFake:
        name = self.platform.name
        fake: ShapeFake = (self.h.top if name == "taobao" else
                           self.h.state if name == "pinduoduo" else self.h.fake)
        return fake

    def key(self, oid: str) -> Any:
        return int(oid) if self.platform.name == "taobao" else oid

    def order(self) -> str:
        return self.h.create_paid_order(quantity=1)

    def corrupt(self, oid: str, path: str, how: str) -> None:
        self.fake.corrupt_order(self.key(oid), path, how)

    def now(self) -> datetime:
        return self.h.clock.now() if self.platform.name == "youzan" else datetime.now(UTC)

    def shipments(self, oid: str) -> int:
        return int(self.h.shipments(oid))

    # -- the robot side ------------------------------------------------------------------

    def run(self, work: Any) -> Any:
        async def main() -> Any:
            connector = self.h.connector()
            try:
                return await work(connector)
            finally:
                await connector.aclose()
        return asyncio.run(main())

    def poll(self) -> poller.PollOutcome:
        """One scheduled poll of the shop (the daemon's call)."""
        assert not self.platform.pushed
        outcome: poller.PollOutcome = self.run(
            lambda c: poller.poll_shop(self.engine, self.shop, c, "poll", now=self.now))
        return outcome

    def push(self, oid: str) -> None:
        """WeChat Pay delivers the payment notification of ``oid`` (what /hooks/ does)."""
        note = self.h.fake.notification_for(oid)
        body = self.h.fake.envelope(note)
        self._apply(self.h.fake.signed(body, datetime.now(UTC)), body)

    def backend_post(self, oid: str) -> None:
        """The merchant's mini-program backend posts the paid order (WeChat push shape 2)."""
        payment = self.h.fake.payments[oid]
        body = json.dumps({"out_trade_no": oid, "transaction_id": payment.transaction_id,
                           "openid": payment.openid, "total": payment.total,
                           "lines": [{"sku": SKU, "qty": payment.total // UNIT}],
                           "status": "paid"}).encode()
        stamp = str(int(time.time()))
        self._apply({"X-Robot-Timestamp": stamp,
                     "X-Robot-Signature": backend_signature(BACKEND_SECRET, stamp, body)}, body)

    def _apply(self, headers: Mapping[str, str], body: bytes) -> None:
        async def work(connector: Connector) -> None:
            batch = connector.parse_push(headers, body, datetime.now(UTC))
            await poller.apply_events(self.engine, self.shop, connector, batch.events)
        self.run(work)

    def take_in(self, oids: Sequence[str]) -> None:
        """The platform's normal way of handing these orders over (a poll, or pushes)."""
        if self.platform.pushed:
            for oid in oids:
                self.push(oid)
        else:
            outcome = self.poll()
            assert outcome.ok, outcome.error

    def ship_all(self) -> None:
        """Allocate and write back everything due, until nothing is left or the deadline."""
        async def work(connector: Connector) -> None:
            disp = Dispatcher(self.engine, self.vault, {self.shop.name: connector},
                              {self.shop.name: self.shop},
                              RetryPolicy(max_attempts=6, backoff_initial=0.001,
                                          backoff_max=0.001), worker="badinput")
            deadline = time.monotonic() + DEADLINE
            later = utcnow()
            while time.monotonic() < deadline:
                while pipeline.allocate_next(self.engine):
                    pass
                later += timedelta(hours=1)  # retries are due as the dispatcher's time moves
                if not await disp.run_once(now=later):
                    return
        self.run(work)

    # -- what the database says ----------------------------------------------------------

    def row(self, oid: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(select(orders).where(orders.c.shop == self.shop.name,
                                                     orders.c.platform_order_id == oid)).first()

    def count(self, table: Any, oid: str) -> int:
        row = self.row(oid)
        assert row is not None
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)
                                    .where(table.c.order_id == row.id)).scalar_one())

    def paused(self) -> bool:
        with self.engine.connect() as conn:
            return bool(conn.execute(select(shop_state.c.paused)
                                     .where(shop_state.c.shop == self.shop.name)).scalar())

    def cursor(self) -> dict[str, Any] | None:
        return shops.load_cursor(self.engine, self.shop.name, "poll")

    def revive(self, oid: str) -> None:
        """The platform shows ``oid`` again, readable (modified later / the backend posts)."""
        name = self.platform.name
        if name == "taobao":
            self.h.top.touch(int(oid))
        elif name == "pinduoduo":
            # Inside the next window, which ends ``lag_seconds`` (180 s) before now.
            self.h.state.touch(oid, when=datetime.now(UTC) - timedelta(minutes=4))
        elif name == "youzan":
            self.h.clock.advance(5)
            self.h.fake.touch(oid)
        if self.platform.pushed:
            self.backend_post(oid)
            return
        # A poll in the same wall-clock second as the last one has an empty window (it is
        # caught up): poll until the parked order has been read again, or the deadline.
        deadline = time.monotonic() + DEADLINE
        while self.row(oid).platform_status == pipeline.UNREADABLE:
            assert time.monotonic() < deadline, "the readable order never came back"
            self.take_in([oid])


@pytest.fixture(params=sorted(PLATFORMS))
def rig(request: pytest.FixtureRequest, engine: Engine, vault: Vault) -> Iterator[Rig]:
    platform = PLATFORMS[request.param]
    seed_codes(engine, vault, "cards", 10)
    factory = discover().factories[platform.name]
    assert isinstance(factory, HasHarness)
    made = factory.contract_harness()
    assert made is not None
    with made as harness:
        yield Rig(platform, harness, engine, vault)


@pytest.mark.parametrize("how", ["drop", "null", "huge"])
def test_malformed_order_is_parked_and_the_rest_ship(rig: Rig, how: str) -> None:
    """One order with a field missing/null/huge is held with a reason naming it, gets no code
    and no write-back, the other orders ship once, the shop is not paused; readable again,
    it ships once."""
    path, words = rig.platform.fields[how]
    first, bad, last = rig.order(), rig.order(), rig.order()
    rig.corrupt(bad, path, how)

    with capture_logs() as logs:
        rig.take_in([first, bad, last])
    rig.ship_all()

    parked = rig.row(bad)
    assert parked is not None, "the malformed order was dropped instead of parked"
    assert parked.state == "held"
    assert parked.reason.startswith(pipeline.UNREADABLE_REASON) and words in parked.reason
    assert HUGE_NUMBER not in parked.reason  # the reason names the problem, not 30 digits
    assert rig.count(deliveries, bad) == 0 and rig.count(outbox, bad) == 0
    assert rig.shipments(bad) == 0
    assert [rig.row(o).state for o in (first, last)] == ["shipped", "shipped"]
    assert [rig.shipments(o) for o in (first, last)] == [1, 1]
    assert not rig.paused()
    assert [e["platform_order_id"] for e in logs if e["event"] == "order_unreadable"] == [bad]

    rig.fake.clear_corruption(rig.key(bad))
    rig.revive(bad)
    rig.ship_all()
    assert rig.row(bad).state == "shipped"
    assert rig.shipments(bad) == 1
    assert rig.count(deliveries, bad) == 1 and rig.count(order_lines, bad) == 1
    assert [rig.shipments(o) for o in (first, last)] == [1, 1]


def test_order_with_unreadable_id_is_reported_and_the_shop_goes_on(rig: Rig) -> None:
    """An order whose own id is missing cannot be parked: each time a poll (or push) sees it,
    it is logged as ``order_unidentifiable`` (shop and problem only, no platform data) and
    appended to the audit log (``robot audit`` shows it), while the other orders ship and
    the shop keeps polling."""
    good, bad = rig.order(), rig.order()
    rig.corrupt(bad, rig.platform.id_path, "drop")

    with capture_logs() as logs:
        rig.take_in([good, bad])
    rig.ship_all()

    assert rig.row(good).state == "shipped" and rig.shipments(good) == 1
    assert rig.row(bad) is None and rig.shipments(bad) == 0
    # Overlapping poll windows may see the row more than once; each sighting is reported.
    reported = [e for e in logs if e["event"] == "order_unidentifiable"]
    assert reported
    for event in reported:
        assert event["shop"] == rig.shop.name and event["problem"]
        assert set(event) <= {"event", "log_level", "shop", "platform", "problem", "id_length"}
    with rig.engine.connect() as conn:
        audited = conn.execute(select(audit_log.c.details)
                               .where(audit_log.c.action == "unidentifiable_order")).scalars().all()
    assert len(audited) == len(reported)
    assert all(json.loads(d)["shop"] == rig.shop.name for d in audited)
    assert not rig.paused()
    with rig.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(orders)).scalar_one() == 1


@pytest.mark.parametrize("how", ["html", "truncated"])
def test_unreadable_answer_fails_the_poll_and_loses_nothing(rig: Rig, how: str) -> None:
    """A whole answer that is an HTML page or cut-off JSON fails the poll as Retriable (a
    push is refused with a 4xx, so the platform resends it), writes nothing and keeps the
    cursor; when the platform answers properly again every order is taken in and ships once."""
    oids = [rig.order(), rig.order()]
    before = snapshot(rig.engine)
    if rig.platform.pushed:
        rig.fake.garble_answers(how, count=len(oids))
        for oid in oids:
            with pytest.raises(PushRejected) as refused:
                rig.push(oid)
            assert 400 <= rejection_status(refused.value) < 500  # WeChat Pay resends
    else:
        rig.fake.garble_answers(how, count=50)  # more than any connector's own retries
        with pytest.raises(Retriable):
            rig.run(lambda c: c.poll(rig.cursor(), rig.now()))
        outcome = rig.poll()
        assert not outcome.ok and not outcome.paused and outcome.created == 0
    after = snapshot(rig.engine)
    assert {table for table in after if after[table] != before[table]} <= {"shop_state"}
    assert rig.cursor() is None  # never advanced past orders it has not seen
    assert not rig.paused()

    rig.fake.clear_corruption()
    rig.take_in(oids)
    rig.ship_all()
    assert [rig.row(o).state for o in oids] == ["shipped", "shipped"]
    assert [rig.shipments(o) for o in oids] == [1, 1]
