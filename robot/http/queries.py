"""Read-only queries shared by ``/healthz`` and ``/metrics``.

Each takes an open connection and returns plain data; none of them writes or decrypts.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, func, select

from robot.schema import orders, outbox, pools, shop_state, stock
from robot.states import OutboxState

BACKLOG_AGE = timedelta(minutes=5)


def orders_by_shop_state(conn: Connection) -> dict[tuple[str, str], int]:
    return {(str(r[0]), str(r[1])): int(r[2]) for r in conn.execute(
        select(orders.c.shop, orders.c.state, func.count()).group_by(orders.c.shop,
                                                                     orders.c.state))}


def stock_by_pool(conn: Connection) -> dict[str, int]:
    """Available codes per pool (pools without stock show 0)."""
    counts = {int(r[0]): int(r[1]) for r in conn.execute(
        select(stock.c.pool_id, func.count()).group_by(stock.c.pool_id))}
    return {str(r.name): counts.get(int(r.id), 0)
            for r in conn.execute(select(pools.c.id, pools.c.name))}


def outbox_backlog(conn: Connection, now: datetime) -> int:
    """Pending ship jobs that were due more than :data:`BACKLOG_AGE` ago."""
    return int(conn.execute(select(func.count()).select_from(outbox).where(
        outbox.c.kind == "ship", outbox.c.state == OutboxState.PENDING,
        outbox.c.due_at < now - BACKLOG_AGE)).scalar_one())


def shop_states(conn: Connection) -> dict[str, tuple[datetime | None, bool, str | None]]:
    """Per shop: (last successful poll, paused, paused reason)."""
    return {str(r.shop): (r.last_poll_ok_at, bool(r.paused), r.paused_reason)
            for r in conn.execute(select(shop_state.c.shop, shop_state.c.last_poll_ok_at,
                                         shop_state.c.paused, shop_state.c.paused_reason))}


def shipped_between(conn: Connection, after: datetime, until: datetime) -> list[float]:
    """Seconds from payment (or receipt, when the platform gave no payment time) to
    shipment, for orders shipped in ``(after, until]``."""
    rows = conn.execute(select(orders.c.paid_at, orders.c.received_at, orders.c.shipped_at)
                        .where(orders.c.shipped_at > after, orders.c.shipped_at <= until))
    return [max(0.0, (r.shipped_at - (r.paid_at or r.received_at)).total_seconds())
            for r in rows]
