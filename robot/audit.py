"""The keyed hash-chained audit log: imports, allocations, shipments, voids, reveals...

The log is :data:`AUDIT_CHAINS` hash chains. Each entry's hash is an HMAC-SHA256, under the
**audit key**, over the previous entry's hash in its chain and the entry's canonical JSON
(chain, seq, time, actor, action, subject, details). The audit key is derived (HKDF, its own
label) from the key file's fingerprint key, which never rotates, so it survives
``robot keys rotate``; the database never holds it, so someone who can write the database but
not read the key file cannot forge, re-hash or re-link an entry. Appending locks one chain's
``audit_head`` row inside the caller's transaction (moved to the chain's end as that
transaction commits), so the entries of a chain form one sequence in commit order;
:func:`verify` walks every chain and names the first entry that was altered, removed or
reordered.

What the database alone cannot show — a chain wiped, truncated, reset to genesis or deleted
with its head — is caught by **checkpoints** kept outside it: a file beside the key file
(:func:`checkpoint_path`) holding each chain's last known (seq, hash), signed with a second
key derived from the same material. :func:`checkpoint` moves a chain's checkpoint forward
only over entries it has verified itself, under a file lock (several robots may share the
file), and never backwards; ``verify`` fails when a chain is shorter than its checkpoint,
differs from it, or is missing. The robot checkpoints at most once a second after it
appended (and at start, at shutdown, and on every ``verify``): an attacker with the database
can at most remove entries committed since the last checkpoint unseen.

Chains written by older versions used unkeyed SHA-256 (``audit_head.keyed`` false).
:func:`upgrade_legacy` verifies such a chain once under SHA-256 and re-seals it keyed, one
chain per transaction (an interrupted upgrade resumes with the chains left). It refuses a
chain the checkpoint file knows: a keyed chain turned back into unkeyed form was tampered
with, and is never re-sealed. ``verify`` never accepts an unkeyed chain.

Why several chains: the head's lock is held until the caller commits, so with one chain
every allocating transaction in every process waited for the previous one's commit (fsync
included) — the robot's throughput on a server database was one commit at a time. On
PostgreSQL and MariaDB an appender takes the first head no other transaction holds
(``FOR UPDATE SKIP LOCKED``), looking from the chain after the one its process's previous
transaction started from, and waits only when all are busy. Spreading the appends matters
under a long transaction that holds PostgreSQL's vacuum horizon: every head update leaves
a row version that every later read of that head walks until vacuum may remove it, so
eight heads each updated an eighth of the time are read eight times faster than one
head updated every time. A transaction keeps the
chain it took for all its entries, and so never holds two heads (no deadlock between
appenders). SQLite has one writer at a time: it always appends to chain 1.

Entries must never carry a plaintext code: use code ids, masked codes or fingerprints. This
module must never log, print or put into an exception the audit key or the key file's keys.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import itertools
import json
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Connection, Engine, bindparam, func, insert, select, update

from robot.clock import utcnow
from robot.db import (
    before_commit,
    dialect_of,
    first,
    keep_for_tx,
    listen_once,
    pop_tx_value,
    transaction,
    tx_value,
    write,
    write_many,
)
from robot.errors import Fatal, VaultError
from robot.log import get_logger
from robot.schema import audit_head, audit_log
from robot.vault import KeyRing, load_key_ring, write_private_json

log = get_logger(__name__)

GENESIS = "0" * 64
AUDIT_CHAINS = 8
CHECKPOINT_VERSION = 1
CHECKPOINT_EVERY = 1.0  # seconds: the most often a process checkpoints after appending
_CHAIN_LABEL = b"robot audit chain v1"
_CHECKPOINT_LABEL = b"robot audit checkpoint v1"


# ---------------------------------------------------------------------------- keys


def _derive(material: bytes, label: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"robot-audit", info=label)
    return hkdf.derive(material)


def checkpoint_path(key_file: Path) -> Path:
    """Where the checkpoints of the log sealed by ``key_file`` are kept: beside it."""
    return key_file.with_name(key_file.name + ".audit-checkpoints")


@dataclass(frozen=True)
class Seal:
    """The audit log's two keys and its checkpoint file (all outside the database)."""

    chain_key: bytes = field(repr=False)
    checkpoint_key: bytes = field(repr=False)
    checkpoints: Path
    key_file: Path | None = None  # whose owner the checkpoint files get when root writes them

    @classmethod
    def from_ring(cls, ring: KeyRing, checkpoints: Path, key_file: Path | None = None) -> Seal:
        # The fingerprint key never rotates (the vault refuses a key file with another one),
        # so the audit keys stay the same through every `robot keys rotate`.
        return cls(_derive(ring.fingerprint_key, _CHAIN_LABEL),
                   _derive(ring.fingerprint_key, _CHECKPOINT_LABEL), checkpoints, key_file)

    @classmethod
    def from_key_file(cls, key_file: Path) -> Seal:
        return cls.from_ring(load_key_ring(key_file), checkpoint_path(key_file), key_file)


