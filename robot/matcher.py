"""Matching order lines to pools, and claiming codes from stock atomically.

The claim is the heart of invariant 1 (one code, one order): codes leave ``stock`` in a
single guarded statement inside the allocating transaction, and ``deliveries`` has
``UNIQUE(code_id)`` behind it.

* PostgreSQL: ``WITH c AS (SELECT … FOR UPDATE SKIP LOCKED LIMIT n) DELETE … USING c
  RETURNING`` — the CTE is evaluated once, so it can never claim more than n rows.
* MySQL / MariaDB: ``SELECT … FOR UPDATE SKIP LOCKED LIMIT n`` then ``DELETE … WHERE code_id
  IN (…)`` with the affected row count checked.
* SQLite: the transaction holds the write lock (``BEGIN IMMEDIATE``); ``DELETE … RETURNING``.

Orders taken in together (a group commit's batch, :mod:`robot.groupcommit`) claim as a set:
:func:`claim_ahead` takes the batch's codes per pool in that same statement, :func:`claim`
hands them out order by order, and :func:`give_back` returns whatever no delivery took.

This module never decrypts a code.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy import Connection, bindparam, delete, insert, select, text

from connectors.base import OrderLine
from robot.db import dialect_of, keep_for_tx, pop_tx_value, read, tx_value, write_many
from robot.schema import BigId, Timestamp, deliveries, pools, stock


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
    RETURNING s.code_id, s.expires_at
    """
).columns(code_id=BigId, expires_at=Timestamp)

_SQLITE_CLAIM = text(
    """
    DELETE FROM stock WHERE code_id IN (
        SELECT code_id FROM stock
        WHERE pool_id = :pool_id AND expires_at > :now
        ORDER BY expires_at, code_id
        LIMIT :n
    )
    RETURNING code_id, expires_at
    """
).columns(code_id=BigId, expires_at=Timestamp)


def claim(conn: Connection, pool_id: int, n: int, now: datetime) -> list[int]:
    """Take up to ``n`` unexpired codes of a pool out of stock, earliest expiry first.

    Returns the claimed code ids (fewer than ``n`` when stock is short: the caller rolls
    back). Must run inside the allocating transaction. Codes the transaction claimed ahead
    for its batch (:func:`claim_ahead`) are handed out first, in their order.
    """
    if n <= 0:
        return []
    got = _from_ahead(conn, pool_id, n, now)
    if len(got) < n:
        got.extend(cid for cid, _expires in _take(conn, pool_id, n - len(got), now))
    return sorted(got)


def _take(conn: Connection, pool_id: int, n: int, now: datetime) -> list[tuple[int, datetime]]:
    """Delete up to ``n`` unexpired stock rows of a pool, earliest expiry first, in one
    guarded statement (two on MySQL / MariaDB): ``(code_id, expires_at)`` in that order."""
    dialect = dialect_of(conn)
    params = {"pool_id": pool_id, "now": now, "n": n}
    if dialect == "postgresql":
        rows = read(conn, _PG_CLAIM, params)
    elif dialect == "sqlite":
        rows = read(conn, _SQLITE_CLAIM, params)
    else:
        rows = list(conn.execute(
            select(stock.c.code_id, stock.c.expires_at)
            .where(stock.c.pool_id == pool_id, stock.c.expires_at > now)
            .order_by(stock.c.expires_at, stock.c.code_id)
            .limit(n)
            .with_for_update(skip_locked=True)
        ))
        if rows:
            deleted = conn.execute(
                delete(stock).where(stock.c.code_id.in_([int(r[0]) for r in rows]))).rowcount
            if deleted != len(rows):  # rows we hold locks on cannot vanish; refuse if they did
                raise RuntimeError(f"claim deleted {deleted} of {len(rows)} locked stock rows")
    return sorted(((int(r[0]), r[1]) for r in rows), key=lambda r: (r[1], r[0]))


def find_pools(conn: Connection, names: Iterable[str]) -> dict[str, int]:
    """``name -> pool id`` of the pools among ``names`` that exist."""
    wanted = sorted(set(names))
    if len(wanted) == 1:  # the usual case, on the driver's path (no expanding IN)
        found = read(conn, _POOL_ID, {"b_name": wanted[0]})
    else:
        found = list(conn.execute(_POOL_IDS, {"b_names": wanted})) if wanted else []
    return {str(r[0]): int(r[1]) for r in found}


