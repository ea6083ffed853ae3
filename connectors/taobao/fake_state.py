"""The state and the API semantics of the fake TOP gateway (see :mod:`connectors.taobao.fake`).

:class:`FakeTop` holds trades, refunds and TMC messages, verifies every request as TOP does
(app key, signature for all three sign methods, timestamp ±10 minutes, version, session) and
answers with TOP's non-simplified JSON shapes. Time comes from an injectable clock, so tests
can move it hours forward without sleeping. It is a test double: it must never be pointed
at, or hold credentials for, the real platform.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

from connectors.common.shapes import ShapeFaults
from connectors.common.times import format_cst, parse_cst
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
from connectors.taobao.sign import SIGN_METHODS, top_sign

TIMESTAMP_TOLERANCE = timedelta(minutes=10)
MAX_WINDOW = timedelta(days=1)
SHIPPABLE = "WAIT_SELLER_SEND_GOODS"
_CLOSED = ("TRADE_CLOSED", "TRADE_CLOSED_BY_TAOBAO")

# APIs that need the seller's session, and the ones called with the app's rights alone.
SESSION_APIS = frozenset(
    {
        "taobao.trades.sold.increment.get",
        "taobao.trade.fullinfo.get",
        "taobao.logistics.dummy.send",
        "taobao.trade.memo.update",
        "taobao.refunds.receive.get",
        "taobao.tmc.user.permit",
    }
)
APP_APIS = frozenset({"taobao.tmc.messages.consume", "taobao.tmc.messages.confirm"})


class TopError(Exception):
    """An ``error_response`` the fake answers with (HTTP 200, like TOP)."""

    def __init__(self, code: int, msg: str, sub_code: str = "", sub_msg: str = "") -> None:
        super().__init__(code, msg)
        self.code, self.msg, self.sub_code, self.sub_msg = code, msg, sub_code, sub_msg


@dataclass
class FakeLine:
    oid: int
    num_iid: int
    title: str
    price: str
    num: int = 1
    sku_id: str | None = None
    outer_iid: str | None = None
    outer_sku_id: str | None = None
    status: str = SHIPPABLE
    refund_status: str = "NO_REFUND"
    refund_id: int | None = None
    sku_properties_name: str | None = None  # "充值号码:138...;充值面额:50元"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "oid": self.oid,
            "num_iid": self.num_iid,
            "title": self.title,
            "price": self.price,
            "num": self.num,
            "payment": str(Decimal(self.price) * self.num),
            "status": self.status,
            "refund_status": self.refund_status,
            "sku_id": self.sku_id,
            "outer_iid": self.outer_iid,
            "outer_sku_id": self.outer_sku_id,
            "refund_id": self.refund_id,
            "sku_properties_name": self.sku_properties_name,
        }
        return {key: value for key, value in data.items() if value is not None}


@dataclass
class FakeTrade:
    tid: int
    status: str
    created: datetime
    modified: datetime
    lines: list[FakeLine]
    pay_time: datetime | None = None
    buyer_open_uid: str = "AAH_fake_buyer"
    buyer_nick: str = "fake-buyer"
    type: str = "fixed"
    seller_memo: str | None = None
    consign_time: datetime | None = None
    shipments: int = 0
    buyer_message: str | None = None  # 买家留言

    @property
    def payment(self) -> str:
        return str(sum((Decimal(line.price) * line.num for line in self.lines), Decimal("0")))

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "tid": self.tid,
            "status": self.status,
            "type": self.type,
            "payment": self.payment,
            "created": format_cst(self.created),
            "modified": format_cst(self.modified),
            "pay_time": format_cst(self.pay_time) if self.pay_time else None,
            "consign_time": format_cst(self.consign_time) if self.consign_time else None,
            "buyer_nick": self.buyer_nick,
            "buyer_open_uid": self.buyer_open_uid,
            "seller_memo": self.seller_memo,
            "buyer_message": self.buyer_message,
            "orders": {"order": [line.to_json() for line in self.lines]},
        }
        return {key: value for key, value in data.items() if value is not None}


@dataclass
class FakeRefund:
    refund_id: int
    tid: int
    oid: int
    status: str
    refund_fee: str
    created: datetime
    modified: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "refund_id": self.refund_id,
            "tid": self.tid,
            "oid": self.oid,
            "status": self.status,
            "refund_fee": self.refund_fee,
            "created": format_cst(self.created),
            "modified": format_cst(self.modified),
        }


@dataclass
class FakeMessage:
    id: int
    topic: str
    content: dict[str, Any]
    pub_time: datetime
    visible_at: datetime
    confirmed: bool = False
    deliveries: int = 0


@dataclass
class Faults(BaseFaults):
    """Failures to inject into the next calls to ``/router/rest`` (``throttle``: code 7;
    the push faults act on TMC batches)."""

    ban_seconds: int = 5  # a throttled call says "This ban will last for N more seconds"


#: What the fake sells: the SKUs of ``shops/example-taobao.yaml``, keyed by what its
#: mappings name, with the TOP item fields each line carries.
CATALOG: tuple[tuple[CatalogItem, Mapping[str, Any]], ...] = (
    (CatalogItem("4567890123", "sku_id", "优酷VIP月卡 Youku VIP 1 month", "19.90"),
     {"num_iid": 600000000001, "sku_id": "4567890123"}),
    (CatalogItem("612345678901", "item_id", "爱奇艺季卡 iQIYI 3 months", "45.00"),
     {"num_iid": 612345678901}),
    (CatalogItem("BUNDLE-A", "outer_id", "会员礼包 Bundle A", "109.00"),
     {"num_iid": 600000000003, "outer_iid": "BUNDLE-A"}),
)


def sku_properties_name(properties: Iterable[tuple[str, str]]) -> str:
    """TOP's ``sku_properties_name``: ``name:value`` pairs joined by ``;``."""
    return ";".join(f"{name}:{value}" for name, value in properties)


