"""The Douyin connector against its fake over loopback HTTP: tokens, polling, shipping
certificates, refusals and error groups."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Iterator, Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any, TypeVar

import httpx
import pytest
from structlog.testing import capture_logs

from connectors.base import HandedCode, Order, PlatformStatus, Shipment, ShipOutcome
from connectors.cardsecret import CardSecret
from connectors.common.context import MemoryContext
from connectors.douyin.client import DouyinConnector
from connectors.douyin.harness import DouyinHarness, make_config, make_harness
from connectors.douyin.token import SECRET_NAME
from connectors.errors import AuthError, Fatal, NotShippable, Throttled, Unavailable

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture
def harness() -> Iterator[DouyinHarness]:
    with make_harness() as h:
        yield h


def connector(h: DouyinHarness, context: MemoryContext | None = None,
              **overrides: Any) -> DouyinConnector:
    transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))
    values: dict[str, Any] = {"lag_seconds": 0, "initial_lookback_minutes": 10}
    values.update(overrides)
    return DouyinConnector(make_config(h.base_url, **values), context or h.context,
                           transport=transport, clock=h.clock.now)


#: Test codes handed over: a plain code, and a card number / PIN pair with a redemption link.
CODES = (("TESTCODE000001", None, None),
         ("TESTCARD000002", "TESTPIN00002", "https://redeem.example/r"))


def handed(line_id: str, codes: tuple[tuple[str, str | None, str | None], ...] = CODES
           ) -> tuple[HandedCode, ...]:
    return tuple(HandedCode(line_id=line_id, number=CardSecret(number), masked=mask(number),
                            pin=CardSecret(pin) if pin else None, link=link)
                 for number, pin, link in codes)


def mask(text: str) -> str:
    return f"{text[:2]}****{text[-2:]}"


def shipment(order: Order, *, codes: tuple[HandedCode, ...] | None = None,
             url: str | None = "https://robot.example/p/tok3n") -> Shipment:
    given = handed(order.lines[0].line_id) if codes is None else codes
    return Shipment(order=order, line_ids=tuple(ln.line_id for ln in order.lines),
                    memo="[robot]", item_desc="card x1",
                    masked_codes=tuple(c.masked for c in given), pickup_url=url, handed=given)


def calls(h: DouyinHarness) -> list[str]:
    return [c.api for c in h.fake.call_log.since(0)]


def test_token_is_created_once_and_kept_in_the_shop_store(harness: DouyinHarness) -> None:
    """token.create (authorization_self) runs once; a second connector (a restart) reuses
    the stored token; the store holds it, no log or answer needs it again."""
    oid = harness.create_paid_order()
    run(connector(harness).fetch_order(oid))
    run(connector(harness).fetch_order(oid))
    assert harness.fake.tokens_issued == 1
    stored = json.loads(harness.context.load_secret(SECRET_NAME) or "{}")
    assert stored["access_token"] in harness.fake.tokens
    assert calls(harness).count("token.create") == 1


def test_token_is_refreshed_before_it_expires(harness: DouyinHarness) -> None:
    """Within the refresh margin the token is renewed with token.refresh (not re-created)."""
    oid = harness.create_paid_order()
    run(connector(harness).fetch_order(oid))
    harness.clock.advance(harness.fake.token_ttl - timedelta(seconds=1000))
    run(connector(harness).fetch_order(oid))
    assert calls(harness).count("token.refresh") == 1
    assert calls(harness).count("token.create") == 1


def test_refused_token_is_replaced_and_the_call_retried(harness: DouyinHarness) -> None:
    """A token Douyin reports expired is replaced once and the call succeeds."""
    oid = harness.create_paid_order()
    conn = connector(harness)

    async def scenario() -> Order:
        await conn.fetch_order(oid)
        harness.fake.expire_tokens()
        return await conn.fetch_order(oid)

    assert run(scenario()).platform_order_id == oid
    assert harness.fake.tokens_issued == 2


def test_revoked_authorization_is_fatal(harness: DouyinHarness) -> None:
    """With the shop's authorization cancelled, calls fail with an AuthError (Fatal)."""
    oid = harness.create_paid_order()
    run(connector(harness).fetch_order(oid))
    harness.fake.revoke_authorization()
    with pytest.raises(AuthError):
        run(connector(harness).fetch_order(oid))
    with pytest.raises(AuthError):  # and with no stored token: token.create is refused
        run(connector(harness, MemoryContext("other")).fetch_order(oid))


