"""State and API semantics of the fake Douyin shop gateway (see :mod:`connectors.douyin.fake`).

:class:`FakeDouyin` holds one app, one shop, its orders (virtual goods, ``order_type`` 2) and
sub-orders, the tokens it issued, the certificates synced per sub-order (with the buyer's
view of them), and the push messages it owes the app. It answers as Douyin does
(PLATFORMS.md §5, §10): every call is checked for its system parameters (``app_key``,
``method`` = the path, ``v=2``, ``timestamp``, ``sign_method``, ``sign`` over the sorted
``param_json``) and answered in Douyin's envelope ``{code, msg, sub_code, sub_msg, data,
log_id}`` (plus the deprecated ``err_no`` / ``message`` unless the caller sends
``x-open-no-old-err-code: 1``, as every official SDK does ⚠); ``token.create`` for a
self-use app (``authorization_self`` + ``shop_id``) or a tool app (``authorization_code`` +
the one-time ``code`` the shop's authorization gave, :meth:`FakeDouyin.authorize`),
``token.refresh``; ``order.searchList`` / ``order.orderDetail``
from its state; ``coupons.syncV2`` storing the certificates and refusing a second sync
(``000008`` same certificates, ``010004`` different ones); ``order.addOrderRemark``.
Pushes (tag 101 on payment, 106 on cancellation ⚠, 2xx after-sale ⚠) are arrays of
``{tag, msg_id, data}`` signed ``event-sign`` = MD5(app_key + body + app_secret) and retried
until answered ``{"code":0,...}``. Time comes from an injectable clock.

It is a test double: it must never be pointed at, or hold credentials for, the real platform.
"""

from __future__ import annotations

import itertools
import json
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

from connectors.common.times import format_cst, from_epoch, parse_cst, to_epoch
from connectors.douyin import errors as codes
from connectors.douyin.sign import SIGN_METHOD, VERSION, event_sign, param_json, verify_sign
from connectors.fakebase import CatalogItem, FakeBase, Faults, OrderRequest, error_outcome
from connectors.fakekit import WriteBackLog, push_summary, records, wall_now

TOKEN_TTL = timedelta(days=7)
REFRESH_TTL = timedelta(days=14)
#: ⚠ How far a request's timestamp may be from Douyin's clock (not documented): 10 minutes.
TIMESTAMP_TOLERANCE = timedelta(minutes=10)
COUPON_SYNC_LIMIT = timedelta(hours=24)  # 010012: more than 24 h after the order
MAX_PAGE_SIZE = 100
MAX_ROWS = 50_000
#: ⚠ Douyin's push retry schedule is not documented here; each delay counts from the
#: failed attempt.
PUSH_RETRY_DELAYS = tuple(timedelta(seconds=s) for s in (10, 30, 60, 300, 600, 1800, 3600))
TOKEN_METHODS = frozenset({"token.create", "token.refresh"})
#: ⚠ How long the code of a tool app's authorization redirect stays usable (OAuth habit).
AUTH_CODE_TTL = timedelta(minutes=10)
#: What the fake sells (``sku_id`` mapping), with its Douyin product fields.
CATALOG: tuple[tuple[CatalogItem, Mapping[str, Any]], ...] = (
    (CatalogItem("1750000101", "sku_id", "腾讯视频月卡 Tencent Video 1 month", "20.00"),
     {"product_id": "3600000101", "out_sku_id": "TXV-1M"}),
)


class DouyinError(Exception):
    """An answer other than success: Douyin's envelope with these codes."""

    def __init__(self, code: int, msg: str, sub_code: str = "", sub_msg: str = "") -> None:
        super().__init__(code, sub_code, sub_msg or msg)
        self.code, self.msg, self.sub_code, self.sub_msg = code, msg, sub_code, sub_msg


def _missing(name: str) -> DouyinError:
    return DouyinError(codes.MISSING_PARAMETER, "缺少必选参数",
                       f"isv.missing-parameter:{name}", f"缺少参数 {name}")


def _invalid(name: str, why: str = "") -> DouyinError:
    return DouyinError(codes.INVALID_PARAMETER, "参数不合法",
                       f"isv.parameter-invalid:{name}", why or f"参数 {name} 不合法")


def _business(number: str, why: str) -> DouyinError:
    return DouyinError(codes.BUSINESS_FAILED, "业务处理失败",
                       f"isv.business-failed:{number}", why)


