"""``/metrics``: Prometheus series computed from the database, plus the daemon's counters."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, update

from robot.clock import utcnow
from robot.http.metrics import Metrics
from robot.schema import orders
from robot.vault import Vault
from tests.factories import seed_codes
from tests.http.conftest import make_http


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_expose_orders_stock_backlog_errors_and_latency(engine: Engine,
                                                                vault: Vault) -> None:
    """Each family is present with values that follow the database and the hooks."""
    seed_codes(engine, vault, "p1", 5)
    # No grace window: a shipment is observed at the first scrape after it.
    h = make_http(engine, vault, metrics=Metrics(started_at=utcnow() - timedelta(hours=1),
                                                 grace=timedelta(0)))
    first = h.order("M1")
    h.order("M2")
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(update(orders).where(orders.c.id == first).values(
            state="shipped", paid_at=now - timedelta(seconds=42), shipped_at=now))
    h.ctx.metrics.poll_error("mem", "poll")
    h.ctx.metrics.poll_error("mem", "poll")
    with h.client:
        response = h.client.get("/metrics")
        again = samples(h.client.get("/metrics").text)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    got = samples(response.text)
    assert got[("robot_orders", (("shop", "mem"), ("state", "shipped")))] == 1
    assert got[("robot_orders", (("shop", "mem"), ("state", "allocated")))] == 1
    assert got[("robot_stock_available", (("pool", "p1"),))] == 3
    assert got[("robot_outbox_backlog", ())] == 0
    assert got[("robot_database_up", ())] == 1
    assert got[("robot_poll_errors_total", (("kind", "poll"), ("shop", "mem")))] == 2
    assert got[("robot_shipping_latency_seconds_count", ())] == 1
    assert got[("robot_shipping_latency_seconds_bucket", (("le", "60.0"),))] == 1
    assert got[("robot_shipping_latency_seconds_bucket", (("le", "30.0"),))] == 0
    # A second scrape does not count the same shipment again.
    assert again[("robot_shipping_latency_seconds_count", ())] == 1
