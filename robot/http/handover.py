"""Reading an order's codes (and top-ups) for the buyer's channels (pickup page, delivery
API).

The caller's transaction marks the codes seen (``deliveries.seen_at``) and writes the audit
entry; decryption happens after that commit, so a code is never shown unless its sighting is
durable (a later cancel then keeps it out of stock). This module must never log a code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from sqlalchemy import Connection, select, update

from robot import poolpage
from robot.display import format_time
from robot.http.pages import CodeView, Instructions, TopupView
from robot.poolpage import PoolPage
from robot.schema import codes, deliveries, order_lines
from robot.states import DeliveryState
from robot.topups import topup_status_tx
from robot.vault import Vault, mask, split_pair


@dataclass(frozen=True)
class CodeRow:
    code_id: int
    line_no: int
    line_id: str
    item_id: str | None
    sku_id: str | None
    title: str
    row: Any  # the joined codes row, decrypted on demand


def code_rows(conn: Connection, order_id: int) -> list[CodeRow]:
    rows = conn.execute(
        select(deliveries.c.line_no, codes.c.id.label("code_id"), codes.c.pool_id,
               codes.c.fingerprint, codes.c.key_id, codes.c.ciphertext, codes.c.aad_version,
               codes.c.expires_at, order_lines.c.line_id,
               order_lines.c.item_id, order_lines.c.sku_id, order_lines.c.title)
        .join(codes, codes.c.id == deliveries.c.code_id)
        .join(order_lines, (order_lines.c.order_id == deliveries.c.order_id)
              & (order_lines.c.line_no == deliveries.c.line_no))
        # A defective code was replaced: the buyer sees its replacement, not it.
        .where(deliveries.c.order_id == order_id, deliveries.c.state != DeliveryState.DEFECTIVE)
        .order_by(deliveries.c.line_no, deliveries.c.n)
    ).all()
    return [CodeRow(int(r.code_id), int(r.line_no), r.line_id, r.item_id, r.sku_id,
                    r.title or "", r) for r in rows]


def mark_seen(conn: Connection, order_id: int, now: datetime) -> None:
    conn.execute(update(deliveries).where(deliveries.c.order_id == order_id,
                                          deliveries.c.seen_at.is_(None)).values(seen_at=now))


def plaintext(vault: Vault, row: CodeRow) -> str:
    """One code as stored (a number / PIN pair joined)."""
    r = row.row
    return vault.decrypt(r.key_id, r.ciphertext, code_id=r.code_id, pool_id=r.pool_id,
                         fingerprint=r.fingerprint, aad_version=r.aad_version)


def decrypt(vault: Vault, row: CodeRow) -> tuple[str, str | None]:
    """``(card_no, password)`` of one code."""
    return split_pair(plaintext(vault, row))


def pool_pages(conn: Connection, rows: Sequence[CodeRow], key: bytes) -> dict[int, PoolPage]:
    """The page settings of the pools these codes came from (``key``: their seal's,
    :func:`robot.poolpage.page_key`)."""
    return poolpage.page_settings(conn, (int(r.row.pool_id) for r in rows), key)


def views(vault: Vault, rows: Sequence[CodeRow], *, masked: bool,
          zone: tzinfo | None = None,
          pages: Mapping[int, PoolPage] | None = None) -> list[CodeView]:
    """The codes as the page shows them; an expiry is shown in ``zone`` (the shops' zone).
    Revealed codes of a pool with a redemption link template (``pages``) carry their link."""
    out = []
    for row in rows:
        card_no, password = decrypt(vault, row)
        if masked:
            card_no, password = mask(card_no), (mask(password) if password else None)
        expires = getattr(row.row, "expires_at", None)
        page = None if masked or pages is None else pages.get(int(row.row.pool_id))
        template = page.redeem_url if page is not None else None
        out.append(CodeView(
            row.title, card_no, password,
            format_time(expires, zone=zone) if expires is not None else None,
            redeem_url=poolpage.redeem_link(template, card_no) if template else None,
            redeem_takes_code=poolpage.takes_code(template) if template else True))
    return out


def instructions(rows: Sequence[CodeRow],
                 pages: Mapping[int, PoolPage]) -> list[Instructions]:
    """Each pool's usage instructions once, in the order its codes come, with the titles of
    the items that use them."""
    titles: dict[int, list[str]] = {}
    for row in rows:
        pool_id = int(row.row.pool_id)
        page = pages.get(pool_id)
        if page is None or not (page.instructions_zh or page.instructions_en):
            continue
        seen = titles.setdefault(pool_id, [])
        if row.title not in seen:
            seen.append(row.title)
    return [Instructions(tuple(items), pages[pid].instructions_zh, pages[pid].instructions_en)
            for pid, items in titles.items()]


def topups(conn: Connection, order_id: int, items: Sequence[Any] = ()) -> list[TopupView]:
    """The order's top-ups as the page shows them (accounts masked; never the supplier);
    ``items``, the shop's mappings, give their face values."""
    return [TopupView(t.title, t.account, t.state, t.face_value_cents)
            for t in topup_status_tx(conn, order_id, items)]
