"""``robot fake taobao``: found through the plugin's factory, its options, the loopback rule."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from connectors.fakecli import loopback_socket
from robot.cli.cmd_fake import COMMANDS, fake


def test_fake_is_a_group_with_a_taobao_command() -> None:
    """``fake`` is a click group exporting COMMANDS; the taobao plugin's fake is one of its
    sub-commands, with its own options."""
    assert [fake] == COMMANDS
    assert "taobao" in fake.list_commands(click.Context(fake))
    result = CliRunner().invoke(fake, ["taobao", "--help"])
    assert result.exit_code == 0
    for option in ("--port", "--host", "--app-key", "--app-secret", "--session", "--seed-orders"):
        assert option in result.output


def test_fake_refuses_non_loopback_host() -> None:
    """The fake has no auth of its own, so it refuses to listen beyond loopback."""
    result = CliRunner().invoke(fake, ["taobao", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "loopback" in result.output


def test_loopback_socket_picks_a_free_port() -> None:
    """Port 0 gives a listening loopback socket on a real port."""
    sock = loopback_socket("127.0.0.1", 0)
    try:
        host, port = sock.getsockname()[:2]
        assert host == "127.0.0.1"
        assert port > 0
    finally:
        sock.close()
    with pytest.raises(click.BadParameter):
        loopback_socket("10.0.0.1", 0)
