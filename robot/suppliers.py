"""The merchant's supplier accounts as the robot runs them: building their clients from the
robot file, and what people are shown about them (``robot suppliers``, ``robot orders show``,
alerts, the pickup page's top-up status).

Reads ``supplier_attempts`` (written only by :mod:`robot.supplyroute` and :mod:`robot.sourcing`);
never calls a supplier to buy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, case, func, select

from connectors.supplier import Supplier
from robot import shops
from robot.alerts import Condition
from robot.clock import utcnow
from robot.config import RobotConfig, SupplierConfig
from robot.display import yuan
from robot.log import get_logger
from robot.registry import discover_suppliers
from robot.schema import orders, supplier_attempts
from robot.states import OrderState, SupplierAttemptState
from robot.supplyroute import mask_account
from robot.topups import TopupStatus, topup_status_tx
from robot.vault import Vault

log = get_logger(__name__)
S = SupplierAttemptState
_OPEN = (S.NEW, S.PLACING, S.ACCEPTED, S.PROCESSING, S.UNKNOWN)


def build(config: RobotConfig, engine: Engine, vault: Vault,
          factories: Mapping[str, Any] | None = None) -> tuple[dict[str, Supplier],
                                                               dict[str, str]]:
    """A client per enabled supplier account, and why each broken one is not there (one
    broken supplier never stops the others, nor the shops)."""
    if factories is None:
        factories, problems = discover_suppliers()
        for problem in problems:
            log.error("supplier_plugin_load_failed", plugin=problem.name, error=problem.error)
    clients: dict[str, Supplier] = {}
    broken: dict[str, str] = {}
    for entry in config.suppliers:
        if not entry.enabled:
            continue
        factory = factories.get(entry.plugin)
        if factory is None:
            broken[entry.name] = f"no supplier plugin {entry.plugin!r}"
            continue
        try:
            context = shops.DbShopContext(engine, vault, f"supplier:{entry.name}")
            clients[entry.name] = factory.create(entry.config, context)
        except Exception as exc:  # noqa: BLE001 - one broken supplier never stops the rest
            broken[entry.name] = f"{type(exc).__name__}: {exc}"
    for name, why in broken.items():
        log.error("supplier_broken", supplier=name, error=why)
    return clients, broken


@dataclass(frozen=True)
class SupplierStats:
    """One supplier account's purchases over a period."""

    supplier: str
    open: int  # purchases not settled yet
    succeeded: int
    failed: int
    cost_cents: int
    last_error: str | None
    oldest_open_at: datetime | None

    @property
    def success_rate(self) -> float | None:
        done = self.succeeded + self.failed
        return round(self.succeeded / done, 3) if done else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "success_rate": self.success_rate}


def stats(engine: Engine, *, since: datetime, names: Sequence[str] = ()) -> list[SupplierStats]:
    """Per supplier: open purchases (any age), and since ``since`` the successes, failures,
    cost and the last failure's reason."""
    a = supplier_attempts
    with engine.connect() as conn:
        rows = {str(r.supplier): r for r in conn.execute(
            select(a.c.supplier,
                   func.sum(case((a.c.state.in_(_OPEN), 1), else_=0)).label("open"),
                   func.sum(case(((a.c.state == S.SUCCEEDED) & (a.c.created_at >= since), 1),
                                 else_=0)).label("ok"),
                   func.sum(case(((a.c.state == S.FAILED) & (a.c.created_at >= since), 1),
                                 else_=0)).label("failed"),
                   func.sum(case(((a.c.state == S.SUCCEEDED) & (a.c.created_at >= since),
                                  a.c.cost_cents), else_=0)).label("cost"),
                   func.min(case((a.c.state.in_(_OPEN), a.c.created_at))).label("oldest"))
            .group_by(a.c.supplier))}
        errors = {str(r.supplier): r.reason for r in conn.execute(
            select(a.c.supplier, a.c.reason).where(a.c.state == S.FAILED)
            .order_by(a.c.updated_at, a.c.id))}
    out = []
    for name in sorted(set(names) | set(rows)):
        r = rows.get(name)
        out.append(SupplierStats(
            name, int(r.open or 0) if r else 0, int(r.ok or 0) if r else 0,
            int(r.failed or 0) if r else 0, int(r.cost or 0) if r else 0,
            errors.get(name), r.oldest if r else None))
    return out


