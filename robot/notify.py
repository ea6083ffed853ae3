"""Buyer notifications: telling the buyer, through the outbox, once per event.

An **event** is one reason to tell the buyer: ``delivered`` (queued in the transaction that
records the shipment) or ``resend-N`` (a person, ``robot orders notify``). It becomes one
``notifications`` row per channel (e-mail, SMS) the shop turned on and the order has a
contact for, unique on (order, channel, event), and the order's one ``notify`` job in the
outbox sends them. Delivery never waits for a notification: the job is queued after the
shipment is committed and runs on its own.

Sent once per event. Each row walks ``queued → sending → sent | failed | unknown``:

1. ``sending`` is committed (with the attempt counted) **before** the notifier is called;
2. the outcome is committed after: ``sent`` (with the transport's reference), back to
   ``queued`` when the transport said it did not take it (retried with the outbox's backoff;
   ``failed`` after the shop's ``max_attempts``), ``failed`` when it never will (a refused
   address), ``unknown`` when the message may have gone (the connection dropped after the
   data was handed over, a timeout waiting for the answer);
3. a row found still ``sending`` once the longest send could have ended belongs to a worker
   that died mid-send: it becomes ``unknown``.

An ``unknown`` event is never sent again by the robot: e-mail (SMTP) and Aliyun's SendSms
have no idempotency key, so a blind retry could reach the buyer twice. ``robot status`` lists
the orders concerned, ``robot orders show`` each notification's state, and
``robot orders notify ID`` first asks a provider that can tell (:func:`confirm_unknown`:
Aliyun's QuerySendDetails finds the SMS by its ``OutId``) and marks what it holds as sent,
then re-queues an unknown event under its same key: the e-mail goes out with the same
``Message-ID`` (clients that fold duplicates by it show one), the SMS with the same
``OutId``.

What a message says: the pickup link, from the shop's templates; plaintext codes only where
the channel opted in (``include_codes``), and then the codes are marked seen (they never go
back to stock) and the sending is audited with the code ids. This module never logs or
audits an address, a phone number or a code.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from connectors.errors import Fatal, Retriable, Skippable
from connectors.notifier import (
    Channel,
    Confirming,
    Message,
    Notifier,
    SendUnknown,
    Sent,
    short_error,
)
from robot import audit
from robot.clock import to_aware, utcnow
from robot.config.notify import ChannelFile, NotifyConfig
from robot.db import transaction
from robot.errors import UserError
from robot.log import get_logger
from robot.notify_text import JobOrder, build_message
from robot.schema import notifications, orders, outbox
from robot.states import VISIBLE, NotificationState, OutboxState
from robot.vault import Vault

log = get_logger(__name__)

DELIVERED = "delivered"
KIND = "notify"  # the outbox job kind
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_PHONE = re.compile(r"\+?\d{6,20}")


class NotifyingShop(Protocol):
    @property
    def notify(self) -> NotifyConfig: ...


def usable_contact(channel: Channel, email: str | None, phone: str | None) -> str | None:
    """The order's contact for ``channel`` when it looks usable (a masked number does not)."""
    if channel is Channel.EMAIL:
        return email if email and _EMAIL.fullmatch(email) else None
    return phone if phone and _PHONE.fullmatch(phone.replace(" ", "")) else None


def mask_contact(value: str | None) -> str | None:
    """A contact as people see it in listings: ``b***@example.com``, ``138****8000``."""
    if not value:
        return None
    name, at, domain = value.partition("@")
    if at:
        return f"{name[:1]}***@{domain}"
    return f"{value[:3]}****{value[-4:]}" if len(value) > 7 else "****"


def message_key(notification_id: int, order_id: int) -> str:
    """The event's key, the same on every send of it (Message-ID, OutId)."""
    return f"n{notification_id}.o{order_id}"


# -- queueing (inside the caller's transaction) -------------------------------------------------

