"""The contract between the platform-agnostic core and each platform's connector.

The core (``robot/``) depends only on what is defined here. A connector turns one platform's
API into normalized :class:`Order` snapshots, ships a :class:`Shipment`, writes a seller memo,
and maps the platform's error codes onto :mod:`robot.errors` (``Fatal`` / ``Retriable`` /
``Skippable``). Poll-based and push-based platforms both fit:

* polling: :meth:`Connector.poll` is called with the durable cursor the previous call
  returned; it fetches one step (one time window, every page of it) and returns the orders
  with the cursor to store. The core commits the orders and the new cursor together, so a
  restart resumes exactly where the last committed step ended. ``more=True`` asks the core
  to call again at once (catching up after an outage).
* push: :meth:`Connector.parse_push` verifies a received HTTP request (signature, age) and
  returns the events it carries; it must have no side effects and raise
  :class:`robot.errors.PushRejected` for anything that fails verification. A connector that
  takes pushes declares how long its platform waits for the answer as the class attribute
  ``push_window`` (seconds; :func:`push_window` falls back to :data:`DEFAULT_PUSH_WINDOW`):
  the core answers well within it, refusing what it could not store durably in time.

A connector sees no plaintext code unless its platform shows codes to the buyer and it says
so (the class attribute ``shows_codes = True``; see :func:`shows_codes`): only then does the
core fill :attr:`Shipment.handed` with the order's codes as :class:`HandedCode` values (each
secret a :class:`~connectors.cardsecret.CardSecret`, revealed only to build the one request
that hands it over, never logged), and audits the hand-over. Every other :class:`Shipment`
carries masked codes and a pickup link only. Money is in integer cents (fen); times are
timezone-aware UTC.

Third-party connectors register a :class:`ConnectorFactory` under the entry point group
``robot.connectors``; the built-in ones are registered the same way.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel

from connectors.cardsecret import CardSecret

ENTRY_POINT_GROUP = "robot.connectors"
#: Seconds a platform waits for a push's answer when its connector does not declare
#: ``push_window``: the shortest window known (闲管家, 3 s), so an undeclared platform is safe.
DEFAULT_PUSH_WINDOW = 3.0


class PlatformStatus(enum.StrEnum):
    """Where an order stands on its platform, normalized."""

    UNPAID = "unpaid"  # created, not paid: nothing to do yet
    PAID = "paid"  # paid, awaiting shipment: ours to deliver
    SHIPPED = "shipped"  # the platform considers it shipped (by us or by hand)
    CLOSED = "closed"  # closed or cancelled before shipping (includes full refund)
    COMPLETED = "completed"  # buyer confirmed / trade finished


class RefundState(enum.StrEnum):
    """Refund state of one order line, normalized."""

    NONE = "none"
    REQUESTED = "requested"  # a refund is in progress: never ship this line
    REFUNDED = "refunded"  # money returned
    REFUSED = "refused"  # seller refused / buyer withdrew: as if none


@dataclass(frozen=True, slots=True)
class OrderLine:
    """One line (sub-order) of a platform order."""

    line_id: str  # the platform's sub-order id (Taobao oid); unique within the order
    quantity: int
    item_id: str | None = None  # platform item / goods id
    sku_id: str | None = None  # platform SKU id
    outer_id: str | None = None  # merchant's own code on the item/SKU (outer_iid / outer_sku_id)
    title: str = ""
    unit_price_cents: int = 0
    refund: RefundState = RefundState.NONE
    #: The SKU's properties as the buyer chose or typed them, ``(name, value)`` pairs, where
    #: the platform gives them (e.g. ``("充值号码", "138...")`` on a top-up item): a top-up
    #: mapping may read its account from one (``property.NAME``). Personal data: kept out of
    #: the repr, never logged.
    properties: tuple[tuple[str, str], ...] = field(default=(), repr=False)


@dataclass(frozen=True, slots=True)
class Order:
    """A normalized snapshot of one platform order as the platform sees it now."""

    platform_order_id: str
    status: PlatformStatus
    lines: tuple[OrderLine, ...]
    total_cents: int = 0
    currency: str = "CNY"
    paid_at: datetime | None = None
    modified_at: datetime | None = None
    buyer_id: str | None = None  # the platform's stable buyer identifier (open uid / openid)
    buyer_ip: str | None = None
    # The buyer's contact, where the platform gives one and lets the merchant use it
    # (buyer notifications: robot.notify). Never logged (kept out of the repr).
    buyer_email: str | None = field(default=None, repr=False)
    buyer_phone: str | None = field(default=None, repr=False)
    #: The buyer's message to the seller (留言), where the platform gives it: a top-up
    #: mapping may read the account to credit from it. Personal data: kept out of the repr,
    #: never logged, never stored (only the account read from it is, on the line's route).
    buyer_message: str | None = field(default=None, repr=False)
    # Platform facts the connector needs again when shipping (e.g. WeChat transaction_id and
    # payer openid). Strings only; never secrets.
    extra: Mapping[str, str] = field(default_factory=dict)
    #: Whether the platform's record shows a shipment of this order, whatever its status now
    #: (a consign or shipping time, an uploaded shipment): platforms close a refunded order
    #: whether or not it was shipped first, and this tells the two apart. None: the answer
    #: this order came from does not say (a push, a list row without the field).
    shipped_on_platform: bool | None = None

    @property
    def refund_in_progress(self) -> bool:
        return any(line.refund in (RefundState.REQUESTED, RefundState.REFUNDED)
                   for line in self.lines)

    @property
    def fully_refunded(self) -> bool:
        return bool(self.lines) and all(line.refund is RefundState.REFUNDED for line in self.lines)


@dataclass(frozen=True, slots=True)
class HandedCode:
    """One code of an order, handed to a platform that shows it to the buyer.

    ``number`` is the code (or the card number of a number / PIN pair), ``pin`` the PIN of
    a pair, ``link`` the pool's redemption link when it has one (it may hold the code, so it
    is kept out of the repr and must be logged no more than the code); ``masked`` is what logs
    and errors may show. ``line_id`` is the order line (sub-order) the code was allocated to.
    """

    line_id: str
    number: CardSecret
    masked: str
    pin: CardSecret | None = None
    link: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Shipment:
    """What the core asks a connector to write back for one order.

    ``masked_codes`` and ``pickup_url`` are for the seller memo; ``item_desc`` is the short
    goods description some platforms show the buyer (never a code). ``handed`` holds the
    codes themselves, line by line, for a connector that :func:`shows_codes` and is empty
    for every other.
    """

    order: Order
    line_ids: tuple[str, ...]
    memo: str
    item_desc: str
    masked_codes: tuple[str, ...] = ()
    pickup_url: str | None = None
    handed: tuple[HandedCode, ...] = ()


#: The longest problem text an :class:`UnreadableOrder` keeps (it becomes the order's reason
#: and a log field).
PROBLEM_MAX = 300


@dataclass(frozen=True, slots=True)
class UnreadableOrder(Order):
    """An order the platform sent that could not be normalized; ``problem`` says why.

    A connector returns it in place of the order instead of dropping it: the core parks it as
    ``held`` with the problem as the reason (a Skippable error parks one order, the shop goes
    on), and takes it in normally once the platform sends a readable snapshot. When even the
    order's id cannot be read, ``platform_order_id`` is ``""``: the core cannot park it, so it
    logs and audits it. Only ``platform_order_id`` and ``problem`` mean anything; ``status``
    is PAID so that a connector's "paid orders only" filter passes it on to the core, which
    checks for this type before looking at anything else. Nothing but the id and the problem
    text may go in: the problem goes into logs and the order's reason, so it must never carry
    a secret.
    """

    problem: str = "unreadable"


def readable_id(value: Any) -> str:
    """A platform order id as text, or ``""`` when it is missing or not an id at all."""
    if value is None or isinstance(value, bool) or not isinstance(value, str | int):
        return ""
    return str(value).strip()


def unreadable(platform_order_id: Any, problem: str) -> UnreadableOrder:
    """The stand-in for one order that could not be read (``platform_order_id`` may be None)."""
    return UnreadableOrder(platform_order_id=readable_id(platform_order_id),
                           status=PlatformStatus.PAID, lines=(),
                           problem=" ".join(problem.split())[:PROBLEM_MAX] or "unreadable")


class ShipOutcome(enum.StrEnum):
    SHIPPED = "shipped"  # the platform accepted our shipment now
    ALREADY_SHIPPED = "already_shipped"  # the platform had it shipped already (by us): success


@dataclass(frozen=True, slots=True)
class PollResult:
    """One polling step: the orders seen and the cursor to store with them."""

    orders: tuple[Order, ...]
    cursor: Mapping[str, Any]
    more: bool = False  # call again at once: the cursor is still behind "now"


class PushKind(enum.StrEnum):
    PAID = "paid"
    CLOSED = "closed"
    REFUND = "refund"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class PushEvent:
    """One event from a verified push. ``order`` is None when the message is thin and the
    core must call :meth:`Connector.fetch_order` for the detail."""

    kind: PushKind
    platform_order_id: str
    message_id: str  # for de-duplication and logs
    order: Order | None = None


@dataclass(frozen=True, slots=True)
class PushBatch:
    """The events of one verified push request and the reply the platform expects."""

    events: tuple[PushEvent, ...]
    reply_status: int = 200
    reply_body: bytes = b""
    reply_content_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class CheckReport:
    """Result of ``robot shops test``: one line per check performed."""

    ok: bool
    checks: tuple[tuple[str, bool, str], ...]  # (check name, passed, detail)


def shows_codes(connector: object) -> bool:
    """Whether the connector's platform shows the codes to the buyer, so that its shipments
    must carry them (the class attribute ``shows_codes``; absent means no)."""
    return getattr(type(connector), "shows_codes", False) is True


def push_window(connector: object) -> float:
    """Seconds the connector's platform waits for the answer to a push (see the module)."""
    window = getattr(connector, "push_window", None)
    if isinstance(window, int | float) and not isinstance(window, bool) and window > 0:
        return float(window)
    return DEFAULT_PUSH_WINDOW


