"""Per-shop durable state: poll cursors, the polling lease, poll health, the platform's
clock offset, and sealed secrets.

The lease makes polling of a shop single-leader across processes: a guarded ``UPDATE`` takes
it only when it is free, expired, or already ours, so the database decides, never a local
lock. A process that dies simply stops renewing; another takes over once ``lease_until``
passes. Secrets (refreshed access tokens) are sealed with the vault before they are stored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from robot.clock import utcnow
from robot.db import transaction
from robot.schema import shop_secrets, shop_state
from robot.vault import Vault


def ensure_row(engine: Engine, shop: str) -> None:
    """Create the shop's state row if missing (safe when several processes race)."""
    with engine.connect() as conn:
        if conn.execute(select(shop_state.c.shop).where(shop_state.c.shop == shop)).first():
            return
    try:
        with transaction(engine) as conn:
            conn.execute(insert(shop_state).values(shop=shop, paused=False, updated_at=utcnow()))
    except IntegrityError:
        pass  # another process created it first


def _takeable(owner: str, now: datetime) -> ColumnElement[bool]:
    """A lease ``owner`` may take: free, expired, or already its own."""
    return or_(shop_state.c.lease_owner == owner, shop_state.c.lease_owner.is_(None),
               shop_state.c.lease_until < now)


def take_lease(engine: Engine, shop: str, owner: str, ttl: timedelta,
               now: datetime | None = None) -> bool:
    """Become (or stay) the shop's polling leader for ``ttl``; False if someone else is."""
    now = now or utcnow()
    with transaction(engine) as conn:
        result = conn.execute(
            update(shop_state)
            .where(shop_state.c.shop == shop,
                   _takeable(owner, now))
            .values(lease_owner=owner, lease_until=now + ttl)
        )
        return result.rowcount == 1


def release_lease(engine: Engine, shop: str, owner: str) -> None:
    with transaction(engine) as conn:
        conn.execute(update(shop_state)
                     .where(shop_state.c.shop == shop, shop_state.c.lease_owner == owner)
                     .values(lease_owner=None, lease_until=None))


def take_leases(engine: Engine, names: Sequence[str], owner: str, ttl: timedelta,
                now: datetime | None = None) -> set[str]:
    """:func:`take_lease` for several shops in one transaction: the shops ``owner`` leads."""
    now = now or utcnow()
    names = sorted(names)  # one row order for every process: no deadlock between renewals
    with transaction(engine) as conn:
        conn.execute(
            update(shop_state)
            .where(shop_state.c.shop.in_(names),
                   _takeable(owner, now))
            .values(lease_owner=owner, lease_until=now + ttl)
        )
        return {str(r[0]) for r in conn.execute(
            select(shop_state.c.shop)
            .where(shop_state.c.shop.in_(names), shop_state.c.lease_owner == owner))}


def paused_shops(engine: Engine) -> list[tuple[str, str | None]]:
    """Every paused shop with the reason it was paused, by name."""
    with engine.connect() as conn:
        return [(str(r.shop), r.paused_reason) for r in conn.execute(
            select(shop_state.c.shop, shop_state.c.paused_reason)
            .where(shop_state.c.paused == True)  # noqa: E712 - SQL comparison
            .order_by(shop_state.c.shop))]


@dataclass(frozen=True)
class PollStart:
    """What a poll reads first: whether the shop is paused, and the stored cursor."""

    paused: bool
    cursor: dict[str, Any] | None


def poll_start(engine: Engine, shop: str, kind: str = "poll") -> PollStart:
    """The shop's pause flag and ``kind``'s cursor, in one read."""
    column = shop_state.c.poll_cursor if kind == "poll" else shop_state.c.refund_cursor
    with engine.connect() as conn:
        row = conn.execute(select(shop_state.c.paused, column)
                           .where(shop_state.c.shop == shop)).first()
    if row is None:
        return PollStart(False, None)
    return PollStart(bool(row[0]), json.loads(row[1]) if row[1] else None)


def load_cursor(engine: Engine, shop: str, kind: str = "poll") -> dict[str, Any] | None:
    return poll_start(engine, shop, kind).cursor


def save_poll(engine: Engine, shop: str, cursor: Mapping[str, Any] | None, *,
              kind: str = "poll", ok: bool = True, error: str | None = None,
              owner: str | None = None) -> None:
    """Record a poll's outcome; the cursor only moves when the step succeeded."""
    now = utcnow()
    values: dict[str, Any] = {"last_poll_at": now, "updated_at": now}
    if ok:
        values["last_poll_ok_at"] = now
        values["last_error"] = None
        if cursor is not None:
            key = "poll_cursor" if kind == "poll" else "refund_cursor"
            values[key] = json.dumps(dict(cursor), sort_keys=True, default=str)
    else:
        values["last_error"] = error
    with transaction(engine) as conn:
        stmt = update(shop_state).where(shop_state.c.shop == shop)
        if owner is not None:  # a leader that lost its lease must not move the cursor
            stmt = stmt.where(shop_state.c.lease_owner == owner)
        conn.execute(stmt.values(**values))


def save_clock(engine: Engine, shop: str, offset_seconds: float, at: datetime) -> None:
    """Record the platform's clock offset from ours (seconds) as measured at ``at``."""
    with transaction(engine) as conn:
        conn.execute(update(shop_state).where(shop_state.c.shop == shop).values(
            clock_offset_ms=round(offset_seconds * 1000), clock_checked_at=at))


class DbShopContext:
    """The :class:`connectors.base.ShopContext` the core lends each connector."""

    def __init__(self, engine: Engine, vault: Vault, shop: str) -> None:
        self._engine = engine
        self._vault = vault
        self._shop = shop

    @property
    def shop(self) -> str:
        return self._shop

    def _context(self, name: str) -> str:
        return f"shop:{self._shop}:{name}"

    def load_secret(self, name: str) -> str | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(shop_secrets.c.key_id, shop_secrets.c.ciphertext).where(
                shop_secrets.c.shop == self._shop, shop_secrets.c.name == name)).first()
        if row is None:
            return None
        return self._vault.unseal(row.key_id, row.ciphertext, context=self._context(name))

    def store_secret(self, name: str, value: str) -> None:
        key_id, blob = self._vault.seal(value, context=self._context(name))
        now = utcnow()
        try:
            with transaction(self._engine) as conn:
                _upsert_secret(conn, self._shop, name, key_id, blob, now)
        except IntegrityError:
            # Another process stored it first, between our update and our insert (two robots
            # renewing one shop's token at once): now the update finds its row.
            with transaction(self._engine) as conn:
                _upsert_secret(conn, self._shop, name, key_id, blob, now)


def _upsert_secret(conn: Connection, shop: str, name: str, key_id: str, blob: bytes,
                   now: datetime) -> None:
    updated = conn.execute(update(shop_secrets)
                           .where(shop_secrets.c.shop == shop, shop_secrets.c.name == name)
                           .values(key_id=key_id, ciphertext=blob, updated_at=now)).rowcount
    if not updated:
        conn.execute(insert(shop_secrets).values(shop=shop, name=name, key_id=key_id,
                                                 ciphertext=blob, updated_at=now))
