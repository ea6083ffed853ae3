"""Code pools: creating them, importing codes, stock figures, voiding and expiring codes.

All SQL for the life of pools, batches, codes and stock lives here, except claiming (which
is :mod:`robot.matcher`'s). A code's state is derived (see :mod:`robot.schema`).

An import is whole or nothing. It is written so that no transaction is long, memory stays
bounded whatever the file's size, and a crash leaves nothing for sale:

1. hash the file; refuse a file already imported into the pool (unless told otherwise);
2. create a batch in state ``importing`` and commit;
3. stream the file; per chunk, fingerprint the codes, take ids for them from a block
   reserved beforehand (:func:`reserve_code_ids`: the ciphertext binds its row's id, so the
   id must be known before encryption), find duplicates (earlier in this file = rows of this
   batch; anywhere else = a code some pool already holds, named with its pool) and insert the
   new ``codes`` rows in one short transaction — they are *not* in ``stock`` yet, so nobody
   can sell them;
4. at the end, if any line was rejected (or this is a dry run) delete the batch's codes and
   then its row, so a refused file leaves the database as it was; otherwise, in one
   transaction, put the whole batch into ``stock``, mark it ``active``, audit and wake
   waiting orders. An import stopped by anything else (a driver error, Ctrl-C, a concurrent
   import) keeps its batch row as ``aborted``, for the record.

A crashed importer leaves a batch in ``importing`` whose ``updated_at`` stops moving;
:func:`cleanup_stale_imports` (run at the start of every import) aborts it and deletes its
codes. A live importer re-checks its batch at every chunk, so it stops if it was aborted.

This module must never put a plaintext code anywhere but ``codes.ciphertext`` (encrypted):
not in another column, an audit entry, an exception or a log line.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    and_,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError

from robot import audit
from robot.clock import DEFAULT_ZONE, NEVER, utcnow
from robot.db import bulk_insert, dialect_of
from robot.display import format_minute, zone_name
from robot.errors import CodeRejected, ImportRejected, UserError
from robot.importer import (
    BlankLine,
    Encoding,
    Format,
    ParsedLine,
    file_sha256,
    parse_file,
    reason_kind,
)
from robot.keys import check_keys
from robot.schema import batches, codes, deliveries, id_blocks, orders, pools, stock
from robot.states import BatchState, CodeState, DeliveryState, OrderState
from robot.vault import AAD_CURRENT, Vault, mask
from robot.writes import is_contention

POOL_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
STALE_IMPORT = timedelta(minutes=10)
EXPIRING_SOON = timedelta(days=7)
CODE_STATES = tuple(s.value for s in CodeState)  # plain strings: the CLI's choices
# Bound parameter lists: IN (...) lookups and row-by-row work go in groups of this size.
LOOKUP_GROUP = 1000
EXPIRE_GROUP = 1000
# Lines between two calls of an import's progress callback.
PROGRESS_EVERY = 2048


# --------------------------------------------------------------------------------------
# Pools


def create_pool(engine: Engine, name: str, low_stock: int | None = None, *, actor: str) -> int:
    """Create a pool; returns its id. Audited ``pool_create``."""
    if not POOL_NAME.fullmatch(name):
        raise UserError(
            f"bad pool name {name!r}: use 1-64 of a-z 0-9 . _ - starting with a letter or digit"
        )
    if low_stock is not None and low_stock < 0:
        raise UserError("the low-stock threshold cannot be negative")
    exists = UserError(f"pool '{name}' already exists")
    try:
        with engine.begin() as conn:
            if conn.execute(select(pools.c.id).where(pools.c.name == name)).first() is not None:
                raise exists
            pid = _new_id(conn.execute(
                insert(pools).values(name=name, low_stock=low_stock, created_at=utcnow())))
            audit.append(conn, actor=actor, action="pool_create", subject=f"pool:{name}",
                         details={"pool": name, "pool_id": pid, "low_stock": low_stock})
    except IntegrityError as exc:  # created by someone else between our check and insert
        raise exists from exc
    return pid


PREEMPT_TRIES = 5


class _YoungerHolds(Exception):
    def __init__(self, batch_ids: set[int]) -> None:
        super().__init__(sorted(batch_ids))
        self.batch_ids = batch_ids


def _freeable(conn: Connection, own: int, batch_ids: set[int]) -> set[int]:
    """Those of ``batch_ids`` whose rows give way to batch ``own``: younger batches still
    importing, and batches already aborted (their rows are about to be deleted)."""
    others = sorted(b for b in batch_ids if b != own)
    if not others:
        return set()
    return {int(r.id) for r in conn.execute(
        select(batches.c.id, batches.c.state).where(batches.c.id.in_(others)))
        if r.state == BatchState.ABORTED or (r.state == BatchState.IMPORTING and int(r.id) > own)}


def _pool_names_of(conn: Connection, ids: Iterable[int]) -> dict[int, str]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    return {int(r.id): str(r.name) for r in conn.execute(
        select(pools.c.id, pools.c.name).where(pools.c.id.in_(wanted)))}


def _new_id(result: CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    if key is None:  # only for statements that are not single-row INSERTs
        raise RuntimeError("the database did not report the new row's id")
    return int(key[0])


def pool_names(conn: Connection) -> set[str]:
    """The names of every pool."""
    return {str(n) for n in conn.execute(select(pools.c.name)).scalars()}


def pool_id(conn: Connection, name: str) -> int:
    """The id of pool ``name``; a :class:`UserError` with a suggestion if there is none."""
    row = conn.execute(select(pools.c.id).where(pools.c.name == name)).first()
    if row is not None:
        return int(row.id)
    close = difflib.get_close_matches(name, sorted(pool_names(conn)), n=1)
    hint = (f"did you mean '{close[0]}'?" if close
            else f"create it with `robot pools create {name}`")
    raise UserError(f"no pool '{name}'; {hint}")


@dataclass(frozen=True)
class PoolStats:
    """How many codes of a pool are in each state."""

    pool_id: int
    name: str
    available: int = 0  # in stock and not expired: what can be sold
    reserved: int = 0
    delivered: int = 0
    review: int = 0
    defective: int = 0  # delivered, reported bad by a buyer and replaced
    void: int = 0
    expired: int = 0  # retired as expired, plus stock rows past expiry not yet swept
    expiring_7d: int = 0  # available codes that expire within 7 days
    low_stock: int | None = None

    @property
    def is_low(self) -> bool:
        """At or below the pool's low-stock threshold (never, when it has none)."""
        return self.low_stock is not None and self.available <= self.low_stock

    def as_dict(self) -> dict[str, Any]:
        return {
            "pool": self.name, "available": self.available, "reserved": self.reserved,
            "delivered": self.delivered, "review": self.review, "defective": self.defective,
            "void": self.void,
            "expired": self.expired, "expiring_7d": self.expiring_7d,
            "low_stock": self.low_stock, "is_low": self.is_low,
        }