@runtime_checkable
class Connector(Protocol):
    """One shop's connection to its platform."""

    platform: ClassVar[str]
    #: True if the platform pushes orders to us (webhooks); polling may still be used too.
    receives_push: ClassVar[bool]

    async def poll(self, cursor: Mapping[str, Any] | None, now: datetime) -> PollResult:
        """Fetch paid (and changed) orders for one step after ``cursor`` (None: first run)."""
        ...

    async def fetch_order(self, platform_order_id: str) -> Order:
        """Fetch one order's current snapshot."""
        ...

    async def poll_refunds(
        self, cursor: Mapping[str, Any] | None, now: datetime
    ) -> PollResult:
        """Fetch orders whose refund or close state changed after ``cursor``."""
        ...

    def parse_push(self, headers: Mapping[str, str], body: bytes, now: datetime) -> PushBatch:
        """Verify a pushed request and return its events; no side effects.

        Raises :class:`robot.errors.PushRejected` when verification fails.
        """
        ...

    async def ship(self, shipment: Shipment) -> ShipOutcome:
        """Mark the order delivered on the platform (virtual shipment).

        "Already shipped" answers must be resolved by re-reading the order: shipped → return
        ``ALREADY_SHIPPED``; closed/refunded → raise :class:`robot.errors.NotShippable`.
        """
        ...

    async def write_memo(self, order: Order, memo: str) -> None:
        """Write the seller memo (seen by the merchant's customer service only)."""
        ...

    async def check(self) -> CheckReport:
        """Check credentials and permissions against the platform."""
        ...

    async def aclose(self) -> None:
        """Release network resources."""
        ...


