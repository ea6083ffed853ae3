"""What a buyer typed on an order (the message to the seller, the SKU's properties) reaches
the normalized order on every platform that carries it, in the platform's own field shapes,
and a top-up mapping reads its account from it."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from connectors.base import Order
from connectors.common import buyertext
from connectors.douyin.normalize import order_from
from connectors.fakebase import OrderRequest
from connectors.pinduoduo.normalize import SPEC_PROPERTY, order_from_row
from connectors.taobao.normalize import trade_to_order
from connectors.wechat.lines import attach_message
from connectors.youzan.normalize import trade_to_order as youzan_order
from robot import supplyroute

ACCOUNT = "13912345678"
MESSAGE = f"请充值到 {ACCOUNT}，谢谢"
PROPS = (("充值号码", ACCOUNT),)


# -- the readers -----------------------------------------------------------------------------

def test_message_is_trimmed_and_empty_is_none() -> None:
    """A message is kept trimmed; blank, missing or non-text values are no message."""
    assert buyertext.message("  hi ") == "hi"
    assert buyertext.message("   ") is None
    assert buyertext.message(None) is None
    assert buyertext.message({"a": 1}) is None
    assert buyertext.message(True) is None


def test_long_message_is_cut() -> None:
    """A message longer than the limit is cut, never refused (the order still comes in)."""
    assert len(buyertext.message("x" * 5000) or "") == buyertext.TEXT_MAX


def test_taobao_style_text_pairs() -> None:
    """``name:value;name:value`` reads as pairs (a full-width colon too); parts without a
    colon are skipped."""
    assert buyertext.from_text("充值面额:50元;充值号码：13912345678;junk") == (
        ("充值面额", "50元"), ("充值号码", ACCOUNT))


def test_objects_and_json_text_of_them() -> None:
    """A list of objects or a JSON text of one reads as pairs; broken JSON reads as none."""
    items = [{"k": "面额", "v": "50元"}, {"k": "", "v": "x"}, "odd"]
    assert buyertext.from_objects(items, "k", "v") == (("面额", "50元"),)
    assert buyertext.from_objects(json.dumps(items), "k", "v") == (("面额", "50元"),)
    assert buyertext.from_objects("[not json", "k", "v") == ()
    assert buyertext.from_object('{"充值号码": "13912345678"}') == PROPS
    assert buyertext.from_object("[]") == ()


# -- each platform's normalization, from its own field shapes ------------------------------

def test_taobao_trade_message_and_sku_properties() -> None:
    """TOP: trade ``buyer_message`` and sub-order ``sku_properties_name``."""
    order = trade_to_order({
        "tid": 1, "status": "WAIT_SELLER_SEND_GOODS", "payment": "50.00",
        "buyer_message": MESSAGE,
        "orders": {"order": [{"oid": 2, "num": 1, "price": "50.00",
                              "sku_properties_name": f"充值面额:50元;充值号码:{ACCOUNT}"}]}})
    assert order.buyer_message == MESSAGE
    assert order.lines[0].properties == (("充值面额", "50元"), ("充值号码", ACCOUNT))


def test_pinduoduo_buyer_memo_and_goods_spec() -> None:
    """POP: order ``buyer_memo``; an item's ``goods_spec`` is one property, 规格."""
    order = order_from_row({
        "order_sn": "240102-1", "order_status": 1, "pay_amount": 50.0, "buyer_memo": MESSAGE,
        "item_list": [{"goods_id": 1, "sku_id": 2, "goods_count": 1, "goods_price": 50.0,
                       "goods_spec": f"50元,{ACCOUNT}"}]})
    assert order.buyer_message == MESSAGE
    assert order.lines[0].properties == ((SPEC_PROPERTY, f"50元,{ACCOUNT}"),)


def test_pinduoduo_empty_memo_and_spec_are_nothing() -> None:
    """POP sends ``""`` when the buyer wrote nothing: no message, no property."""
    order = order_from_row({
        "order_sn": "240102-1", "order_status": 1, "buyer_memo": "",
        "item_list": [{"goods_id": 1, "goods_spec": ""}]})
    assert order.buyer_message is None
    assert order.lines[0].properties == ()


