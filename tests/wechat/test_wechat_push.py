"""Verification and decoding of pushes: WeChat Pay signatures and AES-GCM resources, the
merchant backend's HMAC posts, and how lines are read from ``attach`` / ``out_trade_no``.

Every failure must raise PushRejected, and ``parse_push`` must touch nothing (the connector's
durable store is checked after every rejection).
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from connectors.base import PlatformStatus, PushKind, RefundState
from connectors.wechat import WechatConnector, backend_signature
from connectors.wechat.crypto import decrypt_resource, encrypt_resource
from connectors.wechat.fake import FakeWechat
from connectors.wechat.lines import parse_attach
from robot.errors import PushRejected
from tests.wechat.helpers import BACKEND_SECRET, SKU, MemoryContext, make_config

NOW = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture(scope="module")
def fake() -> FakeWechat:
    return FakeWechat(clock=lambda: NOW)


@pytest.fixture
def context() -> MemoryContext:
    return MemoryContext()


@pytest.fixture
def connector(fake: FakeWechat, context: MemoryContext) -> WechatConnector:
    return WechatConnector(make_config(fake), context)


def _push(fake: FakeWechat, oid: str, stamp: datetime = NOW) -> tuple[dict[str, str], bytes]:
    body = fake.envelope(fake.notification_for(oid))
    return fake.signed(body, stamp), body


def _rejected(connector: WechatConnector, context: MemoryContext, headers: dict[str, str],
              body: bytes, now: datetime = NOW) -> PushRejected:
    with pytest.raises(PushRejected) as info:
        connector.parse_push(headers, body, now)
    assert context.secrets == {} and context.stores == 0  # no side effects
    return info.value


def test_good_notification_becomes_a_complete_paid_order(fake: FakeWechat,
                                                         connector: WechatConnector) -> None:
    """A genuine TRANSACTION.SUCCESS yields the full order keyed by out_trade_no."""
    oid = fake.create_payment(total=1980, attach=json.dumps({"sku": SKU, "qty": 2}))
    headers, body = _push(fake, oid)
    batch = connector.parse_push(headers, body, NOW + timedelta(seconds=30))
    assert batch.reply_status == 200
    (event,) = batch.events
    payment = fake.payments[oid]
    assert event.kind is PushKind.PAID and event.platform_order_id == oid
    assert event.message_id == f"wxpay:{payment.transaction_id}"
    order = event.order
    assert order is not None and order.status is PlatformStatus.PAID
    assert [(ln.sku_id, ln.quantity) for ln in order.lines] == [(SKU, 2)]
    assert order.total_cents == 1980 and order.buyer_id == payment.openid
    assert order.extra["transaction_id"] == payment.transaction_id
    assert order.extra["openid"] == payment.openid and order.extra["mchid"] == fake.mchid
    assert order.paid_at == NOW


def test_timestamp_just_inside_the_window_is_accepted(fake: FakeWechat,
                                                      connector: WechatConnector) -> None:
    """4 min 59 s old is still fresh."""
    headers, body = _push(fake, fake.create_payment(attach=f"sku={SKU}"),
                          NOW - timedelta(minutes=4, seconds=59))
    assert len(connector.parse_push(headers, body, NOW).events) == 1


def _resign(fake: FakeWechat, envelope: dict[str, object]) -> tuple[dict[str, str], bytes]:
    body = json.dumps(envelope).encode()
    return fake.signed(body, NOW), body


def test_decryption_good_and_wrong_key() -> None:
    """AES-256-GCM opens with the right key and refuses another one."""
    key, other = "k" * 32, "x" * 32
    sealed = encrypt_resource(key, "n" * 12, "transaction", b'{"a":1}')
    assert decrypt_resource(key, "n" * 12, "transaction", sealed) == b'{"a":1}'
    with pytest.raises(PushRejected):
        decrypt_resource(other, "n" * 12, "transaction", sealed)


def test_decryption_refuses_altered_ciphertext_or_associated_data() -> None:
    """A flipped ciphertext bit, another associated_data or nonce fails authentication."""
    key = "k" * 32
    sealed = encrypt_resource(key, "n" * 12, "transaction", b'{"a":1}')
    raw = bytearray(base64.b64decode(sealed))
    raw[0] ^= 1
    for args in (("n" * 12, "transaction", base64.b64encode(bytes(raw)).decode()),
                 ("n" * 12, "refund", sealed), ("n" * 12, "", sealed),
                 ("m" * 12, "transaction", sealed), ("short", "transaction", sealed)):
        with pytest.raises(PushRejected):
            decrypt_resource(key, *args)


def test_signed_notification_with_wrong_apiv3_key_is_rejected(
        fake: FakeWechat, context: MemoryContext) -> None:
    """Correctly signed but encrypted with another APIv3 key: refused, nothing stored."""
    connector = WechatConnector(make_config(fake, apiv3_key="z" * 32), context)
    headers, body = _push(fake, fake.create_payment(attach=f"sku={SKU}"))
    _rejected(connector, context, headers, body)


def test_signed_notification_with_altered_resource_is_rejected(
        fake: FakeWechat, connector: WechatConnector, context: MemoryContext) -> None:
    """Re-signed (as an attacker with the key could not) but with a changed associated_data:
    decryption fails."""
    _, body = _push(fake, fake.create_payment(attach=f"sku={SKU}"))
    envelope = json.loads(body)
    envelope["resource"]["associated_data"] = "refund"
    headers, body = _resign(fake, envelope)
    _rejected(connector, context, headers, body)


def test_other_merchant_or_app_is_rejected(fake: FakeWechat, context: MemoryContext) -> None:
    """A genuine notification for another mchid or appid is refused."""
    for override in ({"mchid": "1230000000"}, {"appid": "wxother"}):
        connector = WechatConnector(make_config(fake, **override), context)
        headers, body = _push(fake, fake.create_payment(attach=f"sku={SKU}"))
        _rejected(connector, context, headers, body)


def test_refund_notifications(fake: FakeWechat, connector: WechatConnector) -> None:
    """REFUND.SUCCESS: full → CLOSED snapshot; partial → line 1 refund requested."""
    full = fake.create_payment(total=1000, attach=f"sku={SKU}")
    part = fake.create_payment(total=2000, attach=f"sku={SKU};qty=2")
    fake.refund(full)
    fake.refund(part, 1000)
    notes = [n for n in fake.notifications if n.event_type == "REFUND.SUCCESS"][-2:]
    orders = {}
    for note in notes:
        body = fake.envelope(note)
        (event,) = connector.parse_push(fake.signed(body, NOW), body, NOW).events
        assert event.kind is PushKind.REFUND and event.message_id.startswith("wxrefund:")
        assert event.order is not None
        orders[event.platform_order_id] = event.order
    assert orders[full].status is PlatformStatus.CLOSED
    assert orders[part].status is PlatformStatus.PAID
    assert [ln.refund for ln in orders[part].lines] == [RefundState.REQUESTED]


def test_unresolved_lines_hold_or_wait_for_backend(fake: FakeWechat,
                                                   context: MemoryContext) -> None:
    """No attach and no rule: one SKU-less line (held), or no event in backend mode."""
    oid = fake.create_payment(total=500, attach="free text")
    headers, body = _push(fake, oid)
    (event,) = WechatConnector(make_config(fake), context).parse_push(headers, body, NOW).events
    assert event.order is not None
    assert [(ln.sku_id, ln.quantity) for ln in event.order.lines] == [(None, 1)]
    waiting = WechatConnector(make_config(fake, unresolved_lines="backend"), context)
    assert waiting.parse_push(headers, body, NOW).events == ()


def test_out_trade_no_rule_quantity_from_amount(fake: FakeWechat,
                                                connector: WechatConnector) -> None:
    """A prefix rule with unit_price_cents derives the quantity from the paid amount."""
    oid = fake.create_payment(total=3000, out_trade_no="CT-0001")
    headers, body = _push(fake, oid)
    (event,) = connector.parse_push(headers, body, NOW).events
    assert event.order is not None
    assert [(ln.sku_id, ln.quantity) for ln in event.order.lines] == [(SKU, 3)]


@pytest.mark.parametrize(("attach", "expected"), [
    ('{"sku":"X","qty":1}', [("X", 1)]),
    ('{"sku":"X"}', [("X", 1)]),
    ('[{"sku":"X","qty":2},{"sku":"Y","quantity":3}]', [("X", 2), ("Y", 3)]),
    ('{"items":[{"sku":"X","qty":2}]}', [("X", 2)]),
    ("sku=X;qty=1", [("X", 1)]),
    ("sku=X&qty=4", [("X", 4)]),
    ("sku=X;qty=1|sku=Y;qty=2", [("X", 1), ("Y", 2)]),
    ("", None), ("hello", None), ('{"qty":1}', None), ("sku=X;qty=0", None),
    ("sku=X;qty=abc", None), ('{"sku":"X","qty":true}', None), ("{broken", None),
])
def test_attach_formats(attach: str, expected: list[tuple[str, int]] | None) -> None:
    """The documented attach formats parse; anything else names no SKU."""
    assert parse_attach(attach) == expected


def _backend_post(body: dict[str, object], stamp: datetime = NOW,
                  secret: str = BACKEND_SECRET) -> tuple[dict[str, str], bytes]:
    raw = json.dumps(body).encode()
    ts = str(int(stamp.timestamp()))
    return {"X-Robot-Timestamp": ts,
            "X-Robot-Signature": backend_signature(secret, ts, raw)}, raw


BACKEND_BODY: dict[str, object] = {"out_trade_no": "M1", "transaction_id": "4200000001",
                                   "openid": "o-buyer", "total": 1000,
                                   "lines": [{"sku": SKU, "qty": 1}]}


def test_backend_post_good(connector: WechatConnector) -> None:
    """A signed backend post is a PAID order with its lines and payment facts."""
    headers, body = _backend_post(BACKEND_BODY)
    batch = connector.parse_push(headers, body, NOW)
    (event,) = batch.events
    assert event.message_id == "backend:M1:paid" and event.order is not None
    assert [(ln.sku_id, ln.quantity) for ln in event.order.lines] == [(SKU, 1)]
    assert event.order.extra["transaction_id"] == "4200000001"
    assert event.order.extra["openid"] == "o-buyer"


def test_backend_post_carries_the_buyers_contact(connector: WechatConnector) -> None:
    """``email`` and ``phone`` in a backend post become the order's contact (for buyer
    notifications); absent, blank or not text, the order simply has none."""
    headers, body = _backend_post({**BACKEND_BODY, "email": " b@example.net ",
                                   "phone": "13800138000"})
    (event,) = connector.parse_push(headers, body, NOW).events
    assert event.order is not None
    assert (event.order.buyer_email, event.order.buyer_phone) == ("b@example.net",
                                                                  "13800138000")
    headers, body = _backend_post({**BACKEND_BODY, "email": "", "phone": 13800138000})
    (event,) = connector.parse_push(headers, body, NOW).events
    assert event.order is not None
    assert (event.order.buyer_email, event.order.buyer_phone) == (None, None)


def test_backend_post_carries_the_buyers_message_and_line_properties(
        connector: WechatConnector) -> None:
    """``message`` becomes the order's buyer message and a line's ``properties`` its SKU
    properties (a top-up's account); odd values are simply left out."""
    headers, body = _backend_post({**BACKEND_BODY, "message": " 充值 13912345678 ",
                                   "lines": [{"sku": SKU, "qty": 1,
                                              "properties": {"充值号码": "13912345678",
                                                             "bad": 5}}]})
    (event,) = connector.parse_push(headers, body, NOW).events
    assert event.order is not None
    assert event.order.buyer_message == "充值 13912345678"
    assert event.order.lines[0].properties == (("充值号码", "13912345678"), ("bad", "5"))
    headers, body = _backend_post({**BACKEND_BODY, "message": ["x"],
                                   "lines": [{"sku": SKU, "properties": "no"}]})
    (event,) = connector.parse_push(headers, body, NOW).events
    assert event.order is not None
    assert event.order.buyer_message is None and event.order.lines[0].properties == ()


def test_backend_post_disabled_without_secret(fake: FakeWechat, context: MemoryContext) -> None:
    """With no backend_secret configured, backend posts are refused."""
    connector = WechatConnector(make_config(fake, backend_secret=None), context)
    headers, body = _backend_post(BACKEND_BODY)
    _rejected(connector, context, headers, body)
