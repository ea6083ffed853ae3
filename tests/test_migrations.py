"""``alembic upgrade head`` produces exactly the schema the models describe, on every backend."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Connection, Engine, inspect, select, text

from robot import audit, keys, outbox
from robot import pools as pools_mod
from robot.clock import NEVER, utcnow
from robot.db import make_engine
from robot.migrate import current_revision, head_revision, upgrade
from robot.schema import codes, metadata, orders, stock
from robot.vault import AAD_V1, NONCE_BYTES, Vault, _aad, load_key_ring
from tests.conftest import ServerDatabases


def _empty_engine(backend: str, server_databases: ServerDatabases, tmp_path: Path) -> Engine:
    if backend == "sqlite":
        return make_engine(f"sqlite:///{tmp_path / 'migrated.db'}")
    engine = make_engine(server_databases.url_for(backend, "migrations"))
    metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    return engine


def test_upgrade_head_matches_models(backend: str, server_databases: ServerDatabases,
                                     tmp_path: Path) -> None:
    """No difference between the migrated database and robot.schema; upgrading twice is a no-op."""
    engine = _empty_engine(backend, server_databases, tmp_path)
    try:
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                    metadata)
        assert diff == []
        tables = set(inspect(engine).get_table_names())
        assert set(metadata.tables) <= tables
        upgrade(engine)  # already at head: nothing to do, nothing fails
        assert current_revision(engine) == head_revision()
    finally:
        metadata.drop_all(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        engine.dispose()


def test_a_log_written_as_one_chain_verifies_after_the_upgrade(
    backend: str, server_databases: ServerDatabases, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Entries written by an older version (revision 0001: one chain, unkeyed SHA-256) are
    chain 1 after upgrading; verify refuses them until `robot audit upgrade` has verified
    and re-sealed them with the key file; then they verify and new entries append after."""
    monkeypatch.setattr(audit, "_ROTATION", itertools.repeat(0))  # the new entry: chain 1
    engine = _empty_engine(backend, server_databases, tmp_path)
    try:
        upgrade(engine, "0001")
        prev = audit.GENESIS
        with engine.begin() as conn:
            for seq in (1, 2):
                at = utcnow()
                digest = audit._legacy_hash(prev, seq, at, actor="old", action="import",
                                            subject=f"batch:{seq}", details="{}")
                conn.execute(text(
                    "INSERT INTO audit_log (seq, at, actor, action, subject, details, "
                    "prev_hash, hash) VALUES (:seq, :at, 'old', 'import', :subject, '{}', "
                    ":prev, :hash)"), {"seq": seq, "at": at, "subject": f"batch:{seq}",
                                       "prev": prev, "hash": digest})
                prev = digest
            conn.execute(text("INSERT INTO audit_head (id, seq, hash) VALUES (1, 2, :h)"),
                         {"h": prev})
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        result = audit.verify(engine)
        assert not result.ok and "robot audit upgrade" in (result.problem or "")
        assert audit.upgrade_legacy(engine, actor="test") == {1: 2}
        assert audit.verify(engine) == audit.VerifyResult(True, 3)  # + the re-seal entry
        with engine.begin() as conn:
            assert audit.append(conn, actor="new", action="import", subject="batch:4") == 4
        assert audit.verify(engine) == audit.VerifyResult(True, 4)
    finally:
        metadata.drop_all(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        engine.dispose()


def _legacy_code(conn: Connection, vault: Vault, key_file: Path, *, pool_id: int,
                 batch_id: int, line: int, secret: str, in_stock: bool) -> int:
    """A code row as revision 0002 held it: no id binding (version 1 associated data)."""
    fp = vault.fingerprint(secret)
    nonce = os.urandom(NONCE_BYTES)
    blob = nonce + AESGCM(load_key_ring(key_file).keys["k1"]).encrypt(
        nonce, secret.encode(), _aad(0, pool_id, fp, "k1", AAD_V1))
    now = utcnow()
    conn.execute(text(
        "INSERT INTO codes (pool_id, batch_id, source_line, fingerprint, key_id, ciphertext, "
        "created_at) VALUES (:p, :b, :l, :fp, 'k1', :ct, :now)"),
        {"p": pool_id, "b": batch_id, "l": line, "fp": fp, "ct": blob, "now": now})
    cid = int(conn.execute(text("SELECT MAX(id) FROM codes")).scalar_one())
    if in_stock:
        conn.execute(text("INSERT INTO stock (code_id, pool_id, expires_at) "
                          "VALUES (:c, :p, :e)"), {"c": cid, "p": pool_id, "e": NEVER})
    return cid


def test_upgrade_keeps_codes_readable_and_leaves_one_copy_of_a_code_on_sale(
    backend: str, server_databases: ServerDatabases, tmp_path: Path,
    key_file: Path, vault: Vault,
) -> None:
    """Revision 0003 on a database with codes: every code still decrypts (old binding) and
    is re-bound to its id by keys.rebind_codes; a code an older version let into two pools
    keeps one row as the code (the one sold, else the oldest) and the other copies leave
    stock as void; new ids are reserved above every existing one."""
    engine = _empty_engine(backend, server_databases, tmp_path)
    try:
        upgrade(engine, "0002")
        now = utcnow()
        with engine.begin() as conn:
            for pid, name in ((1, "a"), (2, "b")):
                conn.execute(text("INSERT INTO pools (id, name, created_at) VALUES (:i, :n, :t)"),
                             {"i": pid, "n": name, "t": now})
                conn.execute(text(
                    "INSERT INTO batches (id, pool_id, state, file_name, file_sha256, "
                    "code_count, imported_by, created_at, updated_at) VALUES "
                    "(:i, :i, 'active', 'f.txt', :sha, 2, 't', :t, :t)"),
                    {"i": pid, "sha": "0" * 64, "t": now})
            conn.execute(text(
                "INSERT INTO orders (id, shop, platform, platform_order_id, state, "
                "platform_status, total_cents, currency, extra, received_at, updated_at, "
                "due_at) VALUES (1, 's', 'memory', 'O1', 'shipped', 'paid', 0, 'CNY', '{}', "
                ":t, :t, :t)"), {"t": now})
            args = {"conn": conn, "vault": vault, "key_file": key_file}
            unique_a = _legacy_code(**args, pool_id=1, batch_id=1, line=1, secret="UNIQUE-A-01",
                                    in_stock=True)
            twice_a = _legacy_code(**args, pool_id=1, batch_id=1, line=2, secret="TWICE-0001",
                                   in_stock=True)
            sold_b = _legacy_code(**args, pool_id=2, batch_id=2, line=1, secret="SOLD-0001",
                                  in_stock=False)
            twice_b = _legacy_code(**args, pool_id=2, batch_id=2, line=2, secret="TWICE-0001",
                                   in_stock=True)
            sold_a = _legacy_code(**args, pool_id=1, batch_id=1, line=3, secret="SOLD-0001",
                                  in_stock=True)
            conn.execute(text("INSERT INTO deliveries (order_id, line_no, n, code_id, pool_id, "
                              "state, created_at) VALUES (1, 1, 1, :c, 2, 'delivered', :t)"),
                         {"c": sold_b, "t": now})
        upgrade(engine)
        with engine.connect() as conn:
            rows = {int(r.id): r for r in conn.execute(select(codes)).all()}
            in_stock = set(conn.execute(select(stock.c.code_id)).scalars())
            assert keys.old_binding(conn) == 5
        assert {cid: int(r.dup) for cid, r in rows.items()} == {
            unique_a: 0, twice_a: 0, sold_b: 0, twice_b: 1, sold_a: 1}
        assert in_stock == {unique_a, twice_a}
        assert {cid for cid, r in rows.items() if r.retired == "void"} == {twice_b, sold_a}
        assert keys.rebind_codes(engine, vault) == 5
        with engine.connect() as conn:
            assert keys.old_binding(conn) == 0
            rows = {int(r.id): r for r in conn.execute(select(codes)).all()}
        assert {cid: vault.decrypt(r.key_id, r.ciphertext, code_id=cid, pool_id=r.pool_id,
                                   fingerprint=r.fingerprint, aad_version=r.aad_version)
                for cid, r in rows.items()} == {
            unique_a: "UNIQUE-A-01", twice_a: "TWICE-0001", sold_b: "SOLD-0001",
            twice_b: "TWICE-0001", sold_a: "SOLD-0001"}
        assert list(pools_mod.reserve_code_ids(engine, 2)) == [max(rows) + 1, max(rows) + 2]
    finally:
        metadata.drop_all(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        engine.dispose()


def test_a_database_with_shipped_orders_upgrades_to_customer_service(
    backend: str, server_databases: ServerDatabases, tmp_path: Path,
) -> None:
    """A database at 0002 holding a shipped order and its done write-back jobs upgrades in
    place: the order is found by number, shown with an empty write-back history, and can
    take replacement requests and attempt records afterwards."""
    engine = _empty_engine(backend, server_databases, tmp_path)
    try:
        upgrade(engine, "0002")
        now = utcnow()
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO orders (shop, platform, platform_order_id, state, platform_status, "
                "total_cents, currency, extra, received_at, updated_at, due_at) VALUES "
                "('s', 'memory', 'OLD-123456', 'shipped', 'shipped', 100, 'CNY', '{}', :t, :t, "
                ":t)"), {"t": now})
            oid = conn.execute(text("SELECT id FROM orders")).scalar_one()
            conn.execute(text(
                "INSERT INTO outbox (order_id, kind, state, attempts, due_at, created_at) "
                "VALUES (:o, 'ship', 'done', 1, :t, :t)"), {"o": oid, "t": now})
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        with engine.connect() as conn:
            assert outbox.write_back_history(conn, int(oid)) == []
            found = conn.execute(select(orders.c.id).where(
                orders.c.platform_order_id == "OLD-123456")).scalar_one()
        assert found == oid
        with engine.begin() as conn:
            job = conn.execute(text("SELECT id FROM outbox")).scalar_one()
            outbox.record_attempt(conn, outbox.Job(int(job), int(oid), "ship", 1), "done",
                                  None, now)
        with engine.connect() as conn:
            assert [a["result"] for a in outbox.write_back_history(conn, int(oid))] == ["done"]
    finally:
        metadata.drop_all(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        engine.dispose()
