"""The in-memory supplier: the supplier protocol kept in a process, for tests and trials.

Like the in-memory channel (:mod:`connectors.memory`), it is a real plugin (entry point
``memory`` in ``robot.suppliers``) with a backend standing in for the supplier's servers and
a client that speaks to it through answers shaped as a supplier's are (a status code and a
body), so the client maps answers exactly as a real supplier's client must. Faults are armed
on the backend: the answer lost after the order was placed, the request lost before it
arrived, "system busy", an order accepted then failed, and a "duplicate order" answer.

The backend charges an order when it accepts it and refunds it when the order fails, as the
suppliers we know do. Callbacks are signed with HMAC-SHA256 over the body. The test callback
secret is public on purpose; nothing here may be used with real money.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, SecretStr

from connectors.base import ShopContext
from connectors.config import PlatformConfig, Secret
from connectors.errors import AuthError, BadPlatformData, ConfigError, PushRejected
from connectors.log import get_logger
from connectors.supplier import (
    Balance,
    CallbackResult,
    Card,
    CardSecret,
    KeyReused,
    NoSuchPurchase,
    Outcome,
    Product,
    ProductKind,
    Purchase,
    PurchaseRequest,
    check_key,
)

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from connectors.testing.harness import SupplierHarness

log = get_logger(__name__)

#: The test callback secret (public on purpose: the in-memory supplier handles no money).
TEST_CALLBACK_SECRET = "memsupplier-test-secret"  # noqa: S105 - a public test value
#: Seconds a callback stays acceptable after it was signed.
CALLBACK_MAX_AGE = 300.0
SIGN_HEADER = "X-Memsupplier-Sign"
TIME_HEADER = "X-Memsupplier-Time"

DEFAULT_PRODUCTS = (
    Product("card-youku-30", "优酷VIP月卡", ProductKind.CARD, price_cents=1500,
            face_value_cents=3000),
    Product("topup-mobile-50", "话费50元", ProductKind.TOPUP, price_cents=4950,
            face_value_cents=5000),
    Product("topup-game-60", "游戏点券60元", ProductKind.TOPUP, price_cents=5800,
            face_value_cents=6000, needs_area=True, needs_server=True),
)

Fault = Literal["lose_answer", "lose_request", "busy", "accept_then_fail", "duplicate"]


@dataclass
class _Order:
    request: PurchaseRequest
    order_id: str
    state: Outcome
    cost_cents: int
    fail_reason: str | None = None  # armed accept-then-fail: the reason it will fail with
    cards: list[tuple[str, str]] = field(default_factory=list)  # (number, code) plaintext
    reason: str | None = None


class MemorySupplierBackend:
    """The supplier's side: catalogue, balance, orders by key, faults. Thread-safe."""

    _named: ClassVar[dict[str, MemorySupplierBackend]] = {}
    _named_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, *, balance_cents: int = 1_000_000,
                 products: Sequence[Product] = DEFAULT_PRODUCTS,
                 callback_secret: str = TEST_CALLBACK_SECRET) -> None:
        self.lock = threading.Lock()
        self.balance_cents = balance_cents
        self.products = {p.product_id: p for p in products}
        self.callback_secret = callback_secret
        self.orders: dict[str, _Order] = {}
        self.faults: deque[tuple[Fault, str]] = deque()
        self.revoked = False
        self._ids = itertools.count(1)

    @classmethod
    def named(cls, name: str) -> MemorySupplierBackend:
        """The process-wide backend called ``name`` (made on first use)."""
        with cls._named_lock:
            return cls._named.setdefault(name, cls())

    def arm(self, fault: Fault, reason: str = "supplier out of stock") -> None:
        """The next placement meets ``fault`` (``reason``: why an accepted order fails)."""
        with self.lock:
            self.faults.append((fault, reason))

    # -- the supplier's API (answers shaped as a supplier's: code and body) -------------------

    def submit(self, request: PurchaseRequest) -> dict[str, Any]:
        """Place ``request``; an answer ``{"code": ..., ...}``. Raises TimeoutError for a lost
        request or answer, as the network would."""
        with self.lock:
            fault, fail_reason = self.faults.popleft() if self.faults else (None, "")
            if fault == "lose_request":
                raise TimeoutError("the request never arrived")
            if fault == "busy":
                return {"code": "SYSTEM_BUSY", "message": "系统繁忙，请稍后再试"}
            if self.revoked:
                return {"code": "AUTH", "message": "invalid app key or signature"}
            existing = self.orders.get(request.key)
            if existing is not None:
                return {"code": "DUPLICATE_ORDER", "message": "订单号重复"}
            answer = self._accept(request, fail_reason if fault == "accept_then_fail" else None)
            if fault == "lose_answer":
                raise TimeoutError("the answer was lost")
            if fault == "duplicate":
                return {"code": "DUPLICATE_ORDER", "message": "订单号重复"}
            return answer

    def _accept(self, request: PurchaseRequest, fail_reason: str | None) -> dict[str, Any]:
        product = self.products.get(request.product_id)
        refusal = self._refusal(request, product)
        if refusal is not None or product is None:
            return {"code": "REFUSED", "message": refusal or "no such product"}
        cost = product.price_cents * request.quantity
        if cost > self.balance_cents:
            return {"code": "REFUSED", "message": "insufficient balance"}
        self.balance_cents -= cost
        order = _Order(request, f"MS{next(self._ids):08d}", Outcome.ACCEPTED, cost,
                       fail_reason=fail_reason)
        self.orders[request.key] = order
        return {"code": "OK", "order": self._order_json(order)}

    @staticmethod
    def _refusal(request: PurchaseRequest, product: Product | None) -> str | None:
        if product is None or not product.available:
            return "no such product"
        limit = request.max_unit_price_cents
        if limit is not None and product.price_cents > limit:
            return "price above the maximum"
        if product.kind is ProductKind.TOPUP:
            if not request.account:
                return "a top-up needs an account"
            if product.needs_area and not request.area:
                return "this top-up needs the game area"
            if product.needs_server and not request.server:
                return "this top-up needs the game server"
        return None

    def lookup(self, key: str) -> dict[str, Any]:
        """The order under ``key``: ``{"code": "OK", "order": ...}`` or ``NOT_FOUND``."""
        with self.lock:
            if self.revoked:
                return {"code": "AUTH", "message": "invalid app key or signature"}
            order = self.orders.get(key)
            if order is None:
                return {"code": "NOT_FOUND", "message": "订单不存在"}
            return {"code": "OK", "order": self._order_json(order)}

    def settle(self) -> None:
        """Finish every order in progress: cards issued (or the top-up credited), or the
        armed failure with a refund."""
        with self.lock:
            for order in self.orders.values():
                if order.state.final:
                    continue
                if order.fail_reason is not None:
                    order.state, order.reason = Outcome.FAILED, order.fail_reason
                    self.balance_cents += order.cost_cents
                    continue
                if self.products[order.request.product_id].kind is ProductKind.CARD:
                    order.cards = [(f"NO{secrets.token_hex(6).upper()}",
                                    f"PW{secrets.token_hex(8).upper()}")
                                   for _ in range(order.request.quantity)]
                order.state = Outcome.SUCCEEDED

    def callback(self, key: str, now: datetime | None = None) -> tuple[dict[str, str], bytes]:
        """The signed callback the supplier sends for the order under ``key``."""
        with self.lock:
            body = json.dumps(self._order_json(self.orders[key]), ensure_ascii=False).encode()
        stamp = str(int((now or datetime.now(UTC)).timestamp()))
        return {SIGN_HEADER: sign_callback(self.callback_secret, stamp, body),
                TIME_HEADER: stamp}, body

    def charged_cents(self) -> int:
        """What the supplier holds for orders (charged and not refunded)."""
        with self.lock:
            return sum(o.cost_cents for o in self.orders.values() if o.state is not Outcome.FAILED)

    @staticmethod
    def _order_json(order: _Order) -> dict[str, Any]:
        req = order.request
        return {"key": req.key, "order_id": order.order_id, "state": order.state.value,
                "product_id": req.product_id, "quantity": req.quantity, "account": req.account,
                "area": req.area, "server": req.server, "cost_cents": order.cost_cents,
                "reason": order.reason,
                "cards": [{"number": n, "code": c} for n, c in order.cards]}


