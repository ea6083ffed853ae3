"""The state and API semantics of the fake POP gateway (see :mod:`connectors.pinduoduo.fake`).

:class:`FakePdd` holds orders, after-sales and tokens for one app and one merchant, checks
every request as POP does (client_id, MD5 signature, timestamp within 10 minutes, API name,
access token and its expiry) and answers with POP's response objects and ``error_response``
shapes. Time comes from an injectable clock so tests move hours forward without sleeping.

Where POP's exact answer is not documented in what we found, the fake picks one and says
so (``# invented``); the connector never depends on those codes. It is a test double: it
must never be pointed at, or hold credentials for, the real platform.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

from connectors.common.shapes import ShapeFaults
from connectors.common.times import CST, format_cst, from_epoch, to_epoch
from connectors.fakebase import CatalogItem, FakeBase, OrderRequest, error_outcome
from connectors.fakebase import Faults as BaseFaults
from connectors.fakekit import (
    FakeClock,
    WriteBackLog,
    records,
    same_text,
    sent_fields,
    wall_now,
)
from connectors.pinduoduo.sign import pdd_sign

TIMESTAMP_TOLERANCE = timedelta(minutes=10)  # POP doc: "与拼多多服务器时间差值在10分钟内"
#: A ``timestamp`` at or above this is epoch milliseconds (as seconds it would be the year
#: 5138): the official SDKs send seconds, but published clients (PyPI ``pddsdk``, whose
#: ``_get_local_timestamp`` is ``int(time.time()*1000)``; a JavaScript client using
#: ``new Date().getTime()``) send milliseconds and work against the gateway, so POP accepts
#: both. Anything else (micro- or nanoseconds, signs, fractions, non-ASCII digits) is
#: answered with POP's own 10001 ``公共参数错误:timestamp``.
MILLIS_FROM = 100_000_000_000
#: The longest ``timestamp`` text looked at (milliseconds have 13 digits until 2286).
_TIMESTAMP_DIGITS = 13
#: What the fake sells: the SKU of ``shops/example-pinduoduo.yaml`` (its mapping names the
#: merchant code, ``outer_id``), with the POP item fields each line carries.
CATALOG: tuple[tuple[CatalogItem, Mapping[str, Any]], ...] = (
    (CatalogItem("YOUKU-VIP-1M", "outer_id", "优酷VIP月卡 Youku VIP 1 month", "19.90"),
     {"goods_id": 500000101, "sku_id": 5000001011, "outer_id": "YOUKU-VIP-1M"}),
)
MAX_WINDOW = timedelta(minutes=30)
LOGISTICS_COMPANIES = {44: "顺丰快递", 85: "圆通快递", 115: "申通快递", 121: "韵达快递",
                       3: "无需物流(fake)"}

MERCHANT_APIS = frozenset({
    "pdd.order.number.list.increment.get",
    "pdd.order.information.get",
    "pdd.logistics.online.send",
    "pdd.order.note.update",
    "pdd.refund.list.increment.get",
})
APP_APIS = frozenset({
    "pdd.pop.auth.token.create",
    "pdd.pop.auth.token.refresh",
    "pdd.logistics.companies.get",
})


class PopError(Exception):
    """An ``error_response`` the fake answers with (HTTP 200, like POP)."""

    def __init__(self, code: int, msg: str, sub_msg: str = "", sub_code: str | None = None) -> None:
        super().__init__(code, msg)
        self.code, self.msg = code, msg
        self.sub_msg = sub_msg or msg
        self.sub_code = sub_code if sub_code is not None else str(code)


def _param_error(detail: str) -> PopError:
    return PopError(10000, "参数错误", detail)


def _common_error(name: str) -> PopError:
    # Doc example: {"error_code":10001,"error_msg":"公共参数错误:type",...}
    return PopError(10001, f"公共参数错误:{name}")


def goods_spec(properties: Iterable[tuple[str, str]]) -> str:
    """The spec text POP shows for a SKU: its values, comma-separated (names are not
    carried, as far as we know)."""
    return ",".join(value for _name, value in properties)


@dataclass
class FakeItem:
    goods_id: int
    sku_id: int
    goods_name: str
    goods_price: str  # yuan, 2 decimals
    goods_count: int = 1
    outer_id: str | None = None
    outer_goods_id: str | None = None
    goods_spec: str = ""  # the SKU's spec values as the buyer sees them ("50元,138...")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "goods_id": self.goods_id, "sku_id": self.sku_id, "goods_name": self.goods_name,
            "goods_price": float(self.goods_price), "goods_count": self.goods_count,
            "goods_spec": self.goods_spec, "goods_img": "https://img.example/fake.jpg",
            "outer_id": self.outer_id or "", "outer_goods_id": self.outer_goods_id or "",
        }
        return data


@dataclass
class FakeOrder:
    order_sn: str
    items: list[FakeItem]
    created: datetime
    updated_at: datetime
    pay_time: datetime | None
    order_status: int = 1
    confirm_status: int = 1
    refund_status: int = 1
    after_sales_status: int = 0
    logistics_id: int = 0
    tracking_number: str = ""
    shipping_time: datetime | None = None
    remark: str = ""
    remark_tag: int | None = None
    shipments: int = 0
    buyer_memo: str = ""  # the buyer's message to the seller (买家留言)

    @property
    def pay_amount(self) -> Decimal:
        return sum((Decimal(i.goods_price) * i.goods_count for i in self.items), Decimal("0"))

    def to_json(self) -> dict[str, Any]:
        return {
            "order_sn": self.order_sn,
            "order_status": self.order_status,
            "confirm_status": self.confirm_status,
            "refund_status": self.refund_status,
            "after_sales_status": self.after_sales_status,
            "is_lucky_flag": 1,
            "trade_type": 0,
            "group_status": 1,
            "pay_amount": float(self.pay_amount),
            "goods_amount": float(self.pay_amount),
            "discount_amount": 0.0,
            "postage": 0.0,
            "created_time": format_cst(self.created),
            "confirm_time": format_cst(self.created),
            "pay_time": format_cst(self.pay_time) if self.pay_time else "",
            "updated_at": format_cst(self.updated_at),
            "shipping_time": format_cst(self.shipping_time) if self.shipping_time else "",
            "logistics_id": self.logistics_id,
            "tracking_number": self.tracking_number,
            "remark": self.remark,
            "remark_tag": self.remark_tag,
            "buyer_memo": self.buyer_memo,
            "card_info_list": [],
            "item_list": [item.to_json() for item in self.items],
        }


@dataclass
class FakeRefund:
    id: int
    order_sn: str
    after_sales_status: int
    after_sales_type: int
    refund_amount: str
    created: datetime
    updated: datetime

    def to_json(self, order: FakeOrder) -> dict[str, Any]:
        item = order.items[0]
        return {
            "id": self.id, "order_sn": self.order_sn,
            "after_sales_status": self.after_sales_status,
            "after_sales_type": self.after_sales_type,
            "refund_amount": self.refund_amount, "order_amount": str(order.pay_amount),
            "goods_id": item.goods_id, "sku_id": str(item.sku_id), "goods_name": item.goods_name,
            "outer_id": item.outer_id or "", "outer_goods_id": item.outer_goods_id or "",
            "created_time": format_cst(self.created),
            "updated_time": format_cst(self.updated),
            "speed_refund_flag": 0,
        }


@dataclass
class FakeToken:
    value: str
    expires_at: datetime
    revoked: bool = False


@dataclass
class Faults(BaseFaults):
    """Failures to inject into the next calls to ``/api/router`` (``throttle``: the next N
    business calls answer 52101, or ``throttle_code``)."""

    throttle_code: int = 52101
    unavailable: int = 0  # the next N business calls answer 52103


# after_sales_status values after which the order's refund_status becomes...
_REFUND_SUCCESS = 10
_REFUND_CLOSED = frozenset({6, 9, 11, 12, 13})


@dataclass
class FakePdd(FakeBase):
    """A Pinduoduo open-platform double for one app and one merchant."""

    platform: ClassVar[str] = "pinduoduo"

    client_id: str = "test-client"
    client_secret: str = "testsecret"  # noqa: S105 - a fake's published test credential
    access_token: str = "test-access-token"  # noqa: S105 - the fake's initial test token
    refresh_token: str = "test-refresh-token"  # noqa: S105 - the fake's initial test token
    auth_code: str = "test-code"
    clock: Callable[[], datetime] = wall_now
    #: Seconds the platform's clock runs ahead of ``clock`` (negative: behind); its order
    #: times, windows and ``Date`` header follow it.
    clock_offset: float = 0.0
    access_ttl: timedelta = timedelta(hours=24)
    refresh_ttl: timedelta = timedelta(days=30)
    owner_id: str = "900000001"
    owner_name: str = "fake-mall"
    faults: Faults = field(default_factory=Faults)
    #: Called with (api, params) before each authenticated business call; tests use it to
    #: change state between two pages of one poll.
    on_call: Callable[[str, Mapping[str, str]], None] | None = None
    orders: dict[str, FakeOrder] = field(default_factory=dict)
    refunds: dict[int, FakeRefund] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    #: Malformed answers on demand (see :meth:`corrupt_order`, :meth:`garble_answers`).
    shapes: ShapeFaults = field(default_factory=ShapeFaults)
    #: Every ship and memo call received, refused ones too (``snapshot()["write_backs"]``).
    writebacks: WriteBackLog = field(default_factory=WriteBackLog)

    def __post_init__(self) -> None:
        self._init_base(self.clock, self.clock_offset)
        self._serials = itertools.count(123456789012345, 7919)
        self._goods_ids = itertools.count(500000001)
        self._refund_ids = itertools.count(7000000001)
        self._request_ids = itertools.count(1)
        now = self.now()
        self.access_tokens: dict[str, FakeToken] = {
            self.access_token: FakeToken(self.access_token, now + self.access_ttl)}
        self.refresh_tokens: dict[str, FakeToken] = {
            self.refresh_token: FakeToken(self.refresh_token, now + self.refresh_ttl)}
        self.refreshes = 0

    # -- scenario control (Python API; the /__fake__/ endpoints wrap these) -------------

    def create_order(
        self,
        *,
        items: Iterable[Mapping[str, Any]] = ({"goods_name": "Game card 100",
                                               "goods_price": "10.00"},),
        confirm_status: int = 1,
        updated_at: datetime | None = None,
        paid_at: datetime | None = None,
        buyer_memo: str | None = None,
    ) -> str:
        """Add a paid order awaiting shipment (by default; paid ``paid_at`` or now); returns
        its order_sn. An item may carry ``goods_spec``."""
        with self.lock:
            now = self.now()
            order_sn = f"{now.astimezone(CST):%y%m%d}-{next(self._serials):015d}"
            fake_items = []
            for item in items:
                goods_id = int(item.get("goods_id") or next(self._goods_ids))
                fake_items.append(FakeItem(
                    goods_id=goods_id,
                    sku_id=int(item.get("sku_id") or goods_id * 10 + 1),
                    goods_name=str(item.get("goods_name", "item")),
                    goods_price=str(Decimal(str(item.get("goods_price", "1.00")))
                                    .quantize(Decimal("0.01"))),
                    goods_count=int(item.get("goods_count", 1)),
                    outer_id=item.get("outer_id"),
                    outer_goods_id=item.get("outer_goods_id"),
                    goods_spec=str(item.get("goods_spec") or ""),
                ))
            self.orders[order_sn] = FakeOrder(
                order_sn=order_sn, items=fake_items, created=min(paid_at or now, now),
                updated_at=updated_at or now, pay_time=paid_at or now,
                confirm_status=confirm_status, buyer_memo=buyer_memo or "")
            return order_sn

    def touch(self, order_sn: str, when: datetime | None = None) -> None:
        """Mark an order updated (now by default), as any change on POP does."""
        with self.lock:
            self._order(order_sn).updated_at = when or self.now()

    def request_refund(self, order_sn: str, *, after_sales_status: int = 2,
                       after_sales_type: int = 2) -> int:
        """Open an after-sale (2: buyer applied) or record its outcome (10: refunded);
        returns the after-sale id. Updates the order's refund fields as POP does."""
        with self.lock:
            order = self._order(order_sn)
            now = self.now()
            existing = next((r for r in self.refunds.values() if r.order_sn == order_sn), None)
            if existing is None:
                existing = FakeRefund(next(self._refund_ids), order_sn, after_sales_status,
                                      after_sales_type, str(order.pay_amount), now, now)
                self.refunds[existing.id] = existing
            existing.after_sales_status, existing.updated = after_sales_status, now
            order.after_sales_status = after_sales_status
            if after_sales_status == _REFUND_SUCCESS:
                order.refund_status = 4
            elif after_sales_status in _REFUND_CLOSED:
                order.refund_status = 1
            else:
                order.refund_status = 2
            order.updated_at = now
            return existing.id

    def cancel_order(self, order_sn: str) -> None:
        """The trade is cancelled before shipping (confirm_status 2)."""
        with self.lock:
            order = self._order(order_sn)
            order.confirm_status, order.updated_at = 2, self.now()

    def expire_access_tokens(self) -> None:
        """Every access token issued so far expires now (refresh tokens stay valid)."""
        with self.lock:
            now = self.now()
            for token in self.access_tokens.values():
                token.expires_at = min(token.expires_at, now)

    def revoke_authorization(self) -> None:
        """The merchant withdrew the authorization: no token works or refreshes any more."""
        with self.lock:
            for token in (*self.access_tokens.values(), *self.refresh_tokens.values()):
                token.revoked = True

    def ship_by_merchant(self, order_sn: str) -> bool:
        """The merchant ships the order by hand in the merchant backend (the robot's later
        ``online.send`` is then refused); False if it was not shippable."""
        with self.lock:
            order = self._order(order_sn)
            if not _shippable(order):
                return False
            self._apply_shipment(order, 3, f"HAND{order_sn[-8:]}")
            return True

    def _apply_shipment(self, order: FakeOrder, logistics_id: int, tracking: str) -> None:
        now = self.now()
        order.order_status, order.shipping_time, order.updated_at = 2, now, now
        order.logistics_id, order.tracking_number = logistics_id, tracking
        order.shipments += 1

    def corrupt_order(self, order_sn: str, path: str, how: str) -> None:
        """Serialize order ``order_sn`` with the field at ``path`` (dotted, into the order
        JSON, e.g. ``item_list.0.goods_count``) dropped, null or a huge number string,
        wherever POP returns it; :meth:`clear_corruption` ends it."""
        self.shapes.corrupt(order_sn, path, how)

    def garble_answers(self, how: str, count: int = 1) -> None:
        """The next ``count`` router answers are an HTML page (``html``, HTTP 200) or JSON
        cut off in the middle (``truncated``)."""
        self.shapes.garble_next(how, count)

    def clear_corruption(self, order_sn: str | None = None) -> None:
        self.shapes.clear(order_sn)

    def expire_tokens(self) -> None:
        self.expire_access_tokens()

    catalog_entries: ClassVar[tuple[tuple[CatalogItem, Mapping[str, Any]], ...]] = CATALOG

    def create_paid_order(self, request: OrderRequest) -> str:
        if request.buyer is not None:
            raise ValueError("buyer: Pinduoduo orders carry no buyer id")
        item, fields = self.catalog_entry(request.sku)
        line: dict[str, Any] = {"goods_count": request.quantity}
        if item is not None and fields is not None:
            line.update(fields, goods_name=item.title, goods_price=item.price)
        elif request.sku.isascii() and request.sku.isdigit() and len(request.sku) <= 18:
            line.update(sku_id=request.sku, goods_name=f"SKU {request.sku}", goods_price="1.00")
        else:
            line.update(outer_id=request.sku, goods_name=request.sku, goods_price="1.00")
        line["goods_spec"] = goods_spec(request.properties)
        return self.create_order(items=[line], paid_at=request.paid_at,
                                 buyer_memo=request.message)

    def call_api(self, path: str, payload: Mapping[str, Any]) -> str:
        return str(payload.get("type") or path)

    def call_outcome(self, status: int, document: Any) -> str:
        if isinstance(document, dict) and "error_response" in document:
            return error_outcome(document["error_response"], "error_code", "error_msg")
        return super().call_outcome(status, document)

    def platform_snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "orders": {
                    sn: {"order_status": o.order_status, "refund_status": o.refund_status,
                         "confirm_status": o.confirm_status, "shipments": o.shipments,
                         "memo": o.remark, "tracking_number": o.tracking_number,
                         "updated_at": format_cst(o.updated_at)}
                    for sn, o in self.orders.items()
                },
                "refreshes": self.refreshes,
            }

    def _order(self, order_sn: str) -> FakeOrder:
        try:
            return self.orders[order_sn]
        except KeyError:
            raise KeyError(f"no order {order_sn}") from None

    # -- the wire protocol --------------------------------------------------------------

    def handle(self, params: Mapping[str, str]) -> dict[str, Any]:
        """Answer one router call (query + body merged, values as sent) as POP's JSON."""
        with self.lock:
            api = params.get("type", "")
            self.calls.append(api)
            try:
                self._authenticate(api, params)
                if api in MERCHANT_APIS:
                    if self.on_call is not None:
                        self.on_call(api, params)
                    self._business_faults()
                body = self._dispatch(api, params)
            except PopError as err:
                return {"error_response": {
                    "error_code": err.code, "error_msg": err.msg, "sub_code": err.sub_code,
                    "sub_msg": err.sub_msg, "request_id": self._request_id()}}
            body["request_id"] = self._request_id()
            return {_response_key(api): body}

    def _request_id(self) -> str:
        return f"{to_epoch(self.now())}{next(self._request_ids):08d}"

    def _business_faults(self) -> None:
        if self.faults.throttle > 0:
            self.faults.throttle -= 1
            code = self.faults.throttle_code
            msg = "当前接口被限流，请稍后重试" if code == 52101 else "调用过于频繁，请调整调用频率"
            raise PopError(code, msg)
        if self.faults.unavailable > 0:
            self.faults.unavailable -= 1
            raise PopError(52103, "服务暂时不可用，请稍后重试")

    def _authenticate(self, api: str, params: Mapping[str, str]) -> None:
        if not api:
            raise _common_error("type")
        client_id = params.get("client_id", "")
        if not client_id:
            raise _common_error("client_id")
        if not same_text(client_id, self.client_id):
            raise PopError(10016, "client下线或者clientId不正确")
        sign = params.get("sign", "")
        if not sign:
            raise _common_error("sign")
        if not same_text(sign.upper(), pdd_sign(params, self.client_secret)):
            # Real payload: error_code 20004, error_msg/sub_msg "签名验证失败", sub_code "20004"
            raise PopError(20004, "签名验证失败")
        self._check_timestamp(params.get("timestamp", ""))
        if params.get("data_type", "JSON") != "JSON":
            raise _common_error("data_type")  # invented: this fake answers JSON only
        if api not in MERCHANT_APIS and api not in APP_APIS:
            raise PopError(10017, "type不正确")
        if api in MERCHANT_APIS:
            self._check_access_token(params.get("access_token", ""))

    def _check_timestamp(self, text: str) -> None:
        """Epoch seconds or milliseconds (see :data:`MILLIS_FROM`) within ten minutes of
        the platform's time; anything else is POP's 10001 ``公共参数错误:timestamp``."""
        if not (text.isascii() and text.isdigit()) or len(text) > _TIMESTAMP_DIGITS:
            raise _common_error("timestamp")
        value = int(text)
        sent = from_epoch(value / 1000 if value >= MILLIS_FROM else value)
        if abs(sent - self.now()) > TIMESTAMP_TOLERANCE:
            raise _common_error("timestamp")  # invented: POP's exact answer is not documented

    def _check_access_token(self, value: str) -> None:
        if not value:
            raise _common_error("access_token")
        token = self.access_tokens.get(value)
        if token is None:
            raise PopError(20032, "access_token或client_id错误")
        if token.revoked or self.now() >= token.expires_at:
            # Real payload: {"error_code":10019,"error_msg":"access_token已过期"}
            raise PopError(10019, "access_token已过期")

    def _dispatch(self, api: str, params: Mapping[str, str]) -> dict[str, Any]:
        handler: Callable[[Mapping[str, str]], dict[str, Any]] = {
            "pdd.pop.auth.token.create": self._token_create,
            "pdd.pop.auth.token.refresh": self._token_refresh,
            "pdd.logistics.companies.get": self._companies,
            "pdd.order.number.list.increment.get": self._increment_get,
            "pdd.order.information.get": self._information_get,
            "pdd.logistics.online.send": self._online_send,
            "pdd.order.note.update": self._note_update,
            "pdd.refund.list.increment.get": self._refund_increment_get,
        }[api]
        return handler(params)

    # -- APIs -----------------------------------------------------------------------------

    def _issue_tokens(self) -> dict[str, Any]:
        now = self.now()
        access = FakeToken(secrets.token_hex(20), now + self.access_ttl)
        refresh = FakeToken(secrets.token_hex(20), now + self.refresh_ttl)
        self.access_tokens[access.value] = access
        self.refresh_tokens[refresh.value] = refresh
        return {
            "access_token": access.value,
            "expires_in": int(self.access_ttl.total_seconds()),
            "expires_at": to_epoch(access.expires_at),
            "refresh_token": refresh.value,
            "refresh_token_expires_in": int(self.refresh_ttl.total_seconds()),
            "refresh_token_expires_at": to_epoch(refresh.expires_at),
            "owner_id": self.owner_id,
            "owner_name": self.owner_name,
            "scope": sorted(MERCHANT_APIS),
        }

    def _token_create(self, params: Mapping[str, str]) -> dict[str, Any]:
        code = _required(params, "code")
        if not same_text(code, self.auth_code):
            raise _param_error("code 已过期或无效")  # invented sub_msg; real code unknown
        return self._issue_tokens()

    def _token_refresh(self, params: Mapping[str, str]) -> dict[str, Any]:
        value = _required(params, "refresh_token")
        token = self.refresh_tokens.get(value)
        if token is None or token.revoked or self.now() >= token.expires_at:
            raise _param_error("refresh_token已过期或无效")  # invented: real code unknown
        self.refreshes += 1
        return self._issue_tokens()

    def _companies(self, params: Mapping[str, str]) -> dict[str, Any]:
        return {"logistics_companies": [
            {"id": cid, "logistics_company": name, "available": 1, "code": f"C{cid}"}
            for cid, name in sorted(LOGISTICS_COMPANIES.items())]}

    def _window(self, params: Mapping[str, str]) -> tuple[datetime, datetime]:
        start = _epoch_param(params, "start_updated_at")
        end = _epoch_param(params, "end_updated_at")
        if end < start:
            raise _param_error("end_updated_at 必须不小于 start_updated_at")
        if end - start > MAX_WINDOW:
            raise _param_error("开始时间结束时间间距不超过 30 分钟")
        return start, end

    def _increment_get(self, params: Mapping[str, str]) -> dict[str, Any]:
        start, end = self._window(params)
        order_status = _int_param(params, "order_status")
        refund_status = _int_param(params, "refund_status")
        _int_param(params, "is_lucky_flag")
        rows = [
            o for o in self.orders.values()
            if start <= o.updated_at.replace(microsecond=0) <= end
            and order_status in (5, o.order_status)
            and refund_status in (5, o.refund_status)
            and o.confirm_status != 0
        ]
        rows.sort(key=lambda o: (o.updated_at, o.order_sn))
        return _page(params, [self.shapes.apply(o.order_sn, o.to_json()) for o in rows],
                     "order_sn_list")

    def _information_get(self, params: Mapping[str, str]) -> dict[str, Any]:
        order = self.orders.get(_required(params, "order_sn"))
        if order is None:
            raise _param_error("订单不存在")  # invented sub_msg
        return {"order_info": self.shapes.apply(order.order_sn, order.to_json())}

    @records("ship", sent_fields("order_sn", "logistics_id", "tracking_number",
                                 "redelivery_type"))
    def _online_send(self, params: Mapping[str, str]) -> dict[str, Any]:
        order = self.orders.get(_required(params, "order_sn"))
        logistics_id = _int_param(params, "logistics_id")
        tracking = _required(params, "tracking_number")
        if order is None:
            raise _param_error("订单不存在")
        if logistics_id not in LOGISTICS_COMPANIES:
            raise _param_error("logistics_id 不正确")
        redelivery = params.get("redelivery_type", "1")
        if redelivery == "2":
            if order.order_status != 2:
                raise PopError(50001, "业务服务错误", "订单未发货，不能修改发货")  # invented
            order.logistics_id, order.tracking_number = logistics_id, tracking
            order.updated_at = self.now()
            return {"is_success": True}
        if not _shippable(order):
            # invented: POP's "already shipped / not shippable" code is not documented
            raise PopError(50001, "业务服务错误", "订单状态不允许发货")
        self._apply_shipment(order, logistics_id, tracking)
        return {"is_success": True}

    @records("memo", sent_fields("order_sn", "note", "tag"))
    def _note_update(self, params: Mapping[str, str]) -> dict[str, Any]:
        order = self.orders.get(_required(params, "order_sn"))
        if order is None:
            raise _param_error("订单不存在")
        note = params.get("note", "")
        if len(note) > 500:
            raise _param_error("note 过长")  # invented limit, matching the connector's cut
        tag = params.get("tag")
        if tag is not None and tag not in {"1", "2", "3", "4", "5"}:
            raise _param_error("tag 不正确")
        order.remark, order.remark_tag = note, int(tag) if tag else None
        order.updated_at = self.now()
        return {"success": True, "error_code": 0, "error_msg": ""}

    def _refund_increment_get(self, params: Mapping[str, str]) -> dict[str, Any]:
        start, end = self._window(params)
        status = _int_param(params, "after_sales_status")
        kind = _int_param(params, "after_sales_type")
        rows = [
            r for r in self.refunds.values()
            if start <= r.updated.replace(microsecond=0) <= end
            and status in (1, r.after_sales_status)
            and kind in (1, r.after_sales_type)
        ]
        rows.sort(key=lambda r: (r.updated, r.id))
        return _page(params, [r.to_json(self.orders[r.order_sn]) for r in rows], "refund_list")


