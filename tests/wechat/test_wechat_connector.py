"""The connector's calls against the fake (in-process): shipping-info upload and its error
codes, get_order mapping, the durable stable token, check(), and the push-only no-ops.

What must hold: the upload is a virtual, unified delivery naming the payment and payer with
the Shipment's item_desc; 10060001 is retried later, 10060003/10060023 are success,
10060004 is settled by re-reading the order; a rejected token is renewed once (never more)
and shared through the store; credentials problems are Fatal.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
import pytest

from connectors.base import Order, PlatformStatus, Shipment, ShipOutcome
from connectors.wechat import WechatConnector, WechatConnectorFactory
from connectors.wechat.client import upload_time
from connectors.wechat.fake import FakeClock, FakeWechat, create_app
from connectors.wechat.token import SECRET_NAME
from robot.errors import (
    AuthError,
    NotShippable,
    PermissionDenied,
    Throttled,
    Unavailable,
)
from tests.wechat.helpers import SKU, MemoryContext, make_config

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC))


@pytest.fixture
def fake(clock: FakeClock) -> FakeWechat:
    return FakeWechat(clock=clock.now)


@pytest.fixture
def context() -> MemoryContext:
    return MemoryContext()


def make(fake: FakeWechat, context: MemoryContext, clock: FakeClock, **overrides: Any
         ) -> WechatConnector:
    return WechatConnector(make_config(fake, **overrides), context,
                           transport=httpx.ASGITransport(app=create_app(fake)), clock=clock.now)


@pytest.fixture
def connector(fake: FakeWechat, context: MemoryContext, clock: FakeClock) -> WechatConnector:
    return make(fake, context, clock)


def _order(fake: FakeWechat, oid: str, **extra: str) -> Order:
    payment = fake.payments[oid]
    facts = {"transaction_id": payment.transaction_id, "openid": payment.openid,
             "mchid": fake.mchid, "out_trade_no": oid}
    facts.update(extra)
    return Order(platform_order_id=oid, status=PlatformStatus.PAID, lines=(),
                 extra={k: v for k, v in facts.items() if v})


def _shipment(order: Order, desc: str = "VIP card x1") -> Shipment:
    return Shipment(order=order, line_ids=("1",), memo="[robot] 12****89", item_desc=desc,
                    masked_codes=("12****89",))


def test_upload_is_virtual_unified_with_item_desc(fake: FakeWechat,
                                                   connector: WechatConnector) -> None:
    """The first upload ships (logistics_type 3, item_desc from the Shipment)."""
    oid = fake.create_payment(attach=f"sku={SKU}")
    assert run(connector.ship(_shipment(_order(fake, oid)))) is ShipOutcome.SHIPPED
    payment = fake.payments[oid]
    assert payment.shipments == 1 and payment.state == 2
    assert payment.item_desc == "VIP card x1"


def test_upload_by_out_trade_no_and_openid_from_get_order(fake: FakeWechat,
                                                          connector: WechatConnector) -> None:
    """Without transaction_id/openid in extra, mchid+out_trade_no and get_order's openid."""
    oid = fake.create_payment(attach=f"sku={SKU}")
    order = _order(fake, oid, transaction_id="", openid="")
    assert run(connector.ship(_shipment(order, desc=""))) is ShipOutcome.SHIPPED
    assert fake.payments[oid].item_desc == "虚拟商品"


def test_shipped_again_is_already_shipped(fake: FakeWechat, connector: WechatConnector) -> None:
    """10060003 on a second upload is reported ALREADY_SHIPPED and applies nothing."""
    oid = fake.create_payment(attach=f"sku={SKU}")
    order = _order(fake, oid)
    assert run(connector.ship(_shipment(order))) is ShipOutcome.SHIPPED
    assert run(connector.ship(_shipment(order))) is ShipOutcome.ALREADY_SHIPPED
    assert fake.payments[oid].shipments == 1


def test_not_indexed_is_retriable_with_delay(fake: FakeWechat, connector: WechatConnector
                                             ) -> None:
    """10060001 → Unavailable with retry_after; the next attempt ships."""
    oid = fake.create_payment(attach=f"sku={SKU}")
    fake.set_faults(not_indexed_calls=1)
    with pytest.raises(Unavailable) as info:
        run(connector.ship(_shipment(_order(fake, oid))))
    assert info.value.retry_after == 30
    assert run(connector.ship(_shipment(_order(fake, oid)))) is ShipOutcome.SHIPPED