def pool_stats(engine: Engine, now: datetime) -> list[PoolStats]:
    """Counts per pool and state, by pool name, in four grouped queries."""
    soon = now + EXPIRING_SOON
    one, zero = literal(1), literal(0)
    with engine.connect() as conn:
        pool_rows = conn.execute(
            select(pools.c.id, pools.c.name, pools.c.low_stock).order_by(pools.c.name)
        ).all()
        in_stock = {
            int(r.pool_id): r
            for r in conn.execute(
                select(
                    stock.c.pool_id,
                    func.sum(case((stock.c.expires_at > now, one), else_=zero)).label("ok"),
                    func.sum(case((and_(stock.c.expires_at > now, stock.c.expires_at <= soon),
                                   one), else_=zero)).label("soon"),
                    func.sum(case((stock.c.expires_at <= now, one), else_=zero)).label("stale"),
                ).group_by(stock.c.pool_id)
            )
        }
        delivered: dict[tuple[int, str], int] = {
            (int(r.pool_id), str(r.state)): int(r.n)
            for r in conn.execute(
                select(deliveries.c.pool_id, deliveries.c.state, func.count().label("n"))
                .group_by(deliveries.c.pool_id, deliveries.c.state)
            )
        }
        retired: dict[tuple[int, str], int] = {
            (int(r.pool_id), str(r.retired)): int(r.n)
            for r in conn.execute(
                select(codes.c.pool_id, codes.c.retired, func.count().label("n"))
                .where(codes.c.retired.is_not(None))
                .group_by(codes.c.pool_id, codes.c.retired)
            )
        }
    result = []
    for p in pool_rows:
        pid = int(p.id)
        s = in_stock.get(pid)
        result.append(PoolStats(
            pool_id=pid,
            name=str(p.name),
            available=int(s.ok or 0) if s else 0,
            reserved=delivered.get((pid, DeliveryState.RESERVED), 0),
            delivered=delivered.get((pid, DeliveryState.DELIVERED), 0),
            review=delivered.get((pid, DeliveryState.REVIEW), 0),
            defective=delivered.get((pid, DeliveryState.DEFECTIVE), 0),
            void=retired.get((pid, CodeState.VOID), 0),
            expired=retired.get((pid, CodeState.EXPIRED), 0) + (int(s.stale or 0) if s else 0),
            expiring_7d=int(s.soon or 0) if s else 0,
            low_stock=None if p.low_stock is None else int(p.low_stock),
        ))
    return result


# --------------------------------------------------------------------------------------
# Import


@dataclass(frozen=True)
class ImportReport:
    """What an import did (or, for a dry run, would do)."""

    batch_id: int | None  # None for a dry run
    pool: str
    lines: int  # data lines read, blank ones included (a CSV header is not counted)
    imported: int
    rejected: list[tuple[int, str]]
    sha256: str
    dry_run: bool
    blank: int = 0  # blank lines skipped

    def as_dict(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id, "pool": self.pool, "lines": self.lines,
            "imported": self.imported,
            "rejected": [{"line": n, "reason": r} for n, r in self.rejected],
            "sha256": self.sha256, "dry_run": self.dry_run,
            "summary": import_summary(self.imported, self.blank, self.rejected),
        }


def import_summary(accepted: int, blank: int, rejected: Sequence[tuple[int, str]]
                   ) -> dict[str, Any]:
    """Accepted lines, blank lines skipped, rejected lines and their count by reason (most
    frequent first; ties in the order they first occur in the file)."""
    by_reason = Counter(reason_kind(r) for _, r in sorted(rejected))
    return {"accepted": accepted, "skipped_blank": blank, "rejected": len(rejected),
            "rejected_by_reason": dict(by_reason.most_common())}


# On PostgreSQL, ``fingerprint IN (...)`` was measured to turn into a scan while an import
# grows a table faster than ANALYZE follows (a 200k-line import took 3 minutes). One probe
# of the unique index per fingerprint is what we mean.
_PG_EXISTING = text(
    """
    SELECT c.fingerprint, c.pool_id, c.batch_id, c.source_line
    FROM unnest(CAST(:fps AS bytea[])) AS f(fp)
    JOIN LATERAL (
        SELECT fingerprint, pool_id, batch_id, source_line FROM codes
        WHERE fingerprint = f.fp ORDER BY dup LIMIT 1
    ) AS c ON true
    """
)


_CODE_COLUMNS = ("id", "pool_id", "batch_id", "source_line", "fingerprint", "key_id",
                 "ciphertext", "cost_cents", "expires_at", "created_at", "aad_version")
_ID_BLOCK = "codes"


def reserve_code_ids(engine: Engine, count: int) -> range:
    """Reserve ``count`` fresh code ids (consecutive) in their own short transaction.

    The ``id_blocks`` row is advanced by one UPDATE, which locks it until the commit, so
    concurrent importers (any process, any backend) get disjoint blocks; it never falls
    below the highest id in ``codes``, so rows written without a reservation cannot collide
    with a block either. Ids of a block that are never used (a crash, refused lines, a dry
    run) are a gap: never handed out again.
    """
    if count < 1:
        return range(0)
    for _ in range(3):
        try:
            with engine.begin() as conn:
                top = int(conn.execute(select(func.coalesce(func.max(codes.c.id), 0)))
                          .scalar_one())
                last = id_blocks.c.last_id
                moved = conn.execute(
                    update(id_blocks).where(id_blocks.c.name == _ID_BLOCK)
                    .values(last_id=case((last > top, last), else_=literal(top)) + count)
                ).rowcount
                if moved == 0:  # the first reservation of this database
                    conn.execute(insert(id_blocks).values(name=_ID_BLOCK, last_id=top + count))
                end = int(conn.execute(select(id_blocks.c.last_id)
                                       .where(id_blocks.c.name == _ID_BLOCK)).scalar_one())
        except IntegrityError:  # another importer created the row first: update it
            continue
        return range(end - count + 1, end + 1)
    raise RuntimeError("could not reserve code ids")  # pragma: no cover - needs 3 races