def test_wrong_secret_is_fatal_not_retried_forever(harness: DouyinHarness) -> None:
    """A wrong app_secret fails the signature check: a Fatal error naming the credentials."""
    oid = harness.create_paid_order()
    conn = connector(harness, MemoryContext("x"), app_secret="not-the-secret")
    with pytest.raises(Fatal, match="app_key and app_secret"):
        run(conn.fetch_order(oid))


def test_poll_reads_every_page_of_a_window(harness: DouyinHarness) -> None:
    """Seven paid orders over pages of three all come back from one poll, read in full."""
    ids = {harness.create_paid_order() for _ in range(7)}
    harness.clock.advance(1)
    result = run(connector(harness, page_size=3).poll(None, harness.clock.now()))
    assert {o.platform_order_id for o in result.orders} == ids
    assert all(o.status is PlatformStatus.PAID and o.lines[0].sku_id == harness.sku_id
               for o in result.orders)
    assert calls(harness).count("order.searchList") == 1 + 2 + 1  # page 0, 2, 1, 0 again


def test_order_leaving_the_window_while_paging_skips_no_other(harness: DouyinHarness) -> None:
    """An order updated (so leaving the window) between two pages does not make another
    order slide past the pages already read."""
    ids = [harness.create_paid_order() for _ in range(6)]
    harness.clock.advance(1)
    moved: list[str] = []

    def on_call(method: str, params: Any) -> None:
        if method == "order.searchList" and params.get("page") == 1 and not moved:
            first = harness.fake.orders[ids[0]]
            first.update_time = harness.fake.now() + timedelta(hours=1)
            moved.append(first.order_id)

    harness.fake.on_call = on_call
    result = run(connector(harness, page_size=2).poll(None, harness.clock.now()))
    assert set(ids[1:]) <= {o.platform_order_id for o in result.orders}


def test_ship_syncs_the_codes_the_buyer_sees(harness: DouyinHarness) -> None:
    """coupons.syncV2 stores each handed code as a certificate the buyer sees: the code or
    card number as cert_no, the PIN as cert_key, the pool's redemption link (else the
    pickup link) as cert_link; the order is shipped once."""
    oid = harness.create_paid_order()
    conn = connector(harness)
    order = run(conn.fetch_order(oid))
    assert run(conn.ship(shipment(order))) is ShipOutcome.SHIPPED
    view = harness.fake.buyer_view(oid)
    assert view[0]["certificates"] == [
        {"cert_no": "TESTCODE000001", "cert_link": "https://robot.example/p/tok3n"},
        {"cert_no": "TESTCARD000002", "cert_key": "TESTPIN00002",
         "cert_link": "https://redeem.example/r"}]
    assert harness.shipments(oid) == 1
    assert run(conn.fetch_order(oid)).status is PlatformStatus.SHIPPED


def test_handed_codes_stay_out_of_logs_and_the_platform_call_record(
        harness: DouyinHarness) -> None:
    """Shipping with the codes logs none of them, and the fake's record of the call (what a
    platform's log would show) holds them masked."""
    oid = harness.create_paid_order()
    conn = connector(harness)
    order = run(conn.fetch_order(oid))
    with capture_logs() as logs:
        run(conn.ship(shipment(order)))
    record = json.dumps([c.to_json() for c in harness.fake.writebacks.calls])
    secrets = ("TESTCODE000001", "TESTCARD000002", "TESTPIN00002")
    assert "TE****01" in record
    assert not [s for s in secrets if s in record or s in repr(logs)]