def queue_job(conn: Connection, order_id: int, now: datetime) -> None:
    """Make the order's notify job pending now (or make it); a worker running the old one
    loses it (outbox ``Dispatcher._mine``) and the job runs again."""
    moved = conn.execute(update(outbox).where(outbox.c.order_id == order_id,
                                              outbox.c.kind == KIND)
                         .values(state=OutboxState.PENDING, attempts=0, due_at=now,
                                 claimed_by=None, claimed_until=None, last_error=None,
                                 done_at=None)).rowcount
    if not moved:
        conn.execute(insert(outbox).values(order_id=order_id, kind=KIND,
                                           state=OutboxState.PENDING, attempts=0, due_at=now,
                                           created_at=now))


def channels_for(conn: Connection, order_id: int, shop: NotifyingShop) -> list[Channel]:
    """The shop's channels the order has a usable contact for."""
    row = conn.execute(select(orders.c.buyer_email, orders.c.buyer_phone)
                       .where(orders.c.id == order_id)).one()
    return [channel for channel in shop.notify.channels
            if usable_contact(channel, row.buyer_email, row.buyer_phone) is not None]


def queue_event(conn: Connection, order_id: int, channels: Sequence[Channel], event: str, *,
                actor: str, now: datetime) -> list[Channel]:
    """Record ``event`` for each channel (once: an event already recorded is left alone) and
    queue the job; the channels recorded now."""
    added = []
    for channel in channels:
        exists = conn.execute(select(notifications.c.id).where(
            notifications.c.order_id == order_id, notifications.c.channel == channel,
            notifications.c.event == event)).first()
        if exists is not None:
            continue
        conn.execute(insert(notifications).values(
            order_id=order_id, channel=channel.value, event=event,
            state=NotificationState.QUEUED, attempts=0, actor=actor, created_at=now))
        added.append(channel)
    if added:
        queue_job(conn, order_id, now)
    return added


def on_shipped(conn: Connection, order_id: int, shop: NotifyingShop | None,
               now: datetime) -> None:
    """The shipment's transaction: record the ``delivered`` event for the shop's channels."""
    if shop is None or not shop.notify.channels:
        return
    channels = channels_for(conn, order_id, shop)
    if channels:
        queue_event(conn, order_id, channels, DELIVERED, actor="robot", now=now)


def on_replaced(conn: Connection, order_id: int, now: datetime) -> list[Channel]:
    """Bad codes of the order were replaced (``robot orders redeliver``, or a replacement
    served once stock came in): tell the buyer again, through the channels the order was
    told on before (its new codes are on the pickup page), as event ``replaced-N``. The
    channels queued (none when the order was never told anything)."""
    told = [Channel(c) for c in conn.execute(
        select(notifications.c.channel).where(notifications.c.order_id == order_id)
        .distinct().order_by(notifications.c.channel)).scalars()]
    if not told:
        return []
    earlier = conn.execute(select(func.count(notifications.c.event.distinct())).where(
        notifications.c.order_id == order_id,
        notifications.c.event.like("replaced-%"))).scalar()
    return queue_event(conn, order_id, told, f"replaced-{int(earlier or 0) + 1}",
                       actor="robot", now=now)


# -- a person re-sends (robot orders notify) ------------------------------------------------------

@dataclass(frozen=True)
class Resent:
    channel: Channel
    event: str
    again: bool  # True: an unknown event queued again under its same key


@dataclass(frozen=True)
class Confirmed:
    channel: Channel
    event: str
    reference: str


