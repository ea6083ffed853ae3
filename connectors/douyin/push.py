"""Verification and decoding of Douyin message pushes (PLATFORMS.md §10).

A push is a POST whose body is a JSON array of ``{"tag", "msg_id", "data"}`` (``data`` a JSON
string), with headers ``app-id`` (our app key) and ``event-sign`` = MD5(app_key + raw body +
app_secret). :func:`parse_push` checks both on the raw bytes before reading anything else;
then every message must be readable and name this shop. Tag ``101`` (订单支付/确认) is a paid
order; ``106`` (⚠ 订单取消) a closed one; tags 200–299 (⚠ the after-sale messages) a refund
change. Other tags (and the ``0`` test message ⚠) are acknowledged with no event. Every
event is thin (``order=None``): the core reads the order with ``fetch_order``.

No side effects; anything failing verification raises PushRejected (:class:`BadRequest`,
HTTP 400, once the signature verified). The reply Douyin expects is
``{"code":0,"msg":"success"}``; anything else makes it send the messages again. Douyin signs
no timestamp, so there is no age check: a replay is harmless because intake is idempotent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from connectors.base import PushBatch, PushEvent, PushKind
from connectors.douyin.sign import verify_event_sign
from connectors.errors import PushRejected

SUCCESS_REPLY = b'{"code":0,"msg":"success"}'
TAG_PAID = "101"
TAG_CANCELLED = "106"  # ⚠


class BadRequest(PushRejected):
    """The request is signed correctly but is not a message we understand: 400."""

    http_status = 400


def tag_kind(tag: str) -> PushKind | None:
    if tag == TAG_PAID:
        return PushKind.PAID
    if tag == TAG_CANCELLED:
        return PushKind.CLOSED
    if tag.isdigit() and 200 <= int(tag) < 300:
        return PushKind.REFUND
    return None


def parse_push(headers: Mapping[str, str], body: bytes, *, app_key: str, app_secret: str,
               shop_id: str) -> PushBatch:
    """The events of one pushed request, or PushRejected."""
    lowered = {key.lower(): value for key, value in headers.items()}
    given = lowered.get("event-sign", "")
    if not given:
        raise PushRejected("douyin push without event-sign header")
    if lowered.get("app-id", "").strip() != app_key:
        raise PushRejected("douyin push is for another app (app-id)")
    if not verify_event_sign(app_key, body, app_secret, given):
        raise PushRejected("douyin push event-sign does not match the body")
    try:
        messages = json.loads(body)
    except ValueError as exc:
        raise BadRequest("douyin push body is not JSON") from exc
    if not isinstance(messages, list):
        raise BadRequest("douyin push body is not a JSON array")
    events: list[PushEvent] = []
    for message in messages:
        event = _event(message, shop_id)
        if event is not None:
            events.append(event)
    return PushBatch(events=tuple(events), reply_body=SUCCESS_REPLY)


def _event(message: Any, shop_id: str) -> PushEvent | None:
    if not isinstance(message, dict):
        raise BadRequest("douyin push message is not an object")
    tag = _text(message.get("tag"))
    kind = tag_kind(tag)
    if kind is None:
        return None  # a tag the robot ignores (or the test message)
    raw = message.get("data")
    try:
        data = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError as exc:
        raise BadRequest(f"douyin push tag {tag}: data is not JSON") from exc
    if not isinstance(data, dict):
        raise BadRequest(f"douyin push tag {tag}: data is not an object")
    shop = _text(data.get("shop_id"))
    if shop and shop != shop_id:
        raise PushRejected("douyin push is for another shop (shop_id)")
    order_id = _text(data.get("p_id"))
    if not order_id:
        raise BadRequest(f"douyin push tag {tag} names no order (p_id)")
    message_id = _text(message.get("msg_id")) or f"{tag}:{order_id}"
    return PushEvent(kind=kind, platform_order_id=order_id, message_id=message_id)


def _text(value: Any) -> str:
    if value in (None, "") or isinstance(value, bool):
        return ""
    return str(value).strip()
