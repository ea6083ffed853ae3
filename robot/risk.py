"""Risk rules: which new paid orders wait for a person, the blacklists, and the dry run.

:func:`judge` is pure: the shop's rules plus the facts about an order (its lines and amount,
and counts gathered by :func:`gather` from the ``orders`` and ``blacklist`` tables) give the
list of rules it breaks. :func:`check_new_order` is the hook the pipeline calls inside
intake's transaction, before the order row exists; a hit makes the order ``held`` with the
rules named in ``orders.reason``. :func:`dry_run` judges past orders against the current
rules and changes nothing.

Who a buyer is: rates, daily amounts and "new buyer" count a buyer's orders by ``(platform,
buyer_id)`` across every shop of that platform (the same id on two platforms is two
namespaces, not one person). A ``buyer`` blacklist entry matches that buyer id on EVERY
platform, because a person who bans an id wants it banned everywhere and a rare collision
costs a hold, never a lost order. IPs are the same on every platform and are compared in
canonical form (``ipaddress``).

Rule semantics (windows end at the moment the order is judged; "recent" uses ``received_at``):

* ``buyer_rate`` / ``ip_rate``: earlier orders in the window (any state) + this one > max;
* ``max_quantity``: units on the order's mapped, unrefunded lines > max;
* ``buyer_amount_per_day_yuan``: totals of the buyer's orders received since the start of
  today (local midnight in the robot's ``timezone:``; not cancelled, rejected, ignored or
  refunded) + this order's total > limit. The limit resets at local midnight, not 24 hours
  after the buyer's first order;
* ``new_buyer_first_order_yuan``: the buyer has no shipped order on this platform yet and
  this order's total > limit (so a new buyer's second big order is held too);
* ``review_skus``: a mapped line has one of the listed item / SKU / outer ids;
* blacklists: the buyer id or the IP is listed.

The counts are read in intake's transaction without locking the buyer's other orders: on
PostgreSQL / MySQL two orders of one buyer taken in at the same instant by two workers may
both be counted without the other (a rate can be exceeded by the orders in flight); SQLite
serializes intakes, so there it is exact.

This module must never ship, allocate or change an existing order, and :func:`dry_run` must
never write anything.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Connection, Engine, and_, bindparam, delete, func, insert, or_, select
from sqlalchemy.exc import IntegrityError

from robot import audit
from robot.clock import DEFAULT_ZONE, day_start, local_day, utcnow
from robot.config.types import cents
from robot.db import read, transaction
from robot.errors import UserError
from robot.schema import blacklist, order_lines, orders
from robot.states import OrderState

if TYPE_CHECKING:
    from robot.config import RateRule, RiskRules

Kind = Literal["buyer", "ip"]
#: Orders in these states do not count towards a buyer's daily amount (no money kept).
NOT_SPENT = (OrderState.CANCELLED, OrderState.REJECTED, OrderState.IGNORED, OrderState.REFUNDED)
MAX_VALUE = 128  # blacklist.value column width


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class LineFacts:
    """One mapped, unrefunded line of the order being judged."""

    quantity: int
    item_id: str | None = None
    sku_id: str | None = None
    outer_id: str | None = None


@dataclass(frozen=True)
class Candidate:
    """The order being judged, as the rules see it."""

    platform: str
    buyer_id: str | None
    buyer_ip: str | None
    total_cents: int
    lines: Sequence[LineFacts]


@dataclass(frozen=True)
class Facts:
    """What the database said about the candidate's buyer and IP before it arrived."""

    buyer_orders: int = 0  # in the buyer_rate window
    ip_orders: int = 0  # in the ip_rate window
    buyer_cents_today: int = 0  # the buyer's spend since local midnight
    buyer_has_shipped: bool = True  # unknown buyer id: not treated as new
    buyer_blacklisted: bool = False
    ip_blacklisted: bool = False


@dataclass(frozen=True)
class Hit:
    """One broken rule: its name and the numbers that broke it."""

    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.rule} {self.detail}"


def canonical_ip(value: str) -> str:
    """The canonical text of an IP address; the input unchanged if it is not one."""
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return value.strip()


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _yuan(cents: int) -> str:
    return f"{cents / 100:.2f}"


