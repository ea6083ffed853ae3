"""A faithful local fake of ``api.weixin.qq.com`` (and WeChat Pay's notifier), as Starlette.

Routes: ``POST /cgi-bin/stable_token``; ``POST /wxa/sec/order/{upload_shipping_info,
get_order,is_trade_managed}?access_token=…``. State and semantics live in
:class:`connectors.wechat.fake_state.FakeWechat`; notifications are sent by
:class:`connectors.wechat.fake_pay.PaySender`.

The control API every fake shares (:mod:`connectors.fakebase`) lives under ``/__fake__/``,
with WeChat's own ``payments`` (create a paid payment with WeChat Pay fields),
``payments/{out_trade_no}/refund``, ``tokens/expire``, ``revoke``, ``notify/config``,
``notify/deliver`` and ``keys`` (JSON in, JSON out).
This app must never be exposed beyond loopback: it has no auth of its own.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.fakebase import api_endpoint, control_routes, fake_middleware
from connectors.fakekit import deliver_endpoint
from connectors.wechat.fake_pay import PaySender
from connectors.wechat.fake_state import FakeClock, FakeWechat, Faults

__all__ = ["FakeClock", "FakeWechat", "Faults", "PaySender", "create_app"]

_HTML_502 = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"


def _json(document: dict[str, Any]) -> Response:
    return Response(json.dumps(document, ensure_ascii=False),
                    media_type="application/json; encoding=utf-8")


async def _body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError):
        return None


def create_app(state: FakeWechat, sender: PaySender | None = None) -> Starlette:  # noqa: C901 - nested route handlers summed
    """The fake serving ``state``; ``sender`` (made on demand) delivers notifications."""

    async def stable_token(request: Request) -> Response:
        body = await _body(request)
        if not isinstance(body, dict):
            return _json({"errcode": 47001, "errmsg": "data format error"})
        return _json(state.stable_token(body))

    async def order_api(request: Request) -> Response:
        body = await _body(request)
        return _json(state.api(request.path_params["name"],
                               request.query_params.get("access_token"), body))

    async def control(request: Request) -> dict[str, Any]:
        data = await _body(request)
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        return data

    async def create_payment(request: Request) -> Response:
        data = await control(request)
        kwargs = {k: data[k] for k in ("total", "attach", "out_trade_no", "openid",
                                       "description", "notify") if k in data}
        return JSONResponse({"out_trade_no": state.create_payment(**kwargs)})

    async def refund(request: Request) -> Response:
        data = await control(request)
        try:
            refund_id = state.refund(request.path_params["oid"], data.get("amount"))
        except KeyError:
            return JSONResponse({"error": "unknown payment"}, status_code=404)
        return JSONResponse({"refund_id": refund_id})

    async def expire(request: Request) -> Response:
        state.expire_tokens()
        return JSONResponse({"ok": True})

    async def revoke(request: Request) -> Response:
        state.revoke()
        return JSONResponse({"ok": True})

    async def notify_config(request: Request) -> Response:
        data = await control(request)
        with state.lock:
            state.notify_url = data.get("url") or None
        return JSONResponse({"url": state.notify_url})

    notify_deliver = deliver_endpoint(sender, lambda: PaySender(state))

    async def keys(request: Request) -> Response:
        # The fake's own test keys, for configuring a robot shop against it.
        return JSONResponse({"serial": state.serial, "public_key_pem": state.public_key_pem,
                             "apiv3_key": state.apiv3_key, "appid": state.appid,
                             "mchid": state.mchid})

    def wrapped(answer: Callable[[Request], Awaitable[Response]]
                ) -> Callable[[Request], Awaitable[Response]]:
        return api_endpoint(state, answer, error_page=_HTML_502, error_status=502)

    return Starlette(routes=[
        Route("/cgi-bin/stable_token", wrapped(stable_token), methods=["POST"]),
        Route("/wxa/sec/order/{name}", wrapped(order_api), methods=["POST"]),
        Route("/__fake__/payments", create_payment, methods=["POST"]),
        Route("/__fake__/payments/{oid}/refund", refund, methods=["POST"]),
        Route("/__fake__/tokens/expire", expire, methods=["POST"]),
        Route("/__fake__/revoke", revoke, methods=["POST"]),
        Route("/__fake__/notify/config", notify_config, methods=["POST"]),
        Route("/__fake__/notify/deliver", notify_deliver, methods=["POST"]),
        Route("/__fake__/keys", keys, methods=["GET"]),
        *control_routes(state),
    ], middleware=fake_middleware(state))  # answers dated by the platform's clock
