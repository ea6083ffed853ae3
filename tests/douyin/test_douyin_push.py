"""Douyin push verification and decoding (:func:`connectors.douyin.push.parse_push`)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from connectors.base import PushKind
from connectors.douyin.push import SUCCESS_REPLY, BadRequest, parse_push
from connectors.douyin.sign import event_sign
from connectors.errors import PushRejected

KEY, SECRET, SHOP = "app-1", "secret-1", "77001"


def _push(messages: list[dict[str, Any]], *, key: str = KEY, secret: str = SECRET
          ) -> tuple[dict[str, str], bytes]:
    body = json.dumps(messages, separators=(",", ":")).encode()
    return {"app-id": key, "event-sign": event_sign(key, body, secret)}, body


def _msg(tag: str, data: Any, msg_id: str = "m1") -> dict[str, Any]:
    return {"tag": tag, "msg_id": msg_id,
            "data": json.dumps(data) if not isinstance(data, str) else data}


def parse(headers: dict[str, str], body: bytes) -> Any:
    return parse_push(headers, body, app_key=KEY, app_secret=SECRET, shop_id=SHOP)


def test_paid_message_becomes_a_thin_paid_event() -> None:
    """Tag 101 names the paid order (p_id); the reply is {"code":0,"msg":"success"}."""
    headers, body = _push([_msg("101", {"p_id": 6920000000000000001, "shop_id": 77001,
                                        "order_status": 2, "s_ids": [1]})])
    batch = parse(headers, body)
    assert [(e.kind, e.platform_order_id, e.message_id, e.order) for e in batch.events] == [
        (PushKind.PAID, "6920000000000000001", "m1", None)]
    assert batch.reply_body == SUCCESS_REPLY
    assert json.loads(batch.reply_body) == {"code": 0, "msg": "success"}


def test_several_messages_and_refund_tags() -> None:
    """Every message in the array is read; cancel and after-sale tags are kinds too."""
    headers, body = _push([_msg("106", {"p_id": 1, "shop_id": SHOP}, "a"),
                           _msg("200", {"p_id": 2, "shop_id": SHOP}, "b"),
                           _msg("105", {"p_id": 3, "shop_id": SHOP}, "c")])
    batch = parse(headers, body)
    assert [(e.kind, e.platform_order_id) for e in batch.events] == [
        (PushKind.CLOSED, "1"), (PushKind.REFUND, "2")]


@pytest.mark.parametrize("tamper", ["body", "sign", "secret", "app-id", "no-sign"])
def test_unverifiable_push_is_refused(tamper: str) -> None:
    """An altered body, a wrong or missing event-sign, or another app's push is refused."""
    headers, body = _push([_msg("101", {"p_id": 1, "shop_id": SHOP})],
                          secret="other" if tamper == "secret" else SECRET)
    if tamper == "body":
        body = body.replace(b'"p_id\\": 1', b'"p_id\\": 2')
        assert b"2" in body
    elif tamper == "sign":
        headers["event-sign"] = "0" * 32
    elif tamper == "app-id":
        headers["app-id"] = "app-2"
    elif tamper == "no-sign":
        del headers["event-sign"]
    with pytest.raises(PushRejected):
        parse(headers, body)


def test_push_for_another_shop_is_refused() -> None:
    """A correctly signed message naming another shop is refused."""
    headers, body = _push([_msg("101", {"p_id": 1, "shop_id": 99999})])
    with pytest.raises(PushRejected):
        parse(headers, body)


@pytest.mark.parametrize("messages", [
    {"tag": "101"},  # not an array
    [_msg("101", "not json{")],
    [_msg("101", {"shop_id": SHOP})],  # no p_id
    ["text"],
])
def test_signed_but_unreadable_push_is_a_bad_request(messages: Any) -> None:
    """A signed body that is not an array of readable messages is a 400 BadRequest."""
    body = json.dumps(messages).encode()
    headers = {"app-id": KEY, "event-sign": event_sign(KEY, body, SECRET)}
    with pytest.raises(BadRequest):
        parse(headers, body)