def judge(rules: RiskRules | None, cand: Candidate, facts: Facts) -> list[Hit]:
    """Every rule the candidate breaks (blacklists first); empty when it may go on."""
    hits: list[Hit] = []
    if facts.buyer_blacklisted:
        hits.append(Hit("blacklist_buyer", f"buyer {cand.buyer_id} is blacklisted"))
    if facts.ip_blacklisted:
        hits.append(Hit("blacklist_ip", f"IP {cand.buyer_ip} is blacklisted"))
    if rules is None:
        return hits
    for rule in _RULES:
        hit = rule(rules, cand, facts)
        if hit is not None:
            hits.append(hit)
    return hits


def _rate(kind: str, rule: RateRule | None, who: str | None, seen: int) -> Hit | None:
    """The hit of a rate rule (orders per buyer or per IP in a window): ``seen`` earlier
    orders of ``who`` plus this one, past the rule's maximum."""
    if rule is None or not who:
        return None
    n = seen + 1
    if n <= rule.max_orders:
        return None
    return Hit(kind, f"{n} orders in {_duration(rule.window)} > {rule.max_orders}")


def _buyer_rate(rules: RiskRules, cand: Candidate, facts: Facts) -> Hit | None:
    return _rate("buyer_rate", rules.buyer_rate, cand.buyer_id, facts.buyer_orders)


def _ip_rate(rules: RiskRules, cand: Candidate, facts: Facts) -> Hit | None:
    return _rate("ip_rate", rules.ip_rate, cand.buyer_ip, facts.ip_orders)


def _quantity(rules: RiskRules, cand: Candidate, facts: Facts) -> Hit | None:
    if rules.max_quantity is None:
        return None
    units = sum(line.quantity for line in cand.lines)
    if units <= rules.max_quantity:
        return None
    return Hit("quantity", f"{units} units > {rules.max_quantity}")


def _buyer_amount(rules: RiskRules, cand: Candidate, facts: Facts) -> Hit | None:
    if rules.buyer_amount_per_day_yuan is None or not cand.buyer_id:
        return None
    limit = cents(rules.buyer_amount_per_day_yuan)
    spent = facts.buyer_cents_today + cand.total_cents
    if spent <= limit:
        return None
    return Hit("buyer_amount_per_day", f"{_yuan(spent)} yuan today > {_yuan(limit)}")


def _new_buyer(rules: RiskRules, cand: Candidate, facts: Facts) -> Hit | None:
    if (rules.new_buyer_first_order_yuan is None or not cand.buyer_id
            or facts.buyer_has_shipped):
        return None
    limit = cents(rules.new_buyer_first_order_yuan)
    if cand.total_cents <= limit:
        return None
    return Hit("new_buyer", f"first order {_yuan(cand.total_cents)} yuan > {_yuan(limit)}")


def _review_sku(rules: RiskRules, cand: Candidate, facts: Facts) -> Hit | None:
    if not rules.review_skus:
        return None
    listed = {(k, v) for r in rules.review_skus
              for k, v in (("item_id", r.item_id), ("sku_id", r.sku_id),
                           ("outer_id", r.outer_id)) if v is not None}
    found = sorted({f"{k}={getattr(line, k)}" for line in cand.lines
                    for k in ("item_id", "sku_id", "outer_id")
                    if (k, getattr(line, k)) in listed})
    return Hit("review_sku", ", ".join(found)) if found else None


#: The configurable rules, in the order their hits are reported (after the blacklists).
_RULES: tuple[Callable[[RiskRules, Candidate, Facts], Hit | None], ...] = (
    _buyer_rate, _ip_rate, _quantity, _buyer_amount, _new_buyer, _review_sku)


def reason_of(hits: Sequence[Hit]) -> str:
    """The text for ``orders.reason``, e.g. ``risk: buyer_rate 4 orders in 1h > 3``."""
    return "risk: " + "; ".join(str(h) for h in hits)


# --------------------------------------------------------------------------- the SQL


def _count_since(conn: Connection, where: Any, since: datetime, before_id: int | None,
                 until: datetime | None) -> int:
    stmt = select(func.count()).select_from(orders).where(where, orders.c.received_at > since)
    if until is not None:
        stmt = stmt.where(orders.c.received_at <= until)
    if before_id is not None:
        stmt = stmt.where(orders.c.id < before_id)
    return int(conn.execute(stmt).scalar_one())


