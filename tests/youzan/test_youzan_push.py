"""Youzan push verification: Event-Sign on the raw bytes, msg decoding, topics, test messages."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import quote

import pytest

from connectors.base import PushKind
from connectors.youzan import event_sign
from connectors.youzan.fake import FakeClock
from connectors.youzan.push import SUCCESS_REPLY
from robot.errors import PushRejected
from tests.youzan.helpers import CLIENT_ID, CLIENT_SECRET, KDT_ID, in_process, make_fake

NOW = datetime(2024, 1, 2, tzinfo=UTC)


def _signed(payload: dict[str, object]) -> tuple[dict[str, str], bytes]:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return {"Event-Sign": event_sign(CLIENT_ID, body, CLIENT_SECRET),
            "Event-Type": str(payload.get("type", ""))}, body


def _trade_msg(topic: str, tid: str = "E20240102030405000000001", msg_id: str = "m-1"
               ) -> dict[str, object]:
    msg = quote(json.dumps({"tid": tid, "status": "WAIT_SELLER_SEND_GOODS"}), safe="")
    return {"client_id": CLIENT_ID, "kdt_id": int(KDT_ID), "id": tid, "type": topic,
            "status": "WAIT_SELLER_SEND_GOODS", "msg": msg, "msg_id": msg_id,
            "version": 1704164645, "sendCount": 1, "test": False, "mode": 1}


def _parse(headers: dict[str, str], body: bytes):  # type: ignore[no-untyped-def]
    return in_process(make_fake()).parse_push(headers, body, NOW)


def test_event_sign_matches_the_appendix_a_vector() -> None:
    """MD5(client_id + raw body + secret), lowercase hex, as in PLATFORMS.md Appendix A."""
    body = (b'{"client_id":"cid","kdt_id":1,"type":"trade_TradeBuyerPay",'
            b'"msg":"%7B%22tid%22%3A%22E1%22%7D"}')
    assert event_sign("cid", body, "csecret") == "fee9cbf875790b0e7bb60140dc5ad633"


def test_genuine_paid_push_gives_one_thin_event_and_the_success_reply() -> None:
    """A signed trade_TradeBuyerPay yields a PAID event for its tid with msg_id as message id."""
    headers, body = _signed(_trade_msg("trade_TradeBuyerPay"))
    batch = _parse(headers, body)
    (event,) = batch.events
    assert (event.kind, event.platform_order_id, event.message_id) == (
        PushKind.PAID, "E20240102030405000000001", "m-1")
    assert event.order is None  # the core reads the trade with fetch_order
    assert batch.reply_status == 200
    assert b"success" in batch.reply_body
    assert batch.reply_body == SUCCESS_REPLY


@pytest.mark.parametrize(("topic", "kind"), [
    ("trade_TradePaid", PushKind.PAID),  # the only paid topic virtual goods get
    ("trade_TradeClose", PushKind.CLOSED),
    ("trade_refund_RefundSuccess", PushKind.REFUND),
])
def test_topics_map_to_event_kinds(topic: str, kind: PushKind) -> None:
    """Paid (incl. TradePaid for virtual items), close and refund topics are events."""
    headers, body = _signed(_trade_msg(topic))
    assert [e.kind for e in _parse(headers, body).events] == [kind]


def test_new_refund_message_carries_msg_as_an_object() -> None:
    """youzan_trade_Refund* messages have msg as a JSON object, not URL-encoded text."""
    payload = {"client_id": CLIENT_ID, "kdt_id": int(KDT_ID), "type": "youzan_trade_RefundSuccess",
               "msg": {"refund_id": "201900000001", "tid": "E2024XYZ", "refunded_fee": "10.00"},
               "msg_id": "m-r", "test": False}
    headers, body = _signed(payload)
    (event,) = _parse(headers, body).events
    assert (event.kind, event.platform_order_id) == (PushKind.REFUND, "E2024XYZ")


def test_ignored_topics_and_test_messages_are_accepted_without_events() -> None:
    """A test push (sent when the URL is configured) and unrelated topics: success, no event."""
    for payload in ({"client_id": CLIENT_ID, "kdt_id": int(KDT_ID), "msg": "", "test": True},
                    _trade_msg("trade_TradeMemoModified"), _trade_msg("trade_TradeCreate")):
        headers, body = _signed(payload)
        batch = _parse(headers, body)
        assert batch.events == ()
        assert b"success" in batch.reply_body


def test_signature_is_checked_on_raw_bytes_not_reserialized_json() -> None:
    """Whitespace the sender put in the body is part of what is signed."""
    body = json.dumps(_trade_msg("trade_TradeBuyerPay"), indent=1).encode()
    headers = {"event-sign": event_sign(CLIENT_ID, body, CLIENT_SECRET).upper()}
    assert len(_parse(headers, body).events) == 1
    compact = json.dumps(json.loads(body), separators=(",", ":")).encode()
    with pytest.raises(PushRejected):
        _parse(headers, compact)


def test_parse_push_has_no_side_effects_on_the_platform() -> None:
    """Verifying a push (genuine or forged) makes no API call and no token request."""
    fake = make_fake(FakeClock())
    tid = fake.create_trade()
    headers, body = fake.signed_push(tid)
    connector = in_process(fake)
    assert len(connector.parse_push(headers, body, NOW).events) == 1
    with pytest.raises(PushRejected):
        connector.parse_push(headers, body + b" ", NOW)
    assert fake.calls == []
    assert fake.tokens_issued == 0


def test_fake_push_bodies_carry_a_valid_legacy_sign_too() -> None:
    """The fake's body ``sign`` is MD5(client_id + encoded msg + secret), like Youzan's."""
    fake = make_fake(FakeClock())
    tid = fake.create_trade()
    _, body = fake.signed_push(tid, "trade_TradePaid")
    payload = json.loads(body)
    assert payload["sign"] == event_sign(CLIENT_ID, payload["msg"].encode(), CLIENT_SECRET)
    assert payload["msg"].startswith("%7B")
