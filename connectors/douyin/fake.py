"""A faithful local fake of the Douyin shop gateway, as a Starlette app (tests and demos).

Routes: ``POST /{group}/{name}`` — the gateway (``order/searchList`` ↔ ``order.searchList``);
semantics live in :class:`connectors.douyin.fake_state.FakeDouyin`. The control API every
fake shares (:mod:`connectors.fakebase`) is under ``/__fake__/``, with Douyin's own
``orders/{id}/close``, ``orders/{id}/refund``, ``orders/{id}/buyer_view``, ``authorize``
(a tool app's one-time code) and ``push/{config,deliver}``. Pushes go out through
:class:`PushSender` (signed, retried until answered ``{"code":0}``). This app must never be
exposed beyond loopback: it has no auth.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.douyin.fake_state import FakeDouyin, PushMessage
from connectors.fakebase import api_endpoint, control_routes, fake_middleware
from connectors.fakekit import DeliveryLoop, FakeClock, HttpSender, deliver_endpoint, json_object

__all__ = ["FakeClock", "FakeDouyin", "PushLoop", "PushSender", "create_app"]

_HTML_502 = "<html><head><title>502 Bad Gateway</title></head><body>openresty</body></html>"


class PushSender(HttpSender[PushMessage]):
    """Delivers the fake's messages, one per request, to the configured URL."""

    def __init__(self, state: FakeDouyin, *, timeout: float = 5.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(timeout=timeout, transport=transport)
        self._state = state

    def _url(self) -> str | None:
        return self._state.push_url

    def _due(self) -> list[PushMessage]:
        return self._state.due_messages()

    def _order(self, due: list[PushMessage]) -> list[PushMessage]:
        return self._state.push_order(due)

    def _request(self, item: PushMessage) -> tuple[str, bytes, Mapping[str, str]]:
        body = self._state.push_body([item])
        return item.msg_id, body, self._state.push_headers(body)

    def _accepted(self, response: httpx.Response) -> bool:
        # Douyin counts a push received only when answered {"code":0,...}.
        try:
            answer = json.loads(response.content)
        except ValueError:
            return False
        return response.status_code == 200 and isinstance(answer, dict) \
            and answer.get("code") == 0

    def _record(self, item: PushMessage, ok: bool) -> None:
        self._state.record_attempt(item, ok)


class PushLoop(DeliveryLoop):
    """Runs :meth:`PushSender.deliver_due` every ``interval`` seconds in a daemon thread."""

    def __init__(self, sender: PushSender, interval: float = 1.0) -> None:
        super().__init__(sender.deliver_due, name="douyin-fake-push", interval=interval)


def create_app(state: FakeDouyin, sender: PushSender | None = None) -> Starlette:
    """The fake serving ``state``; ``sender`` (made on demand) delivers pushes."""

    async def gateway(request: Request) -> Response:
        raw = await request.body()
        document = state.handle(request.url.path, dict(request.query_params), raw,
                                old_codes=request.headers.get("x-open-no-old-err-code") != "1")
        return Response(json.dumps(document, ensure_ascii=False),
                        media_type="application/json;charset=utf-8")

    async def close(request: Request) -> Response:
        try:
            state.close_order(request.path_params["order_id"])
        except KeyError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        return JSONResponse({"ok": True})

    async def refund(request: Request) -> Response:
        try:
            state.request_refund(request.path_params["order_id"])
        except KeyError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        return JSONResponse({"ok": True})

    async def buyer_view(request: Request) -> Response:
        try:
            return JSONResponse(state.buyer_view(request.path_params["order_id"]))
        except KeyError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)

    async def push_config(request: Request) -> Response:
        data = await json_object(request)
        with state.lock:
            state.push_url = data.get("url") or None
        return JSONResponse({"url": state.push_url})

    async def authorize(request: Request) -> Response:
        return JSONResponse({"code": state.authorize()})

    push_deliver = deliver_endpoint(sender, lambda: PushSender(state))
    endpoint = api_endpoint(state, gateway, error_page=_HTML_502, error_status=502)
    return Starlette(routes=[
        *control_routes(state),
        Route("/__fake__/orders/{order_id}/close", close, methods=["POST"]),
        Route("/__fake__/orders/{order_id}/refund", refund, methods=["POST"]),
        Route("/__fake__/orders/{order_id}/buyer_view", buyer_view, methods=["GET"]),
        Route("/__fake__/authorize", authorize, methods=["POST"]),
        Route("/__fake__/push/config", push_config, methods=["POST"]),
        Route("/__fake__/push/deliver", push_deliver, methods=["POST"]),
        Route("/{group}/{name}", endpoint, methods=["GET", "POST"]),
    ], middleware=fake_middleware(state))
