"""``GET /api/v1/shops/{shop}/orders/{platform_order_id}/delivery``: codes for a merchant's
own backend (e.g. a WeChat mini-program's server shows them in-app).

Authenticated per shop with ``Authorization: Bearer <delivery_api_token>`` from the shop
file; a shop without a token has no API (404). A wrong or missing token is 401 with no
detail. The answer carries the codes in plain text (this is the hand-over channel), so each
read is audited (``delivery_api_read``) and marks the codes seen, committed before the codes
are decrypted. This module must never log a code or a token.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from starlette.requests import Request
from starlette.responses import JSONResponse

from robot import audit
from robot.clock import utcnow
from robot.db import transaction
from robot.http import handover, links
from robot.http.context import HttpContext
from robot.http.pickup import same_text
from robot.schema import orders

NO_STORE = {"Cache-Control": "no-store"}


@dataclass(frozen=True)
class Delivery:
    order_id: int
    state: str
    rows: list[handover.CodeRow]


def read(ctx: HttpContext, shop: str, platform_order_id: str) -> Delivery | None:
    now = utcnow()
    with transaction(ctx.engine) as conn:
        row = conn.execute(select(orders.c.id, orders.c.state).where(
            orders.c.shop == shop, orders.c.platform_order_id == platform_order_id)).first()
        if row is None:
            return None
        order_id, state = int(row.id), str(row.state)
        if state not in links.VISIBLE_STATES:
            return Delivery(order_id, state, [])
        rows = handover.code_rows(conn, order_id)
        handover.mark_seen(conn, order_id, now)
        audit.append(conn, actor=f"api:{shop}", action="delivery_api_read",
                     subject=f"order:{order_id}",
                     details={"code_ids": [r.code_id for r in rows]})
    return Delivery(order_id, state, rows)


def _json(body: dict[str, Any], status: int, **headers: str) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={**NO_STORE, **headers})


async def delivery(request: Request) -> JSONResponse:
    ctx: HttpContext = request.app.state.ctx
    shop_name = request.path_params["shop"]
    platform_order_id = request.path_params["platform_order_id"]
    shop = ctx.shops.get(shop_name)
    if shop is None or shop.delivery_api_token is None:
        return _json({"error": "not_found"}, 404)
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    expected = shop.delivery_api_token.get_secret_value()
    if not (same_text(given.strip(), expected) and scheme.lower() == "bearer"):
        return _json({"error": "unauthorized"}, 401, **{"WWW-Authenticate": "Bearer"})
    try:
        found = await asyncio.to_thread(read, ctx, shop_name, platform_order_id)
    except DBAPIError:
        return _json({"error": "unavailable"}, 503)
    if found is None:
        return _json({"error": "not_found"}, 404)
    if found.state not in links.VISIBLE_STATES:
        return _json({"error": "not_ready", "state": found.state}, 409)
    codes = []
    for row in found.rows:
        card_no, password = handover.decrypt(ctx.vault, row)
        codes.append({"line_id": row.line_id, "item_id": row.item_id, "sku_id": row.sku_id,
                      "title": row.title, "card_no": card_no, "password": password})
    return _json({"shop": shop_name, "platform_order_id": platform_order_id,
                  "state": found.state, "codes": codes}, 200)
