"""``robot fake youzan``: found by the ``fake`` group through the entry point, loopback only."""

from __future__ import annotations

from click.testing import CliRunner

from robot.cli.cmd_fake import fake
from robot.registry import discover


def test_fake_youzan_command_and_options() -> None:
    """The sub-command exists with its options."""
    result = CliRunner().invoke(fake, ["youzan", "--help"])
    assert result.exit_code == 0
    for option in ("--port", "--host", "--client-id", "--client-secret", "--kdt-id",
                   "--seed-orders", "--push-url"):
        assert option in result.output


def test_fake_youzan_refuses_non_loopback_host() -> None:
    """No auth of its own, so never beyond loopback."""
    result = CliRunner().invoke(fake, ["youzan", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "loopback" in result.output


def test_youzan_connector_is_registered_as_an_entry_point() -> None:
    """The built-in connector loads through the robot.connectors group like a plugin."""
    found = discover()
    assert "youzan" in found.factories
    assert found.problem_for("youzan") is None
