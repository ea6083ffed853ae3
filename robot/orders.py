"""What a person does to orders, and what they are shown about them.

Actions (replay, release, reject, cancel, reveal) are guarded transitions, each audited with
the person who ran it. Views (list, show, status) mask codes; only :func:`reveal` returns
plaintext, and it records who saw which codes and marks them seen (so a later cancel will
not put a code a person has seen back on sale).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, func, insert, select, update

from connectors.base import OrderLine, RefundState
from robot import audit, notify, pipeline, risk
from robot import outbox as outbox_ops
from robot import supplyroute as supply_mod
from robot.clock import DEFAULT_ZONE, utcnow
from robot.db import transaction
from robot.errors import UserError
from robot.matcher import MappingLike, resolve_line
from robot.schema import (
    codes,
    deliveries,
    order_lines,
    orders,
    outbox,
    pools,
    replacements,
    shop_state,
    stock,
    supplier_attempts,
    supply_callbacks,
)
from robot.states import (
    UNSHIPPED,
    DeliveryState,
    OrderState,
    OutboxState,
    SupplierAttemptState,
)
from robot.vault import Vault, split_pair

if TYPE_CHECKING:
    from robot.config import RiskRules


def _order_row(conn: Any, order_id: int, *, lock: bool = True) -> Any:
    stmt = select(orders).where(orders.c.id == order_id)
    if lock and conn.dialect.name != "sqlite":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).first()
    if row is None:
        raise UserError(f"order {order_id} does not exist")
    return row


def replay(engine: Engine, order_ids: Sequence[int] | None, *, actor: str) -> list[int]:
    """Send failed orders through write-back again, with the same codes.

    ``None`` replays every failed order. Returns the ids replayed.
    """
    now = utcnow()
    done: list[int] = []
    with transaction(engine) as conn:
        if order_ids is None:
            order_ids = [int(r.id) for r in conn.execute(
                select(orders.c.id).where(orders.c.state == OrderState.FAILED)
                .order_by(orders.c.id))]
        for oid in order_ids:
            row = _order_row(conn, oid)
            if row.state != OrderState.FAILED:
                raise UserError(f"order {oid} is {row.state}, not failed; "
                                "only failed orders replay")
            if not conn.execute(select(outbox.c.id).where(outbox.c.order_id == oid,
                                                          outbox.c.kind == "ship")).first():
                raise UserError(f"order {oid} failed before anything was delivered (its "
                                "suppliers failed: see robot orders show); refund it on the "
                                "platform, or fix the supplier and release it again")
            pipeline.transition(conn, oid, OrderState.FAILED, OrderState.ALLOCATED, None, now)
            conn.execute(update(outbox).where(outbox.c.order_id == oid, outbox.c.kind == "ship")
                         .values(state=OutboxState.PENDING, attempts=0, due_at=now,
                                 claimed_until=None, last_error=None, done_at=None))
            audit.append(conn, actor=actor, action="replay", subject=f"order:{oid}", details={})
            done.append(oid)
    return done


def release(engine: Engine, order_id: int, *, actor: str,
            items: Sequence[MappingLike] | None = None, platform: str | None = None,
            rules: RiskRules | None = None, zone: tzinfo = DEFAULT_ZONE,
            account: str | None = None) -> str:
    """Let a held order go on: to ``allocated`` if it kept its codes, else to allocation.

    ``items`` (the shop's current mappings) re-resolves lines that were unmapped, so a
    merchant can fix the shop file and release. Lines still unmapped are left out.

    An ``ignored`` order (nothing mapped when it came in) is released the same way once its
    mapping is fixed: it needs ``items``, and since it never met the risk rules it meets
    them now (``rules``, and the blacklists), as of when it came in (its local day in
    ``zone`` for the daily limits); a hit holds it.

    ``account`` is the top-up account a person read from the buyer (held because none was
    usable): it is checked against the line's rule and recorded (audited, masked).
    """
    now = utcnow()
    with transaction(engine) as conn:
        row = _order_row(conn, order_id)
        if row.state == OrderState.IGNORED:
            return _release_ignored(conn, row, actor=actor, items=items, rules=rules,
                                    platform=platform, now=now, zone=zone)
        if row.state != OrderState.HELD:
            raise UserError(f"order {order_id} is {row.state}, not held or ignored")
        if items is not None:
            _remap(conn, order_id, items)
        _set_account(conn, order_id, account, actor)
        has_codes = conn.execute(select(func.count()).select_from(deliveries)
                                 .where(deliveries.c.order_id == order_id)).scalar_one() > 0
        mapped = conn.execute(select(func.count()).select_from(order_lines).where(
            order_lines.c.order_id == order_id,
            (order_lines.c.mapping != "[]") | order_lines.c.supply.is_not(None))).scalar_one()
        if not has_codes and not mapped:
            raise UserError(f"order {order_id}: no line maps to a pool; add the SKU to the shop's "
                            "items and release again, or reject it")
        # Bought from a supplier already (held for review after a refund): ship what was
        # bought; never allocate it again (that would buy again).
        bought = conn.execute(select(func.count()).select_from(supplier_attempts).where(
            supplier_attempts.c.order_id == order_id,
            supplier_attempts.c.state == SupplierAttemptState.SUCCEEDED)).scalar_one() > 0
        target = OrderState.ALLOCATED if has_codes or bought else OrderState.RECEIVED
        pipeline.transition(conn, order_id, OrderState.HELD, target, None, now, due_at=now)
        if target == OrderState.ALLOCATED:
            _ship_job_due(conn, order_id, now)
        audit.append(conn, actor=actor, action="release", subject=f"order:{order_id}",
                     details={"to": target})
    return target


def _ship_job_due(conn: Any, order_id: int, now: datetime) -> None:
    """The order's pending ship job due now (made when the order never had one: an order
    held straight out of sourcing)."""
    if not conn.execute(select(outbox.c.id).where(outbox.c.order_id == order_id,
                                                  outbox.c.kind == "ship")).first():
        conn.execute(insert(outbox).values(order_id=order_id, kind="ship",
                                           state=OutboxState.PENDING, attempts=0, due_at=now,
                                           created_at=now))
        return
    conn.execute(update(outbox).where(outbox.c.order_id == order_id, outbox.c.kind == "ship",
                                      outbox.c.state == OutboxState.PENDING)
                 .values(due_at=now, claimed_until=None))


def _set_account(conn: Any, order_id: int, account: str | None, actor: str) -> None:
    """Give the order's top-up lines ``account``; refuse while a top-up line has none."""
    rows = conn.execute(select(order_lines.c.line_no, order_lines.c.supply).where(
        order_lines.c.order_id == order_id, order_lines.c.supply.is_not(None))).all()
    topups = [(int(r.line_no), s) for r in rows
              if (s := supply_mod.Supply.from_json(r.supply)) is not None and s.kind == "topup"]
    if account is None:
        missing = [no for no, s in topups if s.account is None]
        if missing:
            raise UserError(f"order {order_id}: top-up line(s) {', '.join(map(str, missing))} "
                            "have no usable account; ask the buyer and release with "
                            f"--account: robot orders release {order_id} --account NUMBER")
        return
    if not topups:
        raise UserError(f"order {order_id} has no top-up line: --account is for top-ups")
    for no, s in topups:
        why = supply_mod.check_account(s, account)
        if why is not None:
            raise UserError(f"order {order_id} line {no}: --account refused: {why}")
        fixed = dataclasses.replace(s, account=account.strip(), problem=None)
        conn.execute(update(order_lines).where(order_lines.c.order_id == order_id,
                                               order_lines.c.line_no == no)
                     .values(supply=fixed.to_json()))
    audit.append(conn, actor=actor, action="set_account", subject=f"order:{order_id}",
                 details={"account": supply_mod.mask_account(account.strip()),
                          "lines": [no for no, _s in topups]})


