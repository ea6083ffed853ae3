"""Exporting a pool's codes to CSV, to reconcile with a supplier (what was delivered, when,
to which order, at what cost).

Codes are masked unless the caller asks for plaintext. A plaintext export is a reveal: it is
audited (before a single code is decrypted), the codes it shows that are still reserved for
an order are marked as seen (so they never go back to stock), and the file is created with
mode 0600. Every file is written to a temporary name beside the target and renamed into
place, so a failed export leaves no partial file and an existing file's permissions never
apply to plaintext.

Cells other than plaintext codes that a spreadsheet would read as a formula (``=``, ``+``,
``-``, ``@``) are prefixed with ``'``; plaintext codes are written exactly as stored.

This module reads ``codes``, ``batches``, ``deliveries`` and ``orders``; its only writes are
the audit entry and the ``seen_at`` marks of a plaintext export.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Select, func, select, update

from robot import audit
from robot.clock import DEFAULT_ZONE, to_zone, utcnow
from robot.display import format_time_json, yuan
from robot.errors import UserError
from robot.pools import CODE_STATES, code_state, pool_id
from robot.schema import batches, codes, deliveries, orders, stock
from robot.states import BatchState, CodeState, DeliveryState
from robot.vault import Vault, mask, split_pair

COLUMNS = ("code_id", "code", "password", "state", "batch", "line", "supplier", "cost",
           "expires_at", "order_id", "platform_order_id", "shop", "delivered_at")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_YIELD_PER = 1000


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote."""

    pool: str
    path: Path
    rows: int
    plaintext: bool
    state: str | None
    since: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {"pool": self.pool, "file": str(self.path), "rows": self.rows,
                "plaintext": self.plaintext, "state": self.state,
                "since": self.since}


def _when(state: str | None) -> Any:
    """The time ``--since`` is about: delivery for delivered codes, the claim for reserved
    or flagged ones, the import for the others."""
    if state == CodeState.DELIVERED:
        return func.coalesce(deliveries.c.delivered_at, deliveries.c.created_at)
    if state in (CodeState.RESERVED, CodeState.REVIEW):
        return deliveries.c.created_at
    return codes.c.created_at


def _query(pid: int, state: str | None, since: datetime | None) -> Select[Any]:
    query = (
        select(codes.c.id, codes.c.pool_id, codes.c.fingerprint, codes.c.key_id,
               codes.c.aad_version, codes.c.ciphertext, codes.c.batch_id, codes.c.source_line,
               codes.c.cost_cents,
               codes.c.expires_at, codes.c.retired, batches.c.supplier,
               batches.c.state.label("batch_state"), stock.c.code_id.label("in_stock"),
               deliveries.c.state.label("delivery"), deliveries.c.delivered_at,
               deliveries.c.order_id, orders.c.platform_order_id, orders.c.shop)
        .select_from(codes.join(batches, batches.c.id == codes.c.batch_id)
                     .outerjoin(stock, stock.c.code_id == codes.c.id)
                     .outerjoin(deliveries, deliveries.c.code_id == codes.c.id)
                     .outerjoin(orders, orders.c.id == deliveries.c.order_id))
        .where(codes.c.pool_id == pid, batches.c.state == BatchState.ACTIVE)
        .order_by(codes.c.id)
    )
    if state == CodeState.AVAILABLE:
        query = query.where(stock.c.code_id.is_not(None))
    elif state in (CodeState.RESERVED, CodeState.DELIVERED, CodeState.REVIEW):
        query = query.where(deliveries.c.state == state)
    elif state in (CodeState.VOID, CodeState.EXPIRED):
        query = query.where(codes.c.retired == state)
    if since is not None:
        query = query.where(_when(state) >= since)
    return query


def count_codes(engine: Engine, pool: str, *, state: str | None = None,
                since: datetime | None = None) -> int:
    """How many codes an export with these filters would write."""
    _check_state(state)
    with engine.connect() as conn:
        sub = _query(pool_id(conn, pool), state, since).subquery()
        return int(conn.execute(select(func.count()).select_from(sub)).scalar_one())


def _check_state(state: str | None) -> None:
    if state is not None and state not in CODE_STATES:
        raise UserError(f"unknown state {state!r}; use one of: {', '.join(CODE_STATES)}")


