"""What a buyer may be told about an order's top-ups: per unit, the item, the account masked
and how far it is. Read by the pickup page (:mod:`robot.http.handover`) and
:func:`robot.suppliers.topup_status`.

Reads ``supplier_attempts`` (written only by :mod:`robot.supplyroute` and
:mod:`robot.sourcing`) and ``order_lines``; never shows the supplier, the key, the cost or the
supplier's reason, and never an unmasked account.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from robot.config.types import cents
from robot.schema import order_lines, supplier_attempts
from robot.states import SupplierAttemptState
from robot.supplyroute import mapping_of, mask_account

_SHOWN = {SupplierAttemptState.SUCCEEDED: "done", SupplierAttemptState.FAILED: "failed"}


@dataclass(frozen=True)
class TopupStatus:
    """What a buyer may be told about a top-up line: where to, how much, how far."""

    line_no: int
    title: str  # the order line's title as the platform gave it (e.g. "话费50元")
    account: str  # masked: 138****1234
    state: str  # done | in_progress | failed
    face_value_cents: int | None = None  # the mapping's face_value, when it gives one


def topup_status_tx(conn: Connection, order_id: int,
                    items: Sequence[Any] = ()) -> list[TopupStatus]:
    """The order's top-ups, one per unit (its latest attempt), in the caller's transaction;
    ``items`` (the shop's mappings) give each line's face value."""
    rows = conn.execute(select(supplier_attempts.c.line_no, supplier_attempts.c.unit,
                               supplier_attempts.c.account, supplier_attempts.c.state)
                        .where(supplier_attempts.c.order_id == order_id,
                               supplier_attempts.c.kind == "topup")
                        .order_by(supplier_attempts.c.line_no, supplier_attempts.c.unit,
                                  supplier_attempts.c.attempt)).all()
    if not rows:
        return []
    titles: dict[int, str] = {}
    faces: dict[int, int | None] = {}
    for line in conn.execute(select(order_lines.c.line_no, order_lines.c.title,
                                    order_lines.c.sku_id, order_lines.c.outer_id,
                                    order_lines.c.item_id)
                             .where(order_lines.c.order_id == order_id)):
        titles[int(line.line_no)] = str(line.title)
        mapping = mapping_of(items, sku_id=line.sku_id, outer_id=line.outer_id,
                             item_id=line.item_id) if items else None
        face = getattr(mapping, "face_value", None)
        faces[int(line.line_no)] = cents(face) if face is not None else None
    latest: dict[tuple[int, int], Any] = {}
    for r in rows:
        latest[(int(r.line_no), int(r.unit))] = r
    return [TopupStatus(int(r.line_no), titles.get(int(r.line_no), ""), mask_account(r.account),
                        _SHOWN.get(SupplierAttemptState(r.state), "in_progress"),
                        faces.get(int(r.line_no)))
            for r in latest.values()]
