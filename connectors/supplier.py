"""The contract between the core and a supplier (Fulu, Juhe, ...): buying out, not selling in.

A supplier sells the merchant top-ups (straight into a buyer's account, and a game area or
server where needed) and card products (codes bought for one order). The core places an
order for a product with an **idempotency key** it committed before the call (our order
number), then learns the outcome from the answer, a later :meth:`Supplier.query` by the same
key, or the supplier's callback. Every answer is normalized into a :class:`Purchase`:

* ``accepted`` / ``processing`` — the supplier has the order; the outcome comes later;
* ``succeeded`` — done: a top-up was credited, or the card codes are in ``cards``;
* ``failed`` — definitely not done and not charged, with the supplier's ``reason``: only
  this outcome lets the caller try another supplier;
* ``unknown`` — a timeout, a 5xx, "system busy", an answer we cannot read: the order may or
  may not exist. The caller must query by the key, **never assume failure**.

Rules every supplier keeps (the contract suite, :mod:`connectors.testing.supplier`, checks
them):

* placing the same key again never buys again: the supplier's "duplicate order" answer is
  resolved by querying, and a key reused for a different purchase is refused
  (:class:`KeyReused`) without buying;
* transport trouble on :meth:`~Supplier.place` and :meth:`~Supplier.query` is an ``unknown``
  purchase, never an exception: an exception means nothing was bought (credentials wrong:
  :class:`connectors.errors.Fatal`) or, for a query, that the supplier holds no order under
  the key (:class:`NoSuchPurchase`);
* :meth:`~Supplier.balance` and :meth:`~Supplier.catalogue` buy nothing, so their transport
  trouble is :class:`connectors.errors.Retriable`;
* a card's code and number are :class:`CardSecret` values: plaintext only inside the vault
  boundary, through :meth:`CardSecret.reveal`; they never show in a repr, a log or an error.

Suppliers register a :class:`SupplierFactory` under the entry point group ``robot.suppliers``.
Money is in integer cents (fen); times are timezone-aware UTC. This module is part of the
ground floor: it imports nothing from the robot.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel

from connectors.base import ShopContext
from connectors.cardsecret import CardSecret as CardSecret  # noqa: PLC0414 - re-exported: the supplier contract names it
from connectors.errors import Retriable, Skippable

SUPPLIER_ENTRY_POINT_GROUP = "robot.suppliers"
#: The longest idempotency key accepted (suppliers allow 32 to 64 characters; ours are short).
MAX_KEY = 64
#: The longest reason text kept (it goes into logs and the order's reason).
MAX_REASON = 300


class ProductKind(enum.StrEnum):
    """What a supplier's product delivers."""

    TOPUP = "topup"  # credited straight into an account the buyer names (phone, game id)
    CARD = "card"  # card codes handed to us for the buyer


class Outcome(enum.StrEnum):
    """Where a purchase stands, normalized (see the module)."""

    ACCEPTED = "accepted"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"

    @property
    def final(self) -> bool:
        """True for an outcome that never changes again (succeeded or failed)."""
        return self in (Outcome.SUCCEEDED, Outcome.FAILED)


@dataclass(frozen=True, slots=True)
class Card:
    """One card bought: its code (卡密), its number (卡号) where the product has one, and its
    expiry where the supplier gives one."""

    code: CardSecret
    number: CardSecret | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Product:
    """One product of a supplier's catalogue."""

    product_id: str
    name: str
    kind: ProductKind
    price_cents: int  # what the merchant pays the supplier for one unit
    face_value_cents: int | None = None
    #: A top-up needs the game area / server named too (``area``, ``server`` of the order).
    needs_area: bool = False
    needs_server: bool = False
    available: bool = True

    def __post_init__(self) -> None:
        if not self.product_id:
            raise ValueError("a product needs an id")
        if self.price_cents < 0:
            raise ValueError("a product's price is never negative")


#: The places of a game top-up beside its account (:class:`PurchaseRequest`'s fields of
#: those names), as an account rule and a line's route name them too.
PLACES = ("area", "server", "game", "role")