def sign_callback(secret: str, stamp: str, body: bytes) -> str:
    """HMAC-SHA256 (hex) over ``stamp`` + ``.`` + the body."""
    return hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()


# -- the client -----------------------------------------------------------------------------


def _purchase(data: Mapping[str, Any]) -> Purchase:
    """A purchase from the supplier's order JSON (BadPlatformData if it is out of shape)."""
    try:
        outcome = Outcome(data["state"])
        cards = tuple(Card(code=CardSecret(c["code"]),
                           number=CardSecret(c["number"]) if c.get("number") else None)
                      for c in data.get("cards") or ())
        return Purchase(key=check_key(data["key"]), outcome=outcome,
                        supplier_order_id=str(data["order_id"]), cards=cards,
                        reason=data.get("reason"), cost_cents=int(data["cost_cents"]))
    except (KeyError, TypeError, ValueError) as exc:
        # The message names the problem only: the body may hold card codes.
        raise BadPlatformData(f"supplier order unreadable ({type(exc).__name__})") from None


def _same_purchase(data: Mapping[str, Any], request: PurchaseRequest) -> bool:
    return (data.get("product_id"), data.get("quantity"), data.get("account"),
            data.get("area"), data.get("server")) == (
        request.product_id, request.quantity, request.account, request.area, request.server)


