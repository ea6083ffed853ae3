"""A job's log context is bound once: every line logged while it runs names its shop and order.

Write-back jobs bind ``order_id``, ``job`` and ``shop``; polls, sweeps and events bind the
``shop`` (and which poll). Lines logged by the code a job calls (the connector, the
pipeline) carry them without being told; concurrent jobs keep their own; nothing is left
bound once a job ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Engine
from structlog.testing import capture_logs

from connectors.base import PollResult, Shipment, ShipOutcome
from connectors.memory import MemoryConnector, MemoryPlatform
from robot import pipeline, poller
from robot.clock import utcnow
from robot.errors import BadPlatformData
from robot.log import get_logger
from robot.outbox import Dispatcher, RetryPolicy, claim_jobs
from robot.vault import Vault
from tests.factories import Shop, paid_order, seed_codes, sku

SHOP = Shop(items=(sku("s1", ("p1", 1)),))
connector_log = get_logger("tests.connector")


class _Chatty(MemoryConnector):
    """Logs from inside its calls, as a real connector does, naming nothing but the event."""

    async def ship(self, shipment: Shipment) -> ShipOutcome:
        await asyncio.sleep(0)  # let the other job's call start: the two overlap
        connector_log.info("platform_called", platform_order_id=shipment.order.platform_order_id)
        raise BadPlatformData("refused for good")

    async def poll(self, cursor: Mapping[str, Any] | None, now: datetime) -> PollResult:
        connector_log.info("platform_polled")
        return await super().poll(cursor, now)


def _capture() -> Any:
    """capture_logs with the contextvars merged, as the robot's own processor chain does."""
    return capture_logs(processors=[structlog.contextvars.merge_contextvars])


def test_every_line_of_a_write_back_job_names_its_order_and_shop(engine: Engine,
                                                                 vault: Vault) -> None:
    """Two jobs at once: the connector's lines and the job's own carry each its own order."""
    seed_codes(engine, vault, "p1", 2)
    platform = MemoryPlatform()
    ids = {}
    for number in ("C1", "C2"):
        order = paid_order(number, ("s1", 1))
        platform.put_order(order)
        ids[number] = pipeline.intake(engine, SHOP, order, allocate=True).order_id
    disp = Dispatcher(engine, vault, {SHOP.name: _Chatty(platform)}, {SHOP.name: SHOP},
                      RetryPolicy(max_attempts=5), worker="w")
    jobs = claim_jobs(engine, "w", now=utcnow(), limit=10, lease=timedelta(seconds=15))
    assert len(jobs) == 2

    async def both() -> None:
        await asyncio.gather(*(disp.run_job(job) for job in jobs))

    with _capture() as logs:
        asyncio.run(both())
    called = {e["platform_order_id"]: e for e in logs if e["event"] == "platform_called"}
    failed = [e for e in logs if e["event"] == "write_back_failed"]
    assert len(called) == 2 and len(failed) == 2
    for number, order_id in ids.items():
        assert called[number]["order_id"] == order_id
        assert called[number]["shop"] == SHOP.name and called[number]["job"] == "ship"
    assert sorted(e["order_id"] for e in failed) == sorted(ids.values())
    assert all(e["shop"] == SHOP.name for e in failed)
    assert structlog.contextvars.get_contextvars() == {}


def test_every_line_of_a_poll_names_its_shop(engine: Engine) -> None:
    """The connector's lines during a poll carry the shop and the poll, bound by the poller."""
    platform = MemoryPlatform()
    platform.put_order(paid_order("P1", ("s1", 1)))
    with _capture() as logs:
        outcome = asyncio.run(poller.poll_shop(engine, SHOP, _Chatty(platform), "poll",
                                               now=lambda: datetime.now(UTC)))
    assert outcome.ok and outcome.created == 1
    polled = [e for e in logs if e["event"] == "platform_polled"]
    assert polled and all(e["shop"] == SHOP.name and e["poll"] == "poll" for e in polled)
    assert structlog.contextvars.get_contextvars() == {}