def _release_ignored(conn: Any, row: Any, *, actor: str, items: Sequence[MappingLike] | None,
                     rules: RiskRules | None, platform: str | None, now: datetime,
                     zone: tzinfo = DEFAULT_ZONE) -> str:
    order_id = int(row.id)
    if items is None:
        raise UserError(f"order {order_id}: shop {row.shop!r} is not in the configuration, so "
                        "its lines cannot be mapped again; add the shop and release again")
    if row.platform_status != "paid":
        raise UserError(f"order {order_id} is {row.platform_status} on the platform, not "
                        "paid: there is nothing to deliver")
    _remap(conn, order_id, items)
    lines = conn.execute(select(order_lines).where(order_lines.c.order_id == order_id,
                                                   order_lines.c.mapping != "[]")).all()
    if not lines:
        raise UserError(f"order {order_id}: still no line maps to a pool; add its SKU to shop "
                        f"{row.shop!r}'s items (see `robot orders show {order_id}`) and "
                        "release again")
    cand = risk.Candidate(
        platform=platform or row.platform, buyer_id=row.buyer_id, buyer_ip=row.buyer_ip,
        total_cents=int(row.total_cents),
        lines=[risk.LineFacts(int(ln.quantity), ln.item_id, ln.sku_id, ln.outer_id)
               for ln in lines])
    hits = risk.judge(rules, cand, risk.gather(conn, rules, cand, row.received_at,
                                               before_id=order_id, zone=zone))
    target = OrderState.HELD if hits else OrderState.RECEIVED
    pipeline.transition(conn, order_id, OrderState.IGNORED, target,
                         risk.reason_of(hits) if hits else None, now, due_at=now)
    audit.append(conn, actor=actor, action="release", subject=f"order:{order_id}",
                 details={"from": OrderState.IGNORED, "to": target})
    if hits:
        risk.record_hold(conn, order_id, hits, actor=actor)
    return target


