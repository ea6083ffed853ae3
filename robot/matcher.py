"""Matching order lines to pools, and claiming codes from stock atomically.

The claim is the heart of invariant 1 (one code, one order): codes leave ``stock`` in a
single guarded statement inside the allocating transaction, and ``deliveries`` has
``UNIQUE(code_id)`` behind it.

* PostgreSQL: ``WITH c AS (SELECT … FOR UPDATE SKIP LOCKED LIMIT n) DELETE … USING c
  RETURNING`` — the CTE is evaluated once, so it can never claim more than n rows.
* MySQL / MariaDB: ``SELECT … FOR UPDATE SKIP LOCKED LIMIT n`` then ``DELETE … WHERE code_id
  IN (…)`` with the affected row count checked.
* SQLite: the transaction holds the write lock (``BEGIN IMMEDIATE``); ``DELETE … RETURNING``.

This module never decrypts a code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import Connection, delete, select, text

from connectors.base import OrderLine
from robot.db import dialect_of, read
from robot.schema import stock


class PoolShareLike(Protocol):
    @property
    def pool(self) -> str: ...
    @property
    def quantity(self) -> int: ...


class MappingLike(Protocol):
    """One entry of a shop's ``items:`` (see robot.config.SkuMapping)."""

    @property
    def item_id(self) -> str | None: ...
    @property
    def sku_id(self) -> str | None: ...
    @property
    def outer_id(self) -> str | None: ...
    @property
    def pools(self) -> Sequence[PoolShareLike]: ...


@dataclass(frozen=True)
class Need:
    """Codes one order line needs from one pool."""

    pool: str
    per_unit: int


def resolve_line(items: Sequence[MappingLike], line: OrderLine) -> list[Need] | None:
    """The pools a line draws from, or None when its SKU is not mapped.

    The most specific key wins: SKU id, then the merchant's outer id, then the item id.
    """
    for key in ("sku_id", "outer_id", "item_id"):
        value = getattr(line, key)
        if not value:
            continue
        for mapping in items:
            if getattr(mapping, key) == value:
                return [Need(share.pool, share.quantity) for share in mapping.pools]
    return None


_PG_CLAIM = text(
    """
    WITH c AS (
        SELECT code_id FROM stock
        WHERE pool_id = :pool_id AND expires_at > :now
        ORDER BY expires_at, code_id
        LIMIT :n
        FOR UPDATE SKIP LOCKED
    )
    DELETE FROM stock s USING c WHERE s.code_id = c.code_id
    RETURNING s.code_id
    """
)

_SQLITE_CLAIM = text(
    """
    DELETE FROM stock WHERE code_id IN (
        SELECT code_id FROM stock
        WHERE pool_id = :pool_id AND expires_at > :now
        ORDER BY expires_at, code_id
        LIMIT :n
    )
    RETURNING code_id
    """
)


def claim(conn: Connection, pool_id: int, n: int, now: datetime) -> list[int]:
    """Take up to ``n`` unexpired codes of a pool out of stock, earliest expiry first.

    Returns the claimed code ids (fewer than ``n`` when stock is short: the caller rolls
    back). Must run inside the allocating transaction.
    """
    if n <= 0:
        return []
    dialect = dialect_of(conn)
    params = {"pool_id": pool_id, "now": now, "n": n}
    if dialect == "postgresql":
        ids = [int(r[0]) for r in read(conn, _PG_CLAIM, params)]
    elif dialect == "sqlite":
        ids = [int(r[0]) for r in read(conn, _SQLITE_CLAIM, params)]
    else:
        picked = [
            int(r[0])
            for r in conn.execute(
                select(stock.c.code_id)
                .where(stock.c.pool_id == pool_id, stock.c.expires_at > now)
                .order_by(stock.c.expires_at, stock.c.code_id)
                .limit(n)
                .with_for_update(skip_locked=True)
            )
        ]
        if not picked:
            return []
        deleted = conn.execute(delete(stock).where(stock.c.code_id.in_(picked))).rowcount
        if deleted != len(picked):  # rows we hold locks on cannot vanish; refuse if they did
            raise RuntimeError(f"claim deleted {deleted} of {len(picked)} locked stock rows")
        ids = picked
    return sorted(ids)
