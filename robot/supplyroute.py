"""An order line's supplier route, the top-up account it needs, and the start of sourcing.

A shop mapping with ``suppliers:`` gives its lines a :class:`Supply`: the suppliers to try in
order (product, maximum cost per unit), the pool bought codes go into (card purchase) or the
account a top-up credits. It is written on the order line when the order comes in (so a later
change of the shop file does not change what an order in flight buys) and read again by the
allocator and the sourcing worker (:mod:`robot.sourcing`).

:func:`start` runs inside the allocating transaction: it writes every unit's first attempt,
with its idempotency key, and the order's ``source`` outbox job, in the same commit that moves
the order to ``sourcing``. So a key exists durably before any supplier hears of it. This module
never calls a supplier.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, insert

from connectors.base import Order, OrderLine
from connectors.supplier import PLACES
from robot.config.types import cents
from robot.schema import outbox, supplier_attempts
from robot.states import OutboxState, SupplierAttemptState

#: A mainland mobile number (11 digits, 1[3-9]…), not part of a longer number.
MOBILE_RE = re.compile(r"(?<!\d)(1[3-9]\d{9})(?!\d)")
#: A QQ number: 5 to 12 digits, not starting with 0.
QQ_RE = re.compile(r"(?<!\d)([1-9]\d{4,11})(?!\d)")
_FORMAT_NAMES = {"mobile": "mobile number (11 digits)", "qq": "QQ number (5-12 digits)",
                 "regex": "account of the expected form"}


@dataclass(frozen=True)
class Route:
    """One supplier to try: its name in the robot file, its product, the most one unit may
    cost (cents)."""

    supplier: str
    product: str
    max_cost_cents: int


@dataclass(frozen=True)
class Supply:
    """How one order line is bought (stored as JSON on the line)."""

    kind: Literal["topup", "card"]
    routes: tuple[Route, ...]
    pool: str | None = None  # card purchase: the pool its codes go into
    per_unit: int = 1  # card purchase: codes per unit sold
    account: str | None = None  # top-up: where it goes
    problem: str | None = None  # top-up: why no usable account was found
    account_format: str | None = None  # top-up: what a person's --account must look like
    account_pattern: str | None = None
    area: str | None = None  # top-up: the game area / server / game / role, for products
    server: str | None = None  # that need them
    game: str | None = None
    role: str | None = None

    def places(self) -> dict[str, str | None]:
        """The top-up's game area / server / game / role (``PLACES``), by name."""
        return {name: getattr(self, name) for name in PLACES}

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "pool": self.pool, "per_unit": self.per_unit,
                           "account": self.account, "problem": self.problem,
                           **self.places(),
                           "account_format": self.account_format,
                           "account_pattern": self.account_pattern,
                           "routes": [[r.supplier, r.product, r.max_cost_cents]
                                      for r in self.routes]},
                          ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> Supply | None:
        if not text:
            return None
        data = json.loads(text)
        return cls(kind=data["kind"], pool=data.get("pool"), per_unit=int(data["per_unit"]),
                   account=data.get("account"), problem=data.get("problem"),
                   account_format=data.get("account_format"),
                   account_pattern=data.get("account_pattern"),
                   **{name: data.get(name) for name in PLACES},
                   routes=tuple(Route(str(s), str(p), int(c)) for s, p, c in data["routes"]))


def shown(supply: Supply | None) -> dict[str, Any] | None:
    """A line's route as people see it (the account masked)."""
    if supply is None:
        return None
    return {"kind": supply.kind, "pool": supply.pool, "account": mask_account(supply.account),
            "problem": supply.problem,
            "suppliers": [{"supplier": r.supplier, "product": r.product,
                           "max_cost_cents": r.max_cost_cents} for r in supply.routes]}


def find_mapping(items: Sequence[Any], line: OrderLine) -> Any | None:
    """The mapping of a line (the most specific key wins: SKU id, outer id, item id)."""
    return mapping_of(items, sku_id=line.sku_id, outer_id=line.outer_id, item_id=line.item_id)


def mapping_of(items: Sequence[Any], *, sku_id: str | None, outer_id: str | None,
               item_id: str | None) -> Any | None:
    """The mapping for a line's keys (the most specific key wins: SKU id, outer id, item id)."""
    for key, value in (("sku_id", sku_id), ("outer_id", outer_id), ("item_id", item_id)):
        if not value:
            continue
        for mapping in items:
            if getattr(mapping, key) == value:
                return mapping
    return None


def supply_for(mapping: Any, order: Order, line: OrderLine) -> Supply | None:
    """The line's supply route from its mapping (None: pools only)."""
    routes = tuple(Route(r.supplier, r.product, cents(r.max_cost))
                   for r in getattr(mapping, "suppliers", ()) or ())
    if not routes:
        return None
    rule = getattr(mapping, "account", None)
    if rule is None:
        share = mapping.pools[0]
        return Supply("card", routes, pool=share.pool, per_unit=int(share.quantity))
    account, problem = read_account(rule, order, line)
    area, server, game, role = (_place(getattr(rule, name, None), order, line)
                                for name in PLACES)
    return Supply("topup", routes, account=account, problem=problem,
                  account_format=rule.format, account_pattern=rule.pattern,
                  area=area, server=server, game=game, role=role)


def _place(source: str | None, order: Order, line: OrderLine) -> str | None:
    """A game area / server / game / role read from ``source`` (None: not asked for, or
    empty)."""
    if source is None:
        return None
    text = (_source_text(source, order, line)[0] or "").strip()
    return text[:128] or None


