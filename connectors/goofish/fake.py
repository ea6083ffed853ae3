"""A faithful fake of 闲管家 buying from our supplier gateway (tests, ``robot fake goofish``).

Two halves, like the real thing:

* :class:`GoofishBuyer` — 闲管家's calls to the gateway: it signs every request exactly as
  闲管家 does (``md5(app_id,app_secret,md5(body),timestamp,mch_id,mch_secret)``, query
  ``mch_id``, ``timestamp``, ``sign``), places card purchases and top-ups (the account in
  ``biz_content``) with fresh 19-digit order numbers and a per-order ``notify_url``,
  re-queries ``order/detail``, and sends refund notices. Faults: the same order twice, many
  copies at once, a client timeout (the request is sent, the answer dropped), a stale
  timestamp.
* :class:`FakeNotifyState` + :func:`make_app` — 闲管家's callback endpoint
  ``/api/open/callback/virtual/order/notify/{token}``: it verifies our signature and timestamp
  as 闲管家 would, answers ``{"code":0,"msg":"OK"}`` (or fails the first few on purpose), and
  records each callback so a test can compare it with what ``order/detail`` says.

Codes are held here only in memory, for the test to compare; never logged or printed.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from connectors.goofish import protocol as p
from connectors.goofish.sign import fresh, same, same_id, supply_sign

# The standard's documented example credentials (test data only, never real ones).
TEST_APP_ID = "677859093659717"
TEST_APP_SECRET = "wK63PxlOBaY9NoqMksLeZySzGIW25ifA"  # noqa: S105 - the documentation's example
TEST_MCH_ID = "1001"
TEST_MCH_SECRET = "o9wl81dncmvby3ijpq7eur456zhgtaxs"  # noqa: S105 - the documentation's example
NOTIFY_PATH = "/api/open/callback/virtual/order/notify/{token}"
GOODS_NOTIFY_PATH = "/api/open/callback/virtual/goods/notify/{token}"


@dataclass(frozen=True)
class Credentials:
    app_id: str = TEST_APP_ID
    app_secret: str = TEST_APP_SECRET
    mch_id: str = TEST_MCH_ID
    mch_secret: str = TEST_MCH_SECRET

    def sign(self, body: bytes, timestamp: int | str) -> str:
        return supply_sign(app_id=self.app_id, app_secret=self.app_secret, body=body,
                           timestamp=timestamp, mch_id=self.mch_id, mch_secret=self.mch_secret)


def new_order_no() -> str:
    """A 闲管家 order number: 19 digits."""
    return str(10**18 + secrets.randbelow(9 * 10**18))


@dataclass
class Callback:
    order_no: str
    doc: dict[str, Any] = field(repr=False)


@dataclass
class FakeNotifyState:
    """闲管家's side of the callbacks: verification, answers, records."""

    credentials: Credentials = field(default_factory=Credentials)
    clock: Callable[[], float] = time.time
    #: Callbacks to refuse (HTTP 500) before answering success.
    fail_next: int = 0
    callbacks: list[Callback] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # why each refused callback was refused
    tokens: dict[str, str] = field(default_factory=dict)  # token -> order_no
    goods_tokens: set[str] = field(default_factory=set)
    goods_notices: list[dict[str, Any]] = field(default_factory=list)  # items received
    #: Called with each accepted callback (the demo driver counts hand-overs with it).
    on_callback: Callable[[Callback], None] | None = None

    def notify_url(self, base_url: str, order_no: str) -> str:
        token = secrets.token_urlsafe(12)
        self.tokens[token] = order_no
        return base_url.rstrip("/") + NOTIFY_PATH.format(token=token)

    def goods_notify_url(self, base_url: str) -> tuple[str, str]:
        """A token and its goods callback address, for a subscription."""
        token = secrets.token_urlsafe(12)
        self.goods_tokens.add(token)
        return token, base_url.rstrip("/") + GOODS_NOTIFY_PATH.format(token=token)

    def check(self, token: str, query: dict[str, str], body: bytes) -> str | None:
        """Why a callback is refused (None: it verifies)."""
        if token not in self.tokens and token not in self.goods_tokens:
            return "unknown token"
        if not same_id(query.get("mch_id", ""), self.credentials.mch_id):
            return "mch_id"
        stamp = query.get("timestamp", "")
        if not fresh(stamp, self.clock()):
            return "timestamp"
        if not same(query.get("sign", ""), self.credentials.sign(body, stamp.strip())):
            return "sign"
        return None

    def received(self, order_no: str) -> list[dict[str, Any]]:
        return [c.doc for c in self.callbacks if c.order_no == order_no]