class _IdSupply:
    """Code ids for one import's chunks, a block ahead of the one being encrypted.

    The writer thread reserves the next block after storing a chunk, so the main thread
    rarely waits for the database (on SQLite, one connection: it would wait for the writer's
    whole chunk) before encrypting the next chunk.
    """

    def __init__(self, engine: Engine, block: int) -> None:
        self._engine = engine
        self._block = block
        self._ranges: deque[range] = deque()
        self._lock = threading.Lock()

    def prefetch(self) -> None:
        self.add(reserve_code_ids(self._engine, self._block))

    def add(self, ids: range) -> None:
        with self._lock:
            self._ranges.append(ids)

    def take(self, count: int, *, ahead: bool) -> list[int]:
        out: list[int] = []
        with self._lock:
            while len(out) < count and self._ranges:
                first = self._ranges[0]
                k = min(count - len(out), len(first))
                out.extend(first[:k])
                if k == len(first):
                    self._ranges.popleft()
                else:
                    self._ranges[0] = first[k:]
        short = count - len(out)
        if short:
            fresh = reserve_code_ids(self._engine, short + (self._block if ahead else 0))
            out.extend(fresh[:short])
            if len(fresh) > short:
                self.add(fresh[short:])
        return out


@dataclass
class _Import:
    """State of one running import (one chunk of parsed lines at a time)."""

    engine: Engine
    vault: Vault
    pool: str
    pool_id: int
    batch_id: int
    cost_cents: int | None
    now: datetime
    ids: _IdSupply
    chunk: int
    lines: int = 0
    imported: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)

    def seal(self, chunk: list[ParsedLine]) -> list[tuple[int, bytes, tuple[Any, ...]]]:
        """Rows ready for ``codes`` (``(line_no, fingerprint, row)``): fingerprinted, given
        reserved ids, encrypted, and checked against expiry and earlier lines of the chunk.
        No SQL except, rarely, an id reservation: this runs while the writer thread stores
        the previous chunk."""
        first_in_chunk: dict[bytes, int] = {}
        fresh: list[tuple[ParsedLine, bytes]] = []
        for item in chunk:
            if item.expires_at is not None and item.expires_at <= self.now:
                when = item.expires_text or f"{item.expires_at:%Y-%m-%d %H:%M} UTC"
                self.rejected.append((item.line_no, f"already expired: {when}"))
                continue
            fp = self.vault.fingerprint(item.secret)
            earlier = first_in_chunk.get(fp)
            if earlier is not None:
                self.rejected.append((item.line_no, f"duplicate in file (same as line {earlier})"))
                continue
            first_in_chunk[fp] = item.line_no
            fresh.append((item, fp))
        ids = self.ids.take(len(fresh), ahead=len(chunk) >= self.chunk)
        sealed = self.vault.encrypt_many(
            [(cid, item.secret, fp) for cid, (item, fp) in zip(ids, fresh, strict=True)],
            pool_id=self.pool_id)
        return [
            (item.line_no, fp,
             (cid, self.pool_id, self.batch_id, item.line_no, fp, key_id, blob,
              item.cost_cents if item.cost_cents is not None else self.cost_cents,
              item.expires_at, self.now, AAD_CURRENT))
            for cid, (item, fp), (key_id, blob) in zip(ids, fresh, sealed, strict=True)
        ]

    def store(self, sealed: list[tuple[int, bytes, tuple[Any, ...]]], *,
              more: bool = False) -> None:
        """Write sealed rows in one transaction, minus codes a pool already holds; then,
        if ``more`` chunks may follow, reserve the ids of a later chunk."""
        self._store(sealed)
        if more:
            self.ids.prefetch()

    def _store(self, sealed: list[tuple[int, bytes, tuple[Any, ...]]]) -> None:
        if not sealed:
            self._touch_only()
            return
        for _ in range(PREEMPT_TRIES):
            try:
                imported, rejected = self._store_once(sealed)
            except _YoungerHolds as held:
                self._preempt(held.batch_ids, [fp for _, fp, _ in sealed])
            except DBAPIError as exc:
                # A racing import's inserts of the same codes deadlocked with ours and the
                # server rolled this chunk back whole: store it again.
                if not is_contention(exc):
                    raise
            else:
                self.imported += imported
                self.rejected.extend(rejected)
                return
        raise UserError("other imports kept putting the same codes into pools at the same "
                        "time; nothing was imported. Run the import again.")

    def _store_once(self, sealed: list[tuple[int, bytes, tuple[Any, ...]]]
                    ) -> tuple[int, list[tuple[int, str]]]:
        """One transaction storing the chunk: (codes stored, the lines refused and why)."""
        try:
            with self.engine.begin() as conn:
                self.touch(conn)
                # Nearly always every code is new: insert them all, and look for the codes
                # the pool already holds only when the unique index says there are some.
                # (Any other error leaves the savepoint alone: the transaction is rolled back
                # as a whole, and SQLite may already have done so, on a full disk say.)
                savepoint = conn.begin_nested()
                try:
                    bulk_insert(conn, codes, _CODE_COLUMNS, [row for _, _, row in sealed])
                except IntegrityError:
                    savepoint.rollback()
                else:
                    savepoint.commit()
                    return len(sealed), []
                known = self._existing(conn, [fp for _, fp, _ in sealed])
                # Two imports racing the same codes: the older batch wins, whoever got a
                # code first. A younger batch still importing is preempted, and rows an
                # aborted batch has not deleted yet are freed (after rolling back here,
                # so we hold no lock while we wait for that batch's transaction).
                freeable = _freeable(conn, self.batch_id,
                                     {bid for _, bid, _ in known.values()})
                if freeable:
                    raise _YoungerHolds(freeable)
                names = _pool_names_of(conn, {pid for pid, _, _ in known.values()})
                new_rows = []
                rejected = []
                for line_no, fp, row in sealed:
                    hit = known.get(fp)
                    if hit is None:
                        new_rows.append(row)
                    else:
                        rejected.append((line_no, self._why_known(hit, names)))
                bulk_insert(conn, codes, _CODE_COLUMNS, new_rows)
            return len(new_rows), rejected
        except IntegrityError as exc:
            raise UserError(
                "another import put some of these codes into a pool at the same time; "
                "nothing was imported. Run the import again to see which lines are "
                "duplicates and which pool holds them."
            ) from exc

    def _preempt(self, batch_ids: set[int], fps: list[bytes]) -> None:
        """Abort younger imports that hold codes of this chunk and free those codes, in
        one short transaction. A batch that became active meanwhile keeps its codes (the
        retry then reports them as held by its pool). The preempted importer stops at its
        next chunk or at activation (its batch is no longer ``importing``)."""
        with self.engine.begin() as conn:
            for bid in sorted(b for b in batch_ids if b > self.batch_id):
                conn.execute(update(batches).where(batches.c.id == bid,
                                                   batches.c.state == BatchState.IMPORTING)
                             .values(state=BatchState.ABORTED, updated_at=utcnow()))
            # Only rows of batches aborted for good are deleted (never of an active one).
            aborted = sorted(int(i) for i in conn.execute(
                select(batches.c.id).where(batches.c.id.in_(sorted(batch_ids)),
                                           batches.c.state == BatchState.ABORTED)).scalars())
            for start in range(0, len(fps), LOOKUP_GROUP) if aborted else ():
                conn.execute(delete(codes).where(codes.c.batch_id.in_(aborted),
                                                 codes.c.fingerprint.in_(
                                                     fps[start:start + LOOKUP_GROUP])))

    def _why_known(self, hit: tuple[int, int, int], names: dict[int, str]) -> str:
        """The reason for a line whose code some pool already holds."""
        pid, bid, line = hit
        if bid == self.batch_id:
            return f"duplicate in file (same as line {line})"
        if pid == self.pool_id:
            return f"duplicate in pool (batch {bid} line {line})"
        return (f"already in pool '{names.get(pid, pid)}' (batch {bid} line {line}); one code "
                "is sold from one pool: move it with `robot codes move`")

    def _existing(self, conn: Connection,
                  fps: list[bytes]) -> dict[bytes, tuple[int, int, int]]:
        """``fingerprint -> (pool_id, batch_id, source_line)`` of codes any pool holds."""
        found: dict[bytes, tuple[int, int, int]] = {}
        postgres = dialect_of(conn) == "postgresql"
        for start in range(0, len(fps), LOOKUP_GROUP):
            group = fps[start:start + LOOKUP_GROUP]
            if postgres:
                rows = conn.execute(_PG_EXISTING, {"fps": group})
            else:
                rows = conn.execute(
                    select(codes.c.fingerprint, codes.c.pool_id, codes.c.batch_id,
                           codes.c.source_line)
                    .where(codes.c.fingerprint.in_(group)).order_by(codes.c.dup.desc()))
            for r in rows:
                found[bytes(r.fingerprint)] = (int(r.pool_id), int(r.batch_id),
                                               int(r.source_line))
        return found

    def touch(self, conn: Connection) -> None:
        """Mark the batch alive (a guarded update), or fail when it was aborted meanwhile."""
        # Proves the importer is alive, and that nobody aborted the batch meanwhile.
        touched = conn.execute(
            update(batches).where(batches.c.id == self.batch_id,
                                  batches.c.state == BatchState.IMPORTING)
            .values(updated_at=utcnow())
        ).rowcount
        if touched != 1:
            raise UserError(
                f"batch {self.batch_id} was aborted while importing: an import started "
                "earlier is putting some of the same codes into a pool (one code is sold "
                "from one pool), or this one made no progress for "
                f"{int(STALE_IMPORT.total_seconds() // 60)} minutes; nothing was imported"
            )

    def _touch_only(self) -> None:
        with self.engine.begin() as conn:
            self.touch(conn)


