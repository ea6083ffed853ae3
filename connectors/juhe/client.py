"""The Juhe client: Juhe's answers mapped to the supplier protocol's outcomes.

Placing is made idempotent on our key, which is Juhe's ``orderid``: before anything that
could refuse (the price check, Juhe's own refusals), the client asks Juhe whether an order
under the key exists already (a placement whose answer was lost, a callback that came
first), and answers with it if so. So a "failed" is only ever reported for a key Juhe
holds no order under, and nothing is placed twice. Transport trouble, 5xx answers, answers
we cannot read and error 10014 are ``unknown`` (Juhe: "query, never treat as failed").

Juhe's callback signs only the two order numbers, not the state, so a captured callback
replayed with another ``sta`` would verify: the client reads a callback as "this order has
news" (``unknown``, query it) and never as a success or a failure.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import parse_qsl

import httpx

from connectors.errors import AuthError, PushRejected, Unavailable
from connectors.juhe import protocol as p
from connectors.log import get_logger
from connectors.supplier import (
    Balance,
    CallbackResult,
    NoSuchPurchase,
    Outcome,
    Product,
    ProductKind,
    Purchase,
    PurchaseRequest,
    check_key,
)

log = get_logger(__name__)

#: What the callback's answer must be for Juhe to stop retrying (see the report: assumed).
CALLBACK_REPLY = b"success"


class _NoAnswer(Exception):
    """No readable answer from Juhe (timeout, connection, 5xx, not JSON): the call's effect
    is unknown. Carries a short reason, never a parameter."""


class JuheSupplier:
    """One merchant account (OpenID + the mobile top-up key) with Juhe."""

    supplier: ClassVar[str] = "juhe"

    def __init__(self, *, openid: str, key: str, base_url: str = p.DEFAULT_BASE_URL,
                 face_values: Sequence[int] = p.FACE_VALUES, probe_phone: str = "13800138000",
                 timeout: float = 10.0, transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._openid = openid
        self._key = key
        self._base_url = base_url.rstrip("/")
        self._face_values = tuple(face_values)
        self._probe_phone = probe_phone
        self._timeout = timeout
        self._transport = transport
        self._clock = clock

    def __repr__(self) -> str:
        return f"JuheSupplier(base_url={self._base_url!r})"

    # -- transport ------------------------------------------------------------------------

    async def _call(self, path: str, params: Mapping[str, str]) -> tuple[int, str, Any]:
        """(error_code, reason, result) of one call (form POST); _NoAnswer if unreadable."""
        try:
            async with httpx.AsyncClient(timeout=self._timeout,
                                         transport=self._transport) as client:
                response = await client.post(self._base_url + path, data=dict(params))
        except httpx.TimeoutException:
            raise _NoAnswer("timeout") from None
        except httpx.HTTPError as exc:
            raise _NoAnswer(f"network error ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise _NoAnswer(f"HTTP {response.status_code}")
        try:
            document = response.json()
            code = int(document["error_code"])
        except (ValueError, KeyError, TypeError):
            raise _NoAnswer("answer not readable") from None
        return code, str(document.get("reason") or "")[:200], document.get("result")

    # -- placing --------------------------------------------------------------------------

    def _placeable(self, request: PurchaseRequest) -> Purchase | tuple[int, str]:
        """``(face value, phone)`` of a request Juhe can take, else ``failed`` (nothing sent)."""
        key = request.key
        face = p.face_value(request.product_id)
        if face is None:
            offered = ", ".join(map(p.product_id, self._face_values))
            return _failed(key, f"Juhe sells no product {request.product_id!r} "
                                f"(mobile top-ups: {offered})")
        if request.quantity != 1:
            return _failed(key, "a Juhe mobile top-up is one face value per order (quantity 1)")
        if request.account is None or not p.PHONE.fullmatch(request.account):
            return _failed(key, "a mobile top-up needs the buyer's 11-digit mobile number")
        if not p.ORDER_ID.fullmatch(key):
            return _failed(key, "Juhe takes order numbers of 8 to 32 letters and digits; "
                                "this key is not one (nothing was sent)")
        return face, request.account

    async def place(self, request: PurchaseRequest) -> Purchase:
        key = request.key
        checked = self._placeable(request)
        if isinstance(checked, Purchase):
            return checked
        face, phone = checked
        existing = await self._existing(key)
        if existing is not None:
            return existing
        refusal = await self._price_refusal(key, phone, face, request.max_unit_price_cents)
        if refusal is not None:
            return refusal
        params = {"key": self._key, "phoneno": phone, "cardnum": str(face), "orderid": key,
                  "sign": p.order_sign(self._openid, self._key, phone, str(face), key)}
        try:
            code, reason, result = await self._call(p.ONLINEORDER, params)
        except _NoAnswer as exc:
            return _unknown(key, f"{exc} on placing: query by the key")
        if code == p.OK:
            return self._order_purchase(key, result, cost_field="ordercash")
        if code == p.DUPLICATE_ORDER:
            # Accepted earlier (a retried request arrived first): read it back.
            try:
                return await self.query(key)
            except NoSuchPurchase:
                return _unknown(key, "Juhe says the order number exists but cannot find it yet")
        if code in p.AUTH_CODES:
            raise AuthError(f"Juhe refused our credentials (error {code})")
        if code in p.REFUSAL_CODES:
            return _failed(key, f"Juhe refused the top-up: {code} {reason}")
        # 10014 system error, maintenance, anything not known to be a refusal.
        return _unknown(key, f"Juhe answered {code} {reason}: query by the key")

    async def _existing(self, key: str) -> Purchase | None:
        """The order under ``key`` if Juhe holds one (an unknown purchase if Juhe cannot say);
        None when it holds none."""
        try:
            return await self.query(key)
        except NoSuchPurchase:
            return None

    async def _price_refusal(self, key: str, phone: str, face: int,
                             limit: int | None) -> Purchase | None:
        """``failed`` if Juhe will not top this number up with this face value, or only
        above ``limit``; ``unknown`` if it cannot say; None to go ahead."""
        try:
            code, reason, result = await self._call(
                p.TELQUERY, {"key": self._key, "phoneno": phone, "cardnum": str(face)})
        except _NoAnswer as exc:
            return _unknown(key, f"{exc} on the price check (nothing placed): try again")
        if code in p.AUTH_CODES:
            raise AuthError(f"Juhe refused our credentials (error {code})")
        if code in (p.NOT_ALLOWED, p.BAD_PHONE, p.BAD_AMOUNT):
            return _failed(key, f"Juhe cannot top up this number: {code} {reason}")
        if code != p.OK:
            return _unknown(key, f"Juhe answered {code} {reason} on the price check "
                                 "(nothing placed): try again")
        try:
            price = p.yuan_to_cents(result["inprice"])
        except (KeyError, TypeError, ValueError):
            return _unknown(key, "Juhe's price answer is unreadable (nothing placed)")
        if limit is not None and price > limit:
            return _failed(key, f"Juhe's price {price / 100:.2f} yuan is above the maximum "
                                f"{limit / 100:.2f} yuan")
        return None

    def _order_purchase(self, key: str, result: Any, *, cost_field: str) -> Purchase:
        if not isinstance(result, Mapping):
            return _unknown(key, "Juhe's order answer has no result: query by the key")
        state = str(result.get("game_state", ""))
        order_id = str(result["sporder_id"]) if result.get("sporder_id") else None
        try:
            cost = p.yuan_to_cents(result[cost_field]) if result.get(cost_field) else None
        except ValueError:
            cost = None
        if state == p.GAME_SUCCESS:
            return Purchase(key, Outcome.SUCCEEDED, order_id, cost_cents=cost)
        if state == p.GAME_FAILED:
            why = str(result.get("err_msg") or "").strip()[:200] or "no reason given"
            return Purchase(key, Outcome.FAILED, order_id, reason=f"Juhe: top-up failed: {why}")
        if state == p.GAME_PROCESSING:
            return Purchase(key, Outcome.PROCESSING, order_id, cost_cents=cost)
        return _unknown(key, f"Juhe reported an unknown state {state[:10]!r}: query again")

    # -- the rest of the protocol ----------------------------------------------------------

    async def query(self, key: str) -> Purchase:
        check_key(key)
        try:
            code, reason, result = await self._call(p.ORDERSTA,
                                                    {"key": self._key, "orderid": key})
        except _NoAnswer as exc:
            return _unknown(key, f"{exc} on the query: query again")
        if code == p.OK:
            return self._order_purchase(key, result, cost_field="uordercash")
        if code == p.ORDER_NOT_FOUND:
            raise NoSuchPurchase(f"Juhe holds no order under key {key}")
        if code in p.AUTH_CODES:
            raise AuthError(f"Juhe refused our credentials (error {code})")
        return _unknown(key, f"Juhe answered {code} {reason} on the query: query again")

    def parse_callback(self, headers: Mapping[str, str], body: bytes,
                       now: datetime) -> CallbackResult:
        try:
            fields = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True,
                                    strict_parsing=True, max_num_fields=20))
        except (UnicodeDecodeError, ValueError):
            raise PushRejected("Juhe callback is not a form") from None
        sporder_id, orderid, sign = (fields.get("sporder_id"), fields.get("orderid"),
                                     fields.get("sign"))
        if not sporder_id or not orderid or not sign or fields.get("sta") is None:
            raise PushRejected("Juhe callback lacks sporder_id, orderid, sta or sign")
        expected = p.callback_sign(self._key, sporder_id, orderid)
        if not hmac.compare_digest(expected.encode(), sign.strip().lower().encode()):
            raise PushRejected("Juhe callback signature does not match")
        if not p.ORDER_ID.fullmatch(orderid) or len(sporder_id) > 64:
            raise PushRejected("Juhe callback names an order number we never use")
        sta = fields["sta"][:4]
        # The signature does not cover ``sta``: the news is confirmed by a query.
        purchase = Purchase(orderid, Outcome.UNKNOWN, sporder_id,
                            reason=f"Juhe callback (sta {sta!r}, unsigned): confirm by a query")
        return CallbackResult(purchase, reply_body=CALLBACK_REPLY)

    async def balance(self) -> Balance:
        stamp = str(int(self._clock()))
        params = {"key": self._key, "timestamp": stamp,
                  "sign": p.balance_sign(self._openid, self._key, stamp)}
        try:
            code, reason, result = await self._call(p.YUE, params)
        except _NoAnswer as exc:
            raise Unavailable(f"Juhe balance: {exc}") from None
        if code in p.AUTH_CODES:
            raise AuthError(f"Juhe refused our credentials (error {code})")
        if code != p.OK or not isinstance(result, Mapping):
            raise Unavailable(f"Juhe balance: {code} {reason}")
        try:
            return Balance(p.yuan_to_cents(result["money"]))
        except (KeyError, ValueError):
            raise Unavailable("Juhe balance unreadable") from None

    async def catalogue(self) -> Sequence[Product]:
        products = []
        for face in self._face_values:
            try:
                code, reason, result = await self._call(
                    p.TELQUERY, {"key": self._key, "phoneno": self._probe_phone,
                                 "cardnum": str(face)})
            except _NoAnswer as exc:
                raise Unavailable(f"Juhe price list: {exc}") from None
            if code in p.AUTH_CODES:
                raise AuthError(f"Juhe refused our credentials (error {code})")
            name = f"话费{face}元"
            if code == p.OK and isinstance(result, Mapping):
                try:
                    price = p.yuan_to_cents(result["inprice"])
                except (KeyError, ValueError):
                    raise Unavailable("Juhe price list unreadable") from None
                products.append(Product(p.product_id(face), str(result.get("cardname") or name),
                                        ProductKind.TOPUP, price, face * 100))
            elif code == p.NOT_ALLOWED:
                products.append(Product(p.product_id(face), name, ProductKind.TOPUP,
                                        face * 100, face * 100, available=False))
            else:
                raise Unavailable(f"Juhe price list: {code} {reason}")
        return tuple(products)

    async def aclose(self) -> None:
        return None


def _failed(key: str, reason: str) -> Purchase:
    log.info("supplier_refused", supplier="juhe", key=key, reason=reason)
    return Purchase(key, Outcome.FAILED, reason=reason)


def _unknown(key: str, reason: str) -> Purchase:
    log.warning("supplier_outcome_unknown", supplier="juhe", key=key, reason=reason)
    return Purchase(key, Outcome.UNKNOWN, reason=reason)
