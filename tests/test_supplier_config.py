"""Supplier accounts in the robot file and supplier routes in shop mappings: typed, loud
(file, shop and field named), secret-safe; and ``robot suppliers`` on a configured robot."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

import robot.cli
from robot.config import effective_dict, load_config
from robot.errors import ConfigError
from robot.vault import init_key_file

robot.cli._register()

FULU_SECRET = "0123456789abcdef0123456789abcdef"  # a made-up 32-character test secret

ROBOT_YAML = """\
database: sqlite:///robot.db
key_file: robot.key
shops: shops/*.yaml
suppliers:
  fulu-main:
    plugin: fulu
    config: {app_key: test-key, app_secret: "${TEST_FULU_SECRET}",
             gateway: "http://127.0.0.1:9/api/getway"}
    low_balance: 200
  memsup:
    plugin: memory
    config: {name: config-test}
"""

SHOP_YAML = """\
name: s
platform: memory
items:
  - sku_id: t50
    account: {source: buyer_message, format: mobile}
    suppliers:
      - {supplier: fulu-main, product: 10000, max_cost: "49.90"}
      - {supplier: memsup, product: topup-mobile-50, max_cost: 49.9}
  - sku_id: c30
    pool: youku
    suppliers:
      - {supplier: memsup, product: card-youku-30, max_cost: 16}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TEST_FULU_SECRET", FULU_SECRET)
    write(tmp_path / "shops" / "s.yaml", SHOP_YAML)
    return write(tmp_path / "robot.yaml", ROBOT_YAML)


def problems_of(robot_file: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(robot_file)
    return info.value.problems


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_suppliers_and_routes_load_with_costs_in_cents_and_secrets_masked(site: Path) -> None:
    """Each supplier's config is its plugin's model; routes keep their order and max cost;
    the secret never shows in the effective configuration."""
    config = load_config(site)
    assert [(s.name, s.plugin, s.low_balance_cents) for s in config.suppliers] == [
        ("fulu-main", "fulu", 20000), ("memsup", "memory", None)]
    topup, card = config.shops[0].items
    assert topup.topup and [(r.supplier, r.product) for r in topup.suppliers] == [
        ("fulu-main", "10000"), ("memsup", "topup-mobile-50")]
    assert not card.topup and card.pools[0].pool == "youku"
    assert FULU_SECRET not in json.dumps(effective_dict(config), default=str)


def test_a_mapping_naming_an_unknown_supplier_names_file_shop_and_field(site: Path) -> None:
    """A typo in a route's supplier is reported with the file, shop, field and a hint."""
    edit(site.parent / "shops" / "s.yaml", "supplier: memsup, product: card", "supplier: memsupp, "
         "product: card")
    assert problems_of(site) == [
        "shops/s.yaml: shop 's': items[1].suppliers[0].supplier: supplier 'memsupp' is not "
        "configured (did you mean 'memsup'?); the robot file's suppliers: fulu-main, memsup"]


def test_a_supplier_config_the_plugin_refuses_is_named_by_field(site: Path) -> None:
    """The plugin's own model checks its section; the line names suppliers.NAME.config.field."""
    edit(site, 'app_secret: "${TEST_FULU_SECRET}",', 'app_secret: short,')
    [line] = problems_of(site)
    assert line.startswith("robot.yaml: suppliers.fulu-main.config.app_secret: ")
    assert "32 characters" in line


def test_an_unknown_supplier_plugin_is_named(site: Path) -> None:
    """A plugin that is not installed is named with what is installed."""
    edit(site, "plugin: fulu", "plugin: fullu")
    [line] = problems_of(site)
    assert line.startswith("robot.yaml: suppliers.fulu-main.plugin: unknown supplier plugin "
                           "'fullu' (did you mean 'fulu'?)")


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("    account: {source: buyer_message, format: mobile}\n",
     "    account: {source: buyer_message, format: mobile}\n    pool: youku\n",
     "items[0]: a top-up (account:) is bought from suppliers only: remove pool/pools"),
    ("    pool: youku\n", "",
     "items[1]: cards bought from suppliers go into one pool: give exactly one pool "
     "(or account: for a top-up)"),
    ("format: mobile}", "format: regex}", "items[0].account: format regex needs a pattern"),
    ("source: buyer_message", "source: seller_memo",
     "items[0].account.source: expected buyer_message, extra.NAME (an order field) or "
     "property.NAME (a SKU property)"),
    ('max_cost: "49.90"', "max_cost: -1", "items[0].suppliers[0].max_cost: "),
    ("    pool: youku\n", "    pool: youku\n    face_value: 30\n",
     "items[1]: face_value is a top-up's (account:); card codes have none"),
])
def test_route_mistakes_name_their_field(site: Path, old: str, new: str, expected: str) -> None:
    """Every mistake in a route is one line naming the shop file, shop and field."""
    edit(site.parent / "shops" / "s.yaml", old, new)
    [line] = problems_of(site)
    assert line.startswith("shops/s.yaml: shop 's': " + expected), line


def test_suppliers_cli_lists_tests_and_shows_the_catalogue(site: Path) -> None:
    """``robot suppliers list|test|products`` on a configured robot (the in-memory supplier)."""
    init_key_file(site.parent / "robot.key")
    runner = CliRunner()
    listed = runner.invoke(robot.cli.cli, ["-c", str(site), "suppliers", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert [(r["supplier"], r["items"]) for r in rows] == [
        ("fulu-main", ["s:sku_id/t50"]), ("memsup", ["s:sku_id/t50", "s:sku_id/c30"])]
    tested = runner.invoke(robot.cli.cli, ["-c", str(site), "suppliers", "test", "memsup"])
    assert tested.exit_code == 0 and "supplier memsup: OK" in tested.output
    products = runner.invoke(robot.cli.cli, ["-c", str(site), "suppliers", "products", "memsup",
                                             "--search", "话费", "--json"])
    assert products.exit_code == 0, products.output
    assert [(p["product"], p["price"]) for p in json.loads(products.output)] == [
        ("topup-mobile-50", "49.50")]
    broken = runner.invoke(robot.cli.cli, ["-c", str(site), "suppliers", "test", "fulu-main"])
    assert broken.exit_code == 1 and "supplier fulu-main: NOT OK" in broken.output
    status = runner.invoke(robot.cli.cli, ["-c", str(site), "suppliers", "status", "--json"])
    assert status.exit_code == 0, status.output
    by_name = {r["supplier"]: r for r in json.loads(status.output)}
    assert by_name["memsup"]["balance_cents"] == 1_000_000
    assert by_name["fulu-main"]["balance_cents"] is None and by_name["fulu-main"]["balance_error"]
    assert by_name["memsup"]["open"] == 0 and by_name["memsup"]["success_rate"] is None
