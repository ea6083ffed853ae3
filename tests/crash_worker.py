"""A robot process for the crash test: does one step, says so, then waits to be killed.

Run as ``python -m tests.crash_worker STEP DB_URL KEY_FILE PLATFORM_FILE``:

* ``allocate`` — poll the platform, take orders in, allocate, print ``ALLOCATED``, block;
* ``ship-hang`` — run write-back; the platform applies the shipment, then the process
  prints ``SHIPPED_ON_PLATFORM`` and blocks before the robot could record it;
* ``dispatch`` — run write-back until nothing is due, print ``DONE``, exit.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta
from pathlib import Path

from connectors.base import Shipment, ShipOutcome
from connectors.memory import MemoryConnector, MemoryPlatform
from robot import audit, pipeline
from robot.clock import utcnow
from robot.db import make_engine
from robot.outbox import Dispatcher, RetryPolicy
from robot.vault import open_vault
from tests.factories import Shop, sku

SHOP = Shop(name="crash", items=(sku("s1", ("p1", 2)),))


class HangAfterShip(MemoryConnector):
    async def ship(self, shipment: Shipment) -> ShipOutcome:
        outcome = await super().ship(shipment)
        print("SHIPPED_ON_PLATFORM", flush=True)
        sys.stdin.read()  # blocks until killed
        return outcome


def main(step: str, url: str, key_file: str, platform_file: str) -> None:
    engine = make_engine(url)
    audit.bind(engine, Path(key_file))
    vault = open_vault(Path(key_file))
    platform = MemoryPlatform(Path(platform_file))
    connector_cls = HangAfterShip if step == "ship-hang" else MemoryConnector
    connector = connector_cls(platform)
    if step == "allocate":
        result = asyncio.run(connector.poll(None, utcnow()))
        for order in result.orders:
            pipeline.intake(engine, SHOP, order)
        while pipeline.allocate_next(engine) is not None:
            pass
        print("ALLOCATED", flush=True)
        sys.stdin.read()
        return
    disp = Dispatcher(engine, vault, {SHOP.name: connector}, {SHOP.name: SHOP},
                      RetryPolicy(max_attempts=3, lease=timedelta(seconds=30)), worker=step)
    # A restarted robot finds a dead worker's lease (30 s) expired: it looks from an hour on.
    later = utcnow() + (timedelta(hours=1) if step == "dispatch" else timedelta())
    while asyncio.run(disp.run_once(now=later)):
        later += timedelta(minutes=5)
    print("DONE", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:5])
