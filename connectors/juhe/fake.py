"""A faithful fake of Juhe's mobile top-up API (test double; loopback only).

It serves Juhe's endpoints (``/ofpay/mobile/telcheck|telquery|onlineorder|ordersta|yue``)
answering in Juhe's shape and codes, verifies signatures as Juhe does, keeps orders by the
merchant's ``orderid`` (a second order under it: 208509 "order number exists"), debits the
balance on acceptance and refunds a failure, moves orders from ``0`` to ``1`` (or ``9``)
after ``settle_seconds`` on its clock, and posts the signed callback (form: ``sporder_id``,
``orderid``, ``sta``, ``err_msg``, ``sign``) until the merchant answers ``success``.

Faults (``POST /__fake__/faults``), besides the common ones: ``accept_then_fail``,
``lose_answer`` (placed, answer lost: 504), ``lose_request`` (504, not placed), ``busy``
(10014, not placed), ``duplicate_answer`` (placed, answered 208509), ``callback_first``
(the callback is posted before the placing answer), ``duplicate_callbacks``,
``late_callbacks`` (sent only after the next query), ``off_shelf`` (208501),
``price_rise_cents`` (added to every price) and ``balance_cents`` (set the balance).
The test credentials are public on purpose; nothing here may be pointed at Juhe.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.fakebase import (
    CallLog,
    CallRecord,
    CatalogItem,
    FakeBase,
    Faults,
    OrderRequest,
    api_endpoint,
    control_routes,
    fake_middleware,
)
from connectors.fakekit import WriteBackLog, same_text, wall_now
from connectors.juhe import protocol as p

TEST_OPENID = "JHfake0000000000000000000000000000"
TEST_KEY = "juhe-fake-test-key-0000000000000000"  # public on purpose: the fake's own
DEFAULT_BALANCE_CENTS = 100_000_00
#: The fake's price: face value less 0.3% (Ofpay's usual margin; an assumption).
DISCOUNT_PER_MILLE = 3
GATEWAY_TIMEOUT_PAGE = "<html><body><h1>504 Gateway Time-out</h1></body></html>"


@dataclass
class JuheFaults(Faults):
    accept_then_fail: int = 0
    lose_answer: int = 0
    lose_request: int = 0
    busy: int = 0
    duplicate_answer: int = 0
    callback_first: int = 0
    late_callbacks: int = 0
    off_shelf: int = 0
    price_rise_cents: int = 0
    balance_cents: int = -1  # -1: leave the balance; N: set it to N (then back to -1)
    fail_reason: str = "运营商充值失败"  # why an accepted-then-failed order fails


class JuheCallLog(CallLog):
    """The call log, also redacting Juhe's credential parameter ``key``."""

    def record(self, http_method: str, path: str, api: str, payload: Mapping[str, Any],
               status: int, outcome: str, *, received_at: float | None = None) -> CallRecord:
        shown = {k: ("<redacted>" if k.lower() in ("key", "openid") else v)
                 for k, v in payload.items()}
        return super().record(http_method, path, api, shown, status, outcome,
                              received_at=received_at)


@dataclass
class FakeOrder:
    orderid: str
    sporder_id: str
    phone: str
    face: int
    cost_cents: int
    placed_at: datetime
    state: str = p.GAME_PROCESSING
    fail_reason: str | None = None  # armed accept-then-fail
    err_msg: str = ""


@dataclass
class Callback:
    orderid: str
    due_at: datetime
    attempts: int = 0
    held: bool = False  # a late callback: not sent before the next query