def test_order_without_codes_gets_a_certificate_naming_the_sub_order(
        harness: DouyinHarness) -> None:
    """An order shipped without codes (a top-up) gets one certificate per sub-order naming
    it, with the pickup link."""
    oid = harness.create_paid_order()
    conn = connector(harness)
    order = run(conn.fetch_order(oid))
    assert run(conn.ship(shipment(order, codes=()))) is ShipOutcome.SHIPPED
    line = order.lines[0].line_id
    assert harness.fake.buyer_view(oid)[0]["certificates"] == [
        {"cert_no": f"R{line}", "cert_link": "https://robot.example/p/tok3n"}]


def multi_line_order(h: DouyinHarness) -> str:
    return h.fake.create_order(items=[
        {"sku_id": "1750000101", "product_name": "card A", "price": "20.00", "num": 2},
        {"sku_id": "1750000202", "product_name": "card B", "price": "50.00", "num": 1}])


def test_multi_line_order_syncs_each_sub_order_its_own_codes(harness: DouyinHarness) -> None:
    """An order of two SKUs (two sub-orders): each sub-order gets exactly the codes
    allocated to its line, and the order is shipped once both hold certificates."""
    oid = multi_line_order(harness)
    conn = connector(harness)
    order = run(conn.fetch_order(oid))
    first, second = (ln.line_id for ln in order.lines)
    codes = (*handed(first, (("TESTA1000001", None, None), ("TESTA2000002", None, None))),
             *handed(second, (("TESTB1000003", "TESTPINB0003", None),)))
    assert run(conn.ship(shipment(order, codes=codes, url=None))) is ShipOutcome.SHIPPED
    view = {v["sub_order_id"]: v["certificates"] for v in harness.fake.buyer_view(oid)}
    assert view == {first: [{"cert_no": "TESTA1000001"}, {"cert_no": "TESTA2000002"}],
                    second: [{"cert_no": "TESTB1000003", "cert_key": "TESTPINB0003"}]}
    assert harness.shipments(oid) == 1
    assert run(conn.fetch_order(oid)).status is PlatformStatus.SHIPPED


def test_multi_line_retry_after_a_partial_sync_finishes_the_order(
        harness: DouyinHarness) -> None:
    """A write-back that died after the first sub-order's sync is run again: Douyin answers
    the first sub-order's identical second sync 000008 (already processed: done), the second
    is synced, and the order is shipped without the first sub-order changing."""
    oid = multi_line_order(harness)
    conn = connector(harness)
    order = run(conn.fetch_order(oid))
    first, second = (ln.line_id for ln in order.lines)
    codes = (*handed(first, (("TESTA1000001", None, None),)),
             *handed(second, (("TESTB1000003", None, None),)))
    failing = {"armed": True}

    def die_on_second(method: str, params: Mapping[str, Any]) -> None:
        if method == "coupons.syncV2" and params["order_id"] == second and failing["armed"]:
            failing["armed"] = False
            raise ConnectionError("the robot died here")

    harness.fake.on_call = die_on_second
    with pytest.raises(Unavailable):
        run(conn.ship(shipment(order, codes=codes, url=None)))
    assert run(conn.fetch_order(oid)).extra["order_status"] == "101"  # partly shipped
    before = harness.fake.buyer_view(oid)[0]
    assert run(conn.ship(shipment(order, codes=codes, url=None))) is ShipOutcome.SHIPPED
    view = harness.fake.buyer_view(oid)
    assert view[0] == before
    assert view[1]["certificates"] == [{"cert_no": "TESTB1000003"}]
    ships = [c.outcome for c in harness.fake.writebacks.calls if c.kind == "ship"]
    assert ships[0] == "applied" and "000008" in ships[1] and ships[2] == "applied"
    assert harness.shipments(oid) == 1


