"""Customer service: find an order or a code, re-send a pickup link, replace a bad card.

What a merchant does when a buyer writes "我没收到卡密" or "this card does not work":

* :func:`find_orders` — an order by platform order number (exact, or a unique suffix of at
  least :data:`MIN_SUFFIX` characters), buyer id or nick, or the robot's own order id,
  across every shop; shown with masked codes and the state of its pickup link;
* :func:`find_code` — which order holds a plaintext code, through the keyed fingerprint (the
  pool is never decrypted to search it); audited like a reveal, since it answers "is this
  code ours" for anyone who can type one;
* :func:`pickup_link` — the order's current pickup link (audited), or a new one that revokes
  the old and has the seller memo rewritten through the outbox;
* :func:`redeliver` — mark a buyer's bad codes ``defective`` (never back in stock) and claim
  replacements from the same pools in the same transaction, with the same guarded claim as
  allocation; when stock is short the request waits in ``replacements`` and
  :func:`fulfil_replacements` (run by the robot's sweep) serves it when codes arrive.

This module must never log, audit or return a plaintext code: views are masked, audit
entries carry code ids.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, or_, select, update

from robot import audit, notify, outbox
from robot.clock import utcnow
from robot.db import dialect_of, transaction
from robot.errors import CodeRejected, UserError
from robot.matcher import claim
from robot.schema import (
    batches,
    codes,
    deliveries,
    order_lines,
    orders,
    pickup_links,
    pickup_views,
    pools,
    replacements,
    stock,
)
from robot.states import VISIBLE, CodeState, DeliveryState, OrderState, ReplacementState
from robot.vault import Vault, join_pair, mask

#: A suffix shorter than this matches too many orders to mean one.
MIN_SUFFIX = 6
FIND_LIMIT = 50
MAX_QUERY = 128
MAX_CODE_CHARS = 1024
MAX_REASON = 500
IGNORED_WINDOW = timedelta(days=7)
#: Order states whose codes a buyer may see (as :data:`robot.http.links.VISIBLE_STATES`).
LINK_STATES = VISIBLE

_INVISIBLE = ("Cc", "Cf", "Zs", "Zl", "Zp")


def normalize_query(text: str) -> str:
    """What a person pasted, as an order number: NFKC (full-width digits become ASCII),
    without spaces or invisible characters (zero-width spaces, BOMs, line breaks)."""
    folded = unicodedata.normalize("NFKC", text)
    return "".join(ch for ch in folded if unicodedata.category(ch) not in _INVISIBLE)


def printable(text: str) -> str:
    """``text`` with control and invisible format characters escaped (``\\x1b``,
    ``\\u202e``), so a stored value can never drive the terminal it is printed on."""
    out = []
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# ------------------------------------------------------------------------------ find orders


@dataclass
class FoundOrders:
    query: str
    matches: list[dict[str, Any]]
    #: True when the only matches are several orders ending with the query: none is meant.
    ambiguous: bool = False


def find_orders(engine: Engine, vault: Vault, text: str, *,
                now: datetime | None = None) -> FoundOrders:
    """Orders matching ``text`` in any shop, newest first, each with masked codes and its
    pickup link's state. A suffix that ends several orders lists them as candidates."""
    query = normalize_query(text)
    if not query:
        raise UserError("nothing to look for: give an order number, buyer id or order id")
    if len(query) > MAX_QUERY:
        raise UserError(f"that is longer than any order number or buyer id ({MAX_QUERY} max)")
    now = now or utcnow()
    with engine.connect() as conn:
        hits: dict[int, str] = {}  # order id -> how it matched (first reason wins)

        def add(ids: Sequence[int], how: str) -> None:
            for oid in ids:
                hits.setdefault(int(oid), how)

        def ids_where(*where: Any) -> list[int]:
            return [int(i) for i in conn.execute(
                select(orders.c.id).where(*where).order_by(orders.c.id.desc())
                .limit(FIND_LIMIT)).scalars()]

        add(ids_where(orders.c.platform_order_id == query), "order number")
        if query.isdigit() and len(query) <= 18:
            add(ids_where(orders.c.id == int(query)), "robot order id")
        # A buyer id or nick may hold inner spaces: look for it as typed (ends trimmed) too.
        names = list(dict.fromkeys((query, unicodedata.normalize("NFKC", text).strip())))
        add(ids_where(orders.c.buyer_id.in_(names)), "buyer id")
        if not hits:  # a scan of the orders' extra data: only when nothing else matched
            for name in names:
                nick = json.dumps(name)  # as intake stored it (ASCII escapes)
                add(ids_where(orders.c.extra.like(f'%"buyer_nick": {_like_escape(nick)}%',
                                                  escape="\\")), "buyer nick")
        ambiguous = False
        if not hits and len(query) >= MIN_SUFFIX:
            ends = ids_where(orders.c.platform_order_id.like("%" + _like_escape(query),
                                                             escape="\\"))
            ambiguous = len(ends) > 1
            add(ends, "order number suffix")
        matches = [_summary(conn, vault, oid, hits[oid], now) for oid in
                   sorted(hits, reverse=True)[:FIND_LIMIT]]
    return FoundOrders(query, matches, ambiguous)


