"""``GET /api/v1/shops/{shop}/orders/{platform_order_id}/delivery``: codes for a merchant's
own backend (e.g. a WeChat mini-program's server shows them in-app).

Authenticated per shop with ``Authorization: Bearer <delivery_api_token>`` from the shop
file (at least 32 characters, checked by ``config check``). Every refusal of the credentials
is the same answer, status, body and headers: for a wrong or missing token, for a shop
without a token (no API) and for a shop that does not exist, so the API does not tell which
shops have one. Tokens are compared as SHA-256 digests with :func:`hmac.compare_digest`.

Failed authentications are limited (:class:`robot.http.ratelimit.RateLimits`): per client
(address, IPv6 /64) every request is refused with 429 once its failures run out; per shop
name, a wrong token is answered 429 once failures from all clients together run out — but
a right token is still checked and served, so an attack on a shop never locks out the
merchant's own backend.

A top-up order's answer lists its top-ups instead (``topups``: per unit the line, its title,
the account masked and ``done`` / ``in_progress`` / ``failed``), also while it is not ready
(409 ``not_ready`` during sourcing), so the backend can show the buyer how far it is.

The answer carries the codes in plain text (this is the hand-over channel), so each
read is audited (``delivery_api_read``) and marks the codes seen, committed before the codes
are decrypted. This module must never log a code, a token or an address.

``PUT …/orders/{platform_order_id}/contact`` (same token) gives the robot the buyer's
e-mail address and/or phone number, ``{"email": "...", "phone": "..."}``, for the shop's
buyer notifications: stored on the order, audited masked (``contact_set``); an order already
shipped is told now on the channels the shop has turned on and the new contact serves (once
per channel: a channel that already told this order of its delivery is not told again), an
order not yet shipped is told when it ships.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, String, select, update
from sqlalchemy.exc import DBAPIError
from starlette.requests import Request
from starlette.responses import JSONResponse

from connectors.notifier import Channel
from robot import audit, notify
from robot.clock import utcnow
from robot.db import transaction
from robot.errors import VaultError
from robot.http import handover, links
from robot.http.address import client_of
from robot.http.context import HttpContext
from robot.http.hooks import BodyTooLarge, read_body
from robot.log import get_logger
from robot.schema import orders
from robot.states import OrderState
from robot.topups import TopupStatus, topup_status_tx

log = get_logger(__name__)

NO_STORE = {"Cache-Control": "no-store"}
RETRY_AFTER = "60"  # seconds: a client or shop regains failures at about this pace
#: Compared against when a shop has no token, so that such a shop costs the same time.
_NO_TOKEN = secrets.token_bytes(32)


@dataclass(frozen=True)
class Delivery:
    order_id: int
    state: str
    rows: list[handover.CodeRow]
    topups: list[TopupStatus]  # top-up lines: the account masked, how far (no codes there)


def read(ctx: HttpContext, shop: str, platform_order_id: str) -> Delivery | None:
    now = utcnow()
    with transaction(ctx.engine) as conn:
        row = conn.execute(select(orders.c.id, orders.c.state).where(
            orders.c.shop == shop, orders.c.platform_order_id == platform_order_id)).first()
        if row is None:
            return None
        order_id, state = int(row.id), str(row.state)
        topups = topup_status_tx(conn, order_id, ctx.items_of(shop))
        if state not in links.VISIBLE_STATES:
            return Delivery(order_id, state, [], topups)
        rows = handover.code_rows(conn, order_id)
        handover.mark_seen(conn, order_id, now)
        audit.append(conn, actor=f"api:{shop}", action="delivery_api_read",
                     subject=f"order:{order_id}",
                     details={"code_ids": [r.code_id for r in rows]})
    return Delivery(order_id, state, rows, topups)


def _json(body: dict[str, Any], status: int, **headers: str) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={**NO_STORE, **headers})


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def authorized(header: str, expected: str | None) -> bool:
    """Whether an ``Authorization`` header carries ``expected`` as a bearer token; always
    the same work, whether or not there is a token to compare with."""
    scheme, _, given = header.partition(" ")
    want = _digest(expected) if expected is not None else _NO_TOKEN
    same = hmac.compare_digest(_digest(given.strip()), want)
    return same and expected is not None and scheme.lower() == "bearer"


def _unauthorized() -> JSONResponse:
    return _json({"error": "unauthorized"}, 401, **{"WWW-Authenticate": "Bearer"})


def _too_many() -> JSONResponse:
    return _json({"error": "too_many_failures"}, 429, **{"Retry-After": RETRY_AFTER})


def _keys(ctx: HttpContext, request: Request, shop_name: str) -> tuple[str, str]:
    """Opaque bucket keys for the client's network and for the shop name asked for."""
    network = client_of(request).network
    client = hmac.new(ctx.ip_key, f"api|{network}".encode(), hashlib.sha256).hexdigest()
    return client, hashlib.sha256(shop_name.encode("utf-8", "surrogatepass")).hexdigest()


