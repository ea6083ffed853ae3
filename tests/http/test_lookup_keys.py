"""Order numbers that compare equal share one rate-limit bucket: what the lookup compares and
what it buckets is the same normalized number, and the database compares it binary (on
MySQL/MariaDB too, after migration 0003_lookup), so a full-width or zero-width variant of a
real order number neither finds the row by itself nor gets a fresh allowance."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, func, inspect, select, text
from sqlalchemy.exc import IntegrityError

from robot.clock import utcnow
from robot.db import make_engine
from robot.http import checks
from robot.http.guard import GuardSettings
from robot.migrate import upgrade
from robot.schema import metadata, orders
from robot.vault import Vault
from tests.conftest import ServerDatabases
from tests.http.lookup_helpers import SimClock, paid_at_order
from tests.http.test_lookup import MANY_ADDRESSES, PAID, lookup_http, post

REAL = "7300001234"
VARIANTS = ("７３００００１２３４",  # full-width digits
            "7300\u200b001234",  # zero-width space
            "\ufeff7300001234",  # byte order mark
            "73000\u206001234",  # word joiner
            "7300001234\u200d")  # zero-width joiner


def rows_for(engine: Engine, platform_order_id: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(orders).where(
            orders.c.platform_order_id == platform_order_id)).scalar_one())


def test_variants_of_an_order_number_do_not_find_the_row_in_sql(engine: Engine,
                                                                vault: Vault) -> None:
    """The database compares order numbers binary: only the exact number finds the row."""
    h = lookup_http(engine, vault, "paid_at")
    paid_at_order(h, REAL, PAID)
    assert rows_for(engine, REAL) == 1
    for variant in VARIANTS:
        assert rows_for(engine, variant) == 0, ascii(variant)


def test_variants_normalize_to_the_real_number_and_share_its_bucket(engine: Engine,
                                                                   vault: Vault) -> None:
    """Every variant reads as the real number (so a buyer's full-width copy works), and the
    misses on all of them count against that one order: after them, its lookups wait."""
    assert {checks.order_number(v) for v in VARIANTS} == {REAL}
    clock = SimClock()
    h = lookup_http(engine, vault, "paid_at", clock=clock, limits=MANY_ADDRESSES,
                    guard_settings=GuardSettings(threshold=1000, order_free_misses=5))
    paid_at_order(h, REAL, PAID)
    with h.client:
        for variant in VARIANTS:  # five misses, each through a different spelling
            assert post(h, order=variant, paid_at="2026-12-05 03:00") == 404
        assert clock.slept == []
        assert post(h, order=VARIANTS[0], paid_at="2026-12-05 14:03") == 303
    assert clock.slept == [1.0]  # the sixth lookup of the order waited its turn


@pytest.mark.parametrize("typed", ["7300/001234", "73000012３4\u0301", "7300001234 OR 1=1",
                                   "'7300001234'", "7300001234%", "7" * 65, "٧٣٠٠٠٠١٢٣٤"])
def test_order_numbers_outside_the_platform_alphabet_are_refused(engine: Engine, vault: Vault,
                                                                 typed: str) -> None:
    """Anything left outside letters, digits, ``_`` and ``-`` after normalization is no
    order number: the neutral page, without a database look-up."""
    assert checks.order_number(typed) is None
    h = lookup_http(engine, vault, "paid_at", clock=SimClock())
    paid_at_order(h, REAL, PAID)
    with h.client:
        assert post(h, order=typed, paid_at="2026-12-05 14:03") == 404


def test_upgrade_makes_an_existing_case_insensitive_column_binary(
        backend: str, server_databases: ServerDatabases, tmp_path: Path) -> None:
    """A database at 0002 whose orders table uses utf8mb4_unicode_ci (MySQL/MariaDB) keeps
    its orders and its unique key through the upgrade, and then compares binary."""
    if backend == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    else:
        engine = make_engine(server_databases.url_for(backend, "lookup-migration"))
        metadata.drop_all(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    try:
        upgrade(engine, "0002")
        now = utcnow()
        row = {"shop": "tb", "platform": "taobao", "state": "shipped",
               "platform_status": "paid", "total_cents": 1000, "currency": "CNY",
               "extra": "{}", "received_at": now, "updated_at": now, "due_at": now}
        with engine.begin() as conn:
            if backend != "sqlite":
                conn.execute(text("ALTER TABLE orders CONVERT TO CHARACTER SET utf8mb4 "
                                  "COLLATE utf8mb4_unicode_ci") if engine.dialect.name ==
                             "mysql" else text("SELECT 1"))
            conn.execute(orders.insert().values(platform_order_id=REAL, **row))
        upgrade(engine)
        assert rows_for(engine, REAL) == 1
        for variant in VARIANTS:
            assert rows_for(engine, variant) == 0, ascii(variant)
        uniques = inspect(engine).get_unique_constraints("orders")
        indexes = inspect(engine).get_indexes("orders")
        assert any(u["column_names"] == ["shop", "platform_order_id"] for u in uniques) or any(
            i["unique"] and i["column_names"] == ["shop", "platform_order_id"] for i in indexes)
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(orders.insert().values(platform_order_id=REAL, **row))
        with engine.begin() as conn:  # a different number now, as it always was on PostgreSQL
            conn.execute(orders.insert().values(platform_order_id=VARIANTS[0], **row))
    finally:
        metadata.drop_all(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        engine.dispose()
