"""Pools, imports, stock figures, voids and expiry, on every backend; and the pool commands."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from rich.console import Console
from sqlalchemy import Engine, LargeBinary, String, Text, func, insert, select, update
from sqlalchemy.exc import OperationalError

import robot.cli
from robot import pools as P
from robot.cli import cmd_pools
from robot.clock import DEFAULT_ZONE, NEVER, utcnow
from robot.display import format_time
from robot.errors import CodeRejected, ImportRejected, UserError
from robot.schema import audit_log, batches, codes, deliveries, metadata, orders, stock
from robot.vault import Vault, join_pair

ACTOR = "test:pools"


def code(i: int, tag: str = "Q") -> str:
    """A synthetic code: nothing like a real card."""
    return f"TEST-{tag}-{i:06d}-ZXWV"


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def txt(tmp_path: Path, name: str, secrets: list[str]) -> Path:
    return write(tmp_path, name, "".join(f"{s}\n" for s in secrets))


def count(engine: Engine, table: Any, *where: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def available(engine: Engine, pool: str) -> int:
    """Codes of ``pool`` for sale now, as `robot pools status` counts them."""
    return next(s.available for s in P.pool_stats(engine, utcnow()) if s.name == pool)


def batch_states(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        query = select(batches.c.state).order_by(batches.c.id)
        return [str(s) for s in conn.execute(query).scalars()]


def plaintexts(engine: Engine, vault: Vault, *where: Any) -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(select(codes).where(*where).order_by(codes.c.id)).all()
    return [vault.decrypt(r.key_id, bytes(r.ciphertext), code_id=r.id, pool_id=r.pool_id,
                          fingerprint=bytes(r.fingerprint), aad_version=r.aad_version)
            for r in rows]


def audit_entries(engine: Engine, action: str) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(select(audit_log).where(audit_log.c.action == action)
                            .order_by(audit_log.c.at, audit_log.c.chain,
                                      audit_log.c.seq)).all()  # oldest first


def new_id(result: Any) -> int:
    assert result.inserted_primary_key is not None
    return int(result.inserted_primary_key[0])


def make_order(engine: Engine, state: str, due_at: datetime, n: int = 1) -> int:
    now = utcnow()
    with engine.begin() as conn:
        return new_id(conn.execute(insert(orders).values(
            shop="shop-a", platform="memory", platform_order_id=f"P{n}", state=state,
            platform_status="paid", total_cents=100, currency="CNY", extra="{}",
            received_at=now, updated_at=now, due_at=due_at,
        )))


def take(engine: Engine, code_id: int, order_id: int, state: str, n: int) -> None:
    """What a claim does to one code: out of stock, into deliveries."""
    with engine.begin() as conn:
        pool = conn.execute(select(stock.c.pool_id).where(stock.c.code_id == code_id)).scalar_one()
        conn.execute(stock.delete().where(stock.c.code_id == code_id))
        conn.execute(insert(deliveries).values(order_id=order_id, line_no=1, n=n, code_id=code_id,
                                               pool_id=pool, state=state, created_at=utcnow()))


def assert_nothing_imported(engine: Engine) -> None:
    assert count(engine, codes) == 0
    assert count(engine, stock) == 0
    assert "active" not in batch_states(engine)


@pytest.fixture
def pool(engine: Engine) -> str:
    P.create_pool(engine, "youku-vip", low_stock=3, actor=ACTOR)
    return "youku-vip"


# ---------------------------------------------------------------------------- pools


def test_create_pool_is_audited_and_unique(engine: Engine) -> None:
    """A pool is created once (audited); the same name again is a clear error."""
    pid = P.create_pool(engine, "iqiyi.month", 10, actor=ACTOR)
    with engine.connect() as conn:
        assert P.pool_id(conn, "iqiyi.month") == pid
    [entry] = audit_entries(engine, "pool_create")
    assert entry.subject == "pool:iqiyi.month"
    with pytest.raises(UserError, match=r"pool 'iqiyi\.month' already exists"):
        P.create_pool(engine, "iqiyi.month", actor=ACTOR)


@pytest.mark.parametrize("name", ["", "Youku", "-x", "a b", "x" * 65, "卡"])
def test_create_pool_refuses_bad_names(engine: Engine, name: str) -> None:
    """Pool names are 1-64 of a-z 0-9 . _ - starting with a letter or digit."""
    with pytest.raises(UserError, match="bad pool name"):
        P.create_pool(engine, name, actor=ACTOR)


def test_unknown_pool_suggests_a_near_name(engine: Engine, pool: str) -> None:
    """A misspelt pool name gets a did-you-mean; a new one gets the create command."""
    with engine.connect() as conn:
        with pytest.raises(UserError, match="did you mean 'youku-vip'"):
            P.pool_id(conn, "youku-vp")
        with pytest.raises(UserError, match="robot pools create tencent"):
            P.pool_id(conn, "tencent")


# ---------------------------------------------------------------------------- import


def test_import_puts_every_code_on_sale(engine: Engine, vault: Vault, pool: str,
                                        tmp_path: Path) -> None:
    """A good file becomes one active batch whose codes are all in stock, encrypted."""
    secrets = [code(i) for i in range(1, 11)]
    path = txt(tmp_path, "codes.txt", secrets)
    report = P.import_codes(engine, vault, pool, path, actor=ACTOR, supplier="acme",
                            cost_cents=850)
    assert (report.lines, report.imported, report.rejected, report.dry_run) == (10, 10, [], False)
    assert report.batch_id is not None
    with engine.connect() as conn:
        batch = conn.execute(select(batches).where(batches.c.id == report.batch_id)).one()
        expiries = set(conn.execute(select(stock.c.expires_at)).scalars())
        costs = set(conn.execute(select(codes.c.cost_cents)).scalars())
        lines = list(conn.execute(select(codes.c.source_line).order_by(codes.c.id)).scalars())
    assert (batch.state, batch.code_count, batch.supplier, batch.file_name) == (
        "active", 10, "acme", "codes.txt")
    assert batch.file_sha256 == report.sha256
    assert count(engine, stock) == 10
    assert expiries == {NEVER}
    assert costs == {850}
    assert lines == list(range(1, 11))
    assert plaintexts(engine, vault) == secrets
    [entry] = audit_entries(engine, "import")
    details = json.loads(entry.details)
    assert details["count"] == 10
    assert details["batch"] == report.batch_id
    assert details["sha256"] == report.sha256
    assert details["supplier"] == "acme"


def test_import_wakes_orders_waiting_for_stock(engine: Engine, vault: Vault, pool: str,
                                               tmp_path: Path) -> None:
    """Orders waiting for stock become due now; other orders keep their time."""
    later = utcnow() + timedelta(hours=1)
    waiting = make_order(engine, "waiting_stock", later, 1)
    held = make_order(engine, "held", later, 2)
    P.import_codes(engine, vault, pool, txt(tmp_path, "a.txt", [code(1)]), actor=ACTOR)
    with engine.connect() as conn:
        due = dict(conn.execute(select(orders.c.id, orders.c.due_at)).all())
    assert due[waiting] < later - timedelta(minutes=30)
    assert due[held] == later


LONG = "L" * 513


# Encodings, huge lines, duplicates and dates are in the bad-input catalogue
# (tests/badinput/test_imports.py).
@pytest.mark.parametrize(("name", "content", "expected"), [
    ("a.csv", f"code,expires_at\n{code(1)},2030-02-30\n", [(2, "bad date: 2030-02-30")]),
    ("a.txt", f"{code(1)}\nAB\x00CD\n", [(2, "control character")]),
    ("a.csv", f"code,cost\n{code(1)},1\n{code(2)},-2.5\n", [(3, "bad cost: -2.5")]),
    ("a.csv", f"code,cost\n{code(1)},1,2\n", [(2, "wrong number of columns")]),
], ids=["bad-date", "control", "bad-cost", "columns"])
def test_each_bad_line_is_reported_and_nothing_imported(
    engine: Engine, vault: Vault, pool: str, tmp_path: Path, name: str, content: str | bytes,
    expected: list[tuple[int, str]],
) -> None:
    """A bad line is reported with its number and reason, and no code of the file is kept."""
    with pytest.raises(ImportRejected) as info:
        P.import_codes(engine, vault, pool, write(tmp_path, name, content), actor=ACTOR)
    assert info.value.rejects == expected
    assert_nothing_imported(engine)
    assert batch_states(engine) == []  # a refused file leaves no batch row
    assert audit_entries(engine, "import") == []


def test_bad_header_refuses_the_file_whole(engine: Engine, vault: Vault, pool: str,
                                          tmp_path: Path) -> None:
    """A CSV with a bad header is refused at line 1 and leaves no batch (empty and binary files
    are in tests/badinput/test_imports.py)."""
    with pytest.raises(ImportRejected) as info:
        P.import_codes(engine, vault, pool, write(tmp_path, "a.csv", "code,colour\nX,red\n"),
                       actor=ACTOR)
    [(line, why)] = info.value.rejects
    assert line == 1
    assert why.startswith("bad header")
    assert_nothing_imported(engine)
    assert batch_states(engine) == []


def test_every_rejected_line_is_reported_in_order(engine: Engine, vault: Vault, pool: str,
                                                  tmp_path: Path) -> None:
    """All bad lines of a file come back at once, sorted by line, across chunks."""
    secrets = [code(i) for i in range(1, 8)]
    content = [secrets[0], "", secrets[1], secrets[0], LONG, secrets[2], secrets[1], secrets[3]]
    with pytest.raises(ImportRejected) as info:
        P.import_codes(engine, vault, pool, txt(tmp_path, "a.txt", content), actor=ACTOR, chunk=2)
    assert info.value.rejects == [
        (4, "duplicate in file (same as line 1)"),
        (5, "too long (max 512 characters)"),
        (7, "duplicate in file (same as line 3)"),
    ]
    assert_nothing_imported(engine)


@pytest.mark.parametrize("chunk", [20_000, 2])
def test_a_code_held_by_another_pool_is_refused_naming_line_and_pool(
        engine: Engine, vault: Vault, pool: str, tmp_path: Path, chunk: int) -> None:
    """One code is in one pool: importing a code some other pool holds (sold or not) is
    refused with its line number and that pool's name, codes never shown; nothing of the
    file is imported (whole chunks and chunks split around the duplicates alike)."""
    P.create_pool(engine, "other", actor=ACTOR)
    first = P.import_codes(engine, vault, pool, txt(tmp_path, "a.txt", [code(1), code(2)]),
                           actor=ACTOR)
    path = txt(tmp_path, "b.txt", [code(3), code(1), code(4), code(2)])
    with pytest.raises(ImportRejected) as info:
        P.import_codes(engine, vault, "other", path, actor=ACTOR, chunk=chunk)
    assert info.value.rejects == [
        (2, f"already in pool '{pool}' (batch {first.batch_id} line 1); one code is sold "
            "from one pool: move it with `robot codes move`"),
        (4, f"already in pool '{pool}' (batch {first.batch_id} line 2); one code is sold "
            "from one pool: move it with `robot codes move`"),
    ]
    assert not any(code(i) in str(info.value.rejects) for i in range(1, 5))
    assert count(engine, codes) == 2
    assert available(engine, "other") == 0
    # The same file again into the pool that holds it: the pool's own duplicates.
    with pytest.raises(ImportRejected) as again:
        P.import_codes(engine, vault, pool, path, actor=ACTOR, allow_same_file=True)
    assert [n for n, _ in again.value.rejects] == [2, 4]
    assert all(r.startswith("duplicate in pool (batch") for _, r in again.value.rejects)


def _race(engine: Engine, vault: Vault, files: dict[str, Path]) -> dict[str, str]:
    """Import each file into the pool it is keyed by, all at once (a barrier releases the
    threads together); what became of each."""
    start = threading.Barrier(len(files))
    outcome: dict[str, str] = {}

    def importer(name: str) -> None:
        start.wait()
        try:
            P.import_codes(engine, vault, name, files[name], actor=ACTOR, chunk=30)
            outcome[name] = "imported"
        except (ImportRejected, UserError) as exc:
            outcome[name] = type(exc).__name__

    threads = [threading.Thread(target=importer, args=(n,)) for n in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcome


def test_concurrent_imports_of_one_code_into_two_pools_one_wins(
        engine: Engine, vault: Vault, pool: str, tmp_path: Path) -> None:
    """Two importers racing the same codes into two pools: exactly one import succeeds, the
    other is refused whole; every code is in exactly one row and sold from one pool."""
    P.create_pool(engine, "other", actor=ACTOR)
    for round_ in range(4):
        secrets = [code(i, f"R{round_}") for i in range(120)]
        files = {name: txt(tmp_path, f"{name}-{round_}.txt", secrets) for name in (pool, "other")}
        outcome = _race(engine, vault, files)
        assert list(outcome.values()).count("imported") == 1, outcome
        with engine.connect() as conn:
            fps = conn.execute(select(codes.c.fingerprint, func.count())
                               .where(codes.c.fingerprint.in_(
                                   [vault.fingerprint(s) for s in secrets]))
                               .group_by(codes.c.fingerprint)).all()
        assert len(fps) == 120 and all(n == 1 for _, n in fps)
    assert count(engine, stock) == 4 * 120


def _deadlock() -> OperationalError:
    """What SQLAlchemy raises when MariaDB picks this transaction as a deadlock's victim."""
    return OperationalError("INSERT INTO codes ...", {}, Exception(1213, "Deadlock found"))