def import_codes(  # noqa: C901, PLR0915 - one all-or-nothing import: pipeline, rollback on any error, verdict
    engine: Engine,
    vault: Vault,
    pool: str,
    path: Path,
    *,
    actor: str,
    supplier: str | None = None,
    cost_cents: int | None = None,
    fmt: Format | None = None,
    encoding: Encoding | None = None,
    sheet: str | None = None,
    dry_run: bool = False,
    allow_same_file: bool = False,
    chunk: int = 20_000,
    progress: Callable[[int], None] | None = None,
    now: datetime | None = None,
    zone: tzinfo = DEFAULT_ZONE,
) -> ImportReport:
    """Import the codes of ``path`` into ``pool``: all of them, or none.

    Raises :class:`ImportRejected` listing every bad line (with its line number and reason),
    and :class:`UserError` for a file already imported into the pool, an unknown pool, or a
    concurrent import of the same codes. ``progress`` gets the number of lines read so far.
    Expiries written without an offset are local time in ``zone`` (the robot's
    ``timezone:``); a date alone is valid through that local day.
    Blank lines are skipped and counted; the refusal carries the summary (``accepted`` =
    lines that would have been imported).
    """
    if chunk < 1:
        raise ValueError("chunk must be positive")
    now = now or utcnow()
    # A wrong or old key file must stop us before a single code is written under it.
    check_keys(engine, vault)
    cleanup_stale_imports(engine, now=now)
    sha = file_sha256(path)
    pid, batch_id = _start_batch(engine, pool, path, sha, actor=actor, supplier=supplier,
                                 cost_cents=cost_cents, allow_same_file=allow_same_file, now=now,
                                 zone=zone)
    job = _Import(engine, vault, pool, pid, batch_id, cost_cents, now,
                  _IdSupply(engine, chunk), chunk)
    blank = 0
    try:
        # Parsing, fingerprints and encryption of one chunk (this thread) overlap the SQL of
        # the one before (the writer thread; the driver releases the GIL while it waits).
        # Chunks are stored one after another, in file order.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="import-writer") as writer:
            stored: Future[None] | None = None

            def hand_over(items: list[ParsedLine]) -> None:
                nonlocal stored
                sealed = job.seal(items)
                if stored is not None:
                    stored.result()  # the writer's error, if any, is raised here
                stored = writer.submit(job.store, sealed, more=len(items) >= chunk)

            pending: list[ParsedLine] = []
            for item in parse_file(path, fmt=fmt, encoding=encoding, sheet=sheet, zone=zone):
                job.lines += 1
                if isinstance(item, ParsedLine):
                    pending.append(item)
                elif isinstance(item, BlankLine):
                    blank += 1
                else:
                    job.rejected.append((item.line_no, item.reason))
                if len(pending) >= chunk:
                    hand_over(pending)
                    pending = []
                if progress is not None and not job.lines % PROGRESS_EVERY:
                    progress(job.lines)
            if pending:
                hand_over(pending)
            if stored is not None:
                stored.result()
        if progress is not None:
            progress(job.lines)
    except BaseException as exc:
        # Whatever stopped us (a bad file, the driver, Ctrl-C), take the batch's codes back
        # out; if even that fails, cleanup_stale_imports removes them later. A file refused
        # as a whole (empty, binary, bad header) leaves no batch row either.
        refused = dry_run or isinstance(exc, ImportRejected)
        _abort_batch(engine, batch_id, delete_row=refused, quiet=True)
        raise
    if job.rejected or dry_run:
        _abort_batch(engine, batch_id, delete_row=True)
        if job.rejected:
            raise ImportRejected(sorted(job.rejected),
                                 summary=import_summary(job.imported, blank, job.rejected))
        return ImportReport(None, pool, job.lines, job.imported, [], sha, dry_run=True,
                            blank=blank)
    try:
        _activate(engine, job, path=path, sha=sha, supplier=supplier, actor=actor)
    except BaseException:
        _abort_batch(engine, batch_id, delete_row=False, quiet=True)
        raise
    return ImportReport(batch_id, pool, job.lines, job.imported, [], sha, dry_run=False,
                        blank=blank)