SealSource = Path | Callable[[], Seal]


class _Binding:
    """An engine's seal, loaded on first use (commands that write no entry need no key)."""

    def __init__(self, source: SealSource) -> None:
        self._source = source
        self._seal: Seal | None = None
        self._lock = threading.Lock()
        self.dirty = False  # appended since the last checkpoint
        self.last_checkpoint = 0.0  # time.monotonic()
        self.failing = False  # the last checkpoint failed (logged once)

    def seal(self) -> Seal:
        if self._seal is not None:  # appending asks on every entry: no lock once loaded
            return self._seal
        with self._lock:
            if self._seal is None:
                source = self._source
                self._seal = (Seal.from_key_file(source) if isinstance(source, Path)
                              else source())
            return self._seal


_BOUND: weakref.WeakKeyDictionary[Engine, _Binding] = weakref.WeakKeyDictionary()
_DEFAULT: list[_Binding] = []


def bind(engine: Engine, source: SealSource) -> None:
    """Seal the entries ``engine`` appends with the key file ``source`` (or a seal factory)."""
    _BOUND[engine] = _Binding(source)


def bind_default(source: SealSource | None) -> None:
    """The seal of engines nobody bound (an embedding program's, or a test's); None: none."""
    _DEFAULT[:] = [] if source is None else [_Binding(source)]


def _binding(engine: Engine) -> _Binding:
    found = _BOUND.get(engine) or (_DEFAULT[0] if _DEFAULT else None)
    if found is None:
        raise VaultError("the audit log is sealed with the key file, and none was opened for "
                         "this database")
    return found


def seal_of(engine: Engine) -> Seal:
    """The seal bound to ``engine``; :class:`VaultError` when none is (or its key file is bad)."""
    return _binding(engine).seal()


# ---------------------------------------------------------------------------- hashing


def _legacy_hash(prev_hash: str, seq: int, at: datetime, *, actor: str, action: str,
                 subject: str, details: str, chain: int = 1) -> str:
    """The unkeyed SHA-256 of older versions, read only to upgrade their chains."""
    # Chain 1's entries hashed as they did when the log was one chain.
    fields: list[Any] = [seq, at.isoformat(timespec="microseconds"), actor, action, subject,
                         details]
    if chain != 1:
        fields.insert(0, chain)
    body = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def _entry_hash(key: bytes, prev_hash: str, seq: int, at: datetime, *, chain: int, actor: str,
                action: str, subject: str, details: str) -> str:
    body = json.dumps([chain, seq, at.isoformat(timespec="microseconds"), actor, action,
                       subject, details], ensure_ascii=False, separators=(",", ":"))
    return hmac.new(key, (prev_hash + body).encode("utf-8"), hashlib.sha256).hexdigest()


def canonical(details: Mapping[str, Any]) -> str:
    return json.dumps(
        details, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str
    )