def gather(conn: Connection, rules: RiskRules | None, cand: Candidate, at: datetime, *,
           before_id: int | None = None, zone: tzinfo = DEFAULT_ZONE) -> Facts:
    """The facts :func:`judge` needs, from the orders before the candidate.

    ``at`` is when the candidate arrived; ``before_id`` (dry run) limits the look to orders
    inserted before it; ``zone`` (the robot's ``timezone:``) says when "today" began. Only
    the queries the active rules need are run.
    """
    buyer = cand.buyer_id or None
    ip = canonical_ip(cand.buyer_ip) if cand.buyer_ip else None
    until = at if before_id is not None else None
    facts = _listed(conn, buyer, ip)
    if rules is None:
        return Facts(**facts)
    same_buyer = (orders.c.buyer_id == buyer) & (orders.c.platform == cand.platform)
    if buyer is not None and rules.buyer_rate is not None:
        facts["buyer_orders"] = _count_since(conn, same_buyer, at - timedelta(
            seconds=rules.buyer_rate.window), before_id, until)
    if ip is not None and rules.ip_rate is not None:
        facts["ip_orders"] = _count_since(conn, orders.c.buyer_ip == ip, at - timedelta(
            seconds=rules.ip_rate.window), before_id, until)
    if buyer is not None and rules.buyer_amount_per_day_yuan is not None:
        facts["buyer_cents_today"] = _spent_today(conn, same_buyer, at, zone, before_id, until)
    if buyer is not None and rules.new_buyer_first_order_yuan is not None:
        facts["buyer_has_shipped"] = _has_shipped(conn, same_buyer, before_id)
    return Facts(**facts)


def _listed(conn: Connection, buyer: str | None, ip: str | None) -> dict[str, Any]:
    """Whether the buyer id and the IP are blacklisted (only those the order has)."""
    facts: dict[str, Any] = {}
    if buyer is None and ip is None:
        return facts
    listed = {r[0] for r in read(conn, _LISTED, {"b_buyer": buyer, "b_ip": ip})}
    if buyer is not None:
        facts["buyer_blacklisted"] = "buyer" in listed
    if ip is not None:
        facts["ip_blacklisted"] = "ip" in listed
    return facts


def _spent_today(conn: Connection, same_buyer: Any, at: datetime, zone: tzinfo,
                 before_id: int | None, until: datetime | None) -> int:
    """The buyer's spend since local midnight, in orders that kept the money."""
    stmt = select(func.coalesce(func.sum(orders.c.total_cents), 0)).where(
        same_buyer, orders.c.received_at >= day_start(local_day(at, zone), zone),
        orders.c.state.not_in(NOT_SPENT))
    if until is not None:
        stmt = stmt.where(orders.c.received_at <= until)
    if before_id is not None:
        stmt = stmt.where(orders.c.id < before_id)
    return int(conn.execute(stmt).scalar_one())


def _has_shipped(conn: Connection, same_buyer: Any, before_id: int | None) -> bool:
    """Whether the buyer has had an order shipped before."""
    stmt = select(orders.c.id).where(same_buyer, orders.c.state == OrderState.SHIPPED).limit(1)
    if before_id is not None:
        stmt = stmt.where(orders.c.id < before_id)
    return conn.execute(stmt).first() is not None


# Built once (every new order asks): the kinds under which this buyer id or IP is listed.
# A None value matches nothing (``value = NULL`` is never true).
_LISTED = select(blacklist.c.kind).where(or_(
    and_(blacklist.c.kind == "buyer", blacklist.c.value == bindparam("b_buyer")),
    and_(blacklist.c.kind == "ip", blacklist.c.value == bindparam("b_ip"))))


def check_new_order(conn: Connection, rules: RiskRules | None, cand: Candidate,
                    now: datetime, zone: tzinfo = DEFAULT_ZONE) -> list[Hit]:
    """The rules a new order breaks; called inside intake's transaction before the insert
    (``zone``: the robot's ``timezone:``, whose midnight resets the daily limits)."""
    return judge(rules, cand, gather(conn, rules, cand, now, zone=zone))


def record_hold(conn: Connection, order_id: int, hits: Sequence[Hit], *, actor: str) -> None:
    """Audit a hold by the risk rules (in the caller's transaction)."""
    audit.append(conn, actor=actor, action="risk_hold", subject=f"order:{order_id}",
                 details={"rules": [h.rule for h in hits], "reason": reason_of(hits)})


# --------------------------------------------------------------------------- blacklists


@dataclass(frozen=True)
class BlacklistEntry:
    kind: str
    value: str
    reason: str | None
    created_at: datetime
    created_by: str