def test_an_identical_repeated_sync_counts_as_done_without_rereading(
        harness: DouyinHarness) -> None:
    """The same shipment sent again (its answer was lost) is refused 000008 for every
    sub-order: ALREADY_SHIPPED, with no order.orderDetail needed and the buyer's view
    unchanged."""
    oid = harness.create_paid_order()
    conn = connector(harness)
    order = run(conn.fetch_order(oid))
    run(conn.ship(shipment(order)))
    before = harness.fake.buyer_view(oid)
    harness.clock.advance(90)  # a later attempt: the certificates must not change with it
    reads = calls(harness).count("order.orderDetail")
    assert run(conn.ship(shipment(order))) is ShipOutcome.ALREADY_SHIPPED
    assert calls(harness).count("order.orderDetail") == reads
    assert harness.fake.buyer_view(oid) == before


def test_codes_for_a_sub_order_not_shipped_are_refused(harness: DouyinHarness) -> None:
    """Codes handed for a sub-order the shipment does not name sync nothing: NotShippable."""
    oid = multi_line_order(harness)
    conn = connector(harness)
    order = run(conn.fetch_order(oid))
    first, second = (ln.line_id for ln in order.lines)
    bad = replace(shipment(order, codes=handed(second)), line_ids=(first,))
    with pytest.raises(NotShippable):
        run(conn.ship(bad))
    assert [c for c in harness.fake.writebacks.calls if c.kind == "ship"] == []


def test_second_sync_is_refused_and_resolved_by_rereading(harness: DouyinHarness) -> None:
    """Douyin refuses a second sync (same or different certificates); the connector re-reads
    the order and reports ALREADY_SHIPPED without changing what the buyer sees."""
    oid = harness.create_paid_order()
    conn = connector(harness)
    order = run(conn.fetch_order(oid))
    run(conn.ship(shipment(order)))
    before = harness.fake.buyer_view(oid)
    other = handed(order.lines[0].line_id, (("TESTOTHER0009", None, None),))
    assert run(conn.ship(shipment(order, codes=other))) is ShipOutcome.ALREADY_SHIPPED
    assert harness.fake.buyer_view(oid) == before
    outcomes = [c.outcome for c in harness.fake.writebacks.calls if c.kind == "ship"]
    assert outcomes[0] == "applied" and "010004" in outcomes[1]


def test_refund_in_progress_is_not_shippable(harness: DouyinHarness) -> None:
    """An after-sale opened after the order was read makes Douyin refuse the sync: the
    connector re-reads and raises NotShippable; no certificate is stored."""
    oid = harness.create_paid_order()
    conn = connector(harness)
    order = run(conn.fetch_order(oid))
    harness.fake.request_refund(oid)
    with pytest.raises(NotShippable):
        run(conn.ship(shipment(order)))
    assert harness.fake.buyer_view(oid)[0]["certificates"] == []


def test_sync_later_than_a_day_after_payment_is_not_shippable(harness: DouyinHarness) -> None:
    """More than 24 h after payment Douyin refuses certificates (010012): NotShippable."""
    oid = harness.create_paid_order()
    conn = connector(harness)
    order = run(conn.fetch_order(oid))
    harness.clock.advance(timedelta(hours=25))
    with pytest.raises(NotShippable):
        run(conn.ship(shipment(order)))


def test_throttling_and_gateway_failures_are_retriable(harness: DouyinHarness) -> None:
    """Douyin's throttling answer is Throttled; an HTML 502 is Unavailable."""
    oid = harness.create_paid_order()
    conn = connector(harness)
    run(conn.fetch_order(oid))
    harness.fake.set_faults(throttle=1)
    with pytest.raises(Throttled):
        run(conn.fetch_order(oid))
    harness.fake.set_faults(http_500=1)
    with pytest.raises(Unavailable):
        run(conn.fetch_order(oid))


def test_timestamps_follow_the_platform_clock(harness: DouyinHarness) -> None:
    """With Douyin's clock an hour ahead, the first refusal measures the offset and the
    call is signed again with a timestamp Douyin accepts."""
    oid = harness.create_paid_order()
    harness.fake.set_clock_offset(3600)
    assert run(connector(harness).fetch_order(oid)).platform_order_id == oid