def ensure_head(conn: Connection) -> None:
    """Create the chains' head rows that are missing (idempotent); new chains are keyed."""
    have = set(conn.execute(select(audit_head.c.id)).scalars())
    missing = [{"id": c, "seq": 0, "hash": GENESIS, "keyed": True}
               for c in range(1, AUDIT_CHAINS + 1) if c not in have]
    if missing:
        conn.execute(insert(audit_head), missing)


# ---------------------------------------------------------------------------- appending

# Built once: appending is on every allocation's path.
HEAD_COLS = (audit_head.c.id, audit_head.c.seq, audit_head.c.hash, audit_head.c.keyed)
_HEAD = select(*HEAD_COLS).where(audit_head.c.id == bindparam("b_chain"))
_HEAD_LOCKED = _HEAD.with_for_update()
_FREE_HEAD = (select(*HEAD_COLS).where(audit_head.c.id >= bindparam("b_from"))
              .order_by(audit_head.c.id).limit(1).with_for_update(skip_locked=True))
_FREE_HEAD_BELOW = (select(*HEAD_COLS).where(audit_head.c.id < bindparam("b_below"))
                    .order_by(audit_head.c.id).limit(1).with_for_update(skip_locked=True))
#: Where a transaction starts looking for a free head: the next chain each time, so that
#: appends spread over every chain rather than piling on the first free one.
_ROTATION = itertools.count()
_INSERT_ENTRY = insert(audit_log)
_MOVE_HEAD = update(audit_head).where(audit_head.c.id == bindparam("b_chain"))
_TAKEN = "audit_chain"  # Connection.info key: the _Tip of the transaction holding a head


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
    """Append entries in order to one chain inside the caller's transaction; returns the
    last sequence number.

    The transaction's first append locks a chain's head and reads its end; later appends
    continue from there in memory, and the head row is moved once, to the chain's end, as
    the transaction commits (:func:`_move_head`): a batch of orders in one transaction
    updates the head once, not once per order (every update is a row version the server
    keeps while any old snapshot is open). A savepoint rolled back meanwhile may have taken
    entries with it: the next append, or the commit, reads the chain's end from the log."""
    binding = _binding(conn.engine)
    key = binding.seal().chain_key
    tip = _take_head(conn)
    if not tip.keyed:
        raise Fatal(f"audit chain {tip.chain} still uses the unkeyed hash of an older "
                    "version: run `robot audit upgrade` (`robot run` does it at start)")
    chain, seq, prev = tip.chain, tip.seq, tip.hash
    at = utcnow()
    rows = []
    for entry in entries:
        seq += 1
        body = canonical(entry.details or {})
        digest = _entry_hash(key, prev, seq, at, chain=chain, actor=entry.actor,
                             action=entry.action, subject=entry.subject, details=body)
        rows.append({"chain": chain, "seq": seq, "at": at, "actor": entry.actor,
                     "action": entry.action, "subject": entry.subject, "details": body,
                     "prev_hash": prev, "hash": digest})
        prev = digest
    if rows:
        write_many(conn, _INSERT_ENTRY, rows)
        tip.seq, tip.hash = seq, prev
        binding.dirty = True
    return seq


@dataclass
class _Tip:
    """The chain a transaction appends to: its head as read when the transaction locked it
    (``base``) and the chain's end now."""

    chain: int
    base: tuple[int, str]
    seq: int
    hash: str
    keyed: bool
    stale: bool = False  # a savepoint was rolled back: read the end from the log