def confirm_unknown(engine: Engine, order_id: int, notifiers: Mapping[Channel, Notifier],
                    channel: Channel | None, *, actor: str) -> list[Confirmed]:
    """Ask the providers that can tell (:class:`connectors.notifier.Confirming`) about the
    order's notifications whose outcome is unknown; those a provider holds become ``sent``
    (audited). Blocking (a person's command): one provider call at a time."""
    where = [notifications.c.order_id == order_id,
             notifications.c.state == NotificationState.UNKNOWN]
    if channel is not None:
        where.append(notifications.c.channel == channel.value)
    with engine.connect() as conn:
        rows = conn.execute(select(notifications).where(*where)
                            .order_by(notifications.c.id)).all()
        contact = conn.execute(select(orders.c.buyer_email, orders.c.buyer_phone)
                               .where(orders.c.id == order_id)).first()
    found: list[Confirmed] = []
    for r in rows:
        notifier = notifiers.get(Channel(r.channel))
        to = usable_contact(Channel(r.channel), contact.buyer_email, contact.buyer_phone) \
            if contact is not None else None
        if not isinstance(notifier, Confirming) or to is None:
            continue
        since = to_aware(r.sending_at or r.created_at)
        sent = asyncio.run(notifier.confirm(message_key(int(r.id), order_id), to, since))
        if sent is not None and _confirmed(engine, order_id, r, sent, actor):
            found.append(Confirmed(Channel(r.channel), str(r.event), sent.reference))
    return found


def _confirmed(engine: Engine, order_id: int, r: Any, sent: Sent, actor: str) -> bool:
    with transaction(engine) as conn:
        moved = conn.execute(update(notifications).where(
            notifications.c.id == r.id, notifications.c.state == NotificationState.UNKNOWN)
            .values(state=NotificationState.SENT, reference=sent.reference[:128] or None,
                    last_error=None, sent_at=utcnow())).rowcount
        if moved:
            audit.append(conn, actor=actor, action="notify_confirmed",
                         subject=f"order:{order_id}",
                         details={"channel": r.channel, "event": r.event})
    return bool(moved)


def resend(engine: Engine, order_id: int, shop: NotifyingShop | None,
           channel: Channel | None, *, actor: str,
           skip: Collection[Channel] = ()) -> list[Resent]:
    """Queue the order's notification again (one channel, or every channel it can use,
    but ``skip``); audited. An ``unknown`` event of a channel is re-sent under its same
    key."""
    now = utcnow()
    with transaction(engine) as conn:
        row = conn.execute(select(orders.c.state, orders.c.shop)
                           .where(orders.c.id == order_id)).first()
        if row is None:
            raise UserError(f"order {order_id} does not exist")
        if row.state not in VISIBLE:
            raise UserError(f"order {order_id} is {row.state}: only allocated or shipped "
                            "orders have something to tell the buyer")
        if shop is None or not shop.notify.channels:
            raise UserError(f"shop {row.shop!r} has no notifications turned on (notify: in "
                            "its shop file)")
        usable = channels_for(conn, order_id, shop)
        wanted = [channel] if channel is not None else usable
        for ch in wanted:
            if ch not in shop.notify.channels:
                raise UserError(f"shop {row.shop!r} has no {ch.value} notifications")
            if ch not in usable:
                raise UserError(f"order {order_id} carries no usable {ch.value} contact")
        if not wanted:
            raise UserError(f"order {order_id} carries no contact any channel can use")
        wanted = [ch for ch in wanted if ch not in skip]
        if not wanted:
            return []
        done = [_resend_one(conn, order_id, ch, actor, now) for ch in wanted]
        queue_job(conn, order_id, now)
        audit.append(conn, actor=actor, action="notify_resend", subject=f"order:{order_id}",
                     details={"events": [f"{r.channel.value}:{r.event}" for r in done],
                              "again": [r.again for r in done]})
    return done


def _resend_one(conn: Connection, order_id: int, channel: Channel, actor: str,
                now: datetime) -> Resent:
    mine = (notifications.c.order_id == order_id, notifications.c.channel == channel.value)
    unknown = conn.execute(select(notifications.c.id, notifications.c.event).where(
        *mine, notifications.c.state == NotificationState.UNKNOWN)
        .order_by(notifications.c.id).limit(1)).first()
    if unknown is not None:
        conn.execute(update(notifications).where(notifications.c.id == unknown.id)
                     .values(state=NotificationState.QUEUED, last_error=None))
        return Resent(channel, str(unknown.event), True)
    count = conn.execute(select(func.count()).select_from(notifications).where(*mine)).scalar()
    event = f"resend-{int(count or 0)}"
    try:
        with conn.begin_nested():
            conn.execute(insert(notifications).values(
                order_id=order_id, channel=channel.value, event=event,
                state=NotificationState.QUEUED, attempts=0, actor=actor, created_at=now))
    except IntegrityError:
        raise UserError("another re-send of this order was queued at the same moment; "
                        "look at `robot orders show` and try again") from None
    return Resent(channel, event, False)