def _start_batch(engine: Engine, pool: str, path: Path, sha: str, *, actor: str,
                 supplier: str | None, cost_cents: int | None, allow_same_file: bool,
                 now: datetime, zone: tzinfo = DEFAULT_ZONE) -> tuple[int, int]:
    """Check the file is new to the pool and open its batch: ``(pool_id, batch_id)``."""
    with engine.begin() as conn:
        pid = pool_id(conn, pool)
        same = conn.execute(
            select(batches.c.id, batches.c.state, batches.c.created_at)
            .where(batches.c.pool_id == pid, batches.c.file_sha256 == sha,
                   batches.c.state.in_((BatchState.ACTIVE, BatchState.IMPORTING)))
            .order_by(batches.c.id)
        ).first()
        if same is not None and same.state == BatchState.IMPORTING:
            raise UserError(
                f"this file is being imported into pool '{pool}' right now (batch {same.id}); "
                "an import that crashed is cleaned up "
                f"{int(STALE_IMPORT.total_seconds() // 60)} minutes after its last progress"
            )
        if same is not None and not allow_same_file:
            raise UserError(
                f"this file was already imported into pool '{pool}' as batch {same.id} "
                f"on {format_minute(same.created_at, zone=zone)} ({zone_name(zone)}); nothing "
                "was imported "
                "(--allow-same-file checks it line by line anyway)"
            )
        bid = _new_id(conn.execute(insert(batches).values(
            pool_id=pid, state=BatchState.IMPORTING, file_name=path.name[:255], file_sha256=sha,
            supplier=supplier, cost_cents=cost_cents, code_count=0, imported_by=actor[:64],
            created_at=now, updated_at=now,
        )))
        return pid, bid


def _activate(engine: Engine, job: _Import, *, path: Path, sha: str, supplier: str | None,
              actor: str) -> None:
    """Put the whole batch on sale in one transaction."""
    # Never later than the real clock: nothing already expired may go on sale.
    now = max(job.now, utcnow())
    with engine.begin() as conn:
        job.touch(conn)
        in_stock = conn.execute(
            insert(stock).from_select(
                ["code_id", "pool_id", "expires_at"],
                select(codes.c.id, codes.c.pool_id, func.coalesce(codes.c.expires_at, NEVER))
                .where(codes.c.batch_id == job.batch_id,
                       (codes.c.expires_at.is_(None)) | (codes.c.expires_at > now)),
            )
        ).rowcount
        # A code that expired between reading the file and now is kept, but never for sale.
        expired = conn.execute(
            update(codes).where(codes.c.batch_id == job.batch_id,
                                codes.c.expires_at.is_not(None), codes.c.expires_at <= now)
            .values(retired=CodeState.EXPIRED, retired_at=now)
        ).rowcount
        conn.execute(
            update(batches).where(batches.c.id == job.batch_id)
            .values(state=BatchState.ACTIVE, code_count=job.imported, updated_at=now)
        )
        audit.append(conn, actor=actor, action="import", subject=f"pool:{job.pool}", details={
            "pool": job.pool, "batch": job.batch_id, "count": job.imported,
            "in_stock": in_stock, "expired": expired, "sha256": sha, "file": path.name,
            "supplier": supplier,
        })
        conn.execute(update(orders).where(orders.c.state == OrderState.WAITING_STOCK)
                     .values(due_at=now))


def _abort_batch(engine: Engine, batch_id: int, *, delete_row: bool, quiet: bool = False) -> None:
    """Mark a batch aborted and delete its codes (and, if ``delete_row``, the batch row)."""
    try:
        with engine.begin() as conn:
            conn.execute(update(batches).where(batches.c.id == batch_id,
                                               batches.c.state == BatchState.IMPORTING)
                         .values(state=BatchState.ABORTED, updated_at=utcnow()))
        _delete_batch_codes(engine, batch_id)
        if delete_row:
            with engine.begin() as conn:
                conn.execute(delete(batches).where(batches.c.id == batch_id,
                                                   batches.c.state == BatchState.ABORTED))
    except Exception:
        if not quiet:
            raise
        # quiet: we are already propagating the error that matters; the stale-import
        # cleanup removes whatever is left.


def _delete_batch_codes(engine: Engine, batch_id: int) -> int:
    """Delete a (non-active) batch's codes in short transactions; returns how many."""
    total = 0
    while True:
        with engine.begin() as conn:
            ids = list(conn.execute(
                select(codes.c.id).where(codes.c.batch_id == batch_id).limit(5000)
            ).scalars())
            if not ids:
                return total
            # Such codes are never in stock, but a stock row must not outlive its code.
            conn.execute(delete(stock).where(stock.c.code_id.in_(ids)))
            total += conn.execute(delete(codes).where(codes.c.id.in_(ids))).rowcount


