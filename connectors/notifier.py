"""The contract between the core and a buyer notifier (e-mail, SMS, ...): telling the buyer.

A notifier sends one :class:`Message` about one event of one order (its codes are ready, a
person re-sent the link) to one address or phone number. The core renders the text from the
shop's templates, records the event durably before the send and calls :meth:`Notifier.send`
outside any transaction, at most once per attempt. Every answer is one of:

* it returns a :class:`Sent` — the transport accepted the message (an SMTP server's 250 to
  the message's data, the SMS provider's ``OK``);
* it raises :class:`connectors.errors.Retriable` — definitely **not** sent, try later (the
  connection was refused, the server answered 4xx before taking the data, throttled);
* it raises :class:`connectors.errors.Skippable` — definitely not sent, and it never will be
  (an address the server refuses, a number the provider calls invalid);
* it raises :class:`connectors.errors.Fatal` — definitely not sent: credentials or the
  account need a person (the core tries again later, like a Retriable failure, and logs it);
* it raises :class:`SendUnknown` — the message may or may not have gone out (the connection
  dropped after the data was handed over, a timeout waiting for the answer). The core
  never sends such an event again by itself: a person reviews it (``robot orders notify``).

A message carries the pickup link by default; it carries a plaintext code only when the
shop opted in (``include_codes``), and then only in :attr:`Message.text` / ``params``, which
a notifier must never log or put into an error.

Notifiers register a :class:`NotifierFactory` under the entry point group
``robot.notifiers``. This module is part of the ground floor: it imports nothing from the
robot.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel

from connectors.errors import RobotError

NOTIFIER_ENTRY_POINT_GROUP = "robot.notifiers"
#: The longest error text kept for one notification (it goes into logs and the history).
MAX_ERROR = 300


class Channel(enum.StrEnum):
    """How a message reaches the buyer; which contact of the order it needs."""

    EMAIL = "email"  # the order's buyer e-mail address
    SMS = "sms"  # the order's buyer mobile number


class SendUnknown(RobotError):
    """The message may have been sent: the transport failed after it was handed over."""


@dataclass(frozen=True, slots=True)
class Message:
    """One message about one event, ready to send.

    ``key`` is stable for the event (``n<notification id>-<hash>``): the same event sent
    again carries the same key (an e-mail's ``Message-ID``, the SMS provider's ``OutId``),
    so that a receiver or a provider that de-duplicates can. ``params`` are the template's
    values for providers whose text lives with them (an SMS template code and its
    variables); ``subject`` and ``text`` are the rendered text for the others.
    """

    key: str
    to: str
    language: str  # "zh" | "en"
    subject: str
    text: str
    params: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # never the address, the text or the params
        return f"Message(key={self.key!r}, language={self.language!r})"


@dataclass(frozen=True, slots=True)
class Sent:
    """The transport took the message; ``reference`` is its id there (SMS BizId, the
    e-mail's Message-ID), kept with the notification."""

    reference: str = ""


@runtime_checkable
class Notifier(Protocol):
    """One shop's configured way to reach buyers on one channel."""

    channel: ClassVar[Channel]

    async def send(self, message: Message) -> Sent:
        """Send ``message`` once (see the module for what each outcome means)."""
        ...

    async def aclose(self) -> None:
        """Release network resources."""
        ...


@runtime_checkable
class Confirming(Protocol):
    """A notifier whose provider can say whether it took a message (optional): used before a
    person re-sends an event whose outcome was unknown (``robot orders notify``)."""

    async def confirm(self, key: str, to: str, since: datetime) -> Sent | None:
        """The provider's record of the message sent under ``key`` to ``to`` at or after
        ``since``, or None when it holds none (which proves nothing: a record may lag)."""
        ...


@runtime_checkable
class NotifierFactory(Protocol):
    """What an entry point in ``robot.notifiers`` resolves to."""

    #: The name a shop file gives (``notify.email.notifier: smtp``).
    notifier: ClassVar[str]
    channel: ClassVar[Channel]
    #: pydantic model validating the shop file's ``notify.<channel>.config`` section.
    config_model: ClassVar[type[BaseModel]]

    def create(self, config: BaseModel, shop: str) -> Notifier:
        """Build the notifier for shop ``shop`` from its validated config."""
        ...


def short_error(text: str) -> str:
    """An error text on one line, at most :data:`MAX_ERROR` characters."""
    return " ".join(text.split())[:MAX_ERROR]


__all__ = [
    "NOTIFIER_ENTRY_POINT_GROUP",
    "Channel",
    "Confirming",
    "Message",
    "Notifier",
    "NotifierFactory",
    "SendUnknown",
    "Sent",
    "short_error",
]
