"""``alembic upgrade head`` produces exactly the schema the models describe, on every backend."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect

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