def make_app(state: FakeNotifyState, buyer: GoofishBuyer | None = None) -> Starlette:
    """闲管家's callback endpoint; with ``buyer``, also ``/__fake__/state`` (counts, never a
    code) and ``POST /__fake__/purchase`` (``{"goods_no", "quantity", "copies"}``, and
    ``"account"`` for a top-up: 闲管家 places an order on the gateway, ``copies`` times at
    once) for demos and manual tests."""

    async def notify(request: Request) -> JSONResponse:
        token = request.path_params["token"]
        body = await request.body()
        why = state.check(token, dict(request.query_params), body)
        if why is not None:
            state.refused.append(why)
            return JSONResponse({"code": p.SIGN_ERROR, "msg": "签名错误"})
        if state.fail_next > 0:
            state.fail_next -= 1
            state.refused.append("injected failure")
            return JSONResponse({"code": p.SYSTEM_ERROR, "msg": "系统繁忙"}, status_code=500)
        doc = json.loads(body)
        if doc.get("order_no") != state.tokens[token]:
            state.refused.append("order_no does not match the token")
            return JSONResponse({"code": p.BAD_ORDER, "msg": "订单号不匹配"})
        callback = Callback(doc["order_no"], doc)
        state.callbacks.append(callback)
        if state.on_callback is not None:
            state.on_callback(callback)
        return JSONResponse({"code": p.OK, "msg": "OK"})

    async def goods_notify(request: Request) -> JSONResponse:
        body = await request.body()
        why = state.check(request.path_params["token"], dict(request.query_params), body)
        if why is not None:
            state.refused.append(why)
            return JSONResponse({"code": p.SIGN_ERROR, "msg": "签名错误"})
        items = json.loads(body).get("items")
        if not isinstance(items, list) or not items:
            return JSONResponse({"code": p.BAD_ORDER, "msg": "items 不能为空"})
        state.goods_notices.extend(items)
        return JSONResponse({"code": p.OK, "msg": "OK"})

    async def summary(_request: Request) -> JSONResponse:
        return JSONResponse({"callbacks": len(state.callbacks), "refused": list(state.refused),
                             "orders": len(state.tokens)})

    async def place(request: Request) -> JSONResponse:
        assert buyer is not None
        doc = await request.json() if await request.body() else {}
        goods_no, quantity = str(doc.get("goods_no", "G1001")), int(doc.get("quantity", 1))
        payload = (buyer.recharge_payload(goods_no, str(doc["account"]), quantity)
                   if doc.get("account") else buyer.purchase_payload(goods_no, quantity))
        answers = await buyer.concurrent_purchases(payload, max(1, int(doc.get("copies", 1))))
        return JSONResponse({"order_no": payload["order_no"],
                             "codes": [a.get("code") for a in answers],
                             "order_status": [(a.get("data") or {}).get("order_status")
                                              for a in answers]})

    routes = [Route(NOTIFY_PATH, notify, methods=["POST"]),
              Route(GOODS_NOTIFY_PATH, goods_notify, methods=["POST"])]
    if buyer is not None:
        routes += [Route("/__fake__/state", summary, methods=["GET"]),
                   Route("/__fake__/purchase", place, methods=["POST"])]
    return Starlette(routes=routes)