def attempts_of(conn: Connection, order_id: int) -> list[dict[str, Any]]:
    """An order's supplier attempts, oldest first, accounts masked (``robot orders show``)."""
    a = supplier_attempts
    rows = conn.execute(select(a.c.line_no, a.c.unit, a.c.attempt, a.c.supplier, a.c.product,
                               a.c.kind, a.c.key, a.c.account, a.c.state, a.c.supplier_order_id,
                               a.c.cost_cents, a.c.max_cost_cents, a.c.reason, a.c.created_at,
                               a.c.finished_at)
                        .where(a.c.order_id == order_id)
                        .order_by(a.c.line_no, a.c.unit, a.c.attempt)).all()
    return [{**dict(r._mapping), "account": mask_account(r.account)} for r in rows]


def topup_status(engine: Engine, order_id: int) -> list[TopupStatus]:
    """The order's top-ups, one per unit, for the buyer: the pickup page shows these instead
    of codes ("充值成功 138****1234 · 话费50元"). Never the supplier, key or cost."""
    with engine.connect() as conn:
        return topup_status_tx(conn, order_id)


def stuck(engine: Engine, *, now: datetime, older_than: timedelta,
          supplier: str | None = None) -> int:
    """Purchases not settled after ``older_than`` (top-ups stuck in processing, or never
    placed because the supplier refuses our credentials): the alert's count."""
    stmt = select(func.count()).select_from(supplier_attempts).where(
        supplier_attempts.c.state.in_(_OPEN),  # new ones too: a supplier refusing our keys
        supplier_attempts.c.created_at < now - older_than)
    if supplier is not None:
        stmt = stmt.where(supplier_attempts.c.supplier == supplier)
    with engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


def sourcing_orders(engine: Engine) -> int:
    """Orders being bought from suppliers now."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(orders).where(
            orders.c.state == OrderState.SOURCING)).scalar_one())


# ------------------------------------------------------------------------------------ alerts

#: A supplier is "failing" when this many purchases failed in the last hour and none succeeded.
FAILING_AFTER = 3
BALANCE_EVERY = 300.0  # seconds between balance readings in the daemon


class Readings:
    """The supplier alerts' readings for :class:`robot.alerts.AlertEngine` (its ``extra``):
    low balance (from the balances the daemon reads every few minutes), a supplier failing,
    purchases stuck in processing past ``sourcing.processing_alert_after``."""

    def __init__(self, engine: Engine, entries: Sequence[SupplierConfig],
                 processing_alert_after: float) -> None:
        self.engine = engine
        self.entries = list(entries)
        self.processing_alert_after = processing_alert_after
        #: The latest balance per supplier (cents), set by the daemon's balance job.
        self.balances: dict[str, int] = {}

    def readers(self) -> list[Callable[[], Condition]]:
        out: list[Callable[[], Condition]] = []
        for entry in self.entries:
            if not entry.enabled:
                continue
            out += [functools.partial(self.balance, entry.name, entry.low_balance_cents),
                    functools.partial(self.failing, entry.name),
                    functools.partial(self.stuck, entry.name)]
        return out

    def balance(self, name: str, low: int | None) -> Condition:
        have = self.balances.get(name)
        active = low is not None and have is not None and have < low
        return Condition(f"supplier_balance:{name}", active, f"low balance at supplier {name}",
                         f"balance {yuan(have)} (alert under {yuan(low)}); top the account "
                         "up or purchases will fail")

    def failing(self, name: str) -> Condition:
        since = utcnow() - timedelta(hours=1)
        a = supplier_attempts
        with self.engine.connect() as conn:
            rows = conn.execute(select(a.c.state, a.c.reason).where(
                a.c.supplier == name, a.c.finished_at >= since,
                a.c.state.in_((S.SUCCEEDED, S.FAILED))).order_by(a.c.finished_at)).all()
        failed = [r for r in rows if r.state == S.FAILED]
        active = len(failed) >= FAILING_AFTER and len(failed) == len(rows)
        last = failed[-1].reason if failed else ""
        return Condition(f"supplier_failing:{name}", active, f"supplier {name} failing",
                         f"{len(failed)} purchases failed in the last hour and none succeeded; "
                         f"last: {(last or '')[:200]}")

    def stuck(self, name: str) -> Condition:
        limit = timedelta(seconds=self.processing_alert_after)
        n = stuck(self.engine, now=utcnow(), older_than=limit, supplier=name)
        return Condition(f"supplier_stuck:{name}", n > 0,
                         f"purchases stuck at supplier {name}",
                         f"{n} purchases still in progress after {limit}; the robot keeps "
                         "querying: check them at the supplier (robot suppliers status)")
