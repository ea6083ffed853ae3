"""State and API semantics of the fake Youzan Cloud (see :mod:`connectors.youzan.fake`).

:class:`FakeYouzan` holds one app, one shop (``kdt_id``), its trades and refunds, the access
tokens it issued, and the push messages it owes the app. It answers as Youzan does
(PLATFORMS.md §3): ``/auth/token`` with absolute ``expires``; the gateway's ``gw_err_resp``
codes (4001 no version, 4005 unknown API, 4007 bad content type, 4101 throttled, 4201/4202/4203
token problems); v4 envelopes for the order APIs and the old v3 envelope for the memo API;
business codes for shipping (102570007 already shipped, 102570020 nothing shippable,
105000016 not found). Time comes from an injectable clock so tests move hours without sleeping.

It is a test double: it must never be pointed at, or hold credentials for, the real platform.
"""

from __future__ import annotations

import itertools
import json
import secrets
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import quote

from connectors.common.shapes import ShapeFaults
from connectors.common.times import epoch_ms, format_cst, parse_cst
from connectors.fakebase import CatalogItem, FakeBase, OrderRequest, error_outcome
from connectors.fakebase import Faults as BaseFaults
from connectors.fakekit import (
    FakeClock,
    WriteBackLog,
    push_summary,
    records,
    sent_fields,
    wall_now,
)
from connectors.youzan.sign import event_sign, legacy_body_sign

SHIPPABLE = "WAIT_SELLER_SEND_GOODS"
TOKEN_TTL = timedelta(days=7)
REFRESH_TTL = timedelta(days=28)
MAX_SPAN = timedelta(days=92)  # "span ≤ 3 months"
MEMO_MAX_CHARS = 256
#: ⚠ Youzan's push retry schedule is not documented consistently (16 retries over hours vs
#: 4); the fake retries on this schedule, each delay counted from the failed attempt.
PUSH_RETRY_DELAYS = tuple(timedelta(seconds=s) for s in (
    10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200, 1800, 3600, 7200))

#: API name → accepted versions; v3 ones answer with the old envelope.
APIS: dict[str, frozenset[str]] = {
    "youzan.trades.sold.get": frozenset({"4.0.0", "4.0.1", "4.0.2", "4.0.3", "4.0.4"}),
    "youzan.trade.get": frozenset({"4.0.0", "4.0.1", "4.0.2"}),
    "youzan.logistics.online.confirm": frozenset({"3.0.0"}),
    "youzan.trade.memo.update": frozenset({"3.0.0"}),
    "youzan.trade.refund.search": frozenset({"3.0.1"}),
}
V3_ENVELOPE = frozenset({"youzan.trade.memo.update"})


class GatewayError(Exception):
    """``{"gw_err_resp": {...}}``."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(code, msg)
        self.code, self.msg = code, msg


class BusinessError(Exception):
    """``success: false`` (v4) or ``error_response`` (v3)."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(code, msg)
        self.code, self.msg = code, msg


@dataclass
class FakeLine:
    oid: str
    item_id: int
    title: str
    price: str
    num: int = 1
    sku_id: int = 0
    outer_item_id: str = ""
    outer_sku_id: str = ""
    item_type: int = 0
    #: What the buyer typed in the item's order fields (下单留言), ``{"name": "value"}``.
    buyer_messages: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "oid": self.oid, "item_id": self.item_id, "sku_id": self.sku_id,
            "item_type": self.item_type, "title": self.title, "num": self.num,
            "price": self.price, "payment": str(Decimal(self.price) * self.num),
            "outer_item_id": self.outer_item_id, "outer_sku_id": self.outer_sku_id,
            "item_tags": {"is_deliver_goods": self.item_type == 0},
            # Both are JSON texts inside the JSON answer, as Youzan sends them.
            "sku_properties_name": "[]",
            "buyer_messages": json.dumps(self.buyer_messages, ensure_ascii=False)
            if self.buyer_messages else "",
        }


@dataclass
class FakeRefund:
    refund_id: str
    tid: str
    oids: list[str]
    status: str
    refund_fee: str
    created: datetime
    modified: datetime

    def to_json(self) -> dict[str, Any]:
        return {"refund_id": self.refund_id, "tid": self.tid, "status": self.status,
                "refund_fee": self.refund_fee, "created": int(self.created.timestamp()),
                "modified": int(self.modified.timestamp()), "oids": ",".join(self.oids)}