def _summary(conn: Connection, vault: Vault, order_id: int, how: str,
             now: datetime) -> dict[str, Any]:
    o = conn.execute(select(orders.c.id, orders.c.shop, orders.c.platform_order_id,
                            orders.c.state, orders.c.reason, orders.c.buyer_id,
                            orders.c.total_cents, orders.c.paid_at, orders.c.received_at,
                            orders.c.shipped_at).where(orders.c.id == order_id)).one()
    return {**dict(o._mapping), "matched": how,
            "codes": [c["masked"] for c in masked_codes(conn, vault, order_id)
                      if c["state"] != DeliveryState.DEFECTIVE],
            "link": link_state(conn, order_id, now)}


def masked_row(vault: Vault, r: Any, code_id: int) -> str:
    """The masked code of a ``codes`` row (its key id, ciphertext, pool, fingerprint and
    binding version), or a note when the vault refuses it (the row was altered)."""
    try:
        return mask(vault.decrypt(r.key_id, r.ciphertext, code_id=code_id, pool_id=r.pool_id,
                                  fingerprint=r.fingerprint, aad_version=r.aad_version))
    except CodeRejected:
        return "(altered: fails authentication)"


def masked_codes(conn: Connection, vault: Vault, order_id: int) -> list[dict[str, Any]]:
    """Every code an order ever held (replaced ones too, as ``defective``), masked."""
    rows = conn.execute(
        select(deliveries.c.line_no, deliveries.c.n, deliveries.c.state, deliveries.c.seen_at,
               codes.c.id.label("code_id"), codes.c.pool_id, codes.c.fingerprint,
               codes.c.key_id, codes.c.ciphertext, codes.c.aad_version, codes.c.batch_id,
               pools.c.name.label("pool"))
        .join(codes, codes.c.id == deliveries.c.code_id)
        .join(pools, pools.c.id == codes.c.pool_id)
        .where(deliveries.c.order_id == order_id)
        .order_by(deliveries.c.line_no, deliveries.c.n)).all()
    return [
        {"line_no": int(d.line_no), "n": int(d.n), "code_id": int(d.code_id), "pool": d.pool,
         "batch_id": int(d.batch_id), "state": d.state, "seen": d.seen_at is not None,
         "masked": masked_row(vault, d, int(d.code_id))}
        for d in rows
    ]


def link_state(conn: Connection, order_id: int, now: datetime) -> dict[str, Any] | None:
    """The order's newest pickup link: made, expires, revoked, views, reveals, last view,
    and ``status`` (live, expired or revoked); None when it never had one."""
    link = conn.execute(
        select(pickup_links.c.id, pickup_links.c.created_at, pickup_links.c.expires_at,
               pickup_links.c.revoked_at)
        .where(pickup_links.c.order_id == order_id)
        .order_by(pickup_links.c.id.desc()).limit(1)).first()
    if link is None:
        return None
    counts = {str(r[0]): (int(r[1]), r[2]) for r in conn.execute(
        select(pickup_views.c.kind, func.count(), func.max(pickup_views.c.at))
        .where(pickup_views.c.link_id == link.id).group_by(pickup_views.c.kind))}
    lasts = [at for _n, at in counts.values() if at is not None]
    if link.revoked_at is not None:
        status = "revoked"
    elif link.expires_at is not None and link.expires_at <= now:
        status = "expired"
    else:
        status = "live"
    links_made = conn.execute(select(func.count()).select_from(pickup_links)
                              .where(pickup_links.c.order_id == order_id)).scalar_one()
    return {"status": status, "link_id": int(link.id), "created_at": link.created_at,
            "expires_at": link.expires_at, "revoked_at": link.revoked_at,
            "views": counts.get("view", (0, None))[0],
            "reveals": counts.get("reveal", (0, None))[0],
            "last_view_at": max(lasts) if lasts else None, "links_made": int(links_made)}


