"""A faithful local fake of Youzan Cloud, as a Starlette app (tests and ``robot demo``).

Routes: ``POST /auth/token``; ``/api/{name}/{version}`` (and ``/api/{name}`` without a
version, which Youzan answers with gateway code 4001). State and semantics live in
:class:`connectors.youzan.fake_state.FakeYouzan`; pushes are sent by
:class:`connectors.youzan.fake_push.PushSender`.

The control API every fake shares (:mod:`connectors.fakebase`) lives under ``/__fake__/``,
with Youzan's own ``trades`` (create with Youzan line fields), ``trades/{tid}/refund``,
``trades/{tid}/close`` and ``push/{config,test,deliver}`` (JSON in, JSON out). This app must
never be exposed beyond loopback: it has no auth of its own.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.common.shapes import garble
from connectors.fakebase import api_endpoint, control_routes, fake_middleware
from connectors.fakekit import deliver_endpoint, json_object
from connectors.youzan.fake_push import PushSender
from connectors.youzan.fake_state import FakeClock, FakeYouzan, Faults

__all__ = ["FakeClock", "FakeYouzan", "Faults", "PushSender", "create_app"]

_HTML_502 = "<html><head><title>502 Bad Gateway</title></head><body>Tengine</body></html>"


def _json(document: dict[str, Any]) -> Response:
    return Response(json.dumps(document, ensure_ascii=False),
                    media_type="application/json;charset=utf-8")


def create_app(state: FakeYouzan, sender: PushSender | None = None) -> Starlette:
    """The fake serving ``state``; ``sender`` (made on demand) delivers pushes."""

    async def token(request: Request) -> Response:
        raw = await request.body()
        return _json(state.handle_token(request.headers.get("content-type", ""), raw))

    async def api(request: Request) -> Response:
        raw = await request.body()
        document = state.handle_api(
            request.path_params["name"], request.path_params.get("version"),
            method=request.method, content_type=request.headers.get("content-type", ""),
            query=dict(request.query_params), raw=raw,
        )
        if (bad := state.shapes.take_answer()) is not None:
            body, media_type = garble(json.dumps(document, ensure_ascii=False), bad)
            return Response(body, media_type=media_type)
        return _json(document)

    async def create_trade(request: Request) -> Response:
        data = await json_object(request)
        kwargs = {key: data[key] for key in ("items", "virtual", "paid", "yz_open_id")
                  if key in data}
        return JSONResponse({"tid": state.create_trade(**kwargs)})

    async def refund(request: Request) -> Response:
        data = await json_object(request)
        try:
            refund_id = state.request_refund(request.path_params["tid"], oid=data.get("oid"),
                                             status=str(data.get("status", "WAIT_SELLER_AGREE")))
        except KeyError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        return JSONResponse({"refund_id": refund_id})

    async def close(request: Request) -> Response:
        try:
            state.close_trade(request.path_params["tid"])
        except KeyError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        return JSONResponse({"ok": True})

    async def push_config(request: Request) -> Response:
        data = await json_object(request)
        with state.lock:
            state.push_url = data.get("url") or None
        return JSONResponse({"url": state.push_url})

    async def push_test(request: Request) -> Response:
        message = state.publish_test_message()
        return JSONResponse({"msg_id": message.msg_id})

    push_deliver = deliver_endpoint(sender, lambda: PushSender(state))

    gateway = api_endpoint(state, api, error_page=_HTML_502, error_status=502)
    token_endpoint = api_endpoint(state, token, error_page=_HTML_502, error_status=502,
                                  fault=state.token_transport_fault)
    return Starlette(routes=[
        Route("/auth/token", token_endpoint, methods=["POST"]),
        Route("/api/{name}/{version}", gateway, methods=["GET", "POST"]),
        Route("/api/{name}", gateway, methods=["GET", "POST"]),
        Route("/__fake__/trades", create_trade, methods=["POST"]),
        Route("/__fake__/trades/{tid}/refund", refund, methods=["POST"]),
        Route("/__fake__/trades/{tid}/close", close, methods=["POST"]),
        Route("/__fake__/push/config", push_config, methods=["POST"]),
        Route("/__fake__/push/test", push_test, methods=["POST"]),
        Route("/__fake__/push/deliver", push_deliver, methods=["POST"]),
        *control_routes(state),
    ], middleware=fake_middleware(state))  # answers dated by the platform's clock
