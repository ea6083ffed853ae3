"""The hash-chained audit log: imports, allocations, shipments, voids, reveals, replays...

Each entry's hash is SHA-256 over the previous entry's hash and the entry's canonical JSON
(seq, time, actor, action, subject, details). Appending locks the single ``audit_head`` row
inside the caller's transaction, so entries from concurrent processes form one chain in
commit order; ``verify`` walks the chain and names the first entry that was altered,
removed or reordered.

Entries must never carry a plaintext code: use code ids, masked codes or fingerprints.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update

from robot.clock import utcnow
from robot.db import dialect_of
from robot.schema import audit_head, audit_log

GENESIS = "0" * 64


def _entry_hash(prev_hash: str, seq: int, at: datetime, *, actor: str, action: str,
                subject: str, details: str) -> str:
    body = json.dumps(
        [seq, at.isoformat(timespec="microseconds"), actor, action, subject, details],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def canonical(details: Mapping[str, Any]) -> str:
    return json.dumps(
        details, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str
    )


def ensure_head(conn: Connection) -> None:
    """Create the chain head row if the database is new (idempotent)."""
    if conn.execute(select(audit_head.c.id).where(audit_head.c.id == 1)).first() is None:
        conn.execute(insert(audit_head).values(id=1, seq=0, hash=GENESIS))


# Built once: appending is on every allocation's path.
_HEAD = select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)
_HEAD_LOCKED = _HEAD.with_for_update()
_INSERT_ENTRY = insert(audit_log)
_MOVE_HEAD = update(audit_head).where(audit_head.c.id == 1)


@dataclass(frozen=True)
class Entry:
    """One entry to append (its place in the chain is given when it is appended)."""

    actor: str
    action: str
    subject: str
    details: Mapping[str, Any] | None = None


def append(conn: Connection, *, actor: str, action: str, subject: str,
           details: Mapping[str, Any] | None = None) -> int:
    """Append one entry inside the caller's transaction; returns its sequence number."""
    return append_many(conn, [Entry(actor, action, subject, details)])


def append_many(conn: Connection, entries: Sequence[Entry]) -> int:
    """Append entries in order inside the caller's transaction, with one read and one
    update of the chain head (a transaction that records several steps takes the head's
    lock once); returns the last sequence number."""
    # SQLite's BEGIN IMMEDIATE already serializes writers; servers lock the head row.
    stmt = _HEAD if dialect_of(conn) == "sqlite" else _HEAD_LOCKED
    row = conn.execute(stmt).first()
    if row is None:
        ensure_head(conn)
        row = conn.execute(stmt).one()
    seq, prev = int(row.seq), str(row.hash)
    at = utcnow()
    rows = []
    for entry in entries:
        seq += 1
        body = canonical(entry.details or {})
        digest = _entry_hash(prev, seq, at, actor=entry.actor, action=entry.action,
                             subject=entry.subject, details=body)
        rows.append({"seq": seq, "at": at, "actor": entry.actor, "action": entry.action,
                     "subject": entry.subject, "details": body, "prev_hash": prev,
                     "hash": digest})
        prev = digest
    if rows:
        conn.execute(_INSERT_ENTRY, rows)
        conn.execute(_MOVE_HEAD, {"seq": seq, "hash": prev})
    return seq


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    problem: str | None = None


def verify(engine: Engine, *, batch: int = 5000) -> VerifyResult:
    """Walk the chain from the start; report the first entry that does not fit.

    Safe while other processes append: the head is read after the walk, and when it is ahead
    of the entries seen (appends committed meanwhile) the walk continues from there.
    """
    prev_hash = GENESIS
    count = 0
    with engine.connect() as conn:
        while True:
            rows = conn.execute(
                select(audit_log)
                .where(audit_log.c.seq > count)
                .order_by(audit_log.c.seq)
                .limit(batch)
            ).all()
            for r in rows:
                expected_seq = count + 1
                if r.seq != expected_seq:
                    return VerifyResult(False, count, expected_seq,
                                        f"entry {expected_seq} is missing (next is {r.seq})")
                if r.prev_hash != prev_hash:
                    return VerifyResult(False, count, r.seq,
                                        f"entry {r.seq} does not follow entry {r.seq - 1}")
                digest = _entry_hash(r.prev_hash, r.seq, r.at, actor=r.actor, action=r.action,
                                     subject=r.subject, details=r.details)
                if digest != r.hash:
                    return VerifyResult(False, count, r.seq, f"entry {r.seq} was altered")
                prev_hash = r.hash
                count += 1
            if rows:
                continue
            # An entry and its head update commit together, so a head read after the walk is
            # never behind the entries seen; if it is ahead, look again for newer entries.
            head = conn.execute(
                select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)
            ).first()
            if head is None:
                if count:
                    return VerifyResult(False, count, count,
                                        "the chain head row is missing: the log was tampered with")
                return VerifyResult(True, 0)
            if head.seq > count:
                newer = conn.execute(
                    select(audit_log.c.seq).where(audit_log.c.seq > count).limit(1)
                ).first()
                if newer is not None:
                    continue
                return VerifyResult(False, count, count + 1,
                                    f"the chain ends at entry {count} but its head says "
                                    f"{head.seq}: entries were removed from the end")
            if head.seq < count:
                return VerifyResult(False, count, head.seq + 1,
                                    f"entry {head.seq + 1} lies beyond the chain head "
                                    f"(entry {head.seq}): entries were added outside the robot")
            if head.hash != prev_hash:
                return VerifyResult(False, count, count,
                                    f"the chain head does not match entry {count}: "
                                    "the last entry was replaced")
            return VerifyResult(True, count)
