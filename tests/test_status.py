"""``robot status`` never lies green: every thing that needs a person is listed under "needs
attention" (text and ``--json``), and "nothing needs attention" is said only when it is true.
Each test starts from a healthy robot and breaks one thing (every database)."""

from __future__ import annotations

import itertools
import json
import shutil
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from click.testing import CliRunner
from sqlalchemy import Engine, select, update

import robot.cli
from robot import attention, audit, orders, pipeline, shops
from robot.clock import utcnow
from robot.config import load_config
from robot.migrate import alembic_config
from robot.outbox import pause_shop
from robot.schema import audit_head, order_lines, pools, shop_state
from robot.schema import orders as orders_table
from robot.vault import Vault, init_key_file
from tests.factories import paid_order, seed_codes

robot.cli._register()


@pytest.fixture
def healthy(tmp_path: Path, db_url: str, engine: Engine, vault: Vault, key_file: Path) -> Path:
    """A robot file with one shop that polled a minute ago and a pool with stock."""
    with engine.begin() as conn:  # the fixture built the schema from the models
        command.stamp(alembic_config(conn), "head")
    (tmp_path / "shops").mkdir()
    (tmp_path / "robot.yaml").write_text(
        f"database: {db_url}\nkey_file: {key_file}\nshops: shops/*.yaml\n"
        "alerts: {poll_lag: 15m}\n")
    (tmp_path / "shops" / "mem.yaml").write_text(
        "name: mem\nplatform: memory\npoll_interval: 30s\n"
        "items:\n  - sku_id: s1\n    pool: p1\n"
        "platform_config:\n  name: status-test\n")
    seed_codes(engine, vault, "p1", 10)
    shops.ensure_row(engine, "mem")
    shops.save_poll(engine, "mem", None, ok=True)
    return tmp_path / "robot.yaml"


def status(config: Path) -> tuple[str, list[dict[str, Any]]]:
    runner = CliRunner()
    text = runner.invoke(robot.cli.cli, ["-c", str(config), "status"])
    assert text.exit_code == 0, text.output
    as_json = runner.invoke(robot.cli.cli, ["-c", str(config), "status", "--json"])
    assert as_json.exit_code == 0, as_json.output
    return text.output, json.loads(as_json.output)["needs_attention"]


def kinds(items: list[dict[str, Any]]) -> list[str]:
    return [i["kind"] for i in items]


def test_a_healthy_robot_needs_nothing(healthy: Path) -> None:
    """With every shop polled, stock in every pool and nothing stuck, status says so."""
    text, items = status(healthy)
    assert items == []
    assert "nothing needs attention" in text


def test_a_paused_shop_is_listed_with_the_command_that_resumes_it(
        healthy: Path, engine: Engine) -> None:
    """A paused shop is listed, with `robot shops resume NAME`."""
    pause_shop(engine, "mem", "session expired")
    text, items = status(healthy)
    assert kinds(items) == ["shop_paused"]
    assert "robot shops resume mem" in items[0]["action"]
    assert "session expired" in text and "robot shops resume mem" in text
    assert "nothing needs attention" not in text


@pytest.mark.parametrize("last_ok", [None, timedelta(hours=2)])
def test_a_shop_with_stale_polls_is_listed(healthy: Path, engine: Engine,
                                           last_ok: timedelta | None) -> None:
    """A shop never polled, or last polled longer ago than the alert lag, is listed."""
    with engine.begin() as conn:
        conn.execute(update(shop_state).values(
            last_poll_ok_at=None if last_ok is None else utcnow() - last_ok,
            last_error="HTTP 502"))
    text, items = status(healthy)
    assert kinds(items) == ["poll_stale"]
    assert "HTTP 502" in items[0]["message"]
    assert "mem" in text


def test_a_pool_at_its_low_stock_mark_is_listed(healthy: Path, engine: Engine) -> None:
    """A pool at or below its low-stock mark is listed with its stock."""
    with engine.begin() as conn:
        conn.execute(update(pools).where(pools.c.name == "p1").values(low_stock=10))
    _, items = status(healthy)
    assert kinds(items) == ["low_stock"]
    assert items[0]["subject"] == "p1" and items[0]["count"] == 10


def test_an_empty_pool_a_shop_sells_from_is_listed(
        healthy: Path, engine: Engine, vault: Vault) -> None:
    """An empty pool is listed when a shop maps a SKU to it (and not otherwise)."""
    seed_codes(engine, vault, "unused", 1)
    with engine.begin() as conn:
        from robot.schema import stock
        conn.execute(stock.delete())
    _, items = status(healthy)
    assert kinds(items) == ["low_stock"]
    assert items[0]["subject"] == "p1"


def test_a_pool_under_its_days_of_cover_is_listed(healthy: Path, engine: Engine) -> None:
    """A pool whose stock lasts fewer days than ``alerts.low_cover_days`` is listed."""
    config = load_config(healthy)
    config = config.model_copy(update={"alerts": config.alerts.model_copy(
        update={"low_cover_days": 3.0})})
    st = orders.status(engine, ["mem"])
    st.pools[0] = replace(st.pools[0], sold_7d=70, days_of_cover=1.0)
    items = attention.needs_attention(engine, config, st, utcnow())
    assert [i.kind for i in items] == ["low_stock"]
    assert "days of cover" in items[0].message


def test_a_pool_a_shop_names_but_the_database_lacks_is_listed(healthy: Path) -> None:
    """A shop mapping a pool that does not exist is listed with the shop file and field."""
    shop = healthy.parent / "shops" / "mem.yaml"
    shop.write_text(shop.read_text().replace("pool: p1", "pool: p2"))
    _, items = status(healthy)
    assert "pool_missing" in kinds(items)
    assert any("'p2' does not exist" in i["message"] for i in items)


