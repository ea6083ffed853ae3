"""Verification and decoding of the two push shapes accepted on ``POST /hooks/{shop}``.

1. A WeChat Pay API v3 notification (``Wechatpay-*`` headers, PLATFORMS.md §4.1): the
   signature is checked on the raw bytes with the key ``Wechatpay-Serial`` names, the
   timestamp must be within ``max_push_age_seconds`` of now, and the resource is decrypted
   with the APIv3 key. ``TRANSACTION.SUCCESS`` becomes a PAID event with the order fully
   built (lines from ``attach`` / ``sku_rules``, see :mod:`connectors.wechat.lines`);
   ``REFUND.SUCCESS`` becomes a refund event (a full refund: status CLOSED; a partial one:
   line ``"1"`` marked refund REQUESTED so an unshipped order is held for a human). Other
   event types are acknowledged with no event.
2. A merchant-backend post (``X-Robot-Signature: sha256=<hex>`` = HMAC-SHA256 with
   ``backend_secret`` of ``X-Robot-Timestamp`` + ``"\\n"`` + the raw body; the timestamp in
   Unix seconds within ``max_push_age_seconds`` of now). Body::

       {"out_trade_no": "...", "transaction_id": "...", "openid": "...", "total": 1000,
        "lines": [{"sku": "X", "qty": 1, "title": "...", "properties": {"充值号码": "..."}}],
        "status": "paid" | "closed" | "refunded", "paid_at": "RFC 3339", "mchid": "...",
        "email": "buyer@example.com", "phone": "13800138000", "message": "..."}

   (``status`` defaults to ``paid``; ``mchid`` to the shop's; ``lines`` is required for
   ``paid``; ``email`` and ``phone`` are optional: the buyer's contact for the robot's
   notifications, where the buyer gave it to the merchant's app; ``message`` (the buyer's
   message to the seller) and a line's ``properties`` (what the buyer chose or typed, e.g. a
   top-up's account) are optional too). A JSON ``attach`` of a payment may carry the buyer's
   ``message`` as well. Re-posting is harmless:
   orders are idempotent on ``out_trade_no``.

Message ids (``push_seen``): ``wxpay:<transaction_id>``, ``wxrefund:<refund_id>:<status>``,
``backend:<out_trade_no>:<status>`` — a notification WeChat retries or sends twice under a
new notification id is applied once.

Everything here is a pure function of (config, headers, body, now): no side effects, and
:class:`robot.errors.PushRejected` for anything that fails verification. It must never log
or raise with keys, signatures' inputs or decrypted content.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from connectors.base import (
    Order,
    OrderLine,
    PlatformStatus,
    PushBatch,
    PushEvent,
    PushKind,
    RefundState,
    readable_id,
    unreadable,
)
from connectors.common import buyertext
from connectors.errors import PushRejected
from connectors.wechat.config import WechatConfig
from connectors.wechat.crypto import (
    SIGNATURE_TYPE,
    backend_signature_ok,
    decrypt_resource,
    verify_signature,
)
from connectors.wechat.lines import MAX_QTY, attach_message, resolve_lines, unresolved_line

WECHAT_REPLY = json.dumps({"code": "SUCCESS", "message": "成功"}, ensure_ascii=False).encode()
BACKEND_REPLY = b'{"ok":true}'


class BadRequest(PushRejected):
    """The request is verified (or unverifiable) but not a message we understand: 400."""

    http_status = 400


def parse_push(config: WechatConfig, keys: Mapping[str, rsa.RSAPublicKey],
               headers: Mapping[str, str], body: bytes, now: datetime) -> PushBatch:
    """The events of one pushed request, or PushRejected (no side effects either way)."""
    lowered = {key.lower(): value for key, value in headers.items()}
    if "wechatpay-signature" in lowered or "wechatpay-serial" in lowered:
        return _wechat_pay(config, keys, lowered, body, now)
    if "x-robot-signature" in lowered:
        return _backend(config, lowered, body, now)
    raise PushRejected("wechat push: neither a WeChat Pay notification nor a signed "
                       "merchant-backend post")


# -- WeChat Pay notifications ------------------------------------------------------------

def _check_age(config: WechatConfig, raw: str, now: datetime, what: str) -> None:
    if not raw.strip().isdigit():
        raise PushRejected(f"{what}: timestamp is missing or not Unix seconds")
    age = now.timestamp() - int(raw.strip())
    if abs(age) > config.max_push_age_seconds:
        raise PushRejected(f"{what}: timestamp is {int(age)} s from now "
                           f"(limit {config.max_push_age_seconds} s)")


def _wechat_pay(config: WechatConfig, keys: Mapping[str, rsa.RSAPublicKey],
                headers: Mapping[str, str], body: bytes, now: datetime) -> PushBatch:
    what = "wechat pay notification"
    serial = headers.get("wechatpay-serial", "").strip()
    signature = headers.get("wechatpay-signature", "").strip()
    timestamp = headers.get("wechatpay-timestamp", "")
    nonce = headers.get("wechatpay-nonce", "")
    kind = headers.get("wechatpay-signature-type", SIGNATURE_TYPE).strip()
    if not serial or not signature or not nonce:
        raise PushRejected(f"{what}: Wechatpay-Serial/Signature/Nonce header missing")
    if kind != SIGNATURE_TYPE:
        raise PushRejected(f"{what}: unsupported Wechatpay-Signature-Type")
    key = keys.get(serial) or keys.get(serial.upper())
    if key is None:
        raise PushRejected(f"{what}: no verification key for serial {serial[:64]}")
    _check_age(config, timestamp, now, what)
    if not verify_signature(key, timestamp.strip(), nonce, body, signature):
        raise PushRejected(f"{what}: signature does not verify")
    envelope = _json_object(body, what)
    event_type = str(envelope.get("event_type") or "")
    resource = envelope.get("resource")
    if not isinstance(resource, dict):
        raise BadRequest(f"{what}: no resource")
    if resource.get("algorithm") != "AEAD_AES_256_GCM":
        raise BadRequest(f"{what}: unsupported resource algorithm")
    plain = decrypt_resource(config.apiv3_key.get_secret_value(), str(resource.get("nonce") or ""),
                             str(resource.get("associated_data") or ""),
                             str(resource.get("ciphertext") or ""))
    data = _json_object(plain, f"{what} resource")
    if event_type == "TRANSACTION.SUCCESS":
        return _paid(config, data, what)
    if event_type == "REFUND.SUCCESS":
        return _refunded(config, data, what)
    return PushBatch(events=(), reply_body=WECHAT_REPLY)  # REFUND.ABNORMAL/CLOSED, others


def _paid(config: WechatConfig, tx: dict[str, Any], what: str) -> PushBatch:
    _same_merchant(config, tx, what)
    if str(tx.get("trade_state") or "") != "SUCCESS":
        return PushBatch(events=(), reply_body=WECHAT_REPLY)
    out_trade_no = readable_id(tx.get("out_trade_no"))
    transaction_id = readable_id(tx.get("transaction_id"))
    if not out_trade_no and not transaction_id:
        raise BadRequest(f"{what}: neither out_trade_no nor transaction_id is readable")
    message_id = f"wxpay:{transaction_id}" if transaction_id else f"wxpay-out:{out_trade_no}"
    try:
        order: Order | None = _paid_order(config, tx, what, out_trade_no, transaction_id)
    except BadRequest as exc:
        # A verified payment we cannot read: the core parks it under its out_trade_no (or
        # reports it when that is unreadable too), rather than WeChat retrying it for a day
        # and then giving up on a paid order.
        order = unreadable(out_trade_no, exc.message)
    if order is None:
        return PushBatch(events=(), reply_body=WECHAT_REPLY)  # the backend posts lines
    event = PushEvent(kind=PushKind.PAID, platform_order_id=out_trade_no,
                      message_id=message_id, order=order)
    return PushBatch(events=(event,), reply_body=WECHAT_REPLY)


def _paid_order(config: WechatConfig, tx: dict[str, Any], what: str, out_trade_no: str,
                transaction_id: str) -> Order | None:
    """The paid order a TRANSACTION.SUCCESS resource describes; None when its lines are
    left to the merchant backend; BadRequest for a field we cannot read."""
    if not out_trade_no:
        raise BadRequest(f"{what}: out_trade_no is missing")
    if not transaction_id:
        raise BadRequest(f"{what}: transaction_id is missing")
    amount = _obj(tx.get("amount"))
    total = _cents(amount.get("total"), what, "amount.total")
    attach = str(tx.get("attach") or "")
    lines = resolve_lines(attach, out_trade_no, total, config.sku_rules)
    if lines is None:
        if config.unresolved_lines == "backend":
            return None
        lines = unresolved_line("")
    payer = _obj(tx.get("payer"))
    openid = str(payer.get("openid") or "")
    return Order(
        platform_order_id=out_trade_no, status=PlatformStatus.PAID, lines=lines,
        total_cents=total, currency=str(amount.get("currency") or "CNY"),
        paid_at=_time(tx.get("success_time")), buyer_id=openid or None,
        buyer_message=attach_message(attach),
        extra=_extra(appid=str(tx.get("appid") or config.appid),
                     mchid=str(tx.get("mchid") or config.mchid), out_trade_no=out_trade_no,
                     transaction_id=transaction_id, openid=openid),
    )


def _refunded(config: WechatConfig, refund: dict[str, Any], what: str) -> PushBatch:
    if str(refund.get("mchid") or config.mchid) != config.mchid:
        raise PushRejected(f"{what}: refund for another merchant (mchid)")
    out_trade_no = _required(refund, "out_trade_no", what)
    refund_id = _required(refund, "refund_id", what)
    status = str(refund.get("refund_status") or "SUCCESS")
    if status != "SUCCESS":
        return PushBatch(events=(), reply_body=WECHAT_REPLY)
    amount = _obj(refund.get("amount"))
    total = _cents(amount.get("total"), what)
    refunded = _cents(amount.get("refund"), what)
    full = refunded >= total
    lines: tuple[OrderLine, ...] = () if full else (
        OrderLine(line_id="1", quantity=1, refund=RefundState.REQUESTED),)
    order = Order(
        platform_order_id=out_trade_no,
        status=PlatformStatus.CLOSED if full else PlatformStatus.PAID,
        lines=lines, total_cents=total, modified_at=_time(refund.get("success_time")),
        extra=_extra(mchid=config.mchid, out_trade_no=out_trade_no,
                     transaction_id=str(refund.get("transaction_id") or ""),
                     refund_id=refund_id),
    )
    event = PushEvent(kind=PushKind.REFUND, platform_order_id=out_trade_no,
                      message_id=f"wxrefund:{refund_id}:{status}", order=order)
    return PushBatch(events=(event,), reply_body=WECHAT_REPLY)


def _same_merchant(config: WechatConfig, tx: dict[str, Any], what: str) -> None:
    if str(tx.get("appid") or config.appid) != config.appid:
        raise PushRejected(f"{what}: payment for another app (appid)")
    if str(tx.get("mchid") or config.mchid) != config.mchid:
        raise PushRejected(f"{what}: payment to another merchant (mchid)")


# -- merchant backend posts ----------------------------------------------------------------

def _backend(config: WechatConfig, headers: Mapping[str, str], body: bytes,
             now: datetime) -> PushBatch:
    what = "wechat backend post"
    if config.backend_secret is None:
        raise PushRejected(f"{what}: backend posts are not enabled (no backend_secret)")
    timestamp = headers.get("x-robot-timestamp", "")
    _check_age(config, timestamp, now, what)
    if not backend_signature_ok(config.backend_secret.get_secret_value(), timestamp.strip(),
                                body, headers.get("x-robot-signature", "")):
        raise PushRejected(f"{what}: X-Robot-Signature does not match")
    data = _json_object(body, what)
    out_trade_no = _required(data, "out_trade_no", what)
    status = str(data.get("status") or "paid").lower()
    total = _cents(data.get("total", 0), what)
    if status in ("closed", "refunded"):
        order = Order(platform_order_id=out_trade_no, status=PlatformStatus.CLOSED, lines=(),
                      total_cents=total, extra=_extra(mchid=config.mchid,
                                                      out_trade_no=out_trade_no))
        kind = PushKind.CLOSED
    elif status == "paid":
        transaction_id = _required(data, "transaction_id", what)
        openid = _required(data, "openid", what)
        order = Order(
            platform_order_id=out_trade_no, status=PlatformStatus.PAID,
            lines=_backend_lines(data.get("lines"), total, what), total_cents=total,
            paid_at=_time(data.get("paid_at")), buyer_id=openid,
            buyer_email=_contact(data.get("email")), buyer_phone=_contact(data.get("phone")),
            buyer_message=buyertext.message(data.get("message")),
            extra=_extra(appid=config.appid, mchid=str(data.get("mchid") or config.mchid),
                         out_trade_no=out_trade_no, transaction_id=transaction_id,
                         openid=openid),
        )
        kind = PushKind.PAID
    else:
        raise BadRequest(f"{what}: unknown status {status[:32]!r}")
    event = PushEvent(kind=kind, platform_order_id=out_trade_no,
                      message_id=f"backend:{out_trade_no}:{status}", order=order)
    return PushBatch(events=(event,), reply_body=BACKEND_REPLY)


def _backend_lines(raw: Any, total: int, what: str) -> tuple[OrderLine, ...]:
    if not isinstance(raw, list) or not raw:
        raise BadRequest(f"{what}: lines must be a non-empty list")
    lines = []
    for no, row in enumerate(raw, start=1):
        if not isinstance(row, dict):
            raise BadRequest(f"{what}: line {no} is not an object")
        sku = row.get("sku")
        qty = row.get("qty", row.get("quantity", 1))
        if not isinstance(sku, str | int) or isinstance(sku, bool) or not str(sku).strip():
            raise BadRequest(f"{what}: line {no} has no sku")
        if not isinstance(qty, int) or isinstance(qty, bool) or not 1 <= qty <= MAX_QTY:
            raise BadRequest(f"{what}: line {no} qty must be an integer 1..{MAX_QTY}")
        price = row.get("unit_price", 0)
        lines.append(OrderLine(line_id=str(no), quantity=qty, sku_id=str(sku).strip(),
                               title=str(row.get("title") or "")[:255],
                               properties=buyertext.from_object(row.get("properties")),
                               unit_price_cents=price if isinstance(price, int)
                               and not isinstance(price, bool) and price >= 0 else 0))
    if total < 0:
        raise BadRequest(f"{what}: total is negative")
    return tuple(lines)


# -- helpers -------------------------------------------------------------------------------

def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"{what}: not JSON") from exc
    if not isinstance(data, dict):
        raise BadRequest(f"{what}: not a JSON object")
    return data


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _required(data: Mapping[str, Any], key: str, what: str) -> str:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
        raise BadRequest(f"{what}: {key} is missing")
    return str(value).strip()


def _contact(value: Any) -> str | None:
    """An optional contact the merchant's backend passes on (``email``, ``phone``): text, or
    None for anything else (a contact only serves notices; it never refuses an order)."""
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()


def _cents(value: Any, what: str, name: str = "amount") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequest(f"{what}: {name} is not a non-negative integer (fen)")
    return value


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(UTC)


def _extra(**values: str) -> dict[str, str]:
    return {key: value for key, value in values.items() if value}
