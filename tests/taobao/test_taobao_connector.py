"""The Taobao connector against the fake TOP: polling, catch-up, paging, shipping, memos,
refunds, TMC and error mapping (in-process ASGI transport; loopback tests are separate)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from datetime import UTC, timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

from connectors.base import (
    Order,
    OrderLine,
    PlatformStatus,
    PushKind,
    RefundState,
    Shipment,
    ShipOutcome,
    UnreadableOrder,
)
from connectors.common.times import parse_cst
from connectors.taobao import ClockSkew, SessionExpired, TaobaoConnector
from connectors.taobao.fake import FakeClock, FakeTop
from robot.errors import AuthError, NotShippable, PushRejected, Throttled, Unavailable

INCREMENT = "taobao.trades.sold.increment.get"


def _shipment(order: Order) -> Shipment:
    return Shipment(
        order=order, line_ids=tuple(line.line_id for line in order.lines), memo="m", item_desc="d"
    )


def test_poll_returns_paid_trades_normalized(drive: Any, top: FakeTop, clock: FakeClock) -> None:
    """A first poll returns paid (not unpaid) trades, normalized, with its cursor at now - lag."""
    tid = top.create_trade(
        items=[{"title": "Card", "price": "9.90", "num": 2, "outer_iid": "I", "outer_sku_id": "S"}],
        buyer_open_uid="AAH_b1",
    )
    paid_at = clock.now().replace(microsecond=0)
    top.create_trade(status="WAIT_BUYER_PAY")
    clock.advance(120)
    now = clock.now()

    result = drive(lambda c: c.poll(None, now), initial_lookback_minutes=10)

    (order,) = result.orders
    assert order.platform_order_id == str(tid)
    assert int(order.platform_order_id) > 2**53
    assert order.status is PlatformStatus.PAID
    assert (order.total_cents, order.paid_at, order.buyer_id) == (1980, paid_at, "AAH_b1")
    (line,) = order.lines
    assert (line.quantity, line.unit_price_cents, line.outer_id) == (2, 990, "S")
    assert result.cursor == {
        "end": (now - timedelta(seconds=60)).replace(microsecond=0).isoformat()
    }
    assert result.more is False


def test_caught_up_poll_makes_no_call(drive: Any, top: FakeTop, clock: FakeClock) -> None:
    """A cursor already at now - lag returns nothing and keeps the cursor, without calling TOP."""
    now = clock.now()
    cursor = {"end": (now - timedelta(seconds=30)).isoformat()}
    result = drive(lambda c: c.poll(cursor, now))
    assert (result.orders, result.cursor, result.more) == ((), cursor, False)
    assert top.calls == []


def _record_windows(top: FakeTop) -> list[tuple[str, str]]:
    windows: list[tuple[str, str]] = []

    def hook(method: str, params: Mapping[str, str]) -> None:
        if method == INCREMENT and params.get("page_no") == "1":
            windows.append((params["start_modified"], params["end_modified"]))

    top.on_call = hook
    return windows


def test_catch_up_after_three_hour_outage_misses_nothing(
    drive: Any, top: FakeTop, clock: FakeClock
) -> None:
    """After 3 h without polling, several overlapping ≤30-min steps return every paid trade."""
    first = drive(lambda c: c.poll(None, clock.now()))
    created: set[str] = set()
    for _ in range(3 * 60 // 7):  # a trade every 7 minutes through the outage
        clock.advance(timedelta(minutes=7))
        created.add(str(top.create_trade()))
    windows = _record_windows(top)

    async def catch_up(connector: TaobaoConnector) -> tuple[set[str], int]:
        seen: set[str] = set()
        cursor, steps, more = first.cursor, 0, True
        while more:
            result = await connector.poll(cursor, clock.now())
            seen |= {order.platform_order_id for order in result.orders}
            cursor, more, steps = result.cursor, result.more, steps + 1
        clock.advance(timedelta(minutes=2))  # the next scheduled poll covers the last lag
        result = await connector.poll(cursor, clock.now())
        seen |= {order.platform_order_id for order in result.orders}
        assert result.more is False
        return seen, steps

    seen, steps = drive(catch_up)
    assert seen == created
    assert steps >= 6
    spans = [(parse_cst(s), parse_cst(e)) for s, e in windows]
    assert all(end - start <= timedelta(minutes=30) for start, end in spans)
    for (_, previous_end), (next_start, _) in itertools.pairwise(spans):
        assert next_start <= previous_end - timedelta(seconds=300)  # consecutive windows overlap


def test_pagination_across_pages(drive: Any, top: FakeTop, clock: FakeClock) -> None:
    """With page_size 2, five paid trades come back from several pages, each once."""
    tids = set()
    for _ in range(5):
        tids.add(str(top.create_trade()))
        clock.advance(10)
    clock.advance(120)
    result = drive(lambda c: c.poll(None, clock.now()), page_size=2, initial_lookback_minutes=10)
    ids = [order.platform_order_id for order in result.orders]
    assert sorted(ids) == sorted(tids)
    assert top.calls.count(INCREMENT) == 4  # page 1 for the count, then pages 3, 2, 1


def test_paging_survives_a_trade_leaving_the_window_mid_poll(
    drive: Any, top: FakeTop, clock: FakeClock
) -> None:
    """A trade modified between two pages shifts the others; backward paging still sees all."""
    tids = []
    for _ in range(5):
        tids.append(top.create_trade())
        clock.advance(10)
    clock.advance(120)
    newest = tids[-1]

    def hook(method: str, params: Mapping[str, str]) -> None:
        if method == INCREMENT and params.get("page_no") == "3":
            top.touch(newest)  # modified now: it leaves the window, the rest move up a place

    top.on_call = hook
    result = drive(lambda c: c.poll(None, clock.now()), page_size=2, initial_lookback_minutes=10)
    assert {order.platform_order_id for order in result.orders} == {str(t) for t in tids}


def test_ship_once_then_already_shipped(drive: Any, top: FakeTop, clock: FakeClock) -> None:
    """The first ship is SHIPPED; shipping again from a stale snapshot is ALREADY_SHIPPED, once."""
    tid = top.create_trade()

    async def scenario(connector: TaobaoConnector) -> tuple[ShipOutcome, ShipOutcome]:
        order = await connector.fetch_order(str(tid))
        return await connector.ship(_shipment(order)), await connector.ship(_shipment(order))

    assert drive(scenario) == (ShipOutcome.SHIPPED, ShipOutcome.ALREADY_SHIPPED)
    assert top.trades[tid].shipments == 1
    assert top.calls.count("taobao.logistics.dummy.send") == 2  # second answered B04, re-read


def test_ship_closed_trade_is_not_shippable(drive: Any, top: FakeTop) -> None:
    """A trade closed after our snapshot is refused by TOP and reported NotShippable."""
    tid = top.create_trade()

    async def scenario(connector: TaobaoConnector) -> None:
        order = await connector.fetch_order(str(tid))
        top.close_trade(tid)
        await connector.ship(_shipment(order))

    with pytest.raises(NotShippable, match="closed"):
        drive(scenario)
    assert top.trades[tid].shipments == 0


def test_ship_unknown_or_refunding_trade_is_not_shippable(drive: Any, top: FakeTop) -> None:
    """An unknown tid (B01) and a snapshot with a refund in progress are NotShippable."""
    tid = top.create_trade()
    top.request_refund(tid)

    async def unknown(connector: TaobaoConnector) -> None:
        line = OrderLine(line_id="4998", quantity=1)
        ghost = Order(platform_order_id="4999", status=PlatformStatus.PAID, lines=(line,))
        await connector.ship(_shipment(ghost))

    async def refunding(connector: TaobaoConnector) -> None:
        order = await connector.fetch_order(str(tid))
        assert order.lines[0].refund is RefundState.REQUESTED
        await connector.ship(_shipment(order))

    with pytest.raises(NotShippable, match="not found"):
        drive(unknown)
    with pytest.raises(NotShippable, match="refund"):
        drive(refunding)
    assert top.trades[tid].shipments == 0


def test_ship_trade_closed_by_taobao_sub_order(drive: Any, top: FakeTop) -> None:
    """A trade whose sub-order TOP closed is never shipped."""
    tid = top.create_trade()
    top.close_trade(tid, by_taobao=True)

    async def scenario(connector: TaobaoConnector) -> None:
        order = await connector.fetch_order(str(tid))
        assert order.status is PlatformStatus.CLOSED
        await connector.ship(_shipment(order))

    with pytest.raises(NotShippable):
        drive(scenario)
    assert "taobao.logistics.dummy.send" not in top.calls


def test_throttling_becomes_throttled_with_retry_after(drive: Any, top: FakeTop) -> None:
    """Code 7 "ban will last for N more seconds" is Throttled(retry_after=N); then it recovers."""
    tid = top.create_trade()
    top.set_faults(throttle=1, ban_seconds=7)

    async def scenario(connector: TaobaoConnector) -> Order:
        with pytest.raises(Throttled) as caught:
            await connector.fetch_order(str(tid))
        assert caught.value.retry_after == 7
        return await connector.fetch_order(str(tid))

    assert drive(scenario).platform_order_id == str(tid)


def test_http_500_is_unavailable(drive: Any, top: FakeTop) -> None:
    """An HTML 500 page from the gateway is Unavailable (retriable)."""
    top.set_faults(http_500=1)
    with pytest.raises(Unavailable, match="HTTP 500"):
        drive(lambda c: c.fetch_order("1"))


def test_session_expiry_is_session_expired(drive: Any, top: FakeTop, clock: FakeClock) -> None:
    """An expired seller session surfaces as SessionExpired (an AuthError) from poll."""
    top.set_faults(expire_session=True)
    with pytest.raises(SessionExpired) as caught:
        drive(lambda c: c.poll(None, clock.now()))
    assert isinstance(caught.value, AuthError)


def test_clock_skew_is_reported_when_tops_clock_cannot_be_measured(
    top: FakeTop, clock: FakeClock, drive: Any
) -> None:
    """A host clock 20 minutes off, with no usable Date from TOP, gets ClockSkew (code 31)."""
    skewed = FakeClock(clock.now() + timedelta(minutes=20))

    async def scenario(connector: TaobaoConnector) -> None:
        connector.api.clock.local = skewed.now  # simulate a wrong host clock
        connector.api.clock.observe_response = lambda response: None  # type: ignore[method-assign]
        await connector.fetch_order("1")

    with pytest.raises(ClockSkew):
        drive(scenario)


def test_a_host_clock_far_off_is_measured_and_the_timestamp_follows_tops_clock(
    top: FakeTop, clock: FakeClock, drive: Any
) -> None:
    """A host clock 20 minutes ahead: TOP's refusal carries its Date, the call is re-signed
    once in TOP's time and succeeds; later calls are signed in TOP's time from the start."""
    tid = top.create_trade()
    skewed = FakeClock(clock.now() + timedelta(minutes=20))

    async def scenario(connector: TaobaoConnector) -> float:
        connector.api.clock.local = skewed.now
        await connector.fetch_order(str(tid))
        calls = len(top.calls)
        await connector.fetch_order(str(tid))
        assert len(top.calls) == calls + 1  # no refusal the second time
        reading = connector.clock_reading()
        assert reading is not None
        return reading.offset_seconds

    assert drive(scenario) == -1200


def test_errors_and_logs_never_carry_credentials(drive: Any, top: FakeTop) -> None:
    """Error messages and log events never contain the secret, the session or a signature."""
    tid = top.create_trade()
    top.set_faults(expire_session=True)
    with capture_logs() as logs, pytest.raises(SessionExpired) as caught:
        drive(lambda c: c.fetch_order(str(tid)), app_secret="testsecret")
    with pytest.raises(AuthError) as wrong:
        drive(lambda c: c.fetch_order(str(tid)), app_secret="wrong-secret-value")
    text = " ".join([caught.value.message, wrong.value.message, repr(logs)])
    for secret in ("testsecret", "wrong-secret-value", "test-session"):
        assert secret not in text
    assert "sign" not in {key for event in logs for key in event}


def test_memo_written_and_truncated_safely(drive: Any, top: FakeTop) -> None:
    """A memo is stored; one longer than 1000 bytes is cut on a character boundary."""
    tid = top.create_trade()

    async def scenario(connector: TaobaoConnector) -> None:
        order = await connector.fetch_order(str(tid))
        await connector.write_memo(order, "[robot] AB****12 https://x/p/1")
        assert top.trades[tid].seller_memo == "[robot] AB****12 https://x/p/1"
        await connector.write_memo(order, "码" * 600)

    drive(scenario)
    stored = top.trades[tid].seller_memo
    assert stored == "码" * 333
    assert len(stored.encode("utf-8")) <= 1000


def test_poll_refunds_returns_affected_trades(drive: Any, top: FakeTop, clock: FakeClock) -> None:
    """A refund opened on a trade shows up in poll_refunds as the re-read trade."""
    tid = top.create_trade()
    untouched = top.create_trade()
    clock.advance(60)
    top.request_refund(tid)
    clock.advance(120)
    result = drive(lambda c: c.poll_refunds(None, clock.now()), initial_lookback_minutes=10)
    (order,) = result.orders
    assert order.platform_order_id == str(tid) != str(untouched)
    assert order.refund_in_progress
    assert result.cursor["end"]


def test_tmc_consume_and_confirm_with_redelivery(
    drive: Any, top: FakeTop, clock: FakeClock
) -> None:
    """TMC messages map to PushEvents; unconfirmed ones are redelivered, confirmed ones not."""
    tid = top.create_trade()

    async def scenario(connector: TaobaoConnector) -> None:
        batch = await connector.consume_messages()
        kinds = {event.kind: (mid, event) for mid, event in batch}
        assert set(kinds) == {PushKind.OTHER, PushKind.PAID}
        paid_id, paid = kinds[PushKind.PAID]
        assert (paid.platform_order_id, paid.message_id, paid.order) == (str(tid), paid_id, None)
        await connector.confirm_messages([paid_id])
        assert await connector.consume_messages() == []  # in flight: hidden
        clock.advance(top.visibility_timeout + timedelta(seconds=1))
        again = await connector.consume_messages()
        assert [mid for mid, _ in again] == [kinds[PushKind.OTHER][0]]
        await connector.confirm_messages([mid for mid, _ in again])
        clock.advance(top.visibility_timeout + timedelta(seconds=1))
        assert await connector.consume_messages() == []

    drive(scenario, use_tmc=True)
    assert top.snapshot()["messages"] == {"pending": 0, "confirmed": 2}


def test_parse_push_is_refused(drive: Any, clock: FakeClock) -> None:
    """Taobao never pushes over HTTP: parse_push always raises PushRejected."""

    async def scenario(connector: TaobaoConnector) -> None:
        connector.parse_push({}, b"{}", clock.now())

    with pytest.raises(PushRejected):
        drive(scenario)


def test_check_reports_verdicts(drive: Any, top: FakeTop) -> None:
    """check() passes with good credentials and names the session when it has expired."""
    good = drive(lambda c: c.check())
    assert good.ok
    assert all(passed for _, passed, _ in good.checks)
    top.set_faults(expire_session=True)
    bad = drive(lambda c: c.check())
    assert not bad.ok
    verdicts = {name: passed for name, passed, _ in bad.checks}
    assert verdicts["app key and secret"] is True
    assert verdicts["seller session"] is False
    wrong = drive(lambda c: c.check(), app_secret="nope")
    assert {n: p for n, p, _ in wrong.checks}["app key and secret"] is False


def test_paid_at_is_aware_utc(drive: Any, top: FakeTop) -> None:
    """paid_at and modified_at come back timezone-aware in UTC."""
    tid = top.create_trade()
    order = drive(lambda c: c.fetch_order(str(tid)))
    assert order.paid_at is not None
    assert order.paid_at.tzinfo is UTC
    assert order.modified_at is not None


def test_one_unreadable_trade_does_not_stall_the_poll(
    drive: Any, top: FakeTop, clock: FakeClock
) -> None:
    """A trade with unreadable data comes back as an UnreadableOrder naming the problem (the
    core parks it); the others and the cursor advance."""
    good = top.create_trade()
    bad = top.create_trade()
    top.trades[bad].lines[0].price = "1.005"  # not a whole number of fen
    clock.advance(120)
    result = drive(lambda c: c.poll(None, clock.now()), initial_lookback_minutes=10)
    by_id = {order.platform_order_id: order for order in result.orders}
    assert set(by_id) == {str(good), str(bad)}
    assert not isinstance(by_id[str(good)], UnreadableOrder)
    parked = by_id[str(bad)]
    assert isinstance(parked, UnreadableOrder) and "whole number of fen" in parked.problem
    assert result.cursor