class GoofishBuyer:
    """闲管家 calling a supplier gateway (``gateway_url`` = the address registered in 闲管家,
    e.g. ``https://robot.example.com/supply/xianyu``)."""

    def __init__(self, gateway_url: str, *, credentials: Credentials | None = None,
                 notify_base: str = "https://open.goofish.pro",
                 notify_state: FakeNotifyState | None = None,
                 clock: Callable[[], float] = time.time,
                 transport: httpx.AsyncBaseTransport | None = None,
                 timeout: float = 10.0) -> None:
        self.gateway_url = gateway_url.rstrip("/")
        self.credentials = credentials or Credentials()
        self.notify_base = notify_base
        self.notify_state = notify_state or FakeNotifyState(self.credentials, clock)
        self.clock = clock
        self.http = httpx.AsyncClient(transport=transport, timeout=timeout)

    def signed(self, path: str, body: bytes, *, skew: int = 0) -> str:
        stamp = int(self.clock()) + skew
        query = httpx.QueryParams({"mch_id": self.credentials.mch_id, "timestamp": stamp,
                                   "sign": self.credentials.sign(body, stamp)})
        return f"{self.gateway_url}/{path}?{query}"

    async def call(self, path: str, payload: dict[str, Any] | None = None, *,
                   skew: int = 0) -> dict[str, Any]:
        """One signed request; the answer's JSON (``code``, ``msg``, ``data``)."""
        body = json.dumps(payload or {}, ensure_ascii=False, separators=(",", ":")).encode()
        response = await self.http.post(self.signed(path, body, skew=skew), content=body,
                                        headers={"Content-Type": "application/json"})
        doc: dict[str, Any] = response.json()
        return doc

    def purchase_payload(self, goods_no: str, quantity: int = 1, *,
                         max_amount: int | None = None,
                         order_no: str | None = None) -> dict[str, Any]:
        order_no = order_no or new_order_no()
        payload: dict[str, Any] = {
            "order_no": order_no, "goods_no": goods_no, "buy_quantity": quantity,
            "notify_url": self.notify_state.notify_url(self.notify_base, order_no),
            "biz_order_no": new_order_no()}
        if max_amount is not None:
            payload["max_amount"] = max_amount
        return payload

    async def purchase(self, goods_no: str, quantity: int = 1, *, max_amount: int | None = None,
                       order_no: str | None = None) -> dict[str, Any]:
        return await self.call(p.PURCHASE, self.purchase_payload(
            goods_no, quantity, max_amount=max_amount, order_no=order_no))

    def recharge_payload(self, goods_no: str, account: str, quantity: int = 1, *,
                         max_amount: int | None = None, order_no: str | None = None,
                         **game: str) -> dict[str, Any]:
        """A top-up (创建直充订单): the purchase's fields and ``biz_content`` with the account
        to credit (and ``game_area`` / ``game_server`` / ``game_name`` / ``game_role`` where
        given), as the documentation shows."""
        payload = self.purchase_payload(goods_no, quantity, max_amount=max_amount,
                                        order_no=order_no)
        content = {"account": account, "buyer_ip": "113.87.236.130", "buyer_area": "深圳市"}
        for name, value in game.items():
            if name not in ("game_area", "game_server", "game_name", "game_role"):
                raise TypeError(f"recharge_payload() got an unexpected keyword {name!r}")
            content[name] = value
        payload["biz_content"] = content
        return payload

    async def recharge(self, goods_no: str, account: str, quantity: int = 1, *,
                       max_amount: int | None = None, **place: Any) -> dict[str, Any]:
        return await self.call(p.RECHARGE, self.recharge_payload(
            goods_no, account, quantity, max_amount=max_amount, **place))

    async def concurrent_purchases(self, payload: dict[str, Any],
                                   copies: int) -> list[dict[str, Any]]:
        """The same purchase (a top-up when it has ``biz_content``) sent ``copies`` times at
        once (闲管家 retrying while waiting)."""
        path = p.RECHARGE if "biz_content" in payload else p.PURCHASE
        return list(await asyncio.gather(*(self.call(path, payload)
                                           for _ in range(copies))))

    async def timed_out_purchase(self, payload: dict[str, Any], wait: float) -> None:
        """Send a purchase and drop the answer after ``wait`` seconds (a timeout)."""
        path = p.RECHARGE if "biz_content" in payload else p.PURCHASE
        try:
            await asyncio.wait_for(self.call(path, payload), wait)
        except TimeoutError:
            return

    async def detail(self, order_no: str, order_type: int = 2) -> dict[str, Any]:
        return await self.call(p.ORDER_DETAIL, {"order_type": order_type, "order_no": order_no})

    async def refund(self, order_no: str, amount: int = 0,
                     reason: str = "买家申请退款") -> dict[str, Any]:
        return await self.call(p.REFUND_NOTIFY, {
            "order_no": order_no, "order_type": 2, "out_order_no": "RB" + order_no,
            "biz_order_no": new_order_no(), "refund_type": 1, "refund_amount": amount,
            "refund_reason": reason, "refund_scene": "buyer_refund",
            "refund_time": int(self.clock())})

    async def subscribe(self, goods_no: str, goods_type: int = 2) -> dict[str, Any]:
        """Subscribe to a goods' changes (自动调价), with a fresh token and address."""
        token, url = self.notify_state.goods_notify_url(self.notify_base)
        return await self.call(p.SUBSCRIBE, {"goods_type": goods_type, "goods_no": goods_no,
                                             "token": token, "notify_url": url})

    async def verify_callbacks(self, order_no: str) -> bool:
        """What 闲管家 does after a callback: re-query ``order/detail`` and compare."""
        got = self.notify_state.received(order_no)
        if not got:
            return False
        last = got[-1]
        detail = await self.detail(order_no, int(last.get("order_type") or 2))
        data = detail.get("data") or {}
        return bool(detail.get("code") == p.OK
                    and data.get("order_status") == last.get("order_status")
                    and data.get("card_items") == last.get("card_items"))

    async def aclose(self) -> None:
        await self.http.aclose()