def cleanup_stale_imports(engine: Engine, older_than: timedelta = STALE_IMPORT, *,
                          now: datetime | None = None) -> int:
    """Abort imports whose importer stopped (no progress for ``older_than``) and delete the
    codes of every aborted batch. Returns how many batches were aborted."""
    cutoff = (now or utcnow()) - older_than
    aborted = 0
    with engine.connect() as conn:
        stale = list(conn.execute(
            select(batches.c.id).where(batches.c.state == BatchState.IMPORTING,
                                       batches.c.updated_at < cutoff)
        ).scalars())
    for bid in stale:
        with engine.begin() as conn:
            # Guarded: a live importer that just made progress keeps its batch.
            aborted += conn.execute(
                update(batches).where(batches.c.id == bid, batches.c.state == BatchState.IMPORTING,
                                      batches.c.updated_at < cutoff)
                .values(state=BatchState.ABORTED, updated_at=utcnow())
            ).rowcount
    with engine.connect() as conn:
        leftover = list(conn.execute(
            select(batches.c.id).where(
                batches.c.state == BatchState.ABORTED,
                select(codes.c.id).where(codes.c.batch_id == batches.c.id).exists(),
            )
        ).scalars())
    for bid in leftover:
        _delete_batch_codes(engine, int(bid))
    return aborted


# --------------------------------------------------------------------------------------
# Void and expiry


@dataclass(frozen=True)
class VoidReport:
    """Codes taken off sale, and codes that could not be (with the reason)."""

    voided: list[int]
    refused: list[tuple[int, str]]

    def as_dict(self) -> dict[str, Any]:
        return {"voided": self.voided,
                "refused": [{"code_id": c, "reason": r} for c, r in self.refused]}


def void_codes(engine: Engine, code_ids: Iterable[int], *, actor: str) -> VoidReport:
    """Withdraw unsold codes: only available ones (a stock row) can be voided.

    Audited once (``void``) with the ids, when at least one code was voided.
    """
    wanted = list(dict.fromkeys(int(c) for c in code_ids))
    voided: list[int] = []
    refused: list[tuple[int, str]] = []
    now = utcnow()
    with engine.begin() as conn:
        for cid in wanted:
            # Guarded delete: whoever removes the stock row owns the code. A claim that got
            # there first leaves rowcount 0 and we refuse.
            if conn.execute(delete(stock).where(stock.c.code_id == cid)).rowcount == 1:
                conn.execute(update(codes).where(codes.c.id == cid, codes.c.retired.is_(None))
                             .values(retired=CodeState.VOID, retired_at=now))
                voided.append(cid)
            else:
                refused.append((cid, _why_not_available(conn, cid)))
        if voided:
            pool_names = sorted({str(n) for n in conn.execute(
                select(pools.c.name).join(codes, codes.c.pool_id == pools.c.id)
                .where(codes.c.id.in_(voided[:LOOKUP_GROUP]))
            ).scalars()})
            subject = f"pool:{pool_names[0]}" if len(pool_names) == 1 else "codes"
            audit.append(conn, actor=actor, action="void", subject=subject,
                         details={"code_ids": voided, "count": len(voided), "pools": pool_names})
    return VoidReport(voided, refused)


@dataclass(frozen=True)
class MoveReport:
    """Codes moved to another pool, and codes that could not be (with the reason)."""

    pool: str
    moved: list[int]
    refused: list[tuple[int, str]]

    def as_dict(self) -> dict[str, Any]:
        return {"pool": self.pool, "moved": self.moved,
                "refused": [{"code_id": c, "reason": r} for c, r in self.refused]}


def available_in_batch(engine: Engine, batch_id: int, pool: str) -> list[int]:
    """The ids of the available codes of batch ``batch_id`` that are in pool ``pool``."""
    with engine.connect() as conn:
        pid = pool_id(conn, pool)
        if conn.execute(select(batches.c.id).where(batches.c.id == batch_id)).first() is None:
            raise UserError(f"no batch {batch_id}")
        return [int(i) for i in conn.execute(
            select(stock.c.code_id).join(codes, codes.c.id == stock.c.code_id)
            .where(codes.c.batch_id == batch_id, stock.c.pool_id == pid)
            .order_by(stock.c.code_id)).scalars()]


def move_codes(engine: Engine, vault: Vault, code_ids: Iterable[int], to_pool: str, *,
               actor: str, now: datetime | None = None) -> MoveReport:
    """Move available codes to pool ``to_pool``: the only way one code changes pools.

    Only available codes (in stock, not expired) move; each is decrypted, re-encrypted with
    the new pool in its associated data, and put into the new pool's stock, in groups of
    ``LOOKUP_GROUP`` per transaction. The stock row is taken with a guarded delete (as a
    claim or a void would), so a code sold meanwhile is refused, never moved. A code keeps
    its batch (where it came from). Audited once per group (``code_move``).
    """
    wanted = list(dict.fromkeys(int(c) for c in code_ids))
    moved: list[int] = []
    refused: list[tuple[int, str]] = []
    for start in range(0, len(wanted), LOOKUP_GROUP):
        group = wanted[start:start + LOOKUP_GROUP]
        with engine.begin() as conn:
            target = pool_id(conn, to_pool)
            done, no = _move_group(conn, vault, group, target, to_pool, now or utcnow())
            if done:
                names = _pool_names_of(conn, (p for _, p in done))
                audit.append(conn, actor=actor, action="code_move", subject=f"pool:{to_pool}",
                             details={"code_ids": [c for c, _ in done], "count": len(done),
                                      "to": to_pool,
                                      "from": sorted({names[p] for _, p in done})})
        moved += [c for c, _ in done]
        refused += no
    return MoveReport(to_pool, moved, refused)


