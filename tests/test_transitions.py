"""States change only through the pipeline's transitions; a failed write-back moves and audits once.

Two workers can hold the same write-back job (a lease ran out while the first one's platform
call hung, and a second worker took the job over). When both end in a definite failure, the
order moves to ``failed`` once, with one ``ship_failed`` audit entry and one attempt in its
history; and a job an operator cancelled meanwhile stays cancelled.
"""

from __future__ import annotations

import ast
import asyncio
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine, func, select

from connectors.base import PlatformStatus, RefundState, Shipment, ShipOutcome
from connectors.memory import MemoryConnector, MemoryPlatform
from robot import pipeline
from robot.clock import utcnow
from robot.errors import BadPlatformData
from robot.outbox import Dispatcher, Job, RetryPolicy, claim_jobs
from robot.schema import audit_log, outbox, outbox_attempts, stock
from robot.schema import orders as orders_t
from robot.states import OrderState, OutboxState
from robot.vault import Vault
from tests.factories import Shop, paid_order, seed_codes, sku

SHOP = Shop(items=(sku("s1", ("p1", 1)),))
ROBOT = Path(__file__).resolve().parent.parent / "robot"


class _Together(MemoryConnector):
    """Both workers' ship calls are in flight at once; then both fail for good."""

    def __init__(self, platform: MemoryPlatform, callers: int, before_fail: asyncio.Event | None
                 = None) -> None:
        super().__init__(platform)
        self.callers = callers
        self.entered = 0
        self.all_in = asyncio.Event()
        self.before_fail = before_fail

    async def ship(self, shipment: Shipment) -> ShipOutcome:
        self.entered += 1
        if self.entered == self.callers:
            self.all_in.set()
        await self.all_in.wait()
        if self.before_fail is not None:
            await self.before_fail.wait()
        raise BadPlatformData("the platform refuses this order for good")


def _dispatcher(engine: Engine, vault: Vault, connector: MemoryConnector, worker: str) -> Dispatcher:
    return Dispatcher(engine, vault, {SHOP.name: connector}, {SHOP.name: SHOP},
                      RetryPolicy(max_attempts=5), worker=worker)


def _allocated_job(engine: Engine, vault: Vault, platform: MemoryPlatform) -> int:
    seed_codes(engine, vault, "p1", 1)
    order = paid_order("T1", ("s1", 1))
    platform.put_order(order)
    result = pipeline.intake(engine, SHOP, order, allocate=True)
    assert result.state == OrderState.ALLOCATED
    return result.order_id or 0


def _two_leases(engine: Engine) -> tuple[Job, Job]:
    """The job leased to worker a, then (its lease run out) to worker b."""
    lease = timedelta(seconds=15)
    now = utcnow()
    (first,) = claim_jobs(engine, "a", now=now, limit=1, lease=lease)
    (second,) = claim_jobs(engine, "b", now=now + lease * 2, limit=1, lease=lease)
    assert first.id == second.id
    return first, second


def _states(engine: Engine, order_id: int, job_id: int) -> tuple[str, str]:
    """The order's state and its job's."""
    with engine.connect() as conn:
        state = conn.execute(select(orders_t.c.state).where(orders_t.c.id == order_id)).scalar()
        job_state = conn.execute(select(outbox.c.state).where(outbox.c.id == job_id)).scalar()
    return str(state), str(job_state)


def _counts(engine: Engine, order_id: int) -> tuple[int, int]:
    with engine.connect() as conn:
        audits = conn.execute(select(func.count()).select_from(audit_log).where(
            audit_log.c.action == "ship_failed",
            audit_log.c.subject == f"order:{order_id}")).scalar_one()
        attempts = conn.execute(select(func.count()).select_from(outbox_attempts).where(
            outbox_attempts.c.order_id == order_id,
            outbox_attempts.c.result == "failed")).scalar_one()
    return int(audits), int(attempts)


def test_two_workers_failing_one_job_move_and_audit_once(engine: Engine, vault: Vault) -> None:
    """Two workers failing the same ship job: the order fails once, one audit entry, one attempt."""
    platform = MemoryPlatform()
    order_id = _allocated_job(engine, vault, platform)
    job_a, job_b = _two_leases(engine)
    connector = _Together(platform, callers=2)

    async def both() -> None:
        await asyncio.gather(_dispatcher(engine, vault, connector, "a").run_job(job_a),
                             _dispatcher(engine, vault, connector, "b").run_job(job_b))

    asyncio.run(both())
    assert _states(engine, order_id, job_a.id) == (OrderState.FAILED, OutboxState.FAILED)
    assert _counts(engine, order_id) == (1, 1)


def test_an_order_refunded_while_its_call_fails_is_cancelled_not_failed(
        engine: Engine, vault: Vault) -> None:
    """An order refunded during the failing ship call: no `failed`, no ship_failed entry; the
    job ends cancelled and the codes go back to stock (the platform refused the shipment)."""
    platform = MemoryPlatform()
    order_id = _allocated_job(engine, vault, platform)
    (job,) = claim_jobs(engine, "a", now=utcnow(), limit=1, lease=timedelta(seconds=15))
    release = asyncio.Event()
    connector = _Together(platform, callers=1, before_fail=release)

    def refund() -> None:
        platform.set_status("T1", PlatformStatus.CLOSED, refund=RefundState.REFUNDED)
        pipeline.intake(engine, SHOP, platform.order("T1"))

    async def refund_during_the_call() -> None:
        run = asyncio.create_task(_dispatcher(engine, vault, connector, "a").run_job(job))
        await connector.all_in.wait()
        await asyncio.to_thread(refund)
        release.set()
        await run

    asyncio.run(refund_during_the_call())
    assert _states(engine, order_id, job.id) == (OrderState.CANCELLED, OutboxState.CANCELLED)
    assert _counts(engine, order_id) == (0, 1)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(stock)).scalar_one() == 1


def _writes_order_state(node: ast.Call) -> bool:
    """``….values(state=…)`` on ``update(orders)`` (or a chain built from it)."""
    text = ast.unparse(node)
    return (isinstance(node.func, ast.Attribute) and node.func.attr == "values"
            and "update(orders)" in text
            and any(k.arg == "state" for k in node.keywords))


def test_only_the_pipeline_writes_an_order_state() -> None:
    """No module but robot.pipeline updates orders.state, and none calls pipeline privates."""
    offenders = []
    for path in sorted(ROBOT.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        name = path.relative_to(ROBOT.parent).as_posix()
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and name != "robot/pipeline.py"
                    and _writes_order_state(node)):
                offenders.append(f"{name}:{node.lineno}: writes orders.state")
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id == "pipeline"):
                offenders.append(f"{name}:{node.lineno}: pipeline.{node.attr}")
    assert offenders == []
