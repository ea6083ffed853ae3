"""Pickup links: one unguessable, revocable, expiring URL per order, for the buyer.

A link is a ``pickup_links`` row. Its token is *derived*, never stored::

    token = base64url(HMAC-SHA256(link_key, "pickup-link-v1|<order id>|<link id>")[:24])

and only ``SHA-256(token)`` is kept (``token_hash``), for the look-up. Deriving the token lets
the write-back render the same link again on every retry (the seller memo, the lookup form's
redirect) without keeping anything in the database that would open the page: a copy of the
database alone yields no working link. ``link_key`` is derived from the vault's fingerprint
key, which never rotates, so links survive key rotation; the derivation label holds a NUL,
which no imported code can contain, so no stored fingerprint can ever equal the key.

A link is created once, when the write-back first asks for it (:func:`pickup_url_hook`, the
Dispatcher's ``pickup_url``), and reused until it expires or is revoked; then the next
request makes a new one. Revoking (``robot orders revoke-link``) ends every live link of an
order at once.

This module must never store or log a token, and never compare one except in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Connection, Engine, bindparam, insert, or_, select, update
from sqlalchemy.exc import DBAPIError

from robot import audit
from robot.clock import utcnow
from robot.config import ShopConfig
from robot.db import dialect_of, first, transaction, write
from robot.log import get_logger
from robot.schema import orders, pickup_links
from robot.states import VISIBLE, OrderState
from robot.vault import Vault

log = get_logger(__name__)

TOKEN_BYTES = 24  # 192 bits: far beyond guessing, 32 characters in a URL
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{32}")
#: Order states whose codes a buyer may see (claimed, committed, not cancelled).
VISIBLE_STATES = VISIBLE
#: Order states in which a link opens only the order's top-ups (being bought, or failed):
#: the buyer follows their progress; codes stay hidden until the order is allocated.
TOPUP_STATES = (OrderState.SOURCING, OrderState.FAILED)


def derive_key(vault: Vault, purpose: str) -> bytes:
    """A 32-byte key for ``purpose``, derived from the vault's fingerprint key.

    The label starts with NUL: imported codes never contain control characters, so the
    derived key can never appear as a stored code fingerprint.
    """
    return vault.fingerprint(f"\x00robot-http-v1\x00{purpose}")


def link_key(vault: Vault) -> bytes:
    return derive_key(vault, "pickup-link")


def token_for(key: bytes, order_id: int, link_id: int) -> str:
    mac = hmac.new(key, f"pickup-link-v1|{order_id}|{link_id}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()[:TOKEN_BYTES]).decode("ascii")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Link:
    id: int
    order_id: int
    token: str
    expires_at: datetime | None


@dataclass(frozen=True)
class LinkedOrder:
    """What a valid token opens."""

    link_id: int
    order_id: int
    shop: str
    platform_order_id: str
    state: str


def _live(now: datetime) -> list[ColumnElement[bool]]:
    return [pickup_links.c.revoked_at.is_(None),
            or_(pickup_links.c.expires_at.is_(None), pickup_links.c.expires_at > now)]


# Built once: every shipment runs them.
_INSERT_LINK = insert(pickup_links)
_SET_TOKEN = update(pickup_links).where(pickup_links.c.id == bindparam("b_id"))
_LOCK_ORDER = select(orders.c.id).where(orders.c.id == bindparam("b_id")).with_for_update()
_LIVE_LINK = (select(pickup_links.c.id, pickup_links.c.expires_at)
              .where(pickup_links.c.order_id == bindparam("b_id"),
                     pickup_links.c.revoked_at.is_(None),
                     or_(pickup_links.c.expires_at.is_(None),
                         pickup_links.c.expires_at > bindparam("b_now")))
              .order_by(pickup_links.c.id.desc()).limit(1))


def ensure_link_tx(conn: Connection, key: bytes, order_id: int, *, ttl: timedelta | None,
                   now: datetime) -> Link:
    """The order's live link, or a new one; inside the caller's transaction."""
    if dialect_of(conn) != "sqlite":  # SQLite's BEGIN IMMEDIATE already serializes writers
        # One link per order even when two processes ask at once.
        first(conn, _LOCK_ORDER, {"b_id": order_id})
    row = first(conn, _LIVE_LINK, {"b_id": order_id, "b_now": now})
    if row is not None:
        return Link(int(row.id), order_id, token_for(key, order_id, int(row.id)), row.expires_at)
    expires = now + ttl if ttl is not None else None
    # The token depends on the row id, which exists only after the insert: insert with a
    # unique placeholder hash, then set the real one.
    placeholder = hashlib.sha256(f"pending|{order_id}|{now.isoformat()}".encode()).hexdigest()
    inserted = write(conn, _INSERT_LINK, {
        "order_id": order_id, "token_hash": placeholder, "created_at": now, "expires_at": expires,
    }).inserted_primary_key
    assert inserted is not None
    link_id = int(inserted[0])
    token = token_for(key, order_id, link_id)
    write(conn, _SET_TOKEN, {"b_id": link_id, "token_hash": token_hash(token)})
    return Link(link_id, order_id, token, expires)


def ensure_link(engine: Engine, key: bytes, order_id: int, *, ttl: timedelta | None,
                now: datetime | None = None) -> Link:
    with transaction(engine) as conn:
        return ensure_link_tx(conn, key, order_id, ttl=ttl, now=now or utcnow())


def resolve_tx(conn: Connection, key: bytes, token: str, now: datetime, *,
               states: tuple[OrderState, ...] = VISIBLE_STATES) -> LinkedOrder | None:
    """The order a token opens, or None for unknown, expired, revoked or not-yet/no-longer
    visible orders (callers answer all of these the same way); ``states``: the order states
    the caller shows."""
    if not TOKEN_RE.fullmatch(token):
        return None
    row = conn.execute(
        select(pickup_links.c.id, pickup_links.c.order_id, pickup_links.c.revoked_at,
               pickup_links.c.expires_at, orders.c.shop, orders.c.platform_order_id,
               orders.c.state)
        .join(orders, orders.c.id == pickup_links.c.order_id)
        .where(pickup_links.c.token_hash == token_hash(token))
    ).first()
    if row is None:
        return None
    expected = token_for(key, int(row.order_id), int(row.id))
    genuine = hmac.compare_digest(expected.encode(), token.encode())
    live = row.revoked_at is None and (row.expires_at is None or row.expires_at > now)
    if not (genuine and live and row.state in states):
        return None
    return LinkedOrder(int(row.id), int(row.order_id), row.shop, row.platform_order_id,
                       row.state)


def resolve(engine: Engine, key: bytes, token: str, *,
            now: datetime | None = None) -> LinkedOrder | None:
    with engine.connect() as conn:
        return resolve_tx(conn, key, token, now or utcnow())


def revoke(engine: Engine, order_id: int, *, actor: str, now: datetime | None = None) -> int:
    """End every live link of an order (audited); returns how many were live."""
    now = now or utcnow()
    with transaction(engine) as conn:
        count = int(conn.execute(
            update(pickup_links)
            .where(pickup_links.c.order_id == order_id, pickup_links.c.revoked_at.is_(None))
            .values(revoked_at=now)
        ).rowcount)
        audit.append(conn, actor=actor, action="pickup_revoke", subject=f"order:{order_id}",
                     details={"links": count})
    return count


def url_for(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/p/{token}"


def ttl_of(shop: ShopConfig | None) -> timedelta | None:
    if shop is None or shop.pickup.link_ttl is None:
        return None
    return timedelta(seconds=shop.pickup.link_ttl)


class PickupHook:
    """The Dispatcher's ``pickup_url``: the order's link (made on first use), or None when
    the order's shop has the pickup page turned off.

    :meth:`in_tx` works inside the write-back's own transaction (the one that reads the
    job's order); calling the hook runs it in a short transaction of its own. Database
    errors propagate (the dispatcher waits outages out); anything else is logged and the
    memo goes without a link.
    """

    def __init__(self, engine: Engine, vault: Vault, shops: Mapping[str, ShopConfig],
                 public_url: str) -> None:
        self._engine = engine
        self._key = link_key(vault)
        self._shops = shops
        self._public_url = public_url

    def __call__(self, order_id: int) -> str | None:
        with transaction(self._engine) as conn:
            shop_name = conn.execute(select(orders.c.shop)
                                     .where(orders.c.id == order_id)).scalar()
            if shop_name is None:
                return None
            return self.in_tx(conn, order_id, str(shop_name))

    def in_tx(self, conn: Connection, order_id: int, shop_name: str) -> str | None:
        shop = self._shops.get(shop_name)
        if shop is None or not shop.pickup.enabled:
            return None
        try:
            link = ensure_link_tx(conn, self._key, order_id, ttl=ttl_of(shop), now=utcnow())
        except DBAPIError:
            raise
        except Exception as exc:  # noqa: BLE001 - a missing link must not stop a shipment
            log.error("pickup_link_failed", order_id=order_id, error=type(exc).__name__)
            return None
        return url_for(self._public_url, link.token)


def pickup_url_hook(engine: Engine, vault: Vault, shops: Mapping[str, ShopConfig],
                    public_url: str) -> PickupHook:
    """The write-back's pickup-link hook for these shops (see :class:`PickupHook`)."""
    return PickupHook(engine, vault, shops, public_url)