@dataclass
class FakeTrade:
    tid: str
    status: str
    created: datetime
    update_time: datetime
    lines: list[FakeLine]
    pay_time: datetime | None = None
    consign_time: datetime | None = None
    success_time: datetime | None = None
    virtual: bool = False
    yz_open_id: str = "yz_open_fake_buyer"
    buyer_phone: str = ""
    memo: str | None = None
    shipments: int = 0
    close_type: int = 0
    buyer_message: str = ""  # 买家留言 (remark_info.buyer_message)
    refund_ids: list[str] = field(default_factory=list)

    @property
    def payment(self) -> str:
        return str(sum((Decimal(ln.price) * ln.num for ln in self.lines), Decimal("0")))

    def full_order_info(self, refunds: Mapping[str, FakeRefund]) -> dict[str, Any]:
        mine = [refunds[r] for r in self.refund_ids]
        refunded = {oid for r in mine if r.status == "SUCCESS" for oid in r.oids}
        pending = {oid for r in mine if r.status not in ("SUCCESS", "CLOSED",
                                                          "SELLER_REFUSE_BUYER")
                   for oid in r.oids}
        all_oids = {ln.oid for ln in self.lines}
        if refunded >= all_oids:
            refund_state = 12
        elif pending >= all_oids:
            refund_state = 11
        elif refunded:
            refund_state = 2
        elif pending:
            refund_state = 1
        else:
            refund_state = 0
        return {
            "order_info": {
                "tid": self.tid, "status": self.status, "status_str": self.status,
                "type": 0, "created": format_cst(self.created),
                "update_time": format_cst(self.update_time),
                "pay_time": format_cst(self.pay_time) if self.pay_time else "",
                "consign_time": format_cst(self.consign_time) if self.consign_time else "",
                "success_time": format_cst(self.success_time) if self.success_time else "",
                "refund_state": refund_state,
                "express_type": 9 if self.virtual else 0,
                "close_type": self.close_type,
                "order_tags": {"is_virtual": self.virtual, "is_refund": bool(mine),
                               "is_payed": self.pay_time is not None},
            },
            "buyer_info": {"yz_open_id": self.yz_open_id, "buyer_phone": self.buyer_phone,
                           "outer_user_id": ""},
            "pay_info": {"payment": self.payment, "total_fee": self.payment, "post_fee": "0.00"},
            "remark_info": {"buyer_message": self.buyer_message, "trade_memo": self.memo or "",
                            "star": 0},
            "orders": [line.to_json() for line in self.lines],
            "address_info": {},
        }


@dataclass
class PushMessage:
    msg_id: str
    topic: str
    tid: str
    status: str
    msg: Any  # dict: URL-encoded into the body for trade_* topics, sent as an object otherwise
    version: int
    test: bool = False
    attempts: int = 0
    next_at: datetime | None = None
    delivered: bool = False
    given_up: bool = False


@dataclass
class Faults(BaseFaults):
    """Failures to inject into the next calls to ``/api/...`` (transport faults and
    ``throttle``) and ``/auth/token`` (``token_endpoint_500``)."""

    throttle_shape: str = "gateway"  # a throttled call answers gw 4101 | "500100004" | ...
    token_endpoint_500: int = 0  # the next N /auth/token calls answer an HTML 502 page


#: The throttling answers Youzan gives (PLATFORMS.md §3.2).
THROTTLE_SHAPES = frozenset({"gateway", "500100004", "123000042"})
#: What the fake sells: the SKU of ``shops/example-youzan.yaml`` (its mapping names the
#: merchant code, ``outer_id``), with the Youzan line fields each trade carries.
CATALOG: tuple[tuple[CatalogItem, Mapping[str, Any]], ...] = (
    (CatalogItem("IQIYI-1M", "outer_id", "爱奇艺月卡 iQIYI 1 month", "15.00"),
     {"item_id": 400000101, "sku_id": 36000101, "outer_sku_id": "IQIYI-1M"}),
)


