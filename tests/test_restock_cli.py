"""``robot restock`` on a configured robot (the in-memory supplier): a rule with approval is
run by hand, waits, is approved and bought; status and history show it; a rule naming an
unknown supplier is a config error naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import robot.cli
from connectors.memsupplier import MemorySupplierBackend
from robot.config import load_config
from robot.errors import ConfigError
from robot.vault import init_key_file

robot.cli._register()

ROBOT_YAML = """\
database: sqlite:///robot.db
key_file: robot.key
shops: shops/*.yaml
suppliers:
  memsup:
    plugin: memory
    config: {name: restock-cli}
restock:
  youku:
    supplier: memsup
    product: card-youku-30
    below: 5
    quantity: 4
    max_cost: 16
    daily_budget: 100
    monthly_budget: 1000
    approval: true
"""


def cli(site: Path, *args: str) -> str:
    result = CliRunner().invoke(robot.cli.cli, ["-c", str(site), *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "shops").mkdir()
    (tmp_path / "robot.yaml").write_text(ROBOT_YAML, encoding="utf-8")
    init_key_file(tmp_path / "robot.key")
    return tmp_path / "robot.yaml"


def test_run_waits_for_approval_then_buys_status_and_history_show_it(site: Path) -> None:
    """``run`` with approval on asks and waits; ``approve`` reserves the budget; ``run``
    of the next is refused while one is in flight; status and history tell the story."""
    cli(site, "pools", "create", "youku")
    asked = json.loads(cli(site, "restock", "run", "youku", "--json"))
    assert asked["state"] == "awaiting_approval"
    [row] = json.loads(cli(site, "restock", "status", "--json"))
    assert row["awaiting_approval"] == [asked["id"]] and row["spent_today_cents"] == 0
    status = json.loads(cli(site, "status", "--json"))
    assert [r["pool"] for r in status["restocking"]] == ["youku"]
    assert any(i["kind"] == "restock_approval" and f"approve {asked['id']}" in i["action"]
               for i in status["needs_attention"])
    assert "approved" in cli(site, "restock", "approve", str(asked["id"]))
    [row] = json.loads(cli(site, "restock", "status", "--json"))
    assert row["spent_today_cents"] == 4 * 1600 and row["in_flight"] == 1
    again = CliRunner().invoke(robot.cli.cli, ["-c", str(site), "restock", "run", "youku"])
    assert again.exit_code != 0 and "in flight" in str(again.exception)
    history = json.loads(cli(site, "restock", "history", "--json"))
    assert [(h["id"], h["approved_by"] is not None) for h in history] == [(asked["id"], True)]
    assert MemorySupplierBackend.named("restock-cli").orders == {}  # the daemon buys it


def test_rule_naming_an_unknown_supplier_is_a_config_error(site: Path) -> None:
    """``restock.POOL.supplier`` must name a configured supplier (with a suggestion)."""
    site.write_text(ROBOT_YAML.replace("supplier: memsup", "supplier: memsupp"),
                    encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(site)
    assert any("restock.youku.supplier: supplier 'memsupp' is not configured" in line
               for line in info.value.problems)


def test_run_without_approval_buys_now(site: Path) -> None:
    """``run`` on a rule without approval places the purchase at once (the supplier
    accepts it; the robot's worker reads the codes when it is done)."""
    site.write_text(ROBOT_YAML.replace("restock-cli", "restock-cli-now")
                    .replace("approval: true", "approval: false"), encoding="utf-8")
    cli(site, "pools", "create", "youku")
    bought = json.loads(cli(site, "restock", "run", "youku", "--json"))
    assert bought["state"] == "accepted" and bought["reserved_cents"] == 4 * 1600
    [order] = MemorySupplierBackend.named("restock-cli-now").orders.values()
    assert order.request.key == bought["key"] and order.request.quantity == 4


def test_run_with_approval_says_nothing_is_reserved_yet(site: Path) -> None:
    """The text line of a purchase that waits for a person says nothing is reserved yet
    (the budget is reserved at approval), not "up to 0.00"."""
    cli(site, "pools", "create", "youku")
    line = cli(site, "restock", "run", "youku")
    assert "awaiting_approval" in line and "nothing reserved until it is approved" in line
    assert "0.00" not in line