class MemorySupplier:
    """A client of the in-memory supplier, mapping its answers as a real client must."""

    supplier: ClassVar[str] = "memory"

    def __init__(self, backend: MemorySupplierBackend,
                 callback_secret: str = TEST_CALLBACK_SECRET) -> None:
        self.backend = backend
        self.callback_secret = callback_secret

    async def place(self, request: PurchaseRequest) -> Purchase:
        try:
            answer = self.backend.submit(request)
        except TimeoutError:
            log.warning("supplier_outcome_unknown", supplier=self.supplier, key=request.key,
                        reason="timeout")
            return Purchase(request.key, Outcome.UNKNOWN, reason="timeout: query by the key")
        code = answer.get("code")
        if code == "OK":
            return _purchase(answer["order"])
        if code == "REFUSED":
            return Purchase(request.key, Outcome.FAILED, reason=str(answer.get("message")))
        if code == "AUTH":
            raise AuthError("the supplier refused our credentials")
        if code == "DUPLICATE_ORDER":
            return await self._resolve_duplicate(request)
        return Purchase(request.key, Outcome.UNKNOWN, reason=f"supplier answered {code}")

    async def _resolve_duplicate(self, request: PurchaseRequest) -> Purchase:
        """"Duplicate order": the key is known. Read what it holds; another purchase under
        our key is refused, never bought again and never reported failed."""
        answer = self.backend.lookup(request.key)
        if answer.get("code") != "OK":
            return Purchase(request.key, Outcome.UNKNOWN,
                            reason="duplicate order, not readable yet: query by the key")
        if not _same_purchase(answer["order"], request):
            raise KeyReused(f"key {request.key} was used for a different purchase")
        return _purchase(answer["order"])

    async def query(self, key: str) -> Purchase:
        answer = self.backend.lookup(check_key(key))
        code = answer.get("code")
        if code == "OK":
            return _purchase(answer["order"])
        if code == "NOT_FOUND":
            raise NoSuchPurchase(f"the supplier holds no order under key {key}")
        if code == "AUTH":
            raise AuthError("the supplier refused our credentials")
        return Purchase(key, Outcome.UNKNOWN, reason=f"supplier answered {code}")

    def parse_callback(self, headers: Mapping[str, str], body: bytes,
                       now: datetime) -> CallbackResult:
        lowered = {k.lower(): v for k, v in headers.items()}
        sign, stamp = lowered.get(SIGN_HEADER.lower()), lowered.get(TIME_HEADER.lower())
        if not sign or not stamp or not stamp.isdigit():
            raise PushRejected("callback without its signature headers")
        expected = sign_callback(self.callback_secret, stamp, body)
        if not hmac.compare_digest(expected, sign):
            raise PushRejected("callback signature does not match")
        if abs(now.timestamp() - int(stamp)) > CALLBACK_MAX_AGE:
            raise PushRejected("callback too old (or from the future)")
        try:
            data = json.loads(body)
        except ValueError:
            raise PushRejected("callback body is not JSON") from None
        if not isinstance(data, dict):
            raise PushRejected("callback body is not an object")
        try:
            return CallbackResult(_purchase(data))
        except BadPlatformData as exc:
            raise PushRejected(exc.message) from None

    async def balance(self) -> Balance:
        if self.backend.revoked:
            raise AuthError("the supplier refused our credentials")
        with self.backend.lock:
            return Balance(self.backend.balance_cents)

    async def catalogue(self) -> Sequence[Product]:
        if self.backend.revoked:
            raise AuthError("the supplier refused our credentials")
        return tuple(self.backend.products.values())

    async def aclose(self) -> None:
        return None


class MemorySupplierConfig(PlatformConfig):
    """``name``: the process-wide backend to use; ``callback_secret``: the callbacks' key."""

    name: str = "default"
    callback_secret: Secret = SecretStr(TEST_CALLBACK_SECRET)


class MemorySupplierFactory:
    """The entry point ``memory`` in ``robot.suppliers``."""

    supplier: ClassVar[str] = "memory"
    config_model: ClassVar[type[BaseModel]] = MemorySupplierConfig

    def create(self, config: BaseModel, context: ShopContext) -> MemorySupplier:
        if not isinstance(config, MemorySupplierConfig):
            raise ConfigError(f"supplier {context.shop}: config is not a MemorySupplierConfig")
        return MemorySupplier(MemorySupplierBackend.named(config.name),
                              config.callback_secret.get_secret_value())

    def contract_harness(self) -> AbstractContextManager[SupplierHarness]:
        """The supplier contract suite's harness."""
        from connectors.memsupplier.harness import make_harness

        return make_harness()


__all__ = [
    "MemorySupplier",
    "MemorySupplierBackend",
    "MemorySupplierConfig",
    "MemorySupplierFactory",
]