# ------------------------------------------------------------------------------- find code


def code_candidates(text: str) -> list[str]:
    """The codes a pasted text may be, as an import would have stored them: as written
    (trimmed), NFKC-folded, and ``card PIN`` split into a card/PIN pair or the card alone."""
    trimmed = text.strip(" \t\r\n\u3000")
    if not trimmed:
        raise UserError("no code given")
    if len(trimmed) > MAX_CODE_CHARS:
        raise UserError(f"that is longer than any code ({MAX_CODE_CHARS} characters max)")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") and ch != "\t"
           for ch in trimmed):  # a tab is how a spreadsheet separates card and PIN
        raise UserError("the code holds control or invisible characters; no stored code does "
                        "(retype it, or paste it without the formatting)")
    found: list[str] = []
    for form in (trimmed, unicodedata.normalize("NFKC", trimmed)):
        found.append(form)
        parts = [p for p in re.split(r"[\s,;|/]+|-{3,}", form) if p]
        if len(parts) == 2:
            found.append(join_pair(parts[0], parts[1]))
            found.append(parts[0])
        elif len(parts) > 2:
            found.append("".join(parts))
    return list(dict.fromkeys(found))


@dataclass
class CodeHit:
    code_id: int
    pool: str
    batch_id: int
    state: str
    order_id: int | None = None
    shop: str | None = None
    platform_order_id: str | None = None
    order_state: str | None = None
    line_no: int | None = None
    masked: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def find_code(engine: Engine, vault: Vault, text: str, *, actor: str) -> list[CodeHit]:
    """Where a plaintext code is: its pool, state and order. Found through the keyed
    fingerprint, one index probe per pool; audited (``code_find``), found or not."""
    fps = [vault.fingerprint(c) for c in code_candidates(text)]
    with transaction(engine) as conn:
        pool_ids = [int(p) for p in conn.execute(select(pools.c.id)).scalars()]
        ids: list[int] = []
        probe = select(codes.c.id)
        for pid in pool_ids:
            for fp in fps:
                ids += [int(i) for i in conn.execute(
                    probe.where(codes.c.pool_id == pid, codes.c.fingerprint == fp)).scalars()]
        ids = sorted(set(ids))
        rows = conn.execute(
            select(codes.c.id, codes.c.pool_id, codes.c.batch_id, codes.c.retired,
                   codes.c.fingerprint, codes.c.key_id, codes.c.ciphertext, codes.c.aad_version,
                   pools.c.name.label("pool"), stock.c.code_id.label("in_stock"),
                   deliveries.c.state.label("delivery"), deliveries.c.order_id,
                   deliveries.c.line_no, batches.c.state.label("batch_state"),
                   orders.c.shop, orders.c.platform_order_id,
                   orders.c.state.label("order_state"))
            .select_from(codes.join(pools, pools.c.id == codes.c.pool_id)
                         .join(batches, batches.c.id == codes.c.batch_id)
                         .outerjoin(stock, stock.c.code_id == codes.c.id)
                         .outerjoin(deliveries, deliveries.c.code_id == codes.c.id)
                         .outerjoin(orders, orders.c.id == deliveries.c.order_id))
            .where(codes.c.id.in_(ids or [-1])).order_by(codes.c.id)).all()
        audit.append(conn, actor=actor, action="code_find", subject="codes",
                     details={"found_code_ids": [int(r.id) for r in rows],
                              "order_ids": sorted({int(r.order_id) for r in rows
                                                   if r.order_id is not None})})
    hits = []
    for r in rows:
        if r.in_stock is not None:
            state: str = CodeState.AVAILABLE
        elif r.delivery is not None:
            state = str(r.delivery)
        elif r.retired is not None:
            state = str(r.retired)
        else:
            state = str(r.batch_state)
        hits.append(CodeHit(
            int(r.id), r.pool, int(r.batch_id), state,
            int(r.order_id) if r.order_id is not None else None, r.shop, r.platform_order_id,
            r.order_state, int(r.line_no) if r.line_no is not None else None,
            masked_row(vault, r, int(r.id))))
    return hits


# ------------------------------------------------------------------------------ pickup link


@dataclass(frozen=True)
class LinkResult:
    order_id: int
    url: str
    made: bool  # a new link was made (the old one was revoked, expired or missing)
    revoked: int  # live links revoked by ``--new``
    memo_queued: bool  # the seller memo will be rewritten with the link


