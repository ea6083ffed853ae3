"""The ``robot`` command line: one group, sub-commands registered from ``robot.cli.*``.

Every command prints a rich table on a terminal and one JSON document with ``--json``.
Errors from :mod:`robot.errors` become one clear line on stderr and an exit status:
2 for configuration errors, 1 for requests that cannot be done, 3 for other fatal errors.
No command ever prints a plaintext code except ``robot reveal``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from robot import __version__
from robot.cli.common import App, run_guarded


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="ROBOT_CONFIG",
    default="robot.yaml",
    show_default=True,
    help="The robot's YAML file (shops are found from it).",
)
@click.version_option(__version__, prog_name="robot")
@click.pass_context
def cli(ctx: click.Context, config_path: Path) -> None:
    """Auto-delivery robot for virtual goods: orders in, card codes out, exactly once."""
    if ctx.obj is None:  # tests may hand in an App of their own
        ctx.obj = App(config_path=config_path)
        ctx.call_on_close(ctx.obj.close)


def _register() -> None:
    # Imported here so each command module stays independent of the others.
    from robot.cli import commands

    for command in commands.ALL:
        cli.add_command(command)


def main() -> None:
    _register()
    sys.exit(run_guarded(cli))
