"""The fake Fulu open platform's state: catalogue, balance, orders by our order number, the
timer that moves them, the callbacks owed, and the faults that matter to a buyer.

It answers as :mod:`connectors.fulu.protocol` says Fulu does (codes marked there as
assumptions are ours). Orders are kept by ``customer_order_no``; a second placement under a
number it holds is answered 3000 "外部订单号已存在" and changes nothing. An order is charged when
accepted and refunded when it fails. States move ``untreated → processing → success|failed``
on the fake's clock (:meth:`FakeFulu.tick`), so tests advance the clock instead of sleeping.
Card codes are generated at success and served only encrypted (Base64 of AES-256-ECB under the
app secret). A fake holds no real credentials and must never be pointed at Fulu.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from connectors.fakebase import CatalogItem, FakeBase, Faults, OrderRequest
from connectors.fakekit import WriteBackLog, same_text, wall_now
from connectors.fulu import protocol as p
from connectors.fulu.sign import (
    canonical_json,
    encrypt_card,
    sign_params,
    sign_text,
    verify_signed,
)

#: Fulu's public sandbox key (published in its SDK examples) and a secret of the right size.
TEST_APP_KEY = "i4esv1l+76l/7NQCL3QudG90Fq+YgVfFGJAWgT+7qO1Bm9o/adG/1iwO2qXsAXNB"
TEST_APP_SECRET = "0a091b3aa4324435aab703142518a8f7"  # noqa: S105 - Fulu's public sandbox value
#: Seconds an order waits untreated, then processes (on the fake's clock).
UNTREATED_SECONDS = 2.0
PROCESSING_SECONDS = 10.0
#: Seconds after the order ended at which each callback attempt is due (⚠ assumption).
CALLBACK_SCHEDULE = (0, 15, 60, 180, 600, 1800, 3600)
#: How far a request's timestamp may be from the platform's clock (⚠ assumption).
TIMESTAMP_TOLERANCE = timedelta(minutes=10)
MOBILE_RE = re.compile(r"1[3-9]\d{9}")
TYPE_NAMES = {p.ORDER_TYPE_MOBILE: "话费", p.ORDER_TYPE_CARD: "卡密", p.ORDER_TYPE_DIRECT: "直充"}


@dataclass
class FuluProduct:
    product_id: str  # digits, as Fulu numbers its products
    name: str
    order_type: int  # protocol.ORDER_TYPE_*
    price_cents: int
    face_value_cents: int
    on_shelf: bool = True
    stock: int = 1_000_000

    def to_goods(self) -> dict[str, Any]:
        """As ``fulu.goods.info.get`` / ``fulu.goods.list.get`` describe a product."""
        return {"product_id": int(self.product_id), "product_name": self.name,
                "product_type": TYPE_NAMES[self.order_type],
                "face_value": float(self.face_value_cents) / 100,
                "purchase_price": float(self.price_cents) / 100,
                "sales_status": "上架" if self.on_shelf else "下架",
                "stock_status": "充足" if self.stock > 0 else "断货"}


DEFAULT_PRODUCTS = (
    FuluProduct("10000001", "优酷视频VIP会员月卡(卡密)", p.ORDER_TYPE_CARD, 1500, 3000),
    FuluProduct("10000002", "腾讯视频VIP会员月卡(直充)", p.ORDER_TYPE_DIRECT, 1680, 2000),
    FuluProduct("10000003", "爱奇艺黄金会员季卡(卡密)", p.ORDER_TYPE_CARD, 4200, 6800),
    FuluProduct("20000050", "全国话费50元", p.ORDER_TYPE_MOBILE, 4960, 5000),
    FuluProduct("20000100", "全国话费100元", p.ORDER_TYPE_MOBILE, 9920, 10000),
)


@dataclass
class FuluFaults(Faults):
    """Fulu's own faults, on top of the common ones (counters count down per placement)."""

    busy: int = 0  # answered 1000 "系统繁忙", nothing placed
    drop_request: int = 0  # a 502 gateway page, nothing placed (the request never arrived)
    lose_answer: int = 0  # placed, then a 504 gateway page (the answer was lost)
    duplicate_answer: int = 0  # placed, then answered 3000 as if a retry arrived first
    accept_then_fail: int = 0  # accepted, later failed (and refunded)
    callback_first: int = 0  # finished and called back before the placement is answered
    late_callbacks: int = 0  # the next N finished orders call back an hour late
    insufficient_balance: int = 0  # answered 3008 whatever the balance
    price_rise_cents: int = 0  # every product costs this much more from now on
    off_shelf: str = ""  # product ids (comma separated) taken off the shelf