@dataclass
class FakeSku:
    order_id: str  # the sub-order id
    sku_id: str
    product_id: str
    product_name: str
    item_num: int
    goods_price: int  # fen
    out_sku_id: str = ""
    refund_status: int = 0
    certs: list[dict[str, Any]] | None = None  # what coupons.syncV2 stored
    spec: list[tuple[str, str]] = field(default_factory=list)  # the SKU's specs, (name, value)

    def to_json(self, parent: FakeOrder) -> dict[str, Any]:
        return {"order_id": self.order_id, "parent_order_id": parent.order_id,
                "sku_id": int(self.sku_id) if self.sku_id.isdigit() else self.sku_id,
                "product_id": self.product_id, "product_name": self.product_name,
                "item_num": self.item_num, "goods_price": self.goods_price,
                "origin_amount": self.goods_price * self.item_num,
                "pay_amount": self.goods_price * self.item_num, "out_sku_id": self.out_sku_id,
                "spec": [{"name": n, "value": v} for n, v in self.spec],
                "order_status": parent.order_status, "order_type": parent.order_type,
                "after_sale_info": {"after_sale_status": 0 if not self.refund_status else 6,
                                    "refund_status": self.refund_status}}


@dataclass
class FakeOrder:
    order_id: str
    order_status: int
    create_time: datetime
    update_time: datetime
    skus: list[FakeSku]
    pay_time: datetime | None = None
    order_type: int = 2  # 普通虚拟
    buyer: str = "fake-doudian-open-id"
    seller_words: str | None = None
    shipments: int = 0
    buyer_words: str = ""  # the buyer's message to the seller (买家留言)
    ship_time: datetime | None = None  # the first shipment (a sub-order's certificates)

    @property
    def pay_amount(self) -> int:
        return sum(s.goods_price * s.item_num for s in self.skus)

    def to_json(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id, "order_status": self.order_status,
            "order_status_desc": STATUS_DESC.get(self.order_status, ""),
            "order_type": self.order_type, "pay_amount": self.pay_amount,
            "order_amount": self.pay_amount, "create_time": to_epoch(self.create_time),
            "update_time": to_epoch(self.update_time),
            "pay_time": to_epoch(self.pay_time) if self.pay_time else 0,
            # orderDetail's 发货时间 (Unix seconds; 0 before any shipment): it stays after a
            # refund closes the order.
            "ship_time": to_epoch(self.ship_time) if self.ship_time else 0,
            "doudian_open_id": self.buyer, "seller_words": self.seller_words or "",
            "buyer_words": self.buyer_words,
            "sku_order_list": [s.to_json(self) for s in self.skus],
        }


STATUS_DESC = {1: "待支付", 105: "已支付", 2: "备货中", 101: "部分发货", 3: "已发货",
               4: "已取消", 5: "已完成"}


@dataclass
class PushMessage:
    msg_id: str
    tag: str
    data: dict[str, Any]
    next_at: datetime | None = None
    attempts: int = 0
    delivered: bool = False
    given_up: bool = False


def _describe_sync(fake: FakeDouyin, params: Mapping[str, Any]
                   ) -> tuple[object, Mapping[str, object]]:
    sub = str(params.get("order_id", ""))
    parent = fake.parent_of(sub)
    certs = params.get("cert_list")
    # The platform's own record of the call: codes masked, as a log of it would show them.
    shown = json.dumps(_masked_certs(certs), ensure_ascii=False) if certs is not None else None
    return (parent or sub), {"order_id": sub, "sku_id": params.get("sku_id"),
                             "cert_list": shown}


def _masked_certs(certs: Any) -> Any:
    """``cert_list`` with each certificate's number and PIN masked (``12****89``)."""
    if not isinstance(certs, list):
        return certs
    return [{k: (_mask(v) if k in ("cert_no", "cert_key") and isinstance(v, str) else v)
             for k, v in c.items()} if isinstance(c, dict) else c for c in certs]


def _mask(text: str) -> str:
    return "*" * max(len(text), 4) if len(text) <= 6 else f"{text[:2]}****{text[-2:]}"


def _describe_remark(_fake: FakeDouyin, params: Mapping[str, Any]
                     ) -> tuple[object, Mapping[str, object]]:
    return params.get("order_id", ""), {"order_id": params.get("order_id"),
                                        "remark": params.get("remark")}


