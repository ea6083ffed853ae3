"""The robot as a supplier: the contract between a buyer platform's gateway plugin and the core.

Some platforms buy the goods from a supplier instead of letting the seller ship them (闲管家
for 闲鱼: when a buyer pays, 闲管家 calls the supplier's gateway to buy the card codes, then
ships the order and sends the codes to the buyer itself). For those the robot *is* the
supplier: the robot's HTTP listener serves the platform's requests at ``/supply/<shop>/…``
and hands each one to the shop's connector, which implements :class:`SupplyGateway`.

The split of work:

* the plugin owns the wire: paths, signature and timestamp checks, field types, the answer's
  envelope and error codes (:meth:`SupplyGateway.serve`), and the callbacks it posts to the
  platform (its connector's ``ship``, fed with the codes in :attr:`Shipment.handed
  <connectors.base.Shipment.handed>` because it declares ``shows_codes``);
* the core owns the goods and the orders (:class:`SupplyBackend`): the goods a shop maps, their
  live stock, taking a purchase in exactly once per platform order number (risk rules, the
  atomic claim, the audit), and reading an order back from the database.

A purchase the core cannot serve is a :class:`SupplyRefused` with a :class:`Refusal` the
plugin maps onto its platform's error codes. Money is in integer fen; times are aware UTC.

Top-up goods (``GoodsKind.RECHARGE``) are bought from the merchant's suppliers for each order:
the platform names the account to credit (and a game area / server where the goods needs
them) in the purchase itself (:attr:`Purchase.account`), and the answer is "processing" until
the supplier's result is committed.

This module is part of the ground floor: it imports nothing from the robot. Plaintext codes
cross it only inside :class:`PurchaseView`, as :class:`~connectors.base.HandedCode` s (the
same wrapping a shipment's codes have), never into a log or a repr.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from connectors.base import HandedCode

#: Our order number for a platform's order is its own number behind this prefix, so a
#: gateway's callbacks (which see only the platform's number) name the same order as answers.
OUR_ORDER_PREFIX = "RB"


def our_order_id(platform_order_id: str) -> str:
    """The supplier's order number (``out_order_no``) of a platform order."""
    return OUR_ORDER_PREFIX + platform_order_id


def platform_order_of(our_order: str) -> str | None:
    """The platform's order number behind one of ours (None: not one of ours)."""
    if our_order.startswith(OUR_ORDER_PREFIX) and len(our_order) > len(OUR_ORDER_PREFIX):
        return our_order[len(OUR_ORDER_PREFIX):]
    return None


class GoodsKind(enum.StrEnum):
    CARD = "card"  # codes from the robot's pools
    RECHARGE = "recharge"  # a top-up into the buyer's account (needs supplier routing)


@dataclass(frozen=True, slots=True)
class Goods:
    """One of the shop's goods as the buyer platform sees it."""

    goods_no: str
    name: str
    kind: GoodsKind
    price_cents: int  # what the platform pays us per unit
    stock: int  # units that can be served now
    on_sale: bool
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Purchase:
    """A purchase the platform places with us (its order number is the idempotency key)."""

    platform_order_id: str
    goods_no: str
    quantity: int
    #: The most the platform accepts to pay for the whole order (None: no limit given).
    max_total_cents: int | None
    kind: GoodsKind = GoodsKind.CARD
    buyer_id: str | None = None
    buyer_ip: str | None = None
    #: A top-up's account to credit, and its game area / server / game name / role where
    #: the platform gives them (None for card goods). Personal data: never logged, shown
    #: masked.
    account: str | None = field(default=None, repr=False)
    area: str | None = None
    server: str | None = None
    game: str | None = None
    role: str | None = field(default=None, repr=False)
    #: Platform facts needed again later (callback address, the platform's other numbers).
    #: Strings only; never secrets.
    extra: Mapping[str, str] = field(default_factory=dict)


class PurchaseState(enum.StrEnum):
    PROCESSING = "processing"  # accepted; the result follows (a callback, or a later query)
    SUCCEEDED = "succeeded"  # the codes are handed over
    FAILED = "failed"  # definitely not served (rejected or cancelled)