def unknown_by_shop(conn: Connection) -> dict[str, list[int]]:
    """Orders with a notification whose outcome is unknown, by shop (for a person)."""
    found: dict[str, list[int]] = {}
    for shop, order_id in conn.execute(
            select(orders.c.shop, notifications.c.order_id).distinct()
            .join(orders, orders.c.id == notifications.c.order_id)
            .where(notifications.c.state == NotificationState.UNKNOWN)
            .order_by(notifications.c.order_id)):
        found.setdefault(str(shop), []).append(int(order_id))
    return found


def history(conn: Connection, order_id: int) -> list[dict[str, Any]]:
    """The order's notifications, oldest first (no contact, no text)."""
    return [dict(r._mapping) for r in conn.execute(
        select(notifications.c.channel, notifications.c.event, notifications.c.state,
               notifications.c.attempts, notifications.c.reference, notifications.c.last_error,
               notifications.c.created_at, notifications.c.sent_at)
        .where(notifications.c.order_id == order_id).order_by(notifications.c.id))]


# -- sending (the outbox's notify job) ------------------------------------------------------

@dataclass(frozen=True)
class Due:
    id: int
    channel: Channel
    event: str


@dataclass(frozen=True)
class Outcome:
    """What one notify job run leaves: rows still queued (retry), the error and wait."""

    queued: int = 0
    error: str | None = None
    retry_after: float | None = None
    in_flight: bool = False  # a row another worker is sending now: look again later