def _remap(conn: Any, order_id: int, items: Sequence[MappingLike]) -> None:
    for ln in conn.execute(select(order_lines).where(order_lines.c.order_id == order_id)).all():
        if ln.mapping != "[]" or ln.refund not in ("none", "refused"):
            continue
        needs = resolve_line(items, OrderLine(line_id=ln.line_id, quantity=ln.quantity,
                                              item_id=ln.item_id, sku_id=ln.sku_id,
                                              outer_id=ln.outer_id, refund=RefundState(ln.refund)))
        if needs:
            conn.execute(update(order_lines).where(order_lines.c.order_id == order_id,
                                                   order_lines.c.line_no == ln.line_no)
                         .values(mapping=json.dumps([[n.pool, n.per_unit] for n in needs])))


def reject(engine: Engine, order_id: int, *, actor: str,
           reason: str = "rejected by a person") -> dict[str, int]:
    """Do not ship: the platform's own refund flow takes over. Unseen codes return to stock."""
    with transaction(engine) as conn:
        row = _order_row(conn, order_id)
        if row.state not in (OrderState.HELD, OrderState.RECEIVED, OrderState.WAITING_STOCK):
            raise UserError(f"order {order_id} is {row.state}; only held, received or "
                            "waiting orders can be rejected (cancel an allocated one)")
        return pipeline.cancel(conn, order_id, OrderState(row.state), OrderState.REJECTED,
                               reason, actor, utcnow())


def cancel(engine: Engine, order_id: int, *, actor: str,
           reason: str = "cancelled by a person") -> dict[str, int]:
    """Cancel an unshipped order; unseen reserved codes return to stock."""
    with transaction(engine) as conn:
        row = _order_row(conn, order_id)
        if row.state == OrderState.SOURCING:
            raise UserError(f"order {order_id} is being bought from a supplier, which cannot be "
                            "stopped; wait for it (robot orders show), then cancel or refund")
        if row.state not in UNSHIPPED:
            raise UserError(f"order {order_id} is {row.state}; it can no longer be cancelled"
                            + ("; refunds after delivery are handled on the platform"
                               if row.state == OrderState.SHIPPED else ""))
        if pipeline.shipment_in_flight(conn, order_id, utcnow()):
            raise UserError(f"order {order_id} is being shipped on its platform right now; try "
                            "again in a minute (once shipped, a refund on the platform ends it)")
        return pipeline.cancel(conn, order_id, OrderState(row.state), OrderState.CANCELLED,
                               reason, actor, utcnow())


