"""The Starlette application: webhooks, health, metrics, pickup page and delivery API.

::

    POST /hooks/{shop}                                             robot.http.hooks
    POST /suppliers/{name}/callback                                robot.http.supplierhooks
    GET  /healthz                                                  robot.http.health
    GET  /metrics                                                  (below)
    GET|POST /p, GET /p/{token}, POST /p/{token}/reveal            robot.http.pickup
    GET  /api/v1/shops/{shop}/orders/{platform_order_id}/delivery  robot.http.delivery
    POST /supply/{shop}/{path}                                     robot.http.supply

``/metrics`` and ``/healthz`` say how busy the shop is; when the listener is reachable from
the internet (it must be, for webhooks and the pickup page), keep them for your monitoring
only at the reverse proxy. This module must never hold state of its own: everything lives in
the :class:`robot.http.context.HttpContext` on ``app.state.ctx``.
"""

from __future__ import annotations

import asyncio

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from robot.http import delivery, health, hooks, pickup, supplierhooks, supply
from robot.http.context import HttpContext


async def metrics(request: Request) -> Response:
    ctx: HttpContext = request.app.state.ctx
    await asyncio.to_thread(ctx.metrics.refresh, ctx.engine)
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST,
                    headers={"Cache-Control": "no-store"})


def build_app(ctx: HttpContext) -> Starlette:
    app = Starlette(routes=[
        Route("/hooks/{shop}", hooks.push, methods=["POST"]),
        Route("/suppliers/{name}/callback", supplierhooks.callback, methods=["POST"]),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/p", pickup.lookup, methods=["GET", "POST"]),
        Route("/p/{token}", pickup.page, methods=["GET"]),
        Route("/p/{token}/reveal", pickup.reveal, methods=["POST"]),
        Route("/api/v1/shops/{shop}/orders/{platform_order_id}/delivery", delivery.delivery,
              methods=["GET"]),
        Route("/api/v1/shops/{shop}/orders/{platform_order_id}/contact", delivery.contact,
              methods=["PUT"]),
        Route("/supply/{shop}/{path:path}", supply.gateway, methods=["POST"]),
    ])
    app.state.ctx = ctx
    return app