@pytest.mark.parametrize("known", [0, 5])
def test_a_chunk_rolled_back_by_a_deadlock_is_stored_again_once(
        engine: Engine, vault: Vault, pool: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, known: int) -> None:
    """Racing imports of the same codes can deadlock on the unique index (MariaDB): the
    server rolls the victim's chunk back whole and the import stores it again — every code
    once, each refused line reported once. ``known``: codes the pool already holds (the
    deadlock then strikes the insert of the chunk's other codes)."""
    secrets = [code(i, "DL") for i in range(40)]
    if known:
        P.import_codes(engine, vault, pool, txt(tmp_path, "first.txt", secrets[:known]),
                       actor=ACTOR)
    real = P.bulk_insert
    calls: list[int] = []

    def flaky(conn: Any, table: Any, columns: Any, rows: list[Any]) -> Any:
        calls.append(len(rows))
        if len(calls) == (2 if known else 1):
            real(conn, table, columns, rows)  # the rows went in; then the server gives up
            raise _deadlock()
        return real(conn, table, columns, rows)

    monkeypatch.setattr(P, "bulk_insert", flaky)
    again = txt(tmp_path, "again.txt", secrets)
    if not known:
        job = P.import_codes(engine, vault, pool, again, actor=ACTOR, chunk=40)
        assert calls[:2] == [40, 40] and job.imported == 40
        assert count(engine, codes) == 40 and count(engine, stock) == 40
        return
    with pytest.raises(ImportRejected) as refused:
        P.import_codes(engine, vault, pool, again, actor=ACTOR, chunk=40)
    assert calls[:4] == [40, 35, 40, 35]  # the chunk, its new codes; and again
    assert [n for n, _ in refused.value.rejects] == list(range(1, known + 1))
    assert count(engine, codes) == known