def _move_group(conn: Connection, vault: Vault, group: list[int], target: int, to_pool: str,
                now: datetime) -> tuple[list[tuple[int, int]], list[tuple[int, str]]]:
    """Move one group in ``conn``'s transaction: ``([(code_id, from_pool_id)], refused)``."""
    rows = {int(r.id): r for r in conn.execute(
        select(codes.c.id, codes.c.pool_id, codes.c.fingerprint, codes.c.key_id,
               codes.c.ciphertext, codes.c.aad_version, stock.c.expires_at)
        .join(stock, stock.c.code_id == codes.c.id).where(codes.c.id.in_(group)))}
    done: list[tuple[int, int]] = []
    refused: list[tuple[int, str]] = []
    for cid in group:
        r = rows.get(cid)
        if r is None:
            refused.append((cid, _why_not_available(conn, cid)))
            continue
        if int(r.pool_id) == target:
            refused.append((cid, f"already in pool '{to_pool}'"))
            continue
        if r.expires_at <= now:
            refused.append((cid, "expired"))
            continue
        try:
            secret = vault.decrypt(str(r.key_id), bytes(r.ciphertext), code_id=cid,
                                   pool_id=int(r.pool_id), fingerprint=bytes(r.fingerprint),
                                   aad_version=r.aad_version)
        except CodeRejected as exc:
            refused.append((cid, exc.message))
            continue
        # Guarded: whoever removes the stock row owns the code (a claim may have won).
        if conn.execute(delete(stock).where(stock.c.code_id == cid)).rowcount != 1:
            refused.append((cid, _why_not_available(conn, cid)))
            continue
        kid, blob = vault.encrypt(secret, code_id=cid, pool_id=target,
                                  fingerprint=bytes(r.fingerprint))
        version = (codes.c.aad_version.is_(None) if r.aad_version is None
                   else codes.c.aad_version == r.aad_version)
        changed = conn.execute(
            update(codes).where(codes.c.id == cid, codes.c.pool_id == r.pool_id,
                                codes.c.key_id == r.key_id, version)
            .values(pool_id=target, key_id=kid, ciphertext=blob, aad_version=AAD_CURRENT)
        ).rowcount
        if changed != 1:  # re-encrypted by a key rotation since we read it: roll back
            raise UserError(f"code {cid} was re-encrypted by a key rotation while it was being "
                            "moved; nothing in this group moved: run the move again")
        conn.execute(insert(stock).values(code_id=cid, pool_id=target,
                                          expires_at=r.expires_at))
        done.append((cid, int(r.pool_id)))
    return done, refused


def _why_not_available(conn: Connection, code_id: int) -> str:
    row = conn.execute(
        select(codes.c.retired, batches.c.state.label("batch_state"),
               deliveries.c.state, deliveries.c.order_id)
        .select_from(codes.join(batches, batches.c.id == codes.c.batch_id)
                     .outerjoin(deliveries, deliveries.c.code_id == codes.c.id))
        .where(codes.c.id == code_id)
    ).first()
    if row is None:
        return "no such code"
    if row.state is not None:
        return f"{row.state} (order {row.order_id})"
    if row.retired is not None:
        return f"already {row.retired}"
    if row.batch_state != BatchState.ACTIVE:
        return f"its batch is {row.batch_state}"
    return "not in stock"


def expire_codes(engine: Engine, now: datetime) -> int:
    """Take codes whose expiry has passed out of stock (``retired='expired'``).

    Works pool by pool in short transactions of at most ``EXPIRE_GROUP`` codes; the rows are
    locked (``SKIP LOCKED`` on servers) so a concurrent claim is neither blocked nor doubled.
    Audited once per run (``expire``, counts per pool), in the run's last transaction.
    """
    with engine.connect() as conn:
        pool_rows = [(int(r.id), str(r.name)) for r in conn.execute(
            select(pools.c.id, pools.c.name).order_by(pools.c.id))]
    server = dialect_of(engine) != "sqlite"
    counts: Counter[str] = Counter()
    queue = list(pool_rows)
    while True:
        with engine.begin() as conn:
            ids: list[int] = []
            while queue and not ids:
                pid, name = queue[0]
                stmt = (select(stock.c.code_id)
                        .where(stock.c.pool_id == pid, stock.c.expires_at <= now)
                        .order_by(stock.c.expires_at, stock.c.code_id).limit(EXPIRE_GROUP))
                if server:
                    stmt = stmt.with_for_update(skip_locked=True)
                ids = [int(i) for i in conn.execute(stmt).scalars()]
                if len(ids) < EXPIRE_GROUP:
                    queue.pop(0)  # this pool is done after this group
            if ids:
                deleted = conn.execute(delete(stock).where(stock.c.code_id.in_(ids))).rowcount
                if deleted != len(ids):  # rows we hold locks on cannot vanish
                    raise RuntimeError(f"expiry deleted {deleted} of {len(ids)} locked stock rows")
                conn.execute(update(codes).where(codes.c.id.in_(ids), codes.c.retired.is_(None))
                             .values(retired=CodeState.EXPIRED, retired_at=now))
                counts[name] += len(ids)
            if not queue:
                if counts:
                    audit.append(conn, actor="robot", action="expire", subject="stock",
                                 details={"expired": dict(sorted(counts.items())),
                                          "count": sum(counts.values()),
                                          "now": now.isoformat()})
                return sum(counts.values())


# --------------------------------------------------------------------------------------
# Listing


@dataclass(frozen=True)
class CodeRow:
    """One code for display: masked, never plaintext."""

    id: int
    masked: str
    state: str
    batch_id: int
    source_line: int
    expires_at: datetime | None
    cost_cents: int | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "code": self.masked, "state": self.state, "batch": self.batch_id,
            "line": self.source_line,
            "expires_at": self.expires_at,
            "cost_cents": self.cost_cents,
        }


def list_codes(engine: Engine, vault: Vault, pool: str, *, state: str | None = None,
               limit: int = 50) -> list[CodeRow]:
    """The newest codes of a pool (optionally in one state), masked."""
    if state is not None and state not in CODE_STATES:
        raise UserError(f"unknown state {state!r}; use one of: {', '.join(CODE_STATES)}")
    if limit < 1:
        raise UserError("--limit must be at least 1")
    query = (
        select(codes.c.id, codes.c.pool_id, codes.c.batch_id, codes.c.source_line,
               codes.c.fingerprint, codes.c.key_id, codes.c.ciphertext, codes.c.cost_cents,
               codes.c.expires_at, codes.c.retired, codes.c.aad_version,
               stock.c.code_id.label("in_stock"),
               deliveries.c.state.label("delivery"), batches.c.state.label("batch_state"))
        .select_from(codes.join(batches, batches.c.id == codes.c.batch_id)
                     .outerjoin(stock, stock.c.code_id == codes.c.id)
                     .outerjoin(deliveries, deliveries.c.code_id == codes.c.id))
        .order_by(codes.c.id.desc()).limit(limit)
    )
    with engine.connect() as conn:
        pid = pool_id(conn, pool)
        query = query.where(codes.c.pool_id == pid)
        if state == CodeState.AVAILABLE:
            query = query.where(stock.c.code_id.is_not(None))
        elif state in (CodeState.RESERVED, CodeState.DELIVERED, CodeState.REVIEW,
                       CodeState.DEFECTIVE):
            query = query.where(deliveries.c.state == state)
        elif state in (CodeState.VOID, CodeState.EXPIRED):
            query = query.where(codes.c.retired == state)
        rows = conn.execute(query).all()
    out = []
    for r in rows:
        try:
            shown = mask(vault.decrypt(str(r.key_id), bytes(r.ciphertext), code_id=int(r.id),
                                        pool_id=int(r.pool_id), fingerprint=bytes(r.fingerprint),
                                        aad_version=r.aad_version))
        except CodeRejected:
            shown = "(altered: fails authentication)"
        out.append(CodeRow(
            id=int(r.id), masked=shown, state=code_state(r), batch_id=int(r.batch_id),
            source_line=int(r.source_line), expires_at=r.expires_at,
            cost_cents=None if r.cost_cents is None else int(r.cost_cents),
        ))
    return out


