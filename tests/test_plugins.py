"""What a plugin brings through its factory: the ``robot fake`` group and ``robot demo`` find
fakes and demo drivers through the entry points only, and a broken plugin is shown, not fatal."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import click
import pytest
from click.testing import CliRunner
from pydantic import BaseModel

import robot.registry
from connectors.base import ShopContext
from robot import demo
from robot.cli.cmd_fake import fake, plugin_fakes
from robot.errors import UserError
from robot.registry import Discovery, LoadProblem

BUILT_IN_FAKES = ("douyin", "goofish", "pinduoduo", "taobao", "wechat", "youzan")


class _Model(BaseModel):
    pass


class _Factory:
    platform: ClassVar[str] = "probe"
    config_model: ClassVar[type[BaseModel]] = _Model

    def create(self, config: BaseModel, context: ShopContext) -> Any:
        raise NotImplementedError


class _WithFake(_Factory):
    platform: ClassVar[str] = "probe"

    def fake_command(self) -> click.Command:
        @click.command("probe")
        @click.option("--probe-flag", is_flag=True)
        def serve(probe_flag: bool) -> None:
            """Serve the probe's fake."""
            click.echo(f"probe serving {probe_flag}")

        return serve


class _BrokenFake(_Factory):
    platform: ClassVar[str] = "shaky"

    def fake_command(self) -> click.Command:
        raise ImportError("No module named 'shaky_fake'")


class _Driver:
    platform = "probe"
    pushes = False
    sku_key = "outer_id"


class _WithDemo(_Factory):
    def demo_driver(self) -> Any:
        return _Driver()


@dataclass
class Installed:
    """The plugins a test pretends are installed."""

    factories: dict[str, Any] = field(default_factory=dict)
    problems: list[LoadProblem] = field(default_factory=list)
    suppliers: dict[str, Any] = field(default_factory=dict)
    supplier_problems: list[LoadProblem] = field(default_factory=list)
    notifiers: dict[str, Any] = field(default_factory=dict)

    def discover(self, eps: object = None) -> Discovery:
        return Discovery(dict(self.factories), tuple(self.problems))

    def discover_suppliers(self, eps: object = None) -> tuple[dict[str, Any],
                                                              tuple[LoadProblem, ...]]:
        return dict(self.suppliers), tuple(self.supplier_problems)

    def discover_notifiers(self, eps: object = None) -> tuple[dict[str, Any],
                                                              tuple[LoadProblem, ...]]:
        return dict(self.notifiers), ()


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[Installed]:
    """Replace the installed plugins with the ones the test installs."""
    fakes = Installed()
    monkeypatch.setattr(robot.registry, "discover", fakes.discover)
    monkeypatch.setattr(robot.registry, "discover_suppliers", fakes.discover_suppliers)
    monkeypatch.setattr(robot.registry, "discover_notifiers", fakes.discover_notifiers)
    monkeypatch.setattr(demo, "discover", fakes.discover)
    plugin_fakes.cache_clear()
    yield fakes
    plugin_fakes.cache_clear()


def test_fake_help_lists_every_built_in_fake() -> None:
    """``robot fake --help`` lists each built-in platform's fake, found through its factory."""
    plugin_fakes.cache_clear()
    result = CliRunner().invoke(fake, ["--help"])
    assert result.exit_code == 0, result.output
    for name in BUILT_IN_FAKES:
        assert f"  {name} " in result.output
    assert "memory" not in result.output  # the in-memory platform has no fake to serve


def test_fake_help_lists_every_built_in_supplier_fake() -> None:
    """Suppliers' fakes (entry points ``robot.suppliers``) are listed beside the platforms'."""
    plugin_fakes.cache_clear()
    result = CliRunner().invoke(fake, ["--help"])
    assert result.exit_code == 0, result.output
    for name in ("fulu", "juhe"):
        assert f"  {name} " in result.output


