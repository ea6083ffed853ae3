"""The channel contract every connector passes, whatever its platform.

It pins what the core relies on: paid orders come back normalized and repeatable, shipping
is exactly-once with "already shipped" reported as such, closed orders are refused as
NotShippable, memos land, credentials problems are Fatal, and a forged push is refused.

Use it from a plugin's own tests: subclass :class:`ChannelContract` (and, for a fake that
speaks the wire protocol and records calls, :class:`WireContract`) in a ``test_*.py`` module
and give the class a ``harness`` fixture yielding your
:class:`~connectors.testing.harness.ChannelHarness`::

    import pytest
    from connectors.testing.channel import ChannelContract, WireContract
    from my_plugin.harness import make_harness

    class TestMyChannel(ChannelContract, WireContract):
        @pytest.fixture
        def harness(self):
            with make_harness() as h:
                yield h

This module imports pytest (a test dependency) and nothing from the robot.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest

from connectors.base import Connector, Order, PlatformStatus, Shipment, ShipOutcome
from connectors.errors import Fatal, NotShippable, PushRejected
from connectors.testing.harness import ChannelHarness, WireHarness

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def _collect(connector: Connector, wanted: str) -> tuple[Order | None, object]:
    """Poll until the cursor is current; return the wanted order (if seen) and the cursor."""
    cursor = None
    found = None
    for _ in range(200):
        result = await connector.poll(cursor, datetime.now(UTC))
        json.dumps(dict(result.cursor))  # the cursor must be storable as JSON
        for order in result.orders:
            if order.platform_order_id == wanted:
                found = order
        cursor = dict(result.cursor)
        if not result.more:
            break
    await connector.aclose()
    return found, cursor


def _shipment(order: Order) -> Shipment:
    return Shipment(order=order, line_ids=tuple(ln.line_id for ln in order.lines),
                    memo="[robot] 12****89", item_desc="contract x1", masked_codes=("12****89",))


class ChannelContract:
    """The channel contract; a subclass provides the ``harness`` fixture."""

    def test_paid_order_is_found_and_normalized(self, harness: ChannelHarness) -> None:
        """A paid order comes back from polling (or push) with its SKU and quantity."""
        oid = harness.create_paid_order(quantity=2)
        push = harness.signed_push(oid)
        if push is not None:
            headers, body = push
            batch = harness.connector().parse_push(headers, body, datetime.now(UTC))
            assert oid in {e.platform_order_id for e in batch.events}
        found, _ = run(_collect(harness.connector(), oid))
        if found is None:  # push-only platform: the detail comes from fetch_order
            assert push is not None, "a paid order must be found by polling or by push"
            found = run(harness.connector().fetch_order(oid))
        assert found.status is PlatformStatus.PAID
        assert [(ln.sku_id or ln.outer_id or ln.item_id, ln.quantity) for ln in found.lines] == [
            (harness.sku_id, 2)]
        assert found.total_cents >= 0


    def test_fetch_order_returns_the_same_order(self, harness: ChannelHarness) -> None:
        """fetch_order reads one order's current snapshot."""
        oid = harness.create_paid_order()
        order = run(harness.connector().fetch_order(oid))
        assert order.platform_order_id == oid
        assert order.status is PlatformStatus.PAID


    def test_ship_is_exactly_once(self, harness: ChannelHarness) -> None:
        """The first ship is applied; a second is reported as already shipped, not applied again."""
        oid = harness.create_paid_order()
        connector = harness.connector()

        async def scenario() -> tuple[ShipOutcome, ShipOutcome]:
            order = await connector.fetch_order(oid)
            first = await connector.ship(_shipment(order))
            second = await connector.ship(_shipment(order))
            await connector.aclose()
            return first, second

        assert run(scenario()) == (ShipOutcome.SHIPPED, ShipOutcome.ALREADY_SHIPPED)
        assert harness.shipments(oid) == 1


    def test_closed_order_is_not_shippable(self, harness: ChannelHarness) -> None:
        """An order closed before shipping is refused with NotShippable and nothing is applied."""
        oid = harness.create_paid_order()
        connector = harness.connector()
        order = run(connector.fetch_order(oid))
        harness.close_order(oid)
        with pytest.raises(NotShippable):
            run(connector.ship(_shipment(order)))
        assert harness.shipments(oid) == 0
        closed = run(harness.connector().fetch_order(oid))
        assert closed.status is PlatformStatus.CLOSED or closed.fully_refunded


    def test_a_closed_order_says_whether_it_was_shipped_first(
            self, harness: ChannelHarness) -> None:
        """A refund closes an order whether or not it was shipped first; the order read says
        which (``shipped_on_platform``: a consign time, an uploaded shipment). The robot needs
        it when a shipment's answer was lost and the order was refunded meanwhile. (A platform
        whose order read cannot tell overrides this test and says why.)"""
        shipped, unshipped = harness.create_paid_order(), harness.create_paid_order()
        connector = harness.connector()
        run(connector.ship(_shipment(run(connector.fetch_order(shipped)))))
        harness.close_order(shipped)
        harness.close_order(unshipped)
        assert run(harness.connector().fetch_order(shipped)).shipped_on_platform is True
        assert run(harness.connector().fetch_order(unshipped)).shipped_on_platform is False

    def test_memo_is_written(self, harness: ChannelHarness) -> None:
        """write_memo leaves the memo on the platform (where the platform has memos)."""
        oid = harness.create_paid_order()
        connector = harness.connector()
        order = run(connector.fetch_order(oid))
        run(connector.write_memo(order, "[robot] 12****89 https://robot.example/p/x"))
        memo = harness.memo(oid)
        assert memo is None or "12****89" in memo


    def test_expired_credentials_are_fatal(self, harness: ChannelHarness) -> None:
        """Expired or revoked authorization surfaces as a Fatal error (the shop is paused)."""
        oid = harness.create_paid_order()
        harness.expire_credentials()
        with pytest.raises(Fatal):
            run(harness.connector().fetch_order(oid))


    def test_forged_push_is_refused(self, harness: ChannelHarness) -> None:
        """A push whose body was altered after signing is refused with PushRejected."""
        oid = harness.create_paid_order()
        push = harness.signed_push(oid)
        connector = harness.connector()
        if push is None:
            with pytest.raises(PushRejected):
                connector.parse_push({}, b"{}", datetime.now(UTC))
            return
        headers, body = push
        with pytest.raises(PushRejected):
            connector.parse_push(headers, body.replace(b"}", b" }", 1), datetime.now(UTC))