@dataclass
class FakeYouzan(FakeBase):
    """A Youzan Cloud double for one app and one shop."""

    platform: ClassVar[str] = "youzan"
    pushes: ClassVar[bool] = True
    fault_choices: ClassVar[Mapping[str, frozenset[str]]] = {"throttle_shape": THROTTLE_SHAPES}

    client_id: str = "fake-client-id"
    client_secret: str = "fake-client-secret"  # noqa: S105 - a fake's published test credential
    kdt_id: str = "56232"
    kdt_name: str = "fake youzan shop"
    clock: Callable[[], datetime] = wall_now
    #: Seconds the platform's clock runs ahead of ``clock`` (negative: behind); its order
    #: times, windows and ``Date`` header follow it.
    clock_offset: float = 0.0
    token_ttl: timedelta = TOKEN_TTL
    faults: Faults = field(default_factory=Faults)
    authorized: bool = True
    push_url: str | None = None
    push_max_retries: int = len(PUSH_RETRY_DELAYS)
    #: The retry schedule (a test may compress time; the count of retries stays the same).
    push_retry_delays: tuple[timedelta, ...] = PUSH_RETRY_DELAYS
    trades: dict[str, FakeTrade] = field(default_factory=dict)
    refunds: dict[str, FakeRefund] = field(default_factory=dict)
    messages: list[PushMessage] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    #: Called with (api name, params) before each authenticated API call (tests use it to
    #: change state between two pages of one poll).
    on_call: Callable[[str, Mapping[str, Any]], None] | None = None
    #: Malformed answers on demand (see :meth:`corrupt_order`, :meth:`garble_answers`).
    shapes: ShapeFaults = field(default_factory=ShapeFaults)
    #: Every ship and memo call received, refused ones too (``snapshot()["write_backs"]``).
    writebacks: WriteBackLog = field(default_factory=WriteBackLog)

    def __post_init__(self) -> None:
        self._init_base(self.clock, self.clock_offset)
        self._seq = itertools.count(1)
        self._oids = itertools.count(2_960_000_000_001, 3)
        self._refund_ids = itertools.count(201_900_000_001)
        self.tokens: dict[str, int] = {}  # access token → absolute expiry (epoch ms)
        self.current_token: str | None = None  # the shop's current silent token
        self.refresh_tokens: dict[str, int] = {}
        self.auth_codes: set[str] = set()
        self.tokens_issued = 0

    # -- scenario control (the /__fake__/ endpoints wrap these) -------------------------

    def create_trade(self, *, items: Iterable[Mapping[str, Any]] = (
            {"title": "Game card 100", "price": "10.00"},), virtual: bool = False,
            paid: bool = True, yz_open_id: str = "yz_open_fake_buyer",
            paid_at: datetime | None = None, buyer_message: str | None = None) -> str:
        """A trade, paid by default (``paid_at`` or now); a virtual one goes past
        awaiting-shipment on payment. An item may carry ``buyer_messages`` (a dict)."""
        with self.lock:
            now = self.now()
            tid = f"E{now.strftime('%Y%m%d%H%M%S')}{next(self._seq):09d}"
            lines = [
                FakeLine(
                    oid=str(next(self._oids)),
                    item_id=int(item.get("item_id", 400000001)),
                    title=str(item.get("title", "item")),
                    price=str(Decimal(str(item.get("price", "1.00"))).quantize(Decimal("0.01"))),
                    num=int(item.get("num", 1)),
                    sku_id=int(item.get("sku_id", 0)),
                    outer_item_id=str(item.get("outer_item_id", "")),
                    outer_sku_id=str(item.get("outer_sku_id", "")),
                    item_type=int(item.get("item_type", 182 if virtual else 0)),
                    buyer_messages=dict(item.get("buyer_messages") or {}),
                )
                for item in items
            ]
            trade = FakeTrade(tid=tid, status="WAIT_BUYER_PAY",
                              created=min(paid_at or now, now), update_time=now,
                              lines=lines, virtual=virtual, yz_open_id=yz_open_id,
                              buyer_message=buyer_message or "")
            self.trades[tid] = trade
            self._publish("trade_TradeCreate", trade)
            if paid:
                self.pay(tid, paid_at=paid_at)
            return tid

    def pay(self, tid: str, *, paid_at: datetime | None = None) -> None:
        """The buyer pays (at ``paid_at``, or now): awaiting shipment, or (virtual)
        delivered by Youzan at once."""
        with self.lock:
            trade = self._trade(tid)
            now = self.now()
            trade.pay_time, trade.update_time = paid_at or now, now
            self._publish("trade_TradePaid", trade)
            if trade.virtual:
                # Virtual goods have no awaiting-shipment state and no TradeBuyerPay message.
                trade.status, trade.consign_time = "WAIT_BUYER_CONFIRM_GOODS", now
            else:
                trade.status = SHIPPABLE
                self._publish("trade_TradeBuyerPay", trade)

    def request_refund(self, tid: str, *, oid: str | None = None,
                       status: str = "WAIT_SELLER_AGREE") -> str:
        """Open (or, with status SUCCESS, complete) a refund of one line (all when None)."""
        with self.lock:
            trade = self._trade(tid)
            oids = [ln.oid for ln in trade.lines if oid is None or ln.oid == oid]
            if not oids:
                raise KeyError(f"no line {oid} in trade {tid}")
            now = self.now()
            refund_id = str(next(self._refund_ids))
            fee = sum((Decimal(ln.price) * ln.num for ln in trade.lines if ln.oid in oids),
                      Decimal("0"))
            self.refunds[refund_id] = FakeRefund(refund_id, tid, oids, "WAIT_SELLER_AGREE",
                                                 str(fee), now, now)
            trade.refund_ids.append(refund_id)
            trade.update_time = now
            self._publish("youzan_trade_RefundCreated", trade, refund_id=refund_id)
            if status != "WAIT_SELLER_AGREE":
                self.set_refund_status(refund_id, status)
            return refund_id

    def set_refund_status(self, refund_id: str, status: str) -> None:
        with self.lock:
            refund = self.refunds[refund_id]
            trade = self._trade(refund.tid)
            now = self.now()
            refund.status, refund.modified, trade.update_time = status, now, now
            if status == "SUCCESS":
                self._publish("youzan_trade_RefundSuccess", trade, refund_id=refund_id)
                done = {o for r in trade.refund_ids if self.refunds[r].status == "SUCCESS"
                        for o in self.refunds[r].oids}
                if done >= {ln.oid for ln in trade.lines} and trade.status == SHIPPABLE:
                    self._close(trade, close_type=2)
            elif status == "CLOSED":
                self._publish("youzan_trade_RefundClosed", trade, refund_id=refund_id)

    def close_trade(self, tid: str) -> None:
        """The trade is closed (e.g. refunded in full, or cancelled by the seller)."""
        with self.lock:
            self._close(self._trade(tid), close_type=1)

    def _close(self, trade: FakeTrade, *, close_type: int) -> None:
        trade.status, trade.close_type, trade.update_time = "TRADE_CLOSED", close_type, self.now()
        self._publish("trade_TradeClose", trade, close_type=close_type,
                      close_reason="fake close")

    def touch(self, tid: str, when: datetime | None = None) -> None:
        with self.lock:
            self._trade(tid).update_time = when or self.now()

    def expire_tokens(self) -> None:
        """Every issued access token expires now (the gateway then answers 4202)."""
        with self.lock:
            now_ms = epoch_ms(self.now())
            self.tokens = dict.fromkeys(self.tokens, now_ms)

    def revoke_authorization(self) -> None:
        """The merchant withdrew the app's authorization: 4201 now, 1004 on renewal."""
        with self.lock:
            self.authorized = False

    def issue_auth_code(self) -> str:
        """A one-time authorization code (tool apps), as after the merchant's consent."""
        with self.lock:
            code = secrets.token_hex(8)
            self.auth_codes.add(code)
            return code

    def corrupt_order(self, tid: str, path: str, how: str) -> None:
        """Serialize trade ``tid`` with the field at ``path`` (dotted, into its
        ``full_order_info``, e.g. ``orders.0.num``) dropped, null or a huge number string,
        wherever Youzan returns it; :meth:`clear_corruption` ends it."""
        self.shapes.corrupt(tid, path, how)

    def garble_answers(self, how: str, count: int = 1) -> None:
        """The next ``count`` API answers are an HTML page (``html``, HTTP 200) or JSON cut
        off in the middle (``truncated``)."""
        self.shapes.garble_next(how, count)

    def clear_corruption(self, tid: str | None = None) -> None:
        self.shapes.clear(tid)

    def set_faults(self, **changes: Any) -> Faults:
        """The common faults, plus ``revoke_authorization`` (true: the merchant withdrew
        the app's authorization; false: granted again)."""
        with self.lock:
            revoke = changes.pop("revoke_authorization", None)
            faults = super().set_faults(**changes)
            if revoke is not None:
                self.authorized = not bool(revoke)
            assert isinstance(faults, Faults)
            return faults

    def fault_flags(self) -> dict[str, Any]:
        return {"authorized": self.authorized}

    def token_transport_fault(self) -> tuple[float, str | None]:
        """The transport fault due for a call to ``/auth/token`` (``token_endpoint_500``)."""
        with self.lock:
            latency = self.faults.latency_ms / 1000
        return latency, "http_500" if self.take_fault("token_endpoint_500") else None

    catalog_entries: ClassVar[tuple[tuple[CatalogItem, Mapping[str, Any]], ...]] = CATALOG

    def create_paid_order(self, request: OrderRequest) -> str:
        item, fields = self.catalog_entry(request.sku)
        line: dict[str, Any] = {"num": request.quantity}
        if item is not None and fields is not None:
            line.update(fields, title=item.title, price=item.price)
        elif request.sku.isascii() and request.sku.isdigit() and len(request.sku) <= 18:
            line.update(sku_id=int(request.sku), title=f"SKU {request.sku}", price="1.00")
        else:
            line.update(outer_sku_id=request.sku, title=request.sku, price="1.00")
        line["buyer_messages"] = dict(request.properties)
        return self.create_trade(items=[line], paid_at=request.paid_at,
                                 yz_open_id=request.buyer or "yz_open_fake_buyer",
                                 buyer_message=request.message)

    def call_api(self, path: str, payload: Mapping[str, Any]) -> str:
        return path.removeprefix("/api/")

    def call_outcome(self, status: int, document: Any) -> str:
        if not isinstance(document, dict):
            return super().call_outcome(status, document)
        if "gw_err_resp" in document:
            return error_outcome(document["gw_err_resp"], "err_code", "err_msg")
        if "error_response" in document:
            return error_outcome(document["error_response"], "code", "msg")
        if document.get("success") is False:
            return error_outcome(document, "code", "message")
        return super().call_outcome(status, document)

    def platform_snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "trades": {t.tid: {"status": t.status, "shipments": t.shipments,
                                   "memo": t.memo, "update_time": format_cst(t.update_time)}
                           for t in self.trades.values()},
                "push": push_summary(self.push_url, self.messages),
                "tokens_issued": self.tokens_issued,
                "authorized": self.authorized,
            }

    def _trade(self, tid: str) -> FakeTrade:
        try:
            return self.trades[tid]
        except KeyError:
            raise KeyError(f"no trade {tid}") from None

    # -- push messages ------------------------------------------------------------------

    def _publish(self, topic: str, trade: FakeTrade, **extra: Any) -> None:
        now = self.now()
        if topic.startswith("youzan_trade_Refund"):
            refund = self.refunds[str(extra["refund_id"])]
            msg: dict[str, Any] = {"refund_id": refund.refund_id, "tid": trade.tid,
                                   "version": epoch_ms(now), "refunded_fee": refund.refund_fee,
                                   "refund_type": 1}
        else:
            msg = {"tid": trade.tid, "status": trade.status,
                   "update_time": format_cst(trade.update_time), **extra}
        self.messages.append(PushMessage(
            msg_id=str(uuid.uuid4()), topic=topic, tid=trade.tid, status=trade.status,
            msg=msg, version=int(now.timestamp()), next_at=now))

    def publish_test_message(self) -> PushMessage:
        """The test push Youzan sends when the push URL is configured."""
        with self.lock:
            message = PushMessage(msg_id=str(uuid.uuid4()), topic="", tid="", status="",
                                  msg={}, version=int(self.now().timestamp()), test=True,
                                  next_at=self.now())
            self.messages.append(message)
            return message

    def push_body(self, message: PushMessage, send_count: int = 1) -> bytes:
        """The raw body Youzan posts for ``message`` (its ``sendCount``-th attempt)."""
        if message.test:
            data: dict[str, Any] = {"client_id": self.client_id, "kdt_id": int(self.kdt_id),
                                    "msg": "", "test": True, "msg_id": message.msg_id,
                                    "sendCount": send_count, "mode": 1}
            return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
        if message.topic.startswith("trade_"):
            encoded = quote(json.dumps(message.msg, ensure_ascii=False, separators=(",", ":")),
                            safe="")
            msg: Any = encoded
            sign = legacy_body_sign(self.client_id, encoded, self.client_secret)
        else:
            msg = message.msg
            sign = ""
        data = {"client_id": self.client_id, "kdt_id": int(self.kdt_id),
                "kdt_name": self.kdt_name, "root_kdt_id": int(self.kdt_id), "id": message.tid,
                "type": message.topic, "status": message.status, "msg": msg,
                "msg_id": message.msg_id, "version": message.version, "sendCount": send_count,
                "sign": sign, "test": False, "mode": 1}
        return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()

    def push_headers(self, message: PushMessage, body: bytes) -> dict[str, str]:
        return {"Content-Type": "application/json;charset=utf-8",
                "Event-Sign": event_sign(self.client_id, body, self.client_secret),
                "Event-Type": message.topic or "test", "Client-Id": self.client_id}

    def signed_push(self, tid: str, topic: str = "trade_TradeBuyerPay"
                    ) -> tuple[dict[str, str], bytes]:
        """Headers and body of a genuine push about ``tid`` (not queued for delivery)."""
        with self.lock:
            trade = self._trade(tid)
            message = PushMessage(msg_id=str(uuid.uuid4()), topic=topic, tid=tid,
                                  status=trade.status,
                                  msg={"tid": tid, "status": trade.status,
                                       "update_time": format_cst(trade.update_time)},
                                  version=int(self.now().timestamp()))
            body = self.push_body(message)
            return self.push_headers(message, body), body

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
            elif message.attempts > self.push_max_retries:
                message.given_up = True
            else:
                delays = self.push_retry_delays
                delay = delays[min(message.attempts, len(delays)) - 1]
                message.next_at = self.now() + delay

    # -- /auth/token --------------------------------------------------------------------

    def handle_token(self, content_type: str, raw: bytes) -> dict[str, Any]:
        with self.lock:
            self.calls.append("/auth/token")
            try:
                data = self._token(content_type, raw)
            except BusinessError as err:
                return {"success": False, "code": err.code, "data": None, "message": err.msg}
            return {"success": True, "code": 200, "data": data, "message": None}

    def _token(self, content_type: str, raw: bytes) -> dict[str, Any]:
        if "application/json" not in content_type:
            raise BusinessError(1000, "content-type must be application/json")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            raise BusinessError(1000, "body is not JSON") from None
        if not isinstance(body, dict):
            raise BusinessError(1000, "body is not a JSON object")
        if body.get("client_id") != self.client_id:
            raise BusinessError(1103, "Client 不存在")
        if body.get("client_secret") != self.client_secret:
            raise BusinessError(1000, "client_secret 错误")
        grants = {"silent": self._grant_silent, "authorization_code": self._grant_code,
                  "refresh_token": self._grant_refresh}
        grant = grants.get(str(body.get("authorize_type")))
        if grant is None:
            raise BusinessError(1105, "authorize_type 不支持")
        return grant(body)

    def _grant_silent(self, body: dict[str, Any]) -> dict[str, Any]:
        if str(body.get("grant_id")) != self.kdt_id:
            raise BusinessError(1103, "授权关系不存在")
        if not self.authorized:
            raise BusinessError(1004, "授权已过期")
        current = self.current_token
        if (body.get("refresh") is not True and current is not None
                and self.tokens.get(current, 0) > epoch_ms(self.now())):
            return self._token_data(current, None)
        return self._token_data(self._new_token(replace=True), None)

    def _grant_code(self, body: dict[str, Any]) -> dict[str, Any]:
        code = str(body.get("code") or "")
        if code not in self.auth_codes:
            raise BusinessError(1005, "code 无效")
        self.auth_codes.discard(code)
        return self._token_data(self._new_token(replace=False), self._new_refresh())

    def _grant_refresh(self, body: dict[str, Any]) -> dict[str, Any]:
        refresh = str(body.get("refresh_token") or "")
        if self.refresh_tokens.get(refresh, 0) <= epoch_ms(self.now()) or not self.authorized:
            raise BusinessError(1004, "refresh_token 已过期")
        del self.refresh_tokens[refresh]  # refresh tokens rotate
        return self._token_data(self._new_token(replace=False), self._new_refresh())

    def _new_token(self, *, replace: bool) -> str:
        token = secrets.token_hex(16)
        if replace and self.current_token is not None:
            # A forced silent refresh invalidates the previous token at once.
            self.tokens.pop(self.current_token, None)
        self.tokens[token] = epoch_ms(self.now() + self.token_ttl)
        self.current_token = token
        self.tokens_issued += 1
        return token

    def _new_refresh(self) -> str:
        refresh = secrets.token_hex(16)
        self.refresh_tokens[refresh] = epoch_ms(self.now() + REFRESH_TTL)
        return refresh

    def _token_data(self, token: str, refresh: str | None) -> dict[str, Any]:
        data: dict[str, Any] = {"access_token": token, "expires": self.tokens[token],
                                "scope": "trade logistics", "authority_id": self.kdt_id}
        if refresh is not None:
            data["refresh_token"] = refresh
        return data

    # -- /api/{name}/{version} ------------------------------------------------------------

    def handle_api(self, name: str, version: str | None, *, method: str, content_type: str,
                   query: Mapping[str, str], raw: bytes) -> dict[str, Any]:
        """Answer one gateway call as Youzan's JSON document (always HTTP 200)."""
        with self.lock:
            self.calls.append(name)
            trace = f"yz7-fake-{next(self._seq):08x}"
            try:
                params = self._gateway(name, version, method, content_type, query, raw)
                if self.on_call is not None:
                    self.on_call(name, params)
                self._throttle()
                result = self._dispatch(name, params)
            except GatewayError as err:
                return {"gw_err_resp": {"trace_id": trace, "err_code": err.code,
                                        "err_msg": err.msg}}
            except BusinessError as err:
                if name in V3_ENVELOPE:
                    return {"error_response": {"code": err.code, "msg": err.msg}}
                return {"code": err.code, "success": False, "message": err.msg, "data": None,
                        "request_id": None}
            if name in V3_ENVELOPE:
                return {"response": result}
            return {"trace_id": trace, "code": 200, "success": True, "message": "successful",
                    "data": result}

    def _gateway(self, name: str, version: str | None, method: str, content_type: str,
                 query: Mapping[str, str], raw: bytes) -> dict[str, Any]:
        if version is None:
            raise GatewayError(4001, "请求路径错误，缺少版本号")
        if name not in APIS or version not in APIS[name]:
            raise GatewayError(4005, "API 或版本不存在")
        if method != "POST" or "application/json" not in content_type:
            raise GatewayError(4007, "请求方法或 Content-Type 不支持")
        token = query.get("access_token", "")
        if not token:
            raise GatewayError(4201, "缺少 access_token")
        if token not in self.tokens:
            raise GatewayError(4203, "Token 不存在")
        if not self.authorized:
            raise GatewayError(4201, "授权已失效")
        if self.tokens[token] <= epoch_ms(self.now()):
            raise GatewayError(4202, "Token 已过期")
        try:
            params = json.loads(raw) if raw.strip() else {}
        except (ValueError, RecursionError):
            raise GatewayError(5001, "系统错误") from None
        if not isinstance(params, dict):
            raise GatewayError(5001, "系统错误")
        return params

    def _throttle(self) -> None:
        if self.faults.throttle <= 0:
            return
        self.faults.throttle -= 1
        shape = self.faults.throttle_shape
        if shape == "gateway":
            raise GatewayError(4101, "请求被限流")
        raise BusinessError(int(shape), "请求被限流")

    def _dispatch(self, name: str, params: Mapping[str, Any]) -> dict[str, Any]:
        handler = {
            "youzan.trades.sold.get": self._sold_get,
            "youzan.trade.get": self._trade_get,
            "youzan.logistics.online.confirm": self._confirm,
            "youzan.trade.memo.update": self._memo_update,
            "youzan.trade.refund.search": self._refund_search,
        }[name]
        return handler(params)

    def _sold_get(self, params: Mapping[str, Any]) -> dict[str, Any]:
        start = _time_param(params, "start_update")
        end = _time_param(params, "end_update")
        if (start is None) != (end is None):
            raise BusinessError(101300001, "start_update 与 end_update 必须同时传")
        if start is not None and end is not None and (end < start or end - start > MAX_SPAN):
            raise BusinessError(101300002, "时间跨度不能超过 3 个月")
        page_no, page_size = _paging(params, default_size=20)
        status = params.get("status")
        rows = [t for t in self.trades.values()
                if (start is None or start <= t.update_time.replace(microsecond=0))
                and (end is None or t.update_time.replace(microsecond=0) <= end)
                and (not status or t.status == status)]
        rows.sort(key=lambda t: (t.update_time, t.tid), reverse=True)
        page = rows[(page_no - 1) * page_size: page_no * page_size]
        return {"total_results": len(rows),
                "full_order_info_list": [
                    {"full_order_info": self.shapes.apply(t.tid, t.full_order_info(self.refunds))}
                    for t in page]}

    def _trade_get(self, params: Mapping[str, Any]) -> dict[str, Any]:
        trade = self.trades.get(str(params.get("tid") or ""))
        if trade is None:
            raise BusinessError(5000, "trade not found")
        refund_order = [{"refund_id": r.refund_id, "oids": ",".join(r.oids),
                         "status": r.status, "refund_fee": r.refund_fee,
                         "refund_state": 2 if r.status == "SUCCESS" else 1}
                        for r in (self.refunds[i] for i in trade.refund_ids)]
        return {"full_order_info": self.shapes.apply(trade.tid,
                                                     trade.full_order_info(self.refunds)),
                "refund_order": refund_order, "delivery_order": [], "order_promotion": {}}

    @records("ship", sent_fields("tid", "is_no_express", "out_sid"))
    def _confirm(self, params: Mapping[str, Any]) -> dict[str, Any]:
        tid = str(params.get("tid") or "")
        if not tid:
            raise BusinessError(101000001, "tid 不能为空")
        if str(params.get("is_no_express", "0")) != "1" and not params.get("out_sid"):
            raise BusinessError(102570001, "物流单号不能为空")
        trade = self.trades.get(tid)
        if trade is None:
            raise BusinessError(105000016, "订单不存在")
        if trade.status in ("WAIT_BUYER_CONFIRM_GOODS", "TRADE_SUCCESS"):
            raise BusinessError(102570007, "商品已发货")
        pending = any(self.refunds[r].status not in ("CLOSED", "SELLER_REFUSE_BUYER")
                      for r in trade.refund_ids)
        if trade.status != SHIPPABLE or pending:
            raise BusinessError(102570020, "订单没有可发货的商品")
        now = self.now()
        trade.status, trade.consign_time, trade.update_time = "WAIT_BUYER_CONFIRM_GOODS", now, now
        trade.shipments += 1
        self._publish("trade_TradeSellerShip", trade)
        return {"is_success": True}

    @records("memo", sent_fields("tid", "memo"))
    def _memo_update(self, params: Mapping[str, Any]) -> dict[str, Any]:
        trade = self.trades.get(str(params.get("tid") or ""))
        if trade is None:
            raise BusinessError(105000016, "订单不存在")
        memo = str(params.get("memo") or "")
        if len(memo) > MEMO_MAX_CHARS:
            raise BusinessError(101000002, f"memo 不能超过 {MEMO_MAX_CHARS} 个字符")
        trade.memo, trade.update_time = memo, self.now()
        self._publish("trade_TradeMemoModified", trade)
        return {"is_success": True}

    def _refund_search(self, params: Mapping[str, Any]) -> dict[str, Any]:
        page_no, page_size = _paging(params, default_size=20)
        if page_no * page_size > 3000:
            raise BusinessError(101000003, "page_no * page_size 不能超过 3000")
        lo = _epoch_param(params, "update_time_start")
        hi = _epoch_param(params, "update_time_end")
        rows = [r for r in self.refunds.values()
                if (lo is None or int(r.modified.timestamp()) >= lo)
                and (hi is None or int(r.modified.timestamp()) <= hi)
                and (not params.get("tid") or r.tid == str(params["tid"]))]
        rows.sort(key=lambda r: (r.modified, r.refund_id), reverse=True)
        page = rows[(page_no - 1) * page_size: page_no * page_size]
        return {"total": len(rows), "refunds": [r.to_json() for r in page]}


def _time_param(params: Mapping[str, Any], name: str) -> datetime | None:
    value = params.get(name)
    if value in (None, ""):
        return None
    try:
        return parse_cst(str(value))
    except ValueError:
        # Youzan answers a date without its time part with a gateway system error.
        raise GatewayError(5001, "系统错误") from None


def _epoch_param(params: Mapping[str, Any], name: str) -> int | None:
    value = params.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise GatewayError(5001, "系统错误") from None


def _paging(params: Mapping[str, Any], *, default_size: int) -> tuple[int, int]:
    try:
        page_no = int(params.get("page_no", 1))
        page_size = int(params.get("page_size", default_size))
    except (TypeError, ValueError, OverflowError):
        raise GatewayError(5001, "系统错误") from None
    if not 1 <= page_no <= 100:
        raise BusinessError(101000004, "page_no 必须在 1 到 100 之间")
    if not 1 <= page_size <= 100:
        raise BusinessError(101000005, "page_size 必须在 1 到 100 之间")
    return page_no, page_size


__all__ = ["APIS", "BusinessError", "FakeClock", "FakeTrade", "FakeYouzan", "Faults",
           "GatewayError", "PushMessage"]