def _pick(data: Mapping[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    """Keep requested top-level fields; ``orders.x`` selects sub-order fields."""
    wanted = set(fields)
    picked = {key: value for key, value in data.items() if key in wanted and key != "orders"}
    if "orders" in data:
        sub = {name.split(".", 1)[1] for name in wanted if name.startswith("orders.")}
        if "orders" in wanted or sub:
            picked["orders"] = {
                "order": [
                    {k: v for k, v in line.items() if "orders" in wanted or k in sub}
                    for line in data["orders"]["order"]
                ]
            }
    return picked


@dataclass
class FakeTop(FakeBase):
    """A Taobao Open Platform double for one app and one seller."""

    platform: ClassVar[str] = "taobao"
    pushes: ClassVar[bool] = True  # TMC messages

    app_key: str = "12345678"
    app_secret: str = "testsecret"  # noqa: S105 - a fake's published test credential
    session: str = "test-session"
    clock: Callable[[], datetime] = wall_now
    #: Seconds the platform's clock runs ahead of ``clock`` (negative: behind); its order
    #: times, windows and ``Date`` header follow it.
    clock_offset: float = 0.0
    visibility_timeout: timedelta = timedelta(seconds=30)
    seller_nick: str = "fake-shop"
    user_id: int = 2200000000001
    faults: Faults = field(default_factory=Faults)
    session_expired: bool = False
    #: Called with (method, params) before each authenticated API call; tests use it to
    #: change state between two pages of one poll.
    on_call: Callable[[str, Mapping[str, str]], None] | None = None
    trades: dict[int, FakeTrade] = field(default_factory=dict)
    refunds: dict[int, FakeRefund] = field(default_factory=dict)
    messages: list[FakeMessage] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    tmc_permitted: bool = False
    #: Malformed answers on demand (see :meth:`corrupt_order`, :meth:`garble_answers`).
    shapes: ShapeFaults = field(default_factory=ShapeFaults)
    #: Every ship and memo call received, refused ones too (``snapshot()["write_backs"]``).
    writebacks: WriteBackLog = field(default_factory=WriteBackLog)

    def __post_init__(self) -> None:
        self._init_base(self.clock, self.clock_offset)
        # Real tids exceed 2**53; so do the fake's, to catch float-parsing bugs.
        self._tids = itertools.count(4_000_000_000_000_000_001, 7)
        self._oids = itertools.count(4_100_000_000_000_000_001, 3)
        self._refund_ids = itertools.count(90_000_000_000_001)
        self._message_ids = itertools.count(1_000_000_001)
        self._request_ids = itertools.count(1)

    # -- scenario control (Python API; the /__fake__/ endpoints wrap these) -------------

    def create_trade(
        self,
        *,
        status: str = SHIPPABLE,
        items: Iterable[Mapping[str, Any]] = ({"title": "Game card 100", "price": "10.00"},),
        buyer_open_uid: str = "AAH_fake_buyer",
        modified: datetime | None = None,
        paid_at: datetime | None = None,
        buyer_message: str | None = None,
    ) -> int:
        """Add a trade (paid and awaiting shipment by default, paid ``paid_at`` or now);
        returns its tid. An item may carry ``sku_properties_name``."""
        with self.lock:
            now = self.now()
            tid = next(self._tids)
            lines = [
                FakeLine(
                    oid=next(self._oids),
                    num_iid=int(item.get("num_iid", 600000000001)),
                    title=str(item.get("title", "item")),
                    price=str(Decimal(str(item.get("price", "1.00"))).quantize(Decimal("0.01"))),
                    num=int(item.get("num", 1)),
                    sku_id=item.get("sku_id"),
                    outer_iid=item.get("outer_iid"),
                    outer_sku_id=item.get("outer_sku_id"),
                    status=status,
                    sku_properties_name=item.get("sku_properties_name"),
                )
                for item in items
            ]
            paid = status not in ("WAIT_BUYER_PAY", "TRADE_NO_CREATE_PAY")
            trade = FakeTrade(
                tid=tid,
                status=status,
                created=min(paid_at or now, now),
                modified=modified or now,
                pay_time=(paid_at or now) if paid else None,
                lines=lines,
                buyer_open_uid=buyer_open_uid,
                buyer_message=buyer_message,
            )
            self.trades[tid] = trade
            self._publish("taobao_trade_TradeCreate", trade)
            if paid:
                self._publish("taobao_trade_TradeBuyerPay", trade)
            return tid

    def touch(self, tid: int, when: datetime | None = None) -> None:
        """Mark a trade modified (now by default), as any change on TOP does."""
        with self.lock:
            self._trade(tid).modified = when or self.now()

    def request_refund(
        self, tid: int, *, oid: int | None = None, status: str = "WAIT_SELLER_AGREE"
    ) -> int:
        """Open (or with status SUCCESS, complete) a refund on one sub-order; returns its id."""
        with self.lock:
            trade = self._trade(tid)
            line = next((ln for ln in trade.lines if oid is None or ln.oid == oid), None)
            if line is None:
                raise KeyError(oid)
            now = self.now()
            refund_id = next(self._refund_ids)
            self.refunds[refund_id] = FakeRefund(
                refund_id, tid, line.oid, status, str(Decimal(line.price) * line.num), now, now
            )
            line.refund_status, line.refund_id = status, refund_id
            trade.modified = now
            self._publish("taobao_refund_RefundCreated", trade, refund_id=refund_id, oid=line.oid)
            if status == "SUCCESS":
                line.status = "TRADE_CLOSED"
                self._publish("taobao_refund_RefundSuccess", trade, refund_id=refund_id)
                if all(ln.status in _CLOSED for ln in trade.lines):
                    trade.status = "TRADE_CLOSED"
                    self._publish("taobao_trade_TradeClose", trade)
            return refund_id

    def close_trade(self, tid: int, *, by_taobao: bool = False) -> None:
        """Close a trade (buyer cancelled, or TOP closed it)."""
        with self.lock:
            trade = self._trade(tid)
            trade.status = "TRADE_CLOSED_BY_TAOBAO" if by_taobao else "TRADE_CLOSED"
            for line in trade.lines:
                line.status = trade.status
            trade.modified = self.now()
            self._publish("taobao_trade_TradeClose", trade)

    def ship_by_merchant(self, tid: int) -> bool:
        """The merchant ships the trade by hand in the seller centre (the robot's later
        ``dummy.send`` is then refused as not shippable); False if it was not shippable."""
        with self.lock:
            trade = self._trade(tid)
            if trade.status != SHIPPABLE:
                return False
            self._apply_shipment(trade)
            return True

    def corrupt_order(self, tid: int, path: str, how: str) -> None:
        """Serialize trade ``tid`` with the field at ``path`` (dotted, into the trade JSON,
        e.g. ``orders.order.0.num``) dropped, null or a huge number string, wherever TOP
        returns it; :meth:`clear_corruption` ends it."""
        self.shapes.corrupt(str(tid), path, how)

    def garble_answers(self, how: str, count: int = 1) -> None:
        """The next ``count`` router answers are an HTML page (``html``, HTTP 200) or JSON
        cut off in the middle (``truncated``)."""
        self.shapes.garble_next(how, count)

    def clear_corruption(self, tid: int | None = None) -> None:
        self.shapes.clear(None if tid is None else str(tid))

    def set_faults(self, **changes: Any) -> Faults:
        """The common faults, plus ``expire_session``: true expires the seller's session
        (as ``expire_tokens``), false restores it (the seller authorized the app again)."""
        with self.lock:
            expire = changes.pop("expire_session", None)
            faults = super().set_faults(**changes)
            if expire is not None:
                self.session_expired = bool(expire)
            assert isinstance(faults, Faults)
            return faults

    def expire_tokens(self) -> None:
        """The seller's session expires (TOP answers code 27 until re-authorized)."""
        with self.lock:
            self.session_expired = True

    def fault_flags(self) -> dict[str, Any]:
        return {"session_expired": self.session_expired}

    catalog_entries: ClassVar[tuple[tuple[CatalogItem, Mapping[str, Any]], ...]] = CATALOG

    def create_paid_order(self, request: OrderRequest) -> str:
        item, fields = self.catalog_entry(request.sku)
        line: dict[str, Any] = {"num": request.quantity}
        if item is not None and fields is not None:
            line.update(fields, title=item.title, price=item.price)
        elif request.sku.isascii() and request.sku.isdigit():
            line.update(sku_id=request.sku, title=f"SKU {request.sku}", price="1.00")
        else:
            line.update(outer_sku_id=request.sku, title=request.sku, price="1.00")
        if request.properties:
            line["sku_properties_name"] = sku_properties_name(request.properties)
        buyer = request.buyer or "fake-buyer"
        tid = self.create_trade(items=[line], buyer_open_uid=f"AAH_{buyer}",
                                paid_at=request.paid_at, buyer_message=request.message)
        with self.lock:
            self.trades[tid].buyer_nick = buyer
        return str(tid)

    def call_api(self, path: str, payload: Mapping[str, Any]) -> str:
        return str(payload.get("method") or path)

    def call_outcome(self, status: int, document: Any) -> str:
        if isinstance(document, dict) and "error_response" in document:
            return error_outcome(document["error_response"], "code", "msg")
        return super().call_outcome(status, document)

    def platform_snapshot(self) -> dict[str, Any]:
        """The trades and TMC messages; ids are strings (JSON numbers lose digits)."""
        with self.lock:
            return {
                "trades": {
                    str(t.tid): {
                        "status": t.status,
                        "shipments": t.shipments,
                        "memo": t.seller_memo,
                        "modified": format_cst(t.modified),
                    }
                    for t in self.trades.values()
                },
                "messages": {
                    "pending": sum(1 for m in self.messages if not m.confirmed),
                    "confirmed": sum(1 for m in self.messages if m.confirmed),
                },
                "session_expired": self.session_expired,
            }

    def _trade(self, tid: int) -> FakeTrade:
        try:
            return self.trades[tid]
        except KeyError:
            raise KeyError(f"no trade {tid}") from None

    def _publish(self, topic: str, trade: FakeTrade, **extra: Any) -> None:
        now = self.now()
        content = {
            "tid": trade.tid,
            "status": topic.rsplit("_", 1)[-1],
            "buyer_open_uid": trade.buyer_open_uid,
            "seller_nick": self.seller_nick,
            "payment": trade.payment,
            "type": trade.type,
            **extra,
        }
        self.messages.append(FakeMessage(next(self._message_ids), topic, content, now, now))

    # -- the wire protocol --------------------------------------------------------------

    def handle(self, params: Mapping[str, str]) -> dict[str, Any]:
        """Answer one router call (params = query + form merged) as TOP's JSON document."""
        with self.lock:
            method = params.get("method", "")
            self.calls.append(method)
            try:
                self._authenticate(method, params)
                if self.on_call is not None:
                    self.on_call(method, params)
                if self.faults.throttle > 0:
                    self.faults.throttle -= 1
                    raise TopError(
                        7,
                        "App Call Limited",
                        "accesscontrol.limited-by-api-access-count",
                        f"This ban will last for {self.faults.ban_seconds} more seconds",
                    )
                body = self._dispatch(method, params)
            except TopError as err:
                error: dict[str, Any] = {"code": err.code, "msg": err.msg}
                if err.sub_code:
                    error.update(sub_code=err.sub_code, sub_msg=err.sub_msg or err.sub_code)
                error["request_id"] = self._request_id()
                return {"error_response": error}
            body["request_id"] = self._request_id()
            return {method.removeprefix("taobao.").replace(".", "_") + "_response": body}

    def _request_id(self) -> str:
        return f"fake{next(self._request_ids):08x}"

    def _authenticate(self, method: str, params: Mapping[str, str]) -> None:
        # The checks in TOP's order: each answers its own error code.
        if not method:
            raise TopError(21, "Missing Method")
        self._check_app_key(params)
        self._check_sign(params)
        self._check_timestamp(params.get("timestamp", ""))
        version = params.get("v", "")
        if not version:
            raise TopError(32, "Missing Version")
        if version != "2.0":
            raise TopError(34, "Unsupported Version")
        if method not in SESSION_APIS and method not in APP_APIS:
            raise TopError(22, "Invalid Method")
        if method in SESSION_APIS:
            self._check_session(params)

    def _check_app_key(self, params: Mapping[str, str]) -> None:
        app_key = params.get("app_key", "")
        if not app_key:
            raise TopError(28, "Missing App Key")
        if not same_text(app_key, self.app_key):
            raise TopError(29, "Invalid App Key")

    def _check_sign(self, params: Mapping[str, str]) -> None:
        sign_method = params.get("sign_method") or "md5"  # TOP's historical default
        if sign_method not in SIGN_METHODS:
            raise TopError(25, "Invalid Signature", "isv.invalid-signature-method", sign_method)
        sign = params.get("sign", "")
        if not sign:
            raise TopError(24, "Missing Signature")
        expected = top_sign(params, self.app_secret, sign_method)
        if not same_text(sign.upper(), expected):
            raise TopError(25, "Invalid Signature")

    def _check_session(self, params: Mapping[str, str]) -> None:
        session = params.get("session", "")
        if not session:
            raise TopError(26, "Missing Session")
        if not same_text(session, self.session):
            raise TopError(27, "Invalid Session", "invalid-sessionkey", "SessionKey非法")
        if self.session_expired:
            raise TopError(27, "Invalid Session", "sessionkey-expired", "SessionKey已过期")

    def _check_timestamp(self, text: str) -> None:
        if not text:
            raise TopError(30, "Missing Timestamp")
        try:
            if text.isascii() and text.isdigit():  # the old Python SDK sends epoch millis
                sent = datetime.fromtimestamp(int(text) / 1000, UTC)
            else:
                sent = parse_cst(text)
        except (ValueError, OverflowError, OSError):
            raise TopError(31, "Invalid Timestamp", "isv.invalid-timestamp", text) from None
        if abs(sent - self.now()) > TIMESTAMP_TOLERANCE:
            raise TopError(
                31,
                "Invalid Timestamp",
                "isv.invalid-timestamp",
                f"timestamp is not within 10 minutes of {format_cst(self.now())}",
            )

    def _dispatch(self, method: str, params: Mapping[str, str]) -> dict[str, Any]:
        handler = {
            "taobao.trades.sold.increment.get": self._increment_get,
            "taobao.trade.fullinfo.get": self._fullinfo_get,
            "taobao.logistics.dummy.send": self._dummy_send,
            "taobao.trade.memo.update": self._memo_update,
            "taobao.refunds.receive.get": self._refunds_receive_get,
            "taobao.tmc.user.permit": self._tmc_permit,
            "taobao.tmc.messages.consume": self._tmc_consume,
            "taobao.tmc.messages.confirm": self._tmc_confirm,
        }[method]
        return handler(params)

    # -- APIs -----------------------------------------------------------------------------

    def _increment_get(self, params: Mapping[str, str]) -> dict[str, Any]:
        fields = _fields(params)
        start = _required_time(params, "start_modified")
        end = _required_time(params, "end_modified")
        if end < start:
            raise TopError(
                41,
                "Invalid Arguments",
                "isv.invalid-parameter:end_modified",
                "end_modified must not be before start_modified",
            )
        if end - start > MAX_WINDOW:
            raise TopError(
                41,
                "Invalid Arguments",
                "isv.invalid-parameter:end_modified",
                "end_modified - start_modified must not exceed 1 day",
            )
        status = params.get("status")
        rows = [
            self.shapes.apply(t.tid, t.to_json())
            for t in self.trades.values()
            if start <= t.modified.replace(microsecond=0) <= end
            and (not status or t.status == status)
        ]
        return _page(params, rows, "trades", "trade", fields)

    def _fullinfo_get(self, params: Mapping[str, str]) -> dict[str, Any]:
        fields = _fields(params)
        trade = self.trades.get(_int_param(params, "tid"))
        if trade is None:
            raise TopError(15, "Remote service error", "isv.trade-not-exist", "交易不存在")
        return {"trade": _pick(self.shapes.apply(trade.tid, trade.to_json()), fields)}

    @records("ship", sent_fields("tid"))
    def _dummy_send(self, params: Mapping[str, str]) -> dict[str, Any]:
        trade = self.trades.get(_int_param(params, "tid"))
        if trade is None:
            raise TopError(
                15, "Remote service error", "isv.logistics-dummy-service-error:B01", "订单不存在"
            )
        if trade.status != SHIPPABLE:
            raise TopError(
                15,
                "Remote service error",
                "isv.logistics-dummy-service-error:B04",
                "订单状态不允许发货",
            )
        self._apply_shipment(trade)
        return {"shipping": {"is_success": True}}

    def _apply_shipment(self, trade: FakeTrade) -> None:
        now = self.now()
        trade.status, trade.consign_time, trade.modified = "WAIT_BUYER_CONFIRM_GOODS", now, now
        for line in trade.lines:
            if line.status == SHIPPABLE:
                line.status = "WAIT_BUYER_CONFIRM_GOODS"
        trade.shipments += 1
        self._publish("taobao_trade_TradeSellerShip", trade)

    @records("memo", sent_fields("tid", "memo", "reset"))
    def _memo_update(self, params: Mapping[str, str]) -> dict[str, Any]:
        trade = self.trades.get(_int_param(params, "tid"))
        if trade is None:
            raise TopError(15, "Remote service error", "isv.trade-not-exist", "交易不存在")
        memo = params.get("memo", "")
        if len(memo.encode("utf-8")) > 1000:
            raise TopError(
                41,
                "Invalid Arguments",
                "isv.invalid-parameter:memo",
                "memo must not exceed 1000 bytes",
            )
        if params.get("reset") == "true":
            memo = ""
        trade.seller_memo, trade.modified = memo, self.now()
        return {"trade": {"tid": trade.tid, "modified": format_cst(trade.modified)}}

    def _refunds_receive_get(self, params: Mapping[str, str]) -> dict[str, Any]:
        fields = _fields(params)
        start = _time_param(params, "start_modified")
        end = _time_param(params, "end_modified")
        status = params.get("status")
        rows = [
            r.to_json()
            for r in self.refunds.values()
            if (start is None or r.modified.replace(microsecond=0) >= start)
            and (end is None or r.modified.replace(microsecond=0) <= end)
            and (not status or r.status == status)
        ]
        return _page(params, rows, "refunds", "refund", fields)

    def _tmc_permit(self, params: Mapping[str, str]) -> dict[str, Any]:
        self.tmc_permitted = True
        return {"is_success": True}

    def _tmc_consume(self, params: Mapping[str, str]) -> dict[str, Any]:
        quantity = _int_param(params, "quantity", default=100)
        if not 10 <= quantity <= 200:
            raise TopError(
                41,
                "Invalid Arguments",
                "isv.invalid-parameter:quantity",
                "quantity must be between 10 and 200",
            )
        now = self.now()
        batch = [m for m in self.messages if not m.confirmed and m.visible_at <= now][:quantity]
        for message in batch:
            message.visible_at = now + self.visibility_timeout
            message.deliveries += 1
        if not batch:
            return {}
        batch = self.push_order(batch)  # duplicated and reordered as the faults say
        return {
            "messages": {
                "tmc_message": [
                    {
                        "id": m.id,
                        "topic": m.topic,
                        "pub_app_key": self.app_key,
                        "pub_time": format_cst(m.pub_time),
                        "user_id": self.user_id,
                        "user_nick": self.seller_nick,
                        "content": json.dumps(m.content, ensure_ascii=False),
                    }
                    for m in batch
                ]
            }
        }

    def _tmc_confirm(self, params: Mapping[str, str]) -> dict[str, Any]:
        raw = [part for part in params.get("s_message_ids", "").split(",") if part.strip()]
        if not raw:
            raise TopError(40, "Missing Required Arguments", "isv.missing-parameter:s_message_ids")
        if len(raw) > 200:
            raise TopError(41, "Invalid Arguments", "isv.invalid-parameter:s_message_ids")
        try:
            ids = {int(part) for part in raw}
        except ValueError:
            raise TopError(41, "Invalid Arguments", "isv.invalid-parameter:s_message_ids") from None
        for message in self.messages:
            if message.id in ids:
                message.confirmed = True
        return {"is_success": True}


def _fields(params: Mapping[str, str]) -> list[str]:
    fields = [name.strip() for name in params.get("fields", "").split(",") if name.strip()]
    if not fields:
        raise TopError(40, "Missing Required Arguments", "isv.missing-parameter:fields")
    return fields


def _int_param(params: Mapping[str, str], name: str, default: int | None = None) -> int:
    text = params.get(name, "")
    if not text:
        if default is not None:
            return default
        raise TopError(40, "Missing Required Arguments", f"isv.missing-parameter:{name}")
    try:
        return int(text)
    except ValueError:
        raise TopError(41, "Invalid Arguments", f"isv.invalid-parameter:{name}") from None


def _required_time(params: Mapping[str, str], name: str) -> datetime:
    moment = _time_param(params, name)
    if moment is None:
        raise TopError(40, "Missing Required Arguments", f"isv.missing-parameter:{name}")
    return moment


def _time_param(params: Mapping[str, str], name: str) -> datetime | None:
    text = params.get(name, "")
    if not text:
        return None
    try:
        return parse_cst(text)
    except ValueError:
        raise TopError(41, "Invalid Arguments", f"isv.invalid-parameter:{name}") from None


def _page(
    params: Mapping[str, str],
    rows: list[dict[str, Any]],
    list_key: str,
    item_key: str,
    fields: list[str],
) -> dict[str, Any]:
    """Sort by ``modified`` descending and cut one page, as TOP's list APIs do."""
    page_no = _int_param(params, "page_no", default=1)
    page_size = _int_param(params, "page_size", default=40)
    if page_no < 1:
        raise TopError(41, "Invalid Arguments", "isv.invalid-parameter:page_no")
    if not 1 <= page_size <= 100:
        raise TopError(41, "Invalid Arguments", "isv.invalid-parameter:page_size")
    rows.sort(key=lambda row: (row["modified"], row.get("tid", 0)), reverse=True)
    page = rows[(page_no - 1) * page_size : page_no * page_size]
    body: dict[str, Any] = {}
    if page:
        body[list_key] = {item_key: [_pick(row, fields) for row in page]}
    if params.get("use_has_next") == "true":
        body["has_next"] = page_no * page_size < len(rows)
    else:
        body["total_results"] = len(rows)
    return body


__all__ = ["FakeClock", "FakeTop", "Faults", "TopError"]