class Notifications:
    """Sends the due notifications of one order (the outbox's ``notify`` job)."""

    def __init__(self, engine: Engine, vault: Vault, shops: Mapping[str, NotifyingShop],
                 notifiers: Mapping[str, Mapping[Channel, Notifier]], *,
                 call_timeout: float, lease: timedelta) -> None:
        self.engine = engine
        self.vault = vault
        self.shops = shops
        self.notifiers = {name: dict(by_channel) for name, by_channel in notifiers.items()}
        self.call_timeout = call_timeout
        # A row still ``sending`` after this long was cut by a dead worker.
        self.abandoned_after = timedelta(seconds=call_timeout) + 2 * lease

    async def set_shop(self, name: str, notifiers: Mapping[Channel, Notifier] | None) -> None:
        """A shop (re)started or stopped by a reload: its notifiers from now on (None: it
        has none); the old ones are closed."""
        old = self.notifiers.pop(name, {})
        if notifiers:
            self.notifiers[name] = dict(notifiers)
        await _close_all(old.values())

    async def aclose(self) -> None:
        await _close_all([n for by_channel in self.notifiers.values()
                          for n in by_channel.values()])

    def queue_delivered(self, conn: Connection, order_id: int, now: datetime) -> None:
        """The shipment's transaction: the ``delivered`` event for the order's shop.

        Costs no statement when no shop notifies anyone. Database errors go up (the
        shipment's transaction is retried whole); any other failure is logged and the
        shipment is recorded without its notification: a notice never blocks a delivery.
        """
        if not any(shop.notify.channels for shop in self.shops.values()):
            return
        try:
            shop_name = conn.execute(select(orders.c.shop)
                                     .where(orders.c.id == order_id)).scalar()
            on_shipped(conn, order_id, self.shops.get(str(shop_name)), now)
        except DBAPIError:
            raise
        except Exception:  # the shipment must be recorded whatever happens here
            log.exception("notification_not_queued")

    async def run(self, order_id: int, ctx: JobOrder, *, final: bool) -> Outcome:
        """Send every due notification of the order once; ``final``: this is the job's last
        attempt (what cannot go now is failed)."""
        due, in_flight = await asyncio.to_thread(self._due, order_id)
        outcome = Outcome(in_flight=in_flight)
        if ctx.state not in VISIBLE:  # refunded or cancelled since: nothing to tell
            for row in due:
                await asyncio.to_thread(self._finish, order_id, row, NotificationState.FAILED,
                                        f"the order is {ctx.state}", None)
            return outcome
        for row in due:
            result = await self._one(order_id, row, ctx, final=final)
            if result is not None:
                outcome = Outcome(outcome.queued + 1, result.message,
                                  getattr(result, "retry_after", None), in_flight)
        return outcome

    def _due(self, order_id: int) -> tuple[list[Due], bool]:
        """The queued rows; rows cut mid-send become unknown; whether one is in flight."""
        now = utcnow()
        with transaction(self.engine) as conn:
            rows = conn.execute(select(notifications).where(
                notifications.c.order_id == order_id,
                notifications.c.state.in_([NotificationState.QUEUED,
                                           NotificationState.SENDING]))
                .order_by(notifications.c.id)).all()
            due, in_flight = [], False
            for r in rows:
                if r.state == NotificationState.QUEUED:
                    due.append(Due(int(r.id), Channel(r.channel), str(r.event)))
                elif r.sending_at is not None and r.sending_at > now - self.abandoned_after:
                    in_flight = True
                else:
                    self._cut(conn, order_id, r)
        return due, in_flight

    def _cut(self, conn: Connection, order_id: int, r: Any) -> None:
        error = "the robot stopped while sending: it may have been sent (review, then " \
                "`robot orders notify` to send it again)"
        conn.execute(update(notifications).where(notifications.c.id == r.id,
                                                 notifications.c.state == r.state)
                     .values(state=NotificationState.UNKNOWN, last_error=error))
        audit.append(conn, actor="robot", action="notify_unknown", subject=f"order:{order_id}",
                     details={"channel": r.channel, "event": r.event, "reason": "cut"})
        log.error("notification_unknown", channel=r.channel, notify_event=r.event,
                  reason="cut mid-send")

    async def _one(self, order_id: int, row: Due, ctx: JobOrder, *,
                   final: bool) -> Retriable | Fatal | None:
        """Send one row; the error when it stays queued, else None."""
        notifier = self.notifiers.get(ctx.shop, {}).get(row.channel)
        shop = self.shops.get(ctx.shop)
        channel = shop.notify.channels.get(row.channel) if shop is not None else None
        spec = channel.spec if channel is not None else None
        if notifier is None or shop is None or spec is None:
            await asyncio.to_thread(self._finish, order_id, row, NotificationState.FAILED,
                                    f"the shop has no {row.channel.value} notifier now", None)
            return None
        try:
            message = await asyncio.to_thread(self._claim, order_id, row, ctx, shop, spec)
        except Skippable as exc:
            await asyncio.to_thread(self._finish, order_id, row, NotificationState.FAILED,
                                    exc.message, None)
            return None
        if message is None:
            return None  # another worker took it
        return await self._send(order_id, row, notifier, message, final=final)

    async def _send(self, order_id: int, row: Due, notifier: Notifier, message: Message, *,
                    final: bool) -> Retriable | Fatal | None:
        try:
            sent = await asyncio.wait_for(notifier.send(message), self.call_timeout)
        except (SendUnknown, TimeoutError) as exc:
            text = exc.message if isinstance(exc, SendUnknown) else "timed out waiting for " \
                "the answer: it may have been sent"
            await asyncio.to_thread(self._finish, order_id, row, NotificationState.UNKNOWN,
                                    text, None)
            return None
        except Skippable as exc:
            await asyncio.to_thread(self._finish, order_id, row, NotificationState.FAILED,
                                    exc.message, None)
            return None
        except (Retriable, Fatal) as exc:
            state = NotificationState.FAILED if final else NotificationState.QUEUED
            await asyncio.to_thread(self._finish, order_id, row, state, exc.message, None)
            return None if final else exc
        except Exception as exc:
            await asyncio.to_thread(self._finish, order_id, row, NotificationState.UNKNOWN,
                                    f"unexpected {type(exc).__name__}", None)
            log.exception("notifier_crashed", channel=row.channel.value)
            return None
        await asyncio.to_thread(self._finish, order_id, row, NotificationState.SENT, None, sent)
        return None

    def _claim(self, order_id: int, row: Due, ctx: JobOrder, shop: NotifyingShop,
               spec: ChannelFile) -> Message | None:
        """Build the message and commit ``sending`` (codes marked seen first, when the
        channel carries them); None when the row is no longer queued."""
        now = utcnow()
        with transaction(self.engine) as conn:
            moved = conn.execute(update(notifications).where(
                notifications.c.id == row.id, notifications.c.state == NotificationState.QUEUED)
                .values(state=NotificationState.SENDING, sending_at=now,
                        attempts=notifications.c.attempts + 1)).rowcount
            if not moved:
                return None
            contact = conn.execute(select(orders.c.buyer_email, orders.c.buyer_phone)
                                   .where(orders.c.id == order_id)).one()
            to = usable_contact(row.channel, contact.buyer_email, contact.buyer_phone)
            if to is None:
                raise Skippable(f"the order carries no usable {row.channel.value} contact")
            return build_message(conn, self.vault, order_id, message_key(row.id, order_id),
                                 to, shop.notify.language, ctx, spec, now)

    def _finish(self, order_id: int, row: Due, state: NotificationState, error: str | None,
                sent: Sent | None) -> None:
        now = utcnow()
        values: dict[str, Any] = {"state": state, "last_error": short_error(error) if error
                                  else None}
        # Sent beats an "unknown" another worker wrote meanwhile; nothing else overwrites it.
        from_states = [NotificationState.SENDING, NotificationState.QUEUED]
        if sent is not None:
            values |= {"reference": sent.reference[:128] or None, "sent_at": now}
            from_states.append(NotificationState.UNKNOWN)
        with transaction(self.engine) as conn:
            moved = conn.execute(update(notifications).where(
                notifications.c.id == row.id, notifications.c.state.in_(from_states))
                .values(**values)).rowcount
            if moved and state != NotificationState.QUEUED:
                audit.append(conn, actor="robot", action=f"notify_{state.value}",
                             subject=f"order:{order_id}",
                             details={"channel": row.channel.value, "event": row.event})
        fields = {"channel": row.channel.value, "notify_event": row.event}
        if state == NotificationState.SENT:
            log.info("notification_sent", **fields)
        elif state == NotificationState.QUEUED:
            log.warning("notification_retry", error=values["last_error"], **fields)
        else:
            log.error(f"notification_{state.value}", error=values["last_error"], **fields)