def export_codes(engine: Engine, vault: Vault, pool: str, path: Path, *, actor: str,
                 state: str | None = None, since: datetime | None = None,
                 plaintext: bool = False, zone: tzinfo = DEFAULT_ZONE) -> ExportResult:
    """Write the pool's codes (filtered by state and ``since``) to ``path`` as CSV; times
    are written in ``zone`` (the robot's ``timezone:``) with their offset."""
    _check_state(state)
    with engine.begin() as conn:
        pid = pool_id(conn, pool)
        if plaintext:
            _audit_reveal(conn, pid, pool, path, actor=actor, state=state, since=since)
    rows = 0
    tmp, fd = _create_beside(path, 0o600 if plaintext else 0o644)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(COLUMNS)
            with engine.connect() as conn:
                for r in _stream(conn, _query(pid, state, since)):
                    writer.writerow(_row(vault, r, plaintext, zone))
                    rows += 1
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ExportResult(pool, path, rows, plaintext, state, since)


def _audit_reveal(conn: Connection, pid: int, pool: str, path: Path, *, actor: str,
                  state: str | None, since: datetime | None) -> None:
    """Audit a plaintext export and mark the reserved codes it shows as seen, before any code
    is decrypted."""
    count = int(conn.execute(select(func.count()).select_from(
        _query(pid, state, since).subquery())).scalar_one())
    if state in (None, CodeState.RESERVED):
        shown = select(codes.c.id).where(codes.c.pool_id == pid)
        if since is not None and state is None:
            shown = shown.where(codes.c.created_at >= since)
        marks = update(deliveries).where(
            deliveries.c.pool_id == pid, deliveries.c.state == DeliveryState.RESERVED,
            deliveries.c.seen_at.is_(None), deliveries.c.code_id.in_(shown))
        if since is not None and state == CodeState.RESERVED:
            marks = marks.where(deliveries.c.created_at >= since)
        conn.execute(marks.values(seen_at=utcnow()))
    audit.append(conn, actor=actor, action="export", subject=f"pool:{pool}", details={
        "pool": pool, "plaintext": True, "state": state,
        "since": format_time_json(since), "count": count, "file": path.name,
    })


def _create_beside(path: Path, mode: int) -> tuple[Path, int]:
    """A new empty file next to ``path`` with ``mode`` (never an existing file or link),
    open for writing: ``(its path, its descriptor)``."""
    if path.is_dir():
        raise UserError(f"{path} is a directory")
    if not path.parent.is_dir():
        raise UserError(f"no directory {path.parent}")
    for n in range(100):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{n}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        except FileExistsError:
            continue
        return tmp, fd  # the umask can only take bits away: plaintext stays 0600 or less
    raise UserError(f"cannot create a temporary file beside {path}")


def _stream(conn: Connection, query: Select[Any]) -> Iterator[Any]:
    result = conn.execution_options(yield_per=_YIELD_PER).execute(query)
    yield from result


def _row(vault: Vault, r: Any, plaintext: bool, zone: tzinfo) -> list[str]:
    secret = vault.decrypt(str(r.key_id), bytes(r.ciphertext), code_id=int(r.id),
                           pool_id=int(r.pool_id), fingerprint=bytes(r.fingerprint),
                           aad_version=r.aad_version)
    card_no, password = split_pair(secret)
    if plaintext:
        code_cell, password_cell = card_no, password or ""
    else:
        code_cell = _safe(mask(card_no))
        password_cell = _safe(mask(password)) if password else ""
    return [
        str(r.id), code_cell, password_cell, code_state(r), str(r.batch_id), str(r.source_line),
        _safe(r.supplier or ""), yuan(r.cost_cents),
        _local(r.expires_at, zone), "" if r.order_id is None else str(r.order_id),
        _safe(r.platform_order_id or ""), _safe(r.shop or ""), _local(r.delivered_at, zone),
    ]


def _local(value: datetime | None, zone: tzinfo) -> str:
    """A stored (naive UTC) time in the robot's zone, with its offset, whole seconds."""
    if value is None:
        return ""
    return to_zone(value, zone).isoformat(sep=" ", timespec="seconds")


def _safe(text: str) -> str:
    """A cell a spreadsheet will not run as a formula."""
    return "'" + text if text.startswith(_FORMULA_START) else text


__all__ = ["COLUMNS", "ExportResult", "count_codes", "export_codes"]