def test_an_error_other_than_contention_fails_the_import(
        engine: Engine, vault: Vault, pool: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a deadlock or a serialization failure is retried; any other database error
    fails the import (nothing stored)."""
    def broken(_job: Any, _sealed: list[Any]) -> Any:
        raise OperationalError("INSERT INTO codes ...", {}, Exception(1021, "Disk full"))

    monkeypatch.setattr(P._Import, "_store_once", broken)
    with pytest.raises(OperationalError):
        P.import_codes(engine, vault, pool, txt(tmp_path, "x.txt", [code(1, "DX")]),
                       actor=ACTOR)
    assert count(engine, codes) == 0


@pytest.mark.parametrize("rival_state", ["importing", "aborted"])
def test_an_older_import_preempts_a_younger_one_holding_its_codes(
        engine: Engine, vault: Vault, pool: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, rival_state: str) -> None:
    """Rows of a younger import still running (or of an aborted one) give way: that batch is
    aborted, its copies of our codes deleted, and our import goes through whole; the rival
    importer then stops at its next step."""
    P.create_pool(engine, "other", actor=ACTOR)
    secrets = [code(i) for i in range(6)]
    sealed_once = P._Import.seal
    rival: list[int] = []

    def rival_first(job: Any, chunk: list[Any]) -> Any:
        # Our batch exists; a younger import into another pool stores one of our codes.
        if not rival:
            now = utcnow()
            (cid,) = P.reserve_code_ids(engine, 1)
            fp = vault.fingerprint(secrets[3])
            with engine.begin() as conn:
                other = P.pool_id(conn, "other")
                bid = new_id(conn.execute(insert(batches).values(
                    pool_id=other, state=rival_state, file_name="r.txt",
                    file_sha256="4" * 64, code_count=0, imported_by="rival",
                    created_at=now, updated_at=now)))
                kid, blob = vault.encrypt(secrets[3], code_id=cid, pool_id=other,
                                          fingerprint=fp)
                conn.execute(insert(codes).values(id=cid, pool_id=other, batch_id=bid,
                                                  source_line=1, fingerprint=fp, key_id=kid,
                                                  ciphertext=blob, created_at=now,
                                                  aad_version=2))
            rival.append(bid)
        return sealed_once(job, chunk)

    monkeypatch.setattr(P._Import, "seal", rival_first)
    report = P.import_codes(engine, vault, pool, txt(tmp_path, "a.txt", secrets), actor=ACTOR)
    assert report.imported == 6
    assert rival[0] > (report.batch_id or 0) or rival_state == "aborted"
    assert batch_states(engine) == ["active", "aborted"]
    assert count(engine, codes, codes.c.batch_id == rival[0]) == 0
    assert sorted(plaintexts(engine, vault)) == sorted(secrets)
    assert available(engine, pool) == 6


def test_move_codes_between_pools(engine: Engine, vault: Vault, pool: str,
                                  tmp_path: Path) -> None:
    """`move_codes` moves available codes only: re-encrypted for the new pool (they decrypt
    there, and the old pool's id no longer opens them), in the new pool's stock, audited;
    reserved, void, unknown or already-there codes are refused with the reason. Importing a
    moved code into its old pool is then refused naming the new one."""
    P.create_pool(engine, "other", actor=ACTOR)
    P.import_codes(engine, vault, pool, txt(tmp_path, "a.txt", [code(i) for i in range(5)]),
                   actor=ACTOR)
    with engine.connect() as conn:
        ids = [int(i) for i in conn.execute(select(codes.c.id).order_by(codes.c.id)).scalars()]
        old_pid, new_pid = P.pool_id(conn, pool), P.pool_id(conn, "other")
    take(engine, ids[0], make_order(engine, "allocated", utcnow()), "reserved", 1)
    P.void_codes(engine, [ids[1]], actor=ACTOR)
    report = P.move_codes(engine, vault, [ids[2], ids[3], ids[0], ids[1], 999_999], "other",
                          actor=ACTOR)
    assert report.moved == [ids[2], ids[3]]
    assert dict(report.refused) == {ids[0]: "reserved (order 1)", ids[1]: "already void",
                                    999_999: "no such code"}
    again = P.move_codes(engine, vault, [ids[2]], "other", actor=ACTOR)
    assert again.refused == [(ids[2], "already in pool 'other'")]
    assert available(engine, "other") == 2
    assert available(engine, pool) == 1
    assert plaintexts(engine, vault, codes.c.pool_id == new_pid) == [code(2), code(3)]
    with engine.connect() as conn:
        row = conn.execute(select(codes).where(codes.c.id == ids[2])).one()
    with pytest.raises(CodeRejected, match=f"code {ids[2]}"):
        vault.decrypt(row.key_id, row.ciphertext, code_id=row.id, pool_id=old_pid,
                      fingerprint=row.fingerprint, aad_version=row.aad_version)
    (entry,) = audit_entries(engine, "code_move")
    assert json.loads(entry.details) == {"code_ids": [ids[2], ids[3]], "count": 2,
                                         "from": [pool], "to": "other"}
    with pytest.raises(ImportRejected) as info:
        P.import_codes(engine, vault, pool, txt(tmp_path, "b.txt", [code(2)]), actor=ACTOR)
    assert info.value.rejects[0][1].startswith("already in pool 'other'")


def test_cli_codes_move_by_id_and_by_batch(engine: Engine, vault: Vault, pool: str,
                                           tmp_path: Path) -> None:
    """`robot codes move ID... --to P` and `--from P --batch B --to P`; refusals exit 1 with
    the reason per code; wrong argument mixes are usage errors."""
    P.create_pool(engine, "other", actor=ACTOR)
    report = P.import_codes(engine, vault, pool,
                            txt(tmp_path, "a.txt", [code(i) for i in range(4)]), actor=ACTOR)
    with engine.connect() as conn:
        ids = [int(i) for i in conn.execute(select(codes.c.id).order_by(codes.c.id)).scalars()]
    one = run(engine, vault, "codes", "move", str(ids[0]), "--to", "other")
    assert one.exit_code == 0, one.output
    assert f"moved 1 code(s) to pool other: {ids[0]}" in one.stdout
    rest = run(engine, vault, "codes", "move", "--from", pool, "--batch",
               str(report.batch_id), "--to", "other", "--json")
    assert rest.exit_code == 0, rest.output
    assert json.loads(rest.stdout)["moved"] == ids[1:]
    refused = run(engine, vault, "codes", "move", str(ids[0]), "--to", "other")
    assert refused.exit_code == 1
    assert f"code {ids[0]}: not moved: already in pool 'other'" in refused.stderr
    assert run(engine, vault, "codes", "move", "--to", "other").exit_code == 2
    assert run(engine, vault, "codes", "move", "--batch", "1", "--to", "other").exit_code == 2
    assert available(engine, "other") == 4


def test_whole_or_nothing_across_many_chunks(engine: Engine, vault: Vault, pool: str,
                                             tmp_path: Path) -> None:
    """One bad last line after many committed chunks leaves no code, no stock, no active batch."""
    P.import_codes(engine, vault, pool, txt(tmp_path, "old.txt", [code(1, "OLD")]), actor=ACTOR)
    secrets = [code(i) for i in range(1, 51)] + [LONG]
    with pytest.raises(ImportRejected) as info:
        P.import_codes(engine, vault, pool, txt(tmp_path, "a.txt", secrets), actor=ACTOR, chunk=7)
    assert info.value.rejects == [(51, "too long (max 512 characters)")]
    assert count(engine, codes) == 1
    assert count(engine, stock) == 1
    assert batch_states(engine) == ["active"]


def test_dry_run_changes_nothing_visible(engine: Engine, vault: Vault, pool: str,
                                         tmp_path: Path) -> None:
    """A dry run reports what would be imported and leaves stock, codes and batches unchanged."""
    P.import_codes(engine, vault, pool, txt(tmp_path, "old.txt", [code(1, "OLD")]), actor=ACTOR)
    path = txt(tmp_path, "a.txt", [code(i) for i in range(1, 6)])
    report = P.import_codes(engine, vault, pool, path, actor=ACTOR, dry_run=True, chunk=2)
    assert (report.batch_id, report.imported, report.dry_run) == (None, 5, True)
    assert count(engine, stock) == 1
    assert count(engine, codes) == 1
    assert batch_states(engine) == ["active"]
    assert len(audit_entries(engine, "import")) == 1
    # and the real import is not blocked by the dry run's hash
    assert P.import_codes(engine, vault, pool, path, actor=ACTOR).imported == 5


def test_dry_run_reports_bad_lines_too(engine: Engine, vault: Vault, pool: str,
                                       tmp_path: Path) -> None:
    """A dry run of a bad file raises the same rejects and leaves no batch behind."""
    with pytest.raises(ImportRejected) as info:
        P.import_codes(engine, vault, pool, txt(tmp_path, "a.txt", [code(1), code(1)]),
                       actor=ACTOR, dry_run=True)
    assert info.value.rejects == [(2, "duplicate in file (same as line 1)")]
    assert batch_states(engine) == []
    assert count(engine, codes) == 0


def test_csv_pairs_expiry_and_cost(engine: Engine, vault: Vault, pool: str,
                                   tmp_path: Path) -> None:
    """card_no/password pairs, per-line expiry and cost are stored; the batch cost fills gaps."""
    path = write(tmp_path, "cards.csv",
                 "card_no,password,expires_at,cost\n"
                 "CARD-0001,PW-0001,2030-06-30,12.50\n"
                 "CARD-0002,,2030-06-30 12:00,\n"
                 "CARD-0003,PW-0003,,0.99\n")
    report = P.import_codes(engine, vault, pool, path, actor=ACTOR, cost_cents=1000)
    assert report.imported == 3
    assert plaintexts(engine, vault) == [join_pair("CARD-0001", "PW-0001"), "CARD-0002",
                                         join_pair("CARD-0003", "PW-0003")]
    with engine.connect() as conn:
        rows = conn.execute(select(codes.c.cost_cents, codes.c.expires_at, stock.c.expires_at)
                            .join(stock, stock.c.code_id == codes.c.id)
                            .order_by(codes.c.id)).all()
    assert rows == [
        (1250, datetime(2030, 6, 30, 15, 59, 59), datetime(2030, 6, 30, 15, 59, 59)),
        (1000, datetime(2030, 6, 30, 4, 0), datetime(2030, 6, 30, 4, 0)),
        (99, None, NEVER),
    ]


def test_progress_reports_lines_read(engine: Engine, vault: Vault, pool: str, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The progress callback sees the running line count every few lines (not only per chunk),
    ending at the total."""
    seen: list[int] = []
    monkeypatch.setattr(P, "PROGRESS_EVERY", 3)
    P.import_codes(engine, vault, pool, txt(tmp_path, "a.txt", [code(i) for i in range(10)]),
                   actor=ACTOR, chunk=100, progress=seen.append)
    assert seen == [3, 6, 9, 10]


def test_unknown_pool_creates_no_batch(engine: Engine, vault: Vault, pool: str,
                                       tmp_path: Path) -> None:
    """Importing into a missing pool fails before anything is written."""
    with pytest.raises(UserError, match="no pool 'youku'"):
        P.import_codes(engine, vault, "youku", txt(tmp_path, "a.txt", [code(1)]), actor=ACTOR)
    assert batch_states(engine) == []


def leftover_batch(engine: Engine, vault: Vault, pool: str, secret: str,
                   last_progress: datetime) -> int:
    """What a crashed importer leaves: an 'importing' batch with a code, quiet since then."""
    (cid,) = P.reserve_code_ids(engine, 1)
    with engine.begin() as conn:
        pid = P.pool_id(conn, pool)
        bid = new_id(conn.execute(insert(batches).values(
            pool_id=pid, state="importing", file_name="x.txt", file_sha256=secret[-8:] * 8,
            code_count=0, imported_by=ACTOR, created_at=last_progress,
            updated_at=last_progress)))
        fp = vault.fingerprint(secret)
        kid, blob = vault.encrypt(secret, code_id=cid, pool_id=pid, fingerprint=fp)
        conn.execute(insert(codes).values(id=cid, pool_id=pid, batch_id=bid, source_line=1,
                                          fingerprint=fp, key_id=kid, ciphertext=blob,
                                          created_at=last_progress, aad_version=2))
    return bid


def test_stale_import_is_cleaned_up(engine: Engine, vault: Vault, pool: str,
                                    tmp_path: Path) -> None:
    """A batch quiet for 10 minutes in 'importing' is aborted and its codes deleted."""
    now = utcnow()
    leftover_batch(engine, vault, pool, code(1), now - timedelta(minutes=11))
    leftover_batch(engine, vault, pool, code(2), now - timedelta(minutes=1))
    # every import starts with the clean-up; the recent batch may still be alive
    P.import_codes(engine, vault, pool, txt(tmp_path, "a.txt", [code(3)]), actor=ACTOR)
    assert batch_states(engine) == ["aborted", "importing", "active"]
    assert plaintexts(engine, vault) == [code(2), code(3)]
    assert P.cleanup_stale_imports(engine, now=now + timedelta(minutes=15)) == 1
    assert plaintexts(engine, vault) == [code(3)]
    assert batch_states(engine) == ["aborted", "aborted", "active"]


def test_interrupted_import_cleans_up_after_itself(engine: Engine, vault: Vault, pool: str,
                                                   tmp_path: Path) -> None:
    """An import stopped by an unexpected error (or Ctrl-C) leaves no codes behind."""
    class Boom(Exception):
        pass

    def explode(_: int) -> None:
        raise Boom

    with pytest.raises(Boom):
        P.import_codes(engine, vault, pool, txt(tmp_path, "a.txt", [code(3), code(4)]),
                       actor=ACTOR, chunk=1, progress=explode)
    assert_nothing_imported(engine)
    assert batch_states(engine) == ["aborted"]


def test_import_aborted_underneath_stops(engine: Engine, vault: Vault, pool: str,
                                         tmp_path: Path) -> None:
    """An importer whose batch was aborted as stale stops at its next chunk, leaving nothing."""
    def declare_stale(_: int) -> None:
        P.cleanup_stale_imports(engine, now=utcnow() + timedelta(hours=1))

    with pytest.raises(UserError, match="was aborted while importing"):
        P.import_codes(engine, vault, pool, txt(tmp_path, "a.txt", [code(i) for i in range(6)]),
                       actor=ACTOR, chunk=2, progress=declare_stale)
    assert_nothing_imported(engine)
    assert batch_states(engine) == ["aborted"]


def test_concurrent_import_of_the_same_code_aborts_cleanly(
        engine: Engine, vault: Vault, pool: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A code inserted by another import between our check and our insert aborts us cleanly.

    (The check runs when the first insert of a chunk met a code the pool holds: here
    ``code(3)``, imported before.)"""
    rival_secret = code(2)
    P.import_codes(engine, vault, pool, txt(tmp_path, "before.txt", [code(3)]), actor=ACTOR)
    now = utcnow()
    with engine.begin() as conn:
        pid = P.pool_id(conn, pool)
        rival = new_id(conn.execute(insert(batches).values(
            pool_id=pid, state="importing", file_name="r.txt", file_sha256="3" * 64,
            code_count=0, imported_by="rival", created_at=now, updated_at=now)))
    fp = vault.fingerprint(rival_secret)
    (rival_id,) = P.reserve_code_ids(engine, 1)
    kid, blob = vault.encrypt(rival_secret, code_id=rival_id, pool_id=pid, fingerprint=fp)
    fired: list[bool] = []
    looked_up = P._Import._existing

    def sneak_in(job: Any, conn: Any, fps: list[bytes]) -> Any:
        # Right after our check and before our insert, the rival's row lands (same
        # transaction here, which is what a commit by another session looks like to the
        # unique index): the bulk insert (COPY on PostgreSQL) hits the unique constraint.
        found = looked_up(job, conn, fps)
        if not fired:
            fired.append(True)
            conn.execute(insert(codes).values(id=rival_id, pool_id=pid, batch_id=rival,
                                              source_line=1, fingerprint=fp, key_id=kid,
                                              ciphertext=blob, created_at=now,
                                              aad_version=2))
        return found

    monkeypatch.setattr(P._Import, "_existing", sneak_in)
    with pytest.raises(UserError, match="another import put some of these codes") as info:
        P.import_codes(engine, vault, pool,
                       txt(tmp_path, "a.txt", [code(1), rival_secret, code(3)]), actor=ACTOR)
    assert fired == [True]
    assert rival_secret not in str(info.value)
    assert count(engine, codes) == 1  # code(3), from before
    assert batch_states(engine) == ["active", "importing", "aborted"]


def test_twenty_thousand_lines(engine: Engine, vault: Vault, pool: str, tmp_path: Path) -> None:
    """A 20k-line file imports whole on every backend in reasonable time."""
    path = txt(tmp_path, "big.txt", [code(i) for i in range(20_000)])
    started = time.monotonic()
    report = P.import_codes(engine, vault, pool, path, actor=ACTOR)
    elapsed = time.monotonic() - started
    assert report.imported == 20_000
    assert count(engine, stock) == 20_000
    assert elapsed < 120, f"20k-line import took {elapsed:.1f}s"


# ---------------------------------------------------------------------------- stats, void, expiry


def test_pool_stats_counts_every_state(engine: Engine, vault: Vault, pool: str,
                                       tmp_path: Path) -> None:
    """Stats count available, reserved, delivered, review, void, expired and expiring codes."""
    P.create_pool(engine, "empty", actor=ACTOR)
    now = utcnow()
    soon = (now + timedelta(days=3)).strftime("%Y-%m-%d")
    later = (now + timedelta(days=30)).strftime("%Y-%m-%d")
    rows = [f"{code(i)},{soon}" for i in range(2)] + [f"{code(i)},{later}" for i in range(2, 4)]
    rows += [code(i) + "," for i in range(4, 12)]
    P.import_codes(engine, vault, pool, write(tmp_path, "a.csv", "code,expires_at\n" +
                                              "\n".join(rows)), actor=ACTOR)
    with engine.connect() as conn:
        ids = list(conn.execute(select(codes.c.id).order_by(codes.c.id)).scalars())
    order = make_order(engine, "allocated", now)
    for n, (cid, state) in enumerate(zip(ids[4:8], ["reserved", "reserved", "delivered",
                                                    "review"], strict=True)):
        take(engine, cid, order, state, n)
    P.void_codes(engine, [ids[8]], actor=ACTOR)
    assert P.expire_codes(engine, now + timedelta(days=4)) == 2
    stats = {s.name: s for s in P.pool_stats(engine, now)}
    s = stats[pool]
    assert (s.available, s.reserved, s.delivered, s.review, s.void, s.expired,
            s.expiring_7d, s.low_stock) == (5, 2, 1, 1, 1, 2, 0, 3)
    assert not s.is_low
    assert stats["empty"].available == 0
    # seen from earlier, the two expiring-soon codes were still available
    with engine.begin() as conn:
        conn.execute(update(codes).where(codes.c.retired == "expired")
                     .values(retired=None, retired_at=None))
        conn.execute(insert(stock).from_select(
            ["code_id", "pool_id", "expires_at"],
            select(codes.c.id, codes.c.pool_id, codes.c.expires_at)
            .where(codes.c.id.in_(ids[:2]))))
    s = {x.name: x for x in P.pool_stats(engine, now)}[pool]
    assert (s.available, s.expiring_7d, s.expired) == (7, 2, 0)
    s = {x.name: x for x in P.pool_stats(engine, now + timedelta(days=5))}[pool]
    assert (s.available, s.expired) == (5, 2)  # past expiry but not yet swept: not for sale


def test_void_withdraws_only_available_codes(engine: Engine, vault: Vault, pool: str,
                                             tmp_path: Path) -> None:
    """Available codes are voided; reserved, delivered, voided or unknown ones are refused."""
    P.import_codes(engine, vault, pool, txt(tmp_path, "a.txt", [code(i) for i in range(5)]),
                   actor=ACTOR)
    with engine.connect() as conn:
        ids = list(conn.execute(select(codes.c.id).order_by(codes.c.id)).scalars())
    order = make_order(engine, "allocated", utcnow())
    take(engine, ids[0], order, "reserved", 0)
    take(engine, ids[1], order, "delivered", 1)
    first = P.void_codes(engine, [ids[2]], actor=ACTOR)
    assert first.voided == [ids[2]]
    report = P.void_codes(engine, [ids[0], ids[1], ids[2], ids[3], 999_999], actor=ACTOR)
    assert report.voided == [ids[3]]
    assert report.refused == [
        (ids[0], f"reserved (order {order})"),
        (ids[1], f"delivered (order {order})"),
        (ids[2], "already void"),
        (999_999, "no such code"),
    ]
    assert count(engine, stock) == 1
    assert count(engine, codes, codes.c.retired == "void") == 2
    entries = audit_entries(engine, "void")
    assert [json.loads(e.details)["code_ids"] for e in entries] == [[ids[2]], [ids[3]]]
    assert entries[0].subject == f"pool:{pool}"
    assert P.void_codes(engine, [999_999], actor=ACTOR).voided == []
    assert len(audit_entries(engine, "void")) == 2  # nothing voided, nothing audited


def test_expire_codes_moves_expired_stock_out(engine: Engine, vault: Vault, pool: str,
                                              tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Codes past expiry leave stock as 'expired' in small groups, audited once per run."""
    monkeypatch.setattr(P, "EXPIRE_GROUP", 2)
    P.create_pool(engine, "b-pool", actor=ACTOR)
    for name, tag in ((pool, "A"), ("b-pool", "B")):
        rows = [f"{code(i, tag)},2030-01-0{1 + i % 3}" for i in range(7)] + [f"{code(7, tag)},"]
        body = "code,expires_at\n" + "\n".join(rows)
        P.import_codes(engine, vault, name, write(tmp_path, f"{tag}.csv", body), actor=ACTOR)
    cutoff = datetime(2030, 1, 2, 16, 0)  # the codes dated 1 and 2 January are past
    expired = P.expire_codes(engine, cutoff)
    assert expired == 10
    assert count(engine, stock) == 6
    assert count(engine, stock, stock.c.expires_at <= cutoff) == 0
    assert count(engine, codes, codes.c.retired == "expired") == 10
    [entry] = audit_entries(engine, "expire")
    assert json.loads(entry.details)["expired"] == {"b-pool": 5, pool: 5}
    assert P.expire_codes(engine, cutoff) == 0
    assert len(audit_entries(engine, "expire")) == 1


def test_list_codes_is_masked_and_filtered(engine: Engine, vault: Vault, pool: str,
                                           tmp_path: Path) -> None:
    """Listing shows masked codes with their state, newest first, filtered by state."""
    P.import_codes(engine, vault, pool, txt(tmp_path, "a.txt", [code(i) for i in range(4)]),
                   actor=ACTOR, cost_cents=123)
    with engine.connect() as conn:
        ids = list(conn.execute(select(codes.c.id).order_by(codes.c.id)).scalars())
    P.void_codes(engine, [ids[1]], actor=ACTOR)
    rows = P.list_codes(engine, vault, pool)
    assert [(r.id, r.state) for r in rows] == [(ids[3], "available"), (ids[2], "available"),
                                               (ids[1], "void"), (ids[0], "available")]
    assert rows[0].masked == "TE****WV"
    assert rows[0].cost_cents == 123
    assert [r.id for r in P.list_codes(engine, vault, pool, state="void")] == [ids[1]]
    assert [r.id for r in P.list_codes(engine, vault, pool, state="available", limit=2)] == [
        ids[3], ids[2]]
    with pytest.raises(UserError, match="unknown state"):
        P.list_codes(engine, vault, pool, state="sold")


def test_no_plaintext_code_outside_the_ciphertext(engine: Engine, vault: Vault, pool: str,
                                                  tmp_path: Path) -> None:
    """After imports, a rejected import, a void and an expiry, no table holds a plaintext code."""
    secrets = [code(i, "PLAIN") for i in range(20)]
    pairs = [(f"CARDNO{i:08d}", f"PASSWD{i:08d}") for i in range(5)]
    P.import_codes(engine, vault, pool, txt(tmp_path, "a.txt", secrets), actor=ACTOR,
                   supplier="acme")
    P.import_codes(engine, vault, pool, write(
        tmp_path, "b.csv", "card_no,password,expires_at\n" + "".join(
            f"{c},{p},2030-01-01\n" for c, p in pairs)), actor=ACTOR)
    rejected_secret = code(99, "PLAIN")
    with pytest.raises(ImportRejected) as info:
        P.import_codes(engine, vault, pool, txt(tmp_path, "c.txt", [rejected_secret, secrets[0]]),
                       actor=ACTOR)
    assert rejected_secret not in str(info.value.rejects)
    with engine.connect() as conn:
        first_two = list(conn.execute(select(codes.c.id).order_by(codes.c.id).limit(2)).scalars())
    P.void_codes(engine, first_two, actor=ACTOR)
    P.expire_codes(engine, datetime(2030, 6, 1))
    needles = [*secrets, rejected_secret, *(x for pair in pairs for x in pair)]
    cells = 0
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            columns = [c for c in table.columns if isinstance(c.type, String | Text | LargeBinary)]
            if not columns:
                continue
            for row in conn.execute(select(*columns)):
                for value in row:
                    if value is None:
                        continue
                    cells += 1
                    hay = bytes(value) if isinstance(value, bytes | memoryview) else \
                        str(value).encode()
                    for needle in needles:
                        assert needle.encode() not in hay, f"plaintext in {table.name}"
    assert cells > 100
    assert len(audit_entries(engine, "import")) == 2


# ---------------------------------------------------------------------------- CLI


@dataclass
class FakeApp:
    """What the pool commands use of robot.cli.common.App."""

    engine: Engine
    vault: Vault
    console: Console
    zone: tzinfo = DEFAULT_ZONE

    def time(self, value: datetime | None, *, empty: str = "") -> str:
        return format_time(value, zone=self.zone, empty=empty)


def run(engine: Engine, vault: Vault, *args: str) -> Any:
    group = {"pools": cmd_pools.pools, "codes": cmd_pools.codes}[args[0]]
    app = FakeApp(engine, vault, Console(width=200, color_system=None))
    return CliRunner().invoke(group, list(args[1:]), obj=app)


def test_commands_are_registered() -> None:
    """`robot pools` and `robot codes` are found by the CLI's command discovery."""
    robot.cli._register()
    assert {"pools", "codes"} <= set(robot.cli.cli.commands)
    pools_group = robot.cli.cli.commands["pools"]
    assert isinstance(pools_group, click.Group)
    assert {"create", "list", "import"} <= set(pools_group.commands)


def test_cli_create_import_list(engine: Engine, vault: Vault, tmp_path: Path) -> None:
    """Create a pool, import a file, and see it in `pools list` (table and JSON)."""
    assert run(engine, vault, "pools", "create", "netflix", "--low-stock", "5").exit_code == 0
    path = txt(tmp_path, "a.txt", [code(i) for i in range(3)])
    result = run(engine, vault, "pools", "import", "netflix", str(path), "--supplier", "acme",
                 "--cost", "9.90")
    assert result.exit_code == 0, result.output
    assert "imported 3 code(s) into pool netflix" in result.stdout
    table = run(engine, vault, "pools", "list")
    assert "netflix" in table.stdout
    assert "expiring ≤7d" in table.stdout
    data = json.loads(run(engine, vault, "pools", "list", "--json").stdout)
    assert data == [{"pool": "netflix", "available": 3, "reserved": 0, "delivered": 0,
                     "review": 0, "defective": 0, "void": 0, "expired": 0, "expiring_7d": 0,
                     "low_stock": 5,
                     "is_low": True}]
    with engine.connect() as conn:
        assert set(conn.execute(select(codes.c.cost_cents)).scalars()) == {990}


def test_cli_import_dry_run_and_bad_cost(engine: Engine, vault: Vault, tmp_path: Path) -> None:
    """--dry-run says what would happen and changes nothing; a bad --cost is a usage error."""
    P.create_pool(engine, "netflix", actor=ACTOR)
    path = txt(tmp_path, "a.dat", [code(1), code(2)])
    result = run(engine, vault, "pools", "import", "netflix", str(path), "--dry-run",
                 "--format", "txt", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["imported"] == 2
    assert json.loads(result.stdout)["dry_run"] is True
    assert count(engine, codes) == 0
    bad = run(engine, vault, "pools", "import", "netflix", str(path), "--cost", "-1")
    assert bad.exit_code == 2
    assert "--cost" in bad.output


def test_cli_codes_list_and_void(engine: Engine, vault: Vault, tmp_path: Path) -> None:
    """`codes list` shows masked codes only; `codes void` reports refusals and exits 1."""
    P.create_pool(engine, "netflix", actor=ACTOR)
    P.import_codes(engine, vault, "netflix", txt(tmp_path, "a.txt", [code(1), code(2)]),
                   actor=ACTOR)
    listing = run(engine, vault, "codes", "list", "netflix")
    assert listing.exit_code == 0
    assert "TE****WV" in listing.stdout
    assert code(1) not in listing.output
    rows = json.loads(run(engine, vault, "codes", "list", "netflix", "--json").stdout)
    assert [r["state"] for r in rows] == ["available", "available"]
    first = rows[-1]["id"]
    ok = run(engine, vault, "codes", "void", str(first))
    assert ok.exit_code == 0, ok.output
    assert f"voided 1 code(s): {first}" in ok.stdout
    again = run(engine, vault, "codes", "void", str(first), "--json")
    assert again.exit_code == 1
    assert json.loads(again.stdout)["refused"] == [{"code_id": first, "reason": "already void"}]
    voided = json.loads(run(engine, vault, "codes", "list", "netflix", "--state", "void",
                            "--json").stdout)
    assert [r["id"] for r in voided] == [first]