@dataclass
class FakeDouyin(FakeBase):
    """A Douyin shop gateway double for one app and one shop."""

    platform: ClassVar[str] = "douyin"
    pushes: ClassVar[bool] = True

    app_key: str = "fake-app-key"
    app_secret: str = "fake-app-secret"  # noqa: S105 - a fake's published test credential
    shop_id: str = "77001"
    clock: Callable[[], datetime] = wall_now
    clock_offset: float = 0.0
    token_ttl: timedelta = TOKEN_TTL
    faults: Faults = field(default_factory=Faults)
    authorized: bool = True
    #: ``self``: a self-use app (自用型, authorization_self); ``tool``: a tool app (工具型,
    #: the merchant authorizes it in the service market and the app trades the code).
    app_type: str = "self"
    push_url: str | None = None
    push_retry_delays: tuple[timedelta, ...] = PUSH_RETRY_DELAYS
    orders: dict[str, FakeOrder] = field(default_factory=dict)
    messages: list[PushMessage] = field(default_factory=list)
    #: Called with (method, params) before each authenticated API call.
    on_call: Callable[[str, Mapping[str, Any]], None] | None = None
    writebacks: WriteBackLog = field(default_factory=WriteBackLog)

    def __post_init__(self) -> None:
        self._init_base(self.clock, self.clock_offset)
        self._order_ids = itertools.count(6_920_000_000_000_000_001, 7)
        self._sub_ids = itertools.count(6_920_500_000_000_000_001, 7)
        self.tokens: dict[str, datetime] = {}  # access token → expiry (platform time)
        self.refresh_tokens: dict[str, datetime] = {}
        self.auth_codes: dict[str, datetime] = {}  # a tool app's one-time codes → expiry
        self.tokens_issued = 0

    # -- scenario control (the /__fake__/ endpoints wrap these) -------------------------

    def create_order(self, *, items: list[Mapping[str, Any]] | None = None, paid: bool = True,
                     paid_at: datetime | None = None, buyer: str | None = None,
                     order_type: int = 2, buyer_words: str | None = None) -> str:
        """A new order (paid unless ``paid`` is False); its shop order id. A row may carry
        ``spec`` (``(name, value)`` pairs)."""
        item, fields = CATALOG[0]
        rows = items or [{"sku_id": item.sku, "product_name": item.title,
                          "price": item.price, "num": 1, **fields}]
        with self.lock:
            now = self.now()
            skus = [FakeSku(order_id=str(next(self._sub_ids)), sku_id=str(r.get("sku_id", "")),
                            product_id=str(r.get("product_id", "3600000000")),
                            product_name=str(r.get("product_name", "virtual card")),
                            item_num=int(r.get("num", 1)),
                            goods_price=int(Decimal(str(r.get("price", "1.00"))) * 100),
                            out_sku_id=str(r.get("out_sku_id", "")),
                            spec=list(r.get("spec") or ()))
                    for r in rows]
            order = FakeOrder(order_id=str(next(self._order_ids)),
                              order_status=2 if paid else 1, create_time=paid_at or now,
                              update_time=now, skus=skus,
                              pay_time=(paid_at or now) if paid else None,
                              order_type=order_type, buyer=buyer or "fake-doudian-open-id",
                              buyer_words=buyer_words or "")
            self.orders[order.order_id] = order
            if paid:
                self._publish("101", order)
            return order.order_id

    def close_order(self, order_id: str) -> None:
        """The buyer cancels (refunded before shipment): status 4, sub-orders refunded."""
        with self.lock:
            order = self._order(order_id)
            order.order_status = 4
            for sku in order.skus:
                sku.refund_status = 3 if order.pay_time else 0
            order.update_time = self.now()
            self._publish("106", order)

    def request_refund(self, order_id: str) -> None:
        """The buyer asks for a refund on every sub-order (after-sale in progress)."""
        with self.lock:
            order = self._order(order_id)
            for sku in order.skus:
                sku.refund_status = 1
            order.update_time = self.now()
            self._publish("200", order)

    def expire_tokens(self) -> None:
        with self.lock:
            now = self.now()
            self.tokens = dict.fromkeys(self.tokens, now)

    def authorize(self) -> str:
        """The merchant authorizes the tool app (service market): the one-time ``code`` the
        authorization redirect carries to the app's callback."""
        with self.lock:
            code = secrets.token_hex(12)
            self.auth_codes[code] = self.now() + AUTH_CODE_TTL
            self.authorized = True
            return code

    def revoke_authorization(self) -> None:
        """The shop cancels the app's authorization: tokens die, none is issued again."""
        with self.lock:
            self.authorized = False
            self.tokens.clear()
            self.refresh_tokens.clear()

    def buyer_view(self, order_id: str) -> list[dict[str, Any]]:
        """What the buyer sees on the order page: each sub-order's certificates."""
        with self.lock:
            order = self._order(order_id)
            return [{"sub_order_id": s.order_id, "product_name": s.product_name,
                     "certificates": [{k: c.get(k) for k in ("cert_no", "cert_key",
                                                             "cert_link", "valid_end")
                                       if c.get(k)} for c in (s.certs or [])]}
                    for s in order.skus]

    # -- FakeBase ---------------------------------------------------------------------

    catalog_entries: ClassVar[tuple[tuple[CatalogItem, Mapping[str, Any]], ...]] = CATALOG

    def create_paid_order(self, request: OrderRequest) -> str:
        item, found = self.catalog_entry(request.sku)
        fields = found or {}
        row: dict[str, Any] = {"sku_id": request.sku, "num": request.quantity, **fields,
                               "product_name": item.title if item else f"SKU {request.sku}",
                               "price": item.price if item else "1.00",
                               "spec": request.properties}
        return self.create_order(items=[row], paid_at=request.paid_at, buyer=request.buyer,
                                 buyer_words=request.message)

    def call_api(self, path: str, payload: Mapping[str, Any]) -> str:
        return path.strip("/").replace("/", ".")

    def call_outcome(self, status: int, document: Any) -> str:
        if isinstance(document, dict) and document.get("code") not in (None, codes.SUCCESS):
            return error_outcome(document, "code", "sub_code")
        return super().call_outcome(status, document)

    def platform_snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "orders": {o.order_id: {"order_status": o.order_status,
                                        "shipments": o.shipments, "memo": o.seller_words,
                                        "update_time": format_cst(o.update_time)}
                           for o in self.orders.values()},
                "push": push_summary(self.push_url, self.messages),
                "tokens_issued": self.tokens_issued,
                "authorized": self.authorized,
            }

    def _order(self, order_id: str) -> FakeOrder:
        try:
            return self.orders[order_id]
        except KeyError:
            raise KeyError(f"no order {order_id}") from None

    def parent_of(self, sub_order_id: str) -> str | None:
        with self.lock:
            return next((o.order_id for o in self.orders.values()
                         if any(s.order_id == sub_order_id for s in o.skus)), None)

    # -- push messages ------------------------------------------------------------------

    def _publish(self, tag: str, order: FakeOrder) -> None:
        data: dict[str, Any] = {"p_id": int(order.order_id),
                                "s_ids": [int(s.order_id) for s in order.skus],
                                "shop_id": int(self.shop_id) if self.shop_id.isdigit()
                                else self.shop_id,
                                "order_status": order.order_status,
                                "order_type": order.order_type,
                                "pay_amount": order.pay_amount,
                                "update_time": to_epoch(order.update_time)}
        if tag == "101":
            data.update(pay_time=to_epoch(order.pay_time or self.now()), pay_type=1, biz=2)
        self.messages.append(PushMessage(msg_id=uuid.uuid4().hex, tag=tag, data=data,
                                         next_at=self.now()))

    def push_body(self, messages: list[PushMessage]) -> bytes:
        """The raw body Douyin posts: an array of ``{tag, msg_id, data}`` (data a string)."""
        array = [{"tag": m.tag, "msg_id": m.msg_id,
                  "data": json.dumps(m.data, ensure_ascii=False, separators=(",", ":"))}
                 for m in messages]
        return json.dumps(array, ensure_ascii=False, separators=(",", ":")).encode()

    def push_headers(self, body: bytes) -> dict[str, str]:
        return {"Content-Type": "application/json", "app-id": self.app_key,
                "event-sign": event_sign(self.app_key, body, self.app_secret)}

    def signed_push(self, order_id: str, tag: str = "101") -> tuple[dict[str, str], bytes]:
        """Headers and body of a genuine push about ``order_id`` (not queued)."""
        with self.lock:
            order = self._order(order_id)
            before = len(self.messages)
            self._publish(tag, order)
            message = self.messages.pop(before)
            body = self.push_body([message])
            return self.push_headers(body), body

    def due_messages(self) -> list[PushMessage]:
        with self.lock:
            now = self.now()
            return [m for m in self.messages if not m.delivered and not m.given_up
                    and m.next_at is not None and m.next_at <= now]

    def record_attempt(self, message: PushMessage, ok: bool) -> None:
        with self.lock:
            message.attempts += 1
            if ok:
                message.delivered = True
            elif message.attempts > len(self.push_retry_delays):
                message.given_up = True
            else:
                message.next_at = self.now() + self.push_retry_delays[message.attempts - 1]

    # -- the gateway --------------------------------------------------------------------

    def handle(self, path: str, query: Mapping[str, str], raw: bytes, *,
               old_codes: bool = False) -> dict[str, Any]:
        """Answer one gateway call (any outcome) in Douyin's envelope; ``old_codes``: the
        caller did not opt out of the deprecated ``err_no`` / ``message`` fields."""
        try:
            document = {"code": codes.SUCCESS, "msg": "success", "sub_code": "",
                        "sub_msg": "", "data": self._handle(path, query, raw)}
        except DouyinError as exc:
            document = {"code": exc.code, "msg": exc.msg, "sub_code": exc.sub_code,
                        "sub_msg": exc.sub_msg, "data": {}}
        document["log_id"] = secrets.token_hex(8)
        if old_codes:
            # ⚠ The old envelope's error numbers are not documented here: 0 on success, the
            # new code otherwise.
            ok = document["code"] == codes.SUCCESS
            document.update(err_no=0 if ok else document["code"],
                            message="success" if ok else document["sub_msg"] or document["msg"])
        return document

    def _handle(self, path: str, query: Mapping[str, str], raw: bytes) -> Any:
        method = self._check_system(path, query, raw)
        params = json.loads(raw.decode("utf-8") or "{}")
        if method in TOKEN_METHODS:
            with self.lock:
                return self._token(method, params)
        token = query.get("access_token", "")
        if not token:
            raise _missing("access_token")
        with self.lock:
            self._check_token(token)
        if self.on_call is not None:
            self.on_call(method, params)
        if self.take_fault("throttle"):
            raise DouyinError(codes.THROTTLED, "访问频率过快", "isp.access-limited",
                              "请求过于频繁")
        with self.lock:
            return self._dispatch(method, params)

    def _check_system(self, path: str, query: Mapping[str, str], raw: bytes) -> str:
        """The system parameters as Douyin checks them; the method the call names."""
        for name in ("app_key", "method", "timestamp", "v", "sign"):
            if not query.get(name):
                raise _missing(name)
        method = query["method"]
        if path.strip("/").replace("/", ".") != method:
            raise _invalid("method", "method 与请求路径不一致")
        if query["app_key"] != self.app_key:
            raise DouyinError(codes.INVALID_PARAMETER, "参数不合法", codes.SUB_BAD_APP_KEY,
                              "app_key 不存在")
        if query["v"] != VERSION:
            raise _invalid("v", "v 只支持 2")
        sign_method = query.get("sign_method", "md5")
        if sign_method not in (SIGN_METHOD, "md5"):
            raise _invalid("sign_method")
        sent_at = _timestamp(query["timestamp"])
        if sent_at is None:
            raise DouyinError(codes.INVALID_PARAMETER, "参数不合法", codes.SUB_BAD_TIMESTAMP,
                              "timestamp 格式不正确")
        if abs(sent_at - self.now()) > TIMESTAMP_TOLERANCE:
            raise DouyinError(codes.INVALID_PARAMETER, "参数不合法", codes.SUB_BAD_TIMESTAMP,
                              "timestamp 与服务器时间相差过大")
        try:
            params = json.loads(raw.decode("utf-8") or "{}")
        except (UnicodeDecodeError, ValueError):
            raise _invalid("param_json", "param_json 不是合法的 JSON") from None
        if not isinstance(params, dict):
            raise _invalid("param_json", "param_json 不是 JSON 对象")
        # Douyin signs the canonical param_json (keys sorted at every depth): recompute it,
        # with non-ASCII as is (the official SDKs) or escaped as \\uXXXX (Python's default,
        # the doudian package's) — the same sorted JSON either way.
        bodies = dict.fromkeys((param_json(params), param_json(params, escaped=True)))
        if not any(verify_sign(self.app_key, self.app_secret, method, body,
                               query["timestamp"], query["sign"], sign_method=sign_method)
                   for body in bodies):
            raise DouyinError(codes.INVALID_PARAMETER, "参数不合法", codes.SUB_BAD_SIGN,
                              "签名校验失败")
        return method

    def _check_token(self, token: str) -> None:
        if not self.authorized:
            raise DouyinError(codes.AUTH_REVOKED, "授权已取消", "isv.auth-cancelled",
                              "店铺已取消授权")
        expiry = self.tokens.get(token)
        if expiry is None:
            raise DouyinError(codes.TOKEN_MISSING, "access_token 不存在",
                              "isv.access-token-no-exist", "请使用最新的 access_token")
        if expiry <= self.now():
            raise DouyinError(codes.TOKEN_EXPIRED, "access_token 已过期",
                              "isv.access-token-expired", "access_token 已过期")

    def _token(self, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
        if not self.authorized:
            raise DouyinError(codes.AUTH_REVOKED, "授权已取消", "isv.auth-cancelled",
                              "店铺未授权或已取消授权")
        if method == "token.create":
            self._check_grant(params)
        else:
            if params.get("grant_type") != "refresh_token":
                raise _invalid("grant_type")
            refresh = str(params.get("refresh_token", ""))
            expiry = self.refresh_tokens.pop(refresh, None)  # single use
            if expiry is None or expiry <= self.now():
                raise _invalid("refresh_token", "refresh_token 不存在或已过期")
        now = self.now()
        token, refresh = secrets.token_hex(16), secrets.token_hex(16)
        self.tokens[token] = now + self.token_ttl
        self.refresh_tokens[refresh] = now + REFRESH_TTL
        self.tokens_issued += 1
        return {"access_token": token, "expires_in": int(self.token_ttl.total_seconds()),
                "refresh_token": refresh, "scope": "SCOPE", "shop_id": int(self.shop_id)
                if self.shop_id.isdigit() else self.shop_id, "shop_name": "fake douyin shop",
                "authority_id": "", "auth_subject_type": "MiniApp"}

    def _check_grant(self, params: Mapping[str, Any]) -> None:
        """token.create's grant as the app's type allows it (the code is used up)."""
        grant = params.get("grant_type")
        if self.app_type == "tool":
            if grant != "authorization_code":
                raise _invalid("grant_type", "工具型应用只支持 authorization_code")
            expiry = self.auth_codes.pop(str(params.get("code") or ""), None)
            if expiry is None or expiry <= self.now():
                raise _invalid("code", "code 不存在、已使用或已过期，请重新授权")
            return
        if grant != "authorization_self":
            raise _invalid("grant_type", "自用型应用只支持 authorization_self")
        if str(params.get("shop_id", "")) != self.shop_id:
            raise _invalid("shop_id", "店铺未授权该应用")

    def _dispatch(self, method: str, params: Mapping[str, Any]) -> Any:
        handlers: dict[str, Callable[[Mapping[str, Any]], Any]] = {
            "order.searchList": self._search_list,
            "order.orderDetail": self._order_detail,
            "coupons.syncV2": self._coupons_sync,
            "order.addOrderRemark": self._add_remark,
        }
        handler = handlers.get(method)
        if handler is None:
            raise DouyinError(codes.INVALID_PARAMETER, "参数不合法",
                              "isv.method-not-exist", f"接口 {method} 不存在")
        return handler(params)

    def _search_list(self, params: Mapping[str, Any]) -> dict[str, Any]:
        start = _epoch(params, "update_time_start")
        end = _epoch(params, "update_time_end")
        created_start = _epoch(params, "create_time_start")
        if start is None and created_start is None:
            raise _missing("update_time_start")
        page = _whole(params, "page", 0)
        size = _whole(params, "size", 10)
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise _invalid("size", f"size 取值 1~{MAX_PAGE_SIZE}")
        if (page + 1) * size > MAX_ROWS:
            raise _invalid("page", "最多查询 50000 条")
        key = "update_time" if start is not None else "create_time"
        low = start if start is not None else created_start
        high = end if start is not None else _epoch(params, "create_time_end")
        rows = [o for o in self.orders.values()
                if to_epoch(getattr(o, key)) >= (low or 0)
                and (high is None or to_epoch(getattr(o, key)) <= high)]
        ascending = params.get("order_asc") in (True, "true", 1)
        rows.sort(key=lambda o: (to_epoch(getattr(o, key)), o.order_id), reverse=not ascending)
        chunk = rows[page * size:(page + 1) * size]
        return {"shop_order_list": [o.to_json() for o in chunk], "total": len(rows),
                "page": page, "size": size}

    def _order_detail(self, params: Mapping[str, Any]) -> dict[str, Any]:
        oid = str(params.get("shop_order_id") or "")
        if not oid:
            raise _missing("shop_order_id")
        order = self.orders.get(oid)
        if order is None:
            raise _business(codes.ORDER_NOT_FOUND, "订单不存在")
        return {"shop_order_detail": order.to_json()}

    @records("ship", _describe_sync)
    def _coupons_sync(self, params: Mapping[str, Any]) -> dict[str, Any]:
        sub_id = str(params.get("order_id") or "")
        if not sub_id:
            raise _missing("order_id")
        certs = _cert_list(params.get("cert_list"))
        parent_id = self.parent_of(sub_id)
        if parent_id is None:
            raise _business(codes.ORDER_NOT_FOUND, "订单不存在")
        order = self.orders[parent_id]
        sku = next(s for s in order.skus if s.order_id == sub_id)
        if str(params.get("sku_id", "")) not in ("", sku.sku_id):
            raise _invalid("sku_id", "sku_id 与订单不符")
        if sku.certs is not None:
            if sku.certs == certs:
                raise _business(codes.COUPON_ALREADY_SYNCED, "该订单已处理")
            raise _business(codes.COUPON_PARAMS_DIFFER, "与之前同步的券码不一致")
        if order.order_status == 4:
            raise _business(codes.ORDER_CANCELLED, "订单已取消")
        if sku.refund_status in (1, 2, 3):
            raise _business(codes.REFUNDED_BEFORE_SHIPMENT, "订单售后中或已退款")
        if order.order_status == 1 or order.pay_time is None:
            raise _business(codes.ORDER_NOT_FOUND, "订单未支付")
        if self.now() - order.pay_time > COUPON_SYNC_LIMIT:
            raise _business(codes.COUPON_TOO_LATE, "超过下单后 24 小时，无法同步券码")
        sku.certs = certs
        order.ship_time = order.ship_time or self.now()
        if all(s.certs is not None for s in order.skus):
            order.order_status = 3  # ⚠ every sub-order holds its certificates: shipped
            order.shipments += 1
        else:
            order.order_status = 101
        order.update_time = self.now()
        return {}

    @records("memo", _describe_remark)
    def _add_remark(self, params: Mapping[str, Any]) -> dict[str, Any]:
        oid = str(params.get("order_id") or "")
        if not oid:
            raise _missing("order_id")
        remark = params.get("remark")
        if not isinstance(remark, str) or not remark:
            raise _missing("remark")
        order = self.orders.get(oid)
        if order is None:
            raise _business(codes.ORDER_NOT_FOUND, "订单不存在")
        order.seller_words = remark[:500]
        order.update_time = self.now()
        return {}


def _cert_list(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise _missing("cert_list")
    certs = []
    for cert in value:
        if not isinstance(cert, dict):
            raise _invalid("cert_list")
        if not isinstance(cert.get("cert_no"), str) or not cert["cert_no"].strip():
            raise _missing("cert_list.cert_no")
        grant = cert.get("grant_time")
        if not isinstance(grant, str) or not grant:
            raise _missing("cert_list.grant_time")
        try:
            parse_cst(grant)
        except ValueError:
            raise _invalid("cert_list.grant_time", "格式应为 yyyy-MM-dd HH:mm:ss") from None
        if cert.get("status", 2) not in (1, 2):
            raise _invalid("cert_list.status", "status 只能为 1 或 2")
        certs.append(dict(cert))
    return certs


def _timestamp(text: str) -> datetime | None:
    """A request timestamp: Unix seconds, or ``yyyy-MM-dd HH:mm:ss`` (GMT+8)."""
    text = text.strip()
    if text.isdigit() and len(text) <= 12:
        return from_epoch(int(text))
    try:
        return parse_cst(text)
    except ValueError:
        return None


def _epoch(params: Mapping[str, Any], name: str) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str) \
            or not str(value).strip().isdigit():
        raise _invalid(name, f"{name} 应为 Unix 秒")
    return int(value)


def _whole(params: Mapping[str, Any], name: str, default: int) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | str) \
            or not str(value).strip().isdigit():
        raise _invalid(name)
    return int(value)