@pytest.mark.parametrize(("state", "kind"), [("failed", "orders_failed"), ("held", "orders_held"),
                                             ("waiting_stock", "orders_waiting")])
def test_failed_held_and_waiting_orders_are_listed(healthy: Path, engine: Engine, state: str,
                                                   kind: str) -> None:
    """Failed, held and waiting orders are each listed with their count."""
    shop = load_config(healthy).shop("mem")
    for i in range(2):
        pipeline.intake(engine, shop, paid_order(f"S{i}", ("s1", 1)))
    with engine.begin() as conn:
        conn.execute(update(orders_table).values(state=state))
    _, items = status(healthy)
    assert kinds(items) == [kind]
    assert items[0]["count"] == 2


def test_ignored_paid_orders_with_unmapped_lines_of_the_last_week_are_listed(
        healthy: Path, engine: Engine) -> None:
    """Ignored orders paid in the last 7 days with an unmapped line are counted per shop;
    older ones are not."""
    shop = load_config(healthy).shop("mem")
    for oid in ("I1", "I2", "OLD"):
        pipeline.intake(engine, shop, paid_order(oid, ("unknown-sku", 1)))
    with engine.begin() as conn:
        conn.execute(update(orders_table).values(state="ignored"))
        conn.execute(update(orders_table).where(orders_table.c.platform_order_id == "OLD")
                     .values(paid_at=utcnow() - timedelta(days=8),
                             received_at=utcnow() - timedelta(days=8)))
        mappings = set(conn.execute(select(order_lines.c.mapping)).scalars())
    assert mappings == {"[]"}
    _, items = status(healthy)
    assert kinds(items) == ["ignored_unmapped"]
    assert items[0]["count"] == 2 and items[0]["subject"] == "mem"


def test_a_wrong_key_file_is_listed(healthy: Path, key_file: Path, tmp_path: Path) -> None:
    """A key file that does not decrypt the stored codes is listed, as robot run refuses it."""
    other = tmp_path / "other" / "robot.key"
    init_key_file(other)
    shutil.copy(other, key_file)
    _, items = status(healthy)
    assert "keys" in kinds(items)


def test_a_missing_key_file_is_listed(healthy: Path, key_file: Path) -> None:
    """A missing key file (the database holds codes under it) is listed."""
    key_file.unlink()
    _, items = status(healthy)
    assert kinds(items) == ["keys"]
    assert "restore" in items[0]["action"]


def test_unkeyed_audit_chains_are_listed(healthy: Path, engine: Engine) -> None:
    """A chain still in the unkeyed form of an older version is listed."""
    with engine.begin() as conn:
        conn.execute(update(audit_head).values(keyed=False))
    _, items = status(healthy)
    assert kinds(items) == ["audit"]
    assert "unkeyed" in items[0]["message"]


def test_an_audit_checkpoint_failing_its_signature_is_listed(
        healthy: Path, engine: Engine, key_file: Path) -> None:
    """A checkpoint file that fails its signature is listed."""
    pause_shop(engine, "mem", "x")  # appends an audit entry
    from robot.outbox import resume_shop
    resume_shop(engine, "mem", actor="test")
    audit.checkpoint(engine)
    path = audit.checkpoint_path(key_file)
    data = json.loads(path.read_text())
    data["chains"]["1"][0] += 5
    path.write_text(json.dumps(data))
    _, items = status(healthy)
    assert kinds(items) == ["audit"]
    assert "signature" in items[0]["message"]


def test_an_audit_chain_behind_its_checkpoint_is_listed(
        healthy: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chain whose head is behind its signed checkpoint (entries removed) is listed."""
    monkeypatch.setattr(audit, "_ROTATION", itertools.repeat(0))  # both entries in chain 1
    pause_shop(engine, "mem", "x")
    from robot.outbox import resume_shop
    resume_shop(engine, "mem", actor="test")
    audit.checkpoint(engine)
    with engine.begin() as conn:
        conn.execute(update(audit_head).where(audit_head.c.id == 1).values(seq=1))
    _, items = status(healthy)
    assert kinds(items) == ["audit"]
    assert "behind its checkpoint" in items[0]["message"]


def test_a_check_that_cannot_run_is_itself_listed(healthy: Path, engine: Engine) -> None:
    """A check that raises is reported as an item, never as "nothing needs attention"."""
    def broken(_ctx: attention.Context) -> list[attention.Item]:
        raise RuntimeError("boom")

    items = attention.needs_attention(engine, load_config(healthy),
                                      orders.status(engine, ["mem"]), utcnow(),
                                      checks=[*attention.CHECKS, broken])
    assert [i.kind for i in items] == ["check_failed"]


def test_order_amounts_are_in_yuan_beside_the_exact_cents(healthy: Path, engine: Engine) -> None:
    """`orders list` and `orders show` print yuan; their JSON carries yuan and cents."""
    shop = load_config(healthy).shop("mem")
    pipeline.intake(engine, shop, paid_order("Y1", ("s1", 3)))
    runner = CliRunner()
    rows = json.loads(runner.invoke(robot.cli.cli, ["-c", str(healthy), "orders", "list",
                                                    "--json"]).output)
    assert (rows[0]["total_cents"], rows[0]["total"]) == (3000, "30.00")
    shown = json.loads(runner.invoke(robot.cli.cli, ["-c", str(healthy), "orders", "show",
                                                     str(rows[0]["id"]), "--json"]).output)
    assert shown["total"] == "30.00" and shown["lines"][0]["unit_price"] == "10.00"
    table = runner.invoke(robot.cli.cli, ["-c", str(healthy), "orders", "list"],
                          env={"COLUMNS": "200"})
    assert "30.00" in table.output and ".000000" not in table.output
