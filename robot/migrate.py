"""Schema migrations: ``robot db upgrade`` and the upgrade ``robot run`` does on start.

Alembic runs from the top-level ``migrations`` package, installed with the robot (it is in
the wheel), so an installed robot can upgrade its own database. Concurrent upgrades from
several processes are serialized by the database (an advisory lock on PostgreSQL, a named
lock on MySQL, the write lock on SQLite).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from robot import audit
from robot.db import dialect_of

LOCK_ID = 7_216_300_415  # arbitrary constant for pg_advisory_lock


@cache
def migrations_dir() -> Path:
    """The directory of the installed ``migrations`` package (env.py and versions/).

    Refuses a ``migrations`` package that is not the robot's own (say, a project's folder
    that ``python -m robot`` put first on the path): running another project's revisions
    against the robot's database must never happen.
    """
    import migrations as package  # the robot's own, shipped beside it (checked below)

    where = Path(package.__file__ or "").parent
    if getattr(package, "ROBOT_MIGRATIONS", False) is not True or not (where / "env.py").is_file():
        raise RuntimeError(f"the 'migrations' package found at {where} is not the robot's own; "
                           "reinstall the robot or run it from another directory")
    return where


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (no-op when it is there already)."""
    if revision == "head" and current_revision(engine) == head_revision():
        return
    dialect = dialect_of(engine)
    with engine.connect() as conn:
        if dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_ID})
        elif dialect == "mysql":
            conn.execute(text("SELECT GET_LOCK('robot_migrate', 300)"))
        conn.commit()
        if dialect == "sqlite":
            # A revision that rebuilds a table other tables refer to (SQLite cannot drop a
            # constraint in place) must not have its rows checked mid-rebuild; the pragma
            # only works outside a transaction. Checked as a whole afterwards.
            conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        try:
            command.upgrade(alembic_config(conn), revision)
            conn.commit()
            if dialect == "sqlite":
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").first()
                conn.commit()
                if broken is not None:
                    raise RuntimeError(f"the upgrade left a broken foreign key: {tuple(broken)}")
            if revision == "head":  # an older revision's audit_head may lack columns
                with conn.begin():
                    audit.ensure_head(conn)
        finally:
            if dialect == "sqlite":
                conn.rollback()
                conn.connection.driver_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]
            if dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_ID})
            elif dialect == "mysql":
                conn.execute(text("SELECT RELEASE_LOCK('robot_migrate')"))
            conn.commit()
