"""``robot fake <platform>``: serve an installed plugin's local fake for demos and manual tests.

One click group. Its platform sub-commands are not written here: every plugin whose factory
(entry point ``robot.connectors``) has ``fake_command()`` contributes its own command, listed
under the factory's platform name, so ``robot fake --help`` shows every installed fake and a
third-party plugin brings its fake without a line changed here. A plugin that fails to load,
or whose fake command does, still appears, as a command that says why.

A fake has no authentication of its own, so it only ever listens on a loopback address
(:mod:`connectors.fakecli`); the credentials it prints are the fake's own test credentials.
"""

from __future__ import annotations

import functools

import click

from connectors.plugin import HasFake
from robot.errors import UserError


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _broken(name: str, why: str) -> click.Command:
    """A stand-in for a plugin's fake that could not be loaded: running it says why."""

    def refuse() -> None:
        raise UserError(f"the fake of {name!r} cannot be served: {why}")

    return click.Command(name, callback=refuse, help=f"(broken: {why})",
                         context_settings={"ignore_unknown_options": True,
                                           "allow_extra_args": True})


@functools.cache
def plugin_fakes() -> dict[str, click.Command]:
    """Every installed plugin's fake command, by platform name."""
    # Imported here so that the rest of the CLI starts without loading any plugin.
    from robot.registry import discover

    found = discover()
    commands: dict[str, click.Command] = {}
    for platform, factory in sorted(found.factories.items()):
        if not isinstance(factory, HasFake):
            continue
        try:
            command = factory.fake_command()
        except Exception as exc:  # noqa: BLE001 - a plugin's bug is shown, never fatal to the rest
            commands[platform] = _broken(platform, _describe(exc))
            continue
        if command is None:
            continue
        if not isinstance(command, click.Command):
            commands[platform] = _broken(platform, "fake_command() did not return a click "
                                                   "command")
            continue
        commands[platform] = command
    for problem in found.problems:
        commands.setdefault(problem.name, _broken(problem.name, problem.error))
    return commands


class _FakeGroup(click.Group):
    """The ``fake`` group: its own sub-commands, then every installed plugin's fake."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *plugin_fakes()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name) or plugin_fakes().get(cmd_name)


@click.group("fake", cls=_FakeGroup)
def fake() -> None:
    """Serve a local fake of a platform's open API (loopback only)."""


COMMANDS: list[click.Command] = [fake]