def pickup_link(engine: Engine, key: bytes, order_id: int, *, public_url: str,
                ttl: timedelta | None, new: bool, actor: str,
                now: datetime | None = None) -> LinkResult:
    """The buyer's current pickup link (made when none is live); with ``new`` every live
    link is revoked first. Whenever the link the buyer has is not the one in the memo any
    more (a new link for a shipped order), the memo is rewritten through the outbox.
    One transaction; audited ``pickup_link``."""
    from robot.http import links  # the HTTP side owns the token scheme

    now = now or utcnow()
    with transaction(engine) as conn:
        row = _lock(conn, order_id)
        if row.state not in LINK_STATES:
            raise UserError(f"order {order_id} is {row.state}: the pickup page shows nothing "
                            f"for it (only allocated or shipped orders have codes to pick up)")
        revoked = 0
        if new:
            revoked = int(conn.execute(
                update(pickup_links).where(pickup_links.c.order_id == order_id,
                                           pickup_links.c.revoked_at.is_(None))
                .values(revoked_at=now)).rowcount)
        before = conn.execute(select(func.max(pickup_links.c.id))
                              .where(pickup_links.c.order_id == order_id)).scalar()
        link = links.ensure_link_tx(conn, key, order_id, ttl=ttl, now=now)
        made = before is None or link.id > int(before)
        # An allocated order's memo is written at shipping, with the live link then.
        memo = made and row.state == OrderState.SHIPPED
        if memo:
            outbox.queue_memo(conn, order_id, now)
        audit.append(conn, actor=actor, action="pickup_link", subject=f"order:{order_id}",
                     details={"link_id": link.id, "new": made, "revoked": revoked,
                              "memo": memo})
    return LinkResult(order_id, links.url_for(public_url, link.token), made, revoked, memo)


def _lock(conn: Connection, order_id: int) -> Any:
    stmt = select(orders).where(orders.c.id == order_id)
    if dialect_of(conn) != "sqlite":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).first()
    if row is None:
        raise UserError(f"order {order_id} does not exist")
    return row


# ------------------------------------------------------------------------------- redeliver


@dataclass
class Redelivery:
    order_id: int
    defective: list[int]
    replaced: list[int] = field(default_factory=list)  # new code ids, when served at once
    waiting: list[dict[str, Any]] = field(default_factory=list)  # short pools: {pool, need}

    def as_dict(self) -> dict[str, Any]:
        return {"order_id": self.order_id, "defective_code_ids": self.defective,
                "new_code_ids": self.replaced, "waiting": self.waiting}


def redeliver(engine: Engine, order_id: int, *, reason: str, actor: str,
              line_no: int | None = None, code_ids: Sequence[int] = (),
              now: datetime | None = None) -> Redelivery:
    """Replace a shipped order's bad codes (all of the order's, one line's, or the named ones).

    In one transaction: the codes become ``defective`` (guarded: still ``delivered``), and
    as many codes from the same pools are claimed for the same lines; the memo is queued for
    rewriting; audited ``redeliver``. If a pool is short, nothing is claimed: the request is
    kept in ``replacements`` (waiting) and served by :func:`fulfil_replacements`.
    """
    reason = " ".join(reason.split())
    if not reason:
        raise UserError("--reason is required: say what the buyer reported")
    if len(reason) > MAX_REASON:
        raise UserError(f"--reason is too long ({MAX_REASON} characters max)")
    now = now or utcnow()
    with transaction(engine) as conn:
        row = _lock(conn, order_id)
        if row.state == OrderState.REFUNDED:
            raise UserError(f"order {order_id} was refunded after delivery: nothing is owed, "
                            "nothing was replaced")
        if row.state != OrderState.SHIPPED:
            raise UserError(f"order {order_id} is {row.state}, not delivered: only shipped "
                            "orders can be redelivered (see `robot orders show "
                            f"{order_id}`)")
        chosen = _chosen(conn, order_id, line_no, list(dict.fromkeys(code_ids)))
        marked = conn.execute(update(deliveries).where(
            deliveries.c.id.in_([int(d.id) for d in chosen]),
            deliveries.c.state == DeliveryState.DELIVERED)
            .values(state=DeliveryState.DEFECTIVE)).rowcount
        if marked != len(chosen):
            raise UserError(f"order {order_id} changed while replacing its codes; try again")
        groups: dict[tuple[int, int], list[int]] = {}
        for d in chosen:
            groups.setdefault((int(d.line_no), int(d.pool_id)), []).append(int(d.code_id))
        result = Redelivery(order_id, [int(d.code_id) for d in chosen])
        savepoint = conn.begin_nested()
        got = {key: claim(conn, key[1], len(ids), now) for key, ids in groups.items()}
        short = [key for key, ids in groups.items() if len(got[key]) < len(ids)]
        if short:
            savepoint.rollback()
            names = _pool_names(conn)
            for (ln, pid), ids in groups.items():
                conn.execute(insert(replacements).values(
                    order_id=order_id, line_no=ln, pool_id=pid, count=len(ids),
                    state=ReplacementState.WAITING, reason=reason, actor=actor,
                    defective_code_ids=json.dumps(ids), created_at=now))
            result.waiting = [{"pool": names[pid], "need": len(groups[(ln, pid)]),
                               "line_no": ln} for ln, pid in short]
        else:
            savepoint.commit()
            for (ln, pid), new_ids in got.items():
                _deliver(conn, order_id, ln, pid, new_ids, now)
                result.replaced += new_ids
            outbox.queue_memo(conn, order_id, now)
            notify.on_replaced(conn, order_id, now)
        audit.append(conn, actor=actor, action="redeliver", subject=f"order:{order_id}",
                     details={"reason": reason, "line_no": line_no,
                              "defective_code_ids": result.defective,
                              "new_code_ids": result.replaced,
                              "waiting": result.waiting})
    return result