async def _close_all(notifiers: Any) -> None:
    for notifier in notifiers:
        try:
            await notifier.aclose()
        except Exception:  # noqa: BLE001 - closing must not stop a shutdown or a reload
            log.warning("notifier_close_failed", notifier=type(notifier).__name__)


def build_notifiers(shops: Mapping[str, Any]) -> dict[str, dict[Channel, Notifier]]:
    """Each shop's notifiers from its ``notify`` channels (plugins through
    ``robot.notifiers``); one that fails to build is logged and left out (its events stay
    queued and fail visibly), never fatal to the shop."""
    from robot.registry import discover_notifiers

    factories, broken = discover_notifiers()
    for problem in broken:
        log.error("notifier_load_failed", notifier=problem.name, error=problem.error)
    built: dict[str, dict[Channel, Notifier]] = {}
    for name, shop in shops.items():
        config: NotifyConfig = shop.notify
        for channel, spec in config.channels.items():
            factory = factories.get(spec.notifier)
            try:
                if factory is None:
                    raise LookupError(f"notifier {spec.notifier!r} is not installed")
                built.setdefault(name, {})[channel] = factory.create(spec.config, name)
            except Exception as exc:  # noqa: BLE001 - one broken notifier must not stop the shop
                log.error("notifier_failed", shop=name, channel=channel.value,
                          error=type(exc).__name__)
    return built