@dataclass(frozen=True)
class RevealedCode:
    code_id: int
    line_no: int
    pool: str
    secret: str = field(repr=False)

    @property
    def card_no(self) -> str:
        return split_pair(self.secret)[0]

    @property
    def pin(self) -> str | None:
        """The card's PIN/password when the code is a card number + PIN pair."""
        return split_pair(self.secret)[1]


def reveal(engine: Engine, vault: Vault, order_id: int, *, actor: str) -> list[RevealedCode]:
    """Decrypt an order's codes for a person. Audited; marks the codes as seen."""
    now = utcnow()
    with transaction(engine) as conn:
        _order_row(conn, order_id)
        rows = conn.execute(
            select(deliveries.c.id, deliveries.c.line_no, codes.c.id.label("code_id"),
                   codes.c.pool_id, codes.c.fingerprint, codes.c.key_id, codes.c.ciphertext,
                   codes.c.aad_version, pools.c.name.label("pool"))
            .join(codes, codes.c.id == deliveries.c.code_id)
            .join(pools, pools.c.id == codes.c.pool_id)
            # Replaced codes are not the buyer's any more (``robot orders show`` lists them).
            .where(deliveries.c.order_id == order_id, deliveries.c.state != DeliveryState.DEFECTIVE)
            .order_by(deliveries.c.line_no, deliveries.c.n)
        ).all()
        if not rows:
            raise UserError(f"order {order_id} has no codes to reveal")
        # Decrypted before anything is marked or audited: a code whose row was altered or
        # moved (CodeRejected, naming it) stops the reveal with nothing shown.
        revealed = [
            RevealedCode(int(r.code_id), int(r.line_no), r.pool,
                         vault.decrypt(r.key_id, r.ciphertext, code_id=r.code_id,
                                       pool_id=r.pool_id, fingerprint=r.fingerprint,
                                       aad_version=r.aad_version))
            for r in rows
        ]
        conn.execute(update(deliveries).where(deliveries.c.order_id == order_id,
                                              deliveries.c.seen_at.is_(None))
                     .values(seen_at=now))
        audit.append(conn, actor=actor, action="reveal", subject=f"order:{order_id}",
                     details={"code_ids": [int(r.code_id) for r in rows]})
    return revealed


# ------------------------------------------------------------------------------------ views


def shop_of(engine: Engine, order_id: int) -> str:
    """The shop an order belongs to (UserError when there is no such order)."""
    with engine.connect() as conn:
        return str(_order_row(conn, order_id, lock=False).shop)


def list_orders(engine: Engine, *, state: str | None = None, shop: str | None = None,
                limit: int = 50) -> list[dict[str, Any]]:
    stmt = select(orders.c.id, orders.c.shop, orders.c.platform_order_id, orders.c.state,
                  orders.c.reason, orders.c.total_cents, orders.c.paid_at,
                  orders.c.received_at, orders.c.shipped_at
                  ).order_by(orders.c.id.desc()).limit(limit)
    if state:
        stmt = stmt.where(orders.c.state == state)
    if shop:
        stmt = stmt.where(orders.c.shop == shop)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]


#: The order's own columns ``robot orders show`` prints (contacts are masked; ``extra``,
#: the platform's facts for shipping, is left out).
SHOWN_ORDER_COLUMNS = (
    "id", "shop", "platform", "platform_order_id", "state", "platform_status", "reason",
    "buyer_id", "buyer_ip", "total_cents", "currency", "paid_at", "received_at",
    "allocated_at", "shipped_at", "updated_at", "due_at")