def _chosen(conn: Connection, order_id: int, line_no: int | None,
            code_ids: list[int]) -> list[Any]:
    """The order's delivered codes to replace; refuses names that are not among them."""
    rows = conn.execute(select(deliveries.c.id, deliveries.c.line_no, deliveries.c.code_id,
                               deliveries.c.pool_id, deliveries.c.state)
                        .where(deliveries.c.order_id == order_id)
                        .order_by(deliveries.c.line_no, deliveries.c.n)).all()
    if line_no is not None:
        lines = {int(r.line_no) for r in rows}
        if line_no not in lines:
            raise UserError(f"order {order_id} has no codes on line {line_no} "
                            f"(lines with codes: {', '.join(map(str, sorted(lines))) or 'none'})")
        rows = [r for r in rows if int(r.line_no) == line_no]
    by_code = {int(r.code_id): r for r in rows}
    if code_ids:
        for cid in code_ids:
            r = by_code.get(cid)
            if r is None:
                where = f" on line {line_no}" if line_no is not None else ""
                raise UserError(f"code {cid} is not one of order {order_id}'s codes{where}")
            if r.state != DeliveryState.DELIVERED:
                raise UserError(f"code {cid} of order {order_id} is {r.state}, not delivered"
                                + ("; it was replaced already" if r.state == DeliveryState.DEFECTIVE
                                   else ""))
        return [by_code[c] for c in code_ids]
    live = [r for r in rows if r.state == DeliveryState.DELIVERED]
    if not live:
        raise UserError(f"order {order_id} has no delivered codes to replace"
                        + (f" on line {line_no}" if line_no is not None else ""))
    return live


def _pool_names(conn: Connection) -> dict[int, str]:
    return {int(r.id): str(r.name) for r in conn.execute(select(pools.c.id, pools.c.name))}


def _deliver(conn: Connection, order_id: int, line_no: int, pool_id: int,
             code_ids: Sequence[int], now: datetime) -> None:
    """Hand replacement codes to a shipped order's line (after its existing codes)."""
    top = conn.execute(select(func.max(deliveries.c.n)).where(
        deliveries.c.order_id == order_id, deliveries.c.line_no == line_no)).scalar()
    start = -1 if top is None else int(top)
    conn.execute(insert(deliveries), [
        {"order_id": order_id, "line_no": line_no, "n": start + 1 + i, "code_id": cid,
         "pool_id": pool_id, "state": DeliveryState.DELIVERED, "created_at": now,
         "delivered_at": now}
        for i, cid in enumerate(code_ids)])


