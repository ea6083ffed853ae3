"""The fake Fulu gateway as an ASGI app: ``POST /api/getway`` dispatching on ``method``, the
common control API, and the callback sender.

Control routes of its own (besides :func:`connectors.fakebase.control_routes`):
``POST /__fake__/settle`` finishes every open order now; ``POST /__fake__/callbacks/deliver``
posts the callbacks due now; ``GET|POST /__fake__/callback_url`` reads or sets where callbacks
go (``{"url": ...}``). Loopback only: the fake has no authentication.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.fakebase import api_endpoint, control_routes, fake_middleware
from connectors.fakekit import DeliveryLoop, HttpSender, deliver_endpoint, json_object
from connectors.fulu import protocol as p
from connectors.fulu.fake_state import FakeFulu, FuluError, FuluOrder

GATEWAY_ERROR_PAGE = "<html><head><title>{status}</title></head><body>{status}</body></html>"


class CallbackSender(HttpSender[FuluOrder]):
    """Posts the callbacks due, as Fulu does: JSON, acknowledged only by the body
    ``success`` (⚠ assumed from callers' code); anything else is retried on the schedule."""

    def __init__(self, state: FakeFulu, *, timeout: float = 5.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(timeout=timeout, transport=transport)
        self.state = state

    def _url(self) -> str | None:
        return self.state.callback_url

    def _due(self) -> list[FuluOrder]:
        return self.state.callbacks_due()

    def _order(self, due: list[FuluOrder]) -> list[FuluOrder]:
        return self.state.push_order(due)

    def _request(self, item: FuluOrder) -> tuple[str, bytes, Mapping[str, str]]:
        return (item.customer_order_no, self.state.callback_body(item),
                {"Content-Type": "application/json; charset=utf-8"})

    def _accepted(self, response: httpx.Response) -> bool:
        return response.status_code == 200 and response.text.strip().lower() == "success"

    def _record(self, item: FuluOrder, ok: bool) -> None:
        if not item.callback_acked:  # a duplicate of an acknowledged one changes nothing
            self.state.record_callback(item, ok)


class CallbackLoop(DeliveryLoop):
    """Sends due callbacks every ``interval`` seconds in a daemon thread."""

    def __init__(self, sender: CallbackSender, *, interval: float = 1.0) -> None:
        super().__init__(sender.deliver_due, name="fulu-callbacks", interval=interval)


def _envelope(state: FakeFulu, code: int, message: str) -> JSONResponse:
    return JSONResponse(state.answer(code, message))


def create_app(state: FakeFulu, sender: CallbackSender | None = None) -> Starlette:  # noqa: C901 - nested route handlers summed
    """The fake's app; ``sender`` posts callbacks (one is made on first need otherwise)."""
    senders: list[CallbackSender] = [sender] if sender is not None else []

    def the_sender() -> CallbackSender:
        if not senders:
            senders.append(CallbackSender(state))
        return senders[0]

    async def gateway(request: Request) -> Response:
        try:
            raw = (await request.body()).decode("utf-8")
            body = json.loads(raw)
        except (ValueError, RecursionError):
            raw, body = "", None
        if not isinstance(body, dict):
            return _envelope(state, p.BAD_PARAMETER, p.MESSAGES[p.BAD_PARAMETER] + ": 请求不是JSON")
        try:
            method, biz = state.check_request(raw, body)
        except FuluError as exc:
            return _envelope(state, exc.code, exc.message)
        placing = method in p.PLACE_METHODS
        if placing and state.take_fault("drop_request"):
            return Response(GATEWAY_ERROR_PAGE.format(status="502 Bad Gateway"),
                            status_code=502, media_type="text/html")
        try:
            result = state.handle(method, biz)
        except FuluError as exc:
            return _envelope(state, exc.code, exc.message)
        if placing:
            early = await _after_placing(state, the_sender, biz)
            if early is not None:
                return early
        return JSONResponse(state.answer(p.OK, p.MESSAGES[p.OK], result))

    async def settle(request: Request) -> Response:
        state.settle()
        return JSONResponse({"orders": len(state.orders)})

    async def callback_url(request: Request) -> Response:
        if request.method == "POST":
            try:
                url = (await json_object(request)).get("url")
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            if url is not None and (not isinstance(url, str)
                                    or not url.startswith(("http://", "https://"))):
                return JSONResponse({"error": "url: an http(s) URL or null"}, status_code=400)
            state.callback_url = url
        return JSONResponse({"url": state.callback_url})

    endpoint = api_endpoint(state, gateway,
                            error_page=GATEWAY_ERROR_PAGE.format(status="500"),
                            error_status=500)
    routes = [
        Route(p.GATEWAY_PATH, endpoint, methods=["POST"]),
        Route("/__fake__/settle", settle, methods=["POST"]),
        Route("/__fake__/callbacks/deliver", deliver_endpoint(sender, the_sender),
              methods=["POST"]),
        Route("/__fake__/callback_url", callback_url, methods=["GET", "POST"]),
        *control_routes(state),
    ]
    return Starlette(routes=routes, middleware=fake_middleware(state))


async def _after_placing(state: FakeFulu, sender: Callable[[], CallbackSender],
                         biz: Mapping[str, object]) -> Response | None:
    """The placement faults that strike after the order was made (None: answer normally)."""
    if state.take_fault("callback_first"):
        order = state.orders[str(biz["customer_order_no"])]
        state.finish(order)
        await asyncio.to_thread(sender().deliver_due)
    if state.take_fault("lose_answer"):
        return Response(GATEWAY_ERROR_PAGE.format(status="504 Gateway Time-out"),
                        status_code=504, media_type="text/html")
    if state.take_fault("duplicate_answer"):
        return _envelope(state, p.ORDER_EXISTS, p.MESSAGES[p.ORDER_EXISTS])
    return None

