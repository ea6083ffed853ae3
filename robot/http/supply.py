"""``/supply/{shop}/{path}``: the supplier gateway a buyer platform calls (闲管家 for 闲鱼).

The merchant registers ``https://<robot>/supply/<shop>`` as the gateway address; the platform
appends its standard's paths (``/goofish/order/purchase/create`` …). The shop's connector
(a :class:`connectors.gateway.SupplyGateway`) verifies and answers each request in its
platform's terms; the core's :class:`robot.supply.ShopSupply` holds the goods and orders.

An unknown shop, or one whose connector serves no gateway, is 404 with nothing read. A body
over the push limit is 413. A connector that crashes answers 500 (the platform retries; every
backend call is idempotent). This module never logs a request's body or query (they carry
signatures), nor a code.
"""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from connectors.gateway import GatewayRequest, SupplyGateway
from robot.http.context import HttpContext
from robot.http.hooks import BodyTooLarge, read_body
from robot.log import get_logger
from robot.supply import ShopSupply

log = get_logger(__name__)


async def gateway(request: Request) -> Response:
    ctx: HttpContext = request.app.state.ctx
    name = request.path_params["shop"]
    shop = ctx.shops.get(name)
    connector = ctx.connectors.get(name)
    if shop is None or not isinstance(connector, SupplyGateway):
        return JSONResponse({"error": "not_found", "reason": "no supplier gateway here"},
                            status_code=404)
    try:
        body = await read_body(request, ctx.max_push_body)
    except BodyTooLarge:
        return JSONResponse({"error": "too_large"}, status_code=413)
    call = GatewayRequest(path=request.path_params["path"], method=request.method,
                          query=dict(request.query_params), headers=dict(request.headers),
                          body=body, received_at=datetime.now(UTC))
    backend = ShopSupply(ctx.engine, ctx.vault, shop, zone=ctx.zone,
                         suppliers=ctx.suppliers.keys(), wake=ctx.wake)
    try:
        reply = await connector.serve(call, backend)
    except Exception as exc:  # noqa: BLE001 - a crash answers 500; the platform asks again
        log.error("supply_gateway_crashed", shop=name, error=type(exc).__name__)
        return JSONResponse({"error": "internal"}, status_code=500)
    return Response(reply.body, status_code=reply.status, media_type=reply.content_type,
                    headers={"Cache-Control": "no-store"})