def _normalize(kind: Kind, value: str) -> str:
    value = value.strip()
    if not value:
        raise UserError(f"give a {kind} to blacklist")
    if kind == "ip":
        try:
            value = str(ipaddress.ip_address(value))
        except ValueError:
            raise UserError(f"{value!r} is not an IP address") from None
    if len(value) > MAX_VALUE:
        raise UserError(f"{kind} is longer than {MAX_VALUE} characters")
    return value


def add_blacklist(engine: Engine, kind: Kind, value: str, *, actor: str,
                  reason: str | None = None) -> BlacklistEntry:
    """Blacklist a buyer id (every platform) or an IP; audited. Already listed: UserError."""
    value = _normalize(kind, value)
    now = utcnow()
    try:
        with transaction(engine) as conn:
            conn.execute(insert(blacklist).values(kind=kind, value=value, reason=reason,
                                                  created_at=now, created_by=actor))
            audit.append(conn, actor=actor, action="blacklist_add", subject=f"{kind}:{value}",
                         details={"reason": reason})
    except IntegrityError:
        raise UserError(f"{kind} {value} is already blacklisted") from None
    return BlacklistEntry(kind, value, reason, now, actor)


def remove_blacklist(engine: Engine, kind: Kind, value: str, *, actor: str) -> None:
    """Take a buyer id or an IP off the blacklist; audited. Not listed: UserError."""
    value = _normalize(kind, value)
    with transaction(engine) as conn:
        gone = conn.execute(delete(blacklist).where(blacklist.c.kind == kind,
                                                    blacklist.c.value == value)).rowcount
        if gone != 1:
            raise UserError(f"{kind} {value} is not blacklisted")
        audit.append(conn, actor=actor, action="blacklist_remove", subject=f"{kind}:{value}",
                     details={})


def list_blacklist(engine: Engine) -> list[BlacklistEntry]:
    with engine.connect() as conn:
        rows = conn.execute(select(blacklist).order_by(blacklist.c.kind, blacklist.c.value))
        return [BlacklistEntry(r.kind, r.value, r.reason, r.created_at, r.created_by)
                for r in rows]


# --------------------------------------------------------------------------- dry run


@dataclass(frozen=True)
class WouldHold:
    order_id: int
    shop: str
    platform_order_id: str
    state: str  # the order's state now
    received_at: datetime
    reason: str


@dataclass(frozen=True)
class DryRun:
    since: datetime
    judged: int
    would_hold: list[WouldHold]


def dry_run(engine: Engine, rules_for: Callable[[str], RiskRules | None], *, days: float,
            now: datetime | None = None, zone: tzinfo = DEFAULT_ZONE) -> DryRun:
    """Which orders received in the last ``days`` the rules ``rules_for(shop)`` would hold.

    Each order is judged against the orders inserted before it (lower id) within the rule's
    window ending at its ``received_at``. Approximations: those earlier orders are seen in
    their CURRENT state (an order since refunded no longer counts towards a daily amount,
    "has shipped" reflects shipments made before now, not before the order), orders the
    new rules would have held still count as they did, the blacklist is today's, and lines
    are judged with the mapping stored at intake. Ignored orders are not judged (intake
    does not judge them either). Reads only.
    """
    now = now or utcnow()
    since = now - timedelta(days=days)
    found: list[WouldHold] = []
    judged = 0
    with engine.connect() as conn:
        rows = conn.execute(select(orders).where(orders.c.received_at > since,
                                                 orders.c.state != OrderState.IGNORED)
                            .order_by(orders.c.id)).all()
        for row in rows:
            lines = [LineFacts(int(ln.quantity), ln.item_id, ln.sku_id, ln.outer_id)
                     for ln in conn.execute(select(order_lines).where(
                         order_lines.c.order_id == row.id, order_lines.c.mapping != "[]",
                         order_lines.c.refund.in_(("none", "refused"))))]
            cand = Candidate(str(row.platform), row.buyer_id, row.buyer_ip,
                             int(row.total_cents), lines)
            rules = rules_for(str(row.shop))
            hits = judge(rules, cand, gather(conn, rules, cand, row.received_at,
                                             before_id=int(row.id), zone=zone))
            judged += 1
            if hits:
                found.append(WouldHold(int(row.id), str(row.shop), str(row.platform_order_id),
                                       str(row.state), row.received_at, reason_of(hits)))
        conn.rollback()
    return DryRun(since, judged, found)