_POOL_ID = select(pools.c.name, pools.c.id).where(pools.c.name == bindparam("b_name"))
_POOL_IDS = select(pools.c.name, pools.c.id).where(
    pools.c.name.in_(bindparam("b_names", expanding=True)))


# ------------------------------------------------------------------ claims for a batch

#: ``Connection.info`` key of the codes a transaction claimed ahead (:func:`claim_ahead`).
_AHEAD = "robot_claimed_ahead"


@dataclass
class _Ahead:
    """Codes claimed ahead by one transaction: per pool, those not handed out yet (in
    claim order), every row claimed (to put back what no delivery took), and those handed
    out."""

    left: dict[int, deque[tuple[int, datetime]]]
    rows: list[tuple[int, int, datetime]]
    handed: list[int] = field(default_factory=list)  # handed out by claim()


def claim_ahead(conn: Connection, needs: Mapping[str, int], now: datetime) -> int:
    """Claim, in one statement per pool, the codes a batch of orders taken in together
    will need (``pool name -> codes``): :func:`claim` in this transaction hands them out
    first, so the batch's orders each take theirs without a statement of their own. The
    same guarantees as order by order: earliest expiry first, ``SKIP LOCKED`` where the
    database has it, and each order still all-or-none (its own savepoint). Must be paired
    with :func:`give_back` before the commit. Returns the codes claimed."""
    wanted = {name: count for name, count in needs.items() if count > 0}
    if not wanted:
        return 0
    ahead = _Ahead({}, [])
    for name, pool_id in sorted(find_pools(conn, wanted).items()):
        taken = _take(conn, pool_id, wanted[name], now)
        ahead.left[pool_id] = deque(taken)
        ahead.rows.extend((cid, pool_id, expires) for cid, expires in taken)
    keep_for_tx(conn, _AHEAD, ahead)
    return len(ahead.rows)


def give_back(conn: Connection) -> int:
    """Put back in stock, as they were, the codes :func:`claim_ahead` claimed that no
    delivery of this transaction holds (orders held, known, short of another pool, or
    rolled back to their savepoint); the number put back. Codes :func:`claim` handed out
    are looked up in ``deliveries`` (one statement), so a unit rolled back anywhere never
    loses a code; those never handed out go back without a look."""
    ahead = pop_tx_value(conn, _AHEAD)
    if ahead is None or not ahead.rows:
        return 0
    delivered = _delivered(conn, ahead.handed)
    back = [{"code_id": cid, "pool_id": pool_id, "expires_at": expires}
            for cid, pool_id, expires in ahead.rows if cid not in delivered]
    write_many(conn, _RESTOCK, back)
    return len(back)


def _delivered(conn: Connection, ids: Sequence[int]) -> set[int]:
    """Which of ``ids`` a delivery holds."""
    if not ids:
        return set()
    low, high = min(ids), max(ids)
    if high - low <= 4 * len(ids) + 64:  # codes of a claim are mostly neighbours: one range
        found = {int(r[0]) for r in read(conn, _DELIVERED_BETWEEN, {"b_low": low,
                                                                    "b_high": high})}
    else:
        found = set()
        for start in range(0, len(ids), ID_CHUNK):
            found.update(int(r[0]) for r in conn.execute(
                select(deliveries.c.code_id)
                .where(deliveries.c.code_id.in_(ids[start:start + ID_CHUNK]))))
    return found.intersection(ids)


_DELIVERED_BETWEEN = select(deliveries.c.code_id).where(
    deliveries.c.code_id.between(bindparam("b_low"), bindparam("b_high")))


def forget_ahead(conn: Connection) -> None:
    """Drop what this connection claimed ahead (its transaction is over, rolled back). A
    connection invalidated (its session killed) kept nothing: its ``info`` went with it."""
    if not conn.invalidated:
        conn.info.pop(_AHEAD, None)


def _from_ahead(conn: Connection, pool_id: int, n: int, now: datetime) -> list[int]:
    ahead = tx_value(conn, _AHEAD)
    if ahead is None:
        return []
    left = ahead.left.get(pool_id)
    got: list[int] = []
    while left and len(got) < n:
        cid, expires = left.popleft()
        if expires > now:  # (one that expired since is put back by give_back)
            got.append(cid)
    ahead.handed.extend(got)
    return got


_RESTOCK = insert(stock)
#: Ids per ``IN (...)`` list (well under every driver's limit).
ID_CHUNK = 500