@pytest.mark.parametrize(("state", "outcome"), [(3, ShipOutcome.ALREADY_SHIPPED),
                                                (4, ShipOutcome.ALREADY_SHIPPED),
                                                (5, None)])
def test_unshippable_state_is_reconciled(fake: FakeWechat, connector: WechatConnector,
                                         state: int, outcome: ShipOutcome | None) -> None:
    """10060004 is settled by get_order: 3/4 already shipped, 5 (refunded) NotShippable."""
    oid = fake.create_payment(attach=f"sku={SKU}")
    fake.set_state(oid, state)
    if outcome is None:
        with pytest.raises(NotShippable):
            run(connector.ship(_shipment(_order(fake, oid))))
    else:
        assert run(connector.ship(_shipment(_order(fake, oid)))) is outcome
    assert fake.payments[oid].shipments == 0


def test_closed_snapshot_is_refused_without_a_call(fake: FakeWechat,
                                                   connector: WechatConnector) -> None:
    """A CLOSED snapshot raises NotShippable and never reaches WeChat."""
    oid = fake.create_payment(attach=f"sku={SKU}")
    closed = Order(platform_order_id=oid, status=PlatformStatus.CLOSED, lines=())
    with pytest.raises(NotShippable):
        run(connector.ship(_shipment(closed)))
    assert fake.payments[oid].upload_calls == 0 and fake.token_grants == 0


def test_fetch_order_maps_order_state(fake: FakeWechat, connector: WechatConnector) -> None:
    """get_order's order_state maps to PAID/SHIPPED/COMPLETED/CLOSED; rule lines apply."""
    oid = fake.create_payment(total=2000, out_trade_no="CT-fetch")
    order = run(connector.fetch_order(oid))
    assert order.status is PlatformStatus.PAID and order.total_cents == 2000
    assert [(ln.sku_id, ln.quantity) for ln in order.lines] == [(SKU, 2)]
    assert order.extra["transaction_id"] == fake.payments[oid].transaction_id
    for state, status in ((2, PlatformStatus.SHIPPED), (3, PlatformStatus.COMPLETED),
                          (4, PlatformStatus.COMPLETED), (5, PlatformStatus.CLOSED)):
        fake.set_state(oid, state)
        assert run(connector.fetch_order(oid)).status is status


def test_fetch_unknown_order_is_retriable(connector: WechatConnector) -> None:
    """An order WeChat does not know (yet) is Unavailable, not a crash."""
    with pytest.raises(Unavailable):
        run(connector.fetch_order("nope"))


def test_token_is_cached_durably_and_shared(fake: FakeWechat, context: MemoryContext,
                                           clock: FakeClock) -> None:
    """One stable_token for two connectors on the same store; renewed near expiry."""
    oid = fake.create_payment(attach=f"sku={SKU}")
    run(make(fake, context, clock).fetch_order(oid))
    run(make(fake, context, clock).fetch_order(oid))
    assert fake.token_grants == 1
    stored = json.loads(context.secrets[SECRET_NAME])
    assert stored["access_token"] == fake.current_token
    clock.advance(timedelta(seconds=7200 - 200))  # inside the 300 s refresh margin
    run(make(fake, context, clock).fetch_order(oid))
    assert fake.token_grants == 2


@pytest.mark.parametrize("fault", ["expire", "force"])
def test_rejected_token_is_renewed_once(fake: FakeWechat, context: MemoryContext,
                                        clock: FakeClock, fault: str) -> None:
    """42001 (expired) or 40001 (another process forced a new one) → one renewal."""
    oid = fake.create_payment(attach=f"sku={SKU}")
    connector = make(fake, context, clock)
    run(connector.fetch_order(oid))
    if fault == "expire":
        fake.expire_tokens()
    else:
        fake.stable_token({"grant_type": "client_credential", "appid": fake.appid,
                           "secret": fake.app_secret, "force_refresh": True})
    grants = fake.token_grants
    assert run(connector.fetch_order(oid)).status is PlatformStatus.PAID
    assert fake.token_grants == grants + (1 if fault == "expire" else 0)


