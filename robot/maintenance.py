"""Vacuuming the hot tables on a PostgreSQL server whose autovacuum is off.

Every claim deletes a ``stock`` row and every order updates its ``orders`` and ``outbox``
rows a few times: on PostgreSQL each leaves a dead tuple that only VACUUM reclaims. With
the server's autovacuum on (the default) there is nothing to do here. With it off, a robot
left alone for weeks would grow those tables and their indexes without bound and slow every
claim down, so the daemon vacuums them itself: every :data:`INTERVAL` seconds, each hot table
whose dead tuples passed autovacuum's own formula (:data:`BASE` + :data:`SCALE` × live rows).

One robot at a time does it (a session advisory lock); VACUUM runs outside a transaction on
a connection of its own, and only ever on the robot's tables. MariaDB (purge) and SQLite (no
dead tuples kept in place) need nothing of this.
"""

from __future__ import annotations

from sqlalchemy import Engine, text

from robot.db import dialect_of
from robot.log import get_logger

log = get_logger(__name__)

INTERVAL = 60.0  # seconds between looks at the dead-tuple counts
BASE, SCALE = 50, 0.2  # autovacuum's defaults: vacuum past BASE + SCALE x live rows dead
#: Tables whose rows are deleted or updated on every order (append-only ones need no vacuum).
HOT_TABLES = ("stock", "orders", "outbox", "deliveries", "order_lines", "audit_head",
              "shop_state", "pickup_links", "push_seen")
#: pg_advisory_lock key: one vacuuming robot per database ("robotvac" as ASCII).
LOCK_KEY = 0x726F626F74766163


def autovacuum_off(engine: Engine) -> bool:
    """True on a PostgreSQL server that does not vacuum by itself."""
    if dialect_of(engine) != "postgresql":
        return False
    with engine.connect() as conn:
        return str(conn.exec_driver_sql("SHOW autovacuum").scalar_one()).lower() == "off"


def vacuum_hot_tables(engine: Engine) -> list[str]:
    """VACUUM (ANALYZE) each hot table past its dead-tuple threshold; the tables vacuumed.

    Returns at once (nothing vacuumed) when another robot holds the maintenance lock.
    """
    done: list[str] = []
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar():
            return done
        try:
            due = conn.execute(text(
                "SELECT relname FROM pg_stat_user_tables"
                " WHERE schemaname = current_schema() AND relname = ANY(:tables)"
                " AND n_dead_tup > :base + :scale * n_live_tup ORDER BY relname"),
                {"tables": list(HOT_TABLES), "base": BASE, "scale": SCALE}).scalars().all()
            for table in due:
                if table not in HOT_TABLES:  # a name we did not ask for: never vacuum it
                    continue
                conn.exec_driver_sql(f'VACUUM (ANALYZE) "{table}"')
                done.append(str(table))
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
    if done:
        log.info("tables_vacuumed", tables=done)
    return done