def _take_head(conn: Connection) -> _Tip:
    """The transaction's chain, its head locked on the first append."""
    held: _Tip | None = tx_value(conn, _TAKEN)
    if held is not None:
        if held.stale:
            _reread(conn, held)
        return held
    listen_once(conn.engine, "rollback_savepoint", _savepoint_rolled_back)
    if dialect_of(conn) == "sqlite":  # one writer at a time: always chain 1
        row = _read_head(conn, _HEAD, 1)
    else:
        start = next(_ROTATION) % AUDIT_CHAINS + 1
        row = first(conn, _FREE_HEAD, {"b_from": start})
        if row is None and start > 1:
            row = first(conn, _FREE_HEAD_BELOW, {"b_below": start})
        if row is None:  # every head is busy (or none exists yet): queue for one
            chain = (os.getpid() + threading.get_ident()) % AUDIT_CHAINS + 1
            row = _read_head(conn, _HEAD_LOCKED, chain)
    seq, digest = int(row.seq), str(row.hash)
    tip = keep_for_tx(conn, _TAKEN, _Tip(int(row.id), (seq, digest), seq, digest,
                                         bool(row.keyed)))
    before_commit(conn, _move_head)
    return tip


def _reread(conn: Connection, tip: _Tip) -> None:
    """The chain's end after a savepoint rollback: its last entry in the log (entries are
    only ever added after the head, so none beyond ``base``: the head itself)."""
    row = first(conn, _LAST_ENTRY, {"b_chain": tip.chain, "b_seq": tip.base[0]})
    tip.seq, tip.hash = (int(row.seq), str(row.hash)) if row is not None else tip.base
    tip.stale = False


_LAST_ENTRY = (select(audit_log.c.seq, audit_log.c.hash)
               .where(audit_log.c.chain == bindparam("b_chain"),
                      audit_log.c.seq > bindparam("b_seq"))
               .order_by(audit_log.c.seq.desc()).limit(1))
def _move_head(conn: Connection) -> None:
    """As the transaction commits: move its chain's head to the chain's end (in the same
    commit as the entries, so the head never lags nor leads the log)."""
    tip = pop_tx_value(conn, _TAKEN)
    if tip is None:
        return
    if tip.stale:
        _reread(conn, tip)
    if (tip.seq, tip.hash) != tip.base:
        write(conn, _MOVE_HEAD, {"b_chain": tip.chain, "seq": tip.seq, "hash": tip.hash})


def _savepoint_rolled_back(conn: Connection, _name: str, _context: Any) -> None:
    tip = tx_value(conn, _TAKEN)
    if tip is not None:
        tip.stale = True


def _read_head(conn: Connection, stmt: Any, chain: int) -> Any:
    row = first(conn, stmt, {"b_chain": chain})
    if row is None:
        ensure_head(conn)
        row = conn.execute(stmt, {"b_chain": chain}).one()
    return row


# ---------------------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class Mark:
    """A chain's head as a checkpoint remembers it."""

    seq: int
    hash: str


class CheckpointError(Fatal):
    """The checkpoint file is unreadable, malformed or fails its signature."""


def _mac(seal: Seal, chains: Mapping[int, Mark]) -> str:
    body = json.dumps({"version": CHECKPOINT_VERSION,
                       "chains": {str(c): [m.seq, m.hash] for c, m in sorted(chains.items())}},
                      sort_keys=True, separators=(",", ":"))
    return hmac.new(seal.checkpoint_key, body.encode(), hashlib.sha256).hexdigest()


def read_checkpoints(seal: Seal) -> dict[int, Mark]:
    """The signed checkpoints (empty when there is no file yet)."""
    path = seal.checkpoints
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CheckpointError(f"audit checkpoint file {path} cannot be read: "
                              f"{exc.strerror or exc}") from exc
    try:
        raw = json.loads(text)
        if raw.get("version") != CHECKPOINT_VERSION:
            raise CheckpointError(f"audit checkpoint file {path}: unsupported version "
                                  f"{raw.get('version')!r}")
        chains = {int(c): Mark(int(m[0]), str(m[1])) for c, m in raw["chains"].items()}
        mac = str(raw["mac"])
    except CheckpointError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise CheckpointError(f"audit checkpoint file {path} is malformed") from exc
    if not hmac.compare_digest(mac, _mac(seal, chains)):
        raise CheckpointError(f"audit checkpoint file {path} fails its signature: it was "
                              "altered, or belongs to another key file")
    return chains