def test_revoked_secret_is_fatal(fake: FakeWechat, connector: WechatConnector) -> None:
    """A reset app secret surfaces as AuthError (the shop is paused)."""
    oid = fake.create_payment(attach=f"sku={SKU}")
    run(connector.fetch_order(oid))
    fake.revoke()
    with pytest.raises(AuthError):
        run(connector.fetch_order(oid))


def test_a_renewed_token_refused_again_is_retried_later_not_fatal(
        fake: FakeWechat, connector: WechatConnector) -> None:
    """WeChat refuses even the token it just granted: Unavailable (retried), not AuthError."""
    oid = fake.create_payment(attach=f"sku={SKU}")
    run(connector.fetch_order(oid))
    grant = fake.stable_token

    def grant_then_expire(body: dict[str, Any]) -> dict[str, Any]:
        document = grant(body)
        fake.expire_tokens()  # every token, the new one too, is expired at once
        return document

    fake.stable_token = grant_then_expire  # type: ignore[method-assign]
    fake.expire_tokens()
    with pytest.raises(Unavailable, match="again after renewing"):
        run(connector.fetch_order(oid))
    fake.stable_token = grant  # type: ignore[method-assign]
    assert run(connector.fetch_order(oid)).status is PlatformStatus.PAID


def test_throttled_busy_and_502(fake: FakeWechat, connector: WechatConnector) -> None:
    """45011 → Throttled with a delay; -1 and HTML 502 → Unavailable."""
    oid = fake.create_payment(attach=f"sku={SKU}")
    run(connector.fetch_order(oid))
    fake.set_faults(throttle_next=1)
    with pytest.raises(Throttled) as info:
        run(connector.fetch_order(oid))
    assert info.value.retry_after
    fake.set_faults(busy_next=1)
    with pytest.raises(Unavailable):
        run(connector.fetch_order(oid))
    fake.set_faults(fail_next=1)
    with pytest.raises(Unavailable) as failed:
        run(connector.fetch_order(oid))
    assert "access_token" not in failed.value.message


def test_check(fake: FakeWechat, connector: WechatConnector, context: MemoryContext,
               clock: FakeClock) -> None:
    """check() passes with a token and is_trade_managed; fails when either is missing."""
    assert run(connector.check()).ok
    fake.set_faults(managed=False)
    report = run(connector.check())
    assert not report.ok and report.checks[-1][0] == "shipping-info management"
    bad = make(fake, MemoryContext(), clock, app_secret="wrong")
    report = run(bad.check())
    assert not report.ok and report.checks[1][1] is False


def test_unauthorized_api_is_permission_denied(fake: FakeWechat,
                                               connector: WechatConnector) -> None:
    """48001 maps to PermissionDenied."""
    from connectors.wechat.errors import map_errcode
    assert isinstance(map_errcode("x", 48001, "api unauthorized"), PermissionDenied)


def test_poll_and_memo_are_no_ops(connector: WechatConnector, fake: FakeWechat) -> None:
    """poll/poll_refunds return nothing with the cursor unchanged; write_memo calls nothing."""
    now = datetime.now(UTC)
    for poll in (connector.poll, connector.poll_refunds):
        result = run(poll({"x": 1}, now))
        assert result.orders == () and dict(result.cursor) == {"x": 1} and not result.more
    oid = fake.create_payment(attach=f"sku={SKU}")
    run(connector.write_memo(_order(fake, oid), "[robot] 12****89"))
    assert fake.token_grants == 0


def test_upload_time_is_rfc3339_china_time() -> None:
    """upload_time is RFC 3339 with milliseconds in +08:00."""
    stamp = upload_time(datetime(2024, 1, 1, 19, 4, 5, 120000, tzinfo=UTC))
    assert stamp == "2024-01-02T03:04:05.120+08:00"


def test_factory_and_config_validation(fake: FakeWechat, context: MemoryContext) -> None:
    """The factory builds from a validated config; bad keys and APIv3 keys are refused."""
    assert isinstance(WechatConnectorFactory().create(make_config(fake), context),
                      WechatConnector)
    with pytest.raises(ValueError, match="apiv3_key"):
        make_config(fake, apiv3_key="short")
    with pytest.raises(ValueError, match="not a PEM"):
        make_config(fake, wechatpay_public_keys={"S": "not a pem"})
