"""``POST /suppliers/{name}/callback``: a supplier's word that a purchase moved.

A callback is a hint, never the record: it is verified by the supplier's plugin
(``Supplier.parse_callback``: signature, age, shape — no side effects), then the purchase's
order is made due for the sourcing worker, which **queries** the supplier and records what the
query says (Juhe's callback carries no signed state; Fulu's carries no card codes). So a
forged, replayed or reordered callback can at most cause an extra query.

Answers: 404 for an unknown supplier, 413 for a body over the limit, 401/400 when
verification fails (nothing written), else the supplier's expected reply (Fulu: ``success``),
also for a key the robot does not know (the supplier would otherwise retry forever).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from robot import restock
from robot.errors import PushRejected
from robot.http.context import HttpContext
from robot.http.hooks import BodyTooLarge, read_body, rejection_status
from robot.log import get_logger
from robot.sourcing import callback_due

log = get_logger(__name__)
MAX_CALLBACK_BODY = 64 * 1024


def _error(status: int, kind: str, reason: str) -> JSONResponse:
    return JSONResponse({"error": kind, "reason": reason[:200]}, status_code=status)


async def callback(request: Request) -> Response:
    ctx: HttpContext = request.app.state.ctx
    name = request.path_params["name"]
    client = ctx.suppliers.get(name)
    if client is None:
        return _error(404, "unknown_supplier", "no such supplier")
    bound = log.bind(supplier=name)
    try:
        body = await read_body(request, MAX_CALLBACK_BODY)
    except BodyTooLarge:
        return _error(413, "too_large", f"body over {MAX_CALLBACK_BODY} bytes")
    try:
        result = client.parse_callback(request.headers, body, datetime.now(UTC))
    except PushRejected as exc:
        status = rejection_status(exc)
        bound.warning("supplier_callback_rejected", error=exc.message, status_code=status)
        return _error(status, "rejected", exc.message)
    except Exception as exc:  # noqa: BLE001 - a plugin bug on odd input is a bad request
        bound.error("supplier_callback_crashed", error=type(exc).__name__)
        return _error(400, "rejected", "the callback could not be read")
    key = result.purchase.key
    known = await asyncio.to_thread(callback_due, ctx.engine, name, key) or \
        await asyncio.to_thread(restock.callback_due, ctx.engine, name, key)
    if known:
        ctx.wake_sourcing()
    bound.info("supplier_callback", key=key, known=known,
               outcome=result.purchase.outcome.value)
    return Response(result.reply_body, status_code=result.reply_status,
                    media_type=result.reply_content_type)