def test_youzan_remark_sku_properties_and_order_fields() -> None:
    """Youzan: ``remark_info.buyer_message``; a line's ``sku_properties_name`` (JSON text of
    ``[{"k","v"}]``) then its ``buyer_messages`` (JSON text of the 下单留言 fields)."""
    order = youzan_order({"full_order_info": {
        "order_info": {"tid": "E1", "status": "WAIT_SELLER_SEND_GOODS"},
        "remark_info": {"buyer_message": MESSAGE},
        "orders": [{"oid": "9", "num": 1, "price": "50.00",
                    "sku_properties_name": json.dumps([{"k": "面额", "k_id": 1, "v": "50元",
                                                        "v_id": 2}], ensure_ascii=False),
                    "buyer_messages": json.dumps({"充值号码": ACCOUNT}, ensure_ascii=False)}]}})
    assert order.buyer_message == MESSAGE
    assert order.lines[0].properties == (("面额", "50元"), ("充值号码", ACCOUNT))


def test_douyin_buyer_words_and_spec() -> None:
    """抖店: shop order ``buyer_words``; a sub-order's ``spec`` list of name/value."""
    order = order_from({
        "order_id": "1", "order_status": 2, "pay_amount": 5000, "buyer_words": MESSAGE,
        "sku_order_list": [{"order_id": "11", "item_num": 1, "goods_price": 5000,
                            "spec": [{"name": "充值号码", "value": ACCOUNT}]}]})
    assert order.buyer_message == MESSAGE
    assert order.lines[0].properties == PROPS


def test_wechat_attach_message() -> None:
    """WeChat Pay: a JSON ``attach`` may carry the buyer's ``message``; other forms carry
    none."""
    assert attach_message(json.dumps({"sku": "X", "message": ACCOUNT})) == ACCOUNT
    assert attach_message("sku=X;qty=1") is None
    assert attach_message("{broken") is None


def test_account_read_from_a_property_and_the_message() -> None:
    """A top-up rule finds the account in the message or in a named property."""
    order = trade_to_order({
        "tid": 1, "status": "WAIT_SELLER_SEND_GOODS", "buyer_message": MESSAGE,
        "orders": {"order": [{"oid": 2, "num": 1, "sku_properties_name": f"充值号码:{ACCOUNT}"}]}})
    by_message = SimpleNamespace(source="buyer_message", format="mobile", pattern=None)
    by_property = SimpleNamespace(source="property.充值号码", format="mobile", pattern=None)
    assert supplyroute.read_account(by_message, order, order.lines[0]) == (ACCOUNT, None)
    assert supplyroute.read_account(by_property, order, order.lines[0]) == (ACCOUNT, None)


def test_order_repr_leaves_the_message_out() -> None:
    """The message never shows in an order's repr (a log line or traceback naming it)."""
    order = trade_to_order({"tid": 1, "status": "WAIT_SELLER_SEND_GOODS",
                            "buyer_message": MESSAGE, "orders": {"order": []}})
    assert ACCOUNT not in repr(order)


# -- each fake carries them and the connector reads them back over loopback HTTP ----------

def test_control_request_takes_message_and_properties() -> None:
    """The fakes' control API takes a message and properties, and refuses malformed ones."""
    request = OrderRequest.from_json({"sku": "X", "message": MESSAGE,
                                      "properties": {"充值号码": ACCOUNT}})
    assert (request.message, request.properties) == (MESSAGE, PROPS)
    with pytest.raises(ValueError, match="properties"):
        OrderRequest.from_json({"sku": "X", "properties": {"a:b": "c"}})
    with pytest.raises(ValueError, match="message"):
        OrderRequest.from_json({"sku": "X", "message": ""})


def _fetched(harness: Any, oid: str) -> Order:
    connector = harness.connector()

    async def run() -> Order:
        try:
            return await connector.fetch_order(oid)
        finally:
            await connector.aclose()
    return asyncio.run(run())


def _pushed(harness: Any, oid: str) -> Order:
    headers, body = harness.signed_push(oid)
    order = harness.connector().parse_push(headers, body, datetime.now(UTC)).events[0].order
    assert order is not None
    return order


