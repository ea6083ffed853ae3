"""The robot as a supplier: one shop's goods and orders for a buyer platform's gateway.

:class:`ShopSupply` is the core's side of :class:`connectors.gateway.SupplyBackend`, lent to
the shop's connector for each request to ``/supply/<shop>/…`` (:mod:`robot.http.supply`):

* goods are the shop's ``items:`` with a ``price``, their stock the pools' live stock (units
  whose every share can be served now);
* a purchase is an order like any other, taken in by :func:`robot.pipeline.intake` (risk
  rules, blacklists, the atomic claim, the audit) and idempotent on the platform's order
  number: a repeat — sequential or concurrent — finds the stored order and answers the same
  codes, and stock is taken once (the ``UNIQUE(shop, platform_order_id)`` constraint decides
  between concurrent first requests). A purchase above the platform's ``max_amount`` is
  refused before anything is written;
* an order allocated in the transaction that took it in is handed over in that same
  transaction (shipped, codes delivered, the write-back job settled, the codes marked seen
  and the hand-over audited by :func:`robot.outbox.hand_over_in_tx` as a ship job's are) —
  durable before the answer carries its codes. Any other order answers
  "processing"; it is shipped later through the outbox, whose ship job is the connector's
  callback carrying the codes;
* every later read that shows codes is audited (``supply_read``);
* goods-change subscriptions are kept in ``supply_subscriptions`` with what was last sent;
  :func:`notify_goods_changes` (the daemon, every :data:`GOODS_NOTICE_INTERVAL`) sends each
  subscription whose goods' price, stock or status differs, and records it once the platform
  acknowledged (a failure is retried after :data:`GOODS_NOTICE_RETRY`). Several robot
  processes may send the same notice twice: harmless, a notice carries the current values;
* an order the platform bought that a person rejected or cancelled (its platform status
  still "paid": the platform did not close it itself) is reported failed through the
  gateway's failure callback by the same sweep (:func:`notify_failures`), recorded in
  ``supply_callbacks`` once acknowledged.

Top-up goods (a mapping with ``goods_type: recharge``: ``suppliers:``, no pool) are listed on
sale while one of their suppliers runs in this process, with :data:`RECHARGE_STOCK`. A top-up
purchase names the account (and game area / server) to credit; it becomes the order line's
SKU properties, read by the mapping's account rule (robot.supplyroute) and checked against
its form before anything is written. The order goes to ``sourcing`` in the transaction that
takes it in (the supplier attempts' keys committed with it), and is answered "processing";
the sourcing worker buys it, then the outbox's ship job posts the platform's success
callback. A top-up every supplier failed (``failed``, with no ship job) is reported failed
by :func:`notify_failures`, like an order a person rejected. A refund request for a top-up
being bought is not granted (no supplier cancels); a refund notice lets it finish and flags
it for review (robot.sourcing).

This module never logs a code.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any

from sqlalchemy import Connection, Engine, delete, exists, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from connectors.base import HandedCode, Order, OrderLine, PlatformStatus, RefundState
from connectors.errors import RobotError
from connectors.gateway import (
    FailureNotifier,
    Goods,
    GoodsKind,
    GoodsNotifier,
    Purchase,
    PurchaseState,
    PurchaseView,
    RefundNotice,
    Refusal,
    Subscription,
    SupplyRefused,
    our_order_id,
)
from robot import audit, outbox, pipeline, supplyroute
from robot.clock import DEFAULT_ZONE, to_aware, utcnow
from robot.config import ShopConfig, SkuMapping, cents
from robot.db import transaction
from robot.http import handover
from robot.log import get_logger
from robot.pools import pool_stats
from robot.schema import (
    deliveries,
    order_lines,
    orders,
    supplier_attempts,
    supply_callbacks,
    supply_subscriptions,
)
from robot.schema import outbox as outbox_table
from robot.states import IN_FLIGHT, DeliveryState, OrderState, SupplierAttemptState
from robot.vault import Vault, mask

log = get_logger(__name__)

_SUCCEEDED = (OrderState.SHIPPED, OrderState.REFUNDED)
_FAILED = (OrderState.CANCELLED, OrderState.REJECTED, OrderState.IGNORED)


#: What the platform is told when no supplier could serve an order (the order's own reason
#: names our suppliers and their answers: for the merchant, not for the platform).
SOURCING_FAILED_REMARK = "货源采购失败"
#: The stock a top-up goods shows while one of its suppliers runs: bought per order, so no
#: count of our own limits it (the suppliers' balances are watched by the alerts).
RECHARGE_STOCK = 9999


def _no_wake() -> None:
    return None


class ShopSupply:
    """One shop's goods and orders, as its buyer platform's gateway sees them.

    ``suppliers``: the names of the supplier clients running in this process (a top-up goods
    is on sale while one of its routes' suppliers is among them). ``wake``: called (in the
    event loop's thread) when a purchase leaves an order to be worked on (allocation,
    sourcing)."""

    def __init__(self, engine: Engine, vault: Vault, shop: ShopConfig, *,
                 zone: tzinfo = DEFAULT_ZONE, suppliers: Collection[str] = (),
                 wake: Callable[[], None] = _no_wake) -> None:
        self.engine = engine
        self.vault = vault
        self.shop = shop
        self.zone = zone
        self.suppliers = frozenset(suppliers)
        self.wake = wake
        self.actor = f"supply:{shop.name}"

    # -- goods --------------------------------------------------------------------------
    def _mapping(self, goods_no: str) -> SkuMapping | None:
        for mapping in self.shop.items:
            if mapping.outer_id == goods_no and mapping.price is not None:
                return mapping
        return None

    async def goods(self) -> Sequence[Goods]:
        return await asyncio.to_thread(self.current_goods)

    def routed(self, mapping: SkuMapping) -> bool:
        """Whether one of a top-up mapping's suppliers runs here (the goods is on sale)."""
        return any(route.supplier in self.suppliers for route in mapping.suppliers)

    def current_goods(self) -> list[Goods]:
        """The mapped goods with the pools' live stock (top-ups: while a supplier runs)."""
        now = utcnow()
        available = {s.name: s.available for s in pool_stats(self.engine, now)}
        out = []
        for m in self.shop.items:
            if m.outer_id is None or m.price is None:
                continue
            if m.topup:
                on = self.routed(m)
                out.append(Goods(goods_no=m.outer_id, name=m.goods_name or m.outer_id,
                                 kind=GoodsKind.RECHARGE, price_cents=cents(m.price),
                                 stock=RECHARGE_STOCK if on else 0, on_sale=on,
                                 updated_at=now))
                continue
            stock = min(available.get(share.pool, 0) // share.quantity for share in m.pools)
            out.append(Goods(goods_no=m.outer_id, name=m.goods_name or m.pools[0].pool,
                             kind=GoodsKind.CARD, price_cents=cents(m.price), stock=stock,
                             on_sale=True, updated_at=now))
        return out

    # -- purchases ------------------------------------------------------------------------
    async def purchase(self, purchase: Purchase) -> PurchaseView:
        try:
            view = await asyncio.to_thread(self._purchase, purchase)
        except DBAPIError as exc:
            log.error("supply_unavailable", shop=self.shop.name, error=type(exc).__name__)
            raise SupplyRefused(Refusal.UNAVAILABLE, "the database is unavailable") from exc
        if view.state is PurchaseState.PROCESSING:
            self.wake()  # waiting for stock or a supplier: the workers look now
        return view

    def _purchase(self, purchase: Purchase) -> PurchaseView:
        known = self._view(purchase.platform_order_id, audited=True)
        if known is not None:
            return known  # a repeat: the same order, the same codes, nothing taken again
        order = self._take(purchase)
        result = pipeline.intake(self.engine, self.shop, order, actor=self.actor,
                                 allocate=True, zone=self.zone, then=self._hand_over)
        if result.order_id is None:
            raise SupplyRefused(Refusal.BAD_REQUEST, "the order number cannot be stored")
        view = self._view(purchase.platform_order_id, audited=result.action != "created")
        assert view is not None
        log.info("supply_purchase", shop=self.shop.name, order_id=result.order_id,
                 action=result.action, state=view.state.value)
        return view

    def _take(self, purchase: Purchase) -> Order:
        """The order for a new purchase, or why it is refused (nothing written)."""
        mapping = self._mapping(purchase.goods_no)
        if mapping is None or mapping.price is None:
            raise SupplyRefused(Refusal.UNKNOWN_GOODS, "no such goods")
        if mapping.topup != (purchase.kind is GoodsKind.RECHARGE):
            raise SupplyRefused(Refusal.NOT_SUPPORTED, "the goods is not of this order type")
        if mapping.topup and not self.routed(mapping):
            raise SupplyRefused(Refusal.OFF_SALE, "none of the goods' suppliers runs")
        unit = cents(mapping.price)
        total = unit * purchase.quantity
        if purchase.max_total_cents is not None and total > purchase.max_total_cents:
            raise SupplyRefused(Refusal.PRICE_ABOVE_MAX, "our price is above max_amount")
        line = OrderLine(line_id=purchase.platform_order_id[:64], quantity=purchase.quantity,
                         item_id=purchase.goods_no, outer_id=purchase.goods_no,
                         title=mapping.goods_name or (mapping.pools[0].pool if mapping.pools
                                                      else purchase.goods_no),
                         unit_price_cents=unit, properties=_account_properties(purchase))
        order = Order(platform_order_id=purchase.platform_order_id,
                      status=PlatformStatus.PAID, lines=(line,), total_cents=total,
                      paid_at=utcnow(), buyer_id=purchase.buyer_id, buyer_ip=purchase.buyer_ip,
                      extra=dict(purchase.extra))
        if mapping.topup:
            _check_account(mapping, order, line)
        return order

    def _hand_over(self, conn: Connection, result: pipeline.IntakeResult) -> None:
        """In the intake's transaction: an order allocated now is handed over now (marked
        seen and audited like the outbox's hand-over, its ship job settled)."""
        if result.action != "created" or result.state != OrderState.ALLOCATED:
            return
        order_id = result.order_id
        assert order_id is not None
        now = utcnow()
        masked = [mask(handover.plaintext(self.vault, r))
                  for r in handover.code_rows(conn, order_id)]
        outbox.hand_over_in_tx(conn, order_id, masked, actor=self.actor, now=now,
                               shop=self.shop.name, answer=True)
        pipeline.transition(conn, order_id, OrderState.ALLOCATED, OrderState.SHIPPED,
                            None, now, shipped_at=now)
        conn.execute(update(deliveries).where(deliveries.c.order_id == order_id)
                     .values(state=DeliveryState.DELIVERED, delivered_at=now))
        outbox.settle_ship_in_tx(conn, order_id, now)

    # -- reading orders back ------------------------------------------------------------------
    async def order(self, platform_order_id: str) -> PurchaseView | None:
        return await asyncio.to_thread(self._view, platform_order_id, audited=True)

    def _view(self, platform_order_id: str, *, audited: bool) -> PurchaseView | None:
        """The order as stored; codes are shown (and, when ``audited``, the read audited in
        the same transaction) once they are handed over."""
        with transaction(self.engine) as conn:
            row = conn.execute(select(orders).where(
                orders.c.shop == self.shop.name,
                orders.c.platform_order_id == platform_order_id)).first()
            if row is None:
                return None
            state = self._state(conn, row)
            rows = handover.code_rows(conn, int(row.id)) if state is PurchaseState.SUCCEEDED \
                else []
            if rows and audited:
                audit.append(conn, actor=self.actor, action="supply_read",
                             subject=f"order:{int(row.id)}",
                             details={"code_ids": [r.code_id for r in rows]})
            redeem = outbox.redeem_templates(conn, self.vault,
                                             [int(r.row.pool_id) for r in rows])
            line = conn.execute(select(order_lines.c.outer_id, order_lines.c.quantity)
                                .where(order_lines.c.order_id == row.id)
                                .order_by(order_lines.c.line_no)).first()
        codes = tuple(outbox.handed_code(handover.plaintext(self.vault, r), r.line_id,
                                         redeem.get(int(r.row.pool_id))) for r in rows)
        return self._render(row, state, codes, line)

    @staticmethod
    def _state(conn: Connection, row: Any) -> PurchaseState:
        if row.state in _SUCCEEDED:
            return PurchaseState.SUCCEEDED
        if row.state in _FAILED:
            return PurchaseState.FAILED
        if row.state == OrderState.FAILED and not _ship_job(conn, int(row.id)):
            return PurchaseState.FAILED  # every supplier failed: nothing was delivered
        if row.state == OrderState.ALLOCATED and conn.execute(
                select(deliveries.c.id).where(deliveries.c.order_id == row.id,
                                              deliveries.c.seen_at.is_not(None))).first():
            return PurchaseState.SUCCEEDED  # the callback with these codes is on its way
        if row.state == OrderState.ALLOCATED and _topped_up(conn, int(row.id)):
            return PurchaseState.SUCCEEDED  # the top-up is done; its callback is on its way
        return PurchaseState.PROCESSING

    @staticmethod
    def _render(row: Any, state: PurchaseState, codes: tuple[HandedCode, ...],
                line: Any) -> PurchaseView:
        ended: datetime | None = None
        if state is PurchaseState.SUCCEEDED:
            ended = to_aware(row.shipped_at or row.updated_at)
        elif state is PurchaseState.FAILED:
            ended = to_aware(row.updated_at)
        extra = json.loads(row.extra or "{}")
        return PurchaseView(
            platform_order_id=row.platform_order_id,
            our_order_id=our_order_id(row.platform_order_id),
            goods_no=(line.outer_id if line is not None else None) or "",
            quantity=int(line.quantity) if line is not None else 0,
            state=state, total_cents=int(row.total_cents),
            ordered_at=to_aware(row.received_at), ended_at=ended, codes=codes,
            reason=(SOURCING_FAILED_REMARK if row.state == OrderState.FAILED else row.reason)
            if state is PurchaseState.FAILED else None,
            extra={str(k): str(v) for k, v in extra.items()})

    # -- refunds ---------------------------------------------------------------------------
    async def refunded(self, notice: RefundNotice) -> bool:
        return await asyncio.to_thread(self._refunded, notice)

    async def refund_requested(self, notice: RefundNotice) -> PurchaseView | None:
        return await asyncio.to_thread(self._refund_requested, notice)

    def _refund_requested(self, notice: RefundNotice) -> PurchaseView | None:
        view = self._view(notice.platform_order_id, audited=False)
        if view is None or view.state is not PurchaseState.PROCESSING:
            return view
        if self._in_flight(notice.platform_order_id):
            # Being bought from a supplier, which cannot be stopped: still processing (the
            # platform's refund notice, if it refunds anyway, flags it for review).
            log.warning("supply_refund_request_in_flight", shop=self.shop.name)
            return view
        self._refunded(notice)  # not served yet: cancelled, its codes (unseen) back in stock
        return self._view(notice.platform_order_id, audited=False)

    def _in_flight(self, platform_order_id: str) -> bool:
        with self.engine.connect() as conn:
            state = conn.execute(select(orders.c.state).where(
                orders.c.shop == self.shop.name,
                orders.c.platform_order_id == platform_order_id)).scalar()
        return state in IN_FLIGHT

    def _refunded(self, notice: RefundNotice) -> bool:
        """The platform refunded the order: taken in as a closed, refunded snapshot (an
        order served already becomes ``refunded`` with its codes flagged for review; one not
        served yet is cancelled), with the notice itself audited in the same transaction."""
        with self.engine.connect() as conn:
            row = conn.execute(select(orders.c.id, orders.c.extra, orders.c.total_cents).where(
                orders.c.shop == self.shop.name,
                orders.c.platform_order_id == notice.platform_order_id)).first()
            lines = conn.execute(select(order_lines).where(order_lines.c.order_id == row.id)
                                 .order_by(order_lines.c.line_no)).all() if row else []
        if row is None:
            log.warning("supply_refund_unknown_order", shop=self.shop.name)
            return False
        snapshot = Order(
            platform_order_id=notice.platform_order_id, status=PlatformStatus.CLOSED,
            lines=tuple(OrderLine(line_id=ln.line_id, quantity=int(ln.quantity),
                                  item_id=ln.item_id, outer_id=ln.outer_id,
                                  unit_price_cents=int(ln.unit_price_cents),
                                  refund=RefundState.REFUNDED) for ln in lines),
            total_cents=int(row.total_cents), extra=json.loads(row.extra or "{}"))

        def record(conn: Connection, result: pipeline.IntakeResult) -> None:
            audit.append(conn, actor=self.actor, action="supply_refund_notice",
                         subject=f"order:{int(row.id)}",
                         details={"amount_cents": notice.amount_cents, "reason": notice.reason,
                                  "state": result.state})

        result = pipeline.intake(self.engine, self.shop, snapshot, actor=self.actor,
                                 zone=self.zone, then=record)
        log.info("supply_refund_notice", shop=self.shop.name, order_id=int(row.id),
                 state=result.state)
        return True

    # -- goods-change subscriptions ------------------------------------------------------
    async def subscribe(self, subscription: Subscription) -> bool:
        return await asyncio.to_thread(self._subscribe, subscription)

    def _subscribe(self, sub: Subscription) -> bool:
        if self._mapping(sub.goods_no) is None:
            return False
        now = utcnow()
        where = (supply_subscriptions.c.shop == self.shop.name,
                 supply_subscriptions.c.goods_no == sub.goods_no,
                 supply_subscriptions.c.token == sub.token)
        for _attempt in range(3):
            try:
                with transaction(self.engine) as conn:
                    if conn.execute(update(supply_subscriptions).where(*where).values(
                            notify_url=sub.notify_url, kind=sub.kind.value,
                            due_at=now)).rowcount:
                        return True
                    conn.execute(insert(supply_subscriptions).values(
                        shop=self.shop.name, goods_no=sub.goods_no, token=sub.token,
                        kind=sub.kind.value, notify_url=sub.notify_url, subscribed_at=now,
                        due_at=now))
                    audit.append(conn, actor=self.actor, action="supply_subscribe",
                                 subject=f"shop:{self.shop.name}",
                                 details={"goods_no": sub.goods_no})
                    return True
            except IntegrityError:
                continue  # the same subscription inserted concurrently: update it instead
        raise RuntimeError("subscribe kept colliding on (shop, goods_no, token)")

    async def unsubscribe(self, goods_no: str, token: str) -> None:
        await asyncio.to_thread(self._unsubscribe, goods_no, token)

    def _unsubscribe(self, goods_no: str, token: str) -> None:
        with transaction(self.engine) as conn:
            gone = conn.execute(delete(supply_subscriptions).where(
                supply_subscriptions.c.shop == self.shop.name,
                supply_subscriptions.c.goods_no == goods_no,
                supply_subscriptions.c.token == token)).rowcount
            if gone:
                audit.append(conn, actor=self.actor, action="supply_unsubscribe",
                             subject=f"shop:{self.shop.name}", details={"goods_no": goods_no})

    async def subscriptions(self, goods_no: str | None = None) -> Sequence[Subscription]:
        return await asyncio.to_thread(self._subscriptions, goods_no)

    def _subscriptions(self, goods_no: str | None = None) -> list[Subscription]:
        query = select(supply_subscriptions).where(
            supply_subscriptions.c.shop == self.shop.name).order_by(supply_subscriptions.c.id)
        if goods_no is not None:
            query = query.where(supply_subscriptions.c.goods_no == goods_no)
        with self.engine.connect() as conn:
            return [_subscription(r) for r in conn.execute(query)]


#: The line properties a top-up purchase's account, area and server become (the names a
#: recharge mapping's account rule reads: robot.config.mappings.GATEWAY_ACCOUNT).
_ACCOUNT_PROPERTIES = (("account", "account"), ("game_area", "area"), ("game_server", "server"),
                       ("game_name", "game"), ("game_role", "role"))


def _account_properties(purchase: Purchase) -> tuple[tuple[str, str], ...]:
    values = ((name, getattr(purchase, attr)) for name, attr in _ACCOUNT_PROPERTIES)
    return tuple((name, value.strip()) for name, value in values if value and value.strip())


def _check_account(mapping: SkuMapping, order: Order, line: OrderLine) -> None:
    """Refuse a top-up whose account is missing or not of the mapping's form."""
    supply = supplyroute.supply_for(mapping, order, line)
    account = dict(line.properties).get("account")
    if supply is None or account is None:
        raise SupplyRefused(Refusal.BAD_ACCOUNT, "a top-up names the account to credit")
    why = supplyroute.check_account(supply, account)
    if why is not None:
        raise SupplyRefused(Refusal.BAD_ACCOUNT, f"the account is refused: {why}")


def _ship_job(conn: Connection, order_id: int) -> bool:
    return conn.execute(select(outbox_table.c.id).where(
        outbox_table.c.order_id == order_id, outbox_table.c.kind == "ship")).first() is not None


def _topped_up(conn: Connection, order_id: int) -> bool:
    """Whether the order's goods were bought from a supplier (and nothing is still open)."""
    states = {str(r[0]) for r in conn.execute(select(supplier_attempts.c.state).where(
        supplier_attempts.c.order_id == order_id))}
    return SupplierAttemptState.SUCCEEDED in states and not conn.execute(
        select(deliveries.c.id).where(deliveries.c.order_id == order_id)).first()


def _subscription(r: Any) -> Subscription:
    return Subscription(goods_no=r.goods_no, kind=GoodsKind(r.kind), token=r.token,
                        notify_url=r.notify_url, subscribed_at=to_aware(r.subscribed_at))


#: Seconds between two looks at the subscribed goods, and before a failed notice is retried.
GOODS_NOTICE_INTERVAL = 30.0
GOODS_NOTICE_RETRY = 60.0


@dataclass(frozen=True)
class GoodsChange:
    row_id: int
    subscription: Subscription
    goods: Goods


def goods_changes(supply: ShopSupply, now: datetime) -> list[GoodsChange]:
    """The shop's due subscriptions whose goods differ from what was last sent."""
    current = {g.goods_no: g for g in supply.current_goods()}
    with supply.engine.connect() as conn:
        rows = conn.execute(select(supply_subscriptions).where(
            supply_subscriptions.c.shop == supply.shop.name,
            supply_subscriptions.c.due_at <= now).order_by(supply_subscriptions.c.id)).all()
    changes = []
    for r in rows:
        goods = current.get(r.goods_no)
        if goods is None:
            goods = Goods(r.goods_no, r.goods_no, GoodsKind(r.kind), int(r.sent_price or 0), 0,
                          on_sale=False, updated_at=now)  # no longer mapped: off the shelf
        sent = (r.sent_price, r.sent_stock, r.sent_on_sale)
        if sent != (goods.price_cents, goods.stock, goods.on_sale):
            changes.append(GoodsChange(int(r.id), _subscription(r), goods))
    return changes


def record_goods_notice(engine: Engine, change: GoodsChange, error: str | None,
                        now: datetime) -> None:
    """What the platform was sent (acknowledged), or why not and when to try again."""
    with transaction(engine) as conn:
        row = supply_subscriptions.c.id == change.row_id
        if error is None:
            g = change.goods
            conn.execute(update(supply_subscriptions).where(row).values(
                sent_price=g.price_cents, sent_stock=g.stock, sent_on_sale=g.on_sale,
                sent_at=now, last_error=None, due_at=now))
        else:
            conn.execute(update(supply_subscriptions).where(row).values(
                last_error=error[:500], due_at=now + timedelta(seconds=GOODS_NOTICE_RETRY)))


async def notify_goods_changes(engine: Engine, vault: Vault, shops: Mapping[str, ShopConfig],
                               connectors: Mapping[str, object], *,
                               zone: tzinfo = DEFAULT_ZONE,
                               suppliers: Collection[str] = ()) -> int:
    """Send every due goods-change notice of every shop whose gateway sends them; returns
    how many were acknowledged (``suppliers``: the supplier clients running, whose top-up
    goods are on sale)."""
    sent = 0
    for name, connector in connectors.items():
        shop = shops.get(name)
        if shop is None or not isinstance(connector, GoodsNotifier):
            continue
        supply = ShopSupply(engine, vault, shop, zone=zone, suppliers=suppliers)
        now = utcnow()
        for change in await asyncio.to_thread(goods_changes, supply, now):
            error: str | None = None
            try:
                await connector.notify_goods(change.subscription, change.goods)
            except RobotError as exc:
                error = exc.message
                log.warning("goods_notice_failed", shop=name, goods_no=change.goods.goods_no,
                            error=error)
            await asyncio.to_thread(record_goods_notice, engine, change, error, utcnow())
            sent += error is None
    return sent


@dataclass(frozen=True)
class OwedFailure:
    order_id: int
    shop: str
    platform_order_id: str
    reason: str
    extra: Mapping[str, str]


#: Orders given up on by a person (the platform still counts them paid).
_GIVEN_UP = (OrderState.REJECTED, OrderState.CANCELLED)
#: An order whose every supplier failed: ``failed`` before anything was shipped (no ship
#: job; a ``failed`` order with one failed its write-back and is replayed, never reported).
_SOURCING_FAILED = (orders.c.state == OrderState.FAILED) & ~exists().where(
    outbox_table.c.order_id == orders.c.id, outbox_table.c.kind == "ship")


def owed_failures(engine: Engine, shops: Sequence[str], now: datetime) -> list[OwedFailure]:
    """Orders of ``shops`` that a person rejected or cancelled, or that no supplier could
    serve, whose failure callback is due and not yet acknowledged."""
    if not shops:
        return []
    with engine.connect() as conn:
        rows = conn.execute(
            select(orders.c.id, orders.c.shop, orders.c.platform_order_id, orders.c.reason,
                   orders.c.extra, orders.c.state)
            .outerjoin(supply_callbacks, supply_callbacks.c.order_id == orders.c.id)
            .where(orders.c.shop.in_(list(shops)),
                   orders.c.state.in_(_GIVEN_UP) | _SOURCING_FAILED,
                   orders.c.platform_status == PlatformStatus.PAID.value,
                   supply_callbacks.c.sent_at.is_(None),
                   (supply_callbacks.c.due_at.is_(None)) | (supply_callbacks.c.due_at <= now))
            .order_by(orders.c.id).limit(100)).all()
    return [OwedFailure(int(r.id), r.shop, r.platform_order_id,
                        SOURCING_FAILED_REMARK if r.state == OrderState.FAILED else r.reason or "",
                        {str(k): str(v) for k, v in json.loads(r.extra or "{}").items()})
            for r in rows]


def record_failure_notice(engine: Engine, owed: OwedFailure, error: str | None,
                          now: datetime) -> None:
    """The failure callback was acknowledged (audited), or why not and when to try again."""
    with transaction(engine) as conn:
        row = conn.execute(select(supply_callbacks.c.attempts).where(
            supply_callbacks.c.order_id == owed.order_id)).first()
        values = {"attempts": (int(row.attempts) if row else 0) + 1, "last_error": error,
                  "sent_at": now if error is None else None,
                  "due_at": now + timedelta(seconds=0 if error is None else GOODS_NOTICE_RETRY)}
        if row is None:
            conn.execute(insert(supply_callbacks).values(order_id=owed.order_id, **values))
        else:
            conn.execute(update(supply_callbacks)
                         .where(supply_callbacks.c.order_id == owed.order_id).values(**values))
        if error is None:
            audit.append(conn, actor=f"supply:{owed.shop}", action="supply_failure_sent",
                         subject=f"order:{owed.order_id}", details={"reason": owed.reason})


async def notify_failures(engine: Engine, connectors: Mapping[str, object]) -> int:
    """Send every owed failure callback; returns how many were acknowledged."""
    notifiers = {name: c for name, c in connectors.items() if isinstance(c, FailureNotifier)}
    owed = await asyncio.to_thread(owed_failures, engine, sorted(notifiers), utcnow())
    sent = 0
    for item in owed:
        error: str | None = None
        try:
            await notifiers[item.shop].notify_failure(item.platform_order_id, item.extra,
                                                      item.reason)
        except RobotError as exc:
            error = exc.message
            log.warning("supply_failure_notice_failed", shop=item.shop, order_id=item.order_id,
                        error=error)
        await asyncio.to_thread(record_failure_notice, engine, item, error, utcnow())
        sent += error is None
    return sent