@dataclass
class FuluOrder:
    order_id: str
    customer_order_no: str
    product: FuluProduct
    charge_account: str
    buy_num: int
    unit_cents: int
    created_at: datetime
    area: str = ""
    server: str = ""
    game: str = ""  # charge_game_name / charge_game_role, as placed
    role: str = ""
    state: str = "untreated"
    finished_at: datetime | None = None
    description: str = ""
    fail_with: str | None = None  # armed accept-then-fail: the description it fails with
    cards: list[tuple[str, str]] = field(default_factory=list)  # (number, code) plaintext
    callback_due: datetime | None = None
    callback_attempts: int = 0
    callback_acked: bool = False
    late: bool = False

    @property
    def cost_cents(self) -> int:
        return self.unit_cents * self.buy_num


class FuluError(Exception):
    """An answer with a non-zero code (the message is Fulu's text)."""

    def __init__(self, code: int, detail: str = "") -> None:
        super().__init__(code, detail)
        self.code = code
        self.message = p.MESSAGES.get(code, "error") + (f": {detail}" if detail else "")


class FakeFulu(FakeBase):
    """The fake Fulu platform (one merchant account). Thread-safe through the base's lock."""

    platform = "fulu"
    pushes = True  # its callbacks: duplicate and reordered callbacks are push faults
    faults: FuluFaults

    def __init__(self, *, app_key: str = TEST_APP_KEY, app_secret: str = TEST_APP_SECRET,
                 balance_cents: int = 1_000_000, callback_url: str | None = None,
                 products: Sequence[FuluProduct] = DEFAULT_PRODUCTS,
                 clock: Callable[[], datetime] = wall_now, clock_offset: float = 0.0) -> None:
        self._init_base(clock, clock_offset)
        self.faults = FuluFaults()
        self.writebacks = WriteBackLog()  # a supplier receives no ship or memo calls
        self.app_key, self.app_secret = app_key, app_secret
        self.balance_cents = balance_cents
        self.callback_url = callback_url
        self.products = {prod.product_id: dataclasses.replace(prod) for prod in products}
        self.orders: dict[str, FuluOrder] = {}
        self.revoked = False
        #: What an order armed with ``accept_then_fail`` says when it fails.
        self.fail_reason = "上游供货失败(out of stock upstream)"
        #: Tests only: encrypt cards under this key instead (a misconfigured secret).
        self.cards_secret: str | None = None
        self._ids = itertools.count(1)

    # -- the gateway ------------------------------------------------------------------------

    def check_request(self, raw: str, body: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """The method and business content of a gateway request (``raw``: its text, ``body``:
        parsed), once its system parameters and signature check out; FuluError as Fulu
        answers otherwise. The signature is checked over the text exactly as sent."""
        for name in ("app_key", "method", "timestamp", "version", "sign", "biz_content"):
            if not isinstance(body.get(name), str):
                raise FuluError(p.BAD_PARAMETER, f"缺少参数{name}")
        if self.revoked or not same_text(body["app_key"], self.app_key):
            raise FuluError(p.BAD_APP_KEY)
        if not verify_signed(raw, self.app_secret):
            raise FuluError(p.BAD_SIGN)
        try:
            stamp = p.parse_fulu_time(body["timestamp"])
        except ValueError:
            raise FuluError(p.BAD_TIMESTAMP) from None
        if abs(stamp - self.now()) > TIMESTAMP_TOLERANCE:
            raise FuluError(p.BAD_TIMESTAMP)
        if body["method"] not in p.METHODS:
            raise FuluError(p.NO_SUCH_METHOD)
        try:
            biz = json.loads(body["biz_content"] or "{}")
        except (ValueError, RecursionError):
            raise FuluError(p.BAD_PARAMETER, "biz_content不是JSON") from None
        if not isinstance(biz, dict):
            raise FuluError(p.BAD_PARAMETER, "biz_content不是对象")
        return body["method"], biz

    def answer(self, code: int, message: str, result: Any = None) -> dict[str, Any]:
        """Fulu's envelope: ``result`` is a JSON string signed with the app secret."""
        text = canonical_json(result) if result is not None else ""
        return {"code": code, "message": message, "result": text,
                "sign": sign_text(text, self.app_secret)}

    def handle(self, method: str, biz: Mapping[str, Any]) -> Any:
        """The ``result`` of a checked call; FuluError for a refusal."""
        with self.lock:
            self.tick()
            if method == p.ORDER_GET:
                return self._order_json(self._order(biz), with_cards=True)
            if method == p.USER_INFO:
                return {"balance": float(self.balance_cents) / 100, "frozen_balance": 0.0,
                        "is_open": 1, "name": "fake-merchant"}
            if method == p.GOODS_LIST:
                return [prod.to_goods() for prod in self._shelf().values()]
            if method in (p.GOODS_INFO, p.STOCK_CHECK):
                prod = self._product(biz.get("product_id"))
                if method == p.STOCK_CHECK:
                    return {"product_id": int(prod.product_id),
                            "stock_status": "充足" if prod.stock > 0 else "断货"}
                return prod.to_goods()
            return self._place(method, biz)

    # -- orders ---------------------------------------------------------------------------

    def _shelf(self) -> dict[str, FuluProduct]:
        """Products with the armed price rise and off-shelf faults applied."""
        off = {s.strip() for s in self.faults.off_shelf.split(",") if s.strip()}
        return {pid: dataclasses.replace(
                    prod, price_cents=prod.price_cents + self.faults.price_rise_cents,
                    on_shelf=prod.on_shelf and pid not in off)
                for pid, prod in self.products.items()}

    def _product(self, raw: object) -> FuluProduct:
        if isinstance(raw, bool) or not isinstance(raw, int | str) or not str(raw).isdigit():
            raise FuluError(p.BAD_PARAMETER, "product_id")
        prod = self._shelf().get(str(raw))
        if prod is None:
            raise FuluError(p.NO_SUCH_PRODUCT)
        return prod

    def _order(self, biz: Mapping[str, Any]) -> FuluOrder:
        number = biz.get("customer_order_no")
        if not isinstance(number, str) or not number:
            raise FuluError(p.BAD_PARAMETER, "customer_order_no")
        order = self.orders.get(number)
        if order is None:
            raise FuluError(p.NO_SUCH_ORDER)
        return order

    def _place(self, method: str, biz: Mapping[str, Any]) -> dict[str, Any]:
        number = biz.get("customer_order_no")
        if not isinstance(number, str) or not 0 < len(number) <= 50:
            raise FuluError(p.BAD_PARAMETER, "customer_order_no")
        if number in self.orders:
            raise FuluError(p.ORDER_EXISTS)
        if self.take_fault("busy"):
            raise FuluError(p.SYSTEM_BUSY)
        prod, account, quantity = self._what(method, biz)
        if not prod.on_shelf:
            raise FuluError(p.OFF_SHELF)
        if prod.stock < quantity:
            raise FuluError(p.OUT_OF_STOCK)
        cost = prod.price_cents * quantity
        if self.take_fault("insufficient_balance") or cost > self.balance_cents:
            raise FuluError(p.INSUFFICIENT_BALANCE)
        self.balance_cents -= cost
        prod.stock -= quantity
        self.products[prod.product_id].stock -= quantity
        order = FuluOrder(f"{self.now():%y%m%d}{next(self._ids):012d}", number, prod, account,
                          quantity, prod.price_cents, self.now(),
                          area=str(biz.get("charge_game_region") or ""),
                          server=str(biz.get("charge_game_srv") or ""),
                          game=str(biz.get("charge_game_name") or ""),
                          role=str(biz.get("charge_game_role") or ""))
        if self.take_fault("accept_then_fail"):
            order.fail_with = self.fail_reason
        self.orders[number] = order
        return self._order_json(order)

    def _what(self, method: str, biz: Mapping[str, Any]) -> tuple[FuluProduct, str, int]:
        """(product, account, quantity) a placement names, checked as Fulu checks them."""
        if method == p.MOBILE_ADD:
            phone, value = biz.get("charge_phone"), biz.get("charge_value")
            if not isinstance(phone, str) or not MOBILE_RE.fullmatch(phone):
                raise FuluError(p.BAD_ACCOUNT)
            try:
                face = p.cents(value)
            except ValueError:
                raise FuluError(p.BAD_PARAMETER, "charge_value") from None
            found = [prod for prod in self._shelf().values()
                     if prod.order_type == p.ORDER_TYPE_MOBILE and prod.face_value_cents == face]
            if not found:
                raise FuluError(p.NO_SUCH_PRODUCT)
            return found[0], phone, 1
        prod = self._product(biz.get("product_id"))
        quantity = biz.get("buy_num")
        if isinstance(quantity, bool) or not isinstance(quantity, int) \
                or not 1 <= quantity <= 10_000:
            raise FuluError(p.BAD_PARAMETER, "buy_num")
        wanted = p.ORDER_TYPE_CARD if method == p.CARD_ADD else p.ORDER_TYPE_DIRECT
        if prod.order_type != wanted:
            raise FuluError(p.BAD_PARAMETER, "商品类型与接口不符")
        account = biz.get("charge_account", "")
        if method == p.DIRECT_ADD and (not isinstance(account, str) or not account.strip()
                                       or len(account) > 128):
            raise FuluError(p.BAD_ACCOUNT)
        return prod, str(account or ""), quantity

    def tick(self) -> None:
        """Move every order along as far as the platform's clock says."""
        now = self.now()
        with self.lock:
            for order in self.orders.values():
                age = (now - order.created_at).total_seconds()
                if order.state == "untreated" and age >= UNTREATED_SECONDS:
                    order.state = "processing"
                if order.state == "processing" and age >= UNTREATED_SECONDS + PROCESSING_SECONDS:
                    self.finish(order)

    def finish(self, order: FuluOrder) -> None:
        """End ``order`` now: its armed failure (refunded), else success (cards issued)."""
        with self.lock:
            if order.state in ("success", "failed"):
                return
            order.finished_at = self.now()
            if order.fail_with is not None:
                order.state, order.description = "failed", order.fail_with
                self.balance_cents += order.cost_cents
                self.products[order.product.product_id].stock += order.buy_num
            else:
                order.state, order.description = "success", "充值成功"
                if order.product.order_type == p.ORDER_TYPE_CARD:
                    order.cards = [(f"{secrets.randbelow(10**16):016d}",
                                    secrets.token_hex(8).upper())
                                   for _ in range(order.buy_num)]
            order.late = self.take_fault("late_callbacks")
            delay = 3600 if order.late else CALLBACK_SCHEDULE[0]
            order.callback_due = order.finished_at + timedelta(seconds=delay)

    def settle(self) -> None:
        """Finish every open order now (tests: the supplier has done its work)."""
        with self.lock:
            for order in self.orders.values():
                self.finish(order)

    def _order_json(self, order: FuluOrder, *, with_cards: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "order_id": order.order_id, "customer_order_no": order.customer_order_no,
            "product_id": int(order.product.product_id), "product_name": order.product.name,
            "charge_account": order.charge_account, "buy_num": order.buy_num,
            "order_type": order.product.order_type,
            "order_price": float(order.unit_cents) / 100, "order_state": order.state,
            "create_time": p.fulu_time(order.created_at),
            "finish_time": p.fulu_time(order.finished_at) if order.finished_at else "",
            "area": order.area, "server": order.server, "type": "",
            "operator_serial_number": "", "recharge_description": order.description,
        }
        if with_cards and order.state == "success" and order.cards:
            data["cards"] = self._cards(order)
        return data

    def _cards(self, order: FuluOrder) -> list[dict[str, Any]]:
        key = self.cards_secret or self.app_secret
        return [{"card_number": encrypt_card(number, key),
                 "card_pwd": encrypt_card(code, key),
                 "card_type": 0, "card_deadline": ""} for number, code in order.cards]

    # -- callbacks ------------------------------------------------------------------------

    def callback_body(self, order: FuluOrder) -> bytes:
        """The signed callback Fulu posts for a finished order (fields of a real captured
        callback; ``cards`` on card orders is an assumption of this fake, ⚠)."""
        data: dict[str, Any] = {
            "order_id": order.order_id,
            "charge_finish_time": p.fulu_time(order.finished_at or self.now()),
            "customer_order_no": order.customer_order_no, "order_status": order.state,
            "recharge_description": order.description,
            "product_id": order.product.product_id, "price": p.yuan(order.unit_cents),
            "buy_num": str(order.buy_num), "operator_serial_number": "",
        }
        if order.cards and order.state == "success":
            data["cards"] = self._cards(order)
        data["sign"] = sign_params(data, self.app_secret)
        return canonical_json(data).encode("utf-8")

    def callbacks_due(self) -> list[FuluOrder]:
        with self.lock:
            self.tick()
            now = self.now()
            return [o for o in self.orders.values()
                    if o.callback_due is not None and not o.callback_acked
                    and o.callback_due <= now]

    def record_callback(self, order: FuluOrder, acked: bool) -> None:
        """One attempt made: acknowledged, or the next one scheduled (none after the last)."""
        with self.lock:
            order.callback_attempts += 1
            if acked:
                order.callback_acked = True
                return
            if order.callback_attempts >= len(CALLBACK_SCHEDULE) or order.finished_at is None:
                order.callback_due = None  # Fulu gives up: the merchant must query
                return
            base = order.finished_at + timedelta(seconds=3600 if order.late else 0)
            order.callback_due = base + timedelta(
                seconds=CALLBACK_SCHEDULE[order.callback_attempts])

    # -- what FakeBase asks of a fake -------------------------------------------------------

    def catalog(self) -> Sequence[CatalogItem]:
        return [CatalogItem(prod.product_id, "product_id", prod.name,
                            f"{prod.price_cents / 100:.2f}")
                for prod in self._shelf().values()]

    def create_paid_order(self, request: OrderRequest) -> str:
        raise ValueError("a supplier takes no buyers' orders: the robot places them")

    def expire_tokens(self) -> None:
        with self.lock:
            self.revoked = True

    def charged_cents(self) -> int:
        """What Fulu holds for our orders (charged and not refunded)."""
        with self.lock:
            return sum(o.cost_cents for o in self.orders.values() if o.state != "failed")

    def platform_snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "balance_cents": self.balance_cents, "callback_url": self.callback_url,
                "revoked": self.revoked,
                "orders": {no: {"order_id": o.order_id, "product_id": o.product.product_id,
                                "charge_account": o.charge_account, "buy_num": o.buy_num,
                                "cost_cents": o.cost_cents, "state": o.state,
                                "callback_attempts": o.callback_attempts,
                                "callback_acked": o.callback_acked}
                           for no, o in self.orders.items()},
                "successful_orders": sum(o.state == "success" for o in self.orders.values()),
            }

    def call_api(self, path: str, payload: Mapping[str, Any]) -> str:
        method = payload.get("method")
        return method if isinstance(method, str) else path

    def call_outcome(self, status: int, document: Any) -> str:
        if status != 200 or not isinstance(document, Mapping):
            return f"http {status}"
        code = document.get("code")
        return "ok" if code == p.OK else f"error {code} {document.get('message')}"

    def banner(self, base_url: str) -> list[str]:
        lines = ["products this fake sells (map them as a supplier product):"]
        lines += [f"  {item.sku}  {item.title}  {item.price} yuan" for item in self.catalog()]
        lines += [f"state: curl {base_url}/__fake__/state",
                  f"calls received: curl {base_url}/__fake__/calls",
                  f"faults: curl -X POST {base_url}/__fake__/faults "
                  "-d '{\"accept_then_fail\": 1}'",
                  f"finish open orders now: curl -X POST {base_url}/__fake__/settle",
                  f"send due callbacks now: curl -X POST {base_url}/__fake__/callbacks/deliver"]
        return lines