@dataclass(frozen=True, slots=True)
class PurchaseView:
    """An order as the buyer platform may see it, read from the database."""

    platform_order_id: str
    our_order_id: str  # the supplier's order number (out_order_no)
    goods_no: str
    quantity: int
    state: PurchaseState
    total_cents: int
    ordered_at: datetime
    ended_at: datetime | None
    codes: tuple[HandedCode, ...] = ()  # once succeeded: the codes handed over
    reason: str | None = None  # why it failed, for the platform's remark
    extra: Mapping[str, str] = field(default_factory=dict)


class Refusal(enum.StrEnum):
    UNKNOWN_GOODS = "unknown_goods"
    OFF_SALE = "off_sale"
    PRICE_ABOVE_MAX = "price_above_max"
    BAD_REQUEST = "bad_request"
    NOT_SUPPORTED = "not_supported"  # e.g. a card order for top-up goods, or the reverse
    BAD_ACCOUNT = "bad_account"  # a top-up's account is missing or not of the goods' form
    UNAVAILABLE = "unavailable"  # the robot cannot store it now (database down): retry


class SupplyRefused(Exception):
    """The core will not take this purchase; nothing was written."""

    def __init__(self, refusal: Refusal, message: str) -> None:
        super().__init__(message)
        self.refusal = refusal
        self.message = message


@dataclass(frozen=True, slots=True)
class RefundNotice:
    """The platform tells us an order was refunded (after or before we served it)."""

    platform_order_id: str
    amount_cents: int | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Subscription:
    """The platform asked to be told when a goods' price, stock or status changes."""

    goods_no: str
    kind: GoodsKind
    token: str
    notify_url: str
    subscribed_at: datetime


class SupplyBackend(Protocol):
    """What the core lends a gateway for one shop (every call is idempotent and durable)."""

    async def goods(self) -> Sequence[Goods]:
        """Every goods the shop maps, with live stock."""
        ...

    async def purchase(self, purchase: Purchase) -> PurchaseView:
        """Take the purchase in (once per platform order id; a repeat answers the same
        order and codes) and return it; raises :class:`SupplyRefused`."""
        ...

    async def order(self, platform_order_id: str) -> PurchaseView | None:
        """The order as stored (None: unknown)."""
        ...

    async def refunded(self, notice: RefundNotice) -> bool:
        """Record a refund; False when the order is unknown."""
        ...

    async def refund_requested(self, notice: RefundNotice) -> PurchaseView | None:
        """The platform asks before refunding: an order not served yet is cancelled now (no
        code will go out); a served one is left as it is (its refund notice follows).
        Returns the order as it now stands (None: unknown)."""
        ...

    async def subscribe(self, subscription: Subscription) -> bool:
        """Keep the subscription (a repeat replaces its address); False: no such goods."""
        ...

    async def unsubscribe(self, goods_no: str, token: str) -> None: ...

    async def subscriptions(self, goods_no: str | None = None) -> Sequence[Subscription]: ...


@dataclass(frozen=True, slots=True)
class GatewayRequest:
    """One request to ``/supply/<shop>/<path>`` as received."""

    path: str  # below the shop's prefix, without a leading slash
    method: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    received_at: datetime


@dataclass(frozen=True, slots=True)
class GatewayReply:
    status: int
    body: bytes
    content_type: str = "application/json"


@runtime_checkable
class SupplyGateway(Protocol):
    """A connector that serves its platform as a supplier (optional)."""

    async def serve(self, request: GatewayRequest, backend: SupplyBackend) -> GatewayReply:
        """Verify and answer one request; must write nothing for a request that fails
        verification (it never reaches ``backend``)."""
        ...


@runtime_checkable
class GoodsNotifier(Protocol):
    """A gateway that tells its platform about goods changes (optional). The core calls it
    for each subscription whose goods changed since the last acknowledged notice."""

    async def notify_goods(self, subscription: Subscription, goods: Goods) -> None:
        """Send one notice; raises a ``Retriable`` error unless the platform acknowledged."""
        ...


@runtime_checkable
class FailureNotifier(Protocol):
    """A gateway that tells its platform when an order it bought will not be served (a person
    rejected or cancelled it), for platforms that wait for a result (optional)."""

    async def notify_failure(self, platform_order_id: str, extra: Mapping[str, str],
                             reason: str) -> None:
        """Send the failure; raises a ``Retriable`` error unless the platform acknowledged.
        ``extra`` is what the purchase carried (the callback address)."""
        ...