def _refuse(ctx: HttpContext, client_key: str, shop_key: str, shop_name: str) -> JSONResponse:
    """Count a failed authentication against the client and the shop name; 401, or 429
    when the shop name's failures have run out (logged once as they run out)."""
    ctx.api_client_failures.allow(client_key)  # when empty, the next request gets 429 first
    if not ctx.api_shop_failures.allow(shop_key):
        return _too_many()
    if not ctx.api_shop_failures.has(shop_key):  # that was the last one
        # Named only when it is a shop of ours: the path is the caller's text.
        log.warning("delivery_api_failures_limited",
                    shop=shop_name if shop_name in ctx.shops else None)
    return _unauthorized()


@dataclass(frozen=True)
class _Asked:
    """An authenticated request's context, shop and order number."""

    ctx: HttpContext
    shop: str
    platform_order_id: str


def _authenticate(request: Request) -> _Asked | JSONResponse:
    """What the request asks for, when it carries its shop's token; else the refusal."""
    ctx: HttpContext = request.app.state.ctx
    shop_name = request.path_params["shop"]
    client_key, shop_key = _keys(ctx, request, shop_name)
    if not ctx.api_client_failures.has(client_key):
        return _too_many()
    shop = ctx.shops.get(shop_name)
    token = shop.delivery_api_token if shop is not None else None
    if not authorized(request.headers.get("authorization", ""),
                      token.get_secret_value() if token is not None else None):
        return _refuse(ctx, client_key, shop_key, shop_name)
    return _Asked(ctx, shop_name, request.path_params["platform_order_id"])


async def delivery(request: Request) -> JSONResponse:
    asked = _authenticate(request)
    if isinstance(asked, JSONResponse):
        return asked
    ctx, shop_name, platform_order_id = asked.ctx, asked.shop, asked.platform_order_id
    try:
        found = await asyncio.to_thread(read, ctx, shop_name, platform_order_id)
    except DBAPIError:
        return _json({"error": "unavailable"}, 503)
    except VaultError as exc:  # a code refused by the vault (altered row) or a key missing
        log.error("delivery_code_refused", error=exc.message)
        return _json({"error": "unavailable"}, 503)
    if found is None:
        return _json({"error": "not_found"}, 404)
    topups = [{"line_no": t.line_no, "title": t.title, "account": t.account, "state": t.state,
               "face_value_cents": t.face_value_cents} for t in found.topups]
    if found.state not in links.VISIBLE_STATES:
        return _json({"error": "not_ready", "state": found.state, "topups": topups}, 409)
    codes = []
    for row in found.rows:
        card_no, password = handover.decrypt(ctx.vault, row)
        codes.append({"line_id": row.line_id, "item_id": row.item_id, "sku_id": row.sku_id,
                      "title": row.title, "card_no": card_no, "password": password})
    return _json({"shop": shop_name, "platform_order_id": platform_order_id,
                  "state": found.state, "codes": codes, "topups": topups}, 200)


