"""``alembic upgrade head`` produces exactly the schema the models describe, on every backend."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, select, text

from robot import audit, outbox
from robot.clock import utcnow
from robot.db import make_engine
from robot.migrate import current_revision, head_revision, upgrade
from robot.schema import metadata, orders
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
) -> None:
    """Entries written before the log had several chains (revision 0001) are chain 1 after
    upgrading, still verify, and new entries append after them."""
    engine = _empty_engine(backend, server_databases, tmp_path)
    try:
        upgrade(engine, "0001")
        prev = audit.GENESIS
        with engine.begin() as conn:
            for seq in (1, 2):
                at = utcnow()
                digest = audit._entry_hash(prev, seq, at, actor="old", action="import",
                                           subject=f"batch:{seq}", details="{}")
                conn.execute(text(
                    "INSERT INTO audit_log (seq, at, actor, action, subject, details, "
                    "prev_hash, hash) VALUES (:seq, :at, 'old', 'import', :subject, '{}', "
                    ":prev, :hash)"), {"seq": seq, "at": at, "subject": f"batch:{seq}",
                                       "prev": prev, "hash": digest})
                prev = digest
            conn.execute(text("UPDATE audit_head SET seq = 2, hash = :h WHERE id = 1"),
                         {"h": prev})
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        assert audit.verify(engine) == audit.VerifyResult(True, 2)
        with engine.begin() as conn:
            assert audit.append(conn, actor="new", action="import", subject="batch:3") == 3
        assert audit.verify(engine) == audit.VerifyResult(True, 3)
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
