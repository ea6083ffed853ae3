"""A deliberately broken robot, to show that the chaos checks catch what they claim to.

``python -m tests.chaos.broken -c robot.yaml run`` is ``robot run`` with three bugs a real
change could bring in:

* after the write-back of every third order is recorded shipped, it ships the order again
  with other codes and writes a memo with them (a double shipment nothing explains);
* one order in eight is parked ``held`` with a plausible reason though nothing is wrong;
* one claim in five takes a code more than it hands out (out of stock, in no delivery:
  lost, as a batch claim that forgot to put back its leftovers would lose it);

and :func:`duplicate_plaintexts` (run before the robots start) hides copies of codes of one
pool in another pool's rows under fresh fingerprints, as an importer that lost its
de-duplication would: the database sees distinct rows, only decryption sees one code twice.

Never used outside ``tests/chaos/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import itertools
import secrets
from datetime import datetime
from pathlib import Path

from sqlalchemy import Connection, Engine, select, update

from connectors.base import Order, PlatformStatus, Shipment
from robot import outbox, pipeline
from robot.cli import main
from robot.demo import POOL_BONUS, POOL_MAIN
from robot.schema import codes, pools
from robot.vault import AAD_CURRENT, open_vault

HOLD_REASON = "risk: buyer velocity"  # looks like a rule; the run set up no risk rules


def _every(platform_order_id: str, n: int) -> bool:
    return hashlib.sha256(platform_order_id.encode()).digest()[0] % n == 0


def _reship_with_other_codes() -> None:
    run_job = outbox.Dispatcher.run_job

    async def broken(self: outbox.Dispatcher, job: outbox.Job) -> None:
        await run_job(self, job)
        if job.kind != "ship" or job.order_id % 3:
            return
        ctx = await asyncio.to_thread(self.prepare, job)
        connector = self.connectors.get(ctx.shop)
        if ctx.state != "shipped" or connector is None:
            return
        other = tuple(code[::-1] for code in ctx.masked_codes)  # still masked, not the order's
        order: Order = dataclasses.replace(ctx.order, status=PlatformStatus.PAID)
        with contextlib.suppress(Exception):
            await connector.ship(Shipment(order=order, line_ids=(), memo="", item_desc="x",
                                          masked_codes=other, pickup_url=ctx.pickup_url))
            await connector.write_memo(order, "[robot] " + " ".join(other))

    outbox.Dispatcher.run_job = broken  # type: ignore[method-assign]


def _hold_for_no_reason() -> None:
    data_problem = pipeline.data_problem

    def broken(order: Order) -> str | None:
        if _every(order.platform_order_id, 8):
            return HOLD_REASON
        return data_problem(order)

    pipeline.data_problem = broken


def duplicate_plaintexts(engine: Engine, key_file: Path) -> None:
    """Make the first 200 codes of the bonus pool hold the plaintexts of the main pool's first
    200 (each under its own row, pool and a fresh random fingerprint)."""
    vault = open_vault(key_file)
    with engine.begin() as conn:
        ids = {name: pid for pid, name in conn.execute(select(pools.c.id, pools.c.name))}

        def first(pool: str) -> list[tuple[int, str]]:
            rows = conn.execute(
                select(codes.c.id, codes.c.key_id, codes.c.ciphertext, codes.c.pool_id,
                       codes.c.fingerprint, codes.c.aad_version)
                .where(codes.c.pool_id == ids[pool]).order_by(codes.c.id).limit(200)).all()
            return [(int(r.id), vault.decrypt(r.key_id, r.ciphertext, code_id=int(r.id),
                                                pool_id=r.pool_id, fingerprint=r.fingerprint,
                                                aad_version=r.aad_version)) for r in rows]

        for (bonus_id, _), (_, secret) in zip(first(POOL_BONUS), first(POOL_MAIN), strict=False):
            fingerprint = secrets.token_bytes(32)
            key_id, blob = vault.encrypt(secret, code_id=bonus_id, pool_id=ids[POOL_BONUS],
                                         fingerprint=fingerprint)
            conn.execute(update(codes).where(codes.c.id == bonus_id).values(
                fingerprint=fingerprint, key_id=key_id, ciphertext=blob,
                aad_version=AAD_CURRENT))


def _claim_one_too_many() -> None:
    claim = pipeline.claim
    calls = itertools.count()

    def broken(conn: Connection, pool_id: int, n: int, now: datetime) -> list[int]:
        if next(calls) % 5:
            return claim(conn, pool_id, n, now)
        got = claim(conn, pool_id, n + 1, now)
        return got[:n]

    pipeline.claim = broken


if __name__ == "__main__":
    _reship_with_other_codes()
    _hold_for_no_reason()
    _claim_one_too_many()
    main()