def show_order(engine: Engine, vault: Vault, order_id: int, *,
               now: datetime | None = None) -> dict[str, Any]:
    """One order: its lines (titles, masked codes per line), every code it held, the pickup
    link's state, the write-back jobs and their attempts, replacements asked for, each
    purchase from a supplier (accounts masked), and the failure notice owed to a platform
    that bought the order from us."""
    from robot import support  # support builds on this module's transitions
    from robot.suppliers import attempts_of

    now = now or utcnow()
    with engine.connect() as conn:
        row = _order_row(conn, order_id, lock=False)
        lines = [dict(r._mapping) for r in conn.execute(
            select(order_lines).where(order_lines.c.order_id == order_id)
            .order_by(order_lines.c.line_no))]
        held = support.masked_codes(conn, vault, order_id)
        jobs = [dict(r._mapping) for r in conn.execute(
            select(outbox.c.kind, outbox.c.state, outbox.c.attempts, outbox.c.due_at,
                   outbox.c.last_error, outbox.c.created_at, outbox.c.done_at)
            .where(outbox.c.order_id == order_id).order_by(outbox.c.id))]
        history = outbox_ops.write_back_history(conn, order_id)
        notices = notify.history(conn, order_id)
        link = support.link_state(conn, order_id, now)
        bought = attempts_of(conn, order_id)
        told = conn.execute(select(supply_callbacks.c.attempts, supply_callbacks.c.sent_at,
                                   supply_callbacks.c.last_error, supply_callbacks.c.due_at)
                            .where(supply_callbacks.c.order_id == order_id)).first()
        waiting = [dict(r._mapping) for r in conn.execute(
            select(replacements.c.id, replacements.c.line_no, pools.c.name.label("pool"),
                   replacements.c.count, replacements.c.state, replacements.c.reason,
                   replacements.c.created_at, replacements.c.done_at)
            .join(pools, pools.c.id == replacements.c.pool_id)
            .where(replacements.c.order_id == order_id).order_by(replacements.c.id))]
    # Named, not "every column": a column added later (personal data, say) is not shown
    # until someone decides it may be.
    data = {k: row._mapping[k] for k in SHOWN_ORDER_COLUMNS}
    data["buyer_email"] = notify.mask_contact(row.buyer_email)
    data["buyer_phone"] = notify.mask_contact(row.buyer_phone)
    for line in lines:
        line["supply"] = supply_mod.shown(supply_mod.Supply.from_json(line.get("supply")))
        line["codes"] = [c["masked"] for c in held
                         if c["line_no"] == line["line_no"]
                         and c["state"] != DeliveryState.DEFECTIVE]
    data["lines"] = lines
    data["codes"] = held
    data["link"] = link
    data["jobs"] = jobs
    data["attempts"] = history
    data["replacements"] = waiting
    data["notifications"] = notices
    data["supplier_attempts"] = bought
    # A platform that bought the order from us (闲管家), told it will not be served.
    data["failure_notice"] = dict(told._mapping) if told is not None else None
    return data


@dataclass
class ShopStatus:
    shop: str
    last_poll_ok_at: datetime | None
    lag_seconds: float | None
    paused: bool
    paused_reason: str | None
    last_error: str | None
    states: dict[str, int] = field(default_factory=dict)
    #: The platform's clock minus ours (seconds) as last measured, and when; None: not yet.
    clock_offset_s: float | None = None
    clock_checked_at: datetime | None = None


@dataclass
class PoolStatus:
    pool: str
    available: int
    sold_7d: int
    days_of_cover: float | None
    low_stock: int | None


@dataclass
class Status:
    shops: list[ShopStatus]
    pools: list[PoolStatus]
    attention: dict[str, int]  # failed / held / waiting_stock / sourcing / failed memo jobs