def _give_to_owner(fd: int, seal: Seal) -> None:
    """A file root creates (a CLI command run with sudo) goes to the key file's owner, the
    service user, who must go on reading and replacing it."""
    if os.geteuid() == 0 and seal.key_file is not None:
        st = seal.key_file.stat()
        os.fchown(fd, st.st_uid, st.st_gid)


@contextlib.contextmanager
def _locked(seal: Seal) -> Iterator[None]:
    """Hold the checkpoint file's lock (a separate file: the checkpoint itself is renamed)."""
    path = seal.checkpoints
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        _give_to_owner(fd, seal)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _write(seal: Seal, chains: Mapping[int, Mark]) -> None:
    """Replace the checkpoint file atomically (temp file, fsync, rename, fsync the dir)."""
    path = seal.checkpoints
    payload = {"version": CHECKPOINT_VERSION, "written_at": utcnow().isoformat() + "Z",
               "chains": {str(c): [m.seq, m.hash] for c, m in sorted(chains.items())},
               "mac": _mac(seal, chains)}
    write_private_json(path, payload, indent=1, opened=lambda fd: _give_to_owner(fd, seal))


def checkpoint(engine: Engine) -> dict[int, Mark]:
    """Move every keyed chain's checkpoint forward to its head; returns the checkpoints.

    A chain's checkpoint moves only when its head extends it: every entry after the old
    checkpoint is walked and verified (link, keyed hash, no gap) up to the head. A head
    behind its checkpoint, or one that does not extend it, leaves the checkpoint where it
    is (and is logged): a checkpoint never moves back. Several processes may call this at
    once: the file lock makes each read-check-write whole.
    """
    binding = _binding(engine)
    seal = binding.seal()
    binding.dirty = False
    try:
        new = _checkpoint(engine, seal)
    except OSError as exc:
        raise CheckpointError(f"audit checkpoint file {seal.checkpoints} cannot be written: "
                              f"{exc.strerror or exc}") from exc
    binding.last_checkpoint = time.monotonic()
    return new


def _checkpoint(engine: Engine, seal: Seal) -> dict[int, Mark]:
    with _locked(seal):
        old = read_checkpoints(seal)
        new = dict(old)
        with engine.connect() as conn:
            heads = conn.execute(select(*HEAD_COLS)).all()
            for head in heads:
                chain = int(head.id)
                mark = old.get(chain)
                if not head.keyed:
                    continue  # unkeyed chains are the upgrade's business (and verify's)
                moved = _extend(conn, seal.chain_key, chain, mark,
                                Mark(int(head.seq), str(head.hash)))
                if moved is not None:
                    new[chain] = moved
        if new != old:
            _write(seal, new)
            log.info("audit_checkpoint", file=str(seal.checkpoints),
                     chains={c: [m.seq, m.hash] for c, m in sorted(new.items())
                             if old.get(c) != m})
    return new


def _extend(conn: Connection, key: bytes, chain: int, mark: Mark | None,
            head: Mark) -> Mark | None:
    """``head`` if it verifiably extends ``mark`` (None: leave the checkpoint as it is)."""
    if mark is not None and head.seq < mark.seq:
        log.error("audit_checkpoint_refused", chain=chain, checkpoint_seq=mark.seq,
                  head_seq=head.seq, reason="the chain is behind its checkpoint")
        return None
    if mark == head:
        return None
    seq, prev = (mark.seq, mark.hash) if mark is not None else (0, GENESIS)
    walked = _walk(conn, key, chain, seq, prev, until=head.seq)
    if walked.problem is None and walked.seq == head.seq and walked.hash == head.hash:
        return head
    log.error("audit_checkpoint_refused", chain=chain, checkpoint_seq=seq, head_seq=head.seq,
              reason=walked.problem or "the head does not match the chain's entries")
    return None


