"""Every state a row of the robot's tables can be in, as ``StrEnum``s.

The database keeps plain strings (``orders.state`` is ``VARCHAR`` with a CHECK constraint) and
JSON shows them as written; a ``StrEnum`` member *is* its string (``OrderState.SHIPPED ==
"shipped"``, ``f"{OrderState.SHIPPED}" == "shipped"``), so rows, JSON and CLI output are the
same as with bare strings. Code uses the members, so that a typo is an ``AttributeError`` and
mypy, not a row that no query ever finds.

Who may change a state: an order's state only through :func:`robot.pipeline.transition`
(and :func:`robot.pipeline.cancel`, which is one); the other tables' states are written by the
module that owns the table (outbox jobs by :mod:`robot.outbox`, deliveries by the pipeline,
the outbox and customer service, batches by :mod:`robot.pools`). This module only names them.
"""

from __future__ import annotations

from enum import StrEnum


class OrderState(StrEnum):
    """Where an order is in the pipeline (DESIGN.md, "The pipeline and its states")."""

    RECEIVED = "received"
    HELD = "held"
    WAITING_STOCK = "waiting_stock"
    SOURCING = "sourcing"  # bought from a supplier: a top-up, or codes for this order
    ALLOCATED = "allocated"
    SHIPPED = "shipped"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    IGNORED = "ignored"
    REFUNDED = "refunded"


#: Orders not shipped yet that a refund or a person may still cancel.
UNSHIPPED = (OrderState.RECEIVED, OrderState.HELD, OrderState.WAITING_STOCK,
             OrderState.ALLOCATED, OrderState.FAILED)
#: Orders waiting for the allocator (stock).
TO_ALLOCATE = (OrderState.RECEIVED, OrderState.WAITING_STOCK)
#: Orders whose codes a buyer may see (the pickup page, the delivery API, links).
VISIBLE = (OrderState.ALLOCATED, OrderState.SHIPPED)


#: Orders whose goods are being bought from a supplier right now: a refund lets the purchase
#: finish (no supplier cancels) and the order is then flagged for review.
IN_FLIGHT = (OrderState.SOURCING,)


class SupplierAttemptState(StrEnum):
    """One purchase from one supplier for one unit of an order line (``supplier_attempts``).

    ``new``: the key is committed, nothing sent; ``placing``: the call may have reached the
    supplier (after a crash it is found by query, never placed blind); ``accepted`` /
    ``processing`` / ``unknown``: the supplier may hold it: query until final.
    """

    NEW = "new"
    PLACING = "placing"
    ACCEPTED = "accepted"
    PROCESSING = "processing"
    UNKNOWN = "unknown"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class RestockState(StrEnum):
    """One purchase of codes for a pool (``restock_purchases``): the states of
    :class:`SupplierAttemptState`, plus ``awaiting_approval`` (the rule wants a person's
    ``robot restock approve`` first; no budget held yet) and ``rejected`` (a person said no)."""

    AWAITING_APPROVAL = "awaiting_approval"
    NEW = "new"
    PLACING = "placing"
    ACCEPTED = "accepted"
    PROCESSING = "processing"
    UNKNOWN = "unknown"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"


class DeliveryState(StrEnum):
    """A code handed to an order line (``deliveries.state``)."""

    RESERVED = "reserved"  # claimed for the order, not acknowledged by the platform yet
    DELIVERED = "delivered"  # the platform acknowledged the shipment
    REVIEW = "review"  # the order was refunded or cancelled after the buyer could see it
    DEFECTIVE = "defective"  # a buyer reported it bad and it was replaced


class CodeState(StrEnum):
    """A code's state as shown (derived from stock, deliveries and retirements)."""

    AVAILABLE = "available"
    RESERVED = "reserved"
    DELIVERED = "delivered"
    REVIEW = "review"
    DEFECTIVE = "defective"
    VOID = "void"
    EXPIRED = "expired"


class OutboxState(StrEnum):
    """A write-back job (``outbox.state``)."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class NotificationState(StrEnum):
    """A buyer notification (``notifications.state``, owned by :mod:`robot.notify`)."""

    QUEUED = "queued"  # to be sent by the outbox's notify job
    SENDING = "sending"  # committed just before the send: found so later, the send was cut
    SENT = "sent"  # the transport took it
    FAILED = "failed"  # definitely not sent, and will not be (a bad address, attempts used up)
    UNKNOWN = "unknown"  # may or may not have gone out: a person decides (never auto-resent)


class AttemptResult(StrEnum):
    """The outcome of one write-back attempt (``outbox_attempts.result``)."""

    DONE = "done"
    RETRY = "retry"
    FAILED = "failed"
    CANCELLED = "cancelled"


class BatchState(StrEnum):
    """An import batch (``batches.state``)."""

    IMPORTING = "importing"
    ACTIVE = "active"
    ABORTED = "aborted"


class ReplacementState(StrEnum):
    """A replacement a person asked for (``replacements.state``)."""

    WAITING = "waiting"
    DONE = "done"
    CANCELLED = "cancelled"
