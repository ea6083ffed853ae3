"""The Fulu (福禄开放平台) supplier client: every answer mapped to the supplier protocol.

One gateway, one signed JSON body per call (:mod:`connectors.fulu.sign`). The rules that keep
a purchase from being lost or made twice:

* a timeout, a transport error, a 5xx page, "system busy", an unreadable or wrongly signed
  answer, or a code we do not know: ``unknown`` — the caller queries, never assumes failure;
* 3000 "外部订单号已存在": the order was accepted earlier — it is read back by a query, and a
  different purchase under the same number is :class:`KeyReused` (nothing bought);
* a definite refusal (off the shelf, out of stock, balance, price above the maximum, a bad
  account): ``failed`` only after a query by the key confirms Fulu holds no order under it
  (a refusal may answer a retry of an order that did go through);
* card codes arrive as Base64 of AES-256-ECB under the app secret: decrypted here and handed
  over only as :class:`connectors.supplier.CardSecret` — never logged, never in an error.

Before placing, the product is read (``fulu.goods.info.get``): its type picks the method
(卡密 → ``fulu.order.card.add``, 直充 → ``fulu.order.direct.add``, 话费 →
``fulu.order.mobile.add`` with the product's face value), and its price is checked against
the merchant's maximum.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import httpx

from connectors.common.http import LoopClient
from connectors.errors import AuthError, BadPlatformData, PushRejected, Unavailable
from connectors.fulu import protocol as p
from connectors.fulu.config import FuluConfig
from connectors.fulu.sign import (
    CardCipherError,
    canonical_json,
    decrypt_card,
    sign_params,
    sign_text,
    verify_signed,
)
from connectors.log import get_logger
from connectors.supplier import (
    Balance,
    CallbackResult,
    Card,
    KeyReused,
    NoSuchPurchase,
    Outcome,
    Product,
    ProductKind,
    Purchase,
    PurchaseRequest,
    check_key,
)

log = get_logger(__name__)

STATE_OUTCOMES = {"untreated": Outcome.ACCEPTED, "processing": Outcome.PROCESSING,
                  "success": Outcome.SUCCEEDED, "failed": Outcome.FAILED}
#: A callback more than this far in the future is refused.
CALLBACK_FUTURE = timedelta(minutes=10)


class _NoAnswer(Exception):
    """No usable answer (transport trouble, 5xx, unreadable or wrongly signed)."""


@dataclass(frozen=True)
class _Answer:
    code: int
    message: str
    result: Any


@dataclass(frozen=True)
class _Goods:
    product_id: str
    name: str
    kind: str  # 卡密 / 直充 / 话费
    price_cents: int
    face_value_cents: int
    available: bool


def _goods(data: Any) -> _Goods:
    if not isinstance(data, Mapping):
        raise ValueError("a product is an object")
    return _Goods(str(int(data["product_id"])), str(data.get("product_name", "")),
                  str(data.get("product_type", "")), p.cents(data["purchase_price"]),
                  p.cents(data.get("face_value", 0)),
                  data.get("sales_status") != "下架" and data.get("stock_status") != "断货")


class FuluSupplier:
    """A Fulu merchant account (see the module)."""

    supplier: ClassVar[str] = "fulu"

    def __init__(self, config: FuluConfig, *, transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.config = config
        self._secret = config.app_secret.get_secret_value()
        self._clock = clock or (lambda: datetime.now(UTC))
        self._http = LoopClient(platform="Fulu", timeout=config.timeout_seconds,
                                transport=transport)

    # -- the wire -------------------------------------------------------------------------

    def _body(self, method: str, biz: Mapping[str, Any]) -> bytes:
        params: dict[str, Any] = {
            "app_key": self.config.app_key, "method": method,
            "timestamp": p.fulu_time(self._clock()), "version": p.VERSION, "format": "json",
            "charset": "utf-8", "sign_type": "md5", "app_auth_token": "",
            "biz_content": canonical_json(dict(biz)),
        }
        params["sign"] = sign_params(params, self._secret)
        return canonical_json(params).encode("utf-8")

    async def _call(self, method: str, biz: Mapping[str, Any]) -> _Answer:
        """One gateway call; _NoAnswer when there is no answer we can trust."""
        try:
            response = await self._http.get().post(
                self.config.gateway, content=self._body(method, biz),
                headers={"Content-Type": "application/json; charset=utf-8"})
        except httpx.HTTPError as exc:  # the message may name the URL: keep the type only
            raise _NoAnswer(f"{method}: no answer ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise _NoAnswer(f"{method}: HTTP {response.status_code}")
        try:
            envelope = response.json()
            code, message = int(envelope["code"]), str(envelope.get("message") or "")
            text = envelope.get("result") or ""
            if not isinstance(text, str):
                raise TypeError("result is not a string")
        except (ValueError, TypeError, KeyError):
            raise _NoAnswer(f"{method}: unreadable answer") from None
        if code != p.OK:
            return _Answer(code, message[:200], None)
        sent = envelope.get("sign")
        if not isinstance(sent, str) or sent.lower() != sign_text(text, self._secret):
            raise _NoAnswer(f"{method}: the answer's signature does not match")
        try:
            return _Answer(code, message[:200], json.loads(text) if text else None)
        except (ValueError, RecursionError):
            raise _NoAnswer(f"{method}: unreadable result") from None

    def _unknown(self, key: str, why: str) -> Purchase:
        log.warning("supplier_outcome_unknown", supplier=self.supplier, key=key, reason=why)
        return Purchase(key, Outcome.UNKNOWN, reason=f"{why}: query by the key")

    def _auth(self, answer: _Answer) -> None:
        if answer.code in p.AUTH_REFUSALS:
            raise AuthError(f"Fulu refused our credentials ({answer.code} {answer.message})")

    # -- reading orders -------------------------------------------------------------------

    def _purchase(self, key: str, data: Any) -> Purchase:
        """A purchase from an order result or callback (ValueError/KeyError/TypeError or
        CardCipherError when it is out of shape; messages never carry a card)."""
        if not isinstance(data, Mapping) or data.get("customer_order_no") != key:
            raise ValueError("the order is not ours")
        state = data.get("order_state", data.get("order_status"))
        outcome = STATE_OUTCOMES[str(state)]
        quantity = int(data["buy_num"])
        unit = p.cents(data.get("order_price", data.get("price")))
        cards = tuple(Card(code=decrypt_card(str(c["card_pwd"]), self._secret),
                           number=decrypt_card(str(c["card_number"]), self._secret)
                           if c.get("card_number") else None)
                      for c in data.get("cards") or ())
        reason = str(data.get("recharge_description") or "")[:200] or None
        if outcome is Outcome.FAILED:
            reason = f"Fulu failed the order: {reason or 'no reason given'}"
        elif outcome is Outcome.SUCCEEDED:
            reason = None
            if int(data.get("order_type") or 0) == p.ORDER_TYPE_CARD and not cards:
                # Fulu hands card codes over through the query only: not done for us yet.
                outcome, reason = Outcome.PROCESSING, "succeeded at Fulu: cards to be read"
        else:
            reason = None
        return Purchase(key, outcome, supplier_order_id=str(data["order_id"]), cards=cards,
                        reason=reason, cost_cents=unit * quantity)

    def _read(self, key: str, data: Any) -> Purchase:
        try:
            return self._purchase(key, data)
        except CardCipherError as exc:
            return self._unknown(key, f"card codes unreadable ({exc})")
        except (ValueError, KeyError, TypeError) as exc:
            return self._unknown(key, f"order unreadable ({type(exc).__name__})")

    async def query(self, key: str) -> Purchase:
        check_key(key)
        try:
            answer = await self._call(p.ORDER_GET, {"customer_order_no": key})
        except _NoAnswer as exc:
            return self._unknown(key, str(exc))
        self._auth(answer)
        if answer.code == p.NO_SUCH_ORDER:
            raise NoSuchPurchase(f"Fulu holds no order under key {key}")
        if answer.code != p.OK:
            return self._unknown(key, f"Fulu answered {answer.code} {answer.message}")
        return self._read(key, answer.result)

    # -- placing --------------------------------------------------------------------------

    async def place(self, request: PurchaseRequest) -> Purchase:
        key = request.key
        try:
            info = await self._call(p.GOODS_INFO, {"product_id": _product_number(request)})
        except _NoAnswer as exc:
            return self._unknown(key, str(exc))
        except ValueError:
            return await self._refused(request, "Fulu numbers its products: "
                                                f"{request.product_id!r} is not one")
        self._auth(info)
        if info.code != p.OK:
            if info.code in p.DEFINITE_REFUSALS:
                return await self._refused(request, f"{info.code} {info.message}")
            return self._unknown(key, f"Fulu answered {info.code} {info.message}")
        try:
            goods = _goods(info.result)
        except (ValueError, KeyError, TypeError):
            return self._unknown(key, "product unreadable")
        refusal = _refusal(request, goods)
        if refusal is not None:
            return await self._refused(request, refusal)
        method, biz = _order_call(request, goods)
        try:
            answer = await self._call(method, biz)
        except _NoAnswer as exc:
            return self._unknown(key, str(exc))
        self._auth(answer)
        if answer.code == p.ORDER_EXISTS:
            return await self._existing(request)
        if answer.code in p.DEFINITE_REFUSALS:
            return await self._refused(request, f"{answer.code} {answer.message}")
        if answer.code != p.OK:
            return self._unknown(key, f"Fulu answered {answer.code} {answer.message}")
        placed = self._read(key, answer.result)
        log.info("supplier_order_placed", supplier=self.supplier, key=key,
                 outcome=placed.outcome.value)
        if placed.outcome is Outcome.PROCESSING and goods.kind == "卡密":
            return await self.query(key)  # succeeded already: its cards come by query
        return placed

    async def _existing(self, request: PurchaseRequest) -> Purchase:
        """"Order number already exists": accepted earlier. Read it back; another purchase
        under our number is refused, never bought again and never reported failed."""
        try:
            answer = await self._call(p.ORDER_GET, {"customer_order_no": request.key})
        except _NoAnswer as exc:
            return self._unknown(request.key, f"order exists, not readable yet ({exc})")
        self._auth(answer)
        if answer.code != p.OK:
            return self._unknown(request.key, "order exists, not readable yet "
                                              f"({answer.code} {answer.message})")
        data = answer.result
        if isinstance(data, Mapping) and not _same_purchase(data, request):
            raise KeyReused(f"key {request.key} was used for a different Fulu order")
        return self._read(request.key, data)

    async def _refused(self, request: PurchaseRequest, reason: str) -> Purchase:
        """A definite refusal, confirmed: failed only if Fulu holds nothing under the key."""
        try:
            return await self._existing_or_none(request) or Purchase(
                request.key, Outcome.FAILED, reason=f"Fulu refused: {reason}")
        except _NoAnswer as exc:
            return self._unknown(request.key, f"refused ({reason}), unconfirmed ({exc})")

    async def _existing_or_none(self, request: PurchaseRequest) -> Purchase | None:
        answer = await self._call(p.ORDER_GET, {"customer_order_no": request.key})
        self._auth(answer)
        if answer.code == p.NO_SUCH_ORDER:
            return None
        if answer.code != p.OK:
            raise _NoAnswer(f"{answer.code} {answer.message}")
        if isinstance(answer.result, Mapping) and not _same_purchase(answer.result, request):
            raise KeyReused(f"key {request.key} was used for a different Fulu order")
        return self._read(request.key, answer.result)

    # -- callbacks ------------------------------------------------------------------------

    def parse_callback(self, headers: Mapping[str, str], body: bytes,
                       now: datetime) -> CallbackResult:
        try:
            raw = body.decode("utf-8")
            data = json.loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise PushRejected("Fulu callback is not JSON") from None
        if not isinstance(data, dict):
            raise PushRejected("Fulu callback is not an object")
        if not verify_signed(raw, self._secret):
            raise PushRejected("Fulu callback signature does not match")
        try:
            finished = p.parse_fulu_time(str(data["charge_finish_time"]))
            key = check_key(data["customer_order_no"])
        except (KeyError, ValueError):
            raise PushRejected("Fulu callback without a finish time or order number") from None
        age = now - finished
        if age > timedelta(seconds=self.config.callback_max_age_seconds) \
                or -age > CALLBACK_FUTURE:
            raise PushRejected("Fulu callback too old (or from the future)")
        purchase = self._read(key, data)
        if purchase.outcome is Outcome.UNKNOWN:
            raise PushRejected("Fulu callback unreadable")
        return CallbackResult(purchase)

    # -- buying nothing -------------------------------------------------------------------

    async def _plain(self, method: str, biz: Mapping[str, Any]) -> Any:
        try:
            answer = await self._call(method, biz)
        except _NoAnswer as exc:
            raise Unavailable(str(exc)) from None
        self._auth(answer)
        if answer.code != p.OK:
            raise Unavailable(f"{method}: Fulu answered {answer.code} {answer.message}")
        return answer.result

    async def balance(self) -> Balance:
        result = await self._plain(p.USER_INFO, {})
        try:
            return Balance(p.cents(result["balance"]))
        except (KeyError, TypeError, ValueError):
            raise BadPlatformData("Fulu balance unreadable") from None

    async def catalogue(self) -> Sequence[Product]:
        result = await self._plain(p.GOODS_LIST, {})
        try:
            return tuple(_product(_goods(item)) for item in result)
        except (KeyError, TypeError, ValueError):
            raise BadPlatformData("Fulu catalogue unreadable") from None

    async def aclose(self) -> None:
        await self._http.aclose()


def _product_number(request: PurchaseRequest) -> int:
    if not request.product_id.isdigit() or len(request.product_id) > 18:
        raise ValueError("not a Fulu product number")
    return int(request.product_id)


def _product(goods: _Goods) -> Product:
    kind = ProductKind.CARD if goods.kind == "卡密" else ProductKind.TOPUP
    return Product(goods.product_id, goods.name, kind, goods.price_cents,
                   goods.face_value_cents or None, available=goods.available)


def _refusal(request: PurchaseRequest, goods: _Goods) -> str | None:
    """Why this purchase must not be placed (checked before buying), or None."""
    if not goods.available:
        return "the product is off the shelf or out of stock"
    limit = request.max_unit_price_cents
    if limit is not None and goods.price_cents > limit:
        return (f"price {goods.price_cents / 100:.2f} above the maximum "
                f"{limit / 100:.2f} yuan")
    if goods.kind != "卡密" and not request.account:
        return "a top-up needs the buyer's account"
    if goods.kind == "话费" and request.quantity != 1:
        return "a mobile top-up is one unit per order"
    if goods.kind not in ("卡密", "直充", "话费"):
        return f"product type {goods.kind!r} cannot be bought through this plugin"
    return None


def _order_call(request: PurchaseRequest, goods: _Goods) -> tuple[str, dict[str, Any]]:
    """The method and business content placing ``request`` for ``goods``."""
    if goods.kind == "卡密":
        return p.CARD_ADD, {"customer_order_no": request.key,
                            "product_id": int(goods.product_id), "buy_num": request.quantity}
    if goods.kind == "话费":
        return p.MOBILE_ADD, {"charge_phone": request.account,
                              "charge_value": goods.face_value_cents / 100,
                              "customer_order_no": request.key}
    biz: dict[str, Any] = {"product_id": int(goods.product_id),
                           "customer_order_no": request.key,
                           "charge_account": request.account, "buy_num": request.quantity}
    for name, value in (("charge_game_region", request.area),
                        ("charge_game_srv", request.server),
                        ("charge_game_name", request.game), ("charge_game_role", request.role)):
        if value:
            biz[name] = value
    return p.DIRECT_ADD, biz


def _same_purchase(data: Mapping[str, Any], request: PurchaseRequest) -> bool:
    """Whether the order Fulu holds under our number is this purchase."""
    try:
        return (str(int(data["product_id"])) == request.product_id
                and int(data["buy_num"]) == request.quantity
                and str(data.get("charge_account") or "") == (request.account or ""))
    except (KeyError, TypeError, ValueError):
        return False
