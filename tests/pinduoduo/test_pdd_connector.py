"""The Pinduoduo connector against the fake POP (in-process ASGI transport): polling and
catch-up, backward paging, tokens, throttling, shipping, memos, refunds and check()."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from pdd_helpers import FakeSleep, make_connector
from structlog.testing import capture_logs

from connectors.base import Order, PlatformStatus, RefundState, Shipment, ShipOutcome
from connectors.common.context import MemoryContext
from connectors.pinduoduo import PinduoduoConnector
from connectors.pinduoduo.fake import FakeClock, FakePdd
from connectors.pinduoduo.tokens import SECRET_NAME, TokenSet
from robot.errors import AuthError, NotShippable, PushRejected, Throttled, Unavailable

T = TypeVar("T")
INCREMENT = "pdd.order.number.list.increment.get"


def drive(pdd: FakePdd, clock: FakeClock,
          scenario: Callable[[PinduoduoConnector], Awaitable[T]], **kwargs: Any) -> T:
    """Run ``await scenario(connector)`` on a fresh connector, then close it."""

    async def main() -> T:
        connector = make_connector(pdd, clock, **kwargs)
        try:
            return await scenario(connector)
        finally:
            await connector.aclose()

    return asyncio.run(main())


def _shipment(order: Order) -> Shipment:
    return Shipment(order=order, line_ids=tuple(ln.line_id for ln in order.lines),
                    memo="m", item_desc="d")


def test_poll_returns_orders_awaiting_shipment(pdd: FakePdd, clock: FakeClock) -> None:
    """A first poll returns paid unrefunded orders, normalized, with its cursor at now - lag."""
    sn = pdd.create_order(items=[{"goods_name": "Card", "goods_price": "9.90", "goods_count": 2,
                                  "sku_id": 77, "outer_id": "OUT-1"}])
    refunding = pdd.create_order()
    pdd.request_refund(refunding, after_sales_status=2)
    pdd.create_order(confirm_status=0)  # group not formed yet
    clock.advance(300)
    now = clock.now()
    result = drive(pdd, clock, lambda c: c.poll(None, now), initial_lookback_minutes=10)
    (order,) = result.orders
    assert order.platform_order_id == sn
    assert order.status is PlatformStatus.PAID
    assert order.total_cents == 1980
    (line,) = order.lines
    assert (line.sku_id, line.outer_id, line.quantity, line.unit_price_cents) == ("77", "OUT-1",
                                                                                  2, 990)
    assert result.cursor == {"end": (now.replace(microsecond=0)
                                     - timedelta(seconds=180)).isoformat()}
    assert result.more is False


def test_catch_up_after_an_outage_misses_nothing(pdd: FakePdd, clock: FakeClock) -> None:
    """After 4 h without polling, overlapping ≤30-min steps return every paid order."""
    first = drive(pdd, clock, lambda c: c.poll(None, clock.now()))
    created = set()
    for _ in range(4 * 60 // 9):
        clock.advance(timedelta(minutes=9))
        created.add(pdd.create_order())
    windows: list[tuple[int, int]] = []

    def hook(api: str, params: Mapping[str, str]) -> None:
        if api == INCREMENT and params.get("page") == "1":
            windows.append((int(params["start_updated_at"]), int(params["end_updated_at"])))

    pdd.on_call = hook

    async def catch_up(connector: PinduoduoConnector) -> tuple[set[str], int]:
        seen: set[str] = set()
        cursor, steps, more = first.cursor, 0, True
        while more:
            result = await connector.poll(cursor, clock.now())
            seen |= {o.platform_order_id for o in result.orders}
            cursor, more, steps = dict(result.cursor), result.more, steps + 1
        clock.advance(timedelta(minutes=4))  # the next scheduled poll covers the lag
        result = await connector.poll(cursor, clock.now())
        seen |= {o.platform_order_id for o in result.orders}
        return seen, steps

    seen, steps = drive(pdd, clock, catch_up)
    assert seen == created
    assert steps >= 9
    assert all(end - start <= 1800 for start, end in windows)
    for (_, previous_end), (next_start, _) in itertools.pairwise(windows):
        assert next_start <= previous_end - 300


def test_paging_backwards_survives_an_order_leaving_the_window(
    pdd: FakePdd, clock: FakeClock
) -> None:
    """An order updated between two pages shifts the others; backward paging sees them all."""
    sns = []
    for _ in range(5):
        sns.append(pdd.create_order())
        clock.advance(10)
    clock.advance(300)
    pages: list[str] = []

    def hook(api: str, params: Mapping[str, str]) -> None:
        if api != INCREMENT:
            return
        pages.append(params["page"])
        if len(pages) == 2:  # after the first look, the oldest order changes
            pdd.touch(sns[0])

    pdd.on_call = hook
    result = drive(pdd, clock, lambda c: c.poll(None, clock.now()), page_size=2,
                   initial_lookback_minutes=10)
    assert pages == ["1", "3", "2", "1"]
    assert {o.platform_order_id for o in result.orders} >= set(sns[1:])
    assert len({o.platform_order_id for o in result.orders}) == len(result.orders)


def test_expired_token_is_refreshed_transparently_and_stored(
    pdd: FakePdd, clock: FakeClock
) -> None:
    """10019 triggers one refresh and one retry; the new token is stored for the next run."""
    sn = pdd.create_order()
    context = MemoryContext("shop-p")
    pdd.expire_access_tokens()
    with capture_logs() as logs:
        order = drive(pdd, clock, lambda c: c.fetch_order(sn), context=context)
    assert order.platform_order_id == sn
    assert pdd.refreshes == 1
    assert pdd.calls.count("pdd.order.information.get") == 2
    stored = TokenSet.from_json(context.load_secret(SECRET_NAME) or "")
    assert stored.access_token != "test-access-token"
    assert stored.expires_at is not None
    # A restarted connector on the same store uses the refreshed token without refreshing.
    drive(pdd, clock, lambda c: c.fetch_order(sn), context=context)
    assert pdd.refreshes == 1
    text = repr(logs)
    assert stored.refresh_token is not None
    assert stored.access_token not in text and stored.refresh_token not in text
    assert "testsecret" not in text


def test_token_is_refreshed_before_it_expires(pdd: FakePdd, clock: FakeClock) -> None:
    """A token known to expire within the margin is refreshed first; POP never says 10019."""
    sn = pdd.create_order()
    context = MemoryContext("shop-p")
    drive(pdd, clock, lambda c: c.fetch_order(sn), context=context, access_token=None,
          refresh_token=None, code="test-code")
    assert pdd.calls[0] == "pdd.pop.auth.token.create"
    clock.advance(pdd.access_ttl - timedelta(seconds=60))
    pdd.calls.clear()
    drive(pdd, clock, lambda c: c.fetch_order(sn), context=context, access_token=None,
          refresh_token=None, code="test-code")
    assert pdd.calls == ["pdd.pop.auth.token.refresh", "pdd.order.information.get"]


def test_revoked_authorization_is_fatal_after_one_refresh_attempt(
    pdd: FakePdd, clock: FakeClock
) -> None:
    """When the refresh token is refused too, AuthError (Fatal) says to re-authorize."""
    sn = pdd.create_order()
    pdd.revoke_authorization()
    with pytest.raises(AuthError, match="authorize the app again"):
        drive(pdd, clock, lambda c: c.fetch_order(sn))
    assert pdd.calls == ["pdd.order.information.get", "pdd.pop.auth.token.refresh"]


def test_a_fresh_token_refused_again_is_retried_later_not_fatal(
    pdd: FakePdd, clock: FakeClock
) -> None:
    """When POP refuses the token it just issued (tokens changing under several robot
    processes), the call fails as Unavailable (retried later), not AuthError (shop paused)."""
    sn = pdd.create_order()
    pdd.expire_access_tokens()
    ttl, pdd.access_ttl = pdd.access_ttl, timedelta(0)  # the new token is born expired
    context = MemoryContext("shop-p")
    with pytest.raises(Unavailable, match="refused too"):
        drive(pdd, clock, lambda c: c.fetch_order(sn), context=context)
    assert pdd.calls == ["pdd.order.information.get", "pdd.pop.auth.token.refresh",
                         "pdd.order.information.get"]
    pdd.access_ttl = ttl
    order = drive(pdd, clock, lambda c: c.fetch_order(sn), context=context)
    assert order.platform_order_id == sn  # the next attempt refreshes again and works


def test_throttling_is_retried_with_backoff(pdd: FakePdd, clock: FakeClock) -> None:
    """52101 and 70031 answers are retried with growing delays, then succeed."""
    sn = pdd.create_order()
    sleep = FakeSleep(clock)
    pdd.set_faults(throttle=2)
    order = drive(pdd, clock, lambda c: c.fetch_order(sn), sleep=sleep)
    assert order.platform_order_id == sn
    assert sleep.delays == [1.0, 1.0]  # at least POP's 1 s hint, then 0.5 * 2
    pdd.set_faults(throttle=1, throttle_code=70031, unavailable=1)
    sleep.delays.clear()
    drive(pdd, clock, lambda c: c.fetch_order(sn), sleep=sleep, backoff_seconds=2)
    assert sleep.delays == [2.0, 4.0]


def test_persistent_throttling_reaches_the_core(pdd: FakePdd, clock: FakeClock) -> None:
    """After max_retries the Throttled error goes to the core (which backs off)."""
    sn = pdd.create_order()
    pdd.set_faults(throttle=10)
    with pytest.raises(Throttled):
        drive(pdd, clock, lambda c: c.fetch_order(sn), max_retries=2)
    assert pdd.calls.count("pdd.order.information.get") == 3
    pdd.set_faults(throttle=0, http_500=5)
    with pytest.raises(Unavailable):
        drive(pdd, clock, lambda c: c.fetch_order(sn), max_retries=1)


def test_ship_is_applied_once(pdd: FakePdd, clock: FakeClock) -> None:
    """The first ship is applied with the configured carrier and rule; the second is not."""
    sn = pdd.create_order()

    async def scenario(c: PinduoduoConnector) -> tuple[ShipOutcome, ShipOutcome]:
        order = await c.fetch_order(sn)
        return await c.ship(_shipment(order)), await c.ship(_shipment(order))

    outcomes = drive(pdd, clock, scenario, tracking_number="VC{order_digits}", logistics_id=121)
    assert outcomes == (ShipOutcome.SHIPPED, ShipOutcome.ALREADY_SHIPPED)
    order = pdd.orders[sn]
    assert (order.shipments, order.logistics_id) == (1, 121)
    assert order.tracking_number == "VC" + sn.replace("-", "")


def test_ship_after_refund_is_not_shippable(pdd: FakePdd, clock: FakeClock) -> None:
    """A stale PAID snapshot of an order refunded since is refused with NotShippable."""
    sn = pdd.create_order()

    async def scenario(c: PinduoduoConnector) -> None:
        order = await c.fetch_order(sn)
        pdd.request_refund(sn, after_sales_status=10)
        await c.ship(_shipment(order))

    with pytest.raises(NotShippable):
        drive(pdd, clock, scenario)
    assert pdd.orders[sn].shipments == 0


def test_ship_of_an_order_shipped_by_hand_is_already_shipped(
    pdd: FakePdd, clock: FakeClock
) -> None:
    """When the merchant shipped it in the back office, re-reading says ALREADY_SHIPPED."""
    sn = pdd.create_order()

    async def scenario(c: PinduoduoConnector) -> ShipOutcome:
        order = await c.fetch_order(sn)
        pdd.orders[sn].order_status = 2
        return await c.ship(_shipment(order))

    assert drive(pdd, clock, scenario) is ShipOutcome.ALREADY_SHIPPED
    assert pdd.orders[sn].shipments == 0


def test_memo_is_written_with_tag_and_cut(pdd: FakePdd, clock: FakeClock) -> None:
    """The seller memo lands via pdd.order.note.update, tagged, at most 500 characters."""
    sn = pdd.create_order()

    async def scenario(c: PinduoduoConnector) -> None:
        order = await c.fetch_order(sn)
        await c.write_memo(order, "[robot] 12****89 " + "x" * 600)

    drive(pdd, clock, scenario, memo_tag=3)
    assert pdd.orders[sn].remark.startswith("[robot] 12****89")
    assert len(pdd.orders[sn].remark) == 500
    assert pdd.orders[sn].remark_tag == 3


def test_refund_poll_returns_the_changed_orders(pdd: FakePdd, clock: FakeClock) -> None:
    """After-sales in the window come back as their orders, with the refund state."""
    requested = pdd.create_order()
    refunded = pdd.create_order()
    pdd.create_order()
    pdd.request_refund(requested, after_sales_status=2)
    pdd.request_refund(refunded, after_sales_status=10)
    clock.advance(300)
    result = drive(pdd, clock, lambda c: c.poll_refunds(None, clock.now()),
                   initial_lookback_minutes=10)
    by_sn = {o.platform_order_id: o for o in result.orders}
    assert set(by_sn) == {requested, refunded}
    assert by_sn[requested].lines[0].refund is RefundState.REQUESTED
    assert by_sn[refunded].status is PlatformStatus.CLOSED
    assert by_sn[refunded].fully_refunded


def test_form_bodies_work_too(pdd: FakePdd, clock: FakeClock) -> None:
    """With request_format=form the same calls succeed (urlencoded body)."""
    sn = pdd.create_order()
    order = drive(pdd, clock, lambda c: c.fetch_order(sn), request_format="form")
    assert order.platform_order_id == sn


def test_check_reports_each_verdict(pdd: FakePdd, clock: FakeClock) -> None:
    """check() passes with good credentials and names the failing part otherwise."""
    good = drive(pdd, clock, lambda c: c.check())
    assert good.ok and all(passed for _, passed, _ in good.checks)
    bad_secret = drive(pdd, clock, lambda c: c.check(), client_secret="wrong")
    assert not bad_secret.ok
    assert [passed for _, passed, _ in bad_secret.checks] == [True, False, False, False]
    pdd.revoke_authorization()
    revoked = drive(pdd, clock, lambda c: c.check())
    assert [passed for _, passed, _ in revoked.checks] == [True, True, False, False]
    pdd.set_faults(http_500=10)
    down = drive(pdd, clock, lambda c: c.check(), max_retries=0)
    assert down.checks[0][1] is False


def test_http_push_is_refused() -> None:
    """POP pushes over a WebSocket only, so any HTTP push is refused without side effects."""
    clock = FakeClock()
    connector = make_connector(FakePdd(clock=clock.now), clock)
    with pytest.raises(PushRejected):
        connector.parse_push({}, b"{}", datetime.now(UTC))
    asyncio.run(connector.aclose())