def _response_key(api: str) -> str:
    return {
        "pdd.pop.auth.token.create": "pop_auth_token_create_response",
        "pdd.pop.auth.token.refresh": "pop_auth_token_refresh_response",
        "pdd.order.number.list.increment.get": "order_sn_increment_get_response",
        "pdd.order.information.get": "order_info_get_response",
        "pdd.refund.list.increment.get": "refund_increment_get_response",
        "pdd.logistics.online.send": "logistics_online_send_response",
        "pdd.order.note.update": "response",
        "pdd.logistics.companies.get": "logistics_companies_get_response",
    }[api]


def _required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name, "")
    if not value:
        raise PopError(21002, "请求参数不能为空", f"{name} 不能为空")
    return value


def _int_param(params: Mapping[str, str], name: str, default: int | None = None) -> int:
    text = params.get(name, "")
    if not text:
        if default is not None:
            return default
        raise PopError(21002, "请求参数不能为空", f"{name} 不能为空")
    digits = text.removeprefix("-")
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 18:
        raise PopError(21001, "请求参数错误", f"{name} 不是整数")
    return int(text)


def _epoch_param(params: Mapping[str, str], name: str) -> datetime:
    """A required Unix-seconds parameter as aware UTC."""
    try:
        return from_epoch(_int_param(params, name))
    except (ValueError, OverflowError, OSError):
        raise _param_error(f"{name} 不是合法的时间戳") from None  # invented sub_msg


def _page(params: Mapping[str, str], rows: list[dict[str, Any]], list_key: str) -> dict[str, Any]:
    page = _int_param(params, "page", default=1)
    page_size = _int_param(params, "page_size", default=100)
    if page < 1 or not 1 <= page_size <= 100:
        raise _param_error("page 或 page_size 不正确")
    cut = rows[(page - 1) * page_size : page * page_size]
    body: dict[str, Any] = {list_key: cut}
    if params.get("use_has_next") == "true":
        body["has_next"] = page * page_size < len(rows)
    else:
        body["total_count"] = len(rows)
    return body


__all__ = ["FakeClock", "FakePdd", "Faults", "PopError"]


def _shippable(order: FakeOrder) -> bool:
    return order.order_status == 1 and order.confirm_status == 1 and order.refund_status == 1