def checkpoint_due(engine: Engine, *, every: float = CHECKPOINT_EVERY) -> bool:
    """Checkpoint if this process appended through ``engine`` (bound with :func:`bind`)
    and the last checkpoint is ``every`` seconds old.

    Never raises: a failure is logged once when it starts and once when it ends (the next
    call tries again). Returns whether a checkpoint was written or confirmed.
    """
    binding = _BOUND.get(engine)  # bound by its owner (robot run, a CLI command)
    if binding is None or not binding.dirty:
        return False
    if time.monotonic() - binding.last_checkpoint < every:
        return False
    return checkpoint_quietly(engine)


def checkpoint_quietly(engine: Engine) -> bool:
    """:func:`checkpoint`, with a failure logged (once) rather than raised."""
    binding = _binding(engine)
    try:
        checkpoint(engine)
    except Exception as exc:  # noqa: BLE001 - logged; appending must go on regardless
        binding.dirty = True
        if not binding.failing:
            log.error("audit_checkpoint_failed", error=f"{type(exc).__name__}: {exc}")
        binding.failing = True
        return False
    if binding.failing:
        log.info("audit_checkpoint_recovered")
    binding.failing = False
    return True


# ---------------------------------------------------------------------------- verifying


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    problem: str | None = None
    chain: int | None = None  # the chain of first_bad_seq


@dataclass(frozen=True)
class _Walked:
    seq: int  # the last good entry
    hash: str  # its hash
    problem: str | None = None  # why the walk stopped early (None: it reached the end)
    bad_seq: int | None = None
    hash_at: dict[int, str] = field(default_factory=dict)  # hashes of the entries asked for


def _walk(conn: Connection, key: bytes, chain: int, seq: int, prev: str, *,
          until: int | None = None, batch: int = 5000, remember: frozenset[int] = frozenset()
          ) -> _Walked:
    """Verify the chain's entries after ``seq`` (whose hash is ``prev``), up to ``until``."""
    hash_at: dict[int, str] = {}
    while until is None or seq < until:
        stmt = (select(audit_log).where(audit_log.c.chain == chain, audit_log.c.seq > seq)
                .order_by(audit_log.c.seq).limit(batch))
        if until is not None:
            stmt = stmt.where(audit_log.c.seq <= until)
        rows = conn.execute(stmt).all()
        if not rows:
            break
        for r in rows:
            if r.seq != seq + 1:
                return _Walked(seq, prev, f"entry {seq + 1} is missing (next is {r.seq})",
                               seq + 1, hash_at)
            if r.prev_hash != prev:
                return _Walked(seq, prev, f"entry {r.seq} does not follow entry {r.seq - 1}",
                               r.seq, hash_at)
            digest = _entry_hash(key, r.prev_hash, r.seq, r.at, chain=chain, actor=r.actor,
                                 action=r.action, subject=r.subject, details=r.details)
            if not hmac.compare_digest(digest, str(r.hash)):
                return _Walked(seq, prev, f"entry {r.seq} was altered", r.seq, hash_at)
            seq, prev = int(r.seq), str(r.hash)
            if seq in remember:
                hash_at[seq] = prev
    return _Walked(seq, prev, None, None, hash_at)


def verify(engine: Engine, *, batch: int = 5000, save: bool = True) -> VerifyResult:
    """Walk every chain from its start and hold it against its checkpoint; report the
    first thing that does not fit. When all is well (and ``save``), checkpoint.

    Safe while other processes append: a chain's head is read after its walk, and when it
    is ahead of the entries seen (appends committed meanwhile) the walk continues from there.
    """
    seal = seal_of(engine)
    try:
        marks = read_checkpoints(seal)
    except CheckpointError as exc:
        return VerifyResult(False, 0, None, exc.message, None)
    total = 0
    with engine.connect() as conn:
        heads = {int(r.id): r for r in conn.execute(select(*HEAD_COLS))}
        in_log = {int(c): int(n) for c, n in conn.execute(
            select(audit_log.c.chain, func.count()).group_by(audit_log.c.chain))}
        chains = sorted(set(range(1, AUDIT_CHAINS + 1)) | set(heads) | set(in_log)
                        | set(marks))
        for chain in chains:
            result = _verify_chain(conn, seal.chain_key, chain, heads.get(chain),
                                   in_log.get(chain, 0), marks.get(chain), batch)
            total += result.entries
            if not result.ok:
                return VerifyResult(False, total, result.first_bad_seq, result.problem, chain)
    if save:
        checkpoint(engine)
    return VerifyResult(True, total)