def test_a_notifiers_fake_is_served_under_its_name(installed: Installed) -> None:
    """A notifier factory's fake (entry points ``robot.notifiers``) is served under its
    name with dashes (``aliyun_sms`` → ``robot fake aliyun-sms``); the built-in one is
    listed in ``robot fake --help``."""
    probe = _WithFake()
    installed.notifiers["probe_sms"] = probe
    assert set(plugin_fakes()) == {"probe-sms"}
    assert CliRunner().invoke(fake, ["probe-sms", "--probe-flag"]).output == \
        "probe serving True\n"


def test_fake_help_lists_the_sms_fake() -> None:
    """``robot fake aliyun-sms`` is installed with the robot."""
    plugin_fakes.cache_clear()
    result = CliRunner().invoke(fake, ["--help"])
    assert result.exit_code == 0 and "  aliyun-sms " in result.output


def test_a_suppliers_fake_is_served_and_a_broken_supplier_says_why(installed: Installed) -> None:
    """A supplier factory's fake_command() is served under its supplier name; a supplier entry
    point that fails to load is listed and refuses with its error."""
    probe = _WithFake()
    probe.supplier = "probe"  # type: ignore[attr-defined]
    installed.suppliers["probe"] = probe
    installed.supplier_problems.append(LoadProblem("lost", "lost_supplier:Factory",
                                                   "ModuleNotFoundError: lost"))
    assert set(plugin_fakes()) == {"probe", "lost"}
    assert CliRunner().invoke(fake, ["probe", "--probe-flag"]).output == "probe serving True\n"
    lost = CliRunner().invoke(fake, ["lost"])
    assert isinstance(lost.exception, UserError)
    assert "ModuleNotFoundError: lost" in str(lost.exception)


def test_a_plugins_fake_command_is_served_with_its_own_options(installed: Installed) -> None:
    """A factory's fake_command() appears under its platform name with its own options."""
    installed.factories["probe"] = _WithFake()
    installed.factories["plain"] = _Factory()  # brings no fake: not listed
    assert set(plugin_fakes()) == {"probe"}
    result = CliRunner().invoke(fake, ["probe", "--probe-flag"])
    assert result.exit_code == 0, result.output
    assert "probe serving True" in result.output


def test_a_broken_plugin_is_listed_and_says_why(installed: Installed) -> None:
    """A fake command that fails to load, or a plugin that fails to import, is listed and,
    when run, refuses with a UserError naming the error; the other fakes still work."""
    installed.factories["probe"] = _WithFake()
    installed.factories["shaky"] = _BrokenFake()
    installed.problems.append(LoadProblem("gone", "gone_plugin:Factory",
                                          "ModuleNotFoundError: gone"))
    listed = CliRunner().invoke(fake, ["--help"])
    for name in ("probe", "shaky", "gone"):
        assert f"  {name} " in listed.output
    shaky = CliRunner().invoke(fake, ["shaky", "--port", "0"])
    assert isinstance(shaky.exception, UserError)
    assert "shaky_fake" in str(shaky.exception)
    gone = CliRunner().invoke(fake, ["gone"])
    assert isinstance(gone.exception, UserError)
    assert "ModuleNotFoundError: gone" in str(gone.exception)
    assert CliRunner().invoke(fake, ["probe"]).exit_code == 0


def test_demo_finds_drivers_through_the_factories(installed: Installed) -> None:
    """robot demo drives what a factory's demo_driver() returns, and nothing else."""
    installed.factories["probe"] = _WithDemo()
    installed.factories["other"] = _Factory()  # no demo driver: not driven
    assert [d.platform for d in demo.load_drivers()] == ["probe"]


def test_demo_drives_every_built_in_platform() -> None:
    """Without the test's factories, the demo drives each built-in platform's fake."""
    drivers = demo.load_drivers()
    assert sorted(d.platform for d in drivers) == sorted(BUILT_IN_FAKES)


def test_logging_is_configured_before_any_plugin_loads() -> None:
    """Importing the registry (the only way the robot loads plugins) configures structlog
    with the robot's redaction, so a plugin's ground-floor logger never logs raw."""
    code = ("import robot.registry\n"
            "from connectors.log import get_logger\n"
            "get_logger('plugin').warning('token_refreshed', access_token='tok-SECRET-42')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    logged = result.stdout + result.stderr
    assert "token_refreshed" in logged
    assert "tok-SECRET-42" not in logged