def cancelled_codes_out(conn: Connection, since: datetime, limit: int = 100) -> list[int]:
    """Cancelled orders (changed since ``since``) holding codes flagged for review, never put
    back in stock because they may have reached the buyer: shown on the pickup page before the
    cancel, or shipped just before a refund on a platform that could not say whether the
    shipment landed (``pipeline.settle_cancelled_shipment``). Their ids, newest first."""
    flagged = select(deliveries.c.order_id).where(
        deliveries.c.order_id == orders.c.id, deliveries.c.state == DeliveryState.REVIEW)
    return [int(i) for i in conn.execute(
        select(orders.c.id).where(orders.c.state == OrderState.CANCELLED,
                                  orders.c.updated_at >= since, flagged.exists())
        .order_by(orders.c.id.desc()).limit(limit)).scalars()]


def service_attention(engine: Engine, now: datetime) -> dict[str, int]:
    """What customer service left for a person: replacements waiting for stock, and paid
    orders of the last 7 days ignored with unmapped lines (a mapping may be missing:
    ``robot orders release`` after fixing it)."""
    from robot import support

    with engine.connect() as conn:
        return {"replacements_waiting": support.waiting_replacements(conn),
                "ignored_unmapped_7d": sum(support.ignored_unmapped(conn, now).values())}


def status(engine: Engine, shops: Sequence[str] = (), *, now: datetime | None = None) -> Status:
    """Per shop: last poll, lag, orders by state; per pool: stock and days of cover."""
    now = now or utcnow()
    week_ago = now - timedelta(days=7)
    with engine.connect() as conn:
        by_state: dict[str, dict[str, int]] = {}
        for r in conn.execute(select(orders.c.shop, orders.c.state, func.count())
                              .group_by(orders.c.shop, orders.c.state)):
            by_state.setdefault(r[0], {})[r[1]] = int(r[2])
        states = {r.shop: r for r in conn.execute(select(shop_state))}
        available = {int(r[0]): int(r[1]) for r in conn.execute(
            select(stock.c.pool_id, func.count()).group_by(stock.c.pool_id))}
        sold = {int(r[0]): int(r[1]) for r in conn.execute(
            select(deliveries.c.pool_id, func.count())
            .where(deliveries.c.created_at >= week_ago).group_by(deliveries.c.pool_id))}
        pool_rows = conn.execute(select(pools.c.id, pools.c.name, pools.c.low_stock)
                                 .order_by(pools.c.name)).all()
        failed_memos = conn.execute(select(func.count()).select_from(outbox).where(
            outbox.c.kind == "memo", outbox.c.state == OutboxState.FAILED)).scalar_one()
    shop_names = sorted(set(shops) | set(by_state) | set(states))
    shop_list = []
    for name in shop_names:
        st = states.get(name)
        ok_at = st.last_poll_ok_at if st is not None else None
        shop_list.append(ShopStatus(
            shop=name, last_poll_ok_at=ok_at,
            lag_seconds=(now - ok_at).total_seconds() if ok_at else None,
            paused=bool(st.paused) if st is not None else False,
            paused_reason=st.paused_reason if st is not None else None,
            last_error=st.last_error if st is not None else None,
            states=by_state.get(name, {}),
            clock_offset_s=(st.clock_offset_ms / 1000 if st is not None
                            and st.clock_offset_ms is not None else None),
            clock_checked_at=st.clock_checked_at if st is not None else None,
        ))
    pool_list = []
    for p in pool_rows:
        avail = int(available.get(p.id, 0))
        sold7 = int(sold.get(p.id, 0))
        cover = round(avail / (sold7 / 7), 1) if sold7 else None
        pool_list.append(PoolStatus(p.name, avail, sold7, cover, p.low_stock))
    totals: dict[str, int] = {}
    for per_shop in by_state.values():
        for state, n in per_shop.items():
            totals[state] = totals.get(state, 0) + n
    attention: dict[str, int] = {
        k: totals.get(k, 0) for k in (OrderState.FAILED, OrderState.HELD, OrderState.WAITING_STOCK,
                                      OrderState.SOURCING)}
    attention["failed_memos"] = int(failed_memos)
    attention.update(service_attention(engine, now))
    return Status(shop_list, pool_list, attention)
