"""The hash-chained audit log: imports, allocations, shipments, voids, reveals, replays...

The log is :data:`AUDIT_CHAINS` hash chains. Each entry's hash is SHA-256 over the previous
entry's hash in its chain and the entry's canonical JSON (chain, seq, time, actor, action,
subject, details). Appending locks one chain's ``audit_head`` row inside the caller's
transaction, so the entries of a chain form one sequence in commit order; ``verify`` walks
every chain and names the first entry that was altered, removed or reordered.

Why several chains: the head's lock is held until the caller commits, so with one chain
every allocating transaction in every process waited for the previous one's commit (fsync
included) — the robot's throughput on a server database was one commit at a time. On
PostgreSQL and MariaDB an appender takes the first head no other transaction holds
(``FOR UPDATE SKIP LOCKED``) and waits only when all are busy. A transaction keeps the
chain it took for all its entries, and so never holds two heads (no deadlock between
appenders). SQLite has one writer at a time: it always appends to chain 1.

Entries must never carry a plaintext code: use code ids, masked codes or fingerprints.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, insert, select, update

from robot.clock import utcnow
from robot.db import dialect_of
from robot.schema import audit_head, audit_log

GENESIS = "0" * 64
AUDIT_CHAINS = 8


def _entry_hash(prev_hash: str, seq: int, at: datetime, *, actor: str, action: str,
                subject: str, details: str, chain: int = 1) -> str:
    # Chain 1's entries hash as they did when the log was one chain, so logs written
    # before there were several still verify.
    fields: list[Any] = [seq, at.isoformat(timespec="microseconds"), actor, action, subject,
                         details]
    if chain != 1:
        fields.insert(0, chain)
    body = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def canonical(details: Mapping[str, Any]) -> str:
    return json.dumps(
        details, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str
    )


def ensure_head(conn: Connection) -> None:
    """Create the chains' head rows that are missing (idempotent)."""
    have = set(conn.execute(select(audit_head.c.id)).scalars())
    missing = [{"id": c, "seq": 0, "hash": GENESIS} for c in range(1, AUDIT_CHAINS + 1)
               if c not in have]
    if missing:
        conn.execute(insert(audit_head), missing)


# Built once: appending is on every allocation's path.
_HEAD_COLS = (audit_head.c.id, audit_head.c.seq, audit_head.c.hash)
_HEAD = select(*_HEAD_COLS).where(audit_head.c.id == bindparam("b_chain"))
_HEAD_LOCKED = _HEAD.with_for_update()
_FREE_HEAD = (select(*_HEAD_COLS).order_by(audit_head.c.id).limit(1)
              .with_for_update(skip_locked=True))
_INSERT_ENTRY = insert(audit_log)
_MOVE_HEAD = update(audit_head).where(audit_head.c.id == bindparam("b_chain"))
_TAKEN = "audit_chain"  # Connection.info key: (transaction, chain) this connection holds


@dataclass(frozen=True)
class Entry:
    """One entry to append (its place in the chain is given when it is appended)."""

    actor: str
    action: str
    subject: str
    details: Mapping[str, Any] | None = None


def append(conn: Connection, *, actor: str, action: str, subject: str,
           details: Mapping[str, Any] | None = None) -> int:
    """Append one entry inside the caller's transaction; returns its sequence number
    within its chain."""
    return append_many(conn, [Entry(actor, action, subject, details)])


def append_many(conn: Connection, entries: Sequence[Entry]) -> int:
    """Append entries in order to one chain inside the caller's transaction, with one read
    and one update of that chain's head; returns the last sequence number."""
    chain, seq, prev = _take_head(conn)
    at = utcnow()
    rows = []
    for entry in entries:
        seq += 1
        body = canonical(entry.details or {})
        digest = _entry_hash(prev, seq, at, actor=entry.actor, action=entry.action,
                             subject=entry.subject, details=body, chain=chain)
        rows.append({"chain": chain, "seq": seq, "at": at, "actor": entry.actor,
                     "action": entry.action, "subject": entry.subject, "details": body,
                     "prev_hash": prev, "hash": digest})
        prev = digest
    if rows:
        conn.execute(_INSERT_ENTRY, rows)
        conn.execute(_MOVE_HEAD, {"b_chain": chain, "seq": seq, "hash": prev})
    return seq


