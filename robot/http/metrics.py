"""``/metrics``: Prometheus text from a registry of the app's own (never the global one).

Gauges (orders by shop and state, available stock per pool, outbox backlog) are computed
from the database at each scrape, so every process reports the same, shared truth. The poll
error counter is in-process: the daemon calls :meth:`Metrics.poll_error`.

The shipping latency histogram (paid → shipped) is also fed from the database rather than by
a hook in the dispatcher: at each scrape, orders whose ``shipped_at`` falls after the previous
scrape's high-water mark are observed, latency measured from ``paid_at`` (``received_at``
when the platform gave no payment time). The window stops :data:`SHIPPED_GRACE` before now
so that a shipment whose transaction commits a moment after its ``shipped_at`` was stamped is
still counted once. Consequences: orders shipped before this process started are not
counted, and with several processes on one database each process observes every shipment
(aggregate with ``max``, not ``sum``, across instances).

This module must never put a code, a buyer id or a token into a label.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import Engine

from robot.clock import utcnow
from robot.http import queries

SHIPPED_GRACE = timedelta(seconds=30)
LATENCY_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)


class Metrics:
    """The robot's metric families in their own :class:`CollectorRegistry`."""

    def __init__(self, *, started_at: datetime | None = None,
                 grace: timedelta = SHIPPED_GRACE) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.orders = Gauge("robot_orders", "Orders by shop and state.", ["shop", "state"],
                            registry=r)
        self.stock = Gauge("robot_stock_available", "Codes available for sale, per pool.",
                           ["pool"], registry=r)
        self.backlog = Gauge("robot_outbox_backlog",
                             "Ship jobs pending more than 5 minutes past their due time.",
                             registry=r)
        self.database_up = Gauge("robot_database_up",
                                 "1 if the last scrape could read the database.", registry=r)
        self.poll_errors = Counter("robot_poll_errors", "Failed polls, per shop and kind.",
                                   ["shop", "kind"], registry=r)
        self.shipping_latency = Histogram(
            "robot_shipping_latency_seconds", "Seconds from payment to platform shipment.",
            buckets=LATENCY_BUCKETS, registry=r)
        self._grace = grace
        self._mark = started_at or utcnow()
        self._lock = threading.Lock()

    def poll_error(self, shop: str, kind: str) -> None:
        """The daemon's hook: one poll of ``shop`` (``poll`` or ``refund``) failed."""
        self.poll_errors.labels(shop=shop, kind=kind).inc()

    def refresh(self, engine: Engine, now: datetime | None = None) -> None:
        """Recompute the gauges and observe new shipments (blocking: call in a thread)."""
        now = now or utcnow()
        with self._lock:
            until = max(self._mark, now - self._grace)
            try:
                with engine.connect() as conn:
                    by_state = queries.orders_by_shop_state(conn)
                    by_pool = queries.stock_by_pool(conn)
                    backlog = queries.outbox_backlog(conn, now)
                    latencies = queries.shipped_between(conn, self._mark, until)
            except Exception:  # noqa: BLE001 - an outage shows as robot_database_up 0
                self.database_up.set(0)
                return
            self.database_up.set(1)
            self.orders.clear()
            for (shop, state), count in by_state.items():
                self.orders.labels(shop=shop, state=state).set(count)
            self.stock.clear()
            for pool, count in by_pool.items():
                self.stock.labels(pool=pool).set(count)
            self.backlog.set(backlog)
            for seconds in latencies:
                self.shipping_latency.observe(seconds)
            self._mark = until

    def render(self) -> bytes:
        return generate_latest(self.registry)