def _source_text(source: str, order: Order, line: OrderLine) -> tuple[str | None, str]:
    """The text the account is read from, and how to name its place to a person."""
    if source == "buyer_message":
        return order.buyer_message, "the buyer's message"
    kind, _, name = source.partition(".")
    if kind == "extra":
        return order.extra.get(name), f"order field {name!r}"
    props = dict(line.properties)
    return props.get(name), f"SKU property {name!r}"


def read_account(rule: Any, order: Order, line: OrderLine) -> tuple[str | None, str | None]:
    """``(account, None)`` when the rule finds exactly one account, else ``(None, why)`` in
    words the merchant understands."""
    text, where = _source_text(rule.source, order, line)
    wanted = _FORMAT_NAMES[rule.format]
    if text is None or not text.strip():
        return None, f"top-up account missing: {where} is empty (expected a {wanted})"
    found = _matches(rule, text)
    if not found:
        return None, f"top-up account missing: {where} holds no {wanted}"
    if len(found) > 1:
        return None, (f"top-up account unclear: {where} holds {len(found)} different "
                      f"candidates for a {wanted}; a person must choose")
    return found[0], None


def _matches(rule: Any, text: str) -> list[str]:
    if rule.format == "mobile":
        found = MOBILE_RE.findall(text.replace(" ", "").replace("-", ""))
    elif rule.format == "qq":
        found = QQ_RE.findall(text)
    else:
        pattern = re.compile(rule.pattern)
        whole = pattern.fullmatch(text.strip())
        found = [whole.group(0)] if whole else [m.group(0) for m in pattern.finditer(text)]
    return list(dict.fromkeys(found))


def check_account(supply: Supply, account: str) -> str | None:
    """Why ``account`` (given by a person) does not fit the line's rule, or None."""
    text, form = account.strip(), supply.account_format or "regex"
    if form == "mobile":
        ok = MOBILE_RE.fullmatch(text) is not None
    elif form == "qq":
        ok = QQ_RE.fullmatch(text) is not None
    else:
        ok = bool(text) and re.fullmatch(supply.account_pattern or r".{1,128}", text) is not None
    return None if ok else f"it is not a {_FORMAT_NAMES.get(form, 'usable account')}"


def mask_account(account: str | None) -> str:
    """An account as shown to people: ``138****1234`` (the first 3 and last 4 kept)."""
    if not account:
        return ""
    if len(account) <= 7:
        return account[:1] + "*" * (len(account) - 1)
    return account[:3] + "*" * (len(account) - 7) + account[-4:]


#: The longest key every supplier takes (Juhe: 8 to 32 letters and digits).
KEY_MAX = 32


def attempt_key(order_id: int, line_no: int, unit: int, attempt: int) -> str:
    """A new idempotency key for one attempt: letters and digits only, 8 to 32 characters
    (the strictest supplier's rule, Juhe's). It names the order, line, unit and attempt, and
    ends with a random part: another robot database on the same supplier account (a fresh
    install, a test robot) numbers its orders from 1 again, and must never meet our keys (the
    supplier would answer "order exists" with someone else's purchase). Keys are stored
    before use and never derived again, so the random part costs nothing."""
    base = f"RB{order_id}L{line_no}U{unit}A{attempt}"
    tail = _tail()
    return base + tail if len(base) + len(tail) <= KEY_MAX else base


def restock_key(pool_id: int, now: datetime) -> str:
    """A new idempotency key for one restock purchase of pool ``pool_id``, under the same
    rules as :func:`attempt_key` (``RS`` instead of ``RB``, so it never meets an order's)."""
    return f"RS{pool_id}T{now:%y%m%d%H%M%S}{_tail()}"[:KEY_MAX]


def _tail() -> str:
    return "X" + "".join(secrets.choice(string.digits) for _ in range(6))


def first_attempts(order_id: int, lines: Sequence[tuple[int, int, Supply]],
                   now: datetime) -> list[dict[str, Any]]:
    """The attempt-0 rows of every unit of ``lines`` ((line_no, quantity, supply))."""
    rows = []
    for line_no, quantity, supply in lines:
        route = supply.routes[0]
        for unit in range(quantity):
            rows.append({"order_id": order_id, "line_no": line_no, "unit": unit, "attempt": 0,
                         "supplier": route.supplier, "product": route.product,
                         "kind": supply.kind, "key": attempt_key(order_id, line_no, unit, 0),
                         "max_cost_cents": route.max_cost_cents, "account": supply.account,
                         "state": SupplierAttemptState.NEW, "created_at": now,
                         "updated_at": now})
    return rows


def start(conn: Connection, order_id: int, lines: Sequence[tuple[int, int, Supply]],
          now: datetime) -> int:
    """Write every unit's first attempt and the order's ``source`` job, in the caller's
    (allocating) transaction; the number of purchases to make."""
    rows = first_attempts(order_id, lines, now)
    conn.execute(insert(supplier_attempts), rows)
    conn.execute(insert(outbox).values(order_id=order_id, kind="source",
                                       state=OutboxState.PENDING, attempts=0, due_at=now,
                                       created_at=now))
    return len(rows)


def supplies(rows: Mapping[int, str | None]) -> dict[int, Supply]:
    """``line_no -> Supply`` of the lines that have one (``rows``: line_no -> stored JSON)."""
    out = {}
    for line_no, text in rows.items():
        supply = Supply.from_json(text)
        if supply is not None:
            out[line_no] = supply
    return out
