"""A faithful local fake of the TOP gateway, as a Starlette app (tests and ``robot demo``).

``POST``/``GET /router/rest`` merges query and urlencoded form parameters and answers as TOP
does (see :class:`connectors.taobao.fake_state.FakeTop` for what is verified). The fake
answers JSON only: a request without ``format=json`` (TOP's default is XML) gets a minimal
XML ``error_response`` with code 23, so a client that forgets ``format=json`` fails loudly.
Multipart bodies (only file-upload APIs use them) are not supported.

The control API every fake shares (:mod:`connectors.fakebase`) lives under ``/__fake__/``,
with Taobao's own ``trades`` (create with TOP item fields), ``trades/{tid}/refund`` and
``trades/{tid}/close``; they take and return JSON with ids as strings. This app must never be
exposed beyond loopback: it has no auth.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.common.shapes import garble
from connectors.fakebase import api_endpoint, control_routes, fake_middleware
from connectors.fakekit import json_object
from connectors.taobao.fake_state import FakeClock, FakeTop, Faults

__all__ = ["FakeClock", "FakeTop", "Faults", "create_app"]

_XML_FORMAT_ERROR = (
    '<?xml version="1.0" encoding="utf-8" ?><error_response><code>23</code>'
    "<msg>Invalid Format</msg><sub_msg>this fake answers format=json only</sub_msg>"
    "</error_response>"
)
_HTML_500 = "<html><head><title>500 Internal Server Error</title></head><body>Tengine</body></html>"


async def _params(request: Request) -> dict[str, str]:
    params = dict(request.query_params)
    if request.method == "POST":
        body = (await request.body()).decode("utf-8", errors="replace")
        params.update(parse_qsl(body, keep_blank_values=True))
    return params


def create_app(state: FakeTop) -> Starlette:
    """The fake gateway serving ``state``."""

    async def router(request: Request) -> Response:
        params = await _params(request)
        if params.get("format", "xml") != "json":
            return Response(_XML_FORMAT_ERROR, media_type="text/xml;charset=utf-8")
        document = state.handle(params)
        text = json.dumps(document, ensure_ascii=False)
        if (bad := state.shapes.take_answer()) is not None:
            body, media_type = garble(text, bad)
            return Response(body, media_type=media_type)
        return Response(text, media_type="application/json;charset=utf-8")

    async def create_trade(request: Request) -> Response:
        data = await json_object(request)
        kwargs: dict[str, Any] = {
            key: data[key] for key in ("status", "items", "buyer_open_uid") if key in data
        }
        tid = state.create_trade(**kwargs)
        return JSONResponse({"tid": str(tid)})

    async def refund(request: Request) -> Response:
        data = await json_object(request)
        oid = int(data["oid"]) if data.get("oid") else None
        try:
            refund_id = state.request_refund(
                int(request.path_params["tid"]),
                oid=oid,
                status=str(data.get("status", "WAIT_SELLER_AGREE")),
            )
        except KeyError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        return JSONResponse({"refund_id": str(refund_id)})

    async def close(request: Request) -> Response:
        data = await json_object(request)
        try:
            state.close_trade(
                int(request.path_params["tid"]), by_taobao=bool(data.get("by_taobao"))
            )
        except KeyError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        return JSONResponse({"ok": True})

    gateway = api_endpoint(state, router, error_page=_HTML_500, error_status=500)
    return Starlette(
        routes=[
            Route("/router/rest", gateway, methods=["GET", "POST"]),
            Route("/__fake__/trades", create_trade, methods=["POST"]),
            Route("/__fake__/trades/{tid:int}/refund", refund, methods=["POST"]),
            Route("/__fake__/trades/{tid:int}/close", close, methods=["POST"]),
            *control_routes(state),
        ],
        middleware=fake_middleware(state),  # answers dated by the platform's clock
    )