#: A contact request's body: two short fields.
CONTACT_BODY_LIMIT = 1024
#: Each field a contact may give: its channel, what people call it, the order's column.
_CONTACT = {"email": (Channel.EMAIL, "e-mail address", orders.c.buyer_email),
            "phone": (Channel.SMS, "phone number", orders.c.buyer_phone)}


def _length(column: Column[Any]) -> int:
    """A text column's declared length."""
    assert isinstance(column.type, String)
    assert column.type.length is not None
    return column.type.length


class BadContact(ValueError):
    """The body is not ``{"email": ..., "phone": ...}`` with usable values."""


def parse_contact(body: bytes) -> dict[str, str]:
    """``{"email": ..., "phone": ...}`` (either or both), each usable by its channel."""
    try:
        data = json.loads(body.decode("utf-8"))
    except ValueError:
        raise BadContact("the body is not JSON") from None
    if not isinstance(data, dict) or not data:
        raise BadContact('the body must be an object with "email" and/or "phone"')
    unknown = sorted(set(data) - set(_CONTACT))
    if unknown:
        raise BadContact(f"unknown field {unknown[0]!r} (fields: email, phone)")
    found: dict[str, str] = {}
    for name, (channel, what, column) in _CONTACT.items():
        if name not in data:
            continue
        value = data[name]
        text = value.strip() if isinstance(value, str) else ""
        # usable_contact reads the one of the two that the channel uses
        if len(text) > _length(column) or notify.usable_contact(channel, text, text) is None:
            raise BadContact(f"{name} is not a usable {what}")
        found[name] = text
    return found


def set_contact(ctx: HttpContext, shop: str, platform_order_id: str,
                contact: dict[str, str]) -> list[str] | None:
    """Store the contact on the order (audited, masked) and tell a shipped order's buyer
    now; the channels queued, or None when there is no such order."""
    now = utcnow()
    actor = f"api:{shop}"
    with transaction(ctx.engine) as conn:
        row = conn.execute(select(orders.c.id, orders.c.state).where(
            orders.c.shop == shop, orders.c.platform_order_id == platform_order_id)
            .with_for_update()).first()
        if row is None:
            return None
        order_id = int(row.id)
        conn.execute(update(orders).where(orders.c.id == order_id).values(
            {_CONTACT[name][2]: value for name, value in contact.items()}))
        audit.append(conn, actor=actor, action="contact_set", subject=f"order:{order_id}",
                     details={name: notify.mask_contact(value)
                              for name, value in contact.items()})
        config = ctx.shops.get(shop)
        queued: list[Channel] = []
        if row.state == OrderState.SHIPPED and config is not None and config.notify.channels:
            queued = notify.queue_event(conn, order_id,
                                        notify.channels_for(conn, order_id, config),
                                        notify.DELIVERED, actor=actor, now=now)
    return [channel.value for channel in queued]


async def contact(request: Request) -> JSONResponse:
    asked = _authenticate(request)
    if isinstance(asked, JSONResponse):
        return asked
    ctx, shop_name, platform_order_id = asked.ctx, asked.shop, asked.platform_order_id
    try:
        given = parse_contact(await read_body(request, CONTACT_BODY_LIMIT))
    except BodyTooLarge:
        return _json({"error": "too_large"}, 413)
    except BadContact as exc:
        return _json({"error": "bad_request", "detail": str(exc)}, 400)
    try:
        queued = await asyncio.to_thread(set_contact, ctx, shop_name, platform_order_id, given)
    except DBAPIError:
        return _json({"error": "unavailable"}, 503)
    if queued is None:
        return _json({"error": "not_found"}, 404)
    return _json({"shop": shop_name, "platform_order_id": platform_order_id,
                  "stored": sorted(given), "notifying": queued}, 200)
