"""``alembic upgrade head`` produces exactly the schema the models describe, on every backend."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from robot import audit
from robot.clock import utcnow
from robot.db import make_engine
from robot.migrate import current_revision, head_revision, upgrade
from robot.schema import metadata
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
    """Entries written by an older version (revision 0001: one chain, unkeyed SHA-256) are
    chain 1 after upgrading; verify refuses them until `robot audit upgrade` has verified
    and re-sealed them with the key file; then they verify and new entries append after."""
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
