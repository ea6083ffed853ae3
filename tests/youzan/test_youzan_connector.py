"""The Youzan connector against the in-process fake: polling, shipping, memos, errors, check."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from connectors.base import PlatformStatus, RefundState, Shipment, ShipOutcome
from connectors.common.window import write_cursor
from connectors.youzan import AUTO_DELIVERED, YouzanConnector, YouzanRejected
from connectors.youzan.client import PLANNER
from connectors.youzan.fake import FakeClock, FakeYouzan
from connectors.youzan.fake_state import BusinessError, GatewayError
from connectors.youzan.normalize import trade_to_order, yuan_to_fen
from robot.errors import (
    BadPlatformData,
    ConfigError,
    NotShippable,
    PermissionDenied,
    Throttled,
    Unavailable,
)
from tests.youzan.helpers import in_process, make_fake

T = TypeVar("T")
SKU = 36000001

plan_window = PLANNER.plan_window
read_cursor = PLANNER.read_cursor


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake(clock: FakeClock) -> FakeYouzan:
    return make_fake(clock)


def drive(fake: FakeYouzan, clock: FakeClock,
          scenario: Callable[[YouzanConnector], Awaitable[T]], **config: Any) -> T:
    async def main() -> T:
        connector = in_process(fake, clock=clock, **config)
        try:
            return await scenario(connector)
        finally:
            await connector.aclose()
    return asyncio.run(main())


def _trade(fake: FakeYouzan, **kwargs: Any) -> str:
    return fake.create_trade(items=[{"title": "card", "price": "9.90", "sku_id": SKU,
                                     "num": kwargs.pop("num", 1)}], **kwargs)


async def _poll_all(connector: YouzanConnector, now: datetime, cursor: dict[str, str] | None = None,
                    refunds: bool = False) -> tuple[list[str], dict[str, str], int]:
    seen: list[str] = []
    steps = 0
    while True:
        step = connector.poll_refunds if refunds else connector.poll
        result = await step(cursor, now)
        steps += 1
        seen += [o.platform_order_id for o in result.orders]
        cursor = dict(result.cursor)
        if not result.more:
            return seen, cursor, steps


def _shipment(order) -> Shipment:  # type: ignore[no-untyped-def]
    return Shipment(order=order, line_ids=tuple(ln.line_id for ln in order.lines),
                    memo="[robot] 12****89", item_desc="card x1", masked_codes=("12****89",))


# -- windows ------------------------------------------------------------------------------


def test_windows_stop_short_of_now_minus_lag_and_overlap() -> None:
    """First window looks back; later ones overlap the last end and never pass now - lag."""
    now = datetime(2024, 1, 2, 12, 0, 0, 500000, tzinfo=UTC)
    kw = {"window": timedelta(hours=1), "lag": timedelta(seconds=60),
          "overlap": timedelta(minutes=5), "initial_lookback": timedelta(hours=3)}
    first = plan_window(None, now, **kw)
    assert first.start == datetime(2024, 1, 2, 9, 0, 0, tzinfo=UTC)
    assert first.end == first.start + timedelta(hours=1)
    assert first.more
    later = plan_window(first.end, now, **kw)
    assert later.start == first.end - timedelta(minutes=5)
    last = plan_window(datetime(2024, 1, 2, 11, 58, 30, tzinfo=UTC), now, **kw)
    assert last.end == datetime(2024, 1, 2, 11, 59, 0, tzinfo=UTC)
    assert not last.more
    caught_up = plan_window(last.end, now, **kw)
    assert caught_up.empty
    assert read_cursor(write_cursor(last.end)) == last.end
    with pytest.raises(ConfigError):
        read_cursor({"end": "yesterday"})


# -- normalization ------------------------------------------------------------------------


def test_money_is_converted_to_fen_exactly() -> None:
    """Yuan strings become integer fen without float rounding."""
    assert yuan_to_fen("0.29") == 29
    assert yuan_to_fen("1234.50") == 123450
    assert yuan_to_fen("") == 0
    with pytest.raises(BadPlatformData):
        yuan_to_fen("abc")


def test_paid_trade_is_normalized_with_lines_buyer_and_times(fake: FakeYouzan,
                                                             clock: FakeClock) -> None:
    """A paid trade: PAID, one line per oid with SKU, quantity, unit price; aware UTC times."""
    tid = _trade(fake, num=2)
    order = drive(fake, clock, lambda c: c.fetch_order(tid))
    assert order.status is PlatformStatus.PAID
    assert [(ln.sku_id, ln.quantity, ln.unit_price_cents) for ln in order.lines] == [
        (str(SKU), 2, 990)]
    assert order.total_cents == 1980
    assert order.paid_at == clock.now().replace(microsecond=0)
    assert order.buyer_id == "yz_open_fake_buyer"
    assert AUTO_DELIVERED not in order.extra


def test_virtual_trade_delivered_by_youzan_is_paid_with_the_flag(fake: FakeYouzan,
                                                                 clock: FakeClock) -> None:
    """Virtual goods skip awaiting-shipment; we still see PAID (codes due) plus the flag."""
    tid = _trade(fake, virtual=True)
    assert fake.trades[tid].status == "WAIT_BUYER_CONFIRM_GOODS"
    order = drive(fake, clock, lambda c: c.fetch_order(tid))
    assert order.status is PlatformStatus.PAID
    assert order.extra[AUTO_DELIVERED] == "1"


def test_refunds_show_on_lines(fake: FakeYouzan, clock: FakeClock) -> None:
    """A pending refund is REQUESTED on its line; a completed full refund closes the trade."""
    tid = fake.create_trade(items=[{"sku_id": SKU, "price": "1.00"},
                                   {"sku_id": SKU + 1, "price": "2.00"}])
    first_oid = fake.trades[tid].lines[0].oid
    fake.request_refund(tid, oid=first_oid)
    order = drive(fake, clock, lambda c: c.fetch_order(tid))
    assert [ln.refund for ln in order.lines] == [RefundState.REQUESTED, RefundState.NONE]
    other = _trade(fake)
    fake.request_refund(other, status="SUCCESS")
    closed = drive(fake, clock, lambda c: c.fetch_order(other))
    assert closed.status is PlatformStatus.CLOSED
    assert closed.fully_refunded


def test_order_level_partial_refund_without_line_detail_blocks_every_line() -> None:
    """refund_state 1 with no refund_order: no line may be shipped blindly."""
    detail = {"full_order_info": {
        "order_info": {"tid": "E1", "status": "WAIT_SELLER_SEND_GOODS", "refund_state": 1,
                       "pay_time": "2024-01-02 11:04:05"},
        "orders": [{"oid": "1", "num": 1, "price": "1.00"}, {"oid": "2", "num": 1}]}}
    order = trade_to_order(detail)
    assert {ln.refund for ln in order.lines} == {RefundState.REQUESTED}
    with pytest.raises(BadPlatformData):
        trade_to_order({"full_order_info": {"order_info": {"tid": "E1", "status": "ODD"},
                                            "orders": []}})


# -- polling ------------------------------------------------------------------------------


def test_poll_finds_paid_trades_once_and_skips_unpaid_and_closed(fake: FakeYouzan,
                                                                 clock: FakeClock) -> None:
    """Paid (incl. virtual) trades come back; unpaid and closed ones do not."""
    paid = _trade(fake)
    virtual = _trade(fake, virtual=True)
    _trade(fake, paid=False)
    closed = _trade(fake)
    fake.close_trade(closed)
    clock.advance(120)
    found, cursor, _ = drive(fake, clock, lambda c: _poll_all(c, clock.now()))
    assert sorted(found) == sorted([paid, virtual])
    assert cursor["end"]


def test_poll_pages_backwards_and_survives_rows_moving_while_paging(
        fake: FakeYouzan, clock: FakeClock) -> None:
    """Many pages; a trade updated between two pages is neither lost nor returned twice."""
    tids = []
    for _ in range(23):
        tids.append(_trade(fake))
        clock.advance(1)
    clock.advance(120)
    pages: list[int] = []

    def on_call(name: str, params: Any) -> None:
        if name == "youzan.trades.sold.get":
            pages.append(int(params["page_no"]))
            if len(pages) == 2:
                fake.touch(tids[20], clock.now() - timedelta(seconds=90))

    fake.on_call = on_call
    found, _, _ = drive(fake, clock, lambda c: _poll_all(c, clock.now()), page_size=5)
    assert sorted(found) == sorted(tids)
    assert pages == [1, 5, 4, 3, 2]


def test_poll_splits_a_window_with_more_than_100_pages(fake: FakeYouzan,
                                                       clock: FakeClock) -> None:
    """Over 100 pages in one window: the window is halved until each part pages fully."""
    tids = []
    for _ in range(130):
        tids.append(_trade(fake))
        clock.advance(10)
    clock.advance(120)
    found, _, _ = drive(fake, clock, lambda c: _poll_all(c, clock.now()), page_size=1,
                        window_minutes=60, initial_lookback_minutes=60)
    assert sorted(found) == sorted(tids)


def test_poll_catches_up_after_an_outage_of_hours(fake: FakeYouzan, clock: FakeClock) -> None:
    """Hours behind: several windows in a row (more=True) and nothing missed."""
    start = clock.now()
    tids = []
    for _ in range(6):
        clock.advance(timedelta(minutes=55))
        tids.append(_trade(fake))
    clock.advance(timedelta(minutes=30))
    cursor = write_cursor(start)
    found, _, steps = drive(fake, clock, lambda c: _poll_all(c, clock.now(), cursor))
    assert sorted(set(found)) == sorted(tids)  # overlapping windows may repeat a trade
    assert steps >= 6


def test_poll_refunds_reports_closed_and_refunding_trades(fake: FakeYouzan,
                                                          clock: FakeClock) -> None:
    """Closed trades and trades with refunds come back from poll_refunds, read in full."""
    closed = _trade(fake)
    fake.close_trade(closed)
    refunding = _trade(fake)
    fake.request_refund(refunding)
    _trade(fake)
    clock.advance(120)
    found, _, _ = drive(fake, clock, lambda c: _poll_all(c, clock.now(), refunds=True))
    assert sorted(found) == sorted([closed, refunding])
    assert "youzan.trade.refund.search" in fake.calls


@pytest.mark.parametrize("shape", ["gateway", "500100004", "123000042"])
def test_every_throttle_shape_is_throttled_with_growing_backoff(
        fake: FakeYouzan, clock: FakeClock, shape: str) -> None:
    """4101 and both business throttle shapes: Throttled(3 s), then 6 s while it lasts, then ok."""
    tid = _trade(fake)
    fake.set_faults(throttle=2, throttle_shape=shape)

    async def scenario(connector: YouzanConnector) -> list[float | None]:
        delays = []
        for _ in range(2):
            with pytest.raises(Throttled) as info:
                await connector.fetch_order(tid)
            delays.append(info.value.retry_after)
        await connector.fetch_order(tid)
        fake.set_faults(throttle=1, throttle_shape=shape)
        with pytest.raises(Throttled) as info:
            await connector.fetch_order(tid)
        delays.append(info.value.retry_after)
        return delays

    assert drive(fake, clock, scenario) == [3.0, 6.0, 3.0]


def test_html_error_page_is_unavailable(fake: FakeYouzan, clock: FakeClock) -> None:
    """A 502 HTML page from the gateway is retriable."""
    tid = _trade(fake)
    fake.set_faults(http_500=1)
    with pytest.raises(Unavailable):
        drive(fake, clock, lambda c: c.fetch_order(tid))


def test_unknown_trade_is_not_shippable(fake: FakeYouzan, clock: FakeClock) -> None:
    """trade.get answering 5000 "trade not found" is NotShippable."""
    with pytest.raises(NotShippable):
        drive(fake, clock, lambda c: c.fetch_order("E20240102000000000000404"))


def test_unknown_api_version_is_fatal(fake: FakeYouzan, clock: FakeClock) -> None:
    """A version the gateway does not know (4005) is a configuration problem, not a retry."""
    tid = _trade(fake)
    with pytest.raises(Exception, match="4005") as info:
        drive(fake, clock, lambda c: c.fetch_order(tid), trade_get_version="9.9.9")
    assert not isinstance(info.value, Unavailable | Throttled)


# -- shipping and memo --------------------------------------------------------------------


def test_ship_confirms_once_then_already_shipped_after_rereading(fake: FakeYouzan,
                                                                 clock: FakeClock) -> None:
    """First ship is applied (is_no_express=1); the second gets 102570007 → ALREADY_SHIPPED."""
    tid = _trade(fake)

    async def scenario(c: YouzanConnector) -> tuple[ShipOutcome, ShipOutcome]:
        order = await c.fetch_order(tid)
        return await c.ship(_shipment(order)), await c.ship(_shipment(order))

    assert drive(fake, clock, scenario) == (ShipOutcome.SHIPPED, ShipOutcome.ALREADY_SHIPPED)
    assert fake.trades[tid].shipments == 1
    assert fake.trades[tid].status == "WAIT_BUYER_CONFIRM_GOODS"


def test_virtual_trade_is_not_shipped_again(fake: FakeYouzan, clock: FakeClock) -> None:
    """Youzan delivered it on payment: ship() answers ALREADY_SHIPPED without any call."""
    tid = _trade(fake, virtual=True)

    async def scenario(c: YouzanConnector) -> ShipOutcome:
        order = await c.fetch_order(tid)
        return await c.ship(_shipment(order))

    assert drive(fake, clock, scenario) is ShipOutcome.ALREADY_SHIPPED
    assert "youzan.logistics.online.confirm" not in fake.calls
    assert fake.trades[tid].shipments == 0


def test_closed_or_refunding_trade_is_not_shipped(fake: FakeYouzan, clock: FakeClock) -> None:
    """Closed after we read it: 102570020, re-read, NotShippable; nothing applied."""
    tid = _trade(fake)
    refunding = _trade(fake)

    async def scenario(c: YouzanConnector) -> None:
        order = await c.fetch_order(tid)
        fake.close_trade(tid)
        with pytest.raises(NotShippable, match="closed"):
            await c.ship(_shipment(order))
        stale = await c.fetch_order(refunding)
        fake.request_refund(refunding)
        with pytest.raises(NotShippable, match="refund"):
            await c.ship(_shipment(stale))
        fresh = await c.fetch_order(refunding)
        with pytest.raises(NotShippable, match="refund"):
            await c.ship(_shipment(fresh))

    drive(fake, clock, scenario)
    assert fake.trades[tid].shipments == 0
    assert fake.trades[refunding].shipments == 0


def test_concurrent_shipping_request_is_retriable(fake: FakeYouzan, clock: FakeClock) -> None:
    """102510001 (another shipping request in flight) is Unavailable: retry later."""
    tid = _trade(fake)

    def busy(name: str, params: Any) -> None:
        if name == "youzan.logistics.online.confirm":
            raise BusinessError(102510001, "重复请求")

    async def scenario(c: YouzanConnector) -> None:
        order = await c.fetch_order(tid)
        fake.on_call = busy
        with pytest.raises(Unavailable):
            await c.ship(_shipment(order))

    drive(fake, clock, scenario)


def test_memo_uses_the_v3_envelope_and_is_cut_to_size(fake: FakeYouzan,
                                                      clock: FakeClock) -> None:
    """youzan.trade.memo.update answers {"response": ...}; long memos are shortened."""
    tid = _trade(fake)

    async def scenario(c: YouzanConnector) -> None:
        order = await c.fetch_order(tid)
        await c.write_memo(order, "[robot] 12****89 " + "x" * 400)

    drive(fake, clock, scenario)
    memo = fake.trades[tid].memo
    assert memo is not None
    assert memo.startswith("[robot] 12****89")
    assert len(memo) == 256


def test_memo_error_response_is_mapped(fake: FakeYouzan, clock: FakeClock) -> None:
    """A v3 error_response (unknown trade) is a business refusal, not a success."""
    async def scenario(c: YouzanConnector) -> None:
        order = await c.fetch_order(_trade(fake))
        gone = type(order)(platform_order_id="E0", status=order.status, lines=order.lines)
        await c.write_memo(gone, "m")

    with pytest.raises(YouzanRejected, match="105000016"):
        drive(fake, clock, scenario)


# -- check --------------------------------------------------------------------------------


def test_check_reports_each_step(fake: FakeYouzan, clock: FakeClock) -> None:
    """Healthy: every check passes; revoked authorization fails the credentials check."""
    report = drive(fake, clock, lambda c: c.check())
    assert report.ok
    assert [name for name, _, _ in report.checks] == [
        "Youzan reachable", "client id, secret and shop authorization", "trade API permission"]
    fake.revoke_authorization()
    fresh = make_fake(clock)
    fresh.revoke_authorization()
    bad = drive(fresh, clock, lambda c: c.check())
    assert not bad.ok
    assert bad.checks[0][1] is True
    assert bad.checks[1][1] is False
    assert "1004" in bad.checks[1][2]


def test_check_reports_a_missing_permission(fake: FakeYouzan, clock: FakeClock) -> None:
    """4204 on the order API fails only the permission check."""
    def deny(name: str, params: Any) -> None:
        raise GatewayError(4204, "无权限")

    fake.on_call = deny
    report = drive(fake, clock, lambda c: c.check())
    assert not report.ok
    assert [ok for _, ok, _ in report.checks] == [True, True, False]
    assert "4204" in report.checks[2][2]

    async def direct(c: YouzanConnector) -> None:
        await c.fetch_order("E1")

    with pytest.raises(PermissionDenied):
        drive(fake, clock, direct)