def test_memo_is_the_seller_remark(harness: DouyinHarness) -> None:
    """write_memo writes order.addOrderRemark."""
    oid = harness.create_paid_order()
    conn = connector(harness)
    order = run(conn.fetch_order(oid))
    run(conn.write_memo(order, "[robot] 12****89"))
    assert harness.memo(oid) == "[robot] 12****89"


def test_check_reports_every_stage(harness: DouyinHarness) -> None:
    """check() passes with good credentials and names the failing stage with bad ones."""
    assert run(connector(harness).check()).ok
    report = run(connector(harness, MemoryContext("y"), app_secret="wrong").check())
    assert not report.ok and not report.checks[1][1]


def test_poll_refunds_reads_cancelled_orders(harness: DouyinHarness) -> None:
    """A cancelled order comes back from poll_refunds as CLOSED."""
    oid = harness.create_paid_order()
    harness.close_order(oid)
    harness.clock.advance(1)
    result = run(connector(harness).poll_refunds(None, harness.clock.now()))
    assert [(o.platform_order_id, o.status) for o in result.orders] == [
        (oid, PlatformStatus.CLOSED)]


def test_nothing_secret_is_in_the_call_log(harness: DouyinHarness) -> None:
    """The fake's call log redacts the sign and token; no secret value appears."""
    oid = harness.create_paid_order()
    run(connector(harness).fetch_order(oid))
    text = json.dumps([c.to_json() for c in harness.fake.call_log.since(0)])
    assert "fake-app-secret" not in text
    for token in harness.fake.tokens:
        assert token not in text


def test_shipment_naming_an_unknown_sub_order_is_refused(harness: DouyinHarness) -> None:
    """A shipment for a line the order does not have syncs nothing: NotShippable."""
    oid = harness.create_paid_order()
    conn = connector(harness)
    order = run(conn.fetch_order(oid))
    bad = Shipment(order=order, line_ids=("999",), memo="m", item_desc="d",
                   masked_codes=("12****89",))
    with pytest.raises(NotShippable):
        run(conn.ship(bad))
    assert [c for c in harness.fake.writebacks.calls if c.kind == "ship"] == []


def test_a_tool_app_trades_its_authorization_code_once_then_refreshes(
        harness: DouyinHarness) -> None:
    """A tool app (工具型) trades the shop's one-time authorization code for its first token
    (authorization_code), keeps it in the shop's store, and renews with token.refresh; the
    code is never sent again."""
    harness.fake.app_type = "tool"
    code = harness.fake.authorize()
    oid = harness.create_paid_order()
    run(connector(harness, app_type="tool", auth_code=code).fetch_order(oid))
    harness.clock.advance(harness.fake.token_ttl - timedelta(seconds=1000))
    run(connector(harness, app_type="tool", auth_code=code).fetch_order(oid))
    assert calls(harness).count("token.create") == 1
    assert calls(harness).count("token.refresh") == 1


def test_a_tool_app_whose_authorization_lapsed_asks_for_a_new_code(
        harness: DouyinHarness) -> None:
    """When a tool app's stored token is gone and its code was used, Douyin refuses the
    code: an AuthError that names the authorization (the shop is paused, not retried)."""
    harness.fake.app_type = "tool"
    code = harness.fake.authorize()
    oid = harness.create_paid_order()
    run(connector(harness, app_type="tool", auth_code=code).fetch_order(oid))
    with pytest.raises(AuthError, match="authorized the app"):
        run(connector(harness, MemoryContext("fresh-store"), app_type="tool",
                      auth_code=code).fetch_order(oid))


def test_a_tool_app_without_an_authorization_code_is_a_config_error() -> None:
    """app_type tool without auth_code is refused when the shop file is read."""
    with pytest.raises(ValueError, match="auth_code"):
        make_config(app_type="tool")