class WireContract:
    """What a wire fake records (the evidence chaos runs read); a subclass provides the
    ``harness`` fixture, yielding a :class:`~connectors.testing.harness.WireHarness`."""

    def test_fake_records_every_ship_and_memo_call_with_its_payload(
            self, harness: WireHarness) -> None:
        """Every ship and memo call the fake receives is recorded with its payload and answer,
        the refused second shipment included, and served in /__fake__/state."""
        oid = harness.create_paid_order()
        connector = harness.connector()
        memo = "[robot] VI****AB GA****CD https://robot.example/p/tok3n"

        async def scenario() -> None:
            order = await connector.fetch_order(oid)
            await connector.ship(_shipment(order))
            await connector.ship(_shipment(order))  # the stale order: the call is made, refused
            await connector.write_memo(order, memo)
            await connector.aclose()

        run(scenario())
        calls = harness.write_backs(oid)
        ships = [c for c in calls if c["kind"] == "ship"]
        assert [c["outcome"] == "applied" for c in ships] == [True, False]
        assert ships[1]["outcome"].startswith("refused: ")
        assert all(c["order_id"] == oid and c["payload"] for c in ships)
        assert ships[0]["received_at"] <= ships[1]["received_at"]
        assert ships[0]["seq"] < ships[1]["seq"]
        memos = [c for c in calls if c["kind"] == "memo"]
        if harness.memo(oid) is None:  # WeChat has no seller memo: nothing is sent
            assert memos == []
            return
        assert len(memos) == 1
        assert memos[0]["outcome"] == "applied"
        assert memos[0]["masked_codes"] == ["VI****AB", "GA****CD"]
        assert memos[0]["links"] == ["https://robot.example/p/tok3n"]
        assert memo in memos[0]["payload"].values()