@runtime_checkable
class MessageSource(Protocol):
    """A connector whose platform queues messages for us to pull (Taobao's TMC).

    The core calls :meth:`consume_messages`, applies each event durably, and only then
    :meth:`confirm_messages`; unconfirmed messages come back later.
    """

    @property
    def pulls_messages(self) -> bool:
        """True when this shop is configured to pull messages."""
        ...

    async def consume_messages(self) -> list[tuple[str, PushEvent]]: ...

    async def confirm_messages(self, message_ids: Sequence[str]) -> None: ...


@dataclass(frozen=True, slots=True)
class ClockReading:
    """What a connector knows of its platform's clock: platform minus ours, in seconds
    (negative: the platform is behind us), the median of ``samples`` recent measurements."""

    offset_seconds: float
    samples: int
    measured_at: datetime  # our clock, when the latest sample was taken
    applied: bool = True  # False: too large to trust, windows are not shifted by it


@runtime_checkable
class ClockAware(Protocol):
    """A connector that measures its platform's clock (optional; the core reports it)."""

    def clock_reading(self) -> ClockReading | None:
        """The platform's clock offset as last measured; None when nothing recent was."""
        ...


@runtime_checkable
class Reconciler(Protocol):
    """A polled connector that can list recent orders cheaply (optional).

    The core's reconciliation sweep calls :meth:`recent_order_ids` on a slow schedule, reads
    in full (:meth:`Connector.fetch_order`) only the orders it does not hold, and takes them
    in. It never touches the poll cursor.
    """

    async def recent_order_ids(self, now: datetime, period: timedelta) -> Sequence[str]:
        """Ids of orders awaiting shipment that changed within ``period`` before ``now``
        (our clock; the connector counts in its platform's time), ids and times only where
        the platform allows it."""
        ...


class ShopContext(Protocol):
    """What the core lends a connector: durable per-shop storage for tokens."""

    @property
    def shop(self) -> str: ...

    def load_secret(self, name: str) -> str | None:
        """Return a secret the connector stored earlier (decrypted), or None."""
        ...

    def store_secret(self, name: str, value: str) -> None:
        """Store a secret (encrypted at rest) durably, e.g. a refreshed access token."""
        ...


@runtime_checkable
class ConnectorFactory(Protocol):
    """What an entry point in ``robot.connectors`` resolves to."""

    platform: ClassVar[str]
    #: pydantic model validating the shop file's ``platform_config`` section.
    config_model: ClassVar[type[BaseModel]]

    def create(self, config: BaseModel, context: ShopContext) -> Connector:
        """Build a connector for one shop from its validated config."""
        ...