def _verify_chain(conn: Connection, key: bytes, chain: int, head: Any, entries: int,
                  mark: Mark | None, batch: int) -> VerifyResult:
    where = "" if chain == 1 else f"chain {chain}: "
    unusable = _head_verdict(where, head, entries, mark)
    if unusable is not None:
        return unusable
    remember = frozenset({mark.seq}) if mark is not None else frozenset()
    walked = _walk(conn, key, chain, 0, GENESIS, batch=batch, remember=remember)
    while True:
        if walked.problem is not None:
            return VerifyResult(False, walked.seq, walked.bad_seq, where + walked.problem)
        # An entry and its head update commit together, so a head read after the walk is
        # never behind the entries seen; if it is ahead, look again for newer entries.
        now = conn.execute(_HEAD, {"b_chain": chain}).first()
        if now is None:
            return VerifyResult(False, walked.seq, walked.seq or 1,
                                f"{where}the chain head row is missing: the log was "
                                "tampered with")
        if now.seq > walked.seq:
            more = _walk(conn, key, chain, walked.seq, walked.hash, batch=batch,
                         remember=remember)
            if more.seq > walked.seq or more.problem is not None:
                walked = _Walked(more.seq, more.hash, more.problem, more.bad_seq,
                                 {**walked.hash_at, **more.hash_at})
                continue
            return VerifyResult(False, walked.seq, walked.seq + 1,
                                f"{where}the chain ends at entry {walked.seq} but its head "
                                f"says {now.seq}: entries were removed from the end")
        break
    return _end_verdict(where, now, walked, mark)


def _head_verdict(where: str, head: Any, entries: int, mark: Mark | None) -> VerifyResult | None:
    """The chain's failure when its head row is missing or unkeyed (None: walk it)."""
    if head is None:
        found = (f"the chain head row is missing ({entries} entries without it)" if entries
                 else "the chain is missing (no head row, no entries)")
        want = (f"; its checkpoint says entry {mark.seq} (hash {mark.hash[:16]}…)"
                if mark is not None else "")
        return VerifyResult(False, 0, mark.seq if mark else 1,
                            f"{where}{found}{want}: the log was tampered with")
    if not head.keyed:
        if mark is not None:
            return VerifyResult(False, 0, 1, f"{where}the chain claims the unkeyed hashes of "
                                f"an older version, but its checkpoint says keyed entry "
                                f"{mark.seq}: it was rewritten (a downgrade)")
        return VerifyResult(False, 0, 1, f"{where}the chain still uses the unkeyed hashes of "
                            "an older version: run `robot audit upgrade`")
    return None


def _end_verdict(where: str, now: Any, walked: _Walked, mark: Mark | None) -> VerifyResult:
    """The verdict on a walked chain: its end against the head row and the checkpoint."""
    count = walked.seq
    if now.seq < count:
        return VerifyResult(False, count, now.seq + 1,
                            f"{where}entry {now.seq + 1} lies beyond the chain head "
                            f"(entry {now.seq}): entries were added outside the robot")
    if now.hash != walked.hash:
        return VerifyResult(False, count, count, f"{where}the chain head does not match "
                            f"entry {count}: the last entry was replaced")
    if mark is not None:
        if count < mark.seq:
            return VerifyResult(False, count, count + 1, f"{where}the chain ends at entry "
                                f"{count} (hash {walked.hash[:16]}…) but its checkpoint says "
                                f"entry {mark.seq} (hash {mark.hash[:16]}…): entries were "
                                "removed, or the chain was wiped or reset")
        found = walked.hash_at.get(mark.seq, GENESIS if mark.seq == 0 else "")
        if found != mark.hash:
            return VerifyResult(False, count, mark.seq, f"{where}entry {mark.seq} has hash "
                                f"{found[:16]}… but its checkpoint says {mark.hash[:16]}…: "
                                "the chain was rewritten")
    return VerifyResult(True, count)