@dataclass(frozen=True, slots=True)
class PurchaseRequest:
    """One order to a supplier. ``key`` is our idempotency key (our order number, committed
    before the call); ``account`` (and the game's ``area`` / ``server`` / ``game`` name /
    ``role`` where the product needs them) is where a top-up goes, and is None for a card
    product."""

    key: str
    product_id: str
    quantity: int = 1
    account: str | None = None
    area: str | None = None
    server: str | None = None
    game: str | None = None
    role: str | None = None
    #: The most the merchant pays for one unit; a supplier refuses (``failed``) above it.
    max_unit_price_cents: int | None = None

    def __post_init__(self) -> None:
        check_key(self.key)
        if not self.product_id:
            raise ValueError("a purchase names a product")
        if isinstance(self.quantity, bool) or not isinstance(self.quantity, int) \
                or not 1 <= self.quantity <= 10_000:
            raise ValueError("a purchase's quantity is a whole number from 1 to 10000")
        for name in ("account", "area", "server"):
            value = getattr(self, name)
            if value is not None and (not value.strip() or len(value) > 128):
                raise ValueError(f"a purchase's {name} is 1 to 128 characters when given")


def check_key(key: object) -> str:
    """``key`` if it is a usable idempotency key (printable ASCII, no spaces, 1 to
    :data:`MAX_KEY` characters); ValueError otherwise."""
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY \
            or not all("!" <= ch <= "~" for ch in key):
        raise ValueError(f"an idempotency key is 1 to {MAX_KEY} printable ASCII characters")
    return key


@dataclass(frozen=True, slots=True)
class Purchase:
    """A purchase as the supplier reports it now (see the module for the outcomes)."""

    key: str
    outcome: Outcome
    supplier_order_id: str | None = None
    cards: tuple[Card, ...] = ()
    reason: str | None = None  # why it failed, or why the outcome is unknown
    cost_cents: int | None = None  # what the supplier charged (or will charge) in all

    def __post_init__(self) -> None:
        if self.cards and self.outcome is not Outcome.SUCCEEDED:
            raise ValueError("only a succeeded purchase carries cards")
        if self.outcome is Outcome.FAILED and not self.reason:
            raise ValueError("a failed purchase says why")
        if self.reason is not None and len(self.reason) > MAX_REASON:
            object.__setattr__(self, "reason", self.reason[:MAX_REASON])


@dataclass(frozen=True, slots=True)
class Balance:
    """The merchant's balance with the supplier."""

    available_cents: int
    currency: str = "CNY"


@dataclass(frozen=True, slots=True)
class CallbackResult:
    """A verified callback: the purchase it reports and the reply the supplier expects."""

    purchase: Purchase
    reply_status: int = 200
    reply_body: bytes = b"success"
    reply_content_type: str = "text/plain"


class KeyReused(Skippable):
    """This idempotency key was already used for a different purchase; nothing was bought."""


class NoSuchPurchase(Retriable):
    """The supplier holds no order under this key: the placement never arrived. Placing it
    again under the same key is safe (the supplier de-duplicates on the key)."""


@runtime_checkable
class Supplier(Protocol):
    """One merchant account with one supplier."""

    supplier: ClassVar[str]

    async def place(self, request: PurchaseRequest) -> Purchase:
        """Order ``request``; idempotent on ``request.key``. Transport trouble is an
        ``unknown`` purchase; raises :class:`KeyReused` or a Fatal error only when nothing
        was bought."""
        ...

    async def query(self, key: str) -> Purchase:
        """The purchase placed under ``key``, as the supplier reports it now. Transport
        trouble is ``unknown``; raises :class:`NoSuchPurchase` when the supplier has none."""
        ...

    def parse_callback(self, headers: Mapping[str, str], body: bytes,
                       now: datetime) -> CallbackResult:
        """Verify a supplier's callback (signature, age, shape) and read it; no side
        effects. Raises :class:`connectors.errors.PushRejected` when verification fails."""
        ...

    async def balance(self) -> Balance:
        """The merchant's balance (Retriable on transport trouble)."""
        ...

    async def catalogue(self) -> Sequence[Product]:
        """The products this account may buy (Retriable on transport trouble)."""
        ...

    async def aclose(self) -> None:
        """Release network resources."""
        ...


@runtime_checkable
class SupplierFactory(Protocol):
    """What an entry point in ``robot.suppliers`` resolves to."""

    supplier: ClassVar[str]
    #: pydantic model validating the supplier's config section.
    config_model: ClassVar[type[BaseModel]]

    def create(self, config: BaseModel, context: ShopContext) -> Supplier:
        """Build a supplier client from its validated config."""
        ...
