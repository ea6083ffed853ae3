"""The daemon's own vacuum of the hot tables, for PostgreSQL servers with autovacuum off."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from robot import maintenance
from tests.conftest import backends

PG = [b for b in backends() if b == "postgresql"]


@pytest.fixture
def no_autovacuum(engine: Engine) -> Iterator[Engine]:
    """shop_state without the server's autovacuum (off here anyway; on elsewhere it could
    vacuum the table between a test's steps)."""
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE shop_state SET (autovacuum_enabled = false)"))
    yield engine
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE shop_state RESET (autovacuum_enabled)"))


def dead_tuples(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT n_dead_tup FROM pg_stat_user_tables WHERE schemaname = current_schema()"
            " AND relname = :t"), {"t": table}).scalar_one())


def make_dead_shop_rows(engine: Engine, rows: int) -> None:
    """Insert then delete ``rows`` shop_state rows, and flush the counts to the statistics."""
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO shop_state (shop, paused, updated_at)"
            " SELECT 'dead-' || g, false, now() FROM generate_series(1, :n) g"), {"n": rows})
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM shop_state WHERE shop LIKE 'dead-%'"))
        conn.execute(text("SELECT pg_stat_force_next_flush()"))


def test_autovacuum_off_is_only_ever_true_on_postgresql(engine: Engine) -> None:
    """The check asks the server on PostgreSQL and is False elsewhere."""
    if engine.dialect.name != "postgresql":
        assert maintenance.autovacuum_off(engine) is False
        return
    with engine.connect() as conn:
        setting = str(conn.exec_driver_sql("SHOW autovacuum").scalar_one())
    assert maintenance.autovacuum_off(engine) is (setting == "off")


@pytest.mark.parametrize("backend", PG, indirect=True)
@pytest.mark.usefixtures("no_autovacuum")
def test_vacuum_reclaims_dead_tuples_past_the_threshold_only(engine: Engine) -> None:
    """A hot table past BASE + SCALE x live dead tuples is vacuumed (its dead count drops
    to 0); one below the threshold is left alone."""
    make_dead_shop_rows(engine, maintenance.BASE + 500)
    assert dead_tuples(engine, "shop_state") >= maintenance.BASE + 500

    # (Other hot tables may be past it too, after earlier tests on this database.)
    assert "shop_state" in maintenance.vacuum_hot_tables(engine)

    assert dead_tuples(engine, "shop_state") == 0
    make_dead_shop_rows(engine, 10)
    assert "shop_state" not in maintenance.vacuum_hot_tables(engine)
    assert dead_tuples(engine, "shop_state") == 10


@pytest.mark.parametrize("backend", PG, indirect=True)
@pytest.mark.usefixtures("no_autovacuum")
def test_vacuum_steps_aside_while_another_robot_holds_the_lock(engine: Engine) -> None:
    """Two robots on one database: the one that finds the lock taken vacuums nothing."""
    make_dead_shop_rows(engine, maintenance.BASE + 500)
    with engine.connect() as other:
        assert other.execute(text("SELECT pg_try_advisory_lock(:k)"),
                             {"k": maintenance.LOCK_KEY}).scalar()
        assert maintenance.vacuum_hot_tables(engine) == []
        other.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": maintenance.LOCK_KEY})
        other.commit()
    assert dead_tuples(engine, "shop_state") >= maintenance.BASE + 500
    assert "shop_state" in maintenance.vacuum_hot_tables(engine)
