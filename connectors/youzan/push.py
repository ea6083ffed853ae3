"""Verification and decoding of Youzan push messages (PLATFORMS.md §3.5).

:func:`parse_push` checks ``Event-Sign`` (MD5 of client id + raw body + client secret) on the
raw bytes before reading anything else, then decodes the body and its ``msg`` (URL-encoded
JSON for ``trade_*`` topics, an object for the newer refund topics). A test message (Youzan
sends one when the push URL is configured; ``"test": true``) is accepted with no event.
Every event is thin (``order=None``): the core reads the trade with ``fetch_order``, so a
message's content never overrides what the API says.

It must have no side effects and raise :class:`robot.errors.PushRejected` for anything that
fails verification or is not a Youzan message for this app: :class:`BadRequest` (HTTP 400)
once the signature verified but the body is not a message we can read, plain
``PushRejected`` (401) otherwise. Youzan signs no timestamp, so there is no age check: a
replayed message is harmless because intake is idempotent. The success reply Youzan expects
(any 200 whose body contains ``success``) is in the returned batch; the core sends it only after
the events' effects are durable, so a crash before that makes Youzan send the message again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from connectors.base import PushBatch, PushEvent
from connectors.errors import BadPlatformData, PushRejected
from connectors.youzan.normalize import decode_msg, topic_kind
from connectors.youzan.sign import verify_event_sign

SUCCESS_REPLY = b'{"code":0,"msg":"success"}'


class BadRequest(PushRejected):
    """The request is signed correctly but is not a message we understand: 400."""

    http_status = 400


def parse_push(headers: Mapping[str, str], body: bytes, *, client_id: str,
               client_secret: str, kdt_id: str) -> PushBatch:
    """The events of one pushed request, or PushRejected."""
    lowered = {key.lower(): value for key, value in headers.items()}
    given = lowered.get("event-sign", "")
    if not given:
        raise PushRejected("youzan push without Event-Sign header")
    if not verify_event_sign(client_id, body, client_secret, given):
        raise PushRejected("youzan push Event-Sign does not match the body")
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise BadRequest("youzan push body is not JSON") from exc
    if not isinstance(payload, dict):
        raise BadRequest("youzan push body is not a JSON object")
    if str(payload.get("client_id", client_id)) != client_id:
        raise PushRejected("youzan push is for another app (client_id)")
    if payload.get("test") in (True, "true", 1):
        return PushBatch(events=(), reply_body=SUCCESS_REPLY)
    shop = payload.get("kdt_id")
    if shop not in (None, "") and str(shop) != kdt_id and str(payload.get("root_kdt_id")) != kdt_id:
        raise PushRejected("youzan push is for another shop (kdt_id)")
    topic = str(payload.get("type") or "")
    kind = topic_kind(topic)
    if kind is None:
        return PushBatch(events=(), reply_body=SUCCESS_REPLY)  # a topic the robot ignores
    try:
        msg = decode_msg(payload.get("msg"))
    except BadPlatformData as exc:
        raise BadRequest(f"youzan push {topic}: {exc.message}") from exc
    tid = _text(msg.get("tid")) or _text(payload.get("id"))
    if not tid:
        raise BadRequest(f"youzan push {topic} names no trade (tid)")
    message_id = _text(payload.get("msg_id")) or f"{topic}:{tid}:{_text(payload.get('version'))}"
    event = PushEvent(kind=kind, platform_order_id=tid, message_id=message_id, order=None)
    return PushBatch(events=(event,), reply_body=SUCCESS_REPLY)


def _text(value: Any) -> str:
    if value in (None, "") or isinstance(value, bool):
        return ""
    return str(value)