def fulfil_replacements(engine: Engine, *, now: datetime | None = None,
                        actor: str = "allocator") -> int:
    """Serve waiting replacements whose pools have stock again, oldest first; returns how
    many were served. Each in its own transaction with its order's row locked, so several
    robots may run this at once and a refund cannot race a replacement."""
    now = now or utcnow()
    served = 0
    after = 0
    while True:
        with transaction(engine) as conn:
            head = conn.execute(select(replacements.c.id, replacements.c.order_id)
                                .where(replacements.c.state == ReplacementState.WAITING,
                                       replacements.c.id > after)
                                .order_by(replacements.c.id).limit(1)).first()
            if head is None:
                return served
            after = int(head.id)
            # The order first, then the request: the order a refund takes them in, so the
            # two never deadlock, and a refund cannot slip between our check and our claim.
            state = _lock(conn, int(head.order_id)).state
            stmt = select(replacements).where(replacements.c.id == head.id,
                                              replacements.c.state == ReplacementState.WAITING)
            if dialect_of(conn) != "sqlite":
                stmt = stmt.with_for_update()
            req = conn.execute(stmt).first()
            if req is None:  # another robot served or cancelled it meanwhile
                continue
            if state != OrderState.SHIPPED:  # refunded (or otherwise no longer delivered)
                conn.execute(update(replacements).where(replacements.c.id == req.id)
                             .values(state=ReplacementState.CANCELLED, done_at=now))
                continue
            savepoint = conn.begin_nested()
            got = claim(conn, int(req.pool_id), int(req._mapping["count"]), now)
            if len(got) < int(req._mapping["count"]):
                savepoint.rollback()
                continue
            savepoint.commit()
            _deliver(conn, int(req.order_id), int(req.line_no), int(req.pool_id), got, now)
            conn.execute(update(replacements).where(replacements.c.id == req.id)
                         .values(state=ReplacementState.DONE, done_at=now))
            outbox.queue_memo(conn, int(req.order_id), now)
            notify.on_replaced(conn, int(req.order_id), now)
            audit.append(conn, actor=actor, action="replacement", subject=f"order:{req.order_id}",
                         details={"replacement_id": int(req.id), "new_code_ids": got,
                                  "defective_code_ids": json.loads(req.defective_code_ids)})
            served += 1


def waiting_replacements(conn: Connection) -> int:
    """Replacement requests still waiting for stock (``robot status`` shows them)."""
    return int(conn.execute(select(func.count()).select_from(replacements)
                            .where(replacements.c.state == ReplacementState.WAITING)).scalar_one())


def ignored_unmapped(conn: Connection, now: datetime) -> dict[str, int]:
    """Per shop, paid orders of the last 7 days that the robot ignored although they have
    lines no pool maps (``robot status`` shows them: a mapping may be missing)."""
    unmapped = (select(order_lines.c.order_id)
                .where(order_lines.c.mapping == "[]", order_lines.c.quantity > 0,
                       order_lines.c.refund.in_(("none", "refused"))))
    rows = conn.execute(select(orders.c.shop, func.count()).where(
        orders.c.state == OrderState.IGNORED,
        or_(orders.c.paid_at >= now - IGNORED_WINDOW,
            (orders.c.paid_at.is_(None)) & (orders.c.received_at >= now - IGNORED_WINDOW)),
        orders.c.id.in_(unmapped)).group_by(orders.c.shop).order_by(orders.c.shop))
    return {str(shop): int(n) for shop, n in rows}


def defects_by_batch(engine: Engine) -> list[dict[str, Any]]:
    """Per batch that had a defective code: pool, supplier, file, delivered and defective
    counts (what to claim back from the supplier)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(batches.c.id, pools.c.name.label("pool"), batches.c.supplier,
                   batches.c.file_name, batches.c.created_at, deliveries.c.state,
                   func.count().label("n"))
            .select_from(deliveries.join(codes, codes.c.id == deliveries.c.code_id)
                         .join(batches, batches.c.id == codes.c.batch_id)
                         .join(pools, pools.c.id == batches.c.pool_id))
            .where(deliveries.c.state.in_((DeliveryState.DELIVERED, DeliveryState.REVIEW,
                                           DeliveryState.DEFECTIVE)))
            .group_by(batches.c.id, pools.c.name, batches.c.supplier, batches.c.file_name,
                      batches.c.created_at, deliveries.c.state)).all()
    out: dict[int, dict[str, Any]] = {}
    for r in rows:
        entry = out.setdefault(int(r.id), {
            "batch_id": int(r.id), "pool": r.pool, "supplier": r.supplier,
            "file": r.file_name, "imported_at": r.created_at, "delivered": 0, "defective": 0})
        entry["delivered"] += int(r.n)  # every code handed out, the defective ones too
        if r.state == DeliveryState.DEFECTIVE:
            entry["defective"] += int(r.n)
    return [e for e in sorted(out.values(), key=lambda e: e["batch_id"]) if e["defective"]]