def code_state(r: Any) -> str:
    """A code's state from a row with ``in_stock``, ``delivery``, ``retired`` and
    ``batch_state`` (the stock row, the delivery's state, the code's own retirement, its batch)."""
    if r.in_stock is not None:
        return CodeState.AVAILABLE
    if r.delivery is not None:
        return str(r.delivery)
    if r.retired is not None:
        return str(r.retired)
    return str(r.batch_state) if r.batch_state != BatchState.ACTIVE else "unknown"



# --------------------------------------------------------------------------- bought codes


@dataclass(frozen=True)
class SealedCode:
    """A code bought from a supplier, encrypted for its row and not stored yet."""

    code_id: int
    fingerprint: bytes
    key_id: str
    ciphertext: bytes
    expires_at: datetime | None


def seal_bought(engine: Engine, vault: Vault, pool: int,
                secrets_: Sequence[tuple[str, datetime | None]]) -> list[SealedCode]:
    """Reserve row ids (their own short transaction) and encrypt codes a supplier sold us,
    bound to those rows of pool ``pool``. The plaintext goes no further than here."""
    ids = reserve_code_ids(engine, len(secrets_))
    fps = [vault.fingerprint(secret) for secret, _exp in secrets_]
    sealed = vault.encrypt_many([(cid, secret, fp) for cid, (secret, _e), fp
                                 in zip(ids, secrets_, fps, strict=True)], pool_id=pool)
    return [SealedCode(cid, fp, kid, blob, exp) for cid, fp, (kid, blob), (_s, exp)
            in zip(ids, fps, sealed, secrets_, strict=True)]


def add_bought(conn: Connection, pool: int, sealed: Sequence[SealedCode], *, supplier: str,
               label: str, unit_cost_cents: int | None, actor: str, now: datetime) -> list[int]:
    """Store bought codes in the caller's transaction: an active batch of their own (the
    supplier, the purchase's key as its label, the cost) and their rows; not in stock (the
    caller hands them to the order that bought them). Their ids, in order."""
    _bid, ids = _bought_batch(conn, pool, sealed, supplier=supplier, label=label,
                              unit_cost_cents=unit_cost_cents, actor=actor, now=now)
    return ids


def stock_bought(conn: Connection, pool: int, sealed: Sequence[SealedCode], *, supplier: str,
                 label: str, unit_cost_cents: int | None, actor: str,
                 now: datetime) -> tuple[int, int]:
    """Store codes bought for a pool (restocking) in the caller's transaction, as a batch of
    their own, and put them on sale (an already expired one is kept, retired); orders waiting
    for stock are due again. ``(batch id, codes put in stock)``."""
    bid, ids = _bought_batch(conn, pool, sealed, supplier=supplier, label=label,
                             unit_cost_cents=unit_cost_cents, actor=actor, now=now)
    fresh = [(cid, s.expires_at) for cid, s in zip(ids, sealed, strict=True)
             if s.expires_at is None or s.expires_at > now]
    if fresh:
        conn.execute(insert(stock), [{"code_id": cid, "pool_id": pool,
                                      "expires_at": exp or NEVER} for cid, exp in fresh])
    gone = [cid for cid, s in zip(ids, sealed, strict=True)
            if s.expires_at is not None and s.expires_at <= now]
    if gone:
        conn.execute(update(codes).where(codes.c.id.in_(gone))
                     .values(retired=CodeState.EXPIRED, retired_at=now))
    conn.execute(update(orders).where(orders.c.state == OrderState.WAITING_STOCK)
                 .values(due_at=now))
    return bid, len(fresh)


def _bought_batch(conn: Connection, pool: int, sealed: Sequence[SealedCode], *, supplier: str,
                  label: str, unit_cost_cents: int | None, actor: str,
                  now: datetime) -> tuple[int, list[int]]:
    bid = _new_id(conn.execute(insert(batches).values(
        pool_id=pool, state=BatchState.ACTIVE, file_name=label[:255],
        file_sha256=hashlib.sha256(label.encode()).hexdigest(), supplier=supplier[:128],
        cost_cents=unit_cost_cents, code_count=len(sealed), imported_by=actor[:64],
        created_at=now, updated_at=now)))
    if sealed:
        conn.execute(insert(codes), [
            {"id": s.code_id, "pool_id": pool, "batch_id": bid, "source_line": i + 1,
             "fingerprint": s.fingerprint, "key_id": s.key_id, "ciphertext": s.ciphertext,
             "cost_cents": unit_cost_cents, "expires_at": s.expires_at, "created_at": now,
             "aad_version": AAD_CURRENT}
            for i, s in enumerate(sealed)])
    return bid, [s.code_id for s in sealed]


def manual_import_cost(conn: Connection, *, since: datetime, until: datetime
                       ) -> dict[int, tuple[int, int | None]]:
    """Codes imported by hand (``robot pools import``, not bought by the robot) in
    ``[since, until)``, per pool id: how many, and their average cost per code in cents
    (None: no costs known). What restocking's cost per code is compared with."""
    bought = or_(batches.c.file_name.like("restock %"), batches.c.file_name.like("supplier %"))
    rows = conn.execute(
        select(codes.c.pool_id, func.count(codes.c.id).label("n"),
               func.count(codes.c.cost_cents).label("nc"),
               func.sum(codes.c.cost_cents).label("cost"))
        .select_from(codes.join(batches, batches.c.id == codes.c.batch_id))
        .where(batches.c.state == BatchState.ACTIVE, ~bought,
               codes.c.created_at >= since, codes.c.created_at < until)
        .group_by(codes.c.pool_id))
    return {int(r.pool_id): (int(r.n or 0), round(int(r.cost or 0) / int(r.nc))
                             if r.nc else None) for r in rows}