#: platform -> (the harness's fake, how the connector reads the order, what it carries)
PLATFORMS: dict[str, tuple[Callable[[Any], Any], Callable[[Any, str], Order], bool]] = {
    "taobao": (lambda h: h.top, _fetched, True),
    "pinduoduo": (lambda h: h.state, _fetched, True),
    "youzan": (lambda h: h.fake, _fetched, True),
    "douyin": (lambda h: h.fake, _fetched, True),
    "wechat": (lambda h: h.fake, _pushed, False),  # WeChat Pay carries no SKU properties
}


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_fake_serves_message_and_properties(platform: str) -> None:
    """A paid order placed with a message and properties on the fake comes back, through the
    real connector over loopback HTTP, with the message and (where the platform has them)
    the account among the line's properties."""
    fake_of, read, has_properties = PLATFORMS[platform]
    harness_module = importlib.import_module(f"connectors.{platform}.harness")
    with harness_module.make_harness() as harness:
        fake = fake_of(harness)
        oid = fake.create_paid_order(OrderRequest(sku="SKU-TOPUP-50", message=MESSAGE,
                                                  properties=PROPS))
        order = read(harness, oid)
    assert order.buyer_message == MESSAGE
    values = [value for line in order.lines for _name, value in line.properties]
    assert (ACCOUNT in " ".join(values)) is has_properties


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_fake_without_message_gives_none(platform: str) -> None:
    """An order placed without a message or properties reads as none (no empty strings)."""
    fake_of, read, _ = PLATFORMS[platform]
    harness_module = importlib.import_module(f"connectors.{platform}.harness")
    with harness_module.make_harness() as harness:
        oid = fake_of(harness).create_paid_order(OrderRequest(sku="SKU-TOPUP-50"))
        order = read(harness, oid)
    assert order.buyer_message is None
    assert all(line.properties == () for line in order.lines)


# -- personal data: never logged, masked where shown ----------------------------------------

def test_message_account_is_masked_in_orders_show_and_never_logged(engine: Any,
                                                                   vault: Any) -> None:
    """An order whose buyer message carries the account: taken in, routed and bought, no log
    line holds the message or the account, and ``robot orders show`` shows the account
    masked only."""
    from structlog.testing import capture_logs

    from connectors.memsupplier import MemorySupplier, MemorySupplierBackend
    from robot import orders, pipeline
    from robot.clock import utcnow
    from robot.config import SkuMapping
    from robot.sourcing import Sourcer, SourcingPolicy
    from tests.factories import Shop, paid_order

    mapping = SkuMapping.model_validate({
        "sku_id": "t50", "account": {"source": "property.充值号码", "format": "mobile"},
        "suppliers": [{"supplier": "s", "product": "topup-mobile-50", "max_cost": "49.90"}]})
    shop = Shop(items=(mapping,))  # type: ignore[arg-type]
    base = paid_order("PD1", ("t50", 1))
    line = dataclasses.replace(base.lines[0], properties=PROPS)
    snap = dataclasses.replace(base, lines=(line,), buyer_message=MESSAGE)
    backend = MemorySupplierBackend()
    sourcer = Sourcer(engine, vault, {"s": MemorySupplier(backend)},
                      SourcingPolicy(query_initial=0.001, query_max=0.001, price_ttl=0),
                      worker="test")
    with capture_logs() as logs:
        result = pipeline.intake(engine, shop, snap, allocate=True)
        for _ in range(2):
            asyncio.run(sourcer.run_once(now=utcnow() + timedelta(hours=2)))
            backend.settle()
    assert result.order_id is not None
    shown = json.dumps(orders.show_order(engine, vault, result.order_id), default=str,
                       ensure_ascii=False)
    assert "139****5678" in shown
    assert ACCOUNT not in shown and "请充值" not in shown
    logged = json.dumps(logs, default=str, ensure_ascii=False)
    assert logs and ACCOUNT not in logged and "请充值" not in logged
    assert [o.request.account for o in backend.orders.values()] == [ACCOUNT]