@dataclass
class JuheFakeState(FakeBase):
    """Juhe's side: accounts, orders, balance, callbacks."""

    openid: str = TEST_OPENID
    key: str = TEST_KEY
    balance: int = DEFAULT_BALANCE_CENTS
    settle_seconds: float = 30.0
    callback_url: str | None = None
    clock: Callable[[], datetime] = wall_now
    clock_offset_seconds: float = 0.0
    orders: dict[str, FakeOrder] = field(default_factory=dict)
    callbacks: list[Callback] = field(default_factory=list)
    callback_log: list[dict[str, Any]] = field(default_factory=list)
    revoked: bool = False
    faults: JuheFaults = field(default_factory=JuheFaults)

    platform = "juhe"
    pushes = True
    fault_aliases = MappingProxyType({"duplicate_callbacks": "duplicate_pushes",
                                      "reorder_callbacks": "reorder_pushes"})

    def __post_init__(self) -> None:
        self._init_base(self.clock, self.clock_offset_seconds)
        self.call_log = JuheCallLog()
        self.writebacks = WriteBackLog()
        self._ids = itertools.count(1)

    # -- FakeBase -------------------------------------------------------------------------

    def catalog(self) -> Sequence[CatalogItem]:
        return [CatalogItem(p.product_id(f), "product_id", f"话费{f}元",
                            f"{self.price(f) / 100:.2f}") for f in p.FACE_VALUES]

    def create_paid_order(self, request: OrderRequest) -> str:
        raise ValueError("Juhe is a supplier: it takes orders from the merchant's robot, "
                         "not paid orders from buyers")

    def expire_tokens(self) -> None:
        self.revoked = True

    def platform_snapshot(self) -> dict[str, Any]:
        return {"balance_cents": self.balance,
                "orders": [dataclasses.asdict(o) | {"placed_at": o.placed_at.isoformat()}
                           for o in self.orders.values()],
                "callbacks": list(self.callback_log),
                "successful_orders": sum(o.state == p.GAME_SUCCESS
                                         for o in self.orders.values())}

    def call_outcome(self, status: int, document: Any) -> str:
        if isinstance(document, Mapping) and document.get("error_code") not in (None, 0):
            return f"error {document.get('error_code')} {document.get('reason')}"
        return "ok" if status == 200 else f"http {status}"

    # -- Juhe's rules -----------------------------------------------------------------------

    def price(self, face: int) -> int:
        rise: int = self.faults.price_rise_cents
        return face * (1000 - DISCOUNT_PER_MILLE) // 10 + max(rise, 0)

    def charged_cents(self) -> int:
        with self.lock:
            return sum(o.cost_cents for o in self.orders.values() if o.state != p.GAME_FAILED)

    def _apply_balance_fault(self) -> None:
        if self.faults.balance_cents >= 0:
            self.balance, self.faults.balance_cents = self.faults.balance_cents, -1

    def advance(self) -> None:
        """Finish every order whose time has come (and queue its callback)."""
        now = self.now()
        for order in self.orders.values():
            if order.state != p.GAME_PROCESSING \
                    or now < order.placed_at + timedelta(seconds=self.settle_seconds):
                continue
            if order.fail_reason is not None:
                order.state, order.err_msg = p.GAME_FAILED, order.fail_reason
                self.balance += order.cost_cents
            else:
                order.state = p.GAME_SUCCESS
            self.callbacks.append(Callback(order.orderid, now,
                                           held=self.take_fault("late_callbacks")))

    def answer(self, path: str, form: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON answer) for one call to ``path``."""
        with self.lock:
            self.advance()
            self._apply_balance_fault()
            if self.revoked or not same_text(form.get("key", ""), self.key):
                return 200, _error(p.BAD_KEY, "错误的请求KEY")
            if path == p.ORDERSTA:
                return 200, self._ordersta(form)
            if path in (p.TELCHECK, p.TELQUERY):
                return 200, self._telquery(form, path == p.TELQUERY)
            if path == p.YUE:
                stamp = form.get("timestamp", "")
                if not same_text(form.get("sign", ""),
                                 p.balance_sign(self.openid, self.key, stamp)):
                    return 200, _error(p.BAD_SIGN, "校验值sign错误")
                return 200, _ok("查询成功", {"uid": self.openid,
                                         "money": p.cents_to_yuan(self.balance)})
            return self._onlineorder(form)

    def _phone_and_face(self, form: Mapping[str, str]) -> tuple[str, int] | dict[str, Any]:
        phone, cardnum = form.get("phoneno", ""), form.get("cardnum", "")
        if not p.PHONE.fullmatch(phone):
            return _error(p.BAD_PHONE, "错误的手机号码")
        if not cardnum.isdigit() or int(cardnum) not in p.FACE_VALUES:
            return _error(p.BAD_AMOUNT, "错误的充值金额")
        return phone, int(cardnum)

    def _telquery(self, form: Mapping[str, str], priced: bool) -> dict[str, Any]:
        checked = self._phone_and_face(form)
        if isinstance(checked, dict):
            return checked
        if self.faults.off_shelf > 0:
            return _error(p.NOT_ALLOWED, "不允许充值的手机号码及金额")
        face = checked[1]
        if not priced:
            return _ok("允许充值的手机号码及金额", None)
        return _ok("success", {"cardid": "191404", "cardname": f"话费{face}元直充",
                               "inprice": p.cents_to_yuan(self.price(face)),
                               "game_area": "测试"})

    def _ordersta(self, form: Mapping[str, str]) -> dict[str, Any]:
        order = self.orders.get(form.get("orderid", ""))
        for callback in self.callbacks:
            callback.held = False  # a late callback goes after the merchant asked
        if order is None:
            return _error(p.ORDER_NOT_FOUND, "订单号不存在")
        result = {"uordercash": p.cents_to_yuan(order.cost_cents),
                  "sporder_id": order.sporder_id, "game_state": order.state}
        if order.err_msg:
            result["err_msg"] = order.err_msg
        return _ok("查询成功", result)

    def _onlineorder(self, form: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        if self.take_fault("lose_request"):
            return 504, {}
        if self.take_fault("busy"):
            return 200, _error(p.SYSTEM_ERROR, "系统内部异常")
        checked = self._phone_and_face(form)
        if isinstance(checked, dict):
            return 200, checked
        phone, face = checked
        orderid = form.get("orderid", "")
        if not p.ORDER_ID.fullmatch(orderid):
            return 200, _error(p.BAD_ORDER_ID, "错误的商家订单号")
        expected = p.order_sign(self.openid, self.key, phone, str(face), orderid)
        if not same_text(form.get("sign", "").lower(), expected):
            return 200, _error(p.BAD_SIGN, "校验值sign错误")
        if orderid in self.orders:
            return 200, _error(p.DUPLICATE_ORDER, "商家订单号重复")
        if self.take_fault("off_shelf"):
            return 200, _error(p.NOT_ALLOWED, "不允许充值的手机号码及金额")
        cost = self.price(face)
        if cost > self.balance:
            return 200, _error(p.LOW_BALANCE, "账户余额不足")
        self.balance -= cost
        fail = self.take_fault("accept_then_fail")
        order = FakeOrder(orderid, f"J{self.now():%y%m%d%H%M%S}{next(self._ids):08d}", phone,
                          face, cost, self.now(),
                          fail_reason=self.faults.fail_reason if fail else None)
        self.orders[orderid] = order
        if self.take_fault("callback_first"):
            self.callbacks.append(Callback(orderid, self.now()))
        if self.take_fault("lose_answer"):
            return 504, {}
        if self.take_fault("duplicate_answer"):
            return 200, _error(p.DUPLICATE_ORDER, "商家订单号重复")
        return 200, _ok("提交充值成功", {
            "cardid": "191404", "cardnum": str(face), "ordercash": p.cents_to_yuan(cost),
            "cardname": f"话费{face}元直充", "sporder_id": order.sporder_id,
            "uorderid": orderid, "game_userid": phone, "game_state": p.GAME_PROCESSING})

    # -- settling and callbacks -----------------------------------------------------------

    def settle(self) -> None:
        """Finish every order now (moves a settable clock past the processing time)."""
        with self.lock:
            for order in self.orders.values():
                order.placed_at -= timedelta(seconds=self.settle_seconds)
            self.advance()

    def callback_form(self, orderid: str) -> bytes:
        """The form Juhe posts for this order, signed as Juhe signs it."""
        from urllib.parse import urlencode

        with self.lock:
            order = self.orders[orderid]
            sta = order.state
            return urlencode({"sporder_id": order.sporder_id, "orderid": orderid, "sta": sta,
                              "err_msg": order.err_msg,
                              "sign": p.callback_sign(self.key, order.sporder_id,
                                                      orderid)}).encode()

    def due_callbacks(self) -> list[Callback]:
        with self.lock:
            self.advance()
            now = self.now()
            return self.push_order([c for c in self.callbacks
                                    if not c.held and c.due_at <= now])

    def deliver_callbacks(self, client: httpx.Client) -> int:
        """Post every due callback once; an answer other than ``success`` is retried later
        (10 s, 20 s, 40 s ... on the fake's clock). The lock is not held while posting."""
        if not self.callback_url:
            return 0
        delivered = 0
        for callback in self.due_callbacks():
            body = self.callback_form(callback.orderid)
            try:
                response = client.post(self.callback_url, content=body, headers={
                    "Content-Type": "application/x-www-form-urlencoded"})
                ok = response.status_code == 200 and response.text.strip() == "success"
            except httpx.HTTPError:
                ok = False
            with self.lock:
                callback.attempts += 1
                self.callback_log.append({"orderid": callback.orderid, "ok": ok,
                                          "attempt": callback.attempts})
                if ok:
                    if callback in self.callbacks:
                        self.callbacks.remove(callback)
                    delivered += 1
                else:
                    callback.due_at = self.now() + timedelta(
                        seconds=10 * 2 ** min(callback.attempts - 1, 8))
        return delivered


def _ok(reason: str, result: Any) -> dict[str, Any]:
    return {"reason": reason, "result": result, "error_code": p.OK}


def _error(code: int, reason: str) -> dict[str, Any]:
    return {"reason": reason, "result": None, "error_code": code}


def make_app(state: JuheFakeState) -> Starlette:
    """The fake's ASGI app: Juhe's endpoints and the common control API."""

    def juhe_endpoint(path: str) -> Route:
        async def answer(request: Request) -> Response:
            raw = await request.body()
            form = dict(request.query_params)
            form.update(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
            status, document = state.answer(path, form)
            if status != 200:
                return Response(GATEWAY_TIMEOUT_PAGE, status_code=status,
                                media_type="text/html")
            return JSONResponse(document)

        return Route(path, api_endpoint(state, answer, error_page=GATEWAY_TIMEOUT_PAGE,
                                        error_status=502), methods=["GET", "POST"])

    routes = [juhe_endpoint(path) for path in
              (p.TELCHECK, p.TELQUERY, p.ONLINEORDER, p.ORDERSTA, p.YUE)]
    return Starlette(routes=[*routes, *control_routes(state)],
                     middleware=fake_middleware(state))
