"""A faithful local fake of the POP gateway, as a Starlette app (tests and ``robot demo``).

``POST /api/router`` (and ``GET``, as the Go SDK uses) merges the query string with a JSON
object body or an urlencoded form body and answers as POP does (see
:class:`connectors.pinduoduo.fake_state.FakePdd` for what is verified). JSON numbers and
booleans in a body are signed as their text (``true``/``false``), as the SDKs send them.

The control API every fake shares (:mod:`connectors.fakebase`) lives under ``/__fake__/``,
with Pinduoduo's own ``orders/{sn}/refund``, ``orders/{sn}/cancel`` and ``tokens`` (expire or
revoke); they take and return JSON. This app must never be exposed beyond loopback: it has no
auth.
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
from connectors.pinduoduo.fake_state import FakeClock, FakePdd, Faults, PopError

__all__ = ["FakeClock", "FakePdd", "Faults", "create_app"]

_HTML_500 = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return "" if value is None else str(value)


async def _params(request: Request) -> dict[str, str]:
    """Query + body parameters as the strings the client signed; ValueError if unreadable."""
    params = dict(request.query_params)
    if request.method != "POST":
        return params
    raw = await request.body()
    content_type = request.headers.get("content-type", "")
    if "json" in content_type:
        data = json.loads(raw) if raw.strip() else {}
        if not isinstance(data, dict):
            raise ValueError("a JSON body must be an object")
        params.update({str(k): _as_text(v) for k, v in data.items()})
    else:
        params.update(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
    return params


def create_app(state: FakePdd) -> Starlette:
    """The fake gateway serving ``state``."""

    async def router(request: Request) -> Response:
        try:
            params = await _params(request)
        except (ValueError, UnicodeDecodeError, RecursionError):
            err = PopError(10001, "公共参数错误:body")  # invented detail
            document: dict[str, Any] = {"error_response": {
                "error_code": err.code, "error_msg": err.msg, "sub_code": err.sub_code,
                "sub_msg": err.sub_msg}}
        else:
            document = state.handle(params)
        text = json.dumps(document, ensure_ascii=False)
        if (bad := state.shapes.take_answer()) is not None:
            body, media_type = garble(text, bad)
            return Response(body, media_type=media_type)
        return Response(text, media_type="application/json;charset=UTF-8")

    async def refund(request: Request) -> Response:
        data = await json_object(request)
        try:
            refund_id = state.request_refund(
                request.path_params["sn"],
                after_sales_status=int(data.get("after_sales_status", 2)),
                after_sales_type=int(data.get("after_sales_type", 2)),
            )
        except KeyError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        return JSONResponse({"refund_id": str(refund_id)})

    async def cancel(request: Request) -> Response:
        try:
            state.cancel_order(request.path_params["sn"])
        except KeyError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        return JSONResponse({"ok": True})

    async def tokens(request: Request) -> Response:
        action = (await json_object(request)).get("action")
        if action == "expire":
            state.expire_access_tokens()
        elif action == "revoke":
            state.revoke_authorization()
        else:
            return JSONResponse({"error": "action must be expire or revoke"}, status_code=400)
        return JSONResponse({"ok": True})

    gateway = api_endpoint(state, router, error_page=_HTML_500, error_status=502)
    return Starlette(routes=[
        Route("/api/router", gateway, methods=["GET", "POST"]),
        Route("/__fake__/orders/{sn}/refund", refund, methods=["POST"]),
        Route("/__fake__/orders/{sn}/cancel", cancel, methods=["POST"]),
        Route("/__fake__/tokens", tokens, methods=["POST"]),
        *control_routes(state),
    ], middleware=fake_middleware(state))  # answers dated by the platform's clock