def _take_head(conn: Connection) -> tuple[int, int, str]:
    """Lock a chain's head for this transaction: (chain, seq, hash)."""
    if dialect_of(conn) == "sqlite":
        row = _read_head(conn, _HEAD, 1)
    else:
        tx = conn.get_transaction()
        held = conn.info.get(_TAKEN)
        if held is not None and held[0] is tx:
            row = _read_head(conn, _HEAD_LOCKED, held[1])  # ours already: no wait
        else:
            row = conn.execute(_FREE_HEAD).first()
            if row is None:  # every head is busy (or none exists yet): queue for one
                chain = (os.getpid() + threading.get_ident()) % AUDIT_CHAINS + 1
                row = _read_head(conn, _HEAD_LOCKED, chain)
            conn.info[_TAKEN] = (tx, int(row.id))
    return int(row.id), int(row.seq), str(row.hash)


def _read_head(conn: Connection, stmt: Any, chain: int) -> Any:
    row = conn.execute(stmt, {"b_chain": chain}).first()
    if row is None:
        ensure_head(conn)
        row = conn.execute(stmt, {"b_chain": chain}).one()
    return row


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    problem: str | None = None
    chain: int | None = None  # the chain of first_bad_seq


def verify(engine: Engine, *, batch: int = 5000) -> VerifyResult:
    """Walk every chain from its start; report the first entry that does not fit.

    Safe while other processes append: a chain's head is read after its walk, and when it
    is ahead of the entries seen (appends committed meanwhile) the walk continues from there.
    """
    total = 0
    with engine.connect() as conn:
        heads = set(conn.execute(select(audit_head.c.id)).scalars())
        chains = sorted(heads | set(conn.execute(
            select(audit_log.c.chain).distinct()).scalars()))
        for chain in chains or [1]:
            result = _verify_chain(conn, chain, batch)
            total += result.entries
            if not result.ok:
                return VerifyResult(False, total, result.first_bad_seq, result.problem, chain)
    return VerifyResult(True, total)


def _verify_chain(conn: Connection, chain: int, batch: int) -> VerifyResult:
    where = "" if chain == 1 else f"chain {chain}: "
    prev_hash = GENESIS
    count = 0
    while True:
        rows = conn.execute(
            select(audit_log)
            .where(audit_log.c.chain == chain, audit_log.c.seq > count)
            .order_by(audit_log.c.seq)
            .limit(batch)
        ).all()
        for r in rows:
            expected_seq = count + 1
            if r.seq != expected_seq:
                return VerifyResult(False, count, expected_seq,
                                    f"{where}entry {expected_seq} is missing (next is {r.seq})")
            if r.prev_hash != prev_hash:
                return VerifyResult(False, count, r.seq,
                                    f"{where}entry {r.seq} does not follow entry {r.seq - 1}")
            digest = _entry_hash(r.prev_hash, r.seq, r.at, actor=r.actor, action=r.action,
                                 subject=r.subject, details=r.details, chain=chain)
            if digest != r.hash:
                return VerifyResult(False, count, r.seq, f"{where}entry {r.seq} was altered")
            prev_hash = r.hash
            count += 1
        if rows:
            continue
        # An entry and its head update commit together, so a head read after the walk is
        # never behind the entries seen; if it is ahead, look again for newer entries.
        head = conn.execute(_HEAD, {"b_chain": chain}).first()
        if head is None:
            if count:
                return VerifyResult(False, count, count, f"{where}the chain head row is "
                                    "missing: the log was tampered with")
            return VerifyResult(True, 0)
        if head.seq > count:
            newer = conn.execute(
                select(audit_log.c.seq).where(audit_log.c.chain == chain,
                                              audit_log.c.seq > count).limit(1)
            ).first()
            if newer is not None:
                continue
            return VerifyResult(False, count, count + 1,
                                f"{where}the chain ends at entry {count} but its head says "
                                f"{head.seq}: entries were removed from the end")
        if head.seq < count:
            return VerifyResult(False, count, head.seq + 1,
                                f"{where}entry {head.seq + 1} lies beyond the chain head "
                                f"(entry {head.seq}): entries were added outside the robot")
        if head.hash != prev_hash:
            return VerifyResult(False, count, count,
                                f"{where}the chain head does not match entry {count}: "
                                "the last entry was replaced")
        return VerifyResult(True, count)