# ---------------------------------------------------------------------------- upgrading


def upgrade_legacy(engine: Engine, *, actor: str, batch: int = 5000) -> dict[int, int]:
    """Re-seal every unkeyed chain keyed, after verifying it under the old SHA-256.

    One transaction per chain, holding its head: an interruption leaves each chain either
    unkeyed or wholly keyed, and running again finishes the rest. Refuses a chain that fails
    its old verification, and a chain the checkpoint file already knows (a keyed chain
    rewritten in unkeyed form). Returns the entries re-sealed per chain; the upgrade is
    appended to the log itself and logged.
    """
    seal = seal_of(engine)
    marks = read_checkpoints(seal)
    with engine.connect() as conn:
        legacy = sorted(int(c) for c in conn.execute(
            select(audit_head.c.id).where(audit_head.c.keyed.is_(False))).scalars())
    done: dict[int, int] = {}
    for chain in legacy:
        if chain in marks:
            raise Fatal(f"audit chain {chain} is in unkeyed form, but its checkpoint says "
                        f"keyed entry {marks[chain].seq}: it was rewritten (a downgrade); "
                        "not re-sealing it")
        with transaction(engine) as conn:
            n = _reseal(conn, seal.chain_key, chain, batch)
        if n is not None:
            done[chain] = n
            log.warning("audit_chain_resealed", chain=chain, entries=n)
    if done:
        with transaction(engine) as conn:
            append(conn, actor=actor, action="audit_reseal", subject="audit",
                   details={"chains": {str(c): n for c, n in done.items()}})
        checkpoint(engine)
    return done


_RESEAL = (update(audit_log)
           .where(audit_log.c.chain == bindparam("b_chain"), audit_log.c.seq == bindparam("b_seq"))
           .values(prev_hash=bindparam("b_prev"), hash=bindparam("b_hash")))


def _reseal(conn: Connection, key: bytes, chain: int, batch: int) -> int | None:
    """Verify one unkeyed chain under SHA-256 and rewrite its hashes keyed (None: it was
    keyed meanwhile)."""
    head = conn.execute(_HEAD_LOCKED, {"b_chain": chain}).first()
    if head is None or head.keyed:
        return None
    old_prev, new_prev, seq = GENESIS, GENESIS, 0
    while True:
        rows = conn.execute(select(audit_log).where(audit_log.c.chain == chain,
                                                    audit_log.c.seq > seq)
                            .order_by(audit_log.c.seq).limit(batch)).all()
        if not rows:
            break
        params = []
        for r in rows:
            digest = _legacy_hash(r.prev_hash, r.seq, r.at, actor=r.actor, action=r.action,
                                  subject=r.subject, details=r.details, chain=chain)
            if r.seq != seq + 1 or r.prev_hash != old_prev or digest != r.hash:
                raise Fatal(f"audit chain {chain} fails its unkeyed verification at entry "
                            f"{seq + 1}: it was tampered with before the upgrade; not "
                            "re-sealing it (see `robot audit list`)")
            keyed = _entry_hash(key, new_prev, r.seq, r.at, chain=chain, actor=r.actor,
                                action=r.action, subject=r.subject, details=r.details)
            params.append({"b_chain": chain, "b_seq": r.seq, "b_prev": new_prev,
                           "b_hash": keyed})
            seq, old_prev, new_prev = int(r.seq), str(r.hash), keyed
        conn.execute(_RESEAL, params)
    if head.seq != seq or head.hash != old_prev:
        raise Fatal(f"audit chain {chain} ends at entry {seq} but its head says {head.seq}: "
                    "it was tampered with before the upgrade; not re-sealing it")
    conn.execute(_MOVE_HEAD, {"b_chain": chain, "seq": seq, "hash": new_prev, "keyed": True})
    return seq
